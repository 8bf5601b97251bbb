package main

// One namespace per machine image folder, each target a one-liner over the generic machine:* targets: they are
// generated into images_gen.go from images/*/image.conf (adding a folder, then `go generate ./...`).

//go:generate go run gen_images.go

import "berth/internal/fleet"

// Build builds the base rootfs and then every machine (every image folder of Kind=machine).
func Build() error { return fleet.BaseAndAll(interruptible(), knobs.fleet()) }

// Clean stops and removes every machine and then the base and berth's caches, as the original's clean did;
// data under [Paths] Srv is kept.
func Clean() error {
	ctx, c, err := setup()
	if err != nil {
		return err
	}
	return fleet.CleanAll(ctx, c, knobs.imageFS())
}

// Status prints one table of every machine.
func Status() error { return fleet.All("status", knobs.fleet()) }

// Publish publishes every machine installed here to [Publish] Endpoint/Bucket/Prefix (see machine:publish).
func Publish() error { return fleet.PublishAll(knobs.fleet()) }

// Pull pulls every machine image published at the origin ([Publish] Pull, else the bucket) through
// systemd-importd (see machine:pull); FORCE=1 pulls installed builds again.
func Pull() error { return fleet.PullAll(knobs.fleet()) }

// PublishKey prints the public key that signs published images (made once under [Paths] State, or
// [Publish] Key): pulling hosts name the file it is saved to in [Publish] PublicKey.
func PublishKey() error { return fleet.PublicKey() }

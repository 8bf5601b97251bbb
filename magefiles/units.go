package main

import (
	"fmt"

	"github.com/magefile/mage/mg"

	"berth/internal/units"
	"berth/internal/units/install"
)

// Units generates, installs and checks the systemd units that run berth's jobs (demo rotation, nightly
// upgrade, crash repair, certificate renewal, relay machines at boot).
type Units mg.Namespace

// Generate writes the units for the default configuration into the checkout's units/ (what is committed;
// a test fails when it is stale), or, with DIR=<dir>, the units for the effective configuration into dir.
// Files that are unchanged are not rewritten; berth's files that are not generated any more are removed.
func (Units) Generate() error {
	dir, files, err := units.GenerateTarget(knobs.Dir)
	if err != nil {
		return err
	}
	changes, err := units.GenerateDir(dir, files)
	fmt.Println(units.Report{Dir: dir, Files: changes})
	return err
}

// Install builds the binary into [Paths] Binary (mage -compile when run from a checkout, else a copy of the
// running binary), writes the units into [Paths] Units (only changed files; removes the ones it installed
// before and does not generate now; manifest in [Paths] State/units.manifest), then through systemd's D-Bus
// API reloads, enables them and starts berth-demo.service and the timers. Without a running systemd it
// writes the files and says in one line what it could not enable.
func (Units) Install() error {
	ctx, c, err := setup()
	if err != nil {
		return err
	}
	rep, err := install.Units(ctx, c, install.Options{Source: units.SourceDir()})
	fmt.Println(rep)
	return err
}

// Uninstall stops, disables and removes exactly the units listed in [Paths] State/units.manifest and the
// symlinks that enabled them, then reloads systemd. The binary at [Paths] Binary stays.
func (Units) Uninstall() error {
	ctx, c, err := setup()
	if err != nil {
		return err
	}
	rep, err := install.Uninstall(ctx, c)
	fmt.Println(rep)
	return err
}

// Verify runs `systemd-analyze verify` on every unit generated from the effective configuration and
// `systemd-analyze calendar` on every OnCalendar=; any warning fails. It needs neither root nor a running systemd.
func (Units) Verify() error {
	ctx, c, err := setup()
	if err != nil {
		return err
	}
	files, err := units.Generate(c)
	if err != nil {
		return err
	}
	out, err := units.Verify(ctx, files)
	for _, l := range out {
		fmt.Println(l)
	}
	return err
}

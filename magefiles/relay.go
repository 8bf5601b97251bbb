package main

import (
	"fmt"

	"github.com/magefile/mage/mg"

	"berth/internal/relay"
)

// Relay configures the relay platform on its machines.
type Relay mg.Namespace

// Configure starts the machines in [Relay] Machines order (each waited on through its health check) and writes
// the env files (0600; secrets made once and kept in [Paths] State/relay) and the TLS bundle. Needs [Relay]
// Domain (or MYDOMAIN, or SELF_SIGNED=<domain>). Running it again changes nothing unless an input changed.
func (Relay) Configure() error {
	ctx, c, err := setup()
	if err != nil {
		return err
	}
	rep, err := relay.Configure(ctx, c, knobs.imageFS())
	fmt.Println(rep)
	return err
}

// RotateKeys replaces the Nostr deploy key and the NEXTAUTH secret, rewrites the files that carry them and
// restarts exactly the services that read them.
func (Relay) RotateKeys() error {
	ctx, c, err := setup()
	if err != nil {
		return err
	}
	rep, err := relay.RotateKeys(ctx, c, knobs.imageFS())
	fmt.Println(rep)
	return err
}

// Renew replaces the certificate when fewer than 30 days remain (FORCE=1: now) and reloads HAProxy.
func (Relay) Renew() error {
	ctx, c, err := setup()
	if err != nil {
		return err
	}
	rep, err := relay.Renew(ctx, c, knobs.Force)
	fmt.Println(rep)
	return err
}

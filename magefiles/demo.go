package main

import (
	"context"
	"os"

	"github.com/magefile/mage/mg"

	"berth/internal/bench"
	"berth/internal/demo"
)

// Demo runs the public demo: two LXC containers taking turns behind HAProxy.
type Demo mg.Namespace

// withDemo opens the demo of the effective configuration and runs f on it.
func withDemo(f func(*demo.Demo, context.Context) error) error {
	ctx, c, err := setup()
	if err != nil {
		return err
	}
	d, err := demo.Open(c, knobs.imageFS())
	if err != nil {
		return err
	}
	d.Sources = knobs.Sources
	defer bench.LogPeakRSS()
	return f(d, ctx)
}

// Build makes the demo from the base and [Demo] Image: the pristine state (rebuilt only when the base or the
// image changed, or FORCE=1), both containers, bridge and NAT, the TLS bundle, HAProxy on [Demo] HTTP/HTTPS,
// one container serving. It checks the image, the subnet and the hooks before changing anything.
func (Demo) Build() error {
	return withDemo(func(d *demo.Demo, ctx context.Context) error { return d.Build(ctx, knobs.Force) })
}

// ImportHooks brings an original upgrade.d at dir into [Demo] Hooks: its scripts stay pending, *.fail ones go
// to quarantine, old_scripts/ to archive, Constant_upgrade/ to always; nothing there is overwritten. Scripts
// without the exec bit run with bash, as the original ran them.
func (Demo) ImportHooks(dir string) error {
	return withDemo(func(d *demo.Demo, ctx context.Context) error { return d.ImportHooks(ctx, dir, os.Stdout) })
}

// Start brings the demo up (berth-demo.service at boot): NAT, one healthy container, the proxy. Idempotent.
func (Demo) Start() error {
	return withDemo((*demo.Demo).Start)
}

// Stop brings the demo down (berth-demo.service at shutdown): proxy, containers, NAT rules.
func (Demo) Stop() error {
	return withDemo((*demo.Demo).Stop)
}

// Switch hands the demo to the idle container and resets the other to its pristine state (the switch
// timer, every [Demo] SwitchEvery). It fails, keeping the old container serving, when the idle one does not
// become healthy; run by hand (not by systemd, whose OnFailure= does it) it then runs restoreCrash itself.
// It skips its turn (exit 0, one log line) while an upgrade, a repair, a build or a start holds the demo.
func (Demo) Switch() error {
	return withDemo(func(d *demo.Demo, ctx context.Context) error {
		_, err := d.Switch(ctx)
		if err != nil && os.Getenv("INVOCATION_ID") == "" {
			d.RestoreCrash(ctx, os.Stdout)
		}
		return err
	})
}

// Upgrade upgrades the pristine state on the idle container (the upgrade timer, at [Demo] UpgradeAt): apt,
// the payload's upgrade, the hooks in [Demo] Hooks (one-shots archived on success, quarantined on failure;
// always/ every night). It rolls back and alerts on failure.
func (Demo) Upgrade() error {
	return withDemo((*demo.Demo).Upgrade)
}

// RestoreCrash checks both containers and repairs those that do not boot healthy: from the pristine state,
// then older generations, then a clone of the healthy one; it reports what it repaired and how.
func (Demo) RestoreCrash() error {
	return withDemo(func(d *demo.Demo, ctx context.Context) error { return d.RestoreCrash(ctx, os.Stdout) })
}

// Status shows the active container and its health, the proxy, whether the timers are installed and the
// next switch (from the switch timer), last upgrade and its result, quarantined hooks, the pristine
// generations and the last build's line per app.
func (Demo) Status() error {
	return withDemo(func(d *demo.Demo, ctx context.Context) error { return d.Status(ctx, os.Stdout) })
}

// Destroy removes the containers, their pristine generations and the proxy's demo configuration.
func (Demo) Destroy() error {
	return withDemo((*demo.Demo).Destroy)
}

// Remove destroys the demo and undoes the host preparation: NAT rules, bridge, sysctl, the demo's own
// certificate. The hooks directory stays.
func (Demo) Remove() error {
	return withDemo((*demo.Demo).Remove)
}

// Renew replaces the demo's certificate when fewer than 30 days remain (FORCE=1: now): from [Demo]
// ACMEDirectory, its challenge answered by the demo's proxy, or self-signed ([Demo] SelfSigned), installed
// with a graceful reload of the proxy (berth-demo-renew.timer, daily).
func (Demo) Renew() error {
	return withDemo(func(d *demo.Demo, ctx context.Context) error { return d.RenewReport(ctx, knobs.Force, os.Stdout) })
}

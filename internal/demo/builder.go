package demo

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"time"

	"berth/internal/image"
	"berth/internal/lxc"
)

// settings are what the demo offers an image's provision script ([Settings] Receive takes from them).
func (d *Demo) settings() []image.Setting {
	scheme := "http"
	if d.cfg.HTTPS != "" {
		scheme = "https"
	}
	origin := func(key string) string { return "[Demo] " + key + ", " + d.c.Origin("Demo", key) }
	return []image.Setting{
		{Name: "BERTH_DOMAIN", Value: d.domain(), Origin: origin("Domain")},
		{Name: "BERTH_DEMO_USER", Value: d.cfg.User, Origin: origin("User")},
		{Name: "BERTH_DEMO_PASSWORD_FILE", Value: d.passwordFile(), Origin: "the demo password", File: true},
		{Name: "BERTH_PUBLIC_SCHEME", Value: scheme, Origin: origin("HTTPS")},
	}
}

// builder boots a staging tree for provisioning as an LXC container of its own on the demo's bridge (the
// subnet's second address, which no demo container uses), so that an installer that starts services and
// fetches packages runs as it would on a real host; the containers that serve are not touched. systemd is
// its init: the tree may not have /sbin/init before its packages are installed.
type builder struct{ d *Demo }

type guest struct{ lxc.Container }

func (b builder) Boot(ctx context.Context, dir string, log io.Writer) (image.Guest, error) {
	ct := b.d.ct(b.d.cfg.Bridge + "-build")
	// Privileged and without limits: it builds the tree the demo containers then run unprivileged (the
	// tree is owned by their ids when it becomes a generation).
	ct.Init, ct.IDBase, ct.Limits = "/lib/systemd/systemd", 0, lxc.Limits{}
	n := lxc.Net{Bridge: b.d.cfg.Bridge, Addr: netip.PrefixFrom(b.d.net.Addr(-1), b.d.cfg.Subnet.Bits()), Gateway: b.d.net.Gateway()}
	fmt.Fprintf(log, "### berth: booting %s as LXC container %s (%s on %s)\n", dir, ct.Name, n.Addr, n.Bridge)
	return guest{ct}, ct.Boot(ctx, "dir:"+dir, n)
}

func (g guest) Run(ctx context.Context, env map[string]string, stdin io.Reader, out io.Writer, timeout time.Duration, argv ...string) error {
	return g.Exec(ctx, env, stdin, out, timeout, argv...)
}

// Shutdown stops the builder cleanly (systemd in it shuts down, bounded by StopTimeout) and removes it.
func (g guest) Shutdown(context.Context) error { return g.Destroy(StopTimeout) }

package demo

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"berth/internal/lxc"
)

func (d *Demo) ctDir(name string) string  { return filepath.Join(d.lxcPath, name) }
func (d *Demo) rootfs(name string) string { return filepath.Join(d.ctDir(name), "rootfs") }
func (d *Demo) lxcLog(name string) string { return filepath.Join(d.dir, "logs", name+".lxc.log") }

// IDBase is where the demo containers' ids start on the host: their root is uid 1000000 there, not 0.
const IDBase = lxc.DemoIDBase

// ct is the LXC container name under the demo's LXC path: unprivileged, with [Demo] Memory, CPUs and Tasks.
func (d *Demo) ct(name string) lxc.Container {
	return lxc.Container{Path: d.lxcPath, Name: name, Log: d.lxcLog(name), IDBase: IDBase,
		Limits: lxc.Limits{Memory: d.cfg.Memory, CPUs: d.cfg.CPUs, Tasks: d.cfg.Tasks}}
}

// lxcNet is the container's network: a static address on the demo's bridge.
func (d *Demo) lxcNet(name string) lxc.Net {
	addr := netip.PrefixFrom(d.net.Addr(slices.Index(d.cfg.Containers, name)), d.cfg.Subnet.Bits())
	return lxc.Net{Bridge: d.cfg.Bridge, Addr: addr, Gateway: d.net.Gateway()}
}

// rootfsSpec is the container's lxc.rootfs.path for generation g under the demo's backend.
func (d *Demo) rootfsSpec(name, g string) string {
	return d.gens.RootfsSpec(d.ctDir(name), d.genDir(g))
}

func (d *Demo) writeConfig(name, rootfs string) error {
	return d.ct(name).WriteConfig(rootfs, d.lxcNet(name))
}

// reset returns a stopped container to generation g: a fresh snapshot (btrfs), an emptied upper layer
// (overlayfs) or a fresh copy (dir), and its configuration pointing at it.
func (d *Demo) reset(ctx context.Context, st *State, name, g string) error {
	if d.running(name) {
		return fmt.Errorf("%s is running: stop it before resetting it", name)
	}
	st.Dirty[name] = true // until the reset is complete
	if err := d.save(st); err != nil {
		return err
	}
	if err := os.MkdirAll(d.ctDir(name), 0o750); err != nil {
		return err
	}
	err := d.gens.ResetTo(ctx, d.ctDir(name), g)
	if err == nil {
		err = d.writeConfig(name, d.rootfsSpec(name, g))
	}
	if err != nil {
		return fmt.Errorf("reset %s to generation %s: %w", name, g, err)
	}
	st.Dirty[name], st.Gen[name] = false, g
	return d.save(st)
}

func (d *Demo) running(name string) bool { return d.ct(name).Running() }

// start boots the container (LXC daemonizes it: it outlives berth and its systemd job).
func (d *Demo) start(ctx context.Context, st *State, name string) error {
	if d.running(name) {
		return nil
	}
	st.Dirty[name] = true
	if err := d.save(st); err != nil {
		return err
	}
	return d.ct(name).Start(ctx)
}

// stop shuts the container down cleanly (bounded by StopTimeout), then kills it.
func (d *Demo) stop(name string) error { return d.ct(name).Stop(StopTimeout) }

// attach runs argv inside the running container, its output appended to log.
func (d *Demo) attach(ctx context.Context, name string, log *os.File, timeout time.Duration, argv ...string) error {
	return d.ct(name).Attach(ctx, log, timeout, argv...)
}

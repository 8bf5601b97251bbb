package demo

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"berth/internal/config"
	"berth/internal/fsx"
	"berth/internal/run"
)

// The original tool's switch, kept to measure berth against it (mage bench): start the idle container,
// wait 10 seconds, stop the active one and restore it, with a proxy that only fails over passively (both
// containers in a round-robin upstream, the stopped one skipped after a refused connection).

// OriginalWait is the original switch's fixed wait between starting the idle container and stopping the
// active one.
var OriginalWait = 10 * time.Second

// OriginalSwitch switches the way the original demo_switch.sh did (without its lock and marker files):
// no health check and no traffic move, only start, sleep, stop, reset.
func (d *Demo) OriginalSwitch(ctx context.Context) (t SwitchTimes, err error) {
	l, st, err := d.begin(ctx, "demo original switch", true)
	if err != nil {
		return t, err
	}
	defer l.Release()
	cur, err := d.current()
	if err != nil {
		return t, err
	}
	t.From = st.Active
	t.To = d.other(st.Active)
	t0 := time.Now()
	if err := d.start(ctx, st, t.To); err != nil {
		return t, err
	}
	time.Sleep(OriginalWait)
	if err := d.stop(t.From); err != nil {
		return t, err
	}
	t.Switch = time.Since(t0)
	st.Active = t.To
	t1 := time.Now()
	if err := d.reset(ctx, st, t.From, cur); err != nil {
		return t, err
	}
	t.Reset = time.Since(t1)
	return t, d.save(st)
}

// PassiveProxy runs a second HAProxy on addr in front of both containers the way the original's nginx
// upstream did: round robin over both, no health check, a refused connection retried on the other. stop
// ends it.
func (d *Demo) PassiveProxy(ctx context.Context, addr string) (stop func(), err error) {
	dir := filepath.Join(d.dir, "passive-proxy")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var servers strings.Builder
	for _, s := range d.proxy.Servers {
		fmt.Fprintf(&servers, "\tserver %s %s\n", s.Name, s.Addr)
	}
	cfg := fmt.Sprintf(`global
	pidfile %[1]s/haproxy.pid
defaults
	mode http
	timeout connect 5s
	timeout client 60s
	timeout server 60s
	retries 3
	option redispatch
frontend http
	bind %[2]s
	default_backend demo
backend demo
	balance roundrobin
%[3]s`, dir, addr, servers.String())
	if err := fsx.WriteFile(filepath.Join(dir, "haproxy.cfg"), []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	if _, err := run.Command(ctx, "haproxy", "-D", "-f", filepath.Join(dir, "haproxy.cfg")); err != nil {
		return nil, err
	}
	return func() {
		if b, err := os.ReadFile(filepath.Join(dir, "haproxy.pid")); err == nil {
			run.Command(context.Background(), "kill", strings.TrimSpace(string(b)))
		}
		os.RemoveAll(dir)
	}, nil
}

// PristineDir is the tree of the current pristine generation.
func (d *Demo) PristineDir() (string, error) {
	g, err := d.current()
	return d.genDir(g), err
}

// Config is the demo's configuration.
func (d *Demo) Config() config.Demo { return d.cfg }

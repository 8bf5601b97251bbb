package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"berth/internal/demo"
	"berth/internal/fsx"
	"berth/internal/haproxy"
	"berth/internal/run"
)

// The original tool's switch, kept to measure berth against it (mage bench): start the idle container,
// wait 10 seconds, stop the active one and restore it, with a proxy that only fails over passively (both
// containers in a round-robin upstream, the stopped one skipped after a refused connection).

// OriginalWait is the original switch's fixed wait between starting the idle container and stopping the
// active one.
var OriginalWait = 10 * time.Second

// OriginalSwitch switches d the way the original demo_switch.sh did (without its lock and marker files):
// no health check and no traffic move, only start, sleep, stop, reset.
func OriginalSwitch(ctx context.Context, d *demo.Demo) (t demo.SwitchTimes, err error) {
	l, st, err := d.Begin(ctx, "demo original switch")
	if err != nil {
		return t, err
	}
	defer l.Release()
	t.From = st.Active
	t.To = d.Other(st.Active)
	t0 := time.Now()
	if err := d.StartContainer(ctx, st, t.To); err != nil {
		return t, err
	}
	time.Sleep(OriginalWait)
	if err := d.StopContainer(t.From); err != nil {
		return t, err
	}
	t.Switch = time.Since(t0)
	st.Active = t.To
	t1 := time.Now()
	if err := d.ResetContainer(ctx, st, t.From); err != nil {
		return t, err
	}
	t.Reset = time.Since(t1)
	return t, d.Save(st)
}

// PassiveProxy runs a second HAProxy on addr, with its files in dir, in front of servers the way the
// original's nginx upstream did: round robin over both, no health check, a refused connection retried on
// the other. stop ends it.
func PassiveProxy(ctx context.Context, dir, addr string, servers []haproxy.Server) (stop func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var lines strings.Builder
	for _, s := range servers {
		fmt.Fprintf(&lines, "\tserver %s %s\n", s.Name, s.Addr)
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
%[3]s`, dir, addr, lines.String())
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

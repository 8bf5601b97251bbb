package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"berth/internal/base"
	"berth/internal/budget"
	"berth/internal/clone"
	"berth/internal/hostnet"
	"berth/internal/image"
	"berth/internal/lock"
	shipped "berth/upgrade.d"
)

// Check validates what Build needs before anything changes: the image, the subnet, the hooks.
func (d *Demo) Check() error {
	if d.imgErr != nil {
		return fmt.Errorf("[Demo] Image = %s: %w", d.cfg.Image, d.imgErr)
	}
	m, _ := image.Load(d.fsys, d.cfg.Image)
	if m.Kind != "container" {
		return fmt.Errorf("[Demo] Image = %s: a %s image, not a demo container image ([Image] Kind = container)", d.cfg.Image, m.Kind)
	}
	if err := hostnet.CheckOverlap(d.cfg.Subnet, d.cfg.Bridge); err != nil {
		return fmt.Errorf("[Demo] Subnet = %s: %w", d.cfg.Subnet, err)
	}
	return d.hooks.Check()
}

// Build makes the demo: the demo password (made once), the bridge and NAT, the pristine generation from
// the base and [Demo] Image (only when missing, stale or forced; provisioned in a booted builder container
// on the demo's bridge when the image asks for it), both containers reset to it, the TLS bundle, the proxy,
// one container serving, and then the certificate from ACME when it is due (cert.go). Running it again
// changes nothing.
func (d *Demo) Build(ctx context.Context, force bool) error {
	if err := d.Check(); err != nil {
		return err
	}
	if err := d.checkACME(ctx); err != nil {
		return err
	}
	l, st, err := d.begin(ctx, budget.Build, false)
	if err != nil {
		return err
	}
	defer l.Release()
	if _, err := base.Password(d.passwordFile()); err != nil {
		return err
	}
	if err := d.net.Up(ctx); err != nil {
		return err
	}
	cur, _ := d.current()
	if force || cur == "" || !image.Fresh(d.c, d.fsys, d.cfg.Image, d.genDir(cur), d.settings()) {
		if cur, err = d.buildPristine(ctx, st); err != nil {
			return err
		}
	}
	if err := d.installHooks(); err != nil {
		return err
	}
	if _, err := d.selfSignedDue(false); err != nil {
		return err
	}
	for _, n := range d.cfg.Containers {
		if !d.running(n) && (st.Dirty[n] || st.Gen[n] != cur || !exists(filepath.Join(d.ctDir(n), "config"))) {
			if err := d.reset(ctx, st, n, cur); err != nil {
				return err
			}
		}
	}
	if err := d.serve(ctx, st); err != nil {
		return err
	}
	return d.certAfterServe(ctx, st, true)
}

// buildPristine builds a new pristine generation from the base and [Demo] Image (provisioned in the booted
// builder container when the image asks for it) and makes it current.
func (d *Demo) buildPristine(ctx context.Context, st *State) (string, error) {
	staging := filepath.Join(d.store, "staging")
	if err := os.MkdirAll(d.store, 0o700); err != nil {
		return "", err
	}
	if err := clone.Remove(ctx, staging); err != nil {
		return "", err
	}
	m, _ := image.Load(d.fsys, d.cfg.Image)
	opts := image.Options{Sources: image.SourceOverrides(m, d.Sources), Settings: d.settings(), Booter: builder{d}}
	if err := image.BuildTree(ctx, d.c, d.fsys, d.cfg.Image, staging, opts); err != nil {
		return "", err
	}
	g, err := d.addGeneration(ctx, st, staging)
	if err == nil {
		logger().Info("pristine state built", "image", d.cfg.Image, "generation", g, "backend", d.Backend)
	}
	return g, err
}

// ImportHooks brings an original tool's upgrade.d at src into [Demo] Hooks (upgraded.Hooks.Import), under the
// demo's lock, writing one line per file to w.
func (d *Demo) ImportHooks(ctx context.Context, src string, w io.Writer) error {
	l, err := d.lock(ctx, budget.ImportHooks)
	if err != nil {
		return err
	}
	defer l.Release()
	report, err := d.hooks.Import(src)
	for _, line := range report {
		fmt.Fprintln(w, line)
	}
	return err
}

// installHooks lays out [Demo] Hooks and adds the shipped hooks that are missing there.
func (d *Demo) installHooks() error { return d.hooks.Install(shipped.FS) }

// passwordFile holds the demo user's password (0600), made once by Build: the password the image sets for
// the demo user and the hint shows to visitors on the login page, as a demo must.
func (d *Demo) passwordFile() string { return filepath.Join(d.dir, "demo-password") }

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// serve makes sure exactly one container runs, healthy, with the proxy sending traffic to it: the recorded
// active one when it is healthy, else the other. It is how every run finishes what a killed one started.
func (d *Demo) serve(ctx context.Context, st *State) error {
	cur, err := d.current()
	if err != nil {
		return err
	}
	order := slices.Clone(d.cfg.Containers)
	if st.Active != "" {
		order = []string{st.Active, d.other(st.Active)}
	}
	chosen, sick := "", ""
	for _, n := range order {
		if !d.running(n) {
			continue
		}
		if err := d.healthy(ctx, n); err != nil {
			logger().Warn("running but unhealthy: taken out of service", "container", n, "err", err)
			sick = n
			continue
		}
		chosen = n
		break
	}
	if sick != "" && sick == order[0] {
		order = []string{order[1], sick} // the other one first: the sick one is reset before it serves again
	}
	for _, n := range order {
		if chosen != "" {
			break
		}
		if err := d.stop(n); err != nil {
			return err
		}
		if st.Dirty[n] || st.Gen[n] == "" {
			if err := d.reset(ctx, st, n, cur); err != nil {
				return err
			}
		}
		if err := d.start(ctx, st, n); err != nil {
			d.alert(ctx, err.Error())
			continue
		}
		if err := d.waitHealthy(ctx, n); err != nil {
			d.alert(ctx, err.Error())
			d.stop(n)
			continue
		}
		chosen = n
	}
	if chosen == "" {
		return fmt.Errorf("no container of %v becomes healthy: run demo:restoreCrash", d.cfg.Containers)
	}
	st.Active = chosen
	if err := d.save(st); err != nil {
		return err
	}
	if err := d.proxy.Ensure(ctx, chosen); err != nil {
		return err
	}
	idle := d.other(chosen)
	if d.running(idle) {
		d.proxy.WaitIdle(ctx, idle, DrainTimeout)
		if err := d.stop(idle); err != nil {
			return err
		}
	}
	if st.Dirty[idle] || st.Gen[idle] == "" {
		return d.reset(ctx, st, idle, cur)
	}
	return nil
}

// Start brings the demo up (at boot): bridge and NAT, one healthy container, the proxy. Idempotent.
func (d *Demo) Start(ctx context.Context) error {
	l, st, err := d.begin(ctx, budget.Start, true)
	if err != nil {
		return err
	}
	defer l.Release()
	if err := d.net.Up(ctx); err != nil {
		return err
	}
	if _, err := d.selfSignedDue(false); err != nil {
		return err
	}
	if err := d.serve(ctx, st); err != nil {
		return err
	}
	return d.certAfterServe(ctx, st, false)
}

// Stop brings the demo down (at shutdown): the proxy, both containers, the NAT rules. The bridge stays.
func (d *Demo) Stop(ctx context.Context) error {
	l, err := d.lock(ctx, budget.Stop)
	if err != nil {
		return err
	}
	defer l.Release()
	errs := []error{d.proxy.Stop(ctx)}
	for _, n := range d.cfg.Containers {
		errs = append(errs, d.stop(n))
	}
	return errors.Join(append(errs, d.net.Down(ctx))...)
}

// Switch hands the demo to the idle container: it starts from its pristine state, passes its health check,
// gets the traffic (requests in flight on the old one finish), and the old one is stopped and reset. When
// the idle one does not become healthy the old one keeps serving and the switch fails with an alert.
func (d *Demo) Switch(ctx context.Context) (t SwitchTimes, err error) {
	l, st, err := d.begin(ctx, budget.Switch, true)
	if y := (*lock.YieldError)(nil); errors.As(err, &y) {
		// An upgrade (or a repair, a build, a start, a renewal) holds the demo: this turn is skipped, not failed, so
		// that no repair starts and no alert goes out; it leaves a container serving when it ends.
		logger().Info("switch skipped: another job holds the demo", "job", y.Holder.What, "pid", y.Holder.Pid,
			"since", y.Holder.Since.Format(time.DateTime))
		t.Skipped = y.Holder
		return t, nil
	}
	if err != nil {
		return t, err
	}
	defer l.Release()
	if err := d.serve(ctx, st); err != nil {
		d.alert(ctx, "switch: "+err.Error())
		return t, err
	}
	cur, err := d.current()
	if err != nil {
		return t, err
	}
	old := st.Active
	next := d.other(old)
	if st.Dirty[next] || st.Gen[next] != cur {
		if err := d.reset(ctx, st, next, cur); err != nil {
			return t, err
		}
	}
	t.From, t.To = old, next
	t0 := time.Now()
	err = d.start(ctx, st, next)
	if err == nil {
		err = d.waitHealthy(ctx, next)
	}
	if err != nil {
		d.stop(next)
		err = fmt.Errorf("switch to %s failed, %s keeps serving: %w", next, old, err)
		d.alert(ctx, err.Error())
		return t, err
	}
	st.Active = next
	if err := d.save(st); err != nil {
		return t, err
	}
	if err := d.proxy.SetActive(ctx, next); err != nil {
		return t, err
	}
	t.Switch = time.Since(t0)
	if err := d.proxy.WaitIdle(ctx, old, DrainTimeout); err != nil {
		logger().Warn("requests still in flight on the old container", "container", old, "err", err)
	}
	if err := d.stop(old); err != nil {
		return t, err
	}
	t1 := time.Now()
	if err := d.reset(ctx, st, old, cur); err != nil {
		return t, err
	}
	t.Reset = time.Since(t1)
	st.LastSwitch = time.Now()
	logger().Info("switched", "from", old, "to", next, "switch", t.Switch.Round(time.Millisecond),
		"reset", t.Reset.Round(time.Millisecond), "backend", d.Backend)
	return t, d.save(st)
}

// SwitchTimes are a switch's figures: Switch from starting the idle container to traffic moved onto it,
// Reset for returning the old one to its pristine state.
type SwitchTimes struct {
	From, To      string
	Switch, Reset time.Duration
	Skipped       lock.Info // the job that held the demo when the switch skipped its turn
}

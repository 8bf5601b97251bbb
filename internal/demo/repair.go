package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"berth/internal/budget"
	"berth/internal/clone"
)

// RestoreCrash checks every container and repairs the ones that do not boot into a healthy demo: first
// from the current pristine generation, then from the archived generations newest first (a damaged newer
// generation is set aside), then from a pristine state rebuilt from the base and the image. The serving container is left
// serving when it is healthy; otherwise a healthy one takes over. It writes what it repaired and how to w,
// and fails when a container could not be repaired.
func (d *Demo) RestoreCrash(ctx context.Context, w io.Writer) error {
	l, st, err := d.begin(ctx, budget.RestoreCrash, true)
	if err != nil {
		return err
	}
	defer l.Release()
	if err := d.net.Up(ctx); err != nil {
		return err
	}
	ok := map[string]bool{}
	var broken []string
	for _, n := range d.cfg.Containers {
		if n == st.Active && d.running(n) && d.healthy(ctx, n) == nil {
			ok[n] = true
			fmt.Fprintf(w, "%s: serving and healthy\n", n)
			continue
		}
		if err := d.check(ctx, st, n); err == nil {
			ok[n] = true
			fmt.Fprintf(w, "%s: boots and is healthy\n", n)
			continue
		} else {
			fmt.Fprintf(w, "%s: broken: %v\n", n, err)
		}
		broken = append(broken, n)
	}
	var failed []string
	for _, n := range broken {
		how, err := d.repair(ctx, st, n)
		if err != nil {
			failed = append(failed, n)
			fmt.Fprintf(w, "%s: could not be repaired: %v\n", n, err)
			continue
		}
		ok[n] = true
		fmt.Fprintf(w, "%s: repaired %s\n", n, how)
	}
	if st.Active != "" && !ok[st.Active] {
		st.Active = "" // serve picks a healthy one
	}
	if err := d.serve(ctx, st); err != nil {
		return err
	}
	fmt.Fprintf(w, "serving from %s\n", st.Active)
	if len(failed) > 0 {
		err := fmt.Errorf("could not repair %s", strings.Join(failed, ", "))
		d.alert(ctx, "restoreCrash: "+err.Error())
		return err
	}
	if len(broken) > 0 {
		d.alert(ctx, fmt.Sprintf("restoreCrash: repaired %s; serving from %s", strings.Join(broken, ", "), st.Active))
	}
	return nil
}

// check boots a container that is not serving, as it is, waits for its health check, and stops it again.
func (d *Demo) check(ctx context.Context, st *State, name string) error {
	if err := d.stop(name); err != nil {
		return err
	}
	defer d.stop(name)
	if err := d.start(ctx, st, name); err != nil {
		return err
	}
	return d.waitHealthy(ctx, name)
}

// repair resets a broken container to each generation, newest first, until it passes check; generations
// newer than the one that worked are set aside as broken. When none works, the last resort is a new pristine
// state built from the base and the image, as demo:build FORCE=1 builds it, and never a copy of a serving
// container (its visitors' data would become every later visitor's start); the healthy container keeps
// serving meanwhile. The check leaves the container dirty; serve resets it to the current generation after.
func (d *Demo) repair(ctx context.Context, st *State, name string) (string, error) {
	gens, err := d.generations()
	if err != nil {
		return "", err
	}
	var errs []error
	for i := len(gens) - 1; i >= 0; i-- {
		g := gens[i]
		err := d.reset(ctx, st, name, g)
		if err == nil {
			err = d.check(ctx, st, name)
		}
		if err == nil {
			if err := d.setAside(gens[i+1:], fmt.Sprintf("%s booted healthy only from the older generation %s", name, g)); err != nil {
				return "", err
			}
			if i == len(gens)-1 {
				return "from its pristine state (generation " + g + ")", nil
			}
			return fmt.Sprintf("from archived generation %s (generations %s set aside as broken under %s/broken)",
				g, strings.Join(gens[i+1:], ", "), d.store), nil
		}
		errs = append(errs, fmt.Errorf("generation %s: %w", g, err))
	}
	g, err := d.buildPristine(ctx, st)
	if err == nil {
		err = d.setAside(gens, fmt.Sprintf("%s did not boot healthy from any generation: %v", name, errors.Join(errs...)))
	}
	if err == nil {
		err = d.reset(ctx, st, name, g)
	}
	if err == nil {
		err = d.check(ctx, st, name)
	}
	if err != nil {
		return "", errors.Join(append(errs, fmt.Errorf("a pristine state rebuilt from the base and %s: %w", d.cfg.Image, err))...)
	}
	return fmt.Sprintf("from a pristine state rebuilt from the base and image %s, generation %s (generations %s failed and are set aside under %s/broken)",
		d.cfg.Image, g, strings.Join(gens, ", "), d.store), nil
}

// Status writes the demo's state: backend, active container and its health, whether the timers are
// installed and the next switch (from the switch timer), last upgrade and its result, quarantined hooks,
// generations, and the per-app summary of the last build.
func (d *Demo) Status(ctx context.Context, w io.Writer) error {
	st, err := d.load()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintf(tw, "backend\t%s\n", d.Backend)
	if !d.built() {
		fmt.Fprintf(tw, "built\tno (run demo:build)\n")
		return nil
	}
	for _, n := range d.cfg.Containers {
		state, health := "stopped", "-"
		if d.running(n) {
			state, health = "running", "healthy"
			if err := d.healthy(ctx, n); err != nil {
				health = "unhealthy: " + err.Error()
			}
		}
		role := "idle"
		if n == st.Active {
			role = "active"
		}
		fmt.Fprintf(tw, "%s\t%s, %s, %s, %s, generation %s\n", n, role, state, health, d.addr(n), st.Gen[n])
	}
	proxy := "stopped"
	if d.proxy.Running() {
		if a, err := d.proxy.Active(ctx); err == nil {
			proxy = "routing to " + a
		} else {
			proxy = "running: " + err.Error()
		}
	}
	fmt.Fprintf(tw, "proxy\t%s (HTTP %s, HTTPS %s)\n", proxy, d.cfg.HTTP, d.cfg.HTTPS)
	fmt.Fprintf(tw, "certificate\t%s\n", d.certStatus())
	fmt.Fprintf(tw, "last switch\t%s\n", stamp(st.LastSwitch))
	for _, r := range d.statusTimers(ctx) {
		fmt.Fprintln(tw, r)
	}
	fmt.Fprintf(tw, "last upgrade\t%s %s\n", stamp(st.LastUpgrade), st.UpgradeNote)
	q, _ := d.hooks.Quarantined()
	fmt.Fprintf(tw, "quarantined hooks\t%d %s\n", len(q), strings.Join(q, " "))
	gens, _ := d.generations()
	slices.Reverse(gens)
	fmt.Fprintf(tw, "generations\t%s (newest first; the first is the pristine state)\n", strings.Join(gens, " "))
	if b, err := os.ReadDir(filepath.Join(d.store, "broken")); err == nil && len(b) > 0 {
		fmt.Fprintf(tw, "broken generations\t%d under %s/broken\n", len(b), d.store)
	}
	if apps, log := d.apps(); len(apps) > 0 {
		fmt.Fprintf(tw, "apps	from the last build's log %s\n", log)
		for _, a := range apps {
			fmt.Fprintf(tw, "\t%s\n", a)
		}
	}
	return nil
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Format("2006-01-02 15:04:05")
}

// nextSwitch is the next multiple of every since midnight, as the switch timer's OnCalendar= has it.
func nextSwitch(now time.Time, every time.Duration) time.Time {
	midnight := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, now.Location())
	return midnight.Add((now.Sub(midnight)/every + 1) * every)
}

// Destroy removes the containers, the pristine generations and the proxy with its configuration. The host
// preparation (bridge, sysctl, certificate) and the hooks stay.
func (d *Demo) Destroy(ctx context.Context) error {
	l, err := d.lock(ctx, budget.Destroy)
	if err != nil {
		return err
	}
	defer l.Release()
	errs := []error{d.proxy.Stop(ctx)}
	for _, n := range d.cfg.Containers {
		if err := d.stop(n); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, clone.Remove(ctx, d.rootfs(n)), clone.Remove(ctx, d.ctDir(n)))
	}
	return errors.Join(append(errs, clone.Remove(ctx, d.store), os.RemoveAll(d.proxy.Dir), os.RemoveAll(d.statePath()))...)
}

// Remove destroys the demo and undoes the host preparation: NAT rules, bridge, sysctl and the demo's own
// certificate. Hooks and their logs stay.
func (d *Demo) Remove(ctx context.Context) error {
	if err := d.Destroy(ctx); err != nil {
		return err
	}
	return errors.Join(d.net.Remove(ctx), os.RemoveAll(filepath.Dir(d.bundle())))
}

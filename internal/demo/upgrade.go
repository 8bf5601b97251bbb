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
	"time"

	"berth/internal/aptget"
	"berth/internal/budget"
	"berth/internal/fsx"
	"berth/internal/upgraded"
)

// PayloadUpgrade is the image's own upgrade step, run inside the container after apt when the image ships
// it (YunoHost's `yunohost tools upgrade`).
const PayloadUpgrade = "/usr/local/sbin/berth-payload-upgrade"

// Upgrade upgrades the pristine state on the idle container, away from the proxy: a clone of the current
// generation boots, takes apt's upgrades (old configuration files kept), the payload's own upgrade and the
// upgrade.d hooks. Only a run in which everything succeeded becomes the new generation; the old one stays
// as an archived generation, and each container is reset to the new one after its turn. A failing one-shot
// hook is quarantined and the upgrade is redone once without it; any other failure leaves the pristine
// state as it was and alerts.
func (d *Demo) Upgrade(ctx context.Context) error {
	if err := d.hooks.Check(); err != nil {
		return err
	}
	l, st, err := d.begin(ctx, budget.Upgrade, true)
	if err != nil {
		return err
	}
	defer l.Release()
	if err := d.serve(ctx, st); err != nil {
		return err
	}
	idle := d.other(st.Active)
	prev, err := d.current()
	if err != nil {
		return err
	}
	logDir := filepath.Join(d.dir, "logs", "upgrade-"+time.Now().Format("20060102-150405"))
	d.hooks.LogDir = filepath.Join(logDir, "hooks")
	if err := os.MkdirAll(d.hooks.LogDir, 0o750); err != nil {
		return err
	}
	// The upgrade runs at the idle container's own rootfs path, so that hooks written for the original
	// (which edit /var/lib/lxc/$1/rootfs) keep working; the generation is made from it afterwards.
	cand := d.rootfs(idle)
	finish := func(note string, err error) error {
		st.LastUpgrade, st.UpgradeNote = time.Now(), note
		d.stop(idle)
		if rerr := d.reset(ctx, st, idle, currentOr(d, prev)); rerr != nil {
			err = errors.Join(err, rerr)
		}
		if err != nil {
			d.alert(ctx, "upgrade: "+err.Error())
		}
		return errors.Join(err, d.save(st))
	}

	var results []upgraded.HookResult
	for round := 1; ; round++ {
		var failed []string
		results, err = d.upgradeRound(ctx, st, idle, prev, cand, logDir)
		if err != nil {
			return finish("failed: "+err.Error(), fmt.Errorf("%w; generation %s stays the pristine state (logs: %s)", err, prev, logDir))
		}
		for _, r := range results {
			if r.Err != nil {
				failed = append(failed, r.Name)
				if !r.Always {
					if qerr := d.hooks.Quarantine(r.Name); qerr != nil {
						return finish("failed", qerr)
					}
				}
			}
		}
		if len(failed) == 0 {
			break
		}
		d.alert(ctx, fmt.Sprintf("upgrade: hooks failed: %s (quarantined unless under always/; logs: %s)", strings.Join(failed, ", "), d.hooks.LogDir))
		if round == 2 {
			return finish("failed: hooks "+strings.Join(failed, ", "), fmt.Errorf("hooks failed again without the quarantined ones: %s; generation %s stays the pristine state", strings.Join(failed, ", "), prev))
		}
		logger().Warn("redoing the upgrade without the failed hooks", "failed", failed)
	}
	if err := d.gens.Settle(ctx, prev, cand); err != nil {
		return finish("failed", err)
	}
	g, changed := prev, d.changed(prev, cand)
	if changed != "" {
		if g, err = d.addGeneration(ctx, st, cand); err != nil {
			return finish("failed", err)
		}
	}
	archived, err := d.archive(results)
	if err != nil {
		return finish("failed", err)
	}
	q, _ := d.hooks.Quarantined()
	if changed == "" {
		note := fmt.Sprintf("unchanged: generation %s stays the pristine state; hooks archived: %d, quarantined: %d", prev, len(archived), len(q))
		logger().Info("upgrade changed nothing", "generation", prev, "archived", archived, "logs", logDir)
		return finish(note, nil)
	}
	note := fmt.Sprintf("generation %s from %s; hooks archived: %d, quarantined: %d", g, prev, len(archived), len(q))
	logger().Info("upgraded", "generation", g, "previous", prev, "first_change", changed, "archived", archived, "logs", logDir)
	return finish(note, nil)
}

// Volatile are the paths of a container's tree that change at every boot and every apt update whatever the
// upgrade did (logs, caches, apt's lists, systemd's and the shell's state, temporary files); the image adds
// its own ([Serve] Volatile: its databases' files). Changes there alone do not make a new generation.
var Volatile = []string{"/tmp", "/var/tmp", "/run", "/var/log", "/var/cache", "/var/lib/apt/lists", "/var/lib/systemd",
	"/var/backups", "/var/lib/logrotate", "/var/lib/dhcp", "/var/lib/php/sessions", "/root/.bash_history", "/root/.lesshst"}

// changed names the first difference between generation prev and the upgraded tree at cand, outside the
// volatile paths ("" when there is none: the upgrade changed nothing). When the trees cannot be compared it
// says why, and the upgrade makes a generation as if they differed.
func (d *Demo) changed(prev, cand string) string {
	skip := map[string]bool{}
	for _, p := range append(slices.Clone(Volatile), d.payload.Volatile...) {
		skip[strings.TrimPrefix(p, "/")] = true
	}
	diff, err := fsx.TreeDiff(d.genDir(prev), cand, func(rel string) bool { return skip[rel] })
	if err != nil {
		return "the trees could not be compared: " + err.Error()
	}
	return diff
}

// archive moves the one-shot hooks that ran (all successfully) to the archive.
func (d *Demo) archive(results []upgraded.HookResult) ([]string, error) {
	var archived []string
	for _, r := range results {
		if !r.Always {
			if err := d.hooks.Archive(r.Name); err != nil {
				return archived, err
			}
			archived = append(archived, r.Name)
		}
	}
	return archived, nil
}

// currentOr is the current generation, or fallback when it cannot be read.
func currentOr(d *Demo, fallback string) string {
	if g, err := d.current(); err == nil {
		return g
	}
	return fallback
}

// upgradeRound boots a clone of generation prev as the idle container and upgrades it; on return the
// container is stopped and cand holds the result.
func (d *Demo) upgradeRound(ctx context.Context, st *State, idle, prev, cand, logDir string) ([]upgraded.HookResult, error) {
	if err := d.stop(idle); err != nil {
		return nil, err
	}
	if err := d.gens.Fork(ctx, prev, cand); err != nil { // a snapshot, an overlay or a copy: storage.Backend.Fork
		return nil, err
	}
	st.Gen[idle] = ""
	if err := d.writeConfig(idle, "dir:"+cand); err != nil {
		return nil, err
	}
	defer d.stop(idle)
	if err := d.start(ctx, st, idle); err != nil {
		return nil, err
	}
	if err := d.waitHealthy(ctx, idle); err != nil {
		return nil, err
	}
	log, err := os.OpenFile(filepath.Join(logDir, "apt.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	skipped, err := aptget.Upgrade(ctx, func(ctx context.Context, out io.Writer, timeout time.Duration, argv ...string) error {
		return d.ct(idle).Exec(ctx, nil, nil, out, timeout, argv...)
	}, log)
	if err != nil {
		return nil, fmt.Errorf("apt in %s: %w (log: %s)", idle, err, log.Name())
	}
	if len(skipped) > 0 {
		d.alert(ctx, fmt.Sprintf("upgrade: third-party apt sources unreachable, skipped in this upgrade: %s (log: %s)", strings.Join(skipped, " "), log.Name()))
	}
	if exists(filepath.Join(cand, PayloadUpgrade)) {
		if err := d.attach(ctx, idle, log, 2*time.Hour, PayloadUpgrade); err != nil {
			return nil, fmt.Errorf("payload upgrade in %s: %w (log: %s)", idle, err, log.Name())
		}
	}
	// No BERTH_ROOTFS: the candidate runs, and a path into a running guest is not for host-side scripts (a
	// hook that edits the payload does so inside it, with lxc-attach).
	d.hooks.Env = map[string]string{"BERTH_LXC_PATH": d.lxcPath, "BERTH_CONTAINER": idle,
		"BERTH_DEMO_USER": d.cfg.User, "BERTH_DEMO_PASSWORD_FILE": d.passwordFile()}
	results := d.hooks.Run(ctx, idle, nil)
	if err := d.waitHealthy(ctx, idle); err != nil {
		return nil, fmt.Errorf("after the upgrade: %w", err)
	}
	return results, d.stop(idle)
}

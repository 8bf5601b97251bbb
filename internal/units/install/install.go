// Package install puts berth on the host: the compiled binary at [Paths] Binary and the units that
// internal/units generates into [Paths] Units, then enables and starts them through systemd's D-Bus API;
// Uninstall removes exactly what it installed. The generator itself stays free of D-Bus.
package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	sd "github.com/coreos/go-systemd/v22/dbus"

	"berth/internal/config"
	"berth/internal/fsx"
	"berth/internal/lock"
	"berth/internal/run"
	"berth/internal/systemd"
	"berth/internal/units"
)

// ManifestPath is where units:install records the files it installed: [Paths] State/units.manifest.
func ManifestPath(c *config.Config) string { return filepath.Join(c.Paths.State, "units.manifest") }

func lockPath(c *config.Config) string { return filepath.Join(c.Paths.State, "locks", "units.lock") }

// Options tune Units.
type Options struct {
	// Source is a berth checkout to build the binary from with `go run mage.go -compile` (mage -compile);
	// empty installs the running executable, which is that same compiled binary (`berth units:install`).
	Source string
}

// systemdDirs are the directories systemd loads units from, where units:install may write.
var systemdDirs = []string{"/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"}

// Units builds or copies the binary into [Paths] Binary, writes the generated units into [Paths] Units
// (atomically, only those that changed), removes the ones berth installed before and does not generate
// any more, records them in the manifest, then through systemd's D-Bus API reloads, enables every unit
// with an [Install] section and starts berth-demo.service and the timers. Nothing is restarted: the reload
// re-arms a running timer on its new schedule (a persistent one, the upgrade, may then run at once when its
// new time has passed since its last run), and restarting berth-demo.service would interrupt the demo.
// berth-machines.target is enabled, not started: the machines come up at the next boot, or now with
// relay:configure. Without a running systemd the files are written and Report.Skipped says in one line
// what was not enabled and why.
func Units(ctx context.Context, c *config.Config, opts Options) (units.Report, error) {
	rep := units.Report{Dir: c.Paths.Units}
	files, err := units.Generate(c)
	if err != nil {
		return rep, err
	}
	l, err := lock.Acquire(ctx, lockPath(c), "units install", 10*time.Minute)
	if err != nil {
		return rep, err
	}
	defer l.Release()
	conn, connErr := systemd.Connect(ctx)
	if conn != nil {
		defer conn.Close()
		if !slices.Contains(systemdDirs, filepath.Clean(c.Paths.Units)) {
			return rep, fmt.Errorf("units: [Paths] Units = %s is not a directory systemd loads units from (%s)", c.Paths.Units, strings.Join(systemdDirs, ", "))
		}
	} else if !errors.Is(connErr, systemd.ErrNoSystemd) {
		return rep, fmt.Errorf("units: connect to systemd: %w", connErr)
	}
	if rep.Binary, err = Binary(ctx, c.Paths.Binary, opts.Source); err != nil {
		return rep, err
	}
	rep.Notes = envNotes(os.Environ(), c.File)

	if err := replaceFiles(ctx, conn, c, files, &rep); err != nil {
		return rep, err
	}

	var installable []string
	for _, f := range files {
		if f.Installable() {
			installable = append(installable, f.Path)
		}
	}
	starts := []string{units.Demo, units.SwitchTimer, units.UpgradeTimer, units.DemoRenewTimer, units.RenewTimer}
	if conn == nil {
		rep.Skipped = fmt.Sprintf("units: %v: wrote the units to %s but did not enable %s, nor start %s; run units:install again on the booted host",
			connErr, c.Paths.Units, strings.Join(installable, " "), strings.Join(starts, " "))
		return rep, nil
	}
	return rep, enableStart(ctx, conn, installable, starts, &rep)
}

// replaceFiles writes files into [Paths] Units and removes the ones the manifest lists that are not
// generated any more (stopped and disabled first when systemd runs), keeping the manifest the union of
// both while it works.
func replaceFiles(ctx context.Context, conn *sd.Conn, c *config.Config, files []units.File, rep *units.Report) error {
	old, err := units.ReadManifest(ManifestPath(c))
	if err != nil {
		return err
	}
	var paths []string
	for _, f := range files {
		paths = append(paths, f.Path)
	}
	// The union first: if anything fails from here on, every file berth may have written is listed.
	if err := units.Manifest(append(slices.Clone(old), paths...)).Write(ManifestPath(c)); err != nil {
		return err
	}
	if err := os.MkdirAll(c.Paths.Units, 0o755); err != nil {
		return err
	}
	if rep.Files, err = units.WriteDir(c.Paths.Units, files); err != nil {
		return err
	}

	// Files berth installed before and does not generate now: stop, disable, remove.
	gone := units.NotGenerated(old, files)
	var goneUnits []string
	for _, p := range gone {
		if !strings.Contains(p, "/") {
			goneUnits = append(goneUnits, p)
		}
	}
	if conn != nil && len(goneUnits) > 0 {
		if err := stopDisable(ctx, conn, c.Paths.Units, goneUnits, rep); err != nil {
			return err
		}
	}
	removed, err := units.Remove(c.Paths.Units, gone)
	rep.Files = append(rep.Files, removed...)
	if err != nil {
		return err
	}
	if _, err := removeLinks(c.Paths.Units, goneUnits); err != nil {
		return err
	}
	return units.Manifest(paths).Write(ManifestPath(c))
}

// enableStart reloads systemd, enables installable and starts starts, each waited on.
func enableStart(ctx context.Context, conn *sd.Conn, installable, starts []string, rep *units.Report) error {
	if err := conn.ReloadContext(ctx); err != nil {
		return fmt.Errorf("units: daemon-reload: %w", err)
	}
	if _, _, err := conn.EnableUnitFilesContext(ctx, installable, false, true); err != nil {
		return fmt.Errorf("units: enable %s: %w", strings.Join(installable, " "), err)
	}
	rep.Enabled = installable
	if err := conn.ReloadContext(ctx); err != nil {
		return fmt.Errorf("units: daemon-reload: %w", err)
	}
	for _, name := range starts {
		timeout := 2 * time.Minute
		if name == units.Demo {
			timeout = units.DemoStartTimeout + time.Minute
		}
		if err := systemd.Job(ctx, conn, "start", name, timeout); err != nil {
			return fmt.Errorf("units: %w", err)
		}
		rep.Started = append(rep.Started, name+skippedBy(ctx, conn, name))
	}
	return nil
}

// skippedBy says " (skipped: ...)" when a unit's start conditions did not hold.
func skippedBy(ctx context.Context, conn *sd.Conn, name string) string {
	p, err := conn.GetUnitPropertyContext(ctx, name, "ConditionResult")
	if err != nil || p.Value.Value() != false {
		return ""
	}
	return " (skipped: its conditions do not hold, e.g. the demo is not built)"
}

// Uninstall stops, disables and removes exactly the files the manifest lists, removes every enablement
// symlink left to them, resets their failed state, reloads systemd and removes the manifest. The binary
// stays: it is berth itself. Without a running systemd the files and symlinks are removed all the same.
func Uninstall(ctx context.Context, c *config.Config) (units.Report, error) {
	rep := units.Report{Dir: c.Paths.Units}
	l, err := lock.Acquire(ctx, lockPath(c), "units uninstall", 10*time.Minute)
	if err != nil {
		return rep, err
	}
	defer l.Release()
	m, err := units.ReadManifest(ManifestPath(c))
	if err != nil {
		return rep, err
	}
	if len(m) == 0 {
		rep.Notes = append(rep.Notes, "units: nothing to uninstall: no manifest at "+ManifestPath(c))
		return rep, nil
	}
	var names []string
	for _, p := range m {
		if !strings.Contains(p, "/") {
			names = append(names, p)
		}
	}
	conn, connErr := systemd.Connect(ctx)
	if conn != nil {
		defer conn.Close()
		if err := stopDisable(ctx, conn, c.Paths.Units, names, &rep); err != nil {
			return rep, err
		}
	} else if !errors.Is(connErr, systemd.ErrNoSystemd) {
		return rep, fmt.Errorf("units: connect to systemd: %w", connErr)
	}
	removed, err := units.Remove(c.Paths.Units, m)
	rep.Files = removed
	if err != nil {
		return rep, err
	}
	links, err := removeLinks(c.Paths.Units, names)
	for _, l := range links {
		rep.Files = append(rep.Files, units.Change{Path: l, State: units.Removed})
	}
	if err != nil {
		return rep, err
	}
	if conn != nil {
		if err := conn.ReloadContext(ctx); err != nil {
			return rep, fmt.Errorf("units: daemon-reload: %w", err)
		}
		for _, n := range names {
			conn.ResetFailedUnitContext(ctx, n) // "not loaded" once its file is gone and it was not failed
		}
	} else {
		rep.Skipped = fmt.Sprintf("units: %v: removed the files, nothing was stopped", connErr)
	}
	if err := os.Remove(ManifestPath(c)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return rep, err
	}
	return rep, nil
}

// stopDisable stops the units that are active (timers first, berth-demo.service last, so that nothing is
// started by a timer while the demo goes down) and disables those whose files are in dir.
func stopDisable(ctx context.Context, conn *sd.Conn, dir string, names []string, rep *units.Report) error {
	order := slices.Clone(names)
	rank := func(n string) int {
		switch {
		case strings.HasSuffix(n, ".timer"):
			return 0
		case n == units.Demo:
			return 2
		}
		return 1
	}
	slices.SortStableFunc(order, func(a, b string) int { return rank(a) - rank(b) })
	st, err := conn.ListUnitsByNamesContext(ctx, order)
	if err != nil {
		return fmt.Errorf("units: list units: %w", err)
	}
	active := map[string]bool{}
	for _, s := range st {
		active[s.Name] = s.ActiveState != "inactive" && s.ActiveState != "failed"
	}
	for _, n := range order {
		if !active[n] {
			continue
		}
		timeout := 2 * time.Minute
		if n == units.Demo {
			timeout = units.DemoStopTimeout + time.Minute
		}
		if err := systemd.Job(ctx, conn, "stop", n, timeout); err != nil {
			return fmt.Errorf("units: %w", err)
		}
		rep.Stopped = append(rep.Stopped, n)
	}
	var disable []string
	for _, n := range names {
		if b, err := os.ReadFile(filepath.Join(dir, n)); err == nil && bytes.Contains(b, []byte("[Install]")) {
			disable = append(disable, n)
		}
	}
	if len(disable) > 0 {
		if _, err := conn.DisableUnitFilesContext(ctx, disable, false); err != nil {
			return fmt.Errorf("units: disable %s: %w", strings.Join(disable, " "), err)
		}
		rep.Disabled = disable
	}
	return nil
}

// removeLinks removes the symlinks in dir (aliases) and in its *.wants/*.requires/*.upholds directories
// that carry one of names, as enabling leaves them; it returns them relative to dir.
func removeLinks(dir string, names []string) ([]string, error) {
	if len(names) == 0 {
		return nil, nil
	}
	var out []string
	var errs []error
	check := func(rel string) {
		p := filepath.Join(dir, rel)
		if fi, err := os.Lstat(p); err == nil && fi.Mode()&fs.ModeSymlink != 0 && slices.Contains(names, filepath.Base(rel)) {
			if err := os.Remove(p); err != nil {
				errs = append(errs, err)
				return
			}
			out = append(out, rel)
			if d := filepath.Dir(p); d != filepath.Clean(dir) {
				os.Remove(d) // only when empty
			}
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, e := range entries {
		n := e.Name()
		if e.Type()&fs.ModeSymlink != 0 {
			check(n)
		}
		if e.IsDir() && (strings.HasSuffix(n, ".wants") || strings.HasSuffix(n, ".requires") || strings.HasSuffix(n, ".upholds")) {
			sub, _ := os.ReadDir(filepath.Join(dir, n))
			for _, s := range sub {
				check(n + "/" + s.Name())
			}
		}
	}
	return out, errors.Join(errs...)
}

// envNotes warns about configuration taken from this process's environment, which the units do not see:
// they read $BERTH_CONFIG (the file given here) and EnvFile only.
func envNotes(environ []string, file string) []string {
	var vars []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		for _, p := range []string{"BERTH_PATHS_", "BERTH_BASE_", "BERTH_RELAY_", "BERTH_DEMO_"} {
			if strings.HasPrefix(k, p) {
				vars = append(vars, k)
			}
		}
		if k == "MYDOMAIN" || k == "MYEMAIL" || k == "SELF_SIGNED" {
			vars = append(vars, k)
		}
	}
	if len(vars) == 0 {
		return nil
	}
	slices.Sort(vars)
	return []string{fmt.Sprintf("note: %s shaped the units from this environment, but the jobs will not see them: put them in %s or %s",
		strings.Join(vars, " "), file, units.EnvFile)}
}

// Binary puts berth at dst atomically: compiled from source with `go run mage.go -compile` when
// source is a checkout, else a copy of the running executable (itself a binary mage compiled). An
// identical binary is left in place. It returns one line saying what it did.
func Binary(ctx context.Context, dst, source string) (string, error) {
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// A staging directory next to dst (same file system, for the rename), the binary in it under dst's own
	// name: mage writes the binary's name into its usage texts, so a build is identical only under one name.
	stage, err := os.MkdirTemp(dir, "."+filepath.Base(dst)+".new-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(stage)
	tmp := filepath.Join(stage, filepath.Base(dst))
	var how string
	if source != "" {
		goTool, err := findGo()
		if err != nil {
			return "", err
		}
		if _, err := (run.Cmd{Argv: []string{goTool, "run", "mage.go", "-compile", tmp}, Dir: source, Timeout: 15 * time.Minute}).Run(ctx); err != nil {
			return "", fmt.Errorf("units: compile berth: %w", err)
		}
		how = "compiled from " + source + " (mage -compile)"
	} else {
		exe, err := os.Executable()
		if err != nil {
			return "", err
		}
		if exe, err = filepath.EvalSymlinks(exe); err != nil {
			return "", err
		}
		if a, b := statOf(exe), statOf(dst); a != nil && b != nil && os.SameFile(a, b) {
			return dst + " unchanged (it is the running binary)", nil
		}
		if err := copyFile(exe, tmp); err != nil {
			return "", err
		}
		how = "copied from the running " + exe
	}
	if a, _ := fsx.FileSHA256(tmp); a != "" {
		if b, _ := fsx.FileSHA256(dst); a == b {
			return dst + " unchanged (" + how + ")", nil
		}
	}
	f, err := os.OpenFile(tmp, os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	err = errors.Join(f.Chmod(0o755), f.Sync(), f.Close())
	if err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", err
	}
	return dst + " updated (" + how + ")", fsx.SyncDir(dir)
}

func statOf(p string) os.FileInfo {
	fi, err := os.Stat(p)
	if err != nil {
		return nil
	}
	return fi
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o700)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	return errors.Join(err, out.Close())
}

// findGo finds the go command: on the PATH, else where Go's tarball installs it.
func findGo() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/local/go/bin/go"); err == nil {
		return "/usr/local/go/bin/go", nil
	}
	return "", errors.New("units: compiling berth needs the go command (on the PATH or /usr/local/go/bin/go)")
}

package units

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
)

// ManifestPath is where units:install records the files it installed: [Paths] State/units.manifest.
func ManifestPath(c *config.Config) string { return filepath.Join(c.Paths.State, "units.manifest") }

func lockPath(c *config.Config) string { return filepath.Join(c.Paths.State, "locks", "units.lock") }

// InstallOptions tune Install.
type InstallOptions struct {
	// Source is a berth checkout to build the binary from with `go run mage.go -compile` (mage -compile);
	// empty installs the running executable, which is that same compiled binary (`berth units:install`).
	Source string
}

// Report tells what Install or Uninstall did.
type Report struct {
	Dir      string // [Paths] Units
	Binary   string // what happened to [Paths] Binary
	Files    []Change
	Stopped  []string
	Disabled []string
	Enabled  []string
	Started  []string
	Skipped  string   // without a running systemd: what was not enabled or started, and why (one line)
	Notes    []string // one line each
}

func (r Report) String() string {
	var b strings.Builder
	if r.Binary != "" {
		fmt.Fprintf(&b, "binary: %s\n", r.Binary)
	}
	if len(r.Files) > 0 {
		count := map[string][]string{}
		for _, c := range r.Files {
			count[c.State] = append(count[c.State], c.Path)
		}
		var parts []string
		for _, s := range []string{New, Changed, Reformatted, Unchanged, Removed} {
			switch n := len(count[s]); {
			case n == 0:
			case s == Unchanged:
				parts = append(parts, fmt.Sprintf("%d unchanged", n))
			default:
				parts = append(parts, fmt.Sprintf("%s %s", s, strings.Join(count[s], ", ")))
			}
		}
		fmt.Fprintf(&b, "units in %s: %s\n", r.Dir, strings.Join(parts, "; "))
	}
	for _, l := range []struct {
		what  string
		names []string
	}{{"stopped", r.Stopped}, {"disabled", r.Disabled}, {"enabled", r.Enabled}, {"started", r.Started}} {
		if len(l.names) > 0 {
			fmt.Fprintf(&b, "%s: %s\n", l.what, strings.Join(l.names, ", "))
		}
	}
	if r.Skipped != "" {
		fmt.Fprintln(&b, r.Skipped)
	}
	for _, n := range r.Notes {
		fmt.Fprintln(&b, n)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// ErrNoSystemd says why nothing could be enabled or started.
var ErrNoSystemd = systemd.ErrNoSystemd

// systemdDirs are the directories systemd loads units from, where units:install may write.
var systemdDirs = []string{"/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"}

// Install builds or copies the binary into [Paths] Binary, writes the generated units into [Paths] Units
// (atomically, only those that changed), removes the ones berth installed before and does not generate
// any more, records them in the manifest, then through systemd's D-Bus API reloads, enables every unit
// with an [Install] section and starts berth-demo.service and the timers. Nothing is restarted: the reload
// re-arms a running timer on its new schedule (a persistent one, the upgrade, may then run at once when its
// new time has passed since its last run), and restarting berth-demo.service would interrupt the demo.
// berth-machines.target is enabled, not started: the machines come up at the next boot, or now with
// relay:configure. Without a running systemd the files are written and Report.Skipped says in one line
// what was not enabled and why.
func Install(ctx context.Context, c *config.Config, opts InstallOptions) (Report, error) {
	rep := Report{Dir: c.Paths.Units}
	files, err := Generate(c)
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
	} else if !errors.Is(connErr, ErrNoSystemd) {
		return rep, fmt.Errorf("units: connect to systemd: %w", connErr)
	}
	if rep.Binary, err = InstallBinary(ctx, c.Paths.Binary, opts.Source); err != nil {
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
	starts := []string{Demo, SwitchTimer, UpgradeTimer, RenewTimer}
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
func replaceFiles(ctx context.Context, conn *sd.Conn, c *config.Config, files []File, rep *Report) error {
	old, err := ReadManifest(ManifestPath(c))
	if err != nil {
		return err
	}
	var paths []string
	for _, f := range files {
		paths = append(paths, f.Path)
	}
	// The union first: if anything fails from here on, every file berth may have written is listed.
	if err := Manifest(append(slices.Clone(old), paths...)).Write(ManifestPath(c)); err != nil {
		return err
	}
	if err := os.MkdirAll(c.Paths.Units, 0o755); err != nil {
		return err
	}
	if rep.Files, err = WriteDir(c.Paths.Units, files); err != nil {
		return err
	}

	// Files berth installed before and does not generate now: stop, disable, remove.
	gone := stale(old, files)
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
	removed, err := Remove(c.Paths.Units, gone)
	rep.Files = append(rep.Files, removed...)
	if err != nil {
		return err
	}
	if _, err := removeLinks(c.Paths.Units, goneUnits); err != nil {
		return err
	}
	return Manifest(paths).Write(ManifestPath(c))
}

// enableStart reloads systemd, enables installable and starts starts, each waited on.
func enableStart(ctx context.Context, conn *sd.Conn, installable, starts []string, rep *Report) error {
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
		if name == Demo {
			timeout = DemoStartTimeout + time.Minute
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
func Uninstall(ctx context.Context, c *config.Config) (Report, error) {
	rep := Report{Dir: c.Paths.Units}
	l, err := lock.Acquire(ctx, lockPath(c), "units uninstall", 10*time.Minute)
	if err != nil {
		return rep, err
	}
	defer l.Release()
	m, err := ReadManifest(ManifestPath(c))
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
	} else if !errors.Is(connErr, ErrNoSystemd) {
		return rep, fmt.Errorf("units: connect to systemd: %w", connErr)
	}
	removed, err := Remove(c.Paths.Units, m)
	rep.Files = removed
	if err != nil {
		return rep, err
	}
	links, err := removeLinks(c.Paths.Units, names)
	for _, l := range links {
		rep.Files = append(rep.Files, Change{l, Removed})
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
func stopDisable(ctx context.Context, conn *sd.Conn, dir string, names []string, rep *Report) error {
	order := slices.Clone(names)
	rank := func(n string) int {
		switch {
		case strings.HasSuffix(n, ".timer"):
			return 0
		case n == Demo:
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
		if n == Demo {
			timeout = DemoStopTimeout + time.Minute
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
		strings.Join(vars, " "), file, EnvFile)}
}

// SourceDir returns the working directory when it is a berth checkout (go.mod of module berth, mage.go
// and magefiles/), else "".
func SourceDir() string {
	wd, err := os.Getwd()
	if err != nil {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(wd, "go.mod"))
	if err != nil || !bytes.HasPrefix(bytes.TrimSpace(b), []byte("module berth\n")) {
		return ""
	}
	for _, p := range []string{"mage.go", "magefiles"} {
		if _, err := os.Stat(filepath.Join(wd, p)); err != nil {
			return ""
		}
	}
	return wd
}

// InstallBinary puts berth at dst atomically: compiled from source with `go run mage.go -compile` when
// source is a checkout, else a copy of the running executable (itself a binary mage compiled). An
// identical binary is left in place. It returns one line saying what it did.
func InstallBinary(ctx context.Context, dst, source string) (string, error) {
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

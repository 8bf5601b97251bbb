// Package upgraded runs the operator's upgrade.d hooks of the demo's nightly upgrade: one-shot hooks and
// always hooks in name order, each with its log, then archives or quarantines the one-shots by result.
// (The hooks berth ships are in the package berth/upgrade.d.)
package upgraded

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/otiai10/copy"
)

// Hooks runs the operator's upgrade.d scripts.
type Hooks struct {
	Dir     string
	LogDir  string
	Timeout time.Duration
	Env     map[string]string
}

// HookResult is one hook run.
type HookResult struct {
	Name     string // "10-x" or "always/50-y"
	Always   bool
	Err      error // nil on exit 0; one line naming the hook, the exit status or timeout, and the log path
	Log      string
	Duration time.Duration
}

// alwaysDirs hold the hooks run on every upgrade, in this order; Constant_upgrade is the original tool's name.
var alwaysDirs = []string{"always", "Constant_upgrade"}

// ignoredHook reports the names in upgrade.d that are never hooks: hidden, disabled, docs, editor leftovers,
// and the Go file that compiles the shipped hooks into berth.
func ignoredHook(name string) bool {
	return strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || strings.HasPrefix(name, "README") || strings.HasSuffix(name, ".go") ||
		name == "exemple" || strings.HasSuffix(name, "~") || strings.HasSuffix(name, ".swp")
}

// hookFiles lists the non-ignored, non-directory entries of dir in name order; a missing dir has none.
func hookFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if ignoredHook(e.Name()) {
			continue
		}
		if st, err := os.Stat(filepath.Join(dir, e.Name())); err == nil && st.IsDir() {
			continue // subdirectories, including symlinks to one
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names, nil
}

// Pending returns the one-shot hooks directly in Dir, in the order they run; Check makes sure that they are
// regular files. A name ending in .fail is the original tool's mark of a failed hook: quarantined, not pending.
func (h Hooks) Pending() ([]string, error) {
	names, err := hookFiles(h.Dir)
	return slices.DeleteFunc(names, func(n string) bool { return strings.HasSuffix(n, ".fail") }), err
}

// AlwaysHooks returns the hooks run on every upgrade as names relative to Dir ("always/x", then
// "Constant_upgrade/y").
func (h Hooks) AlwaysHooks() ([]string, error) {
	var all []string
	for _, sub := range alwaysDirs {
		names, err := hookFiles(filepath.Join(h.Dir, sub))
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			all = append(all, sub+"/"+n)
		}
	}
	return all, nil
}

// all returns the pending hooks then the always hooks, and how many of them are pending.
func (h Hooks) all() ([]string, int, error) {
	pending, err := h.Pending()
	if err != nil {
		return nil, 0, err
	}
	always, err := h.AlwaysHooks()
	return append(pending, always...), len(pending), err
}

// Check verifies, before anything changes, that every pending and always hook is a regular file; the error
// names the first one that is not. A missing Dir has no hooks. A hook without the exec bit is no error: it
// runs with bash, as the original tool ran every hook.
func (h Hooks) Check() error {
	names, _, err := h.all()
	if err != nil {
		return err
	}
	for _, name := range names {
		shown := filepath.Base(filepath.Clean(h.Dir)) + "/" + name
		st, err := os.Stat(filepath.Join(h.Dir, name))
		switch {
		case err != nil:
			return fmt.Errorf("hook %s: %w", shown, err)
		case !st.Mode().IsRegular():
			return fmt.Errorf("hook %s is not a regular file (%v): move it out", shown, st.Mode().Type())
		}
	}
	return nil
}

// Run runs the pending one-shot hooks not in skip, then the always hooks (skip may name them too), each with the container name as its
// only argument and its output in LogDir/<name>.log. It goes on after a failure so that every hook gets its run
// and its log; a cancelled ctx kills the running hook and stops there. Nothing is moved: see Archive and Quarantine.
func (h Hooks) Run(ctx context.Context, container string, skip map[string]bool) []HookResult {
	names, oneShots, err := h.all()
	if err != nil {
		return []HookResult{{Name: h.Dir, Err: fmt.Errorf("hooks in %s: %w", h.Dir, err)}}
	}
	var results []HookResult
	for i, name := range names {
		if skip[name] {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		results = append(results, h.runOne(ctx, name, i >= oneShots, container))
	}
	return results
}

// runOne runs one hook in its own process group, killed whole when the timeout or ctx ends.
func (h Hooks) runOne(ctx context.Context, name string, always bool, container string) HookResult {
	res := HookResult{Name: name, Always: always, Log: filepath.Join(h.LogDir, name+".log")}
	start := time.Now()
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Minute
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	path, err := filepath.Abs(filepath.Join(h.Dir, name))
	if err == nil {
		err = os.MkdirAll(filepath.Dir(res.Log), 0o750)
	}
	var log *os.File
	if err == nil {
		log, err = os.OpenFile(res.Log, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	}
	if err == nil {
		defer log.Close()
		fmt.Fprintf(log, "=== hook %s for container %s, started %s\n", name, container, start.Format(time.RFC3339))
		argv := []string{path, container}
		if st, serr := os.Stat(path); serr == nil && st.Mode()&0o111 == 0 {
			argv = []string{"bash", path, container}
			fmt.Fprintf(log, "=== hook %s is not executable (mode %04o): run with bash, as the original upgrade.d ran it\n", name, st.Mode().Perm())
			logger().Warn("hook without the exec bit runs with bash", "hook", name)
		}
		cmd := exec.CommandContext(tctx, argv[0], argv[1:]...)
		cmd.Dir = h.Dir
		cmd.Stdin = nil // the null device
		cmd.Stdout, cmd.Stderr = log, log
		cmd.Env = os.Environ()
		for k, v := range h.Env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = 5 * time.Second
		err = cmd.Run()
	}
	res.Duration = time.Since(start)
	status := "exit 0"
	var exit *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		status = "interrupted: " + ctx.Err().Error()
	case errors.Is(tctx.Err(), context.DeadlineExceeded):
		status = fmt.Sprintf("timed out after %v, process group killed", timeout)
	case errors.As(err, &exit):
		status = "failed: " + exit.ProcessState.String()
	default:
		status = "failed: " + err.Error()
	}
	if err != nil {
		res.Err = fmt.Errorf("hook %s %s (log %s)", name, status, res.Log)
	}
	if log != nil {
		fmt.Fprintf(log, "=== hook %s %s after %v\n", name, status, res.Duration.Round(time.Millisecond))
	}
	return res
}

// Archive moves the one-shot hook Dir/<name>, done, to Dir/archive/<name>, suffixed with the date if taken.
func (h Hooks) Archive(name string) error { return h.move(name, "archive") }

// Quarantine moves the one-shot hook Dir/<name>, failed, to Dir/quarantine/<name>, suffixed with the date if
// taken; it does not run again until an operator moves it back.
func (h Hooks) Quarantine(name string) error { return h.move(name, "quarantine") }

// Quarantined returns the names of the hooks in Dir/quarantine.
func (h Hooks) Quarantined() ([]string, error) { return hookFiles(filepath.Join(h.Dir, "quarantine")) }

// Archived returns the names of the hooks in Dir/archive.
func (h Hooks) Archived() ([]string, error) { return hookFiles(filepath.Join(h.Dir, "archive")) }

// Import brings an original tool's upgrade.d at src into Dir: its pending scripts (directly in src) stay
// pending, a *.fail script goes to quarantine (without the suffix), old_scripts/ to archive and
// Constant_upgrade/ to always. Nothing already in Dir is overwritten (it is reported instead), and src is
// left as it is. It returns one line per file.
func (h Hooks) Import(src string) ([]string, error) {
	var report []string
	place := func(from, sub, name string) error {
		dst := filepath.Join(h.Dir, sub, name)
		if hookExists(dst) {
			report = append(report, fmt.Sprintf("%s: kept %s, which exists", from, dst))
			return nil
		}
		if err := copy.Copy(from, dst, copy.Options{OnSymlink: func(string) copy.SymlinkAction { return copy.Skip }, Sync: true}); err != nil {
			return err
		}
		report = append(report, fmt.Sprintf("%s → %s", from, dst))
		return nil
	}
	for _, m := range []struct{ from, to string }{{".", "."}, {"old_scripts", "archive"}, {"Constant_upgrade", "always"}} {
		names, err := hookFiles(filepath.Join(src, m.from))
		if err != nil {
			return report, err
		}
		for _, n := range names {
			to, name := m.to, n
			if m.from == "." && strings.HasSuffix(n, ".fail") {
				to, name = "quarantine", strings.TrimSuffix(n, ".fail")
			}
			if err := place(filepath.Join(src, m.from, n), to, name); err != nil {
				return report, fmt.Errorf("import %s: %w", filepath.Join(src, m.from, n), err)
			}
		}
	}
	return report, nil
}

// hookExists reports whether anything is at path.
func hookExists(path string) bool { _, err := os.Lstat(path); return err == nil }

// move renames a one-shot hook into the subdirectory sub; always hooks are never moved.
func (h Hooks) move(name, sub string) error {
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return fmt.Errorf("hook %q: only one-shot hooks directly in %s are moved", name, h.Dir)
	}
	if err := os.MkdirAll(filepath.Join(h.Dir, sub), 0o755); err != nil {
		return err
	}
	dst := filepath.Join(h.Dir, sub, name)
	if hookExists(dst) {
		dst += "." + time.Now().Format("20060102-1504")
		for i, stamped := 2, dst; hookExists(dst); i++ {
			dst = fmt.Sprintf("%s-%d", stamped, i)
		}
	}
	if err := os.Rename(filepath.Join(h.Dir, name), dst); err != nil {
		return fmt.Errorf("hook %s: %w", name, err)
	}
	return nil
}

// exists reports whether path names something, following symlinks.
func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// Install lays out Dir and adds the hooks of shipped (berth/upgrade.d's FS) that are missing there (an
// operator's file of the same name, or one they archived or quarantined, is left alone).
//
// The tree is copied with otiai10/copy, not through os.Root: Dir is the host's (root's) own directory, which
// no guest can reach, so no guest can plant a symlink on the way. The missing hooks are copied into a staging
// directory inside Dir and then renamed into place one by one, so that a crash never leaves a half-written
// hook that the next Install would take for the operator's.
func (h Hooks) Install(shipped fs.FS) error {
	for _, sub := range []string{"always", "archive", "quarantine"} {
		if err := os.MkdirAll(filepath.Join(h.Dir, sub), 0o755); err != nil {
			return err
		}
	}
	stage, err := os.MkdirTemp(h.Dir, ".shipped-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	installed := func(rel string) bool {
		base := filepath.Base(rel)
		return exists(filepath.Join(h.Dir, rel)) || exists(filepath.Join(h.Dir, "archive", base)) ||
			exists(filepath.Join(h.Dir, "quarantine", base))
	}
	err = copy.Copy(".", stage, copy.Options{
		FS: shipped,
		Skip: func(info os.FileInfo, src, _ string) (bool, error) {
			return !info.IsDir() && installed(src), nil
		},
		OnSymlink:     func(string) copy.SymlinkAction { return copy.Skip },
		AddPermission: 0o755, // embedded files are 0444: hooks are executable
		Sync:          true,
	})
	if err != nil {
		return fmt.Errorf("hooks in %s: %w", h.Dir, err)
	}
	return filepath.WalkDir(stage, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, err := filepath.Rel(stage, p)
		if err != nil || installed(rel) {
			return err
		}
		dst := filepath.Join(h.Dir, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.Rename(p, dst)
	})
}

package units

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/otiai10/copy"

	"berth/internal/fsx"
	"berth/internal/run"
)

// Verify checks the files with `systemd-analyze verify` and every OnCalendar= with `systemd-analyze
// calendar`, and returns one line per unit and per calendar expression; the error lists every finding
// (any output of verify counts: it also warns about unknown settings without failing).
//
// verify checks that ExecStart='s binary exists and loads the units a unit refers to, so it runs against a
// temporary root (--root): a copy of this host's vendor units (/usr/lib/systemd/system, where
// systemd-nspawn@.service comes from the systemd-container package), the files in its etc/systemd/system,
// and empty executables at the paths the files' Exec*= lines run (the binary at [Paths] Binary, which
// need not exist yet) and at /usr/bin/systemd-nspawn (run by the instances the drop-ins extend). It needs
// neither root nor a running systemd.
func Verify(ctx context.Context, files []File) ([]string, error) {
	root, err := verifyRoot(ctx, files)
	defer os.RemoveAll(root)
	if err != nil {
		return nil, err
	}

	var names, findings, out []string
	for _, f := range files {
		if !slices.Contains(names, f.Unit()) {
			names = append(names, f.Unit())
		}
	}
	msgs, err := verifyOutput(ctx, root, names)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		var own []string
		for _, m := range msgs {
			if strings.Contains(m, n) {
				own = append(own, m)
			}
		}
		if len(own) == 0 {
			out = append(out, n+": ok")
		} else {
			out = append(out, n+": "+strings.Join(own, " | "))
			findings = append(findings, own...)
		}
	}
	for _, m := range msgs {
		if !slices.ContainsFunc(names, func(n string) bool { return strings.Contains(m, n) }) {
			findings = append(findings, m)
		}
	}

	for _, f := range files {
		for _, expr := range f.Values("Timer", "OnCalendar") {
			next, err := CalendarNext(ctx, expr)
			if err != nil {
				findings = append(findings, fmt.Sprintf("%s: OnCalendar=%s: %v", f.Path, expr, err))
				out = append(out, fmt.Sprintf("%s: OnCalendar=%s: %v", f.Path, expr, err))
				continue
			}
			out = append(out, fmt.Sprintf("%s: OnCalendar=%s: next %s", f.Path, expr, next))
		}
	}
	if len(findings) > 0 {
		return out, fmt.Errorf("units: verify: %s", strings.Join(slices.Compact(findings), "; "))
	}
	return out, nil
}

// verifyRoot makes a root directory for systemd-analyze --root: systemd's own units, files in
// /etc/systemd/system, and a stub for each program the units run. The caller removes it, also on error.
func verifyRoot(ctx context.Context, files []File) (string, error) {
	root, err := os.MkdirTemp("", "berth-units-verify-")
	if err != nil {
		return "", err
	}
	vendor, err := filepath.EvalSymlinks("/usr/lib/systemd/system")
	if err != nil {
		return root, fmt.Errorf("units: verify needs systemd's units in /usr/lib/systemd/system: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(root, "usr/lib/systemd"), 0o755); err != nil {
		return root, err
	}
	// A host tree into a temporary directory of the host's, which nothing else writes: otiai10/copy, symlinks
	// kept as they are (aliases, units masked to /dev/null).
	if err := copy.Copy(vendor, filepath.Join(root, "usr/lib/systemd/system"), copy.Options{OnSymlink: func(string) copy.SymlinkAction { return copy.Shallow }}); err != nil {
		return root, fmt.Errorf("units: verify: copying %s: %w", vendor, err)
	}
	for _, l := range [][2]string{{"lib", "usr/lib"}, {"bin", "usr/bin"}, {"sbin", "usr/sbin"}} {
		if err := os.Symlink(l[1], filepath.Join(root, l[0])); err != nil {
			return root, err
		}
	}
	if _, err := WriteDir(filepath.Join(root, "etc/systemd/system"), files); err != nil {
		return root, err
	}
	for _, exe := range append(executables(files), "/usr/bin/systemd-nspawn") {
		p := filepath.Join(root, exe)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return root, err
		}
		if err := fsx.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
			return root, err
		}
	}
	return root, nil
}

// verifyOutput runs systemd-analyze verify and returns its output lines (stdout and stderr), trimmed of
// the temporary root's path.
func verifyOutput(ctx context.Context, root string, names []string) ([]string, error) {
	var buf run.SyncBuffer
	_, err := (run.Cmd{Argv: append([]string{"systemd-analyze", "verify", "--root=" + root, "--man=no"}, names...),
		Timeout: 2 * time.Minute, Stdout: &buf, Stderr: &buf, Quiet: true}).Run(ctx)
	var re *run.Error
	if err != nil && !errors.As(err, &re) {
		return nil, err
	}
	var out []string
	for _, l := range strings.Split(buf.String(), "\n") {
		if l = strings.TrimSpace(strings.ReplaceAll(l, root, "")); l != "" {
			out = append(out, l)
		}
	}
	if err != nil && len(out) == 0 {
		out = append(out, err.Error())
	}
	return out, nil
}

// CalendarNext checks expr with `systemd-analyze calendar` and returns its next elapse; the error carries
// systemd's message, or says when expr is not in systemd's normalized form (berth writes normalized ones).
func CalendarNext(ctx context.Context, expr string) (string, error) {
	out, err := (run.Cmd{Argv: []string{"systemd-analyze", "calendar", expr}, Timeout: 30 * time.Second, Quiet: true}).Run(ctx)
	if err != nil {
		return "", err
	}
	var normalized, next string
	for _, l := range strings.Split(string(out), "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(l), ": ")
		switch k {
		case "Normalized form":
			normalized = v
		case "Next elapse":
			next = v
		}
	}
	if normalized == "" || next == "" {
		return "", fmt.Errorf("systemd-analyze calendar %q: unexpected output %q", expr, out)
	}
	if normalized != expr && !slices.Contains([]string{"daily", "weekly", "hourly", "monthly"}, expr) {
		return next, fmt.Errorf("not in normalized form (%s)", normalized)
	}
	return next, nil
}

// executables returns the absolute programs of the files' Exec*= lines, unquoted and unescaped.
func executables(files []File) []string {
	var out []string
	for _, f := range files {
		for _, o := range f.Options {
			if o.Section != "Service" || !strings.HasPrefix(o.Name, "Exec") {
				continue
			}
			v := strings.TrimLeft(o.Value, "-@:+!")
			var exe string
			if strings.HasPrefix(v, `"`) {
				var b strings.Builder
				for i := 1; i < len(v) && v[i] != '"'; i++ {
					if v[i] == '\\' && i+1 < len(v) {
						i++
					}
					b.WriteByte(v[i])
				}
				exe = b.String()
			} else {
				exe, _, _ = strings.Cut(v, " ")
			}
			exe = strings.NewReplacer("%%", "%", "$$", "$").Replace(exe)
			if strings.HasPrefix(exe, "/") && !slices.Contains(out, exe) {
				out = append(out, exe)
			}
		}
	}
	return out
}

package units

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/coreos/go-systemd/v22/unit"

	"berth/internal/config"
	"berth/internal/fsx"
)

// States of a file after WriteDir.
const (
	New         = "new"
	Changed     = "changed"
	Reformatted = "reformatted" // same settings, other bytes (comments, layout)
	Unchanged   = "unchanged"
	Removed     = "removed"
)

// Change is what happened to one file.
type Change struct{ Path, State string }

// Diff compares f with the file at path: Unchanged (same bytes), Reformatted (same settings once both are
// deserialized), Changed or New.
func Diff(path string, f File) (string, error) {
	old, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return New, nil
	}
	if err != nil {
		return "", err
	}
	if bytes.Equal(old, f.Bytes()) {
		return Unchanged, nil
	}
	if opts, err := unit.DeserializeOptions(bytes.NewReader(old)); err == nil && unit.AllMatch(opts, f.Options) {
		return Reformatted, nil
	}
	return Changed, nil
}

// WriteDir writes files into dir, each atomically (0644) and only when its bytes differ, creating drop-in
// directories as needed.
func WriteDir(dir string, files []File) ([]Change, error) {
	var out []Change
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		state, err := Diff(p, f)
		if err != nil {
			return out, err
		}
		if state != Unchanged {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return out, err
			}
			if err := fsx.WriteFile(p, f.Bytes(), 0o644); err != nil {
				return out, fmt.Errorf("units: write %s: %w", p, err)
			}
		}
		out = append(out, Change{f.Path, state})
	}
	return out, nil
}

// Owned says whether a path relative to a units directory has a name only berth gives its files: a
// berth-* unit, or berth's ordering drop-in in a drop-in directory.
func Owned(rel string) bool {
	dir, name, dropIn := strings.Cut(filepath.ToSlash(rel), "/")
	if dropIn {
		return strings.HasSuffix(dir, ".d") && !strings.Contains(name, "/") && name == OrderDropIn
	}
	if !strings.HasPrefix(dir, "berth-") {
		return false
	}
	for _, ext := range []string{".service", ".timer", ".target"} {
		if strings.HasSuffix(dir, ext) {
			return true
		}
	}
	return false
}

// OwnedIn lists the files in dir (top level and one level of drop-in directories) that Owned claims.
func OwnedIn(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.Type().IsRegular() && Owned(e.Name()) {
			out = append(out, e.Name())
		}
		if e.IsDir() && strings.HasSuffix(e.Name(), ".d") {
			rel := e.Name() + "/" + OrderDropIn
			if fi, err := os.Lstat(filepath.Join(dir, rel)); err == nil && fi.Mode().IsRegular() {
				out = append(out, rel)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// Remove removes the files rel (relative to dir) and then the drop-in directories they leave empty.
func Remove(dir string, rels []string) ([]Change, error) {
	var out []Change
	var errs []error
	for _, rel := range rels {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		out = append(out, Change{rel, Removed})
		if d := filepath.Dir(p); d != filepath.Clean(dir) && strings.HasSuffix(d, ".d") {
			os.Remove(d) // only when empty: the operator's own drop-ins stay
		}
	}
	if len(out) > 0 {
		if err := fsx.SyncDir(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return out, errors.Join(errs...)
}

// GenerateDir writes the files into dir (made if missing) and removes the files berth owns there (Owned) that
// are not generated any more, such as the drop-in of a machine dropped from [Relay] Machines.
func GenerateDir(dir string, files []File) ([]Change, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	changes, err := WriteDir(dir, files)
	if err != nil {
		return changes, err
	}
	have, err := OwnedIn(dir)
	if err != nil {
		return changes, err
	}
	removed, err := Remove(dir, NotGenerated(have, files))
	return append(changes, removed...), err
}

// NotGenerated lists the paths of have that are not among files.
func NotGenerated(have []string, files []File) []string {
	var out []string
	for _, p := range have {
		if !slices.ContainsFunc(files, func(f File) bool { return f.Path == p }) {
			out = append(out, p)
		}
	}
	return out
}

// Stale compares the files with dir and describes, one line each, every file that differs, is missing, or
// is owned by berth but not generated; empty when dir is up to date.
func Stale(dir string, files []File) ([]string, error) {
	var out []string
	for _, f := range files {
		state, err := Diff(filepath.Join(dir, filepath.FromSlash(f.Path)), f)
		if err != nil {
			return nil, err
		}
		switch state {
		case New:
			out = append(out, f.Path+" is missing")
		case Changed:
			out = append(out, f.Path+" has other settings")
		case Reformatted:
			out = append(out, f.Path+" has the same settings but other text")
		}
	}
	have, err := OwnedIn(dir)
	if err != nil {
		return nil, err
	}
	for _, p := range NotGenerated(have, files) {
		out = append(out, p+" is not generated any more")
	}
	return out, nil
}

// Manifest is the list of files berth installed into [Paths] Units, one relative path a line.
type Manifest []string

// ReadManifest reads the manifest at path; a missing file is an empty manifest.
func ReadManifest(path string) (Manifest, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m Manifest
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if !Owned(l) || strings.Contains(l, "..") {
			return nil, fmt.Errorf("units: %s: %q is not a file berth installs", path, l)
		}
		m = append(m, l)
	}
	return m, nil
}

// Write stores the manifest atomically (sorted, without duplicates).
func (m Manifest) Write(path string) error {
	m = slices.Compact(slices.Sorted(slices.Values(m)))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("# Files berth installed into its units directory (units:install); units:uninstall removes exactly these.\n")
	for _, p := range m {
		b.WriteString(p + "\n")
	}
	return fsx.WriteFile(path, []byte(b.String()), 0o644)
}

// GenerateTarget is what units:generate writes: with dir empty, the default configuration's files into the
// checkout's units/ (the working directory must be a checkout); else the effective configuration's
// ($BERTH_CONFIG and the environment) into dir.
func GenerateTarget(dir string) (string, []File, error) {
	var c *config.Config
	var err error
	if dir == "" {
		src := SourceDir()
		if src == "" {
			return "", nil, errors.New("units: units/ belongs to a berth checkout: run units:generate from one, or give DIR=<dir>")
		}
		dir = filepath.Join(src, "units")
		c, err = DefaultConfig()
	} else {
		c, err = config.Load()
	}
	if err != nil {
		return "", nil, err
	}
	files, err := Generate(c)
	return dir, files, err
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

// Report tells what units:generate, install.Units or install.Uninstall did.
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

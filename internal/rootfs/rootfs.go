// Package rootfs makes Debian root file systems with debootstrap and keeps each result in a cache keyed by
// a hash of every input, so that unchanged inputs never run debootstrap twice.
package rootfs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"berth/internal/lock"
	"berth/internal/run"
)

// Spec is everything that decides what debootstrap produces.
type Spec struct {
	Suite    string   // a pinned codename such as bookworm
	Mirror   string   // http(s) URL or file:// path of a Debian archive
	Arch     string   // Debian architecture: amd64 or arm64
	Variant  string   // debootstrap variant, "minbase" when empty
	Packages []string // extra packages (--include)
}

func (s Spec) variant() string {
	if s.Variant == "" {
		return "minbase"
	}
	return s.Variant
}

// Key is a hex hash of every input of the spec; equal keys mean interchangeable results.
func (s Spec) Key() string {
	pkgs := slices.Clone(s.Packages)
	slices.Sort(pkgs)
	pkgs = slices.Compact(pkgs)
	h := sha256.New()
	fmt.Fprintf(h, "suite=%s\nmirror=%s\narch=%s\nvariant=%s\npackages=%s\n",
		s.Suite, s.Mirror, s.Arch, s.variant(), strings.Join(pkgs, ","))
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// HostArch maps the running kernel's machine name to a Debian architecture berth supports.
func HostArch() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", err
	}
	switch m := unix.ByteSliceToString(u.Machine[:]); m {
	case "x86_64", "amd64":
		return "amd64", nil
	case "aarch64", "arm64":
		return "arm64", nil
	default:
		return "", fmt.Errorf("unsupported host architecture %q: berth builds for amd64 and arm64 only", m)
	}
}

// Bootstrap returns a tarball of the rootfs that spec describes, from cacheDir when it holds one with the
// same key (hit is then true), else by running debootstrap. force rebuilds even on a hit. Output of
// debootstrap goes to progress (may be nil). Concurrent callers with the same key wait for one another.
func Bootstrap(ctx context.Context, spec Spec, cacheDir string, force bool, progress io.Writer) (tarball string, hit bool, err error) {
	dir := filepath.Join(cacheDir, "debootstrap")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", false, err
	}
	key := spec.Key()
	tarball = filepath.Join(dir, fmt.Sprintf("%s-%s-%s.tar", spec.Suite, spec.Arch, key))
	l, err := lock.Acquire(ctx, tarball+".lock", "debootstrap "+spec.Suite, 30*time.Minute)
	if err != nil {
		return "", false, err
	}
	defer l.Release()
	if _, err := os.Stat(tarball); err == nil && !force {
		return tarball, true, nil
	}
	work := tarball + ".work"
	if err := os.RemoveAll(work); err != nil {
		return "", false, err
	}
	defer os.RemoveAll(work)
	target := filepath.Join(work, "root")
	if err := os.MkdirAll(target, 0o755); err != nil {
		return "", false, err
	}
	argv := []string{"debootstrap", "--variant=" + spec.variant(), "--arch=" + spec.Arch}
	if len(spec.Packages) > 0 {
		argv = append(argv, "--include="+strings.Join(spec.Packages, ","))
	}
	argv = append(argv, spec.Suite, target, spec.Mirror)
	if _, err := (run.Cmd{Argv: argv, Stdout: progress, Stderr: progress, Timeout: 30 * time.Minute}).Run(ctx); err != nil {
		return "", false, fmt.Errorf("debootstrap %s: %w", spec.Suite, err)
	}
	// debootstrap leaves the archive's .debs behind; they are not part of a rootfs.
	if err := removeContents(filepath.Join(target, "var/cache/apt/archives"), ".deb"); err != nil {
		return "", false, err
	}
	tmp := filepath.Join(work, "rootfs.tar")
	if _, err := run.Command(ctx, "tar", "--create", "--file", tmp, "--numeric-owner", "--xattrs", "--xattrs-include=*",
		"--acls", "--sparse", "-C", target, "."); err != nil {
		return "", false, err
	}
	if err := os.Rename(tmp, tarball); err != nil {
		return "", false, err
	}
	return tarball, false, nil
}

// Unpack extracts a tarball made by Bootstrap into dir (which must exist), keeping owners, modes, xattrs,
// ACLs, file capabilities and device nodes.
func Unpack(ctx context.Context, tarball, dir string) error {
	_, err := run.Command(ctx, "tar", "--extract", "--file", tarball, "--numeric-owner", "--same-permissions",
		"--xattrs", "--xattrs-include=*", "--acls", "-C", dir)
	return err
}

func removeContents(dir, suffix string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), suffix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

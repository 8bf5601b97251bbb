// Package rootfs makes Debian root file systems with debootstrap and keeps each result in a cache keyed by
// a hash of every input, so that unchanged inputs never run debootstrap twice.
package rootfs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
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
	// Tool is the bootstrapper: "debootstrap" (when empty) or "mmdebstrap". Both make the same package set;
	// each keeps its own cache file, so a comparison of the two never reads the other's.
	Tool string
	// Sources are extra apt lines ("deb URL SUITE main") mmdebstrap installs from as well (the updates and
	// security suites, say), so that the tree holds their versions without a later upgrade pass. They are
	// part of the key; debootstrap cannot use them (Bootstrap refuses).
	Sources []string
}

// The bootstrappers.
const (
	Debootstrap = "debootstrap"
	Mmdebstrap  = "mmdebstrap"
)

// ResolveTool turns [Base] Bootstrapper into a tool: auto is mmdebstrap when it is installed, else
// debootstrap.
func ResolveTool(want string) string {
	if want == "" || want == "auto" {
		if _, err := exec.LookPath(Mmdebstrap); err == nil {
			return Mmdebstrap
		}
		return Debootstrap
	}
	return want
}

func (s Spec) tool() string {
	if s.Tool == "" {
		return Debootstrap
	}
	return s.Tool
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
	for _, src := range s.Sources {
		fmt.Fprintf(h, "source=%s\n", src)
	}
	if s.tool() == Mmdebstrap {
		fmt.Fprintf(h, "mmdebstrap=%s\n", strings.Join(mmdebstrapFlags, " "))
	}
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
// same key (hit is then true), else by running the spec's tool. force rebuilds even on a hit. The tool's
// output goes to progress (may be nil). Concurrent callers with the same key wait for one another.
func Bootstrap(ctx context.Context, spec Spec, cacheDir string, force bool, progress io.Writer) (tarball string, hit bool, err error) {
	tarball, l, err := cacheLock(ctx, spec, cacheDir)
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
	tmp := filepath.Join(work, "rootfs.tar")
	target := filepath.Join(work, "root")
	if err := bootstrap(ctx, spec, target, progress); err != nil {
		return "", false, err
	}
	if err := pack(ctx, target, tmp); err != nil {
		return "", false, err
	}
	if err := os.Rename(tmp, tarball); err != nil {
		return "", false, err
	}
	return tarball, false, nil
}

// BootstrapInto fills dir (which must not exist; its parent must) with the rootfs that spec describes: on
// a cache hit by unpacking the cached tarball, on a miss by bootstrapping straight into dir and packing the
// result into the cache afterwards (one pass fewer than bootstrapping into a tarball and unpacking it). On
// error dir may hold a partial tree: the caller's staging directory, which it removes.
func BootstrapInto(ctx context.Context, spec Spec, cacheDir string, force bool, progress io.Writer, dir string) (hit bool, err error) {
	tarball, l, err := cacheLock(ctx, spec, cacheDir)
	if err != nil {
		return false, err
	}
	defer l.Release()
	if _, err := os.Stat(tarball); err == nil && !force {
		if err := os.Mkdir(dir, 0o755); err != nil {
			return true, err
		}
		return true, Unpack(ctx, tarball, dir)
	}
	if err := bootstrap(ctx, spec, dir, progress); err != nil {
		return false, err
	}
	tmp := tarball + ".tmp"
	defer os.Remove(tmp)
	if err := pack(ctx, dir, tmp); err != nil {
		return false, err
	}
	return false, os.Rename(tmp, tarball)
}

// cacheLock names spec's cache tarball and takes its lock.
func cacheLock(ctx context.Context, spec Spec, cacheDir string) (string, *lock.Lock, error) {
	dir := filepath.Join(cacheDir, "debootstrap")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, err
	}
	name := fmt.Sprintf("%s-%s-%s.tar", spec.Suite, spec.Arch, spec.Key())
	if spec.tool() == Mmdebstrap {
		name = fmt.Sprintf("%s-%s-%s-mmdebstrap.tar", spec.Suite, spec.Arch, spec.Key())
	}
	tarball := filepath.Join(dir, name)
	l, err := lock.Acquire(ctx, tarball+".lock", spec.tool()+" "+spec.Suite, 30*time.Minute)
	return tarball, l, err
}

// mmdebstrapFlags make mmdebstrap's tree debootstrap's: root mode; merged /usr made the way debootstrap
// makes it (directory symlinks and usr-is-merged, not the usrmerge package and its perl); the package lists
// kept, so that the recipe's apt-get update only revalidates them (the .debs go, mmdebstrap's own cleanup).
// They are part of the cache key of an mmdebstrap tarball.
var mmdebstrapFlags = []string{"--mode=root", "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr", "--skip=cleanup/apt/lists"}

// bootstrap runs the spec's tool into the directory target (absent, or empty).
func bootstrap(ctx context.Context, spec Spec, target string, progress io.Writer) error {
	if err := os.MkdirAll(target, 0o755); err != nil { // both take an empty directory
		return err
	}
	var argv []string
	switch spec.tool() {
	case Debootstrap:
		if len(spec.Sources) > 0 {
			return errors.New("debootstrap installs from one suite only: extra sources need mmdebstrap")
		}
		argv = []string{"debootstrap", "--variant=" + spec.variant(), "--arch=" + spec.Arch}
		if len(spec.Packages) > 0 {
			argv = append(argv, "--include="+strings.Join(spec.Packages, ","))
		}
		argv = append(argv, spec.Suite, target, spec.Mirror)
	case Mmdebstrap:
		argv = append([]string{"mmdebstrap", "--variant=" + spec.variant(), "--arch=" + spec.Arch, "--format=directory"}, mmdebstrapFlags...)
		if len(spec.Packages) > 0 {
			argv = append(argv, "--include="+strings.Join(spec.Packages, ","))
		}
		argv = append(argv, spec.Suite, target, "deb "+spec.Mirror+" "+spec.Suite+" main")
		argv = append(argv, spec.Sources...)
	default:
		return fmt.Errorf("unknown bootstrapper %q: expected debootstrap or mmdebstrap", spec.Tool)
	}
	if _, err := (run.Cmd{Argv: argv, Stdout: progress, Stderr: progress, Timeout: 30 * time.Minute}).Run(ctx); err != nil {
		return fmt.Errorf("%s %s: %w", spec.tool(), spec.Suite, err)
	}
	if spec.tool() == Debootstrap {
		// debootstrap leaves the archive's .debs behind; they are not part of a rootfs.
		return removeContents(filepath.Join(target, "var/cache/apt/archives"), ".deb")
	}
	return nil
}

// pack writes the tree at dir into the tarball tmp, keeping what Unpack restores.
func pack(ctx context.Context, dir, tmp string) error {
	_, err := run.Command(ctx, "tar", "--create", "--file", tmp, "--numeric-owner", "--xattrs", "--xattrs-include=*",
		"--acls", "--sparse", "-C", dir, ".")
	return err
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

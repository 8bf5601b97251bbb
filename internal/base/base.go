// Package base builds berth's base rootfs, the one tree every image starts from: a cached debootstrap of a
// pinned suite, fully upgraded, with a checksum-verified Go toolchain and a random root password.
// A build happens in a staging directory and replaces the previous base in one atomic step, so a failed
// build leaves the previous base untouched; unchanged inputs reuse the existing base.
package base

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"berth/internal/clone"
	"berth/internal/config"
	"berth/internal/fsx"
	"berth/internal/lock"
	"berth/internal/nspawn"
	"berth/internal/progress"
	"berth/internal/rootfs"
	"berth/internal/run"
	recipe "berth/rootfs"
)

// Dir is where the base rootfs lives: hidden inside [Paths] Machines, on the same file system as the
// machines cloned from it.
func Dir(c *config.Config) string { return filepath.Join(c.Paths.Machines, ".berth-base") }

// PasswordFile holds the base's root password (mode 0600).
func PasswordFile(c *config.Config) string { return filepath.Join(c.Paths.State, "passwords", "base") }

// LockFile serialises everything that writes the base.
func LockFile(c *config.Config) string { return filepath.Join(c.Paths.State, "locks", "base.lock") }

// stampPath is written inside the base: it records what the base was built from.
const stampPath = "etc/berth/base.json"

// Stamp describes a built base.
type Stamp struct {
	Key       string `json:"key"`
	Suite     string `json:"suite"`
	Arch      string `json:"arch"`
	GoVersion string `json:"go_version"`
}

// ReadStamp reads the stamp of the base at dir.
func ReadStamp(dir string) (Stamp, error) {
	var s Stamp
	b, err := os.ReadFile(filepath.Join(dir, stampPath))
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(b, &s)
}

// Result tells what Build did.
type Result struct {
	Dir            string
	Key            string
	Reused         bool // the existing base already had this key: nothing was done
	DebootstrapHit bool // the debootstrap came from the cache
}

// Options change how Build works.
type Options struct {
	Force bool // ignore the caches and the existing base; debootstrap again
}

func spec(c *config.Config, arch string) rootfs.Spec {
	return rootfs.Spec{Suite: c.Base.Suite, Mirror: c.Base.Mirror, Arch: arch, Packages: c.Base.Packages}
}

// bootstrapSpec is spec with [Base] Bootstrapper resolved. mmdebstrap also installs from the base's other
// suites (updates, security), so the tree already holds what the recipe's full-upgrade would fetch.
func bootstrapSpec(c *config.Config, arch string) rootfs.Spec {
	s := spec(c, arch)
	s.Tool = rootfs.ResolveTool(c.Base.Bootstrapper)
	if s.Tool == rootfs.Mmdebstrap {
		for _, line := range strings.Split(SourcesList(c), "\n") {
			if strings.HasPrefix(line, "deb ") && line != "deb "+c.Base.Mirror+" "+c.Base.Suite+" main" {
				s.Sources = append(s.Sources, line)
			}
		}
	}
	return s
}

// Key hashes every input of the base: the debootstrap spec, the recipe files and the Go toolchain. The
// bootstrapper is not an input: debootstrap and mmdebstrap make the same tree (TestBootstrappersAgree).
func Key(c *config.Config, arch string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "debootstrap=%s\ngo=%s\ngosha=%s\n", spec(c, arch).Key(), c.Base.GoVersion, c.Base.GoSHA256)
	h.Write([]byte(SourcesList(c)))
	err := fs.WalkDir(recipe.Files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(recipe.Files, p)
		fmt.Fprintf(h, "%s %d\n%s", p, len(b), b)
		return err
	})
	if err != nil {
		return "", err
	}
	cas, err := hostCAs()
	for _, p := range cas {
		b, _ := os.ReadFile(p)
		fmt.Fprintf(h, "ca %s %d\n%s", filepath.Base(p), len(b), b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], err
}

// HostCADir holds the host's own certificate authorities (a company proxy's, say). The base trusts them too,
// so that machines reach through the same proxies as the host.
const HostCADir = "/usr/local/share/ca-certificates"

func hostCAs() ([]string, error) {
	return filepath.Glob(filepath.Join(HostCADir, "*.crt"))
}

// installHostCAs copies the host's local CAs into the rootfs (through os.Root); provisioning then runs
// update-ca-certificates.
func installHostCAs(dir string) error {
	cas, err := hostCAs()
	if err != nil || len(cas) == 0 {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	rel := strings.TrimPrefix(HostCADir, "/")
	if err := root.MkdirAll(rel, 0o755); err != nil {
		return err
	}
	for _, p := range cas {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := root.WriteFile(filepath.Join(rel, filepath.Base(p)), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Build makes the base rootfs described by c, or reuses the existing one when its inputs are unchanged.
func Build(ctx context.Context, c *config.Config, opts Options) (Result, error) {
	arch, err := rootfs.HostArch()
	if err != nil {
		return Result{}, err
	}
	key, err := Key(c, arch)
	if err != nil {
		return Result{}, err
	}
	dir := Dir(c)
	res := Result{Dir: dir, Key: key}
	l, err := lock.Acquire(ctx, LockFile(c), "base build", 2*time.Hour)
	if err != nil {
		return res, err
	}
	defer l.Release()
	if st, err := ReadStamp(dir); err == nil && st.Key == key && !opts.Force {
		res.Reused = true
		return res, nil
	}
	job := progress.New("base:build", 3)

	// The Go toolchain is fetched and checked while the rootfs is bootstrapped; a bad one stops the bootstrap.
	bctx, stopBootstrap := context.WithCancelCause(ctx)
	defer stopBootstrap(nil)
	type fetched struct {
		path string
		err  error
	}
	goDone := make(chan fetched, 1)
	go func() {
		p, err := fetchGo(ctx, goSource(c.Base.GoTarball, c.Base.GoVersion, arch), c.Base.GoSHA256, c.Paths.Cache)
		if err != nil {
			stopBootstrap(err)
		}
		goDone <- fetched{p, err}
	}()
	awaitGo := func() (string, error) { f := <-goDone; goDone <- f; return f.path, f.err }
	defer awaitGo() // never leave the fetch running past Build

	staging := dir + ".staging"
	if err := clone.Remove(ctx, staging); err != nil {
		return res, err
	}
	if err := os.MkdirAll(filepath.Dir(staging), 0o755); err != nil {
		return res, err
	}
	defer clone.Remove(context.WithoutCancel(ctx), staging)
	bs := bootstrapSpec(c, arch)
	step := job.Step(fmt.Sprintf("%s %s/%s into %s (Go %s alongside)", bs.Tool, c.Base.Suite, arch, staging, c.Base.GoVersion))
	hit, err := rootfs.BootstrapInto(bctx, bs, c.Paths.Cache, opts.Force, step, staging)
	res.DebootstrapHit = hit
	if _, gerr := awaitGo(); gerr != nil {
		err = gerr // the cause, when it stopped the bootstrap
	}
	if err := step.Done(err); err != nil {
		return res, err
	}
	goArchive, _ := awaitGo()

	// A tree mmdebstrap has just made from every suite of the sources is already what apt-get update and
	// full-upgrade would make it (its lists are seconds old); one from the cache or from debootstrap (which
	// installs from the first suite only) is brought up to date.
	fresh := !hit && bs.Tool == rootfs.Mmdebstrap
	title := "apt-get update and full-upgrade from " + strings.Join(suites(c), ", ") + ", then the recipe"
	if fresh {
		title = "the recipe (the tree is up to date from " + strings.Join(suites(c), ", ") + ": mmdebstrap installed from all of them just now)"
	}
	step = job.Step(title + "; Go " + c.Base.GoVersion + " alongside")
	if err := step.Done(provisionWithGo(ctx, c, staging, goArchive, fresh, step)); err != nil {
		return res, err
	}

	step = job.Step("root password and swap into " + dir)
	err = publish(ctx, c, staging, Stamp{Key: key, Suite: c.Base.Suite, Arch: arch, GoVersion: c.Base.GoVersion})
	if err := step.Done(err); err != nil {
		return res, err
	}
	logger().Info("base built", "dir", dir, "key", key, "password", PasswordFile(c))
	return res, nil
}

// provisionWithGo runs the recipe (provision) while Go is unpacked into /usr/local/go, a tree no package
// owns; the shell environment edits bash.bashrc, a conffile, so it waits for apt.
func provisionWithGo(ctx context.Context, c *config.Config, staging, goArchive string, fresh bool, out io.Writer) error {
	goInstalled := make(chan error, 1)
	go func() { goInstalled <- installGo(goArchive, staging) }()
	err := provision(ctx, c, staging, fresh, out)
	if gerr := <-goInstalled; err != nil {
		return fmt.Errorf("provision base: %w", err)
	} else if gerr != nil {
		return fmt.Errorf("install Go: %w", gerr)
	}
	return installShellEnv(staging)
}

// provision trusts the host's CAs in staging, writes its apt sources and runs the base recipe in it, the
// recipe's output going to out. fresh tells the recipe that the tree's packages and lists are current.
func provision(ctx context.Context, c *config.Config, staging string, fresh bool, out io.Writer) error {
	script, err := fs.ReadFile(recipe.Files, "provision.sh")
	if err == nil {
		err = installHostCAs(staging)
	}
	if err == nil {
		err = writeIn(staging, "etc/apt/sources.list", []byte(SourcesList(c)))
	}
	if err == nil {
		env := map[string]string{}
		if fresh {
			env["BERTH_UP_TO_DATE"] = "1"
		}
		_, err = nspawn.Exec{Dir: staging, Argv: []string{"/bin/bash", "-euo", "pipefail", "-s"}, Env: env,
			Stdin: strings.NewReader(string(script)), Output: out, Timeout: 30 * time.Minute}.Run(ctx)
	}
	return err
}

// publish gives staging its root password and stamp, and swaps it into the base's place.
func publish(ctx context.Context, c *config.Config, staging string, st Stamp) error {
	err := SetRootPassword(ctx, staging, PasswordFile(c))
	if err == nil {
		err = fsx.WriteJSONIn(staging, stampPath, st)
	}
	if err == nil {
		_, err = fsx.Swap(staging, Dir(c))
	}
	return err
}

// suites are the suites of the base's sources.list: [Base] Suite and its ExtraSuites.
func suites(c *config.Config) []string {
	out := []string{c.Base.Suite}
	for _, x := range c.Base.ExtraSuites {
		out = append(out, c.Base.Suite+"-"+x)
	}
	return out
}

// SourcesList is the base's /etc/apt/sources.list: [Base] Suite from the mirror with its updates and
// backports, and the security suite from [Base] SecurityMirror, so that every machine, every demo container
// and every nightly upgrade gets Debian's security updates.
func SourcesList(c *config.Config) string {
	var b strings.Builder
	b.WriteString("# Written by berth ([Base] Suite, ExtraSuites, Mirror, SecurityMirror).\n")
	for _, s := range suites(c) {
		mirror := c.Base.Mirror
		if strings.HasSuffix(s, "-security") {
			mirror = c.Base.SecurityMirror
		}
		fmt.Fprintf(&b, "deb %s %s main\n", mirror, s)
	}
	return b.String()
}

// writeIn writes rel under dir through os.Root (mode 0644).
func writeIn(dir, rel string, data []byte) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	return root.WriteFile(rel, data, 0o644)
}

// installShellEnv puts Go on the PATH of login shells (profile.d) and of interactive non-login shells
// (bash.bashrc sources the same file), writing through os.Root.
func installShellEnv(dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	env, err := fs.ReadFile(recipe.Files, "go.sh")
	if err != nil {
		return err
	}
	if err := root.MkdirAll("etc/profile.d", 0o755); err != nil {
		return err
	}
	if err := root.WriteFile("etc/profile.d/berth-go.sh", env, 0o644); err != nil {
		return err
	}
	f, err := root.OpenFile("etc/bash.bashrc", os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString("\n# berth: Go toolchain\n. /etc/profile.d/berth-go.sh\n"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Password returns the root password kept in file, creating a random one (mode 0600, in a 0700 directory)
// the first time; later builds keep it, so that it stays valid for the tree it was set in.
func Password(file string) (string, error) {
	if b, err := os.ReadFile(file); err == nil {
		if pw := strings.TrimSpace(string(b)); pw != "" {
			return pw, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return "", err
	}
	pw := rand.Text()
	return pw, fsx.WriteFile(file, []byte(pw+"\n"), 0o600)
}

// ShowPassword is what a console prints before its login prompt: the root password itself when terminal
// (an operator at a terminal pastes it, as the original consoles printed it), only the file's path
// otherwise, so a log or a pipe never receives it.
func ShowPassword(w io.Writer, file string, terminal bool) error {
	if !terminal {
		_, err := fmt.Fprintf(w, "root password: in %s\n", file)
		return err
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("root password: %w", err)
	}
	_, err = fmt.Fprintf(w, "root password (%s): %s\n", file, strings.TrimSpace(string(b)))
	return err
}

// SetRootPassword sets root's password in the rootfs dir to the one kept in file (made on first use). The
// crypt(3) hash is made once with a random salt and kept beside it (file.crypt, 0600), so rebuilding an image
// yields the same /etc/shadow; chpasswd -e reads it on its standard input, never from argv or a log.
func SetRootPassword(ctx context.Context, dir, file string) error {
	pw, err := Password(file)
	if err != nil {
		return err
	}
	hash, err := os.ReadFile(file + ".crypt")
	if err != nil || !strings.HasPrefix(string(hash), "$6$") {
		out, err := run.Cmd{Argv: []string{"openssl", "passwd", "-6", "-stdin"}, Stdin: strings.NewReader(pw + "\n"), Quiet: true}.Run(ctx)
		if err != nil {
			return fmt.Errorf("hash root password: %w", err)
		}
		hash = bytes.TrimSpace(out)
		if err := fsx.WriteFile(file+".crypt", append(hash, '\n'), 0o600); err != nil {
			return err
		}
	}
	_, err = nspawn.Exec{Dir: dir, Argv: []string{"/usr/sbin/chpasswd", "-e"},
		Stdin: strings.NewReader("root:" + strings.TrimSpace(string(hash)) + "\n"), Timeout: time.Minute}.Run(ctx)
	return err
}

// Clean removes the base, its password file and berth's caches. Nothing under [Paths] Srv is touched.
func Clean(ctx context.Context, c *config.Config) ([]string, error) {
	l, err := lock.Acquire(ctx, LockFile(c), "base clean", 10*time.Minute)
	if err != nil {
		return nil, err
	}
	defer l.Release()
	var removed []string
	for _, p := range []string{Dir(c), Dir(c) + ".staging", PasswordFile(c), PasswordFile(c) + ".crypt", c.Paths.Cache} {
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		if slices.Contains([]string{"/", c.Paths.Srv}, filepath.Clean(p)) || strings.HasPrefix(p, c.Paths.Srv+"/") {
			return removed, fmt.Errorf("refusing to remove %s: it is under [Paths] Srv", p)
		}
		if err := os.RemoveAll(p); err != nil {
			return removed, err
		}
		removed = append(removed, p)
	}
	return removed, nil
}

func requireBase(c *config.Config) error {
	if _, err := ReadStamp(Dir(c)); err != nil {
		return fmt.Errorf("no base rootfs at %s: run base:build first", Dir(c))
	}
	return nil
}

// ConsoleArgv boots the base with a volatile overlay: writes land in memory and vanish, the template (its
// files and their owners: no -U) stays as it was.
func ConsoleArgv(c *config.Config) ([]string, error) {
	if err := requireBase(c); err != nil {
		return nil, err
	}
	return append(nspawn.HostFlags(), "--boot", "--volatile=overlay", "--settings=no",
		"--machine=berth-base", "--directory="+Dir(c)), nil
}

// ShellArgv opens a root shell in the base without booting, with the same volatile overlay.
func ShellArgv(c *config.Config) ([]string, error) {
	if err := requireBase(c); err != nil {
		return nil, err
	}
	return append(nspawn.HostFlags(), "--volatile=overlay", "--settings=no", "--directory="+Dir(c),
		"--", "/bin/bash", "--login"), nil
}

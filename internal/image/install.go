package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"berth/internal/base"
	"berth/internal/clone"
	"berth/internal/config"
	"berth/internal/fsx"
	"berth/internal/lock"
	"berth/internal/machine"
	"berth/internal/nspawn"
	"berth/internal/progress"
	"berth/internal/run"
	"berth/internal/tlsx"
	"berth/internal/wait"
)

// Paths of one machine on the host.
func MachineDir(c *config.Config, name string) string { return filepath.Join(c.Paths.Machines, name) }

// PasswordFile holds the machine's root password (0600).
func PasswordFile(c *config.Config, name string) string {
	return filepath.Join(c.Paths.State, "passwords", name)
}

// NSpawnFile is the machine's settings file.
func NSpawnFile(c *config.Config, name string) string {
	return filepath.Join(c.Paths.NSpawn, name+".nspawn")
}

func lockFile(c *config.Config, name string) string {
	return filepath.Join(c.Paths.State, "locks", "machine-"+name+".lock")
}

// Options change Install.
type Options struct {
	Sources  map[string]string // source name → local checkout or tarball replacing its git URL
	DryRun   bool              // print the plan, change nothing
	Plain    bool              // report steps as plain log lines even on a terminal (installs running side by side)
	Out      io.Writer         // where the plan goes (DryRun)
	Settings []Setting         // what the build offers the provision script ([Settings] Receive takes from it)
	Booter   Booter            // boots the tree for images with [Image] Boot = yes
}

// A Booter boots a staging tree with systemd as PID 1, with a network, for provisioning that needs running
// services (an installer that restarts them, a database the script fills).
type Booter interface {
	Boot(ctx context.Context, dir string, log io.Writer) (Guest, error)
}

// A Guest is a booted staging tree.
type Guest interface {
	// Run runs argv inside with a clean environment plus env, stdin on its standard input, both output
	// streams to out.
	Run(ctx context.Context, env map[string]string, stdin io.Reader, out io.Writer, timeout time.Duration, argv ...string) error
	// Shutdown stops the guest cleanly (it is killed after a bound) and releases what Boot made.
	Shutdown(ctx context.Context) error
}

// SourceOverrides picks the replacements of m's git sources out of given, the operator's
// BERTH_SOURCE_<NAME>=<path> keyed by NAME (the source's name in upper case, dashes as underscores), and
// returns them keyed by source name.
func SourceOverrides(m *Manifest, given map[string]string) map[string]string {
	o := map[string]string{}
	for _, s := range m.Sources {
		if p := given[strings.ToUpper(strings.ReplaceAll(s.Name, "-", "_"))]; p != "" {
			o[s.Name] = p
		}
	}
	return o
}

// Stamp records what a machine was built from; it lives in the machine at /etc/berth/image.json, whose
// modification time is the build time (kept out of the content so that rebuilds are identical).
type Stamp struct {
	Image    string    `json:"image"`
	BaseKey  string    `json:"base_key"`
	Manifest string    `json:"manifest_sha256"`
	Settings string    `json:"settings,omitempty"` // a hash of what the provision script received
	Built    time.Time `json:"-"`
}

// ReadStamp reads the stamp of the machine at dir.
func ReadStamp(dir string) (Stamp, error) {
	var s Stamp
	p := filepath.Join(dir, "etc/berth/image.json")
	b, err := os.ReadFile(p)
	if err == nil {
		err = json.Unmarshal(b, &s)
	}
	if st, serr := os.Stat(p); serr == nil {
		s.Built = st.ModTime()
	}
	return s, err
}

type step struct {
	title string
	do    func(ctx context.Context, out io.Writer) error
}

// Install builds image name from the base into a staging clone and replaces [Paths] Machines/<name> with it
// in one step. A failure at any step leaves the previous machine as it was; a running machine keeps running
// until the swap and is then restarted on the new tree. Data directories under [Paths] Srv are created when
// missing and never emptied; the skeleton only adds missing files.
func Install(ctx context.Context, c *config.Config, fsys fs.FS, name string, opts Options) error {
	m, err := Load(fsys, name)
	if err != nil {
		return err
	}
	baseStamp, err := base.ReadStamp(base.Dir(c))
	if err != nil && !opts.DryRun {
		return fmt.Errorf("no base rootfs at %s: run base:build first", base.Dir(c))
	}
	dst := MachineDir(c, name)
	staging := filepath.Join(c.Paths.Machines, "."+name+".staging")
	var method clone.Method
	steps := buildSteps(c, fsys, m, staging, opts, baseStamp.Key, &method)
	steps = append(steps, step{"machine settings " + NSpawnFile(c, name), func(ctx context.Context, _ io.Writer) error {
		if err := os.MkdirAll(c.Paths.NSpawn, 0o755); err != nil {
			return err
		}
		return fsx.WriteFile(NSpawnFile(c, name), []byte(m.NSpawnFile(c.Paths.Srv)), 0o644)
	}})
	steps = append(steps, step{"swap " + staging + " into " + dst + " (restart the machine if it runs)", func(ctx context.Context, _ io.Writer) error {
		if _, err := fsx.Swap(staging, dst); err != nil {
			return err
		}
		if machine.Running(ctx, name) {
			if err := machine.Restart(ctx, name); err != nil {
				return err
			}
		}
		return clone.Remove(ctx, staging)
	}})

	if opts.DryRun {
		for i, s := range steps {
			fmt.Fprintf(opts.Out, "%s: step %d/%d: %s\n", name, i+1, len(steps), s.title)
		}
		return nil
	}
	l, err := lock.Acquire(ctx, lockFile(c, name), name+" install", 2*time.Hour)
	if err != nil {
		return err
	}
	defer l.Release()
	defer clone.Remove(context.Background(), staging)
	job := progress.New(name+":install", len(steps))
	if opts.Plain {
		job = progress.NewPlain(name+":install", len(steps))
	}
	for _, s := range steps {
		st := job.Step(s.title)
		if err := st.Done(s.do(ctx, st)); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	logger().Info("machine installed", "machine", name, "dir", dst, "clone", method, "password", PasswordFile(c, name))
	return nil
}

// buildSteps are the steps every image takes into dir: a clone of the base, the sources, the files,
// the provision script (booted or not), the root password and the stamp.
func buildSteps(c *config.Config, fsys fs.FS, m *Manifest, dir string, opts Options, baseKey string, method *clone.Method) []step {
	steps := []step{{"clone the base " + base.Dir(c) + " into " + dir + " (holding the base's lock, shared)", func(ctx context.Context, _ io.Writer) error {
		if err := clone.Remove(ctx, dir); err != nil {
			return err
		}
		// Shared: installs clone side by side; a base:build swap or base:clean waits until the clone is done.
		l, err := lock.AcquireShared(ctx, base.LockFile(c), m.Name+" clones the base", 2*time.Hour)
		if err != nil {
			return err
		}
		defer l.Release()
		b, err := base.ReadStamp(base.Dir(c))
		if err != nil {
			return fmt.Errorf("no base rootfs at %s: run base:build first", base.Dir(c))
		}
		baseKey = b.Key // the stamp records the base actually cloned
		used, err := clone.Tree(ctx, base.Dir(c), dir)
		*method = used
		if err == nil && !m.Go { // 240 MB an image that builds no Go does not need
			err = removeIn(dir, "usr/local/go")
		}
		return err
	}}}
	for _, s := range m.Sources {
		steps = append(steps, sourceStep(c, dir, s, opts.Sources[s.Name]))
	}
	steps = append(steps, step{"files, data directories and skeleton under " + c.Paths.Srv, func(context.Context, io.Writer) error {
		return m.placeFiles(c, fsys, dir)
	}})
	how := "inside"
	if m.Boot {
		how = "in the booted tree"
	}
	var sum string
	steps = append(steps, step{fmt.Sprintf("provision %s: apt-get install %s; %s; systemctl enable %s (log under %s)", how,
		strings.Join(m.Packages, " "), m.Provision, strings.Join(m.Enable, " "), LogDir(c)), func(ctx context.Context, out io.Writer) (err error) {
		sum, err = m.provision(ctx, c, fsys, dir, opts, out)
		return err
	}})
	if len(m.Binds) > 0 {
		steps = append(steps, step{"empty data directories take the owner and mode of the directory they cover", func(context.Context, io.Writer) error {
			return m.ownData(c, dir)
		}})
	}
	return append(steps, step{"root password (" + PasswordFile(c, m.Name) + ")", func(ctx context.Context, _ io.Writer) error {
		if err := base.SetRootPassword(ctx, dir, PasswordFile(c, m.Name)); err != nil {
			return err
		}
		return fsx.WriteJSONIn(dir, "etc/berth/image.json", Stamp{Image: m.Name, BaseKey: baseKey, Manifest: manifestSum(fsys, m.Name), Settings: sum})
	}})
}

// removeIn removes rel under dir through os.Root.
func removeIn(dir, rel string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	return root.RemoveAll(rel)
}

// BuildTree builds image name from the base into dir (replaced if present), with the same steps as
// Install but no machine around it: the demo makes its pristine container state this way. A failure
// removes dir.
func BuildTree(ctx context.Context, c *config.Config, fsys fs.FS, name, dir string, opts Options) (err error) {
	m, err := Load(fsys, name)
	if err != nil {
		return err
	}
	baseStamp, err := base.ReadStamp(base.Dir(c))
	if err != nil {
		return fmt.Errorf("no base rootfs at %s: run base:build first", base.Dir(c))
	}
	defer func() {
		if err != nil {
			clone.Remove(context.Background(), dir)
		}
	}()
	var method clone.Method
	steps := buildSteps(c, fsys, m, dir, opts, baseStamp.Key, &method)
	job := progress.New(name+":build", len(steps))
	for _, s := range steps {
		st := job.Step(s.title)
		if err := st.Done(s.do(ctx, st)); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	logger().Info("image built", "image", name, "dir", dir, "clone", method)
	return nil
}

func manifestSum(fsys fs.FS, name string) string {
	h := sha256.New()
	fs.WalkDir(fsys, name, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := fs.ReadFile(fsys, p)
			fmt.Fprintf(h, "%s %d\n%s", p, len(b), b)
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))
}

// placeFiles writes the manifest's files into the rootfs (through os.Root), creates the data directories
// and adds the skeleton's missing files to them, and makes a placeholder certificate when none exists.
func (m *Manifest) placeFiles(c *config.Config, fsys fs.FS, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	if err := root.WriteFile("etc/hostname", []byte(m.Name+"\n"), 0o644); err != nil {
		return err
	}
	hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n", m.Name)
	if err := root.WriteFile("etc/hosts", []byte(hosts), 0o644); err != nil {
		return err
	}
	for _, cp := range m.Copies {
		b, err := fs.ReadFile(fsys, path.Join(m.Name, cp.From))
		if err != nil {
			return err
		}
		to := strings.TrimPrefix(cp.To, "/")
		if err := root.MkdirAll(path.Dir(to), 0o755); err != nil {
			return err
		}
		if err := root.WriteFile(to, b, cp.Mode); err != nil {
			return err
		}
		if err := root.Chmod(to, cp.Mode); err != nil {
			return err
		}
	}
	return m.placeHostSide(c, fsys)
}

// PlaceHostSide makes what a machine of image name needs on the host beside its tree, as an install does:
// the data directories under [Paths] Srv, the skeleton's missing files, a placeholder certificate when none
// exists. A pulled image takes these steps on the host that pulls it.
func PlaceHostSide(c *config.Config, fsys fs.FS, name string) error {
	m, err := Load(fsys, name)
	if err != nil {
		return err
	}
	return m.placeHostSide(c, fsys)
}

func (m *Manifest) placeHostSide(c *config.Config, fsys fs.FS) error {
	for _, b := range m.Binds {
		if err := os.MkdirAll(filepath.Join(c.Paths.Srv, b.Host), 0o755); err != nil {
			return err
		}
	}
	if m.Skeleton != "" {
		from, to, _ := strings.Cut(m.Skeleton, ":")
		sub, err := fs.Sub(fsys, path.Join(m.Name, from))
		if err != nil {
			return err
		}
		// os.Root, not otiai10/copy: [Paths] Srv/<dir> is bound into the machine, so a guest could plant a symlink.
		dataRoot, err := os.OpenRoot(filepath.Join(c.Paths.Srv, to))
		if err != nil {
			return err
		}
		defer dataRoot.Close()
		if err := copyInto(dataRoot, ".", sub, true); err != nil {
			return fmt.Errorf("skeleton: %w", err)
		}
	}
	if m.Certificate != "" {
		domain := c.Relay.Domain
		if domain == "" {
			domain = "localhost"
		}
		machineDir, rel, _ := strings.Cut(m.Certificate, "/") // [Paths] Srv/<data dir>, the guest's from there on
		made, err := tlsx.EnsureBundleIn(filepath.Join(c.Paths.Srv, machineDir), rel, domain, 90*24*time.Hour)
		if err != nil {
			return err
		}
		if made {
			logger().Info("placeholder self-signed certificate until configure", "file", filepath.Join(c.Paths.Srv, m.Certificate))
		}
	}
	return nil
}

// ownData gives each data directory that is still empty the owner and mode of the directory its bind
// covers in the built tree (what the packages made, such as redis:redis 0750 for /var/lib/redis): a fresh
// directory made by berth is root's, and a service that cannot write its data may refuse to stop. A data
// directory with anything in it is the operator's and keeps its owner.
func (m *Manifest) ownData(c *config.Config, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, b := range m.Binds {
		st, err := root.Lstat(strings.TrimPrefix(b.Guest, "/"))
		if err != nil || !st.IsDir() {
			continue // nothing there in the tree: the bind makes the mount point
		}
		host := filepath.Join(c.Paths.Srv, b.Host)
		if entries, err := os.ReadDir(host); err != nil || len(entries) > 0 {
			continue
		}
		sys := st.Sys().(*syscall.Stat_t)
		if err := os.Lchown(host, int(sys.Uid), int(sys.Gid)); err != nil {
			return err
		}
		if err := os.Chmod(host, st.Mode().Perm()); err != nil {
			return err
		}
		logger().Info("data directory owned as the tree's", "dir", host, "guest", b.Guest, "uid", sys.Uid, "gid", sys.Gid, "mode", st.Mode().Perm())
	}
	return nil
}

// copyInto copies the tree src into root at dst. With noClobber, files that exist are left alone. Every
// destination it serves (a staging rootfs, a machine's data under [Paths] Srv) is reachable by a guest, so it
// goes through os.Root; host-owned trees are copied with otiai10/copy instead (upgraded.Hooks.Install).
func copyInto(root *os.Root, dst string, src fs.FS, noClobber bool) error {
	return fs.WalkDir(src, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := path.Join(dst, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return root.MkdirAll(target, info.Mode().Perm()|0o700)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := fs.ReadLink(src, p)
			if err != nil {
				return err
			}
			if _, err := root.Lstat(target); err == nil && noClobber {
				return nil
			}
			root.Remove(target)
			return root.Symlink(link, target)
		case d.Type().IsRegular():
			flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
			if noClobber {
				flags = os.O_WRONLY | os.O_CREATE | os.O_EXCL
			}
			perm := info.Mode().Perm()
			if perm == 0o444 || perm == 0 { // embedded files
				perm = 0o644
			}
			w, err := root.OpenFile(target, flags, perm)
			if errors.Is(err, fs.ErrExist) && noClobber {
				return nil
			}
			if err != nil {
				return err
			}
			r, err := src.Open(p)
			if err != nil {
				w.Close()
				return err
			}
			_, err = io.Copy(w, r)
			r.Close()
			if cerr := w.Close(); err == nil {
				err = cerr
			}
			return err
		}
		return nil
	})
}

// provisionPrelude runs before the image's own script: strict mode, an ERR trap that names the failing
// file, line and command, the packages, and afterwards the units to enable.
const provisionPrelude = `set -E
trap 'rc=$?; echo "berth: ${BASH_SOURCE[0]##*/}:${LINENO}: '\''${BASH_COMMAND}'\'' failed with exit status $rc" >&2' ERR
export DEBIAN_FRONTEND=noninteractive HOME=/root PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
`

// BootTimeout bounds a booted provisioning's boot, until its systemd reports running or degraded.
var BootTimeout = 5 * time.Minute

// LogDir holds one full provisioning log per build.
func LogDir(c *config.Config) string { return filepath.Join(c.Paths.State, "logs", "build") }

// provision runs the packages step, the image's script and the enables inside dir: with systemd-nspawn
// without booting, or, for [Image] Boot = yes, in the tree booted by opts.Booter. The image folder and the
// setting files are placed under /var/lib/berth-build for the run and removed after it. The whole output
// goes to a log file under LogDir; an error names it and carries the output's last lines. It returns the
// hash of the settings received, for the image's stamp.
func (m *Manifest) provision(ctx context.Context, c *config.Config, fsys fs.FS, dir string, opts Options, out io.Writer) (string, error) {
	e, err := m.environment(opts.Settings)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(LogDir(c), 0o700); err != nil {
		return "", err
	}
	logPath := filepath.Join(LogDir(c), m.Name+"-"+time.Now().Format("20060102-150405")+".log")
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return "", err
	}
	defer log.Close()
	tail := &tailBuffer{max: 20}
	w := io.MultiWriter(log, out, tail)
	fmt.Fprintf(log, "### berth: provisioning image %s in %s (booted: %v)\n### settings received:\n", m.Name, dir, m.Boot)
	for _, l := range e.log {
		fmt.Fprintf(log, "###   %s\n", l)
	}
	if err := m.placeBuildDir(fsys, dir, e); err != nil {
		return "", err
	}
	defer removeIn(dir, buildDir)
	script := strings.NewReader(m.script())
	argv := []string{"/bin/bash", "-euo", "pipefail", "-s"}
	if m.Boot {
		err = m.provisionBooted(ctx, dir, opts.Booter, e.vars, script, w, argv)
	} else {
		_, err = nspawn.Exec{Dir: dir, Argv: argv, Env: e.vars, Stdin: script, Output: w, Timeout: time.Hour}.Run(ctx)
	}
	if err != nil {
		fmt.Fprintf(log, "### berth: provisioning failed: %v\n", err)
		return "", fmt.Errorf("provision failed (full log: %s): %s%s", logPath, tail.String(), unlessTailed(err, tail.String()))
	}
	return e.sum, removeIn(dir, buildDir)
}

// provisionBooted boots dir, waits until its systemd has finished booting (running or degraded), runs the
// script and shuts the tree down cleanly.
func (m *Manifest) provisionBooted(ctx context.Context, dir string, b Booter, vars map[string]string, script io.Reader, w io.Writer, argv []string) (err error) {
	if b == nil {
		return fmt.Errorf("image %s provisions in a booted tree ([Image] Boot = yes), which only demo builds provide so far", m.Name)
	}
	g, err := b.Boot(ctx, dir, w)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, g.Shutdown(context.WithoutCancel(ctx))) }()
	// is-system-running --wait exits non-zero for "degraded": the state it prints is what counts. Right after
	// the start, systemd may not be PID 1 yet ("offline") or have its bus up: that is asked again.
	err = wait.Until(ctx, BootTimeout, 250*time.Millisecond, func(ctx context.Context) (bool, error) {
		var state run.SyncBuffer
		_ = g.Run(ctx, nil, nil, &state, BootTimeout, "systemctl", "is-system-running", "--wait")
		switch s := strings.TrimSpace(state.String()); s {
		case "running", "degraded":
			fmt.Fprintf(w, "### berth: the booted tree is %s\n", s)
			return true, nil
		case "maintenance", "stopping":
			return true, fmt.Errorf("the booted tree did not finish booting: systemctl is-system-running says %q", s)
		default: // systemd not up yet ("offline", no bus to connect to): asked again
			return false, fmt.Errorf("the booted tree's systemd does not report running within %s: systemctl is-system-running says %q", BootTimeout, s)
		}
	})
	if err != nil {
		return err
	}
	return g.Run(ctx, vars, script, w, 2*time.Hour, argv...)
}

// placeBuildDir copies the image folder and the setting files into dir's build directory, through os.Root.
func (m *Manifest) placeBuildDir(fsys fs.FS, dir string, e env) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	if err := root.RemoveAll(buildDir); err != nil {
		return err
	}
	if err := root.MkdirAll(path.Join(buildDir, "image"), 0o700); err != nil {
		return err
	}
	sub, err := fs.Sub(fsys, m.Name)
	if err != nil {
		return err
	}
	// Into the guest tree: through os.Root (a symlink in the tree cannot redirect it onto the host).
	if err := copyInto(root, path.Join(buildDir, "image"), sub, false); err != nil {
		return err
	}
	for rel, host := range e.files {
		b, err := os.ReadFile(host)
		if err != nil {
			return err
		}
		if err := root.WriteFile(rel, b, 0o400); err != nil {
			return err
		}
	}
	return nil
}

// script is what provisioning runs: the prelude, the packages, the image's own script (sourced from the
// build directory, so that errors name its own lines), the units to enable, and the removal of logs and
// caches that differ from one build to the next, so that an unchanged image rebuilds identically.
func (m *Manifest) script() string {
	var sb strings.Builder
	sb.WriteString(provisionPrelude)
	if len(m.Packages) > 0 {
		sb.WriteString("apt-get -q update\n")
		fmt.Fprintf(&sb, "apt-get -q -y --no-install-recommends -o Dpkg::Options::=--force-confold install %s\n", strings.Join(m.Packages, " "))
	}
	if m.Provision != "" {
		fmt.Fprintf(&sb, "source /%s/image/%s\n", buildDir, m.Provision)
	}
	if len(m.Enable) > 0 {
		fmt.Fprintf(&sb, "systemctl enable %s\n", strings.Join(m.Enable, " "))
	}
	sb.WriteString("apt-get clean\nrm -f /var/log/dpkg.log /var/log/alternatives.log /var/log/apt/*.log /var/cache/ldconfig/aux-cache /var/cache/debconf/*-old /var/lib/dpkg/*-old\n")
	return sb.String()
}

// unlessTailed is " | " and err's text when the output's tail does not already say it (an error of berth's
// own, such as a guest that did not boot, rather than a failing line of the script).
func unlessTailed(err error, tail string) string {
	var re *run.Error
	if errors.As(err, &re) && strings.Contains(tail, "berth:") {
		return "" // the ERR trap named the failing line
	}
	return " | " + err.Error()
}

// tailBuffer keeps the last max lines written to it.
type tailBuffer struct {
	mu    sync.Mutex
	max   int
	lines []string
	part  string
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	parts := strings.Split(t.part+string(p), "\n")
	t.part = parts[len(parts)-1]
	for _, l := range parts[:len(parts)-1] {
		if l = strings.TrimSpace(l); l != "" && !strings.Contains(l, nspawn.Harmless) {
			t.lines = append(t.lines, l)
		}
	}
	if len(t.lines) > t.max {
		t.lines = t.lines[len(t.lines)-t.max:]
	}
	return len(p), nil
}

// String is the kept lines, newest last, joined with " | " so that an error stays one line.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(slices.DeleteFunc(append(t.lines, strings.TrimSpace(t.part)), func(l string) bool { return l == "" }), " | ")
}

// sourceStep fetches a pinned source (or its local override) into the rootfs at Dest.
func sourceStep(c *config.Config, dir string, s Source, override string) step {
	if override != "" {
		return step{fmt.Sprintf("source %s: local override %s → %s", s.Name, override, s.Dest), func(ctx context.Context, _ io.Writer) error {
			return placeSource(ctx, dir, s, override)
		}}
	}
	key, pin := s.Ref, "checkout "+s.Ref
	if s.Commit != "" {
		key, pin = s.Commit, "checkout "+s.Ref+", verified to be commit "+s.Commit
	}
	cache := filepath.Join(c.Paths.Cache, "sources", s.Name+"-"+key)
	return step{fmt.Sprintf("source %s: git clone %s, %s (cached in %s) → %s", s.Name, s.URL, pin, cache, s.Dest),
		func(ctx context.Context, _ io.Writer) error {
			if s.Commit == "" {
				logger().Warn("source pinned by a tag or branch, which can move: add [Source] Commit=", "source", s.Name, "ref", s.Ref)
			}
			// Images built side by side may share a source (cookiecutter): one clones, the others wait.
			if err := os.MkdirAll(filepath.Dir(cache), 0o755); err != nil {
				return err
			}
			l, err := lock.Acquire(ctx, cache+".lock", "source "+s.Name, 30*time.Minute)
			if err != nil {
				return err
			}
			defer l.Release()
			if _, err := os.Stat(filepath.Join(cache, ".git")); err != nil {
				tmp := cache + ".tmp"
				os.RemoveAll(tmp)
				for _, argv := range [][]string{
					{"git", "clone", "--quiet", s.URL, tmp},
					{"git", "-C", tmp, "checkout", "--quiet", "--detach", s.Ref},
					{"git", "-C", tmp, "submodule", "update", "--quiet", "--init", "--recursive"},
				} {
					if _, err := (run.Cmd{Argv: argv, Timeout: 20 * time.Minute}).Run(ctx); err != nil {
						os.RemoveAll(tmp)
						return fmt.Errorf("source %s: %w", s.Name, err)
					}
				}
				if err := verifyCommit(ctx, tmp, s); err != nil {
					os.RemoveAll(tmp)
					return err
				}
				if err := os.Rename(tmp, cache); err != nil {
					return err
				}
			}
			if err := verifyCommit(ctx, cache, s); err != nil { // the cache too: nothing but the pinned commit goes in
				return err
			}
			return placeSource(ctx, dir, s, cache)
		}}
}

// verifyCommit checks that the checkout at dir is s.Commit (when the manifest pins one).
func verifyCommit(ctx context.Context, dir string, s Source) error {
	if s.Commit == "" {
		return nil
	}
	out, err := run.Output(ctx, "git", "-C", dir, "rev-parse", "HEAD")
	if err != nil {
		return fmt.Errorf("source %s: %w", s.Name, err)
	}
	if got := strings.TrimSpace(out); got != s.Commit {
		return fmt.Errorf("source %s: %s at %s is commit %s, not the pinned %s: refusing it (the ref moved, or the source is not the one pinned)", s.Name, s.URL, s.Ref, got, s.Commit)
	}
	return nil
}

// placeSource copies a checkout (a directory) or unpacks a tarball into the rootfs at s.Dest.
func placeSource(ctx context.Context, dir string, s Source, from string) error {
	st, err := os.Stat(from)
	if err != nil {
		return fmt.Errorf("source %s: %w", s.Name, err)
	}
	if !st.IsDir() {
		tmp, err := os.MkdirTemp("", "berth-source-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		if _, err := run.Command(ctx, "tar", "-xf", from, "-C", tmp); err != nil {
			return fmt.Errorf("source %s: %w", s.Name, err)
		}
		from = tmp
		if entries, _ := os.ReadDir(tmp); len(entries) == 1 && entries[0].IsDir() {
			from = filepath.Join(tmp, entries[0].Name())
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	dest := strings.TrimPrefix(s.Dest, "/")
	if err := root.RemoveAll(dest); err != nil {
		return err
	}
	if err := root.MkdirAll(dest, 0o755); err != nil {
		return err
	}
	return copyInto(root, dest, os.DirFS(from), false) // into the guest tree: os.Root
}

// Fresh tells whether the tree at dir was built from image name as it is now: the current base and the
// current manifest folder.
func Fresh(c *config.Config, fsys fs.FS, name, dir string, settings []Setting) bool {
	st, err := ReadStamp(dir)
	b, berr := base.ReadStamp(base.Dir(c))
	m, merr := Load(fsys, name)
	if err != nil || berr != nil || merr != nil {
		return false
	}
	e, eerr := m.environment(settings)
	return eerr == nil && st.Image == name && st.BaseKey == b.Key && st.Manifest == manifestSum(fsys, name) && st.Settings == e.sum
}

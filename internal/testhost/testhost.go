// Package testhost boots a throwaway Debian bookworm with systemd as PID 1 under systemd-nspawn, for tests
// that need a real systemd host (units, timers, D-Bus, machinectl with nested machines, reboots) on a machine
// whose own PID 1 is not systemd.
//
// How the host is booted, and why:
//
//   - The rootfs is a debootstrap tarball made once per cache key by rootfs.Bootstrap (minbase plus BasePackages
//     plus Options.Packages) and shared by every test of every package; each host unpacks a fresh copy into its
//     own temporary directory, so booting never touches the cached tarball.
//   - systemd-nspawn runs with --boot --capability=all (nested nspawn, machinectl, mounts and LXC need it),
//     --register=no --keep-unit (there is no systemd/machined on the VM), --settings=no (no .nspawn file on
//     the VM applies) and --link-journal=no (nothing is written to the VM's /var/log/journal).
//   - Network: a private network namespace (--private-network) by default. The guest has its own loopback, so
//     HAProxy and other daemons of concurrently running test hosts can listen on the same loopback ports, and
//     nested machines started by machinectl (systemd-nspawn@.service uses --network-veth) create their veth
//     pairs inside the guest instead of on the VM. The price is that the guest cannot reach the Debian mirror:
//     put the packages a test needs into Options.Packages (they are baked into the cached tarball), or set
//     Options.HostNetwork to share the VM's network namespace.
//   - cgroups: the VM has a hybrid layout (v1 controllers, name=systemd, cgroup2 at /sys/fs/cgroup/unified).
//     The guest gets a pure cgroup2 hierarchy (SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1), like a real Debian 12 host;
//     it boots to "running" and nested machinectl/nspawn work in it (the default hybrid mode works as well).
//     systemd-nspawn with --keep-unit puts the guest into "payload" below its own cgroup, so every host's
//     systemd-nspawn is started directly (clone3 CLONE_INTO_CGROUP) in a cgroup of its own, named after the
//     machine; without that, two hosts booted at the same time would share one "/payload" cgroup. That cgroup
//     also gives Stop a reliable list (and cgroup.kill) of everything still running in the guest.
//   - The boot's console (read-only) goes to boot.log in the host's temporary directory; errors carry its tail.
package testhost

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"berth/internal/clone"
	"berth/internal/fsx"
	"berth/internal/rootfs"
	"berth/internal/run"
	"berth/internal/testutil"
	"berth/internal/wait"
)

const (
	// DefaultName is the host (and machine) name when Options.Name is empty.
	DefaultName = "berth-testhost"
	// Suite is what the test host's rootfs is bootstrapped from (from testutil.Mirror()).
	Suite = "bookworm"
)

// BasePackages are always in the rootfs. systemd-sysv provides /sbin/init, poweroff and reboot; liblxc1 lets
// the compiled berth binary (cgo, go-lxc) run inside.
var BasePackages = []string{"systemd", "systemd-sysv", "dbus", "systemd-container", "ca-certificates", "iproute2", "liblxc1"}

// Timeouts; variables so that a slow CI machine can raise them from a TestMain.
var (
	BootTimeout = 120 * time.Second // from systemd-nspawn's start until is-system-running says running/degraded
	StopTimeout = 60 * time.Second  // for a clean poweroff before everything left is killed
)

// guestPath is the PATH of commands run with Host.Run.
const guestPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Options describe a test host.
type Options struct {
	Name          string   // machine/host name, default "berth-testhost"
	Packages      []string // extra packages in the rootfs beyond BasePackages
	CacheDir      string   // where rootfs tarballs are cached; default $BERTH_TEST_CACHE, else /var/cache/berth-test
	Binds         []string // extra --bind= for the boot ("src", "src:dst" or "src:dst:options")
	ReadOnlyBinds []string // extra --bind-ro= for the boot, e.g. fixtures or a cached tarball the guest only reads
	HostNetwork   bool     // share the VM's network namespace instead of a private one (see the package comment)
	Bridge        string   // a bridge on the VM the guest's interface host0 joins (--network-bridge); the caller addresses it
	// Tree, when set, is a rootfs directory (a berth base, say) the host boots a copy of instead of the
	// cached tarball; it must hold systemd. Packages does not apply then.
	Tree string
}

// Host is a booted test host. Run, RunInput, CopyIn and PID may be used from several goroutines; Reboot and
// Stop must not overlap with each other (a Run during them fails).
type Host struct {
	Dir      string        // its rootfs on the VM
	Name     string        // its host name
	Tarball  string        // the cached rootfs tarball it was unpacked from (read it, never write it)
	Log      string        // the console log of its boots
	Degraded []string      // failed units of the last boot when it ended "degraded"; nil when "running"
	BootTime time.Duration // how long the last boot took, from systemd-nspawn's start to running/degraded

	opts    Options
	tmp     string // temporary directory holding Dir and Log
	machine string // systemd-nspawn's --machine, unique per host
	cg      *cgroup
	rootDev uint64
	rootIno uint64

	mu      sync.Mutex
	logf    *os.File
	boots   int
	cmd     *exec.Cmd
	exited  chan struct{} // closed when systemd-nspawn has exited
	waitErr error         // systemd-nspawn's exit, valid once exited is closed
	pid     int           // the guest's systemd, as a pid on the VM
	up      bool          // the guest's systemd has finished starting up (Run goes through a scope)
	pidNS   []uint64      // the pid namespaces of every boot
	nsPins  []*os.File    // one open file per namespace in pidNS: it keeps the namespace, so its inode is not reused by another host's
	stopped bool
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,47}$`)

func (o Options) withDefaults() Options {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.CacheDir == "" {
		o.CacheDir = testutil.CacheDir()
	}
	return o
}

// Spec is the rootfs recipe of a test host with opts.
func Spec(opts Options) (rootfs.Spec, error) {
	arch, err := rootfs.HostArch()
	if err != nil {
		return rootfs.Spec{}, err
	}
	pkgs := append(append([]string{}, BasePackages...), opts.Packages...)
	return rootfs.Spec{Suite: Suite, Mirror: testutil.Mirror(), Arch: arch, Packages: pkgs}, nil
}

// Tarball returns the cached rootfs tarball of a test host with opts, bootstrapping it first when the cache
// has none (debootstrap's output goes to progress, which may be nil). Tests may unpack it, for example as a
// nested machine inside a test host; nobody writes to it.
func Tarball(ctx context.Context, opts Options, progress io.Writer) (string, error) {
	t, _, err := tarballFor(ctx, opts.withDefaults(), progress)
	return t, err
}

func tarballFor(ctx context.Context, opts Options, progress io.Writer) (string, bool, error) {
	spec, err := Spec(opts)
	if err != nil {
		return "", false, err
	}
	t, hit, err := rootfs.Bootstrap(ctx, spec, opts.CacheDir, false, progress)
	if err != nil {
		return "", false, fmt.Errorf("testhost: rootfs: %w", err)
	}
	return t, hit, nil
}

// Check says why a test host cannot run here (not root, a tool or cgroup2 missing), or nil.
func Check() error {
	if os.Geteuid() != 0 {
		return errors.New("a test host needs root (systemd-nspawn, nsenter, cgroups)")
	}
	var missing []string
	for _, tool := range []string{"systemd-nspawn", "nsenter", "debootstrap", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("a test host needs %s on the PATH (Debian packages systemd-container, util-linux, debootstrap, tar)",
			strings.Join(missing, ", "))
	}
	if _, err := findCgroup2(); err != nil {
		return err
	}
	return nil
}

// Start makes a fresh copy of the cached rootfs (bootstrapping it first if the cache has none), boots it and
// waits until systemd says running or degraded.
func Start(ctx context.Context, opts Options) (_ *Host, err error) {
	opts = opts.withDefaults()
	if !nameRE.MatchString(opts.Name) {
		return nil, fmt.Errorf("testhost: name %q: want 1-48 characters of a-z, 0-9 and '-', starting with a letter or digit", opts.Name)
	}
	if err := Check(); err != nil {
		return nil, fmt.Errorf("testhost: %w", err)
	}
	tmp, err := os.MkdirTemp("", "berth-testhost-*")
	if err != nil {
		return nil, err
	}
	h := &Host{Name: opts.Name, opts: opts, tmp: tmp, Dir: filepath.Join(tmp, "root"), Log: filepath.Join(tmp, "boot.log")}
	h.machine = opts.Name + "-" + randomHex(4)
	defer func() {
		if err != nil {
			if serr := h.Stop(context.WithoutCancel(ctx)); serr != nil {
				err = fmt.Errorf("%w (and cleaning up: %w)", err, serr)
			}
		}
	}()
	if h.logf, err = os.OpenFile(h.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err != nil {
		return nil, err
	}
	if opts.Tree != "" {
		fmt.Fprintf(h.logf, "=== rootfs: a copy of %s\n", opts.Tree)
		if _, err := clone.Tree(ctx, opts.Tree, h.Dir); err != nil {
			return nil, fmt.Errorf("testhost: %w", err)
		}
	} else {
		tarball, hit, err := tarballFor(ctx, opts, h.logf)
		if err != nil {
			return nil, fmt.Errorf("%w%s", err, h.logTail())
		}
		h.Tarball = tarball
		fmt.Fprintf(h.logf, "=== rootfs %s (cache hit: %v)\n", tarball, hit)
		if err := os.Mkdir(h.Dir, 0o755); err != nil {
			return nil, err
		}
		if err := rootfs.Unpack(ctx, tarball, h.Dir); err != nil {
			return nil, fmt.Errorf("testhost: %w", err)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(h.Dir, &st); err != nil {
		return nil, err
	}
	h.rootDev, h.rootIno = st.Dev, st.Ino
	if err := h.prepare(); err != nil {
		return nil, fmt.Errorf("testhost: prepare rootfs: %w", err)
	}
	if h.cg, err = newCgroup("berth-testhost." + h.machine); err != nil {
		return nil, fmt.Errorf("testhost: %w", err)
	}
	if err := h.boot(ctx); err != nil {
		return nil, err
	}
	return h, nil
}

// prepare gives the fresh rootfs its host name, a machine id of its own (the tarball carries the one
// debootstrap made, the same for every host and every nested copy) and an /etc/hosts.
func (h *Host) prepare() error {
	r, err := os.OpenRoot(h.Dir)
	if err != nil {
		return err
	}
	defer r.Close()
	if err := writeReplace(r, "etc/hostname", []byte(h.Name+"\n"), 0o644); err != nil {
		return err
	}
	id := []byte(randomHex(16) + "\n")
	if err := writeReplace(r, "etc/machine-id", id, 0o444); err != nil {
		return err
	}
	if fi, err := r.Lstat("var/lib/dbus/machine-id"); err == nil && fi.Mode().IsRegular() {
		if err := writeReplace(r, "var/lib/dbus/machine-id", id, 0o444); err != nil {
			return err
		}
	}
	// debootstrap writes no /etc/hosts; a Debian host has one (the installer's), and without it "localhost"
	// goes to whatever DNS server the machine has, which may not know it.
	if _, err := r.Lstat("etc/hosts"); errors.Is(err, fs.ErrNotExist) {
		hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n", h.Name)
		return writeReplace(r, "etc/hosts", []byte(hosts), 0o644)
	}
	return nil
}

// boot starts systemd-nspawn on h.Dir and waits for the guest to be up.
func (h *Host) boot(ctx context.Context) error {
	h.mu.Lock()
	h.boots++
	n := h.boots
	h.mu.Unlock()
	fmt.Fprintf(h.logf, "=== boot %d of %s at %s\n", n, h.machine, time.Now().Format(time.RFC3339))

	argv := h.nspawnArgv()
	fd, err := h.cg.open()
	if err != nil {
		return fmt.Errorf("testhost: %w", err)
	}
	defer fd.Close()
	// systemd-nspawn lives as long as the host, so it is not run through run.Cmd (whose calls end with the
	// call); it is bounded by Stop instead, and by Pdeathsig if the test binary dies first (SIGTERM makes
	// systemd-nspawn halt the guest cleanly).
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(cleanEnv(os.Environ()), "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1", "SYSTEMD_COLORS=0")
	cmd.Stdout, cmd.Stderr = h.logf, h.logf
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd()), Pdeathsig: syscall.SIGTERM}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testhost: %s: %w", argv[0], err)
	}
	exited := make(chan struct{})
	h.mu.Lock()
	h.cmd, h.exited, h.pid, h.up = cmd, exited, 0, false
	h.mu.Unlock()
	go func() {
		err := cmd.Wait()
		h.mu.Lock()
		h.waitErr = err
		h.mu.Unlock()
		close(exited)
	}()

	bctx, cancel := context.WithTimeout(ctx, BootTimeout)
	defer cancel()
	pid, err := h.findLeader(bctx, cmd.Process.Pid, exited)
	if err != nil {
		return h.bootError(err)
	}
	// The namespace is held open until Stop: a freed namespace's inode number is given to the next one made, which
	// may be another test host's, and Stop would then take that host's processes for this one's leftovers.
	pin, err := os.Open(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		return h.bootError(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(pin.Fd()), &st); err != nil {
		pin.Close()
		return h.bootError(err)
	}
	h.mu.Lock()
	h.pid = pid
	h.pidNS = append(h.pidNS, st.Ino)
	h.nsPins = append(h.nsPins, pin)
	h.mu.Unlock()

	state, err := h.waitRunning(bctx, exited)
	if err != nil {
		return h.bootError(err)
	}
	h.BootTime = time.Since(start)
	if h.Degraded, err = h.failedUnits(ctx, state); err != nil {
		return h.bootError(err)
	}
	h.mu.Lock()
	h.up = true
	h.mu.Unlock()
	fmt.Fprintf(h.logf, "=== boot %d: %s after %s (pid %d)\n", n, state, h.BootTime.Round(time.Millisecond), pid)
	return nil
}

// nspawnArgv is the systemd-nspawn command line that boots the host.
func (h *Host) nspawnArgv() []string {
	argv := []string{"systemd-nspawn", "--boot", "--directory=" + h.Dir, "--machine=" + h.machine, "--hostname=" + h.Name,
		"--capability=all", "--register=no", "--keep-unit", "--settings=no", "--link-journal=no", "--console=read-only",
		"--setenv=SYSTEMD_COLORS=0"}
	switch {
	case h.opts.Bridge != "":
		argv = append(argv, "--network-bridge="+h.opts.Bridge)
	case !h.opts.HostNetwork:
		argv = append(argv, "--private-network")
	}
	for _, b := range h.opts.Binds {
		argv = append(argv, "--bind="+b)
	}
	for _, b := range h.opts.ReadOnlyBinds {
		argv = append(argv, "--bind-ro="+b)
	}
	return argv
}

// failedUnits lists the guest's failed units when it booted degraded: nil when running, never nil when degraded.
func (h *Host) failedUnits(ctx context.Context, state string) ([]string, error) {
	if state != "degraded" {
		return nil, nil
	}
	out, err := h.exec(ctx, false, nil, []string{"systemctl", "--failed", "--no-legend", "--plain", "--no-pager"})
	if err != nil {
		return nil, fmt.Errorf("listing failed units: %w", err)
	}
	failed := []string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			failed = append(failed, f[0])
		}
	}
	return failed, nil
}

func (h *Host) bootError(err error) error {
	select {
	case <-h.exited:
		h.mu.Lock()
		err = fmt.Errorf("%w (systemd-nspawn exited: %w)", err, h.waitErr)
		h.mu.Unlock()
	default:
	}
	return fmt.Errorf("testhost %s: boot: %w%s", h.Name, err, h.logTail())
}

// findLeader waits for the guest's systemd: the child of systemd-nspawn that is pid 1 of its own pid
// namespace and has exec'd systemd (so its mounts are final).
func (h *Host) findLeader(ctx context.Context, nspawn int, exited <-chan struct{}) (int, error) {
	pid, notYet := 0, fmt.Errorf("no systemd in the guest after %s", BootTimeout)
	err := wait.Until(ctx, BootTimeout, 50*time.Millisecond, func(context.Context) (bool, error) {
		if pid = leaderOf(nspawn); pid > 0 {
			return true, nil
		}
		if exitedNow(exited) {
			return true, errors.New("systemd-nspawn exited before the guest's systemd started")
		}
		return false, notYet
	})
	if err != nil && ctx.Err() != nil {
		return 0, notYet
	}
	return pid, err
}

// waitRunning asks the guest's systemd until startup has finished, and returns running or degraded.
func (h *Host) waitRunning(ctx context.Context, exited <-chan struct{}) (string, error) {
	state, last := "", ""
	notRunning := func() error { return fmt.Errorf("not running after %s (last state %q)", BootTimeout, last) }
	err := wait.Until(ctx, BootTimeout, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		// is-system-running exits non-zero for every state but running; its output is what counts.
		out, err := h.exec(ctx, false, nil, []string{"systemctl", "is-system-running", "--wait"})
		state = strings.TrimSpace(out)
		if i := strings.LastIndexByte(state, '\n'); i >= 0 {
			state = strings.TrimSpace(state[i+1:])
		}
		switch state {
		case "running", "degraded":
			return true, nil
		case "maintenance", "stopping":
			return true, fmt.Errorf("system state %q", state)
		}
		last = state
		if err != nil && state == "" {
			last = err.Error()
		}
		if exitedNow(exited) {
			return true, fmt.Errorf("systemd-nspawn exited while booting (last state %q)", last)
		}
		return false, notRunning()
	})
	if err != nil && ctx.Err() != nil {
		return "", notRunning()
	}
	return state, err
}

// exitedNow says whether exited is closed.
func exitedNow(exited <-chan struct{}) bool {
	select {
	case <-exited:
		return true
	default:
		return false
	}
}

// PID is the pid, on the VM, of the guest's systemd (it changes with Reboot).
func (h *Host) PID() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.pid
}

// Run runs argv inside the guest (all its namespaces but the cgroup one, root directory /, a clean
// environment with a standard PATH) and returns its combined output; the error carries the output's tail.
func (h *Host) Run(ctx context.Context, argv ...string) (string, error) {
	return h.RunInput(ctx, nil, argv...)
}

// RunInput is Run with stdin.
func (h *Host) RunInput(ctx context.Context, stdin io.Reader, argv ...string) (string, error) {
	h.mu.Lock()
	scoped := h.up
	h.mu.Unlock()
	return h.exec(ctx, scoped, stdin, argv)
}

// exec runs argv in the guest through nsenter, in all of the guest's namespaces (the cgroup one too, so that
// /proc/self/cgroup matches the guest's /sys/fs/cgroup). nsenter would leave the process in its caller's
// cgroup on the VM, outside of the guest's tree, where whatever looks at its own cgroup fails
// (systemd-nspawn: "Failed to determine supported controllers"; LXC; and with nsdelegate, systemd could not
// even move it). So nsenter starts (clone3 CLONE_INTO_CGROUP) in a leaf cgroup of the guest's tree,
// payload/berth-nsenter, and, once the guest is up (scoped), the command runs through `systemd-run --scope`:
// the guest's systemd moves it into a transient scope unit of its own, as a login session would be; it keeps
// its stdin, output, environment and exit status. The wait for the boot runs unscoped.
//
// It does not use run.Cmd, which has no way to start a process in a given cgroup; it follows run.Cmd's rules
// (argv only, run.DefaultTimeout unless ctx ends sooner, *run.Error with the output's tail).
func (h *Host) exec(ctx context.Context, scoped bool, stdin io.Reader, argv []string) (string, error) {
	if len(argv) == 0 {
		return "", errors.New("testhost: empty command")
	}
	pid := h.PID()
	if pid == 0 {
		return "", fmt.Errorf("testhost %s: not running", h.Name)
	}
	full := []string{"nsenter", "-t", strconv.Itoa(pid), "-m", "-u", "-i", "-n", "-p", "-C", "--",
		"/usr/bin/env", "-i", "PATH=" + guestPath, "HOME=/root", "LANG=C.UTF-8", "TERM=dumb",
		"SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}
	if scoped {
		full = append(full, "systemd-run", "--scope", "--quiet", "--collect", "--")
	}
	full = append(full, argv...)
	leaf, err := h.cg.leaf()
	if err != nil {
		return "", fmt.Errorf("testhost %s: %w", h.Name, err)
	}
	defer leaf.Close()

	ctx, cancel := context.WithTimeout(ctx, run.DefaultTimeout)
	defer cancel()
	var out run.SyncBuffer
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	cmd.Stdin = stdin
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(leaf.Fd())}
	err = cmd.Run()
	s := out.String()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return s, fmt.Errorf("testhost %s: %w", h.Name, &run.Error{Argv: argv, Err: err, Output: tail(s, 10)})
	}
	return s, nil
}

// CopyIn copies the VM's file src to the guest path dst, keeping its mode. It writes through an os.Root on
// h.Dir (a symlink in the guest cannot send the write outside of it) into a temporary file renamed over dst,
// so a symlink at dst is replaced, never followed. Missing parent directories are made (0755).
func (h *Host) CopyIn(src, dst string) error {
	if !filepath.IsAbs(dst) {
		return fmt.Errorf("testhost: copy to %q: want an absolute guest path", dst)
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("testhost: copy %s: not a regular file", src)
	}
	r, err := os.OpenRoot(h.Dir)
	if err != nil {
		return err
	}
	defer r.Close()
	rel := strings.TrimPrefix(filepath.Clean(dst), "/")
	if rel == "" {
		return fmt.Errorf("testhost: copy to %q: not a file path", dst)
	}
	if err := r.MkdirAll(filepath.Dir(rel), 0o755); err != nil {
		return err
	}
	mode := fi.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)
	return fsx.ReplaceIn(r, rel, in, mode)
}

// Reboot powers the guest off cleanly and boots the same rootfs again, waiting for running/degraded. (A
// reboot from inside would only make systemd-nspawn exit with status 133: nothing restarts it on the VM.)
func (h *Host) Reboot(ctx context.Context) error {
	h.mu.Lock()
	stopped := h.stopped
	h.mu.Unlock()
	if stopped {
		return fmt.Errorf("testhost %s: reboot: stopped", h.Name)
	}
	if err := h.shutdown(ctx); err != nil {
		return fmt.Errorf("testhost %s: reboot: %w", h.Name, err)
	}
	return h.boot(ctx)
}

// Stop powers the guest off (cleanly if it can within StopTimeout, else by killing it), checks that no
// process and no mount of it remain, and removes its temporary directory. It is safe to call twice.
func (h *Host) Stop(ctx context.Context) error {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return nil
	}
	h.stopped = true
	h.mu.Unlock()

	var errs []error
	if err := h.shutdown(ctx); err != nil {
		errs = append(errs, err)
	}
	if left := h.Leftovers(); len(left) > 0 {
		errs = append(errs, fmt.Errorf("processes left after poweroff: %s", strings.Join(left, ", ")))
		h.killAll()
		if left := h.waitNoLeftovers(10 * time.Second); len(left) > 0 {
			errs = append(errs, fmt.Errorf("processes survive SIGKILL: %s", strings.Join(left, ", ")))
		}
	}
	if h.cg != nil {
		if err := h.cg.remove(); err != nil {
			errs = append(errs, err)
		}
	}
	mounts, err := fsx.MountsBelow(h.tmp)
	if err != nil {
		errs = append(errs, err)
	}
	if len(mounts) > 0 {
		errs = append(errs, fmt.Errorf("mounts left below %s: %s", h.tmp, strings.Join(mounts, ", ")))
		unmountAll(mounts)
		if mounts, _ = fsx.MountsBelow(h.tmp); len(mounts) > 0 {
			errs = append(errs, fmt.Errorf("cannot unmount %s", strings.Join(mounts, ", ")))
		}
	}
	if h.logf != nil {
		h.logf.Close()
	}
	// Never remove through a mount (it could be a bind of the VM's own files) or from under a process.
	if len(mounts) == 0 && len(h.Leftovers()) == 0 && h.tmp != "" {
		if err := os.RemoveAll(h.tmp); err != nil {
			errs = append(errs, err)
		}
	} else if h.tmp != "" {
		errs = append(errs, fmt.Errorf("kept %s", h.tmp))
	}
	h.mu.Lock()
	for _, f := range h.nsPins {
		f.Close()
	}
	h.nsPins, h.pidNS = nil, nil
	h.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("testhost %s: stop: %w", h.Name, err)
	}
	return nil
}

// shutdown powers the guest off and waits for systemd-nspawn to exit: SIGRTMIN+4 (systemd's poweroff
// request) to the guest's systemd, then after StopTimeout SIGKILL to everything in the guest's cgroup and to
// systemd-nspawn.
func (h *Host) shutdown(ctx context.Context) error {
	h.mu.Lock()
	cmd, exited, pid := h.cmd, h.exited, h.pid
	h.up = false
	h.mu.Unlock()
	if cmd == nil {
		return nil
	}
	var err error
	select {
	case <-exited:
	default:
		start := time.Now()
		if pid > 0 {
			syscall.Kill(pid, sigRTMIN+4)
		} else {
			cmd.Process.Signal(syscall.SIGTERM) // systemd-nspawn asks the guest to halt
		}
		t := time.NewTimer(StopTimeout)
		defer t.Stop()
		select {
		case <-exited:
			fmt.Fprintf(h.logf, "=== powered off in %s\n", time.Since(start).Round(time.Millisecond))
		case <-t.C:
			err = fmt.Errorf("no clean poweroff within %s, killed it%s", StopTimeout, h.logTail())
		case <-ctx.Done():
			err = fmt.Errorf("poweroff: %w, killed it", ctx.Err())
		}
		if err != nil {
			h.killAll()
			cmd.Process.Kill()
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				return fmt.Errorf("%w; systemd-nspawn (pid %d) does not exit", err, cmd.Process.Pid)
			}
		}
	}
	h.mu.Lock()
	h.cmd, h.pid = nil, 0
	h.mu.Unlock()
	if left := h.waitNoLeftovers(5 * time.Second); len(left) > 0 && err == nil {
		err = fmt.Errorf("processes left after poweroff: %s", strings.Join(left, ", "))
	}
	if h.cg != nil {
		h.cg.clean()
	}
	return err
}

// sigRTMIN is the kernel's SIGRTMIN (glibc reserves 32 and 33 for itself; systemd counts from the kernel's).
const sigRTMIN = syscall.Signal(34)

func (h *Host) killAll() {
	if h.cg != nil {
		h.cg.kill()
	}
	for _, p := range h.leftoverPIDs() {
		syscall.Kill(p.pid, syscall.SIGKILL)
	}
}

func (h *Host) waitNoLeftovers(d time.Duration) []string {
	var left []string
	wait.Until(context.Background(), d, 100*time.Millisecond, func(context.Context) (bool, error) {
		left = h.Leftovers()
		return len(left) == 0, nil
	})
	return left
}

// logTail is the end of the boot log, as a suffix for an error.
func (h *Host) logTail() string {
	b, err := os.ReadFile(h.Log)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return ""
	}
	return "\n--- end of " + h.Log + " ---\n" + tail(string(b), 30)
}

// LogTail returns the last n lines of the boot log ("" once Stop has removed it).
func (h *Host) LogTail(n int) string {
	b, _ := os.ReadFile(h.Log)
	return tail(string(b), n)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cleanEnv drops what would make systemd-nspawn talk to a service manager of the VM's test runner.
func cleanEnv(env []string) []string {
	var out []string
	for _, e := range env {
		k, _, _ := strings.Cut(e, "=")
		switch k {
		case "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY":
			continue
		}
		out = append(out, e)
	}
	return out
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// writeReplace writes data to rel inside r through a temporary file renamed over it.
func writeReplace(r *os.Root, rel string, data []byte, mode os.FileMode) error {
	return fsx.ReplaceIn(r, rel, bytes.NewReader(data), mode)
}

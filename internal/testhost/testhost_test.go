package testhost

import (
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"berth/internal/fsx"
	"berth/internal/testutil"
)

func TestOptionsDefaults(t *testing.T) {
	t.Setenv("BERTH_TEST_CACHE", "")
	o := Options{}.withDefaults()
	if o.Name != DefaultName || o.CacheDir != testutil.CacheDir() {
		t.Fatalf("defaults: %+v", o)
	}
	t.Setenv("BERTH_TEST_CACHE", "/tmp/x")
	if o := (Options{}).withDefaults(); o.CacheDir != "/tmp/x" {
		t.Fatalf("BERTH_TEST_CACHE ignored: %+v", o)
	}
	if o := (Options{CacheDir: "/c", Name: "n"}).withDefaults(); o.CacheDir != "/c" || o.Name != "n" {
		t.Fatalf("explicit options overridden: %+v", o)
	}
}

func TestSpecKey(t *testing.T) {
	a, err := Spec(Options{})
	if err != nil {
		t.Skip(err)
	}
	b, _ := Spec(Options{Packages: []string{"busybox-static"}})
	c, _ := Spec(Options{Name: "other", Binds: []string{"/x"}})
	if a.Key() == b.Key() {
		t.Error("extra packages must change the cache key")
	}
	if a.Key() != c.Key() {
		t.Error("name and binds must not change the cache key")
	}
}

func TestNameValidation(t *testing.T) {
	for _, bad := range []string{"-x", "A", "a_b", "a/b", strings.Repeat("a", 49)} {
		if _, err := Start(context.Background(), Options{Name: bad}); err == nil || !strings.Contains(err.Error(), "name") {
			t.Errorf("name %q: want a name error, got %v", bad, err)
		}
	}
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	sum, err := fsx.FileSHA256(path)
	fi, serr := os.Stat(path)
	if err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	return sum + " " + fi.ModTime().String()
}

// TestHost boots one test host and runs every check on it, one subtest each, then stops it and checks that
// nothing of it remains.
func TestHost(t *testing.T) {
	Require(t)
	ctx := context.Background()
	start := time.Now()
	tarball, err := Tarball(ctx, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rootfs tarball %s ready in %s", tarball, time.Since(start).Round(time.Millisecond))
	sumBefore := fileSum(t, tarball)

	const name = "berth-th-test"
	h := New(t, Options{Name: name, ReadOnlyBinds: []string{tarball + ":/mnt/rootfs.tar"}})
	if h.Tarball != tarball {
		t.Fatalf("host unpacked %s, want the cached %s", h.Tarball, tarball)
	}
	if h.Degraded != nil {
		t.Logf("booted degraded; failed units: %v", h.Degraded)
	}

	t.Run("state", func(t *testing.T) {
		out, _ := h.Run(ctx, "systemctl", "is-system-running")
		if s := strings.TrimSpace(out); s != "running" && s != "degraded" {
			t.Fatalf("is-system-running: %q", s)
		} else {
			t.Logf("is-system-running: %s", s)
		}
		if out, err := h.Run(ctx, "cat", "/proc/1/comm"); err != nil || strings.TrimSpace(out) != "systemd" {
			t.Fatalf("pid 1 in the guest: %q, %v", out, err)
		}
		if out, err := h.Run(ctx, "stat", "-f", "-c", "%T", "/sys/fs/cgroup"); err != nil || strings.TrimSpace(out) != "cgroup2fs" {
			t.Errorf("guest cgroup hierarchy: %q, %v (want cgroup2fs)", out, err)
		}
	})

	t.Run("hostname", func(t *testing.T) {
		out, err := h.Run(ctx, "hostname")
		if err != nil || strings.TrimSpace(out) != name {
			t.Fatalf("hostname: %q, %v", out, err)
		}
	})

	t.Run("network", func(t *testing.T) {
		out, err := h.Run(ctx, "ip", "-brief", "link")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(l); len(f) > 0 && f[0] != "lo" {
				t.Errorf("private network namespace has %q besides lo", f[0])
			}
		}
	})

	t.Run("dbus", func(t *testing.T) {
		out, err := h.Run(ctx, "busctl", "list", "--no-pager")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "org.freedesktop.DBus") || !strings.Contains(out, "org.freedesktop.systemd1") {
			t.Fatalf("busctl list lacks the bus or systemd:\n%s", out)
		}
		if _, err := h.Run(ctx, "busctl", "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
			"org.freedesktop.DBus.Peer", "Ping"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("run-errors", func(t *testing.T) {
		_, err := h.Run(ctx, "sh", "-c", "echo out-marker; echo err-marker >&2; exit 3")
		if err == nil || !strings.Contains(err.Error(), "err-marker") || !strings.Contains(err.Error(), "out-marker") {
			t.Fatalf("error lacks the output's tail: %v", err)
		}
		out, err := h.RunInput(ctx, strings.NewReader("via stdin\n"), "cat")
		if err != nil || out != "via stdin\n" {
			t.Fatalf("RunInput: %q, %v", out, err)
		}
		out, err = h.Run(ctx, "sh", "-c", `echo "$PATH $HOME $GOFLAGS"`)
		if err != nil || strings.TrimSpace(out) != guestPath+" /root" {
			t.Fatalf("guest environment: %q, %v", out, err)
		}
	})

	t.Run("copyin", func(t *testing.T) {
		src := filepath.Join(t.TempDir(), "tool")
		if err := os.WriteFile(src, []byte("#!/bin/sh\necho copied-in\n"), 0o750); err != nil {
			t.Fatal(err)
		}
		os.Chmod(src, 0o750)
		if err := h.CopyIn(src, "/usr/local/bin/berth-tool"); err != nil {
			t.Fatal(err)
		}
		if out, err := h.Run(ctx, "berth-tool"); err != nil || strings.TrimSpace(out) != "copied-in" {
			t.Fatalf("run copied file: %q, %v", out, err)
		}
		if out, err := h.Run(ctx, "stat", "-c", "%a %U", "/usr/local/bin/berth-tool"); err != nil || strings.TrimSpace(out) != "750 root" {
			t.Fatalf("mode of copied file: %q, %v", out, err)
		}

		// A symlink at the destination is replaced, never followed out of the guest.
		victim := filepath.Join(t.TempDir(), "victim")
		os.WriteFile(victim, []byte("untouched"), 0o644)
		if _, err := h.Run(ctx, "ln", "-sf", victim, "/opt/link"); err != nil {
			t.Fatal(err)
		}
		if err := h.CopyIn(src, "/opt/link"); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(victim); string(b) != "untouched" {
			t.Fatalf("CopyIn followed a guest symlink onto the VM: %q", b)
		}
		if out, _ := h.Run(ctx, "cat", "/opt/link"); !strings.Contains(out, "copied-in") {
			t.Fatalf("/opt/link: %q", out)
		}
		// A symlinked parent pointing out of the rootfs is refused.
		escape := filepath.Join(t.TempDir(), "escape")
		os.Mkdir(escape, 0o755)
		if _, err := h.Run(ctx, "ln", "-s", "../../../../../../../../"+strings.TrimPrefix(escape, "/"), "/opt/up"); err != nil {
			t.Fatal(err)
		}
		err := h.CopyIn(src, "/opt/up/file")
		if _, serr := os.Stat(filepath.Join(escape, "file")); serr == nil {
			t.Fatal("CopyIn wrote through a guest symlink onto the VM")
		}
		t.Logf("copy through an escaping symlink: %v", err)
	})

	t.Run("nested-nspawn", func(t *testing.T) {
		bb := "/usr/bin/busybox"
		if !isStatic(bb) {
			t.Skipf("no static %s on the VM (Debian's busybox-static) to make a tiny rootfs from", bb)
		}
		if err := h.CopyIn(bb, "/srv/tiny/bin/busybox"); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Run(ctx, "mkdir", "-p", "/srv/tiny/usr", "/srv/tiny/etc", "/srv/tiny/proc", "/srv/tiny/sys", "/srv/tiny/dev"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		out, err := h.Run(ctx, "systemd-nspawn", "--quiet", "--pipe", "--register=yes", "--machine=tiny", "--directory=/srv/tiny",
			"--", "/bin/busybox", "sh", "-c", "echo nested-$((6*7)) as pid $$")
		if err != nil || strings.TrimSpace(out) != "nested-42 as pid 1" {
			t.Fatalf("nested systemd-nspawn: %q, %v", out, err)
		}
		t.Logf("nested systemd-nspawn (registered with machined) ran busybox in %s: %q", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	})

	t.Run("nested-machinectl", func(t *testing.T) {
		start := time.Now()
		if _, err := h.Run(ctx, "mkdir", "-p", "/var/lib/machines/nested"); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Run(ctx, "tar", "--extract", "--numeric-owner", "--file=/mnt/rootfs.tar", "--directory=/var/lib/machines/nested"); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(h.Dir, "var/lib/machines/nested/etc/hostname"), []byte("nested\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Run(ctx, "machinectl", "start", "nested"); err != nil {
			t.Fatal(err)
		}
		defer h.Run(ctx, "machinectl", "terminate", "nested")
		state, err := waitState(ctx, h, 90*time.Second, "systemctl", "-M", "nested", "is-system-running", "--wait")
		if err != nil {
			out, _ := h.Run(ctx, "journalctl", "-u", "systemd-nspawn@nested", "--no-pager", "-n", "30")
			t.Fatalf("nested machine: %v\n%s", err, out)
		}
		t.Logf("machinectl start nested: %s after %s", state, time.Since(start).Round(time.Millisecond))
		out, err := h.Run(ctx, "systemd-run", "-M", "nested", "--wait", "--pipe", "--quiet", "hostname")
		if err != nil || strings.TrimSpace(out) != "nested" {
			t.Fatalf("systemd-run in the nested machine: %q, %v", out, err)
		}
		if out, err := h.Run(ctx, "machinectl", "list", "--no-legend", "--no-pager"); err != nil || !strings.Contains(out, "nested") {
			t.Fatalf("machinectl list: %q, %v", out, err)
		}
		if _, err := h.Run(ctx, "machinectl", "poweroff", "nested"); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			out, _ := h.Run(ctx, "machinectl", "list", "--no-legend", "--no-pager")
			if !strings.Contains(out, "nested") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("nested machine still listed after poweroff: %s", out)
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("nested machine started, used and powered off in %s", time.Since(start).Round(time.Millisecond))
	})

	t.Run("reboot", func(t *testing.T) {
		before := h.PID()
		start := time.Now()
		if err := h.Reboot(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("reboot: down and up again in %s (boot %s), degraded: %v", time.Since(start).Round(time.Millisecond),
			h.BootTime.Round(time.Millisecond), h.Degraded)
		if h.PID() == before || h.PID() == 0 {
			t.Fatalf("pid of the guest's systemd: %d before, %d after", before, h.PID())
		}
		out, _ := h.Run(ctx, "systemctl", "is-system-running")
		if s := strings.TrimSpace(out); s != "running" && s != "degraded" {
			t.Fatalf("after reboot: %q", s)
		}
		if out, err := h.Run(ctx, "berth-tool"); err != nil || strings.TrimSpace(out) != "copied-in" {
			t.Fatalf("rootfs not kept across the reboot: %q, %v", out, err)
		}
		// The first boot's pid namespace is gone, but its inode number must not go to a namespace made now (another
		// test host's, in CI): Stop would take that host's processes for leftovers and kill them.
		if len(h.nsPins) != len(h.pidNS) || len(h.pidNS) != 2 {
			t.Fatalf("%d pid namespaces, %d held open, want 2 and 2", len(h.pidNS), len(h.nsPins))
		}
		var strangers []*exec.Cmd
		for range 20 {
			c := exec.Command("unshare", "--pid", "--fork", "sleep", "60")
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			strangers = append(strangers, c)
		}
		time.Sleep(300 * time.Millisecond)
		left := h.leftoverPIDs()
		for _, c := range strangers {
			c.Process.Kill()
			c.Wait()
		}
		for _, l := range left {
			if ppid, _, _, _ := procStatus(l.pid); slices.ContainsFunc(strangers, func(c *exec.Cmd) bool { return c.Process.Pid == l.pid || c.Process.Pid == ppid }) {
				t.Fatalf("a process in a pid namespace made after the reboot counts as the host's: %v", l)
			}
		}
	})

	t.Run("stop", func(t *testing.T) {
		dir, tmp, cg := h.Dir, h.tmp, h.cg
		start := time.Now()
		if err := h.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("stop: %s", time.Since(start).Round(time.Millisecond))
		if left := h.Leftovers(); len(left) > 0 {
			t.Errorf("processes left: %v", left)
		}
		for _, pid := range pids() {
			for _, l := range []string{"root", "cwd"} {
				if p, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), l)); strings.HasPrefix(p, tmp+"/") || p == tmp {
					t.Errorf("pid %d has its %s at %s", pid, l, p)
				}
			}
		}
		if m, err := fsx.MountsBelow(tmp); err != nil || len(m) > 0 {
			t.Errorf("mounts left below %s: %v %v", tmp, m, err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("rootfs %s still there: %v", dir, err)
		}
		for _, d := range []string{cg.v2, cg.v1} {
			if _, err := os.Stat(d); d != "" && !os.IsNotExist(err) {
				t.Errorf("cgroup %s still there: %v", d, err)
			}
		}
		if _, err := h.Run(ctx, "true"); err == nil {
			t.Error("Run works after Stop")
		}
		if err := h.Stop(ctx); err != nil {
			t.Errorf("second Stop: %v", err)
		}
	})

	if sum := fileSum(t, tarball); sum != sumBefore {
		t.Errorf("cached tarball changed: %s, was %s", sum, sumBefore)
	}
}

// waitState runs a systemctl is-system-running style command until it prints running or degraded.
func waitState(ctx context.Context, h *Host, d time.Duration, argv ...string) (string, error) {
	deadline := time.Now().Add(d)
	for {
		cctx, cancel := context.WithDeadline(ctx, deadline)
		out, err := h.Run(cctx, argv...)
		cancel()
		if s := strings.TrimSpace(out); s == "running" || s == "degraded" {
			return s, nil
		}
		if time.Now().After(deadline) {
			return "", err
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func isStatic(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// TestBootFailure checks that a boot that cannot work fails with the boot log's tail and leaves nothing.
func TestBootFailure(t *testing.T) {
	Require(t)
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "berth-testhost-*"))
	missing := filepath.Join(t.TempDir(), "no-such-dir")
	h, err := Start(context.Background(), Options{Name: "berth-th-fail", Binds: []string{missing + ":/mnt/x"}})
	if err == nil {
		h.Stop(context.Background())
		t.Fatal("boot with a missing bind source succeeded")
	}
	t.Logf("expected error: %v", err)
	if !strings.Contains(err.Error(), "boot.log") || !strings.Contains(err.Error(), "no-such-dir") {
		t.Errorf("error lacks the boot log's tail: %v", err)
	}
	after, _ := filepath.Glob(filepath.Join(os.TempDir(), "berth-testhost-*"))
	if len(after) > len(before) {
		t.Errorf("temporary directories left: %v, before %v", after, before)
	}
}

// TestConcurrentHosts boots three hosts at the same time: each gets its own cgroup and (by default) its own network
// namespace, so two of them serve on the same loopback port at once; HostNetwork shares the VM's network
// namespace instead.
func TestConcurrentHosts(t *testing.T) {
	Require(t)
	ctx := context.Background()
	opts := []Options{{Name: "berth-th-one"}, {Name: "berth-th-two"}, {Name: "berth-th-hostnet", HostNetwork: true}}
	hosts := make([]*Host, len(opts))
	errs := make([]error, len(opts))
	var wg sync.WaitGroup
	start := time.Now()
	for i, o := range opts {
		wg.Go(func() { hosts[i], errs[i] = Start(ctx, o) })
	}
	wg.Wait()
	for i, h := range hosts {
		if h != nil {
			t.Cleanup(func() {
				if err := h.Stop(ctx); err != nil {
					t.Error(err)
				}
			})
		}
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
	}
	t.Logf("%d hosts up at once in %s", len(hosts), time.Since(start).Round(time.Millisecond))

	var vm syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/net", &vm); err != nil {
		t.Fatal(err)
	}
	for i, h := range hosts {
		out, err := h.Run(ctx, "stat", "-L", "-c", "%i", "/proc/self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		if shared := strings.TrimSpace(out) == strconv.FormatUint(vm.Ino, 10); shared != opts[i].HostNetwork {
			t.Fatalf("%s shares the VM's network namespace: %v, want %v", h.Name, shared, opts[i].HostNetwork)
		}
	}

	bb := "/usr/bin/busybox"
	if !isStatic(bb) {
		t.Skipf("no static %s on the VM to serve with", bb)
	}
	for _, h := range hosts[:2] {
		if err := h.CopyIn(bb, "/usr/local/bin/busybox"); err != nil {
			t.Fatal(err)
		}
		if _, err := h.RunInput(ctx, strings.NewReader(h.Name+"\n"), "sh", "-c", "mkdir -p /srv/www && cat > /srv/www/index.html"); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Run(ctx, "systemd-run", "--unit=www", "busybox", "httpd", "-f", "-p", "127.0.0.1:18080", "-h", "/srv/www"); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range hosts[:2] {
		var got string
		var err error
		for i := 0; i < 50; i++ {
			if got, err = h.Run(ctx, "busybox", "wget", "-q", "-O", "-", "http://127.0.0.1:18080/"); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if strings.TrimSpace(got) != h.Name {
			t.Fatalf("loopback :18080 in %s answered %q, %v", h.Name, got, err)
		}
	}
}

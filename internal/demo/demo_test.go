package demo

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"berth/images"
	"berth/internal/config"
	"berth/internal/fsx"
	"berth/internal/hostnet"
	"berth/internal/testutil"
	"berth/internal/testutil/testbase"
	"berth/internal/upgraded"
)

// demoEnv is one test demo's configuration: its own LXC path, bridge, subnet, loopback ports and hooks.
func demoEnv(t *testing.T, lxcPath, backend string) map[string]string {
	var subnet netip.Prefix
	for {
		subnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(200 + rand.IntN(50)), byte(rand.IntN(250)), 0}), 24)
		if hostnet.CheckOverlap(subnet, "") == nil {
			break
		}
	}
	return map[string]string{
		"BERTH_PATHS_LXC": lxcPath, "BERTH_DEMO_IMAGE": "demo-web", "BERTH_DEMO_BACKEND": backend,
		"BERTH_DEMO_BRIDGE": fmt.Sprintf("bdt%04x", rand.IntN(1<<16)), "BERTH_DEMO_SUBNET": subnet.String(),
		"BERTH_DEMO_HTTP": proxyFreeAddr(t), "BERTH_DEMO_HTTPS": proxyFreeAddr(t), "BERTH_DEMO_HEALTHPATH": "/health",
	}
}

func lxcDir(t *testing.T) string {
	dir, err := os.MkdirTemp("/var/lib", "berth-test-lxc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func openTest(t *testing.T, c *config.Config) *Demo {
	d, err := Open(c, images.FS)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// oneServing checks that exactly one container runs, that it is the recorded active one, healthy, and the
// one the proxy routes to.
func oneServing(t *testing.T, d *Demo) string {
	t.Helper()
	st, err := d.load()
	if err != nil {
		t.Fatal(err)
	}
	var running []string
	for _, n := range d.cfg.Containers {
		if d.running(n) {
			running = append(running, n)
		}
	}
	routed, err := d.proxy.Active(context.Background())
	if len(running) != 1 || running[0] != st.Active || err != nil || routed != st.Active || d.healthy(context.Background(), st.Active) != nil {
		t.Fatalf("want exactly one healthy active container: running %v, state %q, proxy %q (%v)", running, st.Active, routed, err)
	}
	return st.Active
}

func attach(t *testing.T, d *Demo, name string, argv ...string) string {
	t.Helper()
	out, err := exec.Command("lxc-attach", append([]string{"-P", d.lxcPath, "-n", name, "--"}, argv...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("lxc-attach %s %v: %v\n%s", name, argv, err, out)
	}
	return string(out)
}

// TestDemoOnLXC runs the demo for real: LXC containers from a real base and the demo-web image, on their own
// bridge and subnet, HAProxy on loopback high ports, with a request loop through the proxy.
func TestDemoOnLXC(t *testing.T) {
	testutil.Require(t, "lxc-start", "haproxy", "nft", "debootstrap", "systemd-nspawn", "mkfs.btrfs")
	ctx := context.Background()
	env := demoEnv(t, lxcDir(t), "overlayfs")
	alerts := filepath.Join(t.TempDir(), "alerts")
	env["BERTH_DEMO_ALERTCOMMAND"] = "/bin/sh -c cat>>" + alerts
	c := testbase.Config(t, env)
	testbase.Build(t, c)
	d := openTest(t, c)
	t.Cleanup(func() {
		if err := d.Remove(context.Background()); err != nil {
			t.Errorf("remove: %v", err)
		}
	})
	httpURL := "http://" + c.Demo.HTTP

	t.Run("build, twice", func(t *testing.T) {
		start := time.Now()
		if err := d.Build(ctx, false); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		gens, _ := d.generations()
		sum, _ := fsx.TreeSum(d.genDir(gens[0]))
		start = time.Now()
		if err := d.Build(ctx, false); err != nil {
			t.Fatal(err)
		}
		again, _ := d.generations()
		sum2, _ := fsx.TreeSum(d.genDir(gens[0]))
		if !slices.Equal(gens, again) || sum != sum2 {
			t.Fatalf("a second build changed the pristine state: %v %s → %v %s", gens, sum, again, sum2)
		}
		active := oneServing(t, d)
		expectBody(t, httpURL+"/", "berth demo "+active+"\n")
		expectBody(t, "https://"+c.Demo.HTTPS+"/", "berth demo "+active+"\n")
		du, _ := exec.Command("du", "-sh", d.genDir(gens[0])).Output()
		t.Logf("built in %s (backend %s, pristine %s), again in %s with nothing changed", took.Round(time.Millisecond),
			d.Backend, strings.Fields(string(du))[0], time.Since(start).Round(time.Millisecond))
	})

	berth := testutil.BerthBinary(t)
	cmdEnv := os.Environ()
	for k, v := range env {
		cmdEnv = append(cmdEnv, k+"="+v)
	}
	for k, v := range map[string]string{"BERTH_PATHS_STATE": c.Paths.State, "BERTH_PATHS_MACHINES": c.Paths.Machines, "BERTH_PATHS_SRV": c.Paths.Srv, "BERTH_CONFIG": "/nonexistent"} {
		cmdEnv = append(cmdEnv, k+"="+v)
	}
	berthCmd := func(args ...string) *exec.Cmd {
		cmd := exec.Command(berth, args...)
		cmd.Env = cmdEnv
		return cmd
	}

	t.Run("ACME from Pebble: issued, unchanged when built again, renewed under load", func(t *testing.T) {
		acmeFromPebble(t, c, berthCmd)
		// Back to the trial's configuration (no domain): its certificate, of another name, is remade
		// self-signed.
		if err := d.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if cert := servedCert(t, c.Demo.HTTPS, "demo.localhost"); cert.Issuer.String() != cert.Subject.String() {
			t.Fatalf("back without a domain, the proxy serves a certificate from %s, not a self-signed one", cert.Issuer)
		}
		expectBody(t, httpURL+"/", "berth demo "+oneServing(t, d)+"\n")
	})

	t.Run("both containers stopped: the unavailable page", func(t *testing.T) {
		for _, n := range d.cfg.Containers {
			if err := d.stop(n); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		code, body, err := proxyGet(httpURL + "/")
		took := time.Since(start)
		want := nextSwitch(time.Now(), c.Demo.SwitchEvery).Format("15:04 -0700")
		if err != nil || code != 503 || !strings.Contains(body, "The demo is being reset or is unavailable") || !strings.Contains(body, "next switch: "+want+".") {
			t.Fatalf("both containers stopped: %d %q %v; want 503 and the next switch at %s", code, body, err, want)
		}
		t.Logf("both containers stopped: %d in %s:\n%s", code, took.Round(time.Millisecond), body)
		if err := d.Start(ctx); err != nil {
			t.Fatal(err)
		}
		expectBody(t, httpURL+"/", "berth demo "+oneServing(t, d)+"\n")
	})

	t.Run("a changed demo password takes the container out of service", func(t *testing.T) {
		sick := oneServing(t, d)
		attach(t, d, sick, "sh", "-c", "echo 'demo:{PLAIN}changed-by-a-visitor' > /etc/nginx/demo.htpasswd")
		err := d.healthy(ctx, sick)
		if err == nil || !strings.Contains(err.Error(), "401") {
			t.Fatalf("%s with the demo password changed: health %v", sick, err)
		}
		// The next health check (demo:start, or a switch's or repair's first step) moves the demo away.
		if err := d.Start(ctx); err != nil {
			t.Fatal(err)
		}
		now := oneServing(t, d)
		if now == sick {
			t.Fatalf("%s still serves with a broken demo login", sick)
		}
		expectBody(t, httpURL+"/", "berth demo "+now+"\n")
		st, _ := d.load()
		if st.Dirty[sick] || d.running(sick) {
			t.Fatalf("%s is not reset after it was taken out of service: dirty %v, running %v", sick, st.Dirty[sick], d.running(sick))
		}
		t.Logf("%s: %v → %s serves, %s stopped and reset", sick, err, now, sick)
	})

	t.Run("20 switches under load", func(t *testing.T) {
		stop := proxyLoad(t, httpURL+"/", 20*time.Millisecond)
		first := oneServing(t, d)
		attach(t, d, first, "sh", "-c", "echo visitor > /var/www/html/visitor.txt")
		expectBody(t, httpURL+"/visitor.txt", "visitor\n")
		var sw, rs []time.Duration
		for i := range 20 {
			times, err := d.Switch(ctx)
			if err != nil {
				t.Fatalf("switch %d: %v", i+1, err)
			}
			sw, rs = append(sw, times.Switch), append(rs, times.Reset)
			now := oneServing(t, d)
			expectBody(t, httpURL+"/", "berth demo "+now+"\n")
			if i == 1 {
				if now != first {
					t.Fatalf("after two switches %s serves, not %s", now, first)
				}
				if code, _, _ := proxyGet(httpURL + "/visitor.txt"); code != 404 {
					t.Fatalf("the visitor's file survived %s's reset: %d", first, code)
				}
			}
		}
		served, failed := stop()
		if failed != 0 {
			t.Fatalf("%d of %d requests failed during 20 switches", failed, served+failed)
		}
		t.Logf("%s: 20 switches, %d requests, 0 failed; switch median %s (max %s), reset median %s (max %s)",
			d.Backend, served, median(sw), slices.Max(sw), median(rs), slices.Max(rs))
	})

	hooks := c.Demo.Hooks
	writeHook(t, hooks, "10-ok", "#!/bin/sh\nset -e\nlxc-attach -P \"$BERTH_LXC_PATH\" -n \"$1\" -- touch /root/hook10\n", 0o755)
	writeHook(t, hooks, "20-fail", "#!/bin/sh\necho about to fail\nexit 3\n", 0o755)
	writeHook(t, hooks, "30-ok", "#!/bin/sh\nset -e\n[ -z \"$BERTH_ROOTFS\" ]\nlxc-attach -P \"$BERTH_LXC_PATH\" -n \"$BERTH_CONTAINER\" -- touch /root/hook30\n", 0o755)

	t.Run("upgrade with hooks", func(t *testing.T) {
		stop := proxyLoad(t, httpURL+"/", 20*time.Millisecond)
		before, _ := d.generations()
		start := time.Now()
		if err := d.Upgrade(ctx); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		after, _ := d.generations()
		g := after[len(after)-1]
		if len(after) != len(before)+1 || !exists(filepath.Join(d.genDir(g), "root/hook10")) || !exists(filepath.Join(d.genDir(g), "root/hook30")) {
			t.Fatalf("generations %v → %v; new one without both hooks' marks", before, after)
		}
		h := upgraded.Hooks{Dir: hooks}
		arch, _ := h.Archived()
		quar, _ := h.Quarantined()
		if !slices.Equal(arch, []string{"10-ok", "30-ok"}) || !slices.Equal(quar, []string{"20-fail"}) {
			t.Fatalf("archived %v, quarantined %v", arch, quar)
		}
		logs, _ := filepath.Glob(filepath.Join(d.dir, "logs", "upgrade-*", "hooks", "*.log"))
		if len(logs) != 3 {
			t.Fatalf("hook logs: %v", logs)
		}
		// Both containers take the new pristine state at their next reset: their trees, each read just
		// after its reset, are identical.
		sums := map[string]string{}
		for range 2 {
			times, err := d.Switch(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st, _ := d.load(); st.Gen[times.From] != g {
				t.Fatalf("%s is on generation %s, not %s", times.From, st.Gen[times.From], g)
			}
			sums[times.From] = mergedSum(t, d, times.From)
		}
		if served, failed := stop(); failed != 0 {
			t.Fatalf("%d of %d requests failed during the upgrade", failed, served+failed)
		} else {
			t.Logf("upgrade in %s under load: %d requests, 0 failed; archived %v, quarantined %v; logs %d; generations %v; pristine of %s and %s: %v",
				took.Round(time.Second), served, arch, quar, len(logs), after, d.cfg.Containers[0], d.cfg.Containers[1], sums)
		}
		if sums[d.cfg.Containers[0]] != sums[d.cfg.Containers[1]] {
			t.Fatalf("the containers' pristine states differ: %v", sums)
		}
		if b, err := os.ReadFile(alerts); err != nil || !strings.Contains(string(b), "hooks failed: 20-fail") {
			t.Fatalf("[Demo] AlertCommand did not get the failed hook: %q %v", b, err)
		} else {
			t.Logf("[Demo] AlertCommand got: %s", strings.TrimSpace(string(b)))
		}
	})

	t.Run("two upgrades with nothing to upgrade keep the generation", func(t *testing.T) {
		before, _ := d.generations()
		for i := range 2 {
			start := time.Now()
			if err := d.Upgrade(ctx); err != nil {
				t.Fatal(err)
			}
			after, _ := d.generations()
			st, _ := d.load()
			if !slices.Equal(before, after) || !strings.HasPrefix(st.UpgradeNote, "unchanged: generation "+before[len(before)-1]) {
				t.Fatalf("upgrade %d with nothing to upgrade: generations %v → %v, recorded %q", i+1, before, after, st.UpgradeNote)
			}
			t.Logf("upgrade %d in %s: generations still %v; recorded %q", i+1, time.Since(start).Round(time.Second), after, st.UpgradeNote)
		}
		oneServing(t, d)
	})

	t.Run("an upgrade whose apt fails changes nothing", func(t *testing.T) {
		gens, _ := d.generations()
		g := d.genDir(gens[len(gens)-1])
		// Debian's own suites must answer (a third-party source that does not is skipped: TestDemoPayloadOnLXC).
		broken := filepath.Join(g, "etc/apt/sources.list")
		orig, err := os.ReadFile(broken)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(broken, append(orig, "deb http://127.0.0.1:9/debian bookworm main\n"...), 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(broken, orig, 0o644)
		sum, _ := fsx.TreeSum(g)
		err = d.Upgrade(ctx)
		after, _ := d.generations()
		sum2, _ := fsx.TreeSum(g)
		if err == nil || !strings.Contains(err.Error(), "apt") || !slices.Equal(gens, after) || sum != sum2 {
			t.Fatalf("upgrade with a failing apt: %v; generations %v → %v; pristine %s → %s", err, gens, after, sum, sum2)
		}
		t.Logf("failing apt: %v; generations still %v, pristine tree %s unchanged", err, after, sum[:12])
		oneServing(t, d)
	})

	t.Run("restoreCrash", func(t *testing.T) {
		stop := proxyLoad(t, httpURL+"/", 20*time.Millisecond)
		st, _ := d.load()
		idle := d.other(st.Active)
		breakInit := func() {
			// A deleted /sbin/init in the idle container: a whiteout in its upper layer.
			w := filepath.Join(d.ctDir(idle), "delta/usr/sbin")
			os.MkdirAll(w, 0o755)
			if err := syscall.Mknod(filepath.Join(w, "init"), syscall.S_IFCHR, 0); err != nil {
				t.Fatal(err)
			}
		}
		breakInit()
		var out strings.Builder
		if err := d.RestoreCrash(ctx, &out); err != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
		if !strings.Contains(out.String(), idle+": repaired from its pristine state") {
			t.Fatalf("report:\n%s", out.String())
		}
		t.Logf("init deleted in %s:\n%s", idle, out.String())
		if err := d.check(ctx, st, idle); err != nil {
			t.Fatalf("%s after the repair: %v", idle, err)
		}

		// The pristine state damaged as well: an older generation repairs it.
		gens, _ := d.generations()
		if err := os.Remove(filepath.Join(d.genDir(gens[len(gens)-1]), "usr/sbin/init")); err != nil {
			t.Fatal(err)
		}
		breakInit()
		out.Reset()
		if err := d.RestoreCrash(ctx, &out); err != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
		if !strings.Contains(out.String(), idle+": repaired from archived generation "+gens[len(gens)-2]) {
			t.Fatalf("report:\n%s", out.String())
		}
		t.Logf("init deleted in %s and in its pristine state:\n%s", idle, out.String())

		// Every generation damaged and a visitor's file in the serving container: the last resort is a
		// pristine state rebuilt from the base and the image, in which the visitor's file does not exist.
		active := oneServing(t, d)
		attach(t, d, active, "sh", "-c", "echo visitor > /var/www/html/last-resort.txt")
		st, _ = d.load()
		idle = d.other(st.Active)
		gens, _ = d.generations()
		for _, g := range gens {
			if err := os.Remove(filepath.Join(d.genDir(g), "usr/sbin/init")); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
		}
		breakInit()
		out.Reset()
		if err := d.RestoreCrash(ctx, &out); err != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
		now, _ := d.generations()
		reasons, _ := filepath.Glob(filepath.Join(d.store, "broken", "*.reason"))
		if !strings.Contains(out.String(), idle+": repaired from a pristine state rebuilt from the base and image demo-web") ||
			len(now) != 1 || slices.Contains(gens, now[0]) || exists(filepath.Join(d.genDir(now[0]), "var/www/html/last-resort.txt")) ||
			!exists(filepath.Join(d.genDir(now[0]), "usr/sbin/init")) || len(reasons) < len(gens) {
			t.Fatalf("last resort: generations %v → %v, reasons %v, report:\n%s", gens, now, reasons, out.String())
		}
		t.Logf("every generation damaged (%v), a visitor file in %s:\n%s", gens, active, out.String())
		oneServing(t, d)
		if _, err := d.Switch(ctx); err != nil {
			t.Fatal(err)
		}
		served, failed := stop()
		if failed != 0 {
			t.Fatalf("%d of %d requests failed during the repairs", failed, served+failed)
		}
		t.Logf("repairs and a switch onto the repaired container under load: %d requests, 0 failed", served)
	})

	t.Run("switch, upgrade and switch together: one after another, or the second switch skips its turn", func(t *testing.T) {
		type res struct {
			name       string
			out        string
			err        error
			start, end time.Time
		}
		ch := make(chan res)
		for _, target := range []string{"demo:switch", "demo:upgrade", "demo:switch"} {
			go func() {
				r := res{name: target, start: time.Now()}
				out, err := berthCmd(target).CombinedOutput()
				r.out, r.err, r.end = string(out), err, time.Now()
				ch <- r
			}()
			time.Sleep(300 * time.Millisecond)
		}
		// The upgrade waits for the first switch. The second switch waits too, then either finds the
		// upgrade holding the demo and skips its turn (exit 0, one line naming it), or took the lock first.
		queued, skipped := 0, 0
		for range 3 {
			r := <-ch
			t.Logf("%s from %s to %s:\n%s", r.name, r.start.Format("15:04:05.000"), r.end.Format("15:04:05.000"), r.out)
			if r.err != nil {
				t.Fatalf("%s: %v\n%s", r.name, r.err, r.out)
			}
			if strings.Contains(r.out, "switch skipped") || strings.Contains(r.out, "waiting for lock") && strings.Contains(r.out, "(demo ") {
				queued++
			}
			if strings.Contains(r.out, "waiting for lock") && strings.Contains(r.out, "(demo ") {
				i := strings.Index(r.out, "waiting for lock")
				t.Logf("%s: %s", r.name, strings.SplitN(r.out[i:], "\n", 2)[0])
			}
			if strings.Contains(r.out, "switch skipped") {
				if !strings.Contains(r.out, `job="demo upgrade"`) || strings.Count(r.out, "switch skipped") != 1 {
					t.Fatalf("a skipped switch must name the upgrade once:\n%s", r.out)
				}
				skipped++
			}
		}
		if queued != 2 || skipped > 1 {
			t.Fatalf("%d of 3 runs waited for the lock or skipped (want 2), %d skipped (want at most 1)", queued, skipped)
		}
		oneServing(t, d)
	})

	t.Run("SIGKILL during a switch, ten times", func(t *testing.T) {
		// A switch here takes about a second: the ten moments spread over it (the process starts in ~50ms).
		stop := proxyLoad(t, httpURL+"/", 20*time.Millisecond)
		for i := range 10 {
			delay := time.Duration(60+i*85) * time.Millisecond
			cmd := berthCmd("demo:switch")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(delay)
			cmd.Process.Kill()
			cmd.Wait()
			if out, err := berthCmd("demo:switch").CombinedOutput(); err != nil {
				t.Fatalf("switch after a SIGKILL at %s: %v\n%s", delay, err, out)
			}
			t.Logf("killed at %s, then a switch: %s serves", delay, oneServing(t, d))
		}
		served, failed := stop()
		if failed != 0 {
			t.Fatalf("%d of %d requests failed across the killed switches", failed, served+failed)
		}
		t.Logf("10 killed switches, each followed by a switch: %d requests, 0 failed", served)
	})

	t.Run("bad input changes nothing", func(t *testing.T) {
		// A hook that is not a regular file: the hooks are checked after the image and the subnet.
		if err := syscall.Mkfifo(filepath.Join(hooks, "40-fifo"), 0o644); err != nil {
			t.Fatal(err)
		}
		before := snapshot(t, d)
		for _, tc := range []struct{ key, value, want string }{
			{"BERTH_DEMO_IMAGE", "nosuchimage", "unknown image"},
			{"BERTH_DEMO_IMAGE", "mysql", "not a demo container image"},
			{"BERTH_DEMO_SUBNET", "127.0.0.0/24", "overlaps"},
			{"", "", "40-fifo is not a regular file"},
		} {
			// Image and subnet are checked before the hooks: the FIFO is there throughout.
			cmd := berthCmd("demo:build")
			if tc.key != "" {
				cmd.Env = append(cmd.Env, tc.key+"="+tc.value)
			}
			out, err := cmd.CombinedOutput()
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if err == nil || !strings.Contains(string(out), tc.want) || len(lines) > 2 {
				t.Fatalf("%s=%s: %v\n%s", tc.key, tc.value, err, out)
			}
			t.Logf("%s=%s: %v: %s", tc.key, tc.value, err, lines[len(lines)-1])
			if after := snapshot(t, d); after != before {
				t.Fatalf("%s=%s changed the demo:\n%s\n→\n%s", tc.key, tc.value, before, after)
			}
		}
		os.Remove(filepath.Join(hooks, "40-fifo"))
	})

	t.Run("backends side by side", func(t *testing.T) {
		if err := d.Destroy(ctx); err != nil {
			t.Fatal(err)
		}
		btrfs := lxcDir(t)
		img := filepath.Join(t.TempDir(), "btrfs.img")
		for _, argv := range [][]string{{"truncate", "-s", "4G", img}, {"mkfs.btrfs", "-q", img}, {"mount", "-o", "loop", img, btrfs}} {
			if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v\n%s", argv, err, out)
			}
		}
		t.Cleanup(func() { exec.Command("umount", btrfs).Run() })
		for _, be := range []struct{ name, lxc string }{{"dir", lxcDir(t)}, {"btrfs", btrfs}} {
			c2 := *c
			c2.Paths.LXC, c2.Demo.Backend = be.lxc, be.name
			d2 := openTest(t, &c2)
			if err := d2.Build(ctx, false); err != nil {
				t.Fatal(err)
			}
			stop := proxyLoad(t, httpURL+"/", 20*time.Millisecond)
			var sw, rs []time.Duration
			for range 4 {
				times, err := d2.Switch(ctx)
				if err != nil {
					t.Fatal(err)
				}
				sw, rs = append(sw, times.Switch), append(rs, times.Reset)
			}
			served, failed := stop()
			gens, _ := d2.generations()
			du, _ := exec.Command("du", "-sh", d2.genDir(gens[0])).Output()
			t.Logf("%s (pristine %s): 4 switches, %d requests, %d failed; switch median %s, reset median %s (min %s, max %s)",
				be.name, strings.Fields(string(du))[0], served, failed, median(sw), median(rs), slices.Min(rs), slices.Max(rs))
			if failed != 0 {
				t.Errorf("%s: %d requests failed", be.name, failed)
			}
			if err := d2.Destroy(ctx); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("remove undoes the host preparation", func(t *testing.T) {
		if err := d.Remove(ctx); err != nil {
			t.Fatal(err)
		}
		left := []string{}
		if exec.Command("ip", "link", "show", c.Demo.Bridge).Run() == nil {
			left = append(left, "bridge "+c.Demo.Bridge)
		}
		if exec.Command("nft", "list", "table", "inet", d.net.Table()).Run() == nil {
			left = append(left, "nft table "+d.net.Table())
		}
		for _, p := range []string{"/etc/sysctl.d/61-berth-demo.conf", d.bundle(), d.store, d.ctDir("demo1"), d.proxy.Dir} {
			if exists(p) {
				left = append(left, p)
			}
		}
		if len(left) > 0 || d.proxy.Running() {
			t.Fatalf("left after remove: %v (proxy running %v)", left, d.proxy.Running())
		}
		t.Logf("after remove: no bridge, nft table, sysctl file, certificate, containers, generations or proxy")
	})
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2].Round(time.Millisecond)
}

// mergedSum is the tree checksum of a stopped overlayfs container's root file system (its pristine lower
// layer under its upper layer), mounted read-only.
func mergedSum(t *testing.T, d *Demo, name string) string {
	mnt := t.TempDir()
	st, _ := d.load()
	opts := "ro,lowerdir=" + filepath.Join(d.ctDir(name), "delta") + ":" + d.genDir(st.Gen[name])
	if out, err := exec.Command("mount", "-t", "overlay", "overlay", "-o", opts, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount %s: %v\n%s", name, err, out)
	}
	defer exec.Command("umount", mnt).Run()
	sum, err := fsx.TreeSum(mnt)
	if err != nil {
		t.Fatal(err)
	}
	return sum[:16]
}

// snapshot describes what a demo operation could change: the state, the generations, the containers'
// configurations, the proxy's configuration and the hooks directory.
func snapshot(t *testing.T, d *Demo) string {
	var sb strings.Builder
	for _, p := range []string{d.statePath(), filepath.Join(d.proxy.Dir, "haproxy.cfg")} {
		b, _ := os.ReadFile(p)
		fmt.Fprintf(&sb, "%s: %x\n", p, b)
	}
	gens, _ := d.generations()
	fmt.Fprintf(&sb, "generations %v\n", gens)
	for _, n := range d.cfg.Containers {
		b, _ := os.ReadFile(filepath.Join(d.ctDir(n), "config"))
		fmt.Fprintf(&sb, "%s running %v config %x\n", n, d.running(n), b)
	}
	entries, _ := os.ReadDir(d.cfg.Hooks)
	for _, e := range entries {
		fmt.Fprintf(&sb, "hook %s\n", e.Name())
	}
	return sb.String()
}

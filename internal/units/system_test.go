package units

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/unit"

	"berth/internal/testhost"
	"berth/internal/testutil"
)

// guestConfig is the configuration the test installs with: a switch every 2 minutes.
const guestConfig = "[Demo]\nSwitchEvery=2min\n"

// TestOnSystemd installs the units with the compiled berth binary in a booted systemd test host, through
// systemd's D-Bus API, and checks them there: timers armed on the 2-minute schedule, enablement, the
// machines' boot order, every hardening option started for real (one by one, and together in each
// generated service), what the demo's jobs need from their sandbox (an LXC container that outlives the
// job, mounts and links visible on the host), OnFailure= starting the repair, a reboot, and an uninstall
// that leaves nothing behind.
func TestOnSystemd(t *testing.T) {
	testutil.Require(t, "systemd-nspawn")
	bin := testutil.BerthBinary(t)
	ctx := context.Background()
	// The host's own rootfs tarball, bound in read-only, becomes a nested machine named mysql, the first of
	// [Relay] Machines.
	opts := testhost.Options{Name: "berth-units", Packages: []string{"lxc", "busybox-static"}}
	tarball, err := testhost.Tarball(ctx, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	opts.ReadOnlyBinds = []string{tarball + ":/mnt/rootfs.tar"}
	h := testhost.New(t, opts)
	run := h.Must
	show := func(t *testing.T, unit, prop string) string {
		t.Helper()
		return run(t, "systemctl", "show", "--value", "-p", prop, unit)
	}
	copyIn := func(t *testing.T, dst string, content string, mode os.FileMode) {
		t.Helper()
		src := filepath.Join(t.TempDir(), filepath.Base(dst))
		if err := os.WriteFile(src, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := h.CopyIn(src, dst); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.CopyIn(bin, "/root/berth"); err != nil {
		t.Fatal(err)
	}
	copyIn(t, "/etc/berth/berth.conf", guestConfig, 0o644)
	c := loadConfig(t, guestConfig, nil)
	c.File = "/etc/berth/berth.conf"
	files := generateList(t, c)

	// Install with the compiled binary (it copies itself to [Paths] Binary: no checkout in the host).
	start := time.Now()
	out := run(t, "/root/berth", "units:install")
	t.Logf("units:install (%s):\n%s", time.Since(start).Round(time.Millisecond), out)
	if sum(t, bin) != sum(t, filepath.Join(h.Dir, "usr/local/sbin/berth")) {
		t.Fatal("/usr/local/sbin/berth is not the compiled binary")
	}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(h.Dir, "etc/systemd/system", f.Path))
		if err != nil || string(b) != string(f.Bytes()) {
			t.Errorf("%s: installed file differs from the generated one (%v)", f.Path, err)
		}
	}
	timers := run(t, "systemctl", "list-timers", "--all", "--no-pager")
	t.Logf("systemctl list-timers --all:\n%s", timers)
	for _, tm := range []string{SwitchTimer, UpgradeTimer, DemoRenewTimer, RenewTimer} {
		line := ""
		for _, l := range strings.Split(timers, "\n") {
			if strings.Contains(l, tm) {
				line = l
			}
		}
		if line == "" || strings.HasPrefix(line, "-") || strings.HasPrefix(line, "n/a") || show(t, tm, "ActiveState") != "active" {
			t.Errorf("%s has no next elapse: %q", tm, line)
		}
	}
	if got := show(t, SwitchTimer, "TimersCalendar"); !strings.Contains(got, "OnCalendar=*-*-* *:00/2:00") {
		t.Errorf("switch timer: %s", got)
	}
	if got := show(t, UpgradeTimer, "TimersCalendar"); !strings.Contains(got, "OnCalendar=*-*-* 03:03:00") {
		t.Errorf("upgrade timer (03:02 is a switch tick with 2min): %s", got)
	}
	for _, u := range []string{Demo, SwitchTimer, UpgradeTimer, DemoRenewTimer, RenewTimer, Machines} {
		if got := run(t, "systemctl", "is-enabled", u); got != "enabled" {
			t.Errorf("is-enabled %s: %s", u, got)
		}
	}
	// The demo is not built here: its service is skipped, not failed.
	if show(t, Demo, "ConditionResult") != "no" || show(t, Demo, "Result") != "success" || !strings.Contains(out, Demo+" (skipped") {
		t.Errorf("%s: condition %s, result %s", Demo, show(t, Demo, "ConditionResult"), show(t, Demo, "Result"))
	}
	if got := show(t, "systemd-nspawn@relaycreator.service", "After"); !strings.Contains(got, "systemd-nspawn@mysql.service") {
		t.Errorf("the order drop-in is not applied: After=%s", got)
	}
	if got := show(t, Machines, "Wants"); !strings.Contains(got, "systemd-nspawn@strfry.service") {
		t.Errorf("%s Wants=%s", Machines, got)
	}
	if again := run(t, "/root/berth", "units:install"); !strings.Contains(again, "units in /etc/systemd/system: 14 unchanged") ||
		!strings.Contains(again, "unchanged (copied") {
		t.Errorf("a second install changed something:\n%s", again)
	} else {
		t.Logf("second units:install:\n%s", again)
	}

	t.Run("hardening, each option alone", func(t *testing.T) {
		var opts []Option
		for _, o := range append(slices.Clone(ContainerJobHardening), RenewHardening...) {
			if !slices.Contains(opts, o) {
				opts = append(opts, o)
			}
		}
		for _, o := range opts {
			out, err := h.Run(ctx, "systemd-run", "--wait", "--pipe", "--collect", "--quiet", "-p", o.Name+"="+o.Value,
				"/usr/local/sbin/berth", "config:show")
			if err != nil || !strings.Contains(out, "configuration file: /etc/berth/berth.conf") {
				t.Errorf("%s=%s: %v\n%s", o.Name, o.Value, err, out)
			}
		}
		t.Logf("berth config:show ran under each of %d options: %s", len(opts), optionList(opts))
	})

	t.Run("hardening, every generated service", func(t *testing.T) {
		// The generated services as they are, but running config:show (the demo's targets need a built demo),
		// without conditions and OnFailure=, under another name.
		var names []string
		for _, f := range files {
			if !strings.HasSuffix(f.Path, ".service") {
				continue
			}
			var opts []*unit.UnitOption
			for _, o := range f.Options {
				switch {
				case o.Section == "Install" || o.Name == "OnFailure" || strings.HasPrefix(o.Name, "Condition"):
				case o.Name == "ExecStart" || o.Name == "ExecStop":
					opts = append(opts, unit.NewUnitOption(o.Section, o.Name, c.Paths.Binary+" config:show"))
				default:
					opts = append(opts, o)
				}
			}
			name := "probe-" + f.Path
			copyIn(t, "/etc/systemd/system/"+name, string(File{Path: name, Options: opts}.Bytes()), 0o644)
			names = append(names, name)
		}
		run(t, "systemctl", "daemon-reload")
		for _, n := range names {
			if out, err := h.Run(ctx, "systemctl", "start", n); err != nil {
				t.Errorf("start %s: %v\n%s", n, err, out)
			}
			if n == "probe-"+Demo {
				if show(t, n, "ActiveState") != "active" {
					t.Errorf("%s is not active after its start (RemainAfterExit=yes)", n)
				}
				run(t, "systemctl", "stop", n) // runs ExecStop= under the same sandbox
			}
			journal := run(t, "journalctl", "--no-pager", "-o", "cat", "-u", n)
			if want := strings.Count(journal, "configuration file: /etc/berth/berth.conf"); show(t, n, "Result") != "success" ||
				want != map[bool]int{true: 2, false: 1}[n == "probe-"+Demo] {
				t.Errorf("%s: result %s, journal:\n%s", n, show(t, n, "Result"), journal)
			}
			if n == "probe-"+Renew {
				if got := show(t, n, "UMask"); got != "0077" {
					t.Errorf("%s UMask=%s", n, got)
				}
			}
		}
		for _, n := range names {
			run(t, "rm", "/etc/systemd/system/"+n)
		}
		run(t, "systemctl", "daemon-reload")
		t.Logf("started under their generated sandboxes: %s", strings.Join(names, ", "))
	})

	t.Run("what the demo's jobs need from their sandbox", func(t *testing.T) {
		// A busybox LXC container, started by a oneshot job under ContainerJobHardening, outlives the job
		// (LXC moves it out of the job's cgroup), gets its own host name (no ProtectHostname seccomp
		// filter), and the job's mount and network link are the host's (no mount namespace of its own).
		run(t, "sh", "-c", "mkdir -p /var/lib/lxc/probe/rootfs/bin /var/lib/lxc/probe/rootfs/proc /var/lib/lxc/probe/rootfs/sys "+
			"/var/lib/lxc/probe/rootfs/dev /var/lib/lxc/probe/rootfs/tmp && cp /bin/busybox /var/lib/lxc/probe/rootfs/bin/busybox")
		copyIn(t, "/var/lib/lxc/probe/config", "lxc.uts.name = probe\nlxc.rootfs.path = dir:/var/lib/lxc/probe/rootfs\n"+
			"lxc.net.0.type = empty\nlxc.apparmor.profile = unconfined\nlxc.init.cmd = /bin/busybox sleep 600\n"+
			"lxc.mount.auto = proc:mixed sys:ro\nlxc.autodev = 1\nlxc.tty.max = 0\nlxc.pty.max = 4\n", 0o644)
		argv := []string{"systemd-run", "--wait", "--pipe", "--collect", "--quiet", "--unit=berth-probe-job", "-p", "Type=oneshot"}
		for _, o := range ContainerJobHardening {
			argv = append(argv, "-p", o.Name+"="+o.Value)
		}
		argv = append(argv, "/bin/sh", "-c", "set -e; lxc-start -n probe -l DEBUG -o /run/probe-lxc.log; lxc-wait -n probe -s RUNNING -t 20; "+
			"mkdir -p /run/berth-probe; mount -t tmpfs berth-probe /run/berth-probe; ip link add berthprobe0 type bridge; "+
			"grep NoNewPrivs /proc/self/status; grep Seccomp: /proc/self/status")
		out, err := h.Run(ctx, argv...)
		if err != nil {
			log, _ := h.Run(ctx, "tail", "-n", "30", "/run/probe-lxc.log")
			t.Fatalf("the probe job: %v\n%s\nlxc log:\n%s", err, out, log)
		}
		t.Logf("inside the job: %s", strings.Join(strings.Fields(out), " "))
		defer h.Run(ctx, "lxc-stop", "-n", "probe", "-k")
		defer h.Run(ctx, "umount", "/run/berth-probe")
		defer h.Run(ctx, "ip", "link", "del", "berthprobe0")
		if !strings.Contains(out, "NoNewPrivs:\t0") {
			t.Errorf("no_new_privs is set: setuid programs in the containers would break\n%s", out)
		}
		if got := run(t, "lxc-info", "-n", "probe", "-s"); !strings.Contains(got, "RUNNING") {
			t.Errorf("the container did not outlive its job: %s", got)
		}
		if got := run(t, "lxc-attach", "-n", "probe", "--", "/bin/busybox", "hostname"); got != "probe" {
			t.Errorf("hostname in the container: %q", got)
		}
		pid := run(t, "lxc-info", "-n", "probe", "-p", "-H")
		cg := run(t, "grep", "^0::", "/proc/"+pid+"/cgroup")
		if strings.Contains(cg, "berth-probe-job") {
			t.Errorf("the container stayed in the job's cgroup: %s", cg)
		}
		if _, err := h.Run(ctx, "findmnt", "/run/berth-probe"); err != nil {
			t.Errorf("the job's mount is not the host's: %v", err)
		}
		if _, err := h.Run(ctx, "ip", "link", "show", "berthprobe0"); err != nil {
			t.Errorf("the job's link is not the host's: %v", err)
		}
		seccomp := run(t, "grep", "Seccomp:", "/proc/"+pid+"/status")
		t.Logf("after the job ended: container RUNNING in %s, host name probe, mount and bridge on the host; container init %s",
			strings.TrimPrefix(cg, "0::"), strings.Join(strings.Fields(seccomp), " "))

		// Why ProtectHostname= is left out: the same job with it cannot start the container.
		run(t, "lxc-stop", "-n", "probe", "-k")
		out, err = h.Run(ctx, "systemd-run", "--wait", "--pipe", "--collect", "--quiet", "-p", "Type=oneshot", "-p", "ProtectHostname=yes",
			"lxc-start", "-n", "probe", "-l", "ERROR", "-o", "/run/probe-hostname.log")
		why, _ := h.Run(ctx, "grep", "-m1", "-i", "hostname", "/run/probe-hostname.log")
		if err == nil || why == "" {
			h.Run(ctx, "lxc-stop", "-n", "probe", "-k")
			t.Errorf("LXC started a container under ProtectHostname=yes, or failed for another reason: ContainerJobHardening's comment is wrong\n%s", out)
		} else {
			t.Logf("under ProtectHostname=yes lxc-start fails: %s", strings.TrimSpace(why))
		}
	})

	t.Run("what relay:renew needs from its sandbox", func(t *testing.T) {
		// relay:renew reloads HAProxy with `systemctl -M haproxy`: here the nested machine mysql stands in.
		run(t, "mkdir", "-p", "/var/lib/machines/mysql")
		run(t, "tar", "--extract", "--numeric-owner", "--file=/mnt/rootfs.tar", "--directory=/var/lib/machines/mysql")
		copyIn(t, "/var/lib/machines/mysql/etc/hostname", "mysql\n", 0o644)
		run(t, "machinectl", "start", "mysql")
		for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(300 * time.Millisecond) {
			out, _ := h.Run(ctx, "systemctl", "-M", "mysql", "is-system-running")
			if s := strings.TrimSpace(out); s == "running" || s == "degraded" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("nested machine mysql: %s", out)
			}
		}
		argv := []string{"systemd-run", "--wait", "--pipe", "--collect", "--quiet", "-p", "Type=oneshot"}
		for _, o := range RenewHardening {
			argv = append(argv, "-p", o.Name+"="+o.Value)
		}
		out := run(t, append(argv, "/bin/sh", "-c", "systemctl show -p Version --value && systemctl -M mysql is-system-running && "+
			"systemctl -M mysql reload-or-restart systemd-journald.service && mkdir -p /var/lib/berth-probe && "+
			"echo x > /var/lib/berth-probe/f && stat -c %a /var/lib/berth-probe/f")...)
		if f := strings.Fields(out); len(f) != 3 || f[2] != "600" || (f[1] != "running" && f[1] != "degraded") {
			t.Errorf("D-Bus, systemctl -M and a private file under /var/lib: %q", out)
		}
		run(t, "rm", "-r", "/var/lib/berth-probe")
		t.Logf("under RenewHardening: systemd %s over D-Bus, systemctl -M mysql: %s and a reload in it, new files 0600",
			strings.Fields(out)[0], strings.Fields(out)[1])
	})

	t.Run("OnFailure starts the repair", func(t *testing.T) {
		// The generated switch and repair units with their commands replaced by drop-ins: the switch fails.
		copyIn(t, "/etc/systemd/system/"+Switch+".d/zz-test.conf", "[Unit]\nConditionPathExists=\n[Service]\nExecStart=\nExecStart=/bin/false\n", 0o644)
		copyIn(t, "/etc/systemd/system/"+RestoreCrash+".d/zz-test.conf", "[Unit]\nConditionPathExists=\n[Service]\nExecStart=\n"+
			"ExecStart=/usr/local/sbin/berth config:show\n", 0o644)
		run(t, "systemctl", "daemon-reload")
		if _, err := h.Run(ctx, "systemctl", "start", Switch); err == nil {
			t.Fatal("the switch did not fail")
		}
		deadline := time.Now().Add(time.Minute)
		for show(t, RestoreCrash, "Result") != "success" || show(t, RestoreCrash, "ExecMainExitTimestampMonotonic") == "0" {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not run: %s", RestoreCrash, run(t, "systemctl", "status", "--no-pager", RestoreCrash))
			}
			time.Sleep(200 * time.Millisecond)
		}
		journal := run(t, "journalctl", "--no-pager", "-o", "cat", "-u", Switch, "-u", RestoreCrash)
		if !strings.Contains(journal, "Triggering OnFailure= dependencies") || !strings.Contains(journal, "configuration file:") {
			t.Errorf("journal:\n%s", journal)
		}
		run(t, "rm", "-r", "/etc/systemd/system/"+Switch+".d", "/etc/systemd/system/"+RestoreCrash+".d")
		run(t, "systemctl", "daemon-reload")
		run(t, "systemctl", "reset-failed", Switch)
		t.Logf("%s failed, %s ran through OnFailure=", Switch, RestoreCrash)
	})

	t.Run("the switch timer fires on its 2-minute schedule", func(t *testing.T) {
		// A tick that came while the subtest above had replaced the switch by /bin/false ran that: the next
		// one, at most 2 minutes later, runs the real unit, which finds no demo and is skipped.
		const skipped = "was skipped because no trigger condition checks were met"
		deadline := time.Now().Add(2*time.Minute + 20*time.Second)
		var journal string
		for {
			if show(t, SwitchTimer, "LastTriggerUSecMonotonic") != "0" {
				journal = run(t, "journalctl", "--no-pager", "-o", "cat", "-u", Switch)
				if strings.Contains(lastLine(journal), skipped) {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not fire on the real switch within 2 minutes: %s\njournal:\n%s", SwitchTimer,
					run(t, "systemctl", "list-timers", "--all", "--no-pager"), journal)
			}
			time.Sleep(time.Second)
		}
		t.Logf("%s fired at %s; %s: %s", SwitchTimer, show(t, SwitchTimer, "LastTriggerUSec"), Switch, lastLine(journal))
	})

	t.Run("stopping the demo stops its timers", func(t *testing.T) {
		runs := func() int {
			return strings.Count(run(t, "journalctl", "--no-pager", "-o", "cat", "-u", Switch), "was skipped because")
		}
		before := runs()
		run(t, "systemctl", "stop", Demo)
		for _, tm := range []string{SwitchTimer, UpgradeTimer, DemoRenewTimer} {
			if got := show(t, tm, "ActiveState"); got != "inactive" {
				t.Errorf("%s after stopping %s: %s", tm, Demo, got)
			}
		}
		if got := show(t, RenewTimer, "ActiveState"); got != "active" {
			t.Errorf("%s is not the demo's: %s", RenewTimer, got)
		}
		run(t, "systemctl", "start", Demo)
		for _, tm := range []string{SwitchTimer, UpgradeTimer, DemoRenewTimer} {
			if got := show(t, tm, "ActiveState"); got != "active" {
				t.Errorf("%s after starting %s: %s", tm, Demo, got)
			}
		}
		time.Sleep(2 * time.Second)
		t.Logf("systemctl stop %s stopped %s and %s; start armed them again (switch runs meanwhile: %d, next %s)", Demo, SwitchTimer,
			UpgradeTimer, runs()-before, show(t, SwitchTimer, "NextElapseUSecRealtime"))
	})

	t.Run("a new schedule", func(t *testing.T) {
		// SwitchEvery 3min: the reload re-arms the running timer on it; nothing restarts, the upgrade does not run.
		copyIn(t, "/etc/berth/berth.conf", "[Demo]\nSwitchEvery=3min\n", 0o644)
		out := run(t, "/usr/local/sbin/berth", "units:install")
		if !strings.Contains(out, "changed "+SwitchTimer+", "+UpgradeTimer) {
			t.Errorf("units:install:\n%s", out)
		}
		if got := show(t, SwitchTimer, "TimersCalendar"); !strings.Contains(got, "OnCalendar=*-*-* *:00/3:00") {
			t.Errorf("switch timer: %s", got)
		}
		next := run(t, "systemctl", "list-timers", "--no-pager", "--no-legend", SwitchTimer)
		if f := strings.Fields(next); len(f) < 3 || !strings.HasSuffix(f[2], ":00") {
			t.Errorf("next elapse: %q", next)
		} else if m, _ := strconv.Atoi(strings.Split(f[2], ":")[1]); m%3 != 0 {
			t.Errorf("next elapse not on the 3-minute schedule: %q", next)
		}
		if got := show(t, UpgradeTimer, "TimersCalendar"); !strings.Contains(got, "OnCalendar=*-*-* 03:02:00") {
			t.Errorf("upgrade timer (03:02 is no 3min tick): %s", got)
		}
		if got := run(t, "journalctl", "--no-pager", "-o", "cat", "-u", Upgrade); got != "-- No entries --" && got != "" {
			t.Errorf("the upgrade ran:\n%s", got)
		}
		t.Logf("after SwitchEvery=3min and units:install: %s", next)
	})

	t.Run("after a reboot", func(t *testing.T) {
		if err := h.Reboot(ctx); err != nil {
			t.Fatal(err)
		}
		for _, tm := range []string{SwitchTimer, UpgradeTimer, DemoRenewTimer, RenewTimer} {
			if got := show(t, tm, "ActiveState"); got != "active" {
				t.Errorf("%s after reboot: %s", tm, got)
			}
		}
		if got := show(t, Machines, "ActiveState"); got != "active" {
			t.Errorf("%s after reboot: %s", Machines, got)
		}
		// Only mysql exists in the test host: it runs again; the others' starts fail, in [Relay] Machines order.
		if got := show(t, "systemd-nspawn@mysql.service", "ActiveState"); got != "active" {
			t.Errorf("machine mysql after reboot: %s", got)
		}
		var last int64
		for _, m := range c.Relay.Machines {
			ts, _ := strconv.ParseInt(show(t, "systemd-nspawn@"+m+".service", "InactiveExitTimestampMonotonic"), 10, 64)
			if ts == 0 || ts < last {
				t.Errorf("systemd-nspawn@%s.service started at %d, the one before at %d", m, ts, last)
			}
			last = ts
		}
		t.Logf("after reboot: timers active, %s active, machine mysql running, machines started in the order %s", Machines,
			strings.Join(c.Relay.Machines, " → "))
	})

	t.Run("uninstall", func(t *testing.T) {
		out := run(t, "/usr/local/sbin/berth", "units:uninstall")
		t.Logf("units:uninstall:\n%s", out)
		// Both exit 1 when nothing matches.
		if got, _ := h.Run(ctx, "systemctl", "list-unit-files", "--no-legend", "berth*"); strings.TrimSpace(got) != "" {
			t.Errorf("list-unit-files berth*: %s", got)
		}
		if got, _ := h.Run(ctx, "systemctl", "list-units", "--all", "--no-legend", "berth*"); strings.TrimSpace(got) != "" {
			t.Errorf("list-units --all berth*: %s", got)
		}
		if got := run(t, "find", "/etc/systemd/system", "-name", "*berth*"); got != "" {
			t.Errorf("left in /etc/systemd/system:\n%s", got)
		}
		if _, err := os.Stat(filepath.Join(h.Dir, "var/lib/berth/units.manifest")); !os.IsNotExist(err) {
			t.Error("the manifest stays")
		}
		if got := show(t, "systemd-nspawn@relaycreator.service", "After"); strings.Contains(got, "systemd-nspawn@mysql.service") {
			t.Errorf("the order drop-in is still applied: %s", got)
		}
	})
}

func optionList(opts []Option) string {
	var s []string
	for _, o := range opts {
		s = append(s, o.Name+"="+o.Value)
	}
	return strings.Join(s, " ")
}

func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return l[len(l)-1]
}

package demo

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"berth/internal/base"
	"berth/internal/testhost"
	"berth/internal/testutil"
	"berth/internal/testutil/testbase"
)

// TestDemoUnitsOnSystemd runs the demo under its generated units in a booted systemd test host: the compiled
// binary builds the demo and installs the units; the switch timer (every minute) rotates the containers;
// an upgrade held up by a sleeping hook makes the switches skip their turns (no repair, no alert) until it
// ends; a switch onto a broken container starts the repair through OnFailure=; the daily renewal, in its
// sandbox, keeps a fresh certificate and replaces it when forced; after a reboot the demo serves
// again; units:uninstall leaves nothing behind. The test host shares the VM's network namespace (its
// nested image build needs the Debian mirror), so the demo's bridge and NAT are the test's own, removed at
// the end.
func TestDemoUnitsOnSystemd(t *testing.T) {
	testutil.Require(t, "systemd-nspawn", "debootstrap")
	if testing.Short() {
		t.Skip("skipping: -short (this test waits for real 2-minute timers)")
	}
	ctx := context.Background()
	c := testbase.Config(t, nil)
	testbase.Build(t, c)
	bin := testutil.BerthBinary(t)
	h := testhost.New(t, testhost.Options{Name: "berth-demo-units", HostNetwork: true,
		Packages:      []string{"lxc", "haproxy", "nftables", "iproute2", "systemd-container", "curl"},
		ReadOnlyBinds: []string{base.Dir(c) + ":/var/lib/machines/.berth-base"}})
	run := h.Must
	// An LXC path of the test's own: test hosts share the VM's network namespace, where LXC's command
	// sockets are abstract names made from the LXC path and the container's name, so two test hosts (two
	// checkouts testing at once) with /var/lib/lxc/demo1 each would drive each other's containers.
	env := demoEnv(t, "/var/lib/lxc", "dir")
	lxcPath := "/var/lib/lxc-" + env["BERTH_DEMO_BRIDGE"]
	conf := "[Paths]\nLXC=" + lxcPath + "\n\n[Demo]\nSwitchEvery=1min\n"
	for _, k := range []string{"IMAGE", "BACKEND", "BRIDGE", "SUBNET", "HTTP", "HTTPS", "HEALTHPATH"} {
		conf += fmt.Sprintf("%s%s=%s\n", k[:1], strings.ToLower(k[1:]), env["BERTH_DEMO_"+k])
	}
	conf = strings.NewReplacer("Healthpath", "HealthPath", "Https", "HTTPS", "Http=", "HTTP=").Replace(conf)
	confFile := filepath.Join(t.TempDir(), "berth.conf")
	os.WriteFile(confFile, []byte(conf), 0o644)
	run(t, "mkdir", "-p", "/etc/berth")
	if err := h.CopyIn(confFile, "/etc/berth/berth.conf"); err != nil {
		t.Fatal(err)
	}
	if err := h.CopyIn(bin, "/root/berth"); err != nil {
		t.Fatal(err)
	}
	// The test host shares the VM's network namespace, whose /proc/sys/net it cannot write: forwarding is
	// turned on here (and back off at the end), which demo:build then finds on.
	fwd, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644)
	t.Cleanup(func() { os.WriteFile("/proc/sys/net/ipv4/ip_forward", fwd, 0o644) })
	run(t, "systemctl", "mask", "--now", "haproxy.service", "lxc-net.service")
	t.Cleanup(func() {
		// The bridge and NAT live in the VM's network namespace.
		if out, err := h.Run(context.Background(), "/root/berth", "demo:remove"); err != nil {
			t.Errorf("demo:remove: %v\n%s", err, out)
		}
	})
	start := time.Now()
	run(t, "/root/berth", "demo:build")
	t.Logf("demo:build in the test host: %s", time.Since(start).Round(time.Second))
	// The demo's front runs as haproxy, not root, in a hardened unit of its own.
	front := "berth-demo-proxy-" + env["BERTH_DEMO_BRIDGE"]
	haproxyUID := strings.TrimSpace(run(t, "id", "-u", "haproxy"))
	uids := strings.Fields(run(t, "sh", "-c", `for s in /proc/[0-9]*/status; do if grep -q '^Name:.haproxy$' "$s"; then awk '/^Uid:/ { print $2 }' "$s"; fi; done`))
	if u := strings.TrimSpace(run(t, "systemctl", "show", "-P", "User", front)); u != "haproxy" || len(uids) == 0 || slices.ContainsFunc(uids, func(u string) bool { return u != haproxyUID }) {
		t.Fatalf("%s: User=%q, haproxy processes run as uids %v (haproxy is %s)", front, u, uids, haproxyUID)
	}
	users := uids
	exposure := strings.Split(strings.TrimSpace(run(t, "systemd-analyze", "security", "--no-pager", front)), "\n")
	t.Logf("%s: User=haproxy, %d haproxy processes as haproxy; systemd-analyze security: %s", front, len(users), exposure[len(exposure)-1])
	t.Logf("units:install:\n%s", run(t, "/root/berth", "units:install"))
	timers := run(t, "systemctl", "list-timers", "--all", "berth-*")
	t.Logf("systemctl list-timers:\n%s", timers)
	for _, tm := range []string{"berth-demo-switch.timer", "berth-demo-upgrade.timer"} {
		if !strings.Contains(timers, tm) {
			t.Fatalf("%s is not listed", tm)
		}
	}
	// demo:status says the timers are installed and takes the next switch from the switch timer.
	status := run(t, "/root/berth", "demo:status")
	if !strings.Contains(status, "installed: berth-demo-switch.timer active, berth-demo-upgrade.timer active") ||
		!strings.Contains(status, "(from berth-demo-switch.timer)") {
		t.Fatalf("demo:status with the timers installed:\n%s", status)
	}
	t.Logf("demo:status:\n%s", grepLines(status, "timers", "next switch"))

	switches := func() int {
		out, _ := h.Run(ctx, "journalctl", "-q", "-o", "cat", "-u", "berth-demo-switch.service")
		return strings.Count(out, "msg=switched component=demo")
	}
	active := func() string {
		out, _ := h.Run(ctx, "sh", "-c", "grep -o '\"active\": \"[^\"]*\"' /var/lib/berth/demo/state.json")
		return strings.TrimSpace(out)
	}
	var seen []string
	deadline := time.Now().Add(5 * time.Minute)
	for switches() < 2 && time.Now().Before(deadline) {
		if a := active(); len(seen) == 0 || seen[len(seen)-1] != a {
			seen = append(seen, a)
		}
		time.Sleep(5 * time.Second)
	}
	seen = append(seen, active())
	journal := run(t, "journalctl", "-q", "-o", "short-precise", "-u", "berth-demo-switch.service")
	if switches() < 2 {
		t.Fatalf("fewer than two switches within 5 minutes:\n%s", journal)
	}
	t.Logf("two switches by the timer (ExecStart %s); active %v; journal:\n%s", run(t, "systemctl", "show", "-P", "ExecStart", "berth-demo-switch.service"),
		seen, grepLines(journal, "switched"))

	// An upgrade that lasts over two switch ticks (a one-shot hook sleeps 130 s, after the clone's boot and
	// apt): the switches that fire meanwhile skip their turn, naming the upgrade; no repair starts, no
	// alert goes out; the switches resume after it.
	run(t, "sh", "-c", "printf '#!/bin/sh\\nsleep 130\\n' > /var/lib/berth/upgrade.d/50-sleep && chmod 755 /var/lib/berth/upgrade.d/50-sleep")
	alertLines := func() string {
		return strings.TrimSpace(run(t, "sh", "-c", "cat /var/lib/berth/demo/alerts.log 2>/dev/null | wc -l"))
	}
	alertsBefore := alertLines()
	repairsBefore := strings.TrimSpace(run(t, "systemctl", "show", "-P", "InactiveExitTimestampMonotonic", "berth-demo-restore-crash.service"))
	since := strings.TrimSpace(run(t, "date", "+%Y-%m-%d %H:%M:%S"))
	run(t, "systemctl", "start", "--no-block", "berth-demo-upgrade.service")
	upStart := time.Now()
	deadline = time.Now().Add(8 * time.Minute)
	for time.Now().Before(deadline) {
		time.Sleep(5 * time.Second)
		if out, _ := h.Run(ctx, "systemctl", "is-active", "berth-demo-upgrade.service"); strings.TrimSpace(out) == "inactive" || strings.TrimSpace(out) == "failed" {
			break
		}
	}
	upTook := time.Since(upStart)
	upgrade := run(t, "journalctl", "-q", "-o", "cat", "-u", "berth-demo-upgrade.service", "--since", since)
	if r := strings.TrimSpace(run(t, "systemctl", "show", "-P", "Result", "berth-demo-upgrade.service")); r != "success" || strings.Contains(upgrade, "level=ERROR") {
		lxcLogs, _ := h.Run(ctx, "sh", "-c", "tail -n 15 /var/lib/berth/demo/logs/*.lxc.log; tail -n 30 /var/lib/berth/demo/logs/upgrade-*/apt.log; journalctl -q -o short-precise --since '"+since+"' | grep -v berth | tail -n 40")
		t.Fatalf("the upgrade did not succeed within 8 minutes (Result=%s):\n%s\nLXC logs, apt log and the journal:\n%s", r, upgrade, lxcLogs)
	}
	sinceUpgrade := switches()
	deadline = time.Now().Add(3 * time.Minute)
	for switches() == sinceUpgrade && time.Now().Before(deadline) {
		time.Sleep(5 * time.Second)
	}
	swj := run(t, "journalctl", "-q", "-o", "short-precise", "-u", "berth-demo-switch.service", "--since", since)
	skips := grepLines(swj, "switch skipped")
	failedSwitches := grepLines(swj, "Failed with result", "level=ERROR")
	alertsAfter := alertLines()
	repairsAfter := strings.TrimSpace(run(t, "systemctl", "show", "-P", "InactiveExitTimestampMonotonic", "berth-demo-restore-crash.service"))
	if strings.Count(skips, "switch skipped") < 2 || !strings.Contains(skips, `job="demo upgrade"`) || failedSwitches != "" ||
		alertsAfter != alertsBefore || repairsAfter != repairsBefore || switches() == sinceUpgrade {
		t.Fatalf("during a %s upgrade: skipped switches:\n%s\nfailed: %q; alerts %s → %s lines; repair started at %s → %s; switches after it: %d → %d\nswitch journal:\n%s",
			upTook.Round(time.Second), skips, failedSwitches, alertsBefore, alertsAfter, repairsBefore, repairsAfter, sinceUpgrade, switches(), swj)
	}
	t.Logf("an upgrade of %s (a hook sleeping 130 s) under a 1-minute switch timer:\n%s\nno failed switch, alerts.log %s → %s lines, restore-crash not started (%s), then:\n%s",
		upTook.Round(time.Second), skips, alertsBefore, alertsAfter, repairsAfter, grepLines(swj, "msg=switched"))

	// A broken idle container: the next switch fails, OnFailure= starts the repair. The timer is stopped
	// first, so that no switch resets the container between the damage and the switch that finds it.
	run(t, "systemctl", "stop", "berth-demo-switch.timer")
	for end := time.Now().Add(2 * time.Minute); time.Now().Before(end); time.Sleep(time.Second) {
		if out, _ := h.Run(ctx, "systemctl", "is-active", "berth-demo-switch.service"); strings.TrimSpace(out) != "activating" {
			break
		}
	}
	st := active()
	idle := "demo1"
	if strings.Contains(st, "demo1") {
		idle = "demo2"
	}
	run(t, "rm", lxcPath+"/"+idle+"/rootfs/usr/sbin/init")
	run(t, "systemctl", "start", "--no-block", "berth-demo-switch.service")
	deadline = time.Now().Add(3 * time.Minute)
	var repair string
	for time.Now().Before(deadline) {
		repair, _ = h.Run(ctx, "journalctl", "-q", "-o", "cat", "-u", "berth-demo-restore-crash.service")
		if strings.Contains(repair, idle+": repaired") {
			break
		}
		time.Sleep(5 * time.Second)
	}
	failed, _ := h.Run(ctx, "journalctl", "-q", "-o", "cat", "-u", "berth-demo-switch.service")
	if !strings.Contains(repair, idle+": repaired") {
		t.Fatalf("no repair of %s within 3 minutes:\nswitch:\n%s\nrepair:\n%s", idle, failed, repair)
	}
	t.Logf("failed switch:\n%s\nrepair through OnFailure=:\n%s", grepLines(failed, "failed", "alert"), repair)

	// The daily renewal in its own sandbox (RenewHardening): with more than 30 days left it changes nothing;
	// forced (FORCE=1 in a drop-in), it makes a new self-signed certificate and reloads the proxy, which then
	// serves it.
	renew := func() string {
		t.Helper()
		since := strings.TrimSpace(run(t, "date", "+%Y-%m-%d %H:%M:%S"))
		if out, err := h.Run(ctx, "systemctl", "start", "berth-demo-renew.service"); err != nil {
			t.Fatalf("berth-demo-renew.service: %v %s\n%s", err, out, run(t, "journalctl", "-q", "-o", "cat", "-u", "berth-demo-renew.service"))
		}
		lines := strings.Split(grepLines(run(t, "journalctl", "-q", "-o", "cat", "-u", "berth-demo-renew.service", "--since", since), "demo certificate"), "\n")
		return lines[len(lines)-1]
	}
	before := servedCert(t, env["BERTH_DEMO_HTTPS"], "demo.localhost")
	quiet := renew()
	run(t, "mkdir", "-p", "/run/systemd/system/berth-demo-renew.service.d")
	run(t, "sh", "-c", "printf '[Service]\\nEnvironment=FORCE=1\\n' > /run/systemd/system/berth-demo-renew.service.d/force.conf && systemctl daemon-reload")
	forced := renew()
	run(t, "sh", "-c", "rm -r /run/systemd/system/berth-demo-renew.service.d && systemctl daemon-reload")
	after := servedCert(t, env["BERTH_DEMO_HTTPS"], "demo.localhost")
	if !strings.Contains(quiet, "nothing changed") || !strings.Contains(forced, "replaced (") || after.SerialNumber.Cmp(before.SerialNumber) == 0 {
		t.Fatalf("berth-demo-renew.service: %q, then forced: %q; served serial %x → %x", quiet, forced, before.SerialNumber, after.SerialNumber)
	}
	t.Logf("berth-demo-renew.service (%s): %s; forced: %s; served serial %x → %x",
		strings.Join(strings.Fields(run(t, "systemctl", "show", "-p", "NoNewPrivileges,ProtectKernelTunables,UMask", "berth-demo-renew.service")), " "), quiet, forced,
		before.SerialNumber, after.SerialNumber)

	// After a reboot the demo serves again.
	if err := h.Reboot(ctx); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(3 * time.Minute)
	var body string
	for time.Now().Before(deadline) {
		if code, b, err := proxyGet("http://" + env["BERTH_DEMO_HTTP"] + "/"); err == nil && code == 200 {
			body = b
			break
		}
		time.Sleep(2 * time.Second)
	}
	if body == "" {
		t.Fatalf("the demo does not serve after a reboot:\n%s", run(t, "journalctl", "-b", "-q", "-u", "berth-demo.service"))
	}
	t.Logf("after a reboot: %s is-active %s; GET / → %q", "berth-demo.service", run(t, "systemctl", "is-active", "berth-demo.service"), body)

	t.Logf("units:uninstall:\n%s", run(t, "/usr/local/sbin/berth", "units:uninstall"))
	// (systemctl list-unit-files exits 1 when it lists nothing)
	if left := run(t, "sh", "-c", "systemctl list-unit-files --no-legend 'berth*' || true"); left != "" {
		t.Fatalf("units left after uninstall:\n%s", left)
	}
	if left, _ := h.Run(ctx, "sh", "-c", "ls /etc/systemd/system | grep berth; systemctl list-units --no-legend --all 'berth*'"); strings.TrimSpace(left) != "" {
		t.Fatalf("left after uninstall:\n%s", left)
	}
	t.Logf("after units:uninstall: systemctl list-unit-files 'berth*' is empty, no berth file or unit left")
}

// grepLines keeps the lines of s containing one of words.
func grepLines(s string, words ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

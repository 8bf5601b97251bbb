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
// binary builds the demo and installs the units; the switch timer (every 2 minutes) rotates the containers;
// a switch onto a broken container starts the repair through OnFailure=; after a reboot the demo serves
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
	env := demoEnv(t, "/var/lib/lxc", "dir")
	conf := "[Demo]\nSwitchEvery=2min\n"
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

	// A broken idle container: the next switch fails, OnFailure= starts the repair.
	st := active()
	idle := "demo1"
	if strings.Contains(st, "demo1") {
		idle = "demo2"
	}
	run(t, "rm", "/var/lib/lxc/"+idle+"/rootfs/usr/sbin/init")
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

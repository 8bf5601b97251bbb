package units

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"berth/internal/budget"
	"berth/internal/config"
	"berth/internal/fsx"
	"berth/internal/testutil"
)

// dayDivisors are every switch period config accepts: whole minutes dividing a day.
func dayDivisors() []time.Duration {
	var out []time.Duration
	for m := 1; m <= 1440; m++ {
		if 1440%m == 0 {
			out = append(out, time.Duration(m)*time.Minute)
		}
	}
	return out
}

var calendarRE = regexp.MustCompile(`^\*-\*-\* (\*|\d\d(?:/\d+)?):(\d\d(?:/\d+)?):(\d\d)$`)

// ticks evaluates the expressions SwitchCalendar and UpgradeCalendar write ("*-*-* H:M:S", H being "*",
// "HH" or "HH/step", M "MM" or "MM/step") into the seconds of a day they fire at.
func ticks(t *testing.T, exprs []string) []int {
	t.Helper()
	field := func(f string, max int) []int {
		if f == "*" {
			f = "00/1"
		}
		start, step, rep := strings.Cut(f, "/")
		a, _ := strconv.Atoi(start)
		if !rep {
			return []int{a}
		}
		s, _ := strconv.Atoi(step)
		var out []int
		for v := a; v < max; v += s {
			out = append(out, v)
		}
		return out
	}
	var out []int
	for _, e := range exprs {
		m := calendarRE.FindStringSubmatch(e)
		if m == nil {
			t.Fatalf("%q is not of the form berth writes", e)
		}
		sec, _ := strconv.Atoi(m[3])
		for _, h := range field(m[1], 24) {
			for _, mi := range field(m[2], 60) {
				out = append(out, h*3600+mi*60+sec)
			}
		}
	}
	slices.Sort(out)
	return out
}

func TestSwitchCalendar(t *testing.T) {
	for every, want := range map[time.Duration][]string{
		30 * time.Minute:  {"*-*-* *:00/30:00"},
		2 * time.Minute:   {"*-*-* *:00/2:00"},
		time.Minute:       {"*-*-* *:00/1:00"},
		time.Hour:         {"*-*-* 00/1:00:00"},
		8 * time.Hour:     {"*-*-* 00/8:00:00"},
		24 * time.Hour:    {"*-*-* 00:00:00"},
		90 * time.Minute:  {"*-*-* 00/3:00:00", "*-*-* 01/3:30:00"},
		48 * time.Minute:  {"*-*-* 00/4:00:00", "*-*-* 00/4:48:00", "*-*-* 01/4:36:00", "*-*-* 02/4:24:00", "*-*-* 03/4:12:00"},
		288 * time.Minute: {"*-*-* 00:00:00", "*-*-* 04:48:00", "*-*-* 09:36:00", "*-*-* 14:24:00", "*-*-* 19:12:00"},
	} {
		if got, err := SwitchCalendar(every); err != nil || !slices.Equal(got, want) {
			t.Errorf("%s: %q %v; want %q", every, got, err, want)
		}
	}
	// Every period config accepts: the ticks are exactly every period from midnight, nothing else.
	for _, every := range dayDivisors() {
		exprs, err := SwitchCalendar(every)
		if err != nil {
			t.Fatal(err)
		}
		got := ticks(t, exprs)
		var want []int
		for s := 0; s < 86400; s += int(every / time.Second) {
			want = append(want, s)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: %q fires at %d times of day, want %d every %s", every, exprs, len(got), len(want), every)
		}
	}
	for _, bad := range []time.Duration{0, 30 * time.Second, 7 * time.Minute, 90 * time.Second, 48 * time.Hour} {
		if _, err := SwitchCalendar(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestUpgradeCalendar(t *testing.T) {
	for _, tc := range []struct {
		at    string
		every time.Duration
		want  string
		moved bool
	}{
		{"03:02", 30 * time.Minute, "*-*-* 03:02:00", false},
		{"03:02", 2 * time.Minute, "*-*-* 03:03:00", true},
		{"03:02", time.Minute, "*-*-* 03:02:30", true},
		{"03:00", 30 * time.Minute, "*-*-* 03:15:00", true},
		{"00:00", 24 * time.Hour, "*-*-* 12:00:00", true},
		{"23:58", 2 * time.Minute, "*-*-* 23:59:00", true},
	} {
		got, note, err := UpgradeCalendar(tc.at, tc.every)
		if err != nil || got != tc.want || (note != "") != tc.moved {
			t.Errorf("%s every %s: %q note %q %v; want %q (moved %v)", tc.at, tc.every, got, note, err, tc.want, tc.moved)
		}
	}
	// For every period and every minute of the day: never on a switch tick, at most half a period late.
	for _, every := range dayDivisors() {
		period := int(every / time.Second)
		for m := 0; m < 1440; m++ {
			at := fmt.Sprintf("%02d:%02d", m/60, m%60)
			expr, _, err := UpgradeCalendar(at, every)
			if err != nil {
				t.Fatal(err)
			}
			s := ticks(t, []string{expr})
			if len(s) != 1 || s[0]%period == 0 || s[0] < m*60 || s[0] > m*60+period/2 {
				t.Fatalf("%s every %s: %q", at, every, expr)
			}
		}
	}
	for _, bad := range []string{"3:02", "24:00", "03:60", "0302", ""} {
		if _, _, err := UpgradeCalendar(bad, 30*time.Minute); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func loadConfig(t *testing.T, file string, env map[string]string) *config.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "berth.conf")
	if file != "" {
		if err := os.WriteFile(path, []byte(file), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c, err := config.LoadFrom(path, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func generate(t *testing.T, c *config.Config) map[string]File {
	t.Helper()
	files, err := Generate(c)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]File{}
	for _, f := range files {
		out[f.Path] = f
	}
	return out
}

func one(t *testing.T, f File, section, name string) string {
	t.Helper()
	v := f.Values(section, name)
	if len(v) != 1 {
		t.Fatalf("%s: [%s] %s = %q, want one value", f.Path, section, name, v)
	}
	return v[0]
}

func TestGenerateDefaults(t *testing.T) {
	c, err := DefaultConfig()
	if err != nil {
		t.Fatal(err)
	}
	files, err := Generate(c)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := Generate(c)
	var paths []string
	for i, f := range files {
		paths = append(paths, f.Path)
		if !bytes.Equal(f.Bytes(), again[i].Bytes()) {
			t.Errorf("%s: two generations differ", f.Path)
		}
	}
	want := []string{DemoRenew, DemoRenewTimer, RestoreCrash, Switch, SwitchTimer, Upgrade, UpgradeTimer, Demo, Machines, Renew, RenewTimer,
		"systemd-nspawn@haproxy.service.d/" + OrderDropIn, "systemd-nspawn@relaycreator.service.d/" + OrderDropIn,
		"systemd-nspawn@strfry.service.d/" + OrderDropIn}
	if !slices.Equal(paths, want) {
		t.Fatalf("files %q\nwant %q", paths, want)
	}
	u := generate(t, c)

	targets := map[string]string{Demo: "demo:start", Switch: "demo:switch", Upgrade: "demo:upgrade", RestoreCrash: "demo:restoreCrash", Renew: "relay:renew", DemoRenew: "demo:renew"}
	for name, target := range targets {
		f := u[name]
		if one(t, f, "Service", "ExecStart") != "/usr/local/sbin/berth "+target || one(t, f, "Service", "Type") != "oneshot" ||
			one(t, f, "Service", "EnvironmentFile") != "-/etc/berth/berth.env" ||
			one(t, f, "Service", "Environment") != "BERTH_CONFIG=/etc/berth/berth.conf" || one(t, f, "Service", "TimeoutStartSec") == "" {
			t.Errorf("%s:\n%s", name, f.Bytes())
		}
		if b := string(f.Bytes()); strings.Contains(b, "go run") || strings.Contains(b, "mage") {
			t.Errorf("%s runs go or mage:\n%s", name, b)
		}
	}
	// The demo's jobs are given their lock wait plus their work (internal/budget, which the demo waits
	// with): the repair outwaits an upgrade, which outwaits a switch.
	for name, job := range map[string]budget.Job{Demo: budget.Start, Switch: budget.Switch, Upgrade: budget.Upgrade, RestoreCrash: budget.RestoreCrash, DemoRenew: budget.Renew} {
		if got := one(t, u[name], "Service", "TimeoutStartSec"); got != Span(job.Timeout()) {
			t.Errorf("%s: TimeoutStartSec=%s, want %s (%s waits %s for the lock, then works %s)", name, got, Span(job.Timeout()), job.What, job.LockWait, job.Work)
		}
	}
	if one(t, u[Demo], "Service", "TimeoutStopSec") != Span(budget.Stop.Timeout()) || budget.RestoreCrash.LockWait < budget.Upgrade.Timeout() ||
		budget.Upgrade.LockWait < budget.Switch.Timeout() || !budget.Yields(budget.Upgrade.What) || budget.Yields(budget.Switch.What) {
		t.Errorf("budgets: stop %s, repair waits %s for an upgrade of %s, upgrade waits %s for a switch of %s",
			one(t, u[Demo], "Service", "TimeoutStopSec"), budget.RestoreCrash.LockWait, budget.Upgrade.Timeout(), budget.Upgrade.LockWait, budget.Switch.Timeout())
	}
	if one(t, u[Demo], "Service", "ExecStop") != "/usr/local/sbin/berth demo:stop" || one(t, u[Demo], "Service", "RemainAfterExit") != "yes" ||
		one(t, u[Demo], "Install", "WantedBy") != "multi-user.target" || !strings.Contains(one(t, u[Demo], "Unit", "After"), "network-online.target") {
		t.Errorf("%s:\n%s", Demo, u[Demo].Bytes())
	}
	if one(t, u[Switch], "Unit", "OnFailure") != RestoreCrash || one(t, u[Demo], "Unit", "OnFailure") != RestoreCrash ||
		len(u[Upgrade].Values("Unit", "OnFailure")) != 0 || len(u[RestoreCrash].Values("Unit", "OnFailure")) != 0 {
		t.Error("OnFailure= must start the repair after a failed switch or demo start, and only then")
	}
	if one(t, u[SwitchTimer], "Timer", "OnCalendar") != "*-*-* *:00/30:00" || one(t, u[SwitchTimer], "Timer", "AccuracySec") != "1s" ||
		one(t, u[SwitchTimer], "Timer", "Persistent") != "false" || one(t, u[SwitchTimer], "Unit", "PartOf") != Demo ||
		one(t, u[SwitchTimer], "Install", "WantedBy") != Demo {
		t.Errorf("%s:\n%s", SwitchTimer, u[SwitchTimer].Bytes())
	}
	if one(t, u[UpgradeTimer], "Timer", "OnCalendar") != "*-*-* 03:02:00" || one(t, u[UpgradeTimer], "Timer", "Persistent") != "true" ||
		one(t, u[UpgradeTimer], "Unit", "PartOf") != Demo {
		t.Errorf("%s:\n%s", UpgradeTimer, u[UpgradeTimer].Bytes())
	}
	if one(t, u[RenewTimer], "Timer", "OnCalendar") != "daily" || one(t, u[RenewTimer], "Timer", "Persistent") != "true" ||
		one(t, u[RenewTimer], "Timer", "RandomizedDelaySec") != "1h" || one(t, u[RenewTimer], "Install", "WantedBy") != "timers.target" {
		t.Errorf("%s:\n%s", RenewTimer, u[RenewTimer].Bytes())
	}
	nspawn := "systemd-nspawn@mysql.service systemd-nspawn@relaycreator.service systemd-nspawn@haproxy.service systemd-nspawn@strfry.service"
	if one(t, u[Machines], "Unit", "Wants") != nspawn || one(t, u[Machines], "Unit", "After") != nspawn ||
		one(t, u[Machines], "Install", "WantedBy") != "multi-user.target" {
		t.Errorf("%s:\n%s", Machines, u[Machines].Bytes())
	}
	for m, prev := range map[string]string{"relaycreator": "mysql", "haproxy": "relaycreator", "strfry": "haproxy"} {
		f := u["systemd-nspawn@"+m+".service.d/"+OrderDropIn]
		if one(t, f, "Unit", "After") != "systemd-nspawn@"+prev+".service" || len(f.Options) != 1 || f.Installable() || f.Unit() != "systemd-nspawn@"+m+".service" {
			t.Errorf("%s:\n%s", f.Path, f.Bytes())
		}
	}

	// The demo's jobs wait for a demo being brought up, are skipped while the demo is not built, and never
	// cancel each other.
	built := []string{"|/var/lib/lxc/demo1/config", "|/var/lib/lxc/demo2/config"}
	for _, name := range []string{Demo, Switch, Upgrade, RestoreCrash} {
		f := u[name]
		if !slices.Equal(f.Values("Unit", "ConditionPathExists"), built) {
			t.Errorf("%s: conditions %q", name, f.Values("Unit", "ConditionPathExists"))
		}
		after := strings.Fields(strings.Join(f.Values("Unit", "After"), " "))
		if name != Demo && !slices.Contains(after, Demo) {
			t.Errorf("%s is not After=%s", name, Demo)
		}
		if slices.Contains(after, Switch) || slices.Contains(after, Upgrade) || len(f.Values("Unit", "Before")) > 0 {
			t.Errorf("%s orders itself against another job: %q", name, after)
		}
	}
	for _, f := range files {
		if len(f.Values("Unit", "Conflicts")) > 0 || len(f.Values("Unit", "Requisite")) > 0 {
			t.Errorf("%s: Conflicts=/Requisite= would cancel or refuse a job", f.Path)
		}
		// Every berth unit referred to is generated.
		for _, o := range f.Options {
			if o.Name == "After" || o.Name == "Wants" || o.Name == "OnFailure" || o.Name == "PartOf" || o.Name == "WantedBy" {
				for _, ref := range strings.Fields(o.Value) {
					if strings.HasPrefix(ref, "berth-") && u[ref].Path == "" {
						t.Errorf("%s: %s=%s is not generated", f.Path, o.Name, ref)
					}
				}
			}
		}
	}

	// Hardening: the container jobs carry exactly ContainerJobHardening, nothing that containers inherit and
	// that would break them; the renewal carries RenewHardening.
	forbidden := []string{"NoNewPrivileges", "RestrictSUIDSGID", "ProtectHostname", "PrivateTmp", "ProtectHome", "ProtectSystem",
		"ProtectClock", "PrivateDevices", "ProtectKernelLogs", "ProtectKernelModules", "ProtectKernelTunables", "ProtectControlGroups",
		"MemoryDenyWriteExecute", "RestrictNamespaces", "RestrictAddressFamilies", "CapabilityBoundingSet", "PrivateNetwork", "DevicePolicy"}
	for _, name := range []string{Demo, Switch, Upgrade, RestoreCrash} {
		for _, o := range ContainerJobHardening {
			if one(t, u[name], "Service", o.Name) != o.Value {
				t.Errorf("%s lacks %s=%s", name, o.Name, o.Value)
			}
		}
		for _, k := range forbidden {
			if len(u[name].Values("Service", k)) > 0 {
				t.Errorf("%s sets %s, which its containers would inherit or which hides the host from it", name, k)
			}
		}
	}
	for _, o := range RenewHardening {
		for _, name := range []string{Renew, DemoRenew} {
			if one(t, u[name], "Service", o.Name) != o.Value {
				t.Errorf("%s lacks %s=%s", name, o.Name, o.Value)
			}
		}
	}
	if one(t, u[DemoRenewTimer], "Timer", "OnCalendar") != "daily" || one(t, u[DemoRenewTimer], "Timer", "Persistent") != "true" ||
		one(t, u[DemoRenewTimer], "Unit", "PartOf") != Demo || one(t, u[DemoRenewTimer], "Install", "WantedBy") != Demo {
		t.Errorf("%s:\n%s", DemoRenewTimer, u[DemoRenewTimer].Bytes())
	}
	if one(t, u[Renew], "Unit", "ConditionPathExists") != "/var/lib/berth/relay/secrets.env" {
		t.Errorf("%s:\n%s", Renew, u[Renew].Bytes())
	}
}

// TestTargetsExist checks that every target the units run is a target of berth, for each namespace whose
// magefile exists (the demo's targets are checked as soon as magefiles/demo.go does).
func TestTargetsExist(t *testing.T) {
	c, err := DefaultConfig()
	if err != nil {
		t.Fatal(err)
	}
	root := testutil.RepoRoot(t)
	for _, f := range generateList(t, c) {
		for _, k := range []string{"ExecStart", "ExecStop"} {
			for _, line := range f.Values("Service", k) {
				target := strings.Fields(line)[1]
				ns, name, _ := strings.Cut(target, ":")
				src, err := os.ReadFile(filepath.Join(root, "magefiles", ns+".go"))
				if os.IsNotExist(err) {
					t.Logf("%s: %s=%s: magefiles/%s.go does not exist yet", f.Path, k, line, ns)
					continue
				}
				method := strings.ToUpper(name[:1]) + name[1:]
				decl := fmt.Sprintf("func (%s) %s()", strings.ToUpper(ns[:1])+ns[1:], method)
				if !strings.Contains(string(src), decl) {
					t.Errorf("%s: %s=%s: magefiles/%s.go has no %s", f.Path, k, line, ns, decl)
				}
			}
		}
	}
}

func generateList(t *testing.T, c *config.Config) []File {
	t.Helper()
	files, err := Generate(c)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestGenerateFromConfiguration(t *testing.T) {
	file := "[Paths]\nBinary=/opt/my berth/100%/berth\nState=/root/berth-state\nLXC=/srv/lxc\n\n" +
		"[Demo]\nSwitchEvery=2min\nUpgradeAt=03:02\nContainers=blue green\n\n[Relay]\nMachines=strfry\n"
	c := loadConfig(t, file, nil)
	u := generate(t, c)
	if one(t, u[SwitchTimer], "Timer", "OnCalendar") != "*-*-* *:00/2:00" || one(t, u[SwitchTimer], "Unit", "Description") != "berth demo: switch every 2min" {
		t.Errorf("%s:\n%s", SwitchTimer, u[SwitchTimer].Bytes())
	}
	if one(t, u[UpgradeTimer], "Timer", "OnCalendar") != "*-*-* 03:03:00" || !strings.Contains(string(u[UpgradeTimer].Bytes()), "# 03:02 falls on a switch (every 2min)") ||
		one(t, u[UpgradeTimer], "Unit", "Description") != "berth demo: nightly upgrade at 03:03:00" {
		t.Errorf("%s:\n%s", UpgradeTimer, u[UpgradeTimer].Bytes())
	}
	if got := one(t, u[Switch], "Service", "ExecStart"); got != `"/opt/my berth/100%%/berth" demo:switch` {
		t.Errorf("ExecStart=%s", got)
	}
	if got := one(t, u[Switch], "Service", "Environment"); got != "BERTH_CONFIG="+c.File {
		t.Errorf("Environment=%s", got)
	}
	if got := u[Switch].Values("Unit", "ConditionPathExists"); !slices.Equal(got, []string{"|/srv/lxc/blue/config", "|/srv/lxc/green/config"}) {
		t.Errorf("conditions %q", got)
	}
	if len(u[Renew].Values("Service", "ProtectHome")) != 0 || !strings.Contains(string(u[Renew].Bytes()), "/root/berth-state is under a home directory") {
		t.Errorf("ProtectHome= with [Paths] State under /root:\n%s", u[Renew].Bytes())
	}
	if one(t, u[Machines], "Unit", "Wants") != "systemd-nspawn@strfry.service" || len(u) != 11 {
		t.Errorf("one machine: no drop-in expected, %d files", len(u))
	}

	// A relative BERTH_CONFIG becomes absolute; control characters cannot go into a unit.
	t.Chdir(t.TempDir())
	c.File = "berth.conf"
	if got := one(t, generate(t, c)[Demo], "Service", "Environment"); !strings.HasPrefix(got, "BERTH_CONFIG=/") {
		t.Errorf("Environment=%s", got)
	}
	c.Paths.Binary = "/usr/local/sbin/berth\nExecStartPre=/bin/evil"
	if _, err := Generate(c); err == nil || !strings.Contains(err.Error(), "[Paths] Binary") {
		t.Errorf("a newline in [Paths] Binary: %v", err)
	}
}

func TestQuoting(t *testing.T) {
	for in, want := range map[string]string{"/usr/local/sbin/berth": "/usr/local/sbin/berth", "/a b": `"/a b"`, `/a"b`: `"/a\"b"`,
		"/50%": "/50%%", "/x$HOME": "/x$$HOME", `/a\b`: `"/a\\b"`} {
		if got := execLine(in); got != want {
			t.Errorf("execLine(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestWriteDirAndGenerateDir(t *testing.T) {
	c, _ := DefaultConfig()
	files := generateList(t, c)
	dir := t.TempDir()
	changes, err := GenerateDir(dir, files)
	if err != nil || len(changes) != len(files) || changes[0].State != New {
		t.Fatalf("%v %v", changes, err)
	}
	// The operator's own files stay; berth's files that are not generated any more go.
	os.WriteFile(filepath.Join(dir, "nginx.service"), []byte("[Unit]\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "systemd-nspawn@strfry.service.d", "10-mine.conf"), []byte("[Unit]\n"), 0o644)
	os.MkdirAll(filepath.Join(dir, "systemd-nspawn@old.service.d"), 0o755)
	os.WriteFile(filepath.Join(dir, "systemd-nspawn@old.service.d", OrderDropIn), []byte("[Unit]\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "berth-old.timer"), []byte("[Timer]\n"), 0o644)
	// A reformatted file (same settings) and a changed one.
	sw := filepath.Join(dir, SwitchTimer)
	b, _ := os.ReadFile(sw)
	os.WriteFile(sw, bytes.ReplaceAll(b, []byte("# "), []byte("#  ")), 0o644)
	os.WriteFile(filepath.Join(dir, Switch), []byte("[Service]\nExecStart=/bin/true\n"), 0o644)
	if st, _ := Stale(dir, files); len(st) != 4 {
		t.Errorf("stale: %q", st)
	}

	changes, err = GenerateDir(dir, files)
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, ch := range changes {
		states[ch.Path] = ch.State
	}
	if states[SwitchTimer] != Reformatted || states[Switch] != Changed || states[Demo] != Unchanged ||
		states["berth-old.timer"] != Removed || states["systemd-nspawn@old.service.d/"+OrderDropIn] != Removed {
		t.Errorf("states: %v", states)
	}
	for _, keep := range []string{"nginx.service", "systemd-nspawn@strfry.service.d/10-mine.conf"} {
		if _, err := os.Stat(filepath.Join(dir, keep)); err != nil {
			t.Errorf("%s was removed", keep)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "systemd-nspawn@old.service.d")); !os.IsNotExist(err) {
		t.Error("the emptied drop-in directory stays")
	}
	if st, err := Stale(dir, files); len(st) != 0 || err != nil {
		t.Errorf("after GenerateDir: %q %v", st, err)
	}
	if changes, _ := GenerateDir(dir, files); slices.ContainsFunc(changes, func(c Change) bool { return c.State != Unchanged }) {
		t.Errorf("a second run changed something: %v", changes)
	}
}

func TestOwnedAndManifest(t *testing.T) {
	for p, want := range map[string]bool{"berth-demo.service": true, "berth-x.timer": true, "berth-machines.target": true,
		"systemd-nspawn@a.service.d/" + OrderDropIn: true, "nginx.service": false, "berth-demo.service.d/x.conf": false,
		"berth.conf": false, "multi-user.target.wants/berth-demo.service": false, "a.d/b/" + OrderDropIn: false} {
		if Owned(p) != want {
			t.Errorf("Owned(%q) = %v", p, !want)
		}
	}
	path := filepath.Join(t.TempDir(), "state", "units.manifest")
	if m, err := ReadManifest(path); err != nil || len(m) != 0 {
		t.Fatalf("missing manifest: %v %v", m, err)
	}
	if err := (Manifest{Switch, Demo, Switch}).Write(path); err != nil {
		t.Fatal(err)
	}
	if m, err := ReadManifest(path); err != nil || !slices.Equal(m, []string{Switch, Demo}) {
		t.Fatalf("manifest %q %v", m, err)
	}
	os.WriteFile(path, []byte("berth-demo.service\n/etc/passwd\n"), 0o644)
	if _, err := ReadManifest(path); err == nil {
		t.Fatal("a manifest naming /etc/passwd was accepted")
	}
}

// TestUnitsDirIsCurrent fails when units/ differs from what the generator makes for the default
// configuration.
func TestUnitsDirIsCurrent(t *testing.T) {
	c, err := DefaultConfig()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(testutil.RepoRoot(t), "units")
	stale, err := Stale(dir, generateList(t, c))
	if err != nil {
		t.Fatal(err)
	}
	if len(stale) > 0 {
		t.Fatalf("units/ is stale:\n  %s\nregenerate it with `./mage units:generate` (from the checkout) and commit the result",
			strings.Join(stale, "\n  "))
	}
}

func TestSourceDir(t *testing.T) {
	t.Chdir(testutil.RepoRoot(t))
	if SourceDir() == "" {
		t.Error("the checkout is not recognised")
	}
	t.Chdir(t.TempDir())
	if SourceDir() != "" {
		t.Error("an empty directory is taken for a checkout")
	}
}

func sum(t *testing.T, p string) string {
	t.Helper()
	s, err := fsx.FileSHA256(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPullTimer: berth-machines-pull.timer exists only with [Publish] PullEvery, and runs `berth pull`.
func TestPullTimer(t *testing.T) {
	if u := generate(t, loadConfig(t, "", nil)); u[PullTimer].Path != "" || u[Pull].Path != "" {
		t.Fatal("a pull timer without [Publish] PullEvery")
	}
	u := generate(t, loadConfig(t, "[Publish]\nPullEvery=6h\n", nil))
	if one(t, u[PullTimer], "Timer", "OnUnitActiveSec") != "6h" || one(t, u[PullTimer], "Install", "WantedBy") != "timers.target" {
		t.Errorf("%s:\n%s", PullTimer, u[PullTimer].Bytes())
	}
	if got := one(t, u[Pull], "Service", "ExecStart"); got != "/usr/local/sbin/berth pull" {
		t.Errorf("ExecStart=%s", got)
	}
	if _, err := config.LoadFrom(filepath.Join(t.TempDir(), "x"), func(k string) (string, bool) {
		return "1min", k == "BERTH_PUBLISH_PULLEVERY"
	}); err == nil || !strings.Contains(err.Error(), "[Publish] PullEvery") {
		t.Errorf("PullEvery=1min: %v", err)
	}
}

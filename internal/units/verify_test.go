package units

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/unit"

	"berth/internal/config"
	"berth/internal/run"
	"berth/internal/testutil"
)

// requireAnalyze skips (fails under CI=true) without systemd-analyze and the systemd-nspawn@.service
// template the drop-ins extend. Neither root nor a running systemd is needed.
func requireAnalyze(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		testutil.SkipOrFail(t, "needs systemd-analyze (Debian package systemd)")
	}
	if _, err := os.Stat("/usr/lib/systemd/system/systemd-nspawn@.service"); err != nil {
		testutil.SkipOrFail(t, "needs systemd-nspawn@.service (Debian package systemd-container)")
	}
}

// TestVerifyGenerated runs systemd-analyze verify and calendar on the units of several configurations.
func TestVerifyGenerated(t *testing.T) {
	requireAnalyze(t)
	def, err := DefaultConfig()
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*config.Config{
		"defaults":   def,
		"2min":       loadConfig(t, "[Demo]\nSwitchEvery=2min\n", nil),
		"pull timer": loadConfig(t, "[Publish]\nPullEvery=6h\n", nil),
		"48min, one machine, odd paths": loadConfig(t, "[Paths]\nBinary=/opt/my berth/100%/berth\nState=/root/s\n"+
			"[Demo]\nSwitchEvery=48min\nUpgradeAt=00:00\n[Relay]\nMachines=strfry\n", nil),
	} {
		files := generateList(t, c)
		out, err := Verify(context.Background(), files)
		if err != nil {
			t.Errorf("%s: %v\n%s", name, err, strings.Join(out, "\n"))
			continue
		}
		units, calendars := 0, 0
		for _, l := range out {
			if strings.HasSuffix(l, ": ok") {
				units++
			}
			if strings.Contains(l, "OnCalendar=") && strings.Contains(l, ": next ") {
				calendars++
			}
		}
		want := 0
		for _, f := range files {
			want += len(f.Values("Timer", "OnCalendar"))
		}
		if units != len(files) || calendars != want {
			t.Errorf("%s: %d units ok of %d, %d calendars of %d:\n%s", name, units, len(files), calendars, want, strings.Join(out, "\n"))
		}
		t.Logf("%s: %d units and %d OnCalendar= clean", name, units, calendars)
	}
}

// TestVerifyFindsMistakes makes sure Verify is not blind: an unknown setting (which systemd-analyze only
// warns about), a bad drop-in, a missing binary and a bad calendar are each reported.
func TestVerifyFindsMistakes(t *testing.T) {
	requireAnalyze(t)
	c, _ := DefaultConfig()
	files := generateList(t, c)
	broken := slices.Clone(files)
	for i, f := range broken {
		switch f.Path {
		case Switch:
			f.Options = append(slices.Clone(f.Options), unit.NewUnitOption("Service", "ProtectHomee", "yes"))
		case "systemd-nspawn@strfry.service.d/" + OrderDropIn:
			f.Options = append(slices.Clone(f.Options), unit.NewUnitOption("Unit", "Afterr", "x.service"))
		case UpgradeTimer:
			f.Options = append(slices.Clone(f.Options), unit.NewUnitOption("Timer", "OnCalendar", "*-*-* 25:00:00"))
		}
		broken[i] = f
	}
	out, err := Verify(context.Background(), broken)
	if err == nil {
		t.Fatalf("no error:\n%s", strings.Join(out, "\n"))
	}
	for _, want := range []string{"ProtectHomee", "Afterr", "25:00:00"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not name %s: %v", want, err)
		}
	}
	if got := executables(generateList(t, loadConfig(t, "[Paths]\nBinary=/opt/my berth/100%/berth\n", nil))); !slices.Equal(got, []string{"/opt/my berth/100%/berth"}) {
		t.Errorf("executables: %q", got)
	}
	t.Logf("found: %v", err)
}

// TestCalendarAgainstSystemd asks systemd itself when the switch timer of every accepted period fires over
// one day (in UTC): exactly every period from midnight. And the upgrade, moved off a tick, fires once.
func TestCalendarAgainstSystemd(t *testing.T) {
	requireAnalyze(t)
	ctx := context.Background()
	day := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	elapses := func(exprs []string, perExpr int) []time.Time {
		t.Helper()
		argv := append([]string{"systemd-analyze", "calendar", "--base-time=" + day.Add(-time.Second).Format("2006-01-02 15:04:05 UTC"),
			fmt.Sprintf("--iterations=%d", perExpr)}, exprs...)
		out, err := (run.Cmd{Argv: argv, Env: []string{"TZ=UTC"}, Timeout: time.Minute, Quiet: true}).Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ts []time.Time
		for _, l := range strings.Split(string(out), "\n") {
			k, v, _ := strings.Cut(strings.TrimSpace(l), ": ")
			if k == "Normalized form" && !slices.Contains(exprs, v) {
				t.Errorf("systemd normalizes to %q, not one of %q", v, exprs)
			}
			if k == "Next elapse" || strings.HasPrefix(k, "Iter. #") {
				tm, err := time.Parse("Mon 2006-01-02 15:04:05 MST", v)
				if err != nil {
					t.Fatalf("%q: %v", v, err)
				}
				ts = append(ts, tm)
			}
		}
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
		return ts
	}
	for _, every := range dayDivisors() {
		exprs, _ := SwitchCalendar(every)
		n := int(24 * time.Hour / every)
		got := elapses(exprs, n/len(exprs))
		if len(got) != n {
			t.Fatalf("%s: %d elapses, want %d", every, len(got), n)
		}
		for i, tm := range got {
			if want := day.Add(time.Duration(i) * every); !tm.Equal(want) {
				t.Fatalf("%s: elapse %d at %s, want %s (%q)", every, i, tm, want, exprs)
			}
		}
		expr, _, _ := UpgradeCalendar("03:02", every)
		up := elapses([]string{expr}, 1)
		if len(up) != 1 || up[0].Sub(day)%every == 0 {
			t.Errorf("%s: upgrade %q at %v falls on a switch", every, expr, up)
		}
	}
	t.Logf("systemd agrees for all %d switch periods that divide a day", len(dayDivisors()))
}

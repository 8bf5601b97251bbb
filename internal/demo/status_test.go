package demo

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"berth/internal/config"
	"berth/internal/systemd"
)

// TestAppSummary: demo:status shows one line per app from the newest build log of the demo's image, and the
// total; an image that installs no app shows nothing.
func TestAppSummary(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "yunohost-20261201-030000.log"), []byte("app old: installed at /old\napps: 0 failed\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "yunohost-20261202-030000.log"), []byte("### step\n"+
		"app hextris: installed at /hextris\nsome: noise\napp nextcloud: FAILED (exit 1), left out of the demo\x1b[2J\n"+
		"apps: 1 failed\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "demo-web-20261203-030000.log"), []byte("nothing about apps\n"), 0o600)
	lines, log := appSummary(dir, "yunohost")
	want := []string{"app hextris: installed at /hextris", "app nextcloud: FAILED (exit 1), left out of the demo[2J", "apps: 1 failed"}
	if !slices.Equal(lines, want) || filepath.Base(log) != "yunohost-20261202-030000.log" {
		t.Fatalf("summary %q from %s", lines, log)
	}
	if lines, _ := appSummary(dir, "demo-web"); lines != nil {
		t.Fatalf("an image without apps: %q", lines)
	}
	t.Logf("from %s:\n%s", filepath.Base(log), strings.Join(lines, "\n"))
}

// TestStatusTimersNotInstalled: without units:install's manifest, status says the timers are not installed
// and names no next switch from the configuration.
func TestStatusTimersNotInstalled(t *testing.T) {
	t.Setenv("BERTH_CONFIG", "/nonexistent")
	c, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	c.Paths.State = t.TempDir()
	d := &Demo{c: c, cfg: c.Demo}
	rows := strings.Join(d.statusTimers(context.Background()), "\n")
	if !strings.Contains(rows, "timers\tnot installed") || !strings.Contains(rows, "next switch\tnone") {
		t.Fatalf("rows:\n%s", rows)
	}
	// Installed, systemd not answering (this test sets RunDir so that it never does).
	os.WriteFile(filepath.Join(c.Paths.State, "units.manifest"), []byte("berth-demo-switch.timer\nberth-demo-switch.service\n"), 0o644)
	old := systemd.RunDir
	systemd.RunDir = filepath.Join(t.TempDir(), "none")
	defer func() { systemd.RunDir = old }()
	rows2 := strings.Join(d.statusTimers(context.Background()), "\n")
	if !strings.Contains(rows2, "timers\tinstalled (berth-demo-switch.timer); systemd is not running") || !strings.Contains(rows2, "next switch\tabout ") {
		t.Fatalf("rows:\n%s", rows2)
	}
	t.Logf("not installed:\n%s\ninstalled, no systemd:\n%s", rows, rows2)
}

package install

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"berth/internal/config"
	"berth/internal/fsx"
	"berth/internal/systemd"
	"berth/internal/testutil"
	"berth/internal/units"
)

// TestInstallWithoutSystemd installs into temporary directories as on a host where systemd does not run:
// the binary (a copy of the running executable: this test binary) and the units are written, one line
// says what was not enabled, a second run changes nothing, a configuration change removes what is no longer
// generated, and Uninstall removes exactly the manifest's files and the symlinks to them.
func TestInstallWithoutSystemd(t *testing.T) {
	systemd.RunDir = filepath.Join(t.TempDir(), "no-systemd")
	t.Cleanup(func() { systemd.RunDir = "/run/systemd/system" })
	tmp := t.TempDir()
	conf := "[Paths]\nUnits=" + tmp + "/units\nState=" + tmp + "/state\nBinary=" + tmp + "/sbin/berth\n"
	c := loadConfig(t, conf)
	ctx := context.Background()

	rep, err := Units(ctx, c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first install:\n%s", rep)
	self, _ := os.Executable()
	a, _ := fsx.FileSHA256(self)
	b, _ := fsx.FileSHA256(c.Paths.Binary)
	if a == "" || a != b {
		t.Fatal("the binary is not a copy of the running executable")
	}
	if !strings.Contains(rep.Binary, "updated (copied from the running") || len(rep.Enabled)+len(rep.Started) != 0 {
		t.Errorf("report: %+v", rep)
	}
	if strings.Count(rep.Skipped, "\n") != 0 || !strings.Contains(rep.Skipped, "systemd is not running") ||
		!strings.Contains(rep.Skipped, "did not enable ") || !strings.Contains(rep.Skipped, units.Demo) || !strings.Contains(rep.Skipped, units.SwitchTimer) {
		t.Errorf("the line about what was not enabled: %q", rep.Skipped)
	}
	files, err := units.Generate(c)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := units.Stale(c.Paths.Units, files); len(st) != 0 {
		t.Fatalf("installed units differ: %q", st)
	}
	m, _ := units.ReadManifest(ManifestPath(c))
	if len(m) != len(files) {
		t.Fatalf("manifest %q", m)
	}

	rep, err = Units(ctx, c, Options{})
	if err != nil || !strings.Contains(rep.Binary, "unchanged") || slices.ContainsFunc(rep.Files, func(ch units.Change) bool { return ch.State != units.Unchanged }) {
		t.Fatalf("second install changed something: %v\n%s", err, rep)
	}

	// Fewer machines: the drop-ins berth no longer generates go, the operator's file stays.
	os.WriteFile(filepath.Join(c.Paths.Units, "nginx.service"), []byte("[Unit]\n"), 0o644)
	c2 := loadConfig(t, conf+"[Relay]\nMachines=mysql strfry\n")
	rep, err = Units(ctx, c2, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("install with two machines:\n%s", rep)
	var removed []string
	for _, ch := range rep.Files {
		if ch.State == units.Removed {
			removed = append(removed, ch.Path)
		}
	}
	if !slices.Equal(removed, []string{"systemd-nspawn@haproxy.service.d/" + units.OrderDropIn, "systemd-nspawn@relaycreator.service.d/" + units.OrderDropIn}) {
		t.Errorf("removed %q", removed)
	}
	if _, err := os.Stat(filepath.Join(c.Paths.Units, "systemd-nspawn@haproxy.service.d")); !os.IsNotExist(err) {
		t.Error("the emptied drop-in directory stays")
	}

	// Uninstall: manifest files and the enablement symlinks go; nothing else.
	os.MkdirAll(filepath.Join(c.Paths.Units, "multi-user.target.wants"), 0o755)
	os.Symlink("../"+units.Demo, filepath.Join(c.Paths.Units, "multi-user.target.wants", units.Demo))
	os.Symlink("/lib/systemd/system/cron.service", filepath.Join(c.Paths.Units, "multi-user.target.wants", "cron.service"))
	rep, err = Uninstall(ctx, c2)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("uninstall:\n%s", rep)
	var left []string
	filepath.WalkDir(c.Paths.Units, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(c.Paths.Units, p)
			left = append(left, rel)
		}
		return nil
	})
	if !slices.Equal(left, []string{"multi-user.target.wants/cron.service", "nginx.service"}) {
		t.Errorf("left after uninstall: %q", left)
	}
	if _, err := os.Stat(ManifestPath(c)); !os.IsNotExist(err) {
		t.Error("the manifest stays")
	}
	if _, err := os.Stat(c.Paths.Binary); err != nil {
		t.Error("uninstall removed the binary")
	}
	if rep, err := Uninstall(ctx, c2); err != nil || !strings.Contains(rep.String(), "nothing to uninstall") {
		t.Errorf("second uninstall: %v %s", err, rep)
	}
}

// TestInstallCompiles builds the binary from the checkout with mage -compile, as units:install does when it
// runs in one; an identical build is left in place.
func TestInstallCompiles(t *testing.T) {
	testutil.Require(t, "gcc", "pkg-config")
	dst := filepath.Join(t.TempDir(), "sbin", "berth")
	ctx := context.Background()
	line, err := Binary(ctx, dst, testutil.RepoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(line, "updated (compiled from") {
		t.Errorf("first: %s", line)
	}
	if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("binary: %v %v", fi, err)
	}
	line, err = Binary(ctx, dst, testutil.RepoRoot(t))
	if err != nil || !strings.Contains(line, "unchanged") {
		t.Errorf("second: %s %v", line, err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(dst)); len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	t.Log(line)
}

func TestEnvNotes(t *testing.T) {
	if n := envNotes([]string{"PATH=/bin", "BERTH_CONFIG=/x", "BERTH_DEBUG=1", "BERTH_TEST_CACHE=/c"}, "/x"); n != nil {
		t.Errorf("notes: %q", n)
	}
	n := envNotes([]string{"BERTH_DEMO_SWITCHEVERY=2min", "MYDOMAIN=a.example", "PATH=/bin"}, "/etc/berth/berth.conf")
	if len(n) != 1 || !strings.Contains(n[0], "BERTH_DEMO_SWITCHEVERY MYDOMAIN") || !strings.Contains(n[0], units.EnvFile) {
		t.Errorf("notes: %q", n)
	}
}

func loadConfig(t *testing.T, file string) *config.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "berth.conf")
	if err := os.WriteFile(path, []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := config.LoadFrom(path, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

package units

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"berth/internal/fsx"
	"berth/internal/systemd"
	"berth/internal/testutil"
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
	c := loadConfig(t, conf, nil)
	ctx := context.Background()

	rep, err := Install(ctx, c, InstallOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first install:\n%s", rep)
	self, _ := os.Executable()
	if a, b := sum(t, self), sum(t, c.Paths.Binary); a != b {
		t.Fatal("the binary is not a copy of the running executable")
	}
	if !strings.Contains(rep.Binary, "updated (copied from the running") || len(rep.Enabled)+len(rep.Started) != 0 {
		t.Errorf("report: %+v", rep)
	}
	if strings.Count(rep.Skipped, "\n") != 0 || !strings.Contains(rep.Skipped, "systemd is not running") ||
		!strings.Contains(rep.Skipped, "did not enable ") || !strings.Contains(rep.Skipped, Demo) || !strings.Contains(rep.Skipped, SwitchTimer) {
		t.Errorf("the line about what was not enabled: %q", rep.Skipped)
	}
	files := generateList(t, c)
	if st, _ := Stale(c.Paths.Units, files); len(st) != 0 {
		t.Fatalf("installed units differ: %q", st)
	}
	m, _ := ReadManifest(ManifestPath(c))
	if len(m) != len(files) {
		t.Fatalf("manifest %q", m)
	}

	rep, err = Install(ctx, c, InstallOptions{})
	if err != nil || !strings.Contains(rep.Binary, "unchanged") || slices.ContainsFunc(rep.Files, func(ch Change) bool { return ch.State != Unchanged }) {
		t.Fatalf("second install changed something: %v\n%s", err, rep)
	}

	// Fewer machines: the drop-ins berth no longer generates go, the operator's file stays.
	os.WriteFile(filepath.Join(c.Paths.Units, "nginx.service"), []byte("[Unit]\n"), 0o644)
	c2 := loadConfig(t, conf+"[Relay]\nMachines=mysql strfry\n", nil)
	rep, err = Install(ctx, c2, InstallOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("install with two machines:\n%s", rep)
	var removed []string
	for _, ch := range rep.Files {
		if ch.State == Removed {
			removed = append(removed, ch.Path)
		}
	}
	if !slices.Equal(removed, []string{"systemd-nspawn@haproxy.service.d/" + OrderDropIn, "systemd-nspawn@relaycreator.service.d/" + OrderDropIn}) {
		t.Errorf("removed %q", removed)
	}
	if _, err := os.Stat(filepath.Join(c.Paths.Units, "systemd-nspawn@haproxy.service.d")); !os.IsNotExist(err) {
		t.Error("the emptied drop-in directory stays")
	}

	// Uninstall: manifest files and the enablement symlinks go; nothing else.
	os.MkdirAll(filepath.Join(c.Paths.Units, "multi-user.target.wants"), 0o755)
	os.Symlink("../"+Demo, filepath.Join(c.Paths.Units, "multi-user.target.wants", Demo))
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
	line, err := InstallBinary(ctx, dst, testutil.RepoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(line, "updated (compiled from") {
		t.Errorf("first: %s", line)
	}
	if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("binary: %v %v", fi, err)
	}
	line, err = InstallBinary(ctx, dst, testutil.RepoRoot(t))
	if err != nil || !strings.Contains(line, "unchanged") {
		t.Errorf("second: %s %v", line, err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(dst)); len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	t.Log(line)
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

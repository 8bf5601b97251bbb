package fsx

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTreeDiff(t *testing.T) {
	a := filepath.Join(t.TempDir(), "a")
	os.MkdirAll(filepath.Join(a, "etc"), 0o755)
	os.MkdirAll(filepath.Join(a, "var/log"), 0o755)
	os.WriteFile(filepath.Join(a, "etc/conf"), []byte("one"), 0o644)
	os.WriteFile(filepath.Join(a, "var/log/syslog"), []byte("x"), 0o644)
	os.Symlink("conf", filepath.Join(a, "etc/link"))
	b := filepath.Join(t.TempDir(), "b")
	if out, err := exec.Command("cp", "-a", a, b).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	skip := func(rel string) bool { return rel == "var/log" }
	step := func(what, want string, change func()) {
		t.Helper()
		change()
		got, err := TreeDiff(a, b, skip)
		if err != nil || !strings.HasPrefix(got, want) || (want == "") != (got == "") {
			t.Fatalf("%s: TreeDiff = %q, %v; want %q", what, got, err, want)
		}
		t.Logf("%s: %q", what, got)
	}
	step("a faithful copy", "", func() {})
	step("a skipped directory's file changed", "", func() { os.WriteFile(filepath.Join(b, "var/log/syslog"), []byte("more"), 0o644) })
	step("rewritten with the same content, a new mtime", "", func() {
		os.WriteFile(filepath.Join(b, "etc/conf"), []byte("one"), 0o644)
		os.Chtimes(filepath.Join(b, "etc/conf"), time.Now(), time.Now().Add(time.Hour))
	})
	step("same size, other content", "etc/conf content", func() { os.WriteFile(filepath.Join(b, "etc/conf"), []byte("two"), 0o644) })
	os.WriteFile(filepath.Join(b, "etc/conf"), []byte("one"), 0o644)
	step("a mode", "etc/conf mode", func() { os.Chmod(filepath.Join(b, "etc/conf"), 0o600) })
	os.Chmod(filepath.Join(b, "etc/conf"), 0o644)
	step("a link target", "etc/link link target", func() { os.Remove(filepath.Join(b, "etc/link")); os.Symlink("other", filepath.Join(b, "etc/link")) })
	os.Remove(filepath.Join(b, "etc/link"))
	step("a file removed", "etc/link removed", func() {})
	os.Symlink("conf", filepath.Join(b, "etc/link"))
	step("a file added", "etc/new added", func() { os.WriteFile(filepath.Join(b, "etc/new"), nil, 0o644) })
}

func TestBytesAndMountPoint(t *testing.T) {
	for n, want := range map[int64]string{17: "17 B", 1536: "1.5 KiB", 3 << 30: "3.0 GiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
	if m, err := MountPoint("/proc/self"); err != nil || m != "/proc" {
		t.Errorf("MountPoint(/proc/self) = %q, %v", m, err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), make([]byte, 100<<10), 0o644)
	os.Link(filepath.Join(dir, "f"), filepath.Join(dir, "g"))
	if n, err := DiskUsage(dir); err != nil || n < 100<<10 || n > 200<<10 {
		t.Errorf("DiskUsage = %d, %v (a 100 KiB file with two links)", n, err)
	}
}

package fleet

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStatusShowsBrokenImage: one broken image.conf is a row of status with its one-line error; the other
// machines still get theirs, and demo containers get none.
func TestStatusShowsBrokenImage(t *testing.T) {
	dir := t.TempDir()
	for name, conf := range map[string]string{
		"good":   "[Image]\nDescription=fine\n[Health]\nTCP=127.0.0.1:1\n",
		"broken": "[Image]\nKind=machine\nCopy=nothing-like-this\n[Bogus\n",
		"democ":  "[Image]\nKind=container\n",
	} {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "image.conf"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("BERTH_CONFIG", filepath.Join(dir, "none.conf"))
	t.Setenv("BERTH_PATHS_MACHINES", filepath.Join(dir, "machines"))
	t.Setenv("BERTH_RELAY_MACHINES", "good")

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	err = All("status", Options{Images: os.DirFS(dir)})
	os.Stdout = stdout
	w.Close()
	out, _ := io.ReadAll(r)
	if err != nil {
		t.Fatalf("status failed: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], "good ") || !strings.HasPrefix(lines[2], "broken ") {
		t.Fatalf("want a header, good, then broken:\n%s", out)
	}
	if !strings.Contains(lines[2], "broken image: image broken: image.conf") || !strings.Contains(lines[1], "not installed") {
		t.Errorf("rows:\n%s", out)
	}
	t.Logf("\n%s", out)
}

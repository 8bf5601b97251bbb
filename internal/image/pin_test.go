package image

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"berth/internal/config"
)

// TestPinnedCommit: a git source is checked out at its Ref and must then be the pinned Commit; a tag that
// moved fails the step in one line and leaves no cache behind. Real git on a local repository.
func TestPinnedCommit(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("skipping: needs git")
	}
	tmp := t.TempDir()
	repo := filepath.Join(tmp, "repo")
	git := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("git", append([]string{"-C", repo, "-c", "user.name=t", "-c", "user.email=t@t"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	os.MkdirAll(repo, 0o755)
	git("init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(repo, "VERSION"), []byte("1\n"), 0o644)
	git("add", ".")
	git("commit", "-q", "-m", "one")
	first := git("rev-parse", "HEAD")
	git("tag", "v1")
	env := map[string]string{"BERTH_PATHS_CACHE": filepath.Join(tmp, "cache")}
	c, err := config.LoadFrom(filepath.Join(tmp, "absent"), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	conf := "[Source]\nName=app\nURL=" + repo + "\nRef=v1\nCommit=" + first + "\nDest=/opt/app\n"
	m, err := Load(fstest.MapFS{"x/image.conf": {Data: []byte(conf)}}, "x")
	if err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(tmp, "rootfs")
	os.MkdirAll(rootfs, 0o755)
	if err := sourceStep(c, rootfs, m.Sources[0], "").do(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(rootfs, "opt/app/VERSION")); string(b) != "1\n" {
		t.Fatalf("checkout: %q", b)
	}
	// The tag moves to another commit; a fresh cache must refuse it.
	os.WriteFile(filepath.Join(repo, "VERSION"), []byte("2, not what was reviewed\n"), 0o644)
	git("commit", "-q", "-am", "two")
	git("tag", "-f", "v1")
	moved := git("rev-parse", "HEAD")
	os.RemoveAll(filepath.Join(tmp, "cache"))
	err = sourceStep(c, rootfs, m.Sources[0], "").do(context.Background(), nil)
	want := "source app: " + repo + " at v1 is commit " + moved + ", not the pinned " + first
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("a moved tag: want one line with %q, got %v", want, err)
	}
	t.Logf("moved tag refused: %v", err)
	entries, _ := os.ReadDir(filepath.Join(tmp, "cache", "sources"))
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".lock") { // the lock that serialises clones of one source stays
			t.Fatalf("a refused checkout was cached: %v", entries)
		}
	}
	// A Ref that is a commit pins itself; a malformed Commit is refused when the manifest is read.
	m2, _ := Load(fstest.MapFS{"x/image.conf": {Data: []byte("[Source]\nName=a\nURL=u\nRef=" + first + "\nDest=/a\n")}}, "x")
	if m2.Sources[0].Commit != first {
		t.Fatalf("commit from Ref: %+v", m2.Sources[0])
	}
	if _, err := Load(fstest.MapFS{"x/image.conf": {Data: []byte("[Source]\nName=a\nURL=u\nRef=v1\nCommit=abc\nDest=/a\n")}}, "x"); err == nil ||
		!strings.Contains(err.Error(), "40 hexadecimal digits") {
		t.Fatalf("malformed commit: %v", err)
	}
}

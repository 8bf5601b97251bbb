package image

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"berth/internal/config"
	"berth/internal/testutil"
)

// TestSharedSourceSideBySide: two images built at the same time with the same source (haproxy and strfry
// share cookiecutter) clone it once into the cache and both get it.
func TestSharedSourceSideBySide(t *testing.T) {
	testutil.Require(t, "git")
	tmp := t.TempDir()
	repo := filepath.Join(tmp, "upstream")
	for _, argv := range [][]string{{"git", "init", "-q", repo}, {"sh", "-c", "echo hi > " + repo + "/README"},
		{"git", "-C", repo, "add", "README"}, {"git", "-C", repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"}} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", argv, err, out)
		}
	}
	ref, err := exec.Command("git", "-C", repo, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	c := &config.Config{}
	c.Paths.Cache = filepath.Join(tmp, "cache")
	s := Source{Name: "shared", URL: "file://" + repo, Ref: string(ref[:40]), Dest: "/opt/shared"}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		dir := filepath.Join(tmp, "tree", string(rune('a'+i)))
		os.MkdirAll(dir, 0o755)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = sourceStep(c, dir, s, "").do(context.Background(), nil)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("build %d: %v", i, err)
		}
		if b, err := os.ReadFile(filepath.Join(tmp, "tree", string(rune('a'+i)), "opt/shared/README")); err != nil || string(b) != "hi\n" {
			t.Fatalf("build %d: %q %v", i, b, err)
		}
	}
}

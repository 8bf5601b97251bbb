package fleet

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"

	"berth/internal/base"
	"berth/internal/fsx"
	"berth/internal/testutil"
	"berth/internal/testutil/testbase"
)

// TestCleanAll: the root clean removes every machine berth installed (an image folder's, and one whose folder
// is gone) and the base with its caches; a tree berth did not install and everything under [Paths] Srv stay
// (tree checksum before and after).
func TestCleanAll(t *testing.T) {
	testutil.Require(t)
	c := testbase.Config(t, map[string]string{"BERTH_PATHS_CACHE": filepath.Join(t.TempDir(), "cache")})
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stamp := func(name string) {
		write(filepath.Join(c.Paths.Machines, name, "etc/berth/image.json"), `{"image":"`+name+`"}`)
		write(filepath.Join(c.Paths.NSpawn, name+".nspawn"), "[Exec]\n")
	}
	stamp("berthclean-a") // its folder is in the images
	stamp("berthclean-b") // installed from a folder that is gone
	write(filepath.Join(c.Paths.Machines, "other", "etc/os-release"), "not berth's\n")
	write(filepath.Join(base.Dir(c), "etc/berth/base.json"), "{}")
	write(filepath.Join(c.Paths.Cache, "debootstrap", "x.tar"), "cache")
	write(filepath.Join(c.Paths.Srv, "berthclean-a", "data"), "operator data")
	write(filepath.Join(c.Paths.Srv, "berthclean-b", ".env"), "KEY=v")
	before, err := fsx.TreeSum(c.Paths.Srv)
	if err != nil {
		t.Fatal(err)
	}
	images := fstest.MapFS{"berthclean-a/image.conf": {Data: []byte("[Image]\nDescription=a\n")}}
	if err := CleanAll(context.Background(), c, images); err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{filepath.Join(c.Paths.Machines, "berthclean-a"), filepath.Join(c.Paths.Machines, "berthclean-b"),
		filepath.Join(c.Paths.NSpawn, "berthclean-b.nspawn"), base.Dir(c), c.Paths.Cache} {
		if _, err := os.Lstat(gone); !os.IsNotExist(err) {
			t.Errorf("%s is still there (%v)", gone, err)
		}
	}
	if _, err := os.Stat(filepath.Join(c.Paths.Machines, "other", "etc/os-release")); err != nil {
		t.Errorf("a tree berth did not install was removed: %v", err)
	}
	if after, _ := fsx.TreeSum(c.Paths.Srv); after != before {
		t.Fatalf("[Paths] Srv changed: %s -> %s", before, after)
	}
	t.Logf("clean: machines and base gone, %s unchanged (tree %s)", c.Paths.Srv, before)
}

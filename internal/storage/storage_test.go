package storage

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"berth/internal/fsx"
	"berth/internal/run"
	"berth/internal/testutil"
)

// mountFS mounts a fresh file system of the backend's kind under a test directory and returns where:
// btrfs on a loop device (an image file), a tmpfs for overlayfs (a valid upper layer) and dir.
func mountFS(t testing.TB, backend string) string {
	t.Helper()
	ctx := context.Background()
	tmp := t.TempDir()
	mnt := filepath.Join(tmp, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	argv := []string{"mount", "-t", "tmpfs", "-o", "size=" + tmpfsSize, "berth-storage-test", mnt}
	if backend == "btrfs" {
		img := filepath.Join(tmp, "btrfs.img")
		for _, argv := range [][]string{{"truncate", "-s", btrfsSize, img}, {"mkfs.btrfs", "-q", img}} {
			if _, err := (run.Cmd{Argv: argv, Timeout: time.Minute}).Run(ctx); err != nil {
				t.Fatal(err)
			}
		}
		argv = []string{"mount", "-o", "loop", img, mnt} // the loop device goes with the unmount (autoclear)
	}
	if _, err := (run.Cmd{Argv: argv, Timeout: time.Minute}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { umount(t, mnt) })
	return mnt
}

func umount(t testing.TB, path string) {
	t.Helper()
	if _, err := (run.Cmd{Argv: []string{"umount", path}, Timeout: time.Minute}).Run(context.Background()); err != nil {
		t.Error(err)
	}
}

// view is where the container's root file system can be read and written while it would run: the
// directory of a "dir:" spec, or the overlay of an "overlay:<lower>:<upper>" spec mounted the way LXC
// mounts it (work directory next to the upper layer) at ctDir/rootfs, unmounted by done.
func view(t *testing.T, spec, ctDir string) (root string, done func()) {
	t.Helper()
	if p, ok := strings.CutPrefix(spec, "dir:"); ok {
		return p, func() {}
	}
	layers, ok := strings.CutPrefix(spec, "overlay:")
	lower, upper, ok2 := strings.Cut(layers, ":")
	if !ok || !ok2 {
		t.Fatalf("unknown rootfs spec %q", spec)
	}
	work := filepath.Join(filepath.Dir(upper), "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	root = filepath.Join(ctDir, "rootfs")
	if _, err := (run.Cmd{Argv: []string{"mount", "-t", "overlay", "overlay", "-o",
		"lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work, root}, Timeout: time.Minute}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	mounted := true
	t.Cleanup(func() {
		if mounted {
			umount(t, root)
		}
	})
	return root, func() { umount(t, root); mounted = false }
}

// writeTree makes a small root file system at dir: files, an executable, a symlink, an empty directory,
// with marker as the content of etc/hostname.
func writeTree(t *testing.T, dir, marker string) {
	t.Helper()
	for _, d := range []string{"etc", "usr/bin", "var/empty"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(dir, 0o755)
	files := map[string]string{"etc/hostname": marker + "\n", "usr/bin/tool": "#!/bin/sh\necho tool\n", "etc/motd": "hello\n"}
	for p, body := range files {
		if err := os.WriteFile(filepath.Join(dir, p), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "usr/bin/tool"), 0o4755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../usr/bin/tool", filepath.Join(dir, "etc/tool")); err != nil {
		t.Fatal(err)
	}
}

func treeSum(t *testing.T, dir string) string {
	t.Helper()
	sum, err := fsx.TreeSum(dir)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// TestBackendContract runs one scenario against every backend, each on a file system of its own: publish a
// tree as a generation, reset a container to it, write into the container's view, reset again (the write is
// gone, the view equals the generation, which never changed), prune old generations and remove everything.
func TestBackendContract(t *testing.T) {
	testutil.Require(t, "mount", "umount", "truncate", "mkfs.btrfs", "btrfs", "cp")
	for _, name := range []string{"dir", "btrfs", "overlayfs"} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			mnt := mountFS(t, name)
			lxcPath := filepath.Join(mnt, "lxc")
			if err := os.Mkdir(lxcPath, 0o755); err != nil {
				t.Fatal(err)
			}
			b, err := Pick(name, lxcPath)
			if err != nil {
				t.Fatal(err)
			}
			if b.Name() != name {
				t.Fatalf("Pick(%q) = %s", name, b.Name())
			}
			auto, err := Pick("auto", lxcPath)
			if err != nil {
				t.Fatal(err)
			}
			s := Store{Dir: filepath.Join(lxcPath, ".berth-demo"), Backend: b}
			if err := os.MkdirAll(s.Dir, 0o700); err != nil {
				t.Fatal(err)
			}
			staging := filepath.Join(s.Dir, "staging")
			writeTree(t, staging, "pristine-1")
			want := treeSum(t, staging)
			noneUsed := func(string) bool { return false }

			start := time.Now()
			g1, err := s.Add(ctx, staging, 1, noneUsed)
			if err != nil {
				t.Fatal(err)
			}
			publish := time.Since(start)
			if cur, err := s.Current(); err != nil || cur != g1 || g1 != "000001" {
				t.Fatalf("after the first publish: generation %q, current %q, %v", g1, cur, err)
			}
			if _, err := os.Lstat(staging); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("staging left after Publish: %v", err)
			}
			if got := treeSum(t, s.Path(g1)); got != want {
				t.Fatal("the generation differs from the published tree")
			}

			ctDir := filepath.Join(lxcPath, "ct1")
			if err := os.Mkdir(ctDir, 0o750); err != nil {
				t.Fatal(err)
			}
			start = time.Now()
			if err := b.Reset(ctx, ctDir, s.Path(g1)); err != nil {
				t.Fatal(err)
			}
			reset1 := time.Since(start)
			spec := b.RootfsSpec(ctDir, s.Path(g1))
			root, done := view(t, spec, ctDir)
			if got := treeSum(t, root); got != want {
				t.Fatalf("the container's view (%s) differs from the generation", spec)
			}
			// A visitor's changes: a new file, an edited one, a removed one.
			r, err := os.OpenRoot(root)
			if err != nil {
				t.Fatal(err)
			}
			for _, err := range []error{r.WriteFile("visitor.txt", []byte("visitor\n"), 0o644),
				r.WriteFile("etc/hostname", []byte("changed\n"), 0o644), r.Remove("etc/motd")} {
				if err != nil {
					t.Fatal(err)
				}
			}
			r.Close()
			if got := treeSum(t, root); got == want {
				t.Fatal("writing into the container's view changed nothing")
			}
			if got := treeSum(t, s.Path(g1)); got != want {
				t.Fatal("writing into the container changed the generation")
			}
			done()

			start = time.Now()
			if err := b.Reset(ctx, ctDir, s.Path(g1)); err != nil {
				t.Fatal(err)
			}
			reset2 := time.Since(start)
			root, done = view(t, b.RootfsSpec(ctDir, s.Path(g1)), ctDir)
			if _, err := os.Lstat(filepath.Join(root, "visitor.txt")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the visitor's file survived the reset: %v", err)
			}
			if got := treeSum(t, root); got != want {
				t.Fatal("after the reset the container's view differs from the generation")
			}
			done()

			// Two more generations with one kept archived: generation 1 goes, unless the backend shares
			// generations with containers and the container still uses it.
			for _, marker := range []string{"pristine-2", "pristine-3"} {
				writeTree(t, staging, marker)
				if _, err := s.Add(ctx, staging, 1, func(g string) bool { return g == g1 }); err != nil {
					t.Fatal(err)
				}
			}
			gens, err := s.Generations()
			wantGens := []string{"000002", "000003"}
			if b.SharesGeneration() {
				wantGens = []string{"000001", "000002", "000003"}
			}
			if err != nil || !slices.Equal(gens, wantGens) {
				t.Fatalf("generations after pruning: %v %v, want %v", gens, err, wantGens)
			}
			if cur, _ := s.Current(); cur != "000003" {
				t.Fatalf("current = %s", cur)
			}
			g3sum := treeSum(t, s.Path("000003"))
			if err := b.Reset(ctx, ctDir, s.Path("000003")); err != nil {
				t.Fatal(err)
			}
			root, done = view(t, b.RootfsSpec(ctDir, s.Path("000003")), ctDir)
			if b, err := os.ReadFile(filepath.Join(root, "etc/hostname")); err != nil || string(b) != "pristine-3\n" || treeSum(t, root) != g3sum {
				t.Fatalf("container reset to generation 3 reads %q, %v", b, err)
			}
			done()

			if err := s.SetAside("000002", "test: damaged"); err != nil {
				t.Fatal(err)
			}
			if reasons, _ := filepath.Glob(filepath.Join(s.Dir, "broken", "000002-*.reason")); len(reasons) != 1 {
				t.Fatalf("set aside without its reason: %v", reasons)
			}
			for _, p := range []string{ctDir, s.Dir} {
				if err := b.Remove(ctx, p); err != nil {
					t.Fatal(err)
				}
				if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("%s left after Remove: %v", p, err)
				}
			}
			if err := b.Remove(ctx, s.Dir); err != nil {
				t.Fatalf("removing a missing tree: %v", err)
			}
			t.Logf("backend %-9s (auto here: %s): publish %v, reset %v, reset after writes %v: writes gone, view = generation; prune, set aside, remove ok",
				b.Name(), auto.Name(), publish.Round(time.Microsecond), reset1.Round(time.Microsecond), reset2.Round(time.Microsecond))
		})
	}
}

func TestPick(t *testing.T) {
	b, err := Pick("auto", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if b == nil || !slices.Contains([]string{"dir", "btrfs", "overlayfs"}, b.Name()) {
		t.Fatalf("Pick(auto) = %v", b)
	}
	if _, err := Pick("btrfs", "/proc/self"); err == nil || !strings.Contains(err.Error(), "[Demo] Backend = btrfs, but /proc/self is on proc") {
		t.Fatalf("Pick(btrfs) on proc: %v", err)
	}
}

func TestStoreGenerations(t *testing.T) {
	s := Store{Dir: t.TempDir(), Backend: dirDriver{}}
	if gens, err := s.Generations(); err != nil || gens != nil {
		t.Fatalf("no gen directory: %v %v", gens, err)
	}
	if _, err := s.Current(); err == nil || !strings.Contains(err.Error(), "run demo:build") {
		t.Fatalf("Current without generations: %v", err)
	}
	for _, p := range []string{"gen/000002", "gen/000010", "gen/12345", "gen/abcdef", "gen/.tmp"} {
		os.MkdirAll(filepath.Join(s.Dir, p), 0o755)
	}
	os.WriteFile(filepath.Join(s.Dir, "gen/000011"), nil, 0o644) // not a directory
	if gens, err := s.Generations(); err != nil || !slices.Equal(gens, []string{"000002", "000010"}) {
		t.Fatalf("Generations = %v %v", gens, err)
	}
	if cur, _ := s.Current(); cur != "000010" {
		t.Fatalf("Current = %s", cur)
	}
}

// TestStoreUnprivileged: with IDBase a generation is owned by the containers' ids when it is made (and an
// older one when a container is reset to it), a container's overlay layers are theirs, and the directories
// on the way can be passed.
func TestStoreUnprivileged(t *testing.T) {
	testutil.Require(t)
	owner := func(p string) uint32 {
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Uid
	}
	for _, b := range []Backend{dirDriver{}, overlayfsDriver{}} {
		lxcPath := t.TempDir() // 0700: made passable by ResetTo
		s := Store{Dir: filepath.Join(lxcPath, ".berth-demo"), Backend: b, IDBase: 1000000, IDs: 65536}
		os.MkdirAll(s.Dir, 0o700)
		old := filepath.Join(s.Dir, "gen", "000001") // a generation made before: owned by root
		writeTree(t, old, "old")
		staging := filepath.Join(s.Dir, "staging")
		writeTree(t, staging, "new")
		g, err := s.Add(context.Background(), staging, 3, func(string) bool { return false })
		if err != nil || owner(filepath.Join(s.Path(g), "etc/hostname")) != 1000000 {
			t.Fatalf("%s: the new generation %s is not the containers': %v", b.Name(), g, err)
		}
		ctDir := filepath.Join(lxcPath, "ct1")
		os.Mkdir(ctDir, 0o750)
		if err := s.ResetTo(context.Background(), ctDir, "000001"); err != nil {
			t.Fatal(err)
		}
		if owner(filepath.Join(old, "etc/hostname")) != 1000000 {
			t.Errorf("%s: the older generation was not owned at its reset", b.Name())
		}
		for _, dir := range []string{lxcPath, s.Dir, filepath.Join(s.Dir, "gen"), ctDir} {
			if st, _ := os.Stat(dir); st.Mode().Perm()&0o001 == 0 {
				t.Errorf("%s: %s is not passable: %v", b.Name(), dir, st.Mode())
			}
		}
		if b.Name() == "overlayfs" && (owner(filepath.Join(ctDir, "delta")) != 1000000 || owner(filepath.Join(ctDir, "work")) != 1000000) {
			t.Errorf("overlayfs: the container's layers are not its root's")
		}
		if b.Name() == "dir" && owner(filepath.Join(ctDir, "rootfs", "etc/hostname")) != 1000000 {
			t.Errorf("dir: the container's copy is not its root's")
		}
	}
}

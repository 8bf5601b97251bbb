package storage

import (
	"bytes"
	"context"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"berth/internal/clone"
	"berth/internal/testutil"
)

// writeBigTree makes a pristine tree of about 12 MB: many files, hard links, a setuid binary, a user xattr,
// a symlink, a device node and nested directories.
func writeBigTree(t *testing.T, dir string) {
	t.Helper()
	writeTree(t, dir, "pristine")
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 96*1024)
	for i := range 128 {
		sub := filepath.Join(dir, "usr/lib", string(rune('a'+i%8)), string(rune('a'+i%5)))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		for j := range buf {
			buf[j] = byte(rng.Uint32())
		}
		if err := os.WriteFile(filepath.Join(sub, "lib"+string(rune('a'+i%26))+string(rune('a'+i/26))+".so"), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "var/lib/app/old"), 0o750))
	must(os.WriteFile(filepath.Join(dir, "var/lib/app/old/state"), []byte("old state\n"), 0o600))
	must(os.WriteFile(filepath.Join(dir, "var/lib/app/keep"), []byte("keep\n"), 0o644))
	must(os.Link(filepath.Join(dir, "var/lib/app/keep"), filepath.Join(dir, "var/lib/app/keep.link")))
	must(os.MkdirAll(filepath.Join(dir, "opt/replaced"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "opt/replaced/a"), []byte("a\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "opt/file-to-dir"), []byte("f\n"), 0o644))
	must(unix.Lsetxattr(filepath.Join(dir, "etc/motd"), "user.berth", []byte("v1"), 0))
	must(unix.Mknod(filepath.Join(dir, "dev-null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
}

// upgradeOps is what an upgrade does to a tree: edits, new and removed files and directories, a directory
// removed and made again (opaque in an overlay), a file turned into a directory and back, metadata-only
// changes, a rename, a new hard link.
func upgradeOps(t *testing.T, root string) {
	t.Helper()
	p := func(rel string) string { return filepath.Join(root, rel) }
	for _, err := range []error{
		os.WriteFile(p("etc/hostname"), []byte("upgraded\n"), 0o644),
		os.WriteFile(p("usr/lib/a/a/libaa.so"), bytes.Repeat([]byte("new "), 4096), 0o644),
		os.Remove(p("etc/motd")),
		os.RemoveAll(p("var/lib/app/old")),
		os.RemoveAll(p("opt/replaced")),
		os.Mkdir(p("opt/replaced"), 0o700),
		os.WriteFile(p("opt/replaced/b"), []byte("b\n"), 0o644),
		os.Remove(p("opt/file-to-dir")),
		os.Mkdir(p("opt/file-to-dir"), 0o755),
		os.Remove(p("var/empty")),
		os.WriteFile(p("var/empty"), []byte("a file now\n"), 0o644),
		os.Chmod(p("usr/bin/tool"), 0o755),
		os.Chmod(p("usr/lib/b"), 0o700),
		os.Rename(p("usr/lib/c/c/libca.so"), p("usr/lib/c/libcc-renamed.so")),
		os.Link(p("usr/bin/tool"), p("usr/bin/tool2")),
		os.MkdirAll(p("srv/new/deep"), 0o755),
		os.WriteFile(p("srv/new/deep/file"), []byte("deep\n"), 0o640),
		unix.Lsetxattr(p("var/lib/app/keep"), "user.berth", []byte("v2"), 0),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// fsUsed is the bytes in use on the file system holding path, after flushing it.
func fsUsed(t *testing.T, path string) int64 {
	t.Helper()
	if err := clone.SyncFS(path); err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize
}

// TestUpgradeFork runs an upgrade's storage steps against every backend: fork the pristine generation,
// change the fork as an upgrade would, settle it and publish it. The new generation must equal (tree sum)
// what the previous method made, a full copy with the same changes; the old generation must not change; on
// btrfs and overlayfs the file system must have grown by far less than the pristine's size.
func TestUpgradeFork(t *testing.T) {
	testutil.Require(t, "mount", "umount", "truncate", "mkfs.btrfs", "btrfs", "cp")
	for _, name := range []string{"dir", "btrfs", "overlayfs"} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			mnt := mountFS(t, name)
			lxcPath := filepath.Join(mnt, "lxc")
			b, err := Pick(name, lxcPath)
			if err != nil {
				t.Fatal(err)
			}
			s := Store{Dir: filepath.Join(lxcPath, ".berth-demo"), Backend: b}
			if err := os.MkdirAll(s.Dir, 0o700); err != nil {
				t.Fatal(err)
			}
			staging := filepath.Join(s.Dir, "staging")
			writeBigTree(t, staging)
			g1, err := s.Add(ctx, staging, 3, func(string) bool { return false })
			if err != nil {
				t.Fatal(err)
			}
			pristine := treeSum(t, s.Path(g1))
			size := fsUsed(t, mnt)

			// The previous method: a full copy, changed in place.
			want := filepath.Join(mnt, "full-copy")
			if err := clone.TreeWith(ctx, s.Path(g1), want, clone.Copy); err != nil {
				t.Fatal(err)
			}
			upgradeOps(t, want)
			wantSum := treeSum(t, want)
			if err := clone.Remove(ctx, want); err != nil {
				t.Fatal(err)
			}

			ctDir := filepath.Join(lxcPath, "ct1")
			if err := os.Mkdir(ctDir, 0o750); err != nil {
				t.Fatal(err)
			}
			cand := filepath.Join(ctDir, "rootfs")
			// A thrown-away fork first: Discard leaves nothing, and the next Fork starts clean.
			if err := s.Fork(ctx, g1, cand); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(cand, "etc/thrown-away"), []byte("x"), 0o644)
			if err := b.Discard(ctx, cand); err != nil {
				t.Fatal(err)
			}
			if entries, _ := os.ReadDir(ctDir); len(entries) != 0 {
				t.Fatalf("Discard left %v", entries)
			}

			before := fsUsed(t, mnt)
			if err := s.Fork(ctx, g1, cand); err != nil {
				t.Fatal(err)
			}
			upgradeOps(t, cand)
			if err := s.Settle(ctx, g1, cand); err != nil {
				t.Fatal(err)
			}
			g2, err := s.Add(ctx, cand, 3, func(string) bool { return false })
			if err != nil {
				t.Fatal(err)
			}
			written := fsUsed(t, mnt) - before
			if got := treeSum(t, s.Path(g2)); got != wantSum {
				t.Fatalf("the forked upgrade's generation differs from the full copy's")
			}
			if treeSum(t, s.Path(g1)) != pristine {
				t.Fatal("the upgrade changed the pristine generation")
			}
			if entries, _ := os.ReadDir(ctDir); len(entries) != 0 {
				t.Fatalf("the fork left %v beside it", entries)
			}
			v := make([]byte, 16)
			if n, err := unix.Lgetxattr(filepath.Join(s.Path(g2), "var/lib/app/keep"), "user.berth", v); err != nil || string(v[:n]) != "v2" {
				t.Fatalf("xattr set by the upgrade: %q %v", v[:n], err)
			}
			if n, err := unix.Lgetxattr(filepath.Join(s.Path(g1), "var/lib/app/keep"), "user.berth", v); err == nil {
				t.Fatalf("the upgrade's xattr reached the pristine generation: %q", v[:n])
			}
			filepath.WalkDir(s.Path(g2), func(p string, d fs.DirEntry, err error) error {
				names, _ := xattrs(p)
				for _, n := range names {
					if strings.HasPrefix(n, overlayXattr) {
						t.Errorf("%s keeps the overlay's xattr %s", p, n)
					}
				}
				return nil
			})
			t.Logf("%-9s: pristine %d KiB on the file system; the upgrade grew it by %d KiB; generation = full copy's", name, size/1024, written/1024)
			if name != "dir" && written*8 > size {
				t.Fatalf("%s: the upgrade wrote %d KiB for a %d KiB pristine", name, written/1024, size/1024)
			}
		})
	}
}

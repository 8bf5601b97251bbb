package storage

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"berth/internal/clone"
	bootstrap "berth/internal/rootfs"
	"berth/internal/run"
	"berth/internal/testhost"

	"berth/internal/testutil"
)

// btrfsSize and tmpfsSize are the sizes of the file systems mountFS makes.
var btrfsSize, tmpfsSize = "256M", "64m"

// BenchmarkReset measures a container's reset on btrfs and overlayfs to a generation of n files (a 441 MB
// Debian rootfs holds about 20k files, a 1.5 GB YunoHost one about 60k): go test -run - -bench Reset.
func BenchmarkReset(b *testing.B) {
	testutil.Require(b, "mount", "umount", "truncate", "mkfs.btrfs", "btrfs", "cp")
	btrfsSize, tmpfsSize = "2G", "512m"
	for _, variant := range []string{"btrfs", "btrfs-previous", "overlayfs"} {
		backend, _, _ := strings.Cut(variant, "-")
		for _, n := range []int{20000, 60000} {
			b.Run(fmt.Sprintf("%s/%dk-files", variant, n/1000), func(b *testing.B) {
				ctx := context.Background()
				mnt := mountFS(b, backend)
				lxcPath := filepath.Join(mnt, "lxc")
				be, err := Pick(backend, lxcPath)
				if err != nil {
					b.Fatal(err)
				}
				s := Store{Dir: filepath.Join(lxcPath, ".berth-demo"), Backend: be}
				staging := filepath.Join(s.Dir, "staging")
				body := make([]byte, 512)
				for i := range n {
					dir := filepath.Join(staging, "usr", fmt.Sprint(i/200))
					if i%200 == 0 {
						if err := os.MkdirAll(dir, 0o755); err != nil {
							b.Fatal(err)
						}
					}
					if err := os.WriteFile(filepath.Join(dir, fmt.Sprint(i)), body, 0o644); err != nil {
						b.Fatal(err)
					}
				}
				g, err := s.Add(ctx, staging, 1, func(string) bool { return false })
				if err != nil {
					b.Fatal(err)
				}
				ctDir := filepath.Join(lxcPath, "ct")
				os.Mkdir(ctDir, 0o750)
				if err := s.ResetTo(ctx, ctDir, g); err != nil {
					b.Fatal(err)
				}
				reset := func() error { return s.ResetTo(ctx, ctDir, g) }
				if variant == "btrfs-previous" {
					reset = func() error { return previousBtrfsReset(ctx, ctDir, s.Path(g)) }
				}
				b.ResetTimer()
				for range b.N {
					if err := reset(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// previousBtrfsReset is how a btrfs reset worked before: walk the rootfs for nested subvolumes, delete it,
// then snapshot the generation (whose commit carried the deletion).
func previousBtrfsReset(ctx context.Context, ctDir, gen string) error {
	var subs []string
	err := filepath.WalkDir(rootfs(ctDir), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if st.Ino == 256 {
			subs = append(subs, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	slices.Reverse(subs)
	if _, err := (run.Cmd{Argv: append([]string{"btrfs", "subvolume", "delete"}, subs...), Quiet: true}).Run(ctx); err != nil {
		return err
	}
	return clone.TreeWith(ctx, gen, rootfs(ctDir), clone.Snapshot)
}

// BenchmarkUpgradeFork measures an upgrade's tree work on an overlayfs demo's disk (ext4 under /var/tmp) for
// a 440 MB generation of 20k files, with nothing to upgrade: the previous full copy against Fork + Settle.
// It reports the MB the new tree takes beyond the generation (du counts hard-linked files once).
func BenchmarkUpgradeFork(b *testing.B) {
	testutil.Require(b, "mount", "umount", "cp", "du")
	ctx := context.Background()
	dir, err := os.MkdirTemp("/var/tmp", "berth-bench-fork-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	gen := filepath.Join(dir, "gen")
	body := make([]byte, 22*1024)
	for i := range 20000 {
		d := filepath.Join(gen, "usr", fmt.Sprint(i/200))
		if i%200 == 0 {
			if err := os.MkdirAll(d, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		body[0] = byte(i)
		if err := os.WriteFile(filepath.Join(d, fmt.Sprint(i)), body, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	clone.SyncFS(gen)
	be := overlayfsDriver{}
	path := filepath.Join(dir, "ct", "rootfs")
	os.MkdirAll(filepath.Dir(path), 0o755)
	for _, variant := range []string{"full-copy", "fork-settle"} {
		b.Run(variant, func(b *testing.B) {
			var mb float64
			for range b.N {
				if variant == "full-copy" {
					if err := clone.TreeWith(ctx, gen, path, clone.Copy); err != nil {
						b.Fatal(err)
					}
				} else {
					if err := be.Fork(ctx, gen, path); err != nil {
						b.Fatal(err)
					}
					os.WriteFile(filepath.Join(path, "upgrade.log"), []byte("0 upgraded\n"), 0o644)
					if err := be.Settle(ctx, gen, path); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				out, err := run.Cmd{Argv: []string{"du", "-sk", gen, path}, Quiet: true}.Run(ctx)
				if err != nil {
					b.Fatal(err)
				}
				var kib float64
				fmt.Sscan(strings.Split(strings.TrimSpace(string(out)), "\n")[1], &kib)
				mb = kib / 1024
				if err := be.Discard(ctx, path); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(mb, "MB-written")
		})
	}
}

// BenchmarkResetRootfs measures a btrfs reset, berth's against the previous method, to a real Debian rootfs
// (the test host's cached tarball, about 450 MB) and to the same grown by a 1 GB file (1.5 GB):
// go test -run - -bench ResetRootfs.
func BenchmarkResetRootfs(b *testing.B) {
	testutil.Require(b, "mount", "umount", "truncate", "mkfs.btrfs", "btrfs", "tar")
	ctx := context.Background()
	tarball, err := testhost.Tarball(ctx, testhost.Options{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	btrfsSize = "4G"
	mnt := mountFS(b, "btrfs")
	lxcPath := filepath.Join(mnt, "lxc")
	be, err := Pick("btrfs", lxcPath)
	if err != nil {
		b.Fatal(err)
	}
	s := Store{Dir: filepath.Join(lxcPath, ".berth-demo"), Backend: be}
	staging := filepath.Join(s.Dir, "staging")
	if err := os.MkdirAll(staging, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := bootstrap.Unpack(ctx, tarball, staging); err != nil {
		b.Fatal(err)
	}
	g, err := s.Add(ctx, staging, 1, func(string) bool { return false })
	if err != nil {
		b.Fatal(err)
	}
	ctDir := filepath.Join(lxcPath, "ct")
	os.Mkdir(ctDir, 0o750)
	for _, size := range []string{"rootfs", "rootfs+1GB"} {
		if size == "rootfs+1GB" {
			if _, err := (run.Cmd{Argv: []string{"dd", "if=/dev/urandom", "of=" + filepath.Join(s.Path(g), "filler"), "bs=1M", "count=1000", "status=none"}}).Run(ctx); err != nil {
				b.Fatal(err)
			}
		}
		out, _ := run.Cmd{Argv: []string{"du", "-sh", s.Path(g)}, Quiet: true}.Run(ctx)
		for _, variant := range []string{"berth", "previous"} {
			b.Run(size+"-"+strings.Fields(string(out))[0]+"/"+variant, func(b *testing.B) {
				reset := func() error { return s.ResetTo(ctx, ctDir, g) }
				if variant == "previous" {
					reset = func() error { return previousBtrfsReset(ctx, ctDir, s.Path(g)) }
				}
				if err := reset(); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				for range b.N {
					// a container's run dirties its rootfs: one written file, as a visitor leaves
					b.StopTimer()
					os.WriteFile(filepath.Join(rootfs(ctDir), "visitor.txt"), []byte("visitor\n"), 0o644)
					b.StartTimer()
					if err := reset(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

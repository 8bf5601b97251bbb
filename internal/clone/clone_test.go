package clone

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"berth/internal/run"
)

// ---- unit tests (no root) ----

func TestFSType(t *testing.T) {
	got, err := FSType(t.TempDir())
	if err != nil || got == "" {
		t.Fatalf("FSType(TempDir) = %q, %v", got, err)
	}
	t.Logf("t.TempDir() is on %s", got)
	if got, err := FSType("/proc"); got != "proc" || err != nil {
		t.Errorf("FSType(/proc) = %q, %v; want proc", got, err)
	}
	if _, err := FSType(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("FSType(missing) error = %v; want fs.ErrNotExist", err)
	}
}

func TestArgumentErrors(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	must(t, os.Mkdir(src, 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "file"), nil, 0o644))
	must(t, os.Symlink("src", filepath.Join(dir, "link")))
	must(t, os.Mkdir(filepath.Join(dir, "dst"), 0o755))
	for _, c := range []struct {
		src, dst string
		m        Method
		is       error
	}{
		{"file", "new", Copy, nil}, // source not a directory
		{"link", "new", Copy, nil}, // source a symlink to one
		{"missing", "new", Copy, fs.ErrNotExist},
		{"src", "dst", Copy, fs.ErrExist},
		{"src", "nodir/new", Copy, fs.ErrNotExist},
		{"src", "new", Method("rsync"), nil},
	} {
		err := TreeWith(ctx, filepath.Join(dir, c.src), filepath.Join(dir, c.dst), c.m)
		if err == nil || (c.is != nil && !errors.Is(err, c.is)) {
			t.Errorf("TreeWith(%s, %s, %s) = %v; want an error (%v)", c.src, c.dst, c.m, err, c.is)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "new")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("something was left at new: %v", err)
	}
	if err := Remove(ctx, filepath.Join(dir, "missing")); err != nil {
		t.Errorf("Remove(missing) = %v; want nil", err)
	}
}

// ---- integration tests (root, loop devices) ----

// needRoot skips unless running as root with the tools that loop-device file systems need.
func needRoot(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("skipping: integration test, not part of the unit tier (-short)")
	}
	if os.Geteuid() != 0 {
		tb.Skip("skipping: needs root (loop devices, mount, mknod, chown)")
	}
	for _, tool := range []string{"losetup", "mount", "umount", "cp", "mkfs.ext4", "mkfs.btrfs", "mkfs.xfs", "btrfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Skipf("skipping: %s not found (apt-get install -y btrfs-progs xfsprogs attr acl)", tool)
		}
	}
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

func cmd(tb testing.TB, argv ...string) string {
	tb.Helper()
	out, err := run.Cmd{Argv: argv, Timeout: 2 * time.Minute}.Run(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// mountFS makes a file system of the given kind ("ext4", "btrfs", "xfs", "xfs-noreflink") on a sparse image file,
// mounts it through a loop device, and unmounts and detaches it when the test ends.
func mountFS(tb testing.TB, kind string, size int64) string {
	tb.Helper()
	dir := tb.TempDir()
	img, mnt := filepath.Join(dir, "img"), filepath.Join(dir, "mnt")
	f, err := os.Create(img)
	must(tb, err)
	must(tb, f.Truncate(size))
	must(tb, f.Close())
	mkfs := map[string][]string{
		"ext4":          {"mkfs.ext4", "-q", "-F", img},
		"btrfs":         {"mkfs.btrfs", "-q", img},
		"xfs":           {"mkfs.xfs", "-q", "-m", "reflink=1", img},
		"xfs-noreflink": {"mkfs.xfs", "-q", "-m", "reflink=0", img},
	}[kind]
	cmd(tb, mkfs...)
	dev := cmd(tb, "losetup", "--find", "--show", img)
	tb.Cleanup(func() {
		if _, err := (run.Cmd{Argv: []string{"losetup", "--detach", dev}, Timeout: time.Minute}).Run(context.Background()); err != nil {
			tb.Error(err)
		}
	})
	must(tb, os.Mkdir(mnt, 0o755))
	cmd(tb, "mount", dev, mnt)
	tb.Cleanup(func() {
		if _, err := (run.Cmd{Argv: []string{"umount", mnt}, Timeout: time.Minute}).Run(context.Background()); err != nil {
			tb.Error(err)
		}
	})
	return mnt
}

// capNetBindService is a security.capability value (struct vfs_cap_data, revision 2): cap_net_bind_service+ep.
var capNetBindService = func() []byte {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000000|0x1) // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
	binary.LittleEndian.PutUint32(b[4:], 1<<10)          // permitted: CAP_NET_BIND_SERVICE
	return b
}()

// acl encodes a POSIX ACL xattr value equivalent to `setfacl -m u:1234:r` on a 0644 file.
func acl() []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2) // POSIX_ACL_XATTR_VERSION
	for _, e := range []struct {
		tag, perm uint16
		id        uint32
	}{{0x01, 6, math.MaxUint32}, {0x02, 4, 1234}, {0x04, 4, math.MaxUint32}, {0x10, 4, math.MaxUint32}, {0x20, 4, math.MaxUint32}} {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	return b
}

// makeFixture fills root (an existing empty directory) with every kind of entry a rootfs copy must keep.
func makeFixture(tb testing.TB, root string) {
	tb.Helper()
	p := func(name string) string { return filepath.Join(root, name) }
	for _, d := range []string{"bin", "etc", "dev", "a/b/c", "sub"} {
		must(tb, os.MkdirAll(p(d), 0o755))
	}
	file := func(name string, mode uint32, data []byte) {
		must(tb, os.WriteFile(p(name), data, 0o600))
		must(tb, unix.Chmod(p(name), mode))
	}
	file("bin/setuid", 0o4755, []byte("#!/bin/sh\n"))
	file("bin/setgid", 0o2755, []byte("#!/bin/sh\n"))
	file("etc/owned", 0o640, []byte("owned\n"))
	must(tb, os.Lchown(p("etc/owned"), 1234, 5678))
	must(tb, os.Symlink("bin/setuid", p("link")))
	must(tb, os.Lchown(p("link"), 1234, 5678))
	must(tb, os.Symlink("does/not/exist", p("dangling")))
	file("hard1", 0o644, []byte("one inode, two names\n"))
	must(tb, os.Link(p("hard1"), p("sub/hard2")))
	file("xattr", 0o644, []byte("x\n"))
	must(tb, unix.Setxattr(p("xattr"), "user.berth", []byte("1"), 0))
	must(tb, unix.Setxattr(p("etc"), "user.berth", []byte("dir"), 0))
	must(tb, unix.Setxattr(p("xattr"), "trusted.berth", []byte{0, 1, 2, 255}, 0))
	file("bin/cap", 0o755, []byte("\x7fELF"))
	must(tb, os.Chown(p("bin/cap"), 0, 0))
	must(tb, unix.Setxattr(p("bin/cap"), "security.capability", capNetBindService, 0)) // after chown, which clears it
	file("acl", 0o644, []byte("acl\n"))
	must(tb, unix.Setxattr(p("acl"), "system.posix_acl_access", acl(), 0))
	must(tb, os.Mkdir(p("acldir"), 0o755))
	must(tb, unix.Setxattr(p("acldir"), "system.posix_acl_access", acl(), 0))
	must(tb, unix.Setxattr(p("acldir"), "system.posix_acl_default", acl(), 0))
	special := func(name string, mode uint32, dev uint64) {
		must(tb, unix.Mknod(p(name), mode, int(dev)))
		must(tb, unix.Chmod(p(name), mode&^unix.S_IFMT)) // whatever the umask
	}
	special("dev/null", unix.S_IFCHR|0o666, unix.Mkdev(1, 3))
	special("dev/loop9", unix.S_IFBLK|0o660, unix.Mkdev(7, 9))
	special("fifo", unix.S_IFIFO|0o600, 0)
	special("sock", unix.S_IFSOCK|0o755, 0)
	must(tb, os.Mkdir(p("empty"), 0o700))
	must(tb, os.Mkdir(p("tmp"), 0o755))
	must(tb, unix.Chmod(p("tmp"), 0o1777))
	big := make([]byte, 3<<20) // several extents' worth, never inlined in metadata
	fill(rand.New(rand.NewPCG(7, 7)), big)
	file("big", 0o644, big)
	f, err := os.Create(p("sparse")) // a 1 MiB hole, then data
	must(tb, err)
	_, err = f.WriteAt([]byte("after the hole\n"), 1<<20)
	must(tb, err)
	must(tb, f.Close())
	file("a/b/c/deep", 0o644, []byte("deep\n"))

	// Nanosecond timestamps, children before their parents (a child's creation changes its parent's mtime).
	var paths []string
	must(tb, filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
		paths = append(paths, path)
		return err
	}))
	for i, path := range slices.Backward(paths) {
		ts := []unix.Timespec{{Sec: 1_500_000_000 + int64(i), Nsec: 111_111_111}, {Sec: 1_600_000_000 + int64(i), Nsec: 123_456_789 + int64(i)}}
		must(tb, unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW))
	}
}

func fill(rng *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
}

// node is what a faithful copy must keep of one entry.
type node struct {
	mode, uid, gid uint32
	rdev           uint64
	size           int64
	mtime          unix.Timespec
	nlink          uint64
	target         string
	xattrs         map[string]string
	sum            [32]byte
	ino            uint64 // not compared: used to group hardlinks
}

func scan(tb testing.TB, root string) map[string]node {
	tb.Helper()
	nodes := map[string]node{}
	must(tb, filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		n := node{mode: st.Mode, uid: st.Uid, gid: st.Gid, rdev: st.Rdev, size: st.Size, mtime: st.Mtim, nlink: st.Nlink, ino: st.Ino, xattrs: map[string]string{}}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			if n.target, err = os.Readlink(path); err != nil {
				return err
			}
		case unix.S_IFREG:
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			h.Sum(n.sum[:0])
		case unix.S_IFDIR:
			n.size, n.nlink = 0, 0 // directory sizes and link counts are the file system's business (btrfs: always 1)
		}
		buf := make([]byte, 64<<10)
		sz, err := unix.Llistxattr(path, buf)
		if err != nil {
			return fmt.Errorf("llistxattr %s: %w", path, err)
		}
		for name := range strings.SplitSeq(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00") {
			if name == "" || strings.HasPrefix(name, "trusted.SGI_ACL_") {
				continue // xfs's on-disk form of the ACLs, listed as system.posix_acl_* too
			}
			vsz, err := unix.Lgetxattr(path, name, buf)
			if err != nil {
				return fmt.Errorf("lgetxattr %s %s: %w", path, name, err)
			}
			n.xattrs[name] = string(buf[:vsz])
		}
		rel, _ := filepath.Rel(root, path)
		nodes[rel] = n
		return nil
	}))
	return nodes
}

// compareTrees asserts that dst is a faithful copy of src, entry by entry, hardlink groups included.
func compareTrees(tb testing.TB, src, dst string) {
	tb.Helper()
	a, b := scan(tb, src), scan(tb, dst)
	peers := func(nodes map[string]node, rel string) []string {
		var ps []string
		for r, n := range nodes {
			if n.ino == nodes[rel].ino && n.mode&unix.S_IFMT != unix.S_IFDIR {
				ps = append(ps, r)
			}
		}
		slices.Sort(ps)
		return ps
	}
	for rel, na := range a {
		nb, ok := b[rel]
		if !ok {
			tb.Errorf("%s: missing in the copy", rel)
			continue
		}
		if pa, pb := peers(a, rel), peers(b, rel); !slices.Equal(pa, pb) {
			tb.Errorf("%s: hardlinked with %v in the source, %v in the copy", rel, pa, pb)
		}
		na.ino, nb.ino = 0, 0
		if !reflect.DeepEqual(na, nb) {
			tb.Errorf("%s differs:\n source %+v\n copy   %+v", rel, na, nb)
		}
	}
	for rel := range b {
		if _, ok := a[rel]; !ok {
			tb.Errorf("%s: in the copy only", rel)
		}
	}
}

// checkFixture asserts that the file system kept what makeFixture made, so that comparing with it proves something.
func checkFixture(tb testing.TB, root string) {
	tb.Helper()
	n := scan(tb, root)
	for _, c := range []struct {
		rel  string
		ok   bool
		what string
	}{
		{"bin/setuid", n["bin/setuid"].mode == unix.S_IFREG|0o4755, "setuid file"},
		{"bin/setgid", n["bin/setgid"].mode == unix.S_IFREG|0o2755, "setgid file"},
		{"tmp", n["tmp"].mode == unix.S_IFDIR|0o1777, "sticky dir"},
		{"etc/owned", n["etc/owned"].uid == 1234 && n["etc/owned"].gid == 5678, "owner 1234:5678"},
		{"link", n["link"].target == "bin/setuid" && n["link"].uid == 1234, "symlink owned by 1234"},
		{"dangling", n["dangling"].target == "does/not/exist", "dangling symlink"},
		{"sub/hard2", n["sub/hard2"].nlink == 2 && n["sub/hard2"].ino == n["hard1"].ino, "hardlink"},
		{"xattr", n["xattr"].xattrs["user.berth"] == "1" && n["xattr"].xattrs["trusted.berth"] == "\x00\x01\x02\xff", "user and trusted xattrs"},
		{"bin/cap", n["bin/cap"].xattrs["security.capability"] == string(capNetBindService), "file capability"},
		{"acl", n["acl"].xattrs["system.posix_acl_access"] != "", "access ACL"},
		{"acldir", n["acldir"].xattrs["system.posix_acl_default"] != "", "default ACL"},
		{"dev/null", n["dev/null"].mode == unix.S_IFCHR|0o666 && n["dev/null"].rdev == unix.Mkdev(1, 3), "char device 1,3"},
		{"dev/loop9", n["dev/loop9"].mode&unix.S_IFMT == unix.S_IFBLK, "block device"},
		{"fifo", n["fifo"].mode == unix.S_IFIFO|0o600, "fifo"},
		{"sock", n["sock"].mode == unix.S_IFSOCK|0o755, "socket"},
		{"empty", n["empty"].mode == unix.S_IFDIR|0o700, "empty dir"},
		{"a/b/c/deep", n["a/b/c/deep"].mtime.Nsec != 0, "nanosecond mtime"},
	} {
		if !c.ok {
			tb.Errorf("fixture %s: not a %s: %+v", c.rel, c.what, n[c.rel])
		}
	}
	if len(n) != 28 {
		tb.Errorf("fixture has %d entries; want 28", len(n))
	}
}

// sharesExtents reports whether any extent of path is shared with another file (FIEMAP_EXTENT_SHARED).
func sharesExtents(tb testing.TB, path string) bool {
	tb.Helper()
	const (
		fsIocFiemap  = 0xC020660B
		extentCount  = 64
		extentShared = 0x2000
	)
	buf := make([]byte, 32+56*extentCount) // struct fiemap + struct fiemap_extent[extentCount]
	binary.NativeEndian.PutUint64(buf[8:], math.MaxUint64)
	binary.NativeEndian.PutUint32(buf[16:], 1) // FIEMAP_FLAG_SYNC
	binary.NativeEndian.PutUint32(buf[24:], extentCount)
	f, err := os.Open(path)
	must(tb, err)
	defer f.Close()
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fsIocFiemap, uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
		tb.Fatalf("FIEMAP %s: %v", path, e)
	}
	for i := range binary.NativeEndian.Uint32(buf[20:]) {
		if binary.NativeEndian.Uint32(buf[32+56*i+40:])&extentShared != 0 {
			return true
		}
	}
	return false
}

func assertAbsent(tb testing.TB, path string) {
	tb.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		tb.Errorf("%s exists (%v); want nothing there", path, err)
	}
}

// assertEntries asserts that dir holds exactly names (no staging leftovers).
func assertEntries(tb testing.TB, dir string, names ...string) {
	tb.Helper()
	ents, err := os.ReadDir(dir)
	must(tb, err)
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	slices.Sort(names)
	if !slices.Equal(got, names) {
		tb.Errorf("%s holds %v; want %v", dir, got, names)
	}
}

// TestMethods clones the fixture with every method each file system offers and compares every property.
func TestMethods(t *testing.T) {
	needRoot(t)
	for _, c := range []struct {
		fs      string
		methods []Method
	}{
		{"ext4", []Method{Copy}},
		{"btrfs", []Method{Snapshot, Reflink, Copy}},
		{"xfs", []Method{Reflink, Copy}},
	} {
		t.Run(c.fs, func(t *testing.T) {
			ctx := t.Context()
			mnt := mountFS(t, c.fs, 512<<20)
			src := filepath.Join(mnt, "src")
			must(t, NewDir(ctx, src)) // a subvolume on btrfs
			makeFixture(t, src)
			checkFixture(t, src)
			for _, m := range c.methods {
				t.Run(string(m), func(t *testing.T) {
					dst := filepath.Join(mnt, "dst-"+string(m))
					must(t, TreeWith(ctx, src, dst, m))
					compareTrees(t, src, dst)
					if got, want := sharesExtents(t, filepath.Join(dst, "big")), m != Copy; got != want {
						t.Errorf("%s: big shares extents = %v; want %v", m, got, want)
					}
					must(t, Remove(ctx, dst))
					assertAbsent(t, dst)
				})
			}
			if c.fs == "ext4" {
				assertEntries(t, mnt, "lost+found", "src")
			} else {
				assertEntries(t, mnt, "src")
			}
		})
	}
}

// TestPick checks the method chosen for each kind of source and destination, and that Tree uses it.
func TestPick(t *testing.T) {
	needRoot(t)
	ctx := t.Context()
	mnts := map[string]string{}
	for _, fs := range []string{"ext4", "btrfs", "xfs", "xfs-noreflink"} {
		mnts[fs] = mountFS(t, fs, 512<<20)
		must(t, NewDir(ctx, filepath.Join(mnts[fs], "newdir")))
		must(t, os.Mkdir(filepath.Join(mnts[fs], "plain"), 0o755))
		makeFixture(t, filepath.Join(mnts[fs], "plain"))
	}
	other := mountFS(t, "btrfs", 512<<20) // a second btrfs
	machines := filepath.Join(mnts["btrfs"], "machines")
	must(t, NewDir(ctx, machines)) // a subvolume: another st_dev, same file system

	for _, c := range []struct {
		fs, src, dstParent string
		want               Method
	}{
		{"ext4", "plain", "", Copy},
		{"ext4", "newdir", "", Copy},
		{"btrfs", "newdir", "", Snapshot},
		{"btrfs", "newdir", machines, Snapshot},
		{"btrfs", "plain", "", Reflink},
		{"btrfs", "plain", machines, Reflink},
		{"btrfs", "newdir", other, Copy},
		{"btrfs", "plain", other, Copy},
		{"btrfs", "plain", mnts["xfs"], Copy},
		{"xfs", "plain", "", Reflink},
		{"xfs", "newdir", "", Reflink},
		{"xfs-noreflink", "plain", "", Copy},
		{"xfs", "plain", mnts["ext4"], Copy},
	} {
		src := filepath.Join(mnts[c.fs], c.src)
		if c.dstParent == "" {
			c.dstParent = mnts[c.fs]
		}
		if got, err := Pick(src, c.dstParent); got != c.want || err != nil {
			t.Errorf("Pick(%s %s, %s) = %q, %v; want %q", c.fs, c.src, c.dstParent, got, err, c.want)
		}
		dst := filepath.Join(c.dstParent, "clone-of-"+c.fs+"-"+c.src)
		got, err := Tree(ctx, src, dst)
		if got != c.want || err != nil {
			t.Errorf("Tree(%s %s, %s) = %q, %v; want %q", c.fs, c.src, dst, got, err, c.want)
			continue
		}
		compareTrees(t, src, dst)
		must(t, Remove(ctx, dst))
	}
	if _, err := Pick(filepath.Join(mnts["ext4"], "missing"), mnts["ext4"]); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Pick(missing) error = %v; want fs.ErrNotExist", err)
	}
}

// TestFailures checks that a refused or failed clone leaves an existing dst untouched, or nothing at a new one.
func TestFailures(t *testing.T) {
	needRoot(t)
	ctx := t.Context()
	mnts := map[string]string{}
	for _, fs := range []string{"ext4", "btrfs", "xfs-noreflink"} {
		mnts[fs] = mountFS(t, fs, 512<<20)
		must(t, NewDir(ctx, filepath.Join(mnts[fs], "src")))
		makeFixture(t, filepath.Join(mnts[fs], "src"))
	}
	bsrc := filepath.Join(mnts["btrfs"], "src")

	t.Run("existing dst", func(t *testing.T) {
		// For a snapshot this matters twice: `btrfs subvolume snapshot src dst` would create dst/src.
		dst := filepath.Join(mnts["btrfs"], "dst")
		must(t, os.Mkdir(dst, 0o700))
		must(t, os.WriteFile(filepath.Join(dst, "keep"), []byte("mine"), 0o600))
		for _, m := range []Method{Snapshot, Reflink, Copy} {
			if err := TreeWith(ctx, bsrc, dst, m); !errors.Is(err, fs.ErrExist) {
				t.Errorf("TreeWith(%s) onto an existing dir = %v; want fs.ErrExist", m, err)
			}
		}
		if m, err := Tree(ctx, bsrc, dst); !errors.Is(err, fs.ErrExist) {
			t.Errorf("Tree onto an existing dir = %q, %v; want fs.ErrExist", m, err)
		}
		must(t, os.WriteFile(filepath.Join(mnts["btrfs"], "file"), nil, 0o644))
		if _, err := Tree(ctx, bsrc, filepath.Join(mnts["btrfs"], "file")); !errors.Is(err, fs.ErrExist) {
			t.Errorf("Tree onto an existing file = %v; want fs.ErrExist", err)
		}
		assertEntries(t, dst, "keep")
		if b, _ := os.ReadFile(filepath.Join(dst, "keep")); string(b) != "mine" {
			t.Errorf("dst/keep = %q; want it untouched", b)
		}
		assertEntries(t, mnts["btrfs"], "src", "dst", "file")
	})

	t.Run("unsupported", func(t *testing.T) {
		plain := filepath.Join(mnts["btrfs"], "plain")
		must(t, os.Mkdir(plain, 0o755))
		for _, c := range []struct {
			src, dstParent string
			m              Method
		}{
			{filepath.Join(mnts["ext4"], "src"), mnts["ext4"], Snapshot},
			{filepath.Join(mnts["ext4"], "src"), mnts["ext4"], Reflink},
			{filepath.Join(mnts["xfs-noreflink"], "src"), mnts["xfs-noreflink"], Reflink},
			{plain, mnts["btrfs"], Snapshot},
			{bsrc, mnts["ext4"], Snapshot},
			{bsrc, mnts["ext4"], Reflink},
		} {
			dst := filepath.Join(c.dstParent, "dst-unsupported")
			if err := TreeWith(ctx, c.src, dst, c.m); !errors.Is(err, errors.ErrUnsupported) {
				t.Errorf("TreeWith(%s, %s, %s) = %v; want errors.ErrUnsupported", c.src, dst, c.m, err)
			} else {
				t.Logf("as expected: %v", err)
			}
			assertAbsent(t, dst)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		for _, m := range []Method{Snapshot, Reflink, Copy} {
			dst := filepath.Join(mnts["btrfs"], "dst-cancelled")
			if err := TreeWith(cctx, bsrc, dst, m); err == nil {
				t.Errorf("TreeWith(%s) with a cancelled context succeeded", m)
			}
			assertAbsent(t, dst)
		}
		assertEntries(t, mnts["btrfs"], "src", "dst", "file", "plain")
	})

	t.Run("xattrs unsupported", func(t *testing.T) {
		// ramfs stores no xattrs: cp -a would drop them silently, the explicit --preserve list must fail.
		ram := filepath.Join(t.TempDir(), "ram")
		must(t, os.Mkdir(ram, 0o755))
		cmd(t, "mount", "-t", "ramfs", "ramfs", ram)
		t.Cleanup(func() { cmd(t, "umount", ram) })
		if m, err := Pick(bsrc, ram); m != Copy || err != nil {
			t.Errorf("Pick(btrfs, ramfs) = %q, %v; want copy", m, err)
		}
		m, err := Tree(ctx, bsrc, filepath.Join(ram, "dst"))
		if err == nil {
			t.Fatalf("Tree into ramfs = %q, nil; want an error for the lost xattrs", m)
		}
		t.Logf("as expected: %v", err)
		assertEntries(t, ram)
	})

	t.Run("no space", func(t *testing.T) {
		mnt := mountFS(t, "ext4", 64<<20)
		src := filepath.Join(mnt, "src")
		must(t, os.Mkdir(src, 0o755))
		makeFixture(t, src)
		data := make([]byte, 40<<20)
		fill(rand.New(rand.NewPCG(1, 1)), data)
		must(t, os.WriteFile(filepath.Join(src, "huge"), data, 0o644))
		dst := filepath.Join(mnt, "dst")
		err := TreeWith(ctx, src, dst, Copy)
		if err == nil {
			t.Fatal("copying 40 MiB into the 20 MiB left succeeded")
		}
		t.Logf("as expected: %v", err)
		assertAbsent(t, dst)
		assertEntries(t, mnt, "lost+found", "src")
	})
}

// TestNewDirAndRemove checks subvolume creation and removal, nested subvolumes included, and that Remove never
// descends into a mount.
func TestNewDirAndRemove(t *testing.T) {
	needRoot(t)
	ctx := t.Context()
	bt, ext := mountFS(t, "btrfs", 512<<20), mountFS(t, "ext4", 512<<20)

	for _, c := range []struct {
		dir    string
		subvol bool
	}{{filepath.Join(bt, "new"), true}, {filepath.Join(ext, "new"), false}} {
		must(t, NewDir(ctx, c.dir))
		if sub, err := isSubvolume(c.dir); sub != c.subvol || err != nil {
			t.Errorf("isSubvolume(%s) = %v, %v; want %v", c.dir, sub, err, c.subvol)
		}
		assertEntries(t, c.dir)
		if fi, err := os.Lstat(c.dir); err != nil || fi.Mode() != fs.ModeDir|0o755 {
			t.Errorf("%s: mode %v, %v; want drwxr-xr-x", c.dir, fi.Mode(), err)
		}
		if err := NewDir(ctx, c.dir); !errors.Is(err, fs.ErrExist) {
			t.Errorf("NewDir(existing) = %v; want fs.ErrExist", err)
		}
	}

	src := filepath.Join(bt, "new")
	makeFixture(t, src)
	snap := filepath.Join(bt, "snap")
	if m, err := Tree(ctx, src, snap); m != Snapshot || err != nil {
		t.Fatalf("Tree = %q, %v; want a snapshot", m, err)
	}
	// Subvolumes nested two deep inside the snapshot, with content.
	must(t, NewDir(ctx, filepath.Join(snap, "a/nested")))
	must(t, NewDir(ctx, filepath.Join(snap, "a/nested/deeper")))
	must(t, os.MkdirAll(filepath.Join(snap, "a/nested/deeper/x/y"), 0o755))
	must(t, os.WriteFile(filepath.Join(snap, "a/nested/deeper/x/y/f"), []byte("f"), 0o644))
	must(t, os.WriteFile(filepath.Join(snap, "a/nested/f"), []byte("f"), 0o644))
	// A snapshot of that: the nested subvolumes become empty placeholder directories.
	snap2 := filepath.Join(bt, "snap2")
	must(t, TreeWith(ctx, snap, snap2, Snapshot))
	assertEntries(t, filepath.Join(snap2, "a/nested"))
	// A plain directory holding a subvolume.
	must(t, os.Mkdir(filepath.Join(bt, "plain"), 0o755))
	must(t, NewDir(ctx, filepath.Join(bt, "plain/sub")))
	must(t, os.WriteFile(filepath.Join(bt, "plain/sub/f"), []byte("f"), 0o644))

	// A clone stays on the source's file system, like a snapshot: a nested subvolume becomes an empty directory.
	must(t, unix.Chmod(filepath.Join(bt, "plain/sub"), 0o700))
	if m, err := Tree(ctx, filepath.Join(bt, "plain"), filepath.Join(bt, "plain2")); m != Reflink || err != nil {
		t.Fatalf("Tree(plain) = %q, %v; want a reflink copy", m, err)
	}
	assertEntries(t, filepath.Join(bt, "plain2/sub"))
	if fi, err := os.Stat(filepath.Join(bt, "plain2/sub")); err != nil || fi.Mode() != fs.ModeDir|0o700 {
		t.Errorf("plain2/sub: mode %v, %v; want drwx------", fi.Mode(), err)
	}

	// Remove refuses a tree with something mounted inside it, and leaves the mount alone.
	must(t, os.Mkdir(filepath.Join(snap, "mnt"), 0o755))
	cmd(t, "mount", "-t", "tmpfs", "tmpfs", filepath.Join(snap, "mnt"))
	must(t, os.WriteFile(filepath.Join(snap, "mnt/precious"), []byte("p"), 0o644))
	if err := Remove(ctx, snap); err == nil || !strings.Contains(err.Error(), "mounted") {
		t.Errorf("Remove with a mount inside = %v; want a refusal", err)
	}
	if _, err := os.Stat(filepath.Join(snap, "mnt/precious")); err != nil {
		t.Errorf("the mounted file system was touched: %v", err)
	}
	cmd(t, "umount", filepath.Join(snap, "mnt"))

	for _, p := range []string{snap, snap2, filepath.Join(bt, "plain"), filepath.Join(bt, "plain2"), src, filepath.Join(ext, "new")} {
		must(t, Remove(ctx, p))
		assertAbsent(t, p)
		must(t, Remove(ctx, p)) // missing is fine
	}
	if out := cmd(t, "btrfs", "subvolume", "list", bt); out != "" {
		t.Errorf("subvolumes left behind:\n%s", out)
	}
	assertEntries(t, bt)
	assertEntries(t, ext, "lost+found")
}

// ---- benchmark ----

// makeBenchTree writes a deterministic ~300 MB tree into root: 12,000 small files (0.5 to 16 KiB) in 120
// directories and 8 files of 24 MiB. It returns the number of bytes.
func makeBenchTree(tb testing.TB, root string) int64 {
	tb.Helper()
	rng := rand.New(rand.NewPCG(42, 42))
	pool := make([]byte, 32<<20)
	fill(rng, pool)
	var total int64
	write := func(path string, size int) {
		off := rng.IntN(len(pool) - size + 1)
		must(tb, os.WriteFile(path, pool[off:off+size], 0o644))
		total += int64(size)
	}
	for d := range 120 {
		dir := filepath.Join(root, "usr", fmt.Sprintf("d%03d", d))
		must(tb, os.MkdirAll(dir, 0o755))
		for f := range 100 {
			write(filepath.Join(dir, fmt.Sprintf("f%03d", f)), 512+rng.IntN(16<<10-512))
		}
	}
	must(tb, os.MkdirAll(filepath.Join(root, "var/lib"), 0o755))
	for f := range 8 {
		write(filepath.Join(root, "var/lib", fmt.Sprintf("big%d", f)), 24<<20)
	}
	return total
}

// BenchmarkClone clones the same ~300 MB tree with Copy on ext4 and with every method on btrfs and xfs.
func BenchmarkClone(b *testing.B) {
	needRoot(b)
	ctx := context.Background()
	var size int64
	for _, fs := range []string{"ext4", "btrfs", "xfs"} {
		mnt := mountFS(b, fs, 2<<30)
		src := filepath.Join(mnt, "src")
		must(b, NewDir(ctx, src))
		size = makeBenchTree(b, src)
		must(b, SyncFS(src))
		methods := map[string][]Method{"ext4": {Copy}, "btrfs": {Snapshot, Reflink, Copy}, "xfs": {Reflink, Copy}}[fs]
		for _, m := range methods {
			b.Run(fs+"/"+string(m), func(b *testing.B) {
				b.SetBytes(size)
				dst := filepath.Join(mnt, "dst")
				for range b.N {
					b.StopTimer()
					must(b, Remove(ctx, dst))
					must(b, SyncFS(mnt))
					b.StartTimer()
					must(b, TreeWith(ctx, src, dst, m))
				}
				b.StopTimer()
				must(b, Remove(ctx, dst))
			})
		}
	}
}

// TestNoSpaceIsOneLine: a copy that does not fit fails with one line naming the file system, what the tree
// needs and what is free, and leaves nothing behind.
func TestNoSpaceIsOneLine(t *testing.T) {
	needRoot(t)
	mnt := mountFS(t, "ext4", 16<<20)
	src := filepath.Join(t.TempDir(), "src")
	must(t, os.MkdirAll(src, 0o755))
	for i := range 30 {
		must(t, os.WriteFile(filepath.Join(src, fmt.Sprintf("f%02d", i)), bytes.Repeat([]byte{byte(i + 1)}, 1<<20), 0o644))
	}
	dst := filepath.Join(mnt, "tree")
	err := TreeWith(context.Background(), src, dst, Copy)
	if err == nil || !errors.Is(err, unix.ENOSPC) || strings.Contains(err.Error(), "\n") ||
		!strings.Contains(err.Error(), "no space left on the ext4 file system of "+mnt+" (mounted at "+mnt+")") ||
		!strings.Contains(err.Error(), "needs 30.") || !strings.Contains(err.Error(), " free") {
		t.Fatalf("want one line about the full file system, got %v", err)
	}
	left, _ := os.ReadDir(mnt)
	for _, e := range left {
		if e.Name() != "lost+found" {
			t.Fatalf("left behind in %s: %s", mnt, e.Name())
		}
	}
	t.Logf("%v", err)
}

// Package clone copies a whole rootfs tree (a base image to a machine, a pristine container state to a working one)
// as fast as the file system allows, and faithfully: a btrfs snapshot when the source is a btrfs subvolume, a reflink
// (copy-on-write) copy on btrfs and on xfs with reflink=1, a plain copy otherwise.
//
// Reflink and plain copies are made by GNU cp with an explicit --preserve list, so that every attribute a rootfs needs
// is kept and a failure to keep one is an error: numeric owners, modes (setuid, setgid, sticky), nanosecond
// timestamps, symlinks (not followed), hardlinks, xattrs (file capabilities, POSIX ACLs), device nodes, fifos, sockets
// and empty directories. Like a snapshot, a clone stays on the source's file system: a nested mount or nested btrfs
// subvolume inside the source becomes an empty directory.
//
// A clone is built in a staging directory next to its destination, flushed to disk, and renamed into place only when
// complete, so that dst holds a whole tree or nothing.
package clone

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"berth/internal/fsx"
	"berth/internal/run"
)

// Method names a way to clone a tree.
type Method string

// The methods, fastest first.
const (
	Snapshot Method = "btrfs-snapshot" // btrfs subvolume snapshot: O(1), the source must be a subvolume
	Reflink  Method = "reflink"        // per-file copy-on-write clone (FICLONE): metadata work only, no data copied
	Copy     Method = "copy"           // plain copy of every byte
)

const (
	copyTimeout  = time.Hour // a multi-GB rootfs on a slow disk
	btrfsTimeout = 5 * time.Minute
)

// magics maps statfs f_type values to file system names.
var magics = map[uint32]string{
	unix.BTRFS_SUPER_MAGIC:     "btrfs",
	unix.XFS_SUPER_MAGIC:       "xfs",
	unix.EXT4_SUPER_MAGIC:      "ext4", // also ext2 and ext3
	unix.OVERLAYFS_SUPER_MAGIC: "overlay",
	unix.TMPFS_MAGIC:           "tmpfs",
	unix.RAMFS_MAGIC:           "ramfs",
	0x2fc12fc1:                 "zfs",
	unix.BCACHEFS_SUPER_MAGIC:  "bcachefs",
	unix.F2FS_SUPER_MAGIC:      "f2fs",
	unix.NFS_SUPER_MAGIC:       "nfs",
	unix.FUSE_SUPER_MAGIC:      "fuse",
	unix.SQUASHFS_MAGIC:        "squashfs",
	unix.PROC_SUPER_MAGIC:      "proc",
	unix.SYSFS_MAGIC:           "sysfs",
}

// FSType names the file system at path ("btrfs", "xfs", "ext4", "overlay", "tmpfs", ...) from its statfs magic;
// an unknown magic is returned as a hex number ("0x1234abcd").
func FSType(path string) (string, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return "", &fs.PathError{Op: "statfs", Path: path, Err: err}
	}
	if name, ok := magics[uint32(st.Type)]; ok {
		return name, nil
	}
	return fmt.Sprintf("0x%x", uint32(st.Type)), nil
}

// Pick returns the fastest faithful method for cloning src into a new directory inside dstParent (same file system
// needed for CoW): Snapshot for a btrfs subvolume, Reflink where the file system clones files, Copy otherwise.
func Pick(src, dstParent string) (Method, error) {
	if err := checkDirs(src, dstParent); err != nil {
		return "", err
	}
	for _, m := range []Method{Snapshot, Reflink} {
		err := check(src, dstParent, m)
		if err == nil {
			return m, nil
		}
		if !errors.Is(err, errors.ErrUnsupported) {
			return "", err
		}
	}
	return Copy, nil
}

// Tree clones src to dst (dst must not exist; its parent must) with the method Pick chooses, and returns the method
// used. On error nothing is left at dst.
func Tree(ctx context.Context, src, dst string) (Method, error) {
	m, err := Pick(src, filepath.Dir(dst))
	if err != nil {
		return "", err
	}
	return m, TreeWith(ctx, src, dst, m)
}

// TreeWith clones src to dst like Tree with a forced method; it fails, before writing anything, when the file system
// cannot do it (the error wraps errors.ErrUnsupported). On error nothing is left at dst.
func TreeWith(ctx context.Context, src, dst string, m Method) (err error) {
	parent := filepath.Dir(dst)
	if err := checkDirs(src, parent); err != nil {
		return err
	}
	if _, err := os.Lstat(dst); err == nil {
		return &fs.PathError{Op: "clone", Path: dst, Err: fs.ErrExist}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := check(src, parent, m); err != nil {
		return fmt.Errorf("clone %s with %s: %w", src, m, err)
	}

	stage, err := os.MkdirTemp(parent, ".clone-"+filepath.Base(dst)+"-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			// Clean up even when ctx is what failed.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), btrfsTimeout)
			defer cancel()
			rerr := Remove(ctx, stage)
			if noSpace(err) {
				// cp says it once per file: one line instead, measured after the partial copy is gone.
				err = NoSpaceError(src, parent, m)
			}
			if rerr != nil {
				err = fmt.Errorf("%w (and cleaning up %s: %w)", err, stage, rerr)
			}
		}
	}()
	tmp := filepath.Join(stage, "tree")
	switch m {
	case Snapshot:
		_, err = run.Cmd{Argv: []string{"btrfs", "subvolume", "snapshot", src, tmp}, Timeout: btrfsTimeout}.Run(ctx)
	case Reflink:
		err = copyTree(ctx, src, tmp, "always")
	case Copy:
		err = copyTree(ctx, src, tmp, "never")
	}
	if err != nil {
		return err
	}
	if m != Snapshot { // a snapshot is one btrfs transaction; a copy must reach the disk before it is published
		if err = SyncFS(tmp); err != nil {
			return err
		}
	}
	if err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE); err != nil {
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
			err = fs.ErrExist
		}
		return &fs.PathError{Op: "clone", Path: dst, Err: err}
	}
	if rerr := os.Remove(stage); rerr != nil { // dst is complete: an empty leftover is not worth failing for
		logger().Warn("staging directory not removed", "path", stage, "err", rerr)
	}
	return nil
}

// copyTree runs GNU cp. --preserve lists xattr explicitly: with --preserve=all (-a) cp ignores xattr failures.
// --preserve=mode also carries POSIX ACLs.
func copyTree(ctx context.Context, src, dst, reflink string) error {
	_, err := run.Cmd{Argv: []string{
		"cp", "--recursive", "--no-dereference", "--one-file-system", "--no-target-directory",
		"--preserve=mode,ownership,timestamps,links,xattr", "--reflink=" + reflink,
		"--", src, dst,
	}, Timeout: copyTimeout}.Run(ctx)
	return err
}

// SyncFS flushes the whole file system holding path to disk (syncfs).
func SyncFS(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return &fs.PathError{Op: "syncfs", Path: path, Err: err}
	}
	return nil
}

// checkDirs makes sure src is a directory (not a symlink to one) and dstParent a directory.
func checkDirs(src, dstParent string) error {
	if fi, err := os.Lstat(src); err != nil {
		return err
	} else if !fi.IsDir() {
		return fmt.Errorf("clone: source %s is not a directory", src)
	}
	if fi, err := os.Stat(dstParent); err != nil {
		return err
	} else if !fi.IsDir() {
		return fmt.Errorf("clone: %s is not a directory", dstParent)
	}
	return nil
}

// check returns nil when m can clone src into dstParent, an error wrapping errors.ErrUnsupported when it cannot,
// and another error when that cannot be found out.
func check(src, dstParent string, m Method) error {
	switch m {
	case Copy:
		return nil
	case Snapshot:
		if sub, err := isSubvolume(src); err != nil {
			return err
		} else if !sub {
			return fmt.Errorf("%w: %s is not a btrfs subvolume", errors.ErrUnsupported, src)
		}
		return sameFS(src, dstParent)
	case Reflink:
		if err := sameFS(src, dstParent); err != nil {
			return err
		}
		if t, err := FSType(dstParent); err != nil {
			return err
		} else if t != "btrfs" && t != "xfs" {
			return fmt.Errorf("%w: no reflink on %s", errors.ErrUnsupported, t)
		}
		return probeReflink(dstParent)
	}
	return fmt.Errorf("clone: unknown method %q", m)
}

// isSubvolume reports whether path is the root of a btrfs subvolume (inode 256 on btrfs).
func isSubvolume(path string) (bool, error) {
	if t, err := FSType(path); err != nil || t != "btrfs" {
		return false, err
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return false, &fs.PathError{Op: "lstat", Path: path, Err: err}
	}
	return st.Mode&unix.S_IFMT == unix.S_IFDIR && st.Ino == 256, nil
}

// sameFS returns nil when a and b are on the same file system. Every btrfs subvolume has its own st_dev, so btrfs is
// compared by file system UUID.
func sameFS(a, b string) error {
	ta, err := FSType(a)
	if err != nil {
		return err
	}
	tb, err := FSType(b)
	if err != nil {
		return err
	}
	same := false
	if ta == "btrfs" && tb == "btrfs" {
		ia, err := btrfsFSID(a)
		if err != nil {
			return err
		}
		ib, err := btrfsFSID(b)
		if err != nil {
			return err
		}
		same = ia == ib
	} else if ta == tb {
		var sa, sb unix.Stat_t
		if err := unix.Stat(a, &sa); err != nil {
			return &fs.PathError{Op: "stat", Path: a, Err: err}
		}
		if err := unix.Stat(b, &sb); err != nil {
			return &fs.PathError{Op: "stat", Path: b, Err: err}
		}
		same = sa.Dev == sb.Dev
	}
	if !same {
		return fmt.Errorf("%w: %s (%s) and %s (%s) are on different file systems", errors.ErrUnsupported, a, ta, b, tb)
	}
	return nil
}

// btrfsFSID returns the UUID of the btrfs file system holding path (ioctl BTRFS_IOC_FS_INFO).
func btrfsFSID(path string) ([16]byte, error) {
	const iocFSInfo = 0x8400941f // _IOR(0x94, 31, struct btrfs_ioctl_fs_info_args), 1024 bytes
	var args [1024]byte          // max_id u64, num_devices u64, fsid [16]u8, ...
	var id [16]byte
	f, err := os.Open(path)
	if err != nil {
		return id, err
	}
	defer f.Close()
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), iocFSInfo, uintptr(unsafe.Pointer(&args))); e != 0 {
		return id, &fs.PathError{Op: "BTRFS_IOC_FS_INFO", Path: path, Err: e}
	}
	copy(id[:], args[16:32])
	return id, nil
}

// probeReflink clones a tiny temporary file inside dir to find out whether the file system does reflinks
// (xfs made without reflink=1 does not).
func probeReflink(dir string) error {
	var files [2]*os.File
	for i := range files {
		f, err := os.CreateTemp(dir, ".clone-probe-")
		if err != nil {
			return err
		}
		defer os.Remove(f.Name())
		defer f.Close()
		files[i] = f
	}
	if _, err := files[0].WriteString("berth"); err != nil {
		return err
	}
	if err := unix.IoctlFileClone(int(files[1].Fd()), int(files[0].Fd())); err != nil {
		return fmt.Errorf("%w: no reflink in %s: FICLONE: %w", errors.ErrUnsupported, dir, err)
	}
	return nil
}

// NewDir creates an empty directory that later clones can snapshot cheaply: a btrfs subvolume when path's parent is
// on btrfs, a plain directory (0755) otherwise. An existing path is an error wrapping fs.ErrExist.
func NewDir(ctx context.Context, path string) error {
	if _, err := os.Lstat(path); err == nil {
		return &fs.PathError{Op: "mkdir", Path: path, Err: fs.ErrExist}
	}
	t, err := FSType(filepath.Dir(path))
	if err != nil {
		return err
	}
	if t == "btrfs" {
		if _, err := (run.Cmd{Argv: []string{"btrfs", "subvolume", "create", path}, Timeout: btrfsTimeout}).Run(ctx); err != nil {
			return err
		}
	} else if err := os.Mkdir(path, 0o755); err != nil {
		return err
	}
	return os.Chmod(path, 0o755) // whatever the umask
}

// Remove deletes a tree made by Tree or NewDir, including btrfs subvolumes (and nested subvolumes inside it); a
// missing path is not an error. It refuses to touch a tree with a file system mounted inside it, so that a
// bind-mounted host directory is never emptied.
func Remove(ctx context.Context, path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if !fi.IsDir() {
		return os.Remove(path)
	}
	if err := checkNoMounts(path); err != nil {
		return err
	}
	if t, err := FSType(path); err != nil {
		return err
	} else if t == "btrfs" {
		if sub, err := isSubvolume(path); err == nil && sub {
			// Most trees hold no nested subvolume: delete it straight away, without walking every directory
			// of it (a tenth of a second for a 60k-file rootfs); btrfs refuses when one is nested.
			if _, err := (run.Cmd{Argv: []string{"btrfs", "subvolume", "delete", path}, Timeout: btrfsTimeout, Quiet: true}).Run(ctx); err == nil {
				return nil
			}
		}
		subs, err := subvolumes(path)
		if err != nil {
			return err
		}
		if len(subs) > 0 {
			// Innermost first: btrfs refuses to delete a subvolume that still holds another.
			argv := append([]string{"btrfs", "subvolume", "delete"}, subs...)
			if _, err := (run.Cmd{Argv: argv, Timeout: btrfsTimeout}).Run(ctx); err != nil {
				return err
			}
			if subs[len(subs)-1] == path {
				return nil
			}
		}
	}
	return os.RemoveAll(path)
}

// subvolumes lists the btrfs subvolumes at or below root (on btrfs, with nothing mounted below it), children before
// their parents.
func subvolumes(root string) ([]string, error) {
	var subs []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return &fs.PathError{Op: "lstat", Path: p, Err: err}
		}
		if st.Ino == 256 {
			subs = append(subs, p)
		}
		return nil
	})
	for i, j := 0, len(subs)-1; i < j; i, j = i+1, j-1 { // WalkDir visits parents first
		subs[i], subs[j] = subs[j], subs[i]
	}
	return subs, err
}

// checkNoMounts fails when a file system is mounted at path or below it (as this mount namespace sees it).
func checkNoMounts(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return err
	}
	mounts, err := fsx.MountsBelow(abs)
	if err != nil {
		return err
	}
	if len(mounts) > 0 {
		return fmt.Errorf("clone: refusing to remove %s: a file system is mounted at %s", path, mounts[len(mounts)-1])
	}
	return nil
}

// Subvolume clones src to dst (which must not exist) as a btrfs subvolume, so that later clones of dst are O(1)
// snapshots: a snapshot when src is itself a subvolume on the same file system, else a new subvolume filled with a
// reflink copy of src. On error nothing is left at dst.
func Subvolume(ctx context.Context, src, dst string) (err error) {
	if m, err := Pick(src, filepath.Dir(dst)); err != nil {
		return err
	} else if m == Snapshot {
		return TreeWith(ctx, src, dst, Snapshot)
	}
	if err := NewDir(ctx, dst); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			Remove(context.WithoutCancel(ctx), dst)
		}
	}()
	if err := copyTree(ctx, src, dst, "auto"); err != nil {
		return err
	}
	return SyncFS(dst)
}

// Links makes dst (absent; its parent on src's file system) a copy of the tree src whose directories are new
// and whose other entries are hard links to src's: no file data is written. Only for a src that is never
// written in place afterwards (a pristine generation), since both trees share those inodes.
func Links(ctx context.Context, src, dst string) error {
	if _, err := os.Lstat(dst); err == nil {
		return &fs.PathError{Op: "clone", Path: dst, Err: fs.ErrExist}
	}
	if err := sameFS(src, filepath.Dir(dst)); err != nil {
		return err
	}
	_, err := run.Cmd{Argv: []string{
		"cp", "--recursive", "--no-dereference", "--one-file-system", "--no-target-directory",
		"--preserve=mode,ownership,timestamps,links,xattr", "--link", "--", src, dst,
	}, Timeout: copyTimeout}.Run(ctx)
	if err != nil {
		os.RemoveAll(dst)
	}
	return err
}

// noSpace tells whether err comes from a full file system (cp's "No space left on device" or ENOSPC).
func noSpace(err error) bool {
	var re *run.Error
	return err != nil && (errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) ||
		errors.As(err, &re) && strings.Contains(re.Output, "No space left on device"))
}

// NoSpaceError says in one line that cloning src into dstParent with m did not fit: which file system, how
// much the tree takes and how much is free there (after the partial copy is removed). A snapshot or a
// reflink shares the data: it needs only metadata, which the message says rather than a size.
func NoSpaceError(src, dstParent string, m Method) error {
	where := dstParent
	if t, err := FSType(dstParent); err == nil {
		where = t + " file system of " + dstParent
	}
	if mnt, err := fsx.MountPoint(dstParent); err == nil {
		where += " (mounted at " + mnt + ")"
	}
	free := "unknown"
	var st unix.Statfs_t
	if unix.Statfs(dstParent, &st) == nil {
		free = fsx.Bytes(int64(st.Bavail) * st.Bsize)
	}
	need := "its metadata (" + string(m) + " shares the data)"
	if m == Copy {
		if n, err := fsx.DiskUsage(src); err == nil {
			need = fsx.Bytes(n)
		} else {
			need = "unknown (" + err.Error() + ")"
		}
	}
	return fmt.Errorf("clone %s by %s: no space left on the %s: needs %s, %s free: %w", src, m, where, need, free, unix.ENOSPC)
}

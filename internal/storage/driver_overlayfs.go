package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"berth/internal/clone"
	"berth/internal/fsx"
	"berth/internal/run"
)

// overlayfsDriver keeps generations as plain directories and runs a container on an overlay (mounted by LXC)
// with the generation as lower layer and ctDir/delta as upper layer: a reset empties the upper layer.
//
// An upgrade forks a generation the same way, but with the overlay mounted by berth at the fork's path (so
// that host-side hooks see the tree) and its upper layer beside it; on success Settle merges the upper
// layer into a tree of hard links to the generation's unchanged files: only what the upgrade wrote is
// written again. Generations are never written in place (containers write to their upper layers), which is
// what makes sharing their inodes safe.
type overlayfsDriver struct{}

func (overlayfsDriver) Name() string { return "overlayfs" }

func (overlayfsDriver) Publish(ctx context.Context, staging, gen string) error {
	return os.Rename(staging, gen)
}

func (overlayfsDriver) Reset(ctx context.Context, ctDir, gen string) error {
	if err := discardOverlay(ctx, rootfs(ctDir)); err != nil {
		return err
	}
	// work is the work directory LXC 5 uses next to the upper layer ("olwork" before).
	for _, p := range []string{"delta", "work", "olwork", "rootfs"} {
		if err := clone.Remove(ctx, filepath.Join(ctDir, p)); err != nil {
			return err
		}
	}
	for _, p := range []string{"delta", "work", "rootfs"} {
		if err := os.MkdirAll(filepath.Join(ctDir, p), 0o755); err != nil {
			return err
		}
	}
	return nil
}

func (overlayfsDriver) RootfsSpec(ctDir, gen string) string {
	return "overlay:" + gen + ":" + filepath.Join(ctDir, "delta")
}

func (overlayfsDriver) SharesGeneration() bool { return true }

func (overlayfsDriver) Remove(ctx context.Context, path string) error { return clone.Remove(ctx, path) }

// forkLayers are the upper, work and merge directories of a fork at path, beside it.
func forkLayers(path string) (upper, work, merge string) {
	base := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".upgrade-")
	return base + "upper", base + "work", base + "merge"
}

// Fork mounts an overlay at path: gen as lower layer, a fresh upper layer beside path. The upper layer's root
// takes gen's root's owner, mode and xattrs (the overlay's root reads them from there). redirect_dir,
// metacopy and index are off, so that the upper layer says everything with whiteouts and opaque directories.
func (overlayfsDriver) Fork(ctx context.Context, gen, path string) error {
	if err := discardOverlay(ctx, path); err != nil {
		return err
	}
	upper, work, _ := forkLayers(path)
	for _, d := range []string{upper, work, path} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	if err := copyMeta(gen, upper); err != nil {
		return err
	}
	_, err := run.Cmd{Argv: []string{"mount", "-t", "overlay", "berth-upgrade", "-o",
		"lowerdir=" + gen + ",upperdir=" + upper + ",workdir=" + work + ",redirect_dir=off,metacopy=off,index=off", path},
		Timeout: time.Minute}.Run(ctx)
	return err
}

// Settle unmounts the overlay at path and leaves at path the tree it showed: hard links to gen's files,
// with the upper layer's entries moved in (renamed, not copied) and its whiteouts applied.
func (overlayfsDriver) Settle(ctx context.Context, gen, path string) error {
	upper, work, merge := forkLayers(path)
	if err := unmountAt(ctx, path); err != nil {
		return err
	}
	if err := os.RemoveAll(merge); err != nil {
		return err
	}
	if err := clone.Links(ctx, gen, merge); err != nil {
		return err
	}
	if err := applyUpper(upper, merge); err != nil {
		return fmt.Errorf("merging the upgrade's upper layer %s: %w", upper, err)
	}
	if err := clone.Remove(ctx, path); err != nil {
		return err
	}
	if err := os.Rename(merge, path); err != nil {
		return err
	}
	for _, d := range []string{upper, work} {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
	}
	return clone.SyncFS(path)
}

// Discard unmounts and removes a fork and its layers.
func (overlayfsDriver) Discard(ctx context.Context, path string) error {
	return discardOverlay(ctx, path)
}

func discardOverlay(ctx context.Context, path string) error {
	if err := unmountAt(ctx, path); err != nil {
		return err
	}
	upper, work, merge := forkLayers(path)
	for _, d := range []string{path, upper, work, merge} {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
	}
	return nil
}

// unmountAt unmounts the overlay berth mounted at path, if one is.
func unmountAt(ctx context.Context, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if dir, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		abs = filepath.Join(dir, filepath.Base(abs))
	}
	mounts, err := fsx.MountsBelow(abs)
	if err != nil || !slices.Contains(mounts, abs) {
		return err
	}
	if t, err := clone.FSType(abs); err != nil || t != "overlay" {
		return errors.Join(err, fmt.Errorf("%s: a %s file system is mounted there, not an upgrade's overlay", abs, t))
	}
	_, err = run.Cmd{Argv: []string{"umount", abs}, Timeout: time.Minute}.Run(ctx)
	return err
}

const overlayXattr = "trusted.overlay."

// applyUpper applies the overlay upper layer upper to dst, a copy of its lower layer, as the overlay showed
// them merged: a whiteout removes, an opaque directory or a non-directory replaces, a directory present in
// both merges; a directory's owner, mode, xattrs and times come from the upper layer (which holds any
// directory whose content changed).
func applyUpper(upper, dst string) error {
	entries, err := os.ReadDir(upper)
	if err != nil {
		return err
	}
	for _, e := range entries {
		u, d := filepath.Join(upper, e.Name()), filepath.Join(dst, e.Name())
		var st unix.Stat_t
		if err := unix.Lstat(u, &st); err != nil {
			return &fs.PathError{Op: "lstat", Path: u, Err: err}
		}
		if whiteout(&st) {
			if err := os.RemoveAll(d); err != nil {
				return err
			}
			continue
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR && !opaque(u) {
			if fi, err := os.Lstat(d); err == nil && fi.IsDir() {
				if err := applyUpper(u, d); err != nil {
					return err
				}
				continue
			}
		}
		if err := os.RemoveAll(d); err != nil {
			return err
		}
		if err := os.Rename(u, d); err != nil {
			return err
		}
		if err := cleanMoved(d); err != nil {
			return err
		}
	}
	return copyMeta(upper, dst)
}

func whiteout(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0 }

func opaque(dir string) bool {
	b := make([]byte, 8)
	n, err := unix.Lgetxattr(dir, overlayXattr+"opaque", b)
	return err == nil && string(b[:n]) == "y"
}

// cleanMoved drops the overlay's own xattrs (and any whiteout, which has nothing left to hide) from a tree
// moved out of an upper layer.
func cleanMoved(root string) error {
	type dirTimes struct {
		path string
		st   unix.Stat_t
	}
	var dirs []dirTimes
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return &fs.PathError{Op: "lstat", Path: p, Err: err}
		}
		if p != root && whiteout(&st) {
			return os.Remove(p)
		}
		if d.IsDir() {
			dirs = append(dirs, dirTimes{p, st})
		}
		names, err := xattrs(p)
		for _, n := range names {
			if strings.HasPrefix(n, overlayXattr) {
				if err := unix.Lremovexattr(p, n); err != nil {
					return &fs.PathError{Op: "removexattr " + n, Path: p, Err: err}
				}
			}
		}
		return err
	})
	for i := len(dirs) - 1; i >= 0 && err == nil; i-- { // a removed whiteout touched its directory
		err = copyTimes(&dirs[i].st, dirs[i].path)
	}
	return err
}

func copyTimes(st *unix.Stat_t, dst string) error {
	ts := []unix.Timespec{st.Atim, st.Mtim}
	return unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// xattrs lists the extended attribute names of p (not following a symlink).
func xattrs(p string) ([]string, error) {
	buf := make([]byte, 4096)
	for {
		n, err := unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, &fs.PathError{Op: "listxattr", Path: p, Err: err}
		}
		var names []string
		for _, s := range strings.Split(string(buf[:n]), "\x00") {
			if s != "" {
				names = append(names, s)
			}
		}
		return names, nil
	}
}

// copyMeta gives the directory dst the owner, mode, xattrs (the overlay's own aside) and times of src.
func copyMeta(src, dst string) error {
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return &fs.PathError{Op: "lstat", Path: src, Err: err}
	}
	if err := os.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := unix.Chmod(dst, st.Mode&0o7777); err != nil {
		return &fs.PathError{Op: "chmod", Path: dst, Err: err}
	}
	have, err := xattrs(dst)
	if err != nil {
		return err
	}
	want, err := xattrs(src)
	if err != nil {
		return err
	}
	for _, n := range have {
		if !slices.Contains(want, n) && !strings.HasPrefix(n, overlayXattr) {
			if err := unix.Lremovexattr(dst, n); err != nil {
				return &fs.PathError{Op: "removexattr " + n, Path: dst, Err: err}
			}
		}
	}
	for _, n := range want {
		if strings.HasPrefix(n, overlayXattr) {
			continue
		}
		v := make([]byte, 64*1024)
		k, err := unix.Lgetxattr(src, n, v)
		if err != nil {
			return &fs.PathError{Op: "getxattr " + n, Path: src, Err: err}
		}
		if err := unix.Lsetxattr(dst, n, v[:k], 0); err != nil {
			return &fs.PathError{Op: "setxattr " + n, Path: dst, Err: err}
		}
	}
	return copyTimes(&st, dst)
}

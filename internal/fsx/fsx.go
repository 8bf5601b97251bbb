// Package fsx holds the few file-system primitives berth relies on: atomic writes and tree swaps.
package fsx

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// WriteFile writes data to path atomically: a temporary file in the same directory is created with perm
// (so a secret is never readable by others, not even while it is written), filled, fsynced and renamed over
// path, and the directory is fsynced. Readers see the old content or the new one, never a mix.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	return SyncDir(dir)
}

// SyncDir fsyncs a directory so that a rename inside it is durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Swap puts the complete tree staged at staging in place of dst in one step. When dst exists the two are
// exchanged atomically (renameat2 RENAME_EXCHANGE) and the old tree is left at staging for the caller to
// remove; otherwise staging is renamed to dst. Both must be on the same file system.
func Swap(staging, dst string) (replaced bool, err error) {
	if _, err := os.Lstat(dst); err == nil {
		if err := unix.Renameat2(unix.AT_FDCWD, staging, unix.AT_FDCWD, dst, unix.RENAME_EXCHANGE); err != nil {
			return false, fmt.Errorf("swap %s into %s: %w", staging, dst, err)
		}
		return true, SyncDir(filepath.Dir(dst))
	} else if !os.IsNotExist(err) {
		return false, err
	}
	if err := os.Rename(staging, dst); err != nil {
		return false, err
	}
	return false, SyncDir(filepath.Dir(dst))
}

// WriteJSONIn writes v as indented JSON to rel inside the tree dir, through os.Root so that a symlink in the
// tree cannot redirect the write, creating rel's directory when needed.
func WriteJSONIn(dir, rel string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	if err := root.MkdirAll(filepath.Dir(rel), 0o755); err != nil {
		return err
	}
	return root.WriteFile(rel, append(b, '\n'), 0o644)
}

// Package fsx holds the few file-system primitives berth relies on: atomic writes and tree swaps.
package fsx

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// WriteFile writes data to path atomically: a temporary file in the same directory is created with perm
// (so a secret is never readable by others, not even while it is written), filled, fsynced and renamed over
// path, and the directory is fsynced. Readers see the old content or the new one, never a mix.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	if err := ReplaceIn(root, filepath.Base(path), bytes.NewReader(data), perm); err != nil {
		return err
	}
	return SyncDir(dir)
}

// ReplaceIn writes src to rel inside r the way WriteFile does (a temporary file made 0600, then perm,
// filled, fsynced and renamed over rel), through os.Root so that a symlink in the tree cannot redirect it.
func ReplaceIn(r *os.Root, rel string, src io.Reader, perm os.FileMode) error {
	suffix := make([]byte, 4)
	rand.Read(suffix)
	tmp := filepath.Join(filepath.Dir(rel), "."+filepath.Base(rel)+".tmp-"+hex.EncodeToString(suffix))
	f, err := r.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			r.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := io.Copy(f, src); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := r.Rename(tmp, rel); err != nil {
		return err
	}
	ok = true
	return nil
}

// Searchable gives others search permission on dir (o+x, g+x), nothing more: an unprivileged process may
// pass through it to a path below that is its own.
func Searchable(dir string) error {
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm()&0o001 != 0 {
		return err
	}
	return os.Chmod(dir, st.Mode().Perm()|0o011)
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

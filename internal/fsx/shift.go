package fsx

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// ShiftOwners makes the tree at dir owned by an unprivileged container's id range: every uid and gid below
// size becomes base plus itself (ids already in the range stay, so that shifting twice is shifting once).
// chown clears set-id bits and file capabilities, so each file keeps its mode, and a file capability comes
// back as a version 3 capability whose root is base, the form the container's user namespace honours.
func ShiftOwners(dir string, base, size uint32) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		if st.Uid >= size && st.Gid >= size {
			return nil
		}
		uid, gid := st.Uid, st.Gid
		if uid < size {
			uid += base
		}
		if gid < size {
			gid += base
		}
		symlink := d.Type()&fs.ModeSymlink != 0
		var caps []byte
		if !symlink && d.Type().IsRegular() {
			caps = fileCaps(p)
		}
		if err := os.Lchown(p, int(uid), int(gid)); err != nil {
			return err
		}
		if symlink {
			return nil
		}
		if err := unix.Chmod(p, uint32(st.Mode)&07777); err != nil {
			return err
		}
		if caps != nil {
			return unix.Setxattr(p, "security.capability", capsV3(caps, base), 0)
		}
		return nil
	})
}

// fileCaps is the file's security.capability attribute, nil when it has none.
func fileCaps(p string) []byte {
	b := make([]byte, 64)
	n, err := unix.Getxattr(p, "security.capability", b)
	if err != nil || n < 20 {
		if err != nil && !errors.Is(err, unix.ENODATA) && !errors.Is(err, unix.EOPNOTSUPP) {
			return nil
		}
		return nil
	}
	return b[:n]
}

// capsV3 turns a version 2 or 3 capability attribute into version 3 with root uid rootid.
func capsV3(caps []byte, rootid uint32) []byte {
	const rev3 = 0x03000000
	out := make([]byte, 24)
	copy(out, caps[:20])
	magic := binary.LittleEndian.Uint32(out) & 0x00ffffff // keep the effective flag
	binary.LittleEndian.PutUint32(out, rev3|magic)
	binary.LittleEndian.PutUint32(out[20:], rootid)
	return out
}

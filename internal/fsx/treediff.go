package fsx

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// TreeDiff tells how tree b differs from tree a, as TreeSum compares them (type, mode, owner, device
// number, link target, size and content; timestamps left out), naming the first difference found ("" when
// none). Paths for which skip returns true (relative, slash-separated; a directory skips all below it)
// are left out on both sides. Content is read only for files whose size is the same and whose
// modification time differs, so comparing a tree with a faithful clone of it (cp --preserve, reflink,
// snapshot) after a few changes reads little.
func TreeDiff(a, b string, skip func(rel string) bool) (string, error) {
	type entry struct {
		info os.FileInfo
		seen bool
	}
	ents := map[string]*entry{}
	walk := func(dir string, fn func(rel, p string, info os.FileInfo) error) error {
		return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			rel = filepath.ToSlash(rel)
			if rel != "." && skip != nil && skip(rel) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			return fn(rel, p, info)
		})
	}
	if err := walk(a, func(rel, _ string, info os.FileInfo) error {
		ents[rel] = &entry{info: info}
		return nil
	}); err != nil {
		return "", err
	}
	errFound := errors.New("found")
	diff := ""
	err := walk(b, func(rel, p string, info os.FileInfo) error {
		e := ents[rel]
		if e == nil {
			diff = rel + " added"
			return errFound
		}
		e.seen = true
		if d, err := differs(filepath.Join(a, filepath.FromSlash(rel)), p, e.info, info); err != nil || d != "" {
			diff = rel + " " + d
			if err != nil {
				return err
			}
			return errFound
		}
		return nil
	})
	if errors.Is(err, errFound) {
		return diff, nil
	}
	if err != nil {
		return "", err
	}
	for rel, e := range ents {
		if !e.seen {
			return rel + " removed", nil
		}
	}
	return "", nil
}

// differs says how the file at pb differs from the one at pa ("" when it does not).
func differs(pa, pb string, a, b os.FileInfo) (string, error) {
	sa, _ := a.Sys().(*syscall.Stat_t)
	sb, _ := b.Sys().(*syscall.Stat_t)
	switch {
	case a.Mode() != b.Mode():
		return fmt.Sprintf("mode %v → %v", a.Mode(), b.Mode()), nil
	case sa != nil && sb != nil && (sa.Uid != sb.Uid || sa.Gid != sb.Gid):
		return fmt.Sprintf("owner %d:%d → %d:%d", sa.Uid, sa.Gid, sb.Uid, sb.Gid), nil
	case sa != nil && sb != nil && sa.Rdev != sb.Rdev:
		return "device number", nil
	case a.Mode()&fs.ModeSymlink != 0:
		ta, err := os.Readlink(pa)
		if err != nil {
			return "", err
		}
		tb, err := os.Readlink(pb)
		if err != nil {
			return "", err
		}
		if ta != tb {
			return "link target " + ta + " → " + tb, nil
		}
	case a.Mode().IsRegular():
		if a.Size() != b.Size() {
			return fmt.Sprintf("size %d → %d", a.Size(), b.Size()), nil
		}
		if a.ModTime().Equal(b.ModTime()) {
			return "", nil
		}
		same, err := sameContent(pa, pb)
		if err != nil || same {
			return "", err
		}
		return "content", nil
	}
	return "", nil
}

func sameContent(pa, pb string) (bool, error) {
	fa, err := os.Open(pa)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(pb)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	ba, bb := make([]byte, 1<<16), make([]byte, 1<<16)
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if ea == io.EOF || ea == io.ErrUnexpectedEOF {
			return eb == io.EOF || eb == io.ErrUnexpectedEOF, nil
		}
		if ea != nil {
			return false, ea
		}
		if eb != nil {
			return false, eb
		}
	}
}

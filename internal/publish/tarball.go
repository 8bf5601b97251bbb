package publish

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"
)

// Strip says what of a machine's tree stays out of a published image, and how the files that hold this
// host's secrets are rewritten. Paths are relative to the tree, without a leading slash.
type Strip struct {
	Empty []string // directories published empty: the data directories bound from [Paths] Srv, srv
}

// fixed rewrites or drops the files that are this host's, whatever the image: it returns the content to
// publish instead, or drop = true.
func fixed(rel string, content func() ([]byte, error)) (data []byte, rewrite, drop bool, err error) {
	base := path.Base(rel)
	switch {
	case rel == "etc/shadow" || rel == "etc/shadow-":
		b, err := content()
		return lockPasswords(b), true, false, err
	case rel == "etc/machine-id":
		return nil, true, false, nil // empty: systemd gives the machine its own id at boot
	case rel == "var/lib/dbus/machine-id":
		return nil, false, true, nil
	case strings.HasPrefix(rel, "etc/ssh/ssh_host_"):
		return nil, false, true, nil
	case strings.HasPrefix(rel, "etc/ssl/private/"), strings.HasPrefix(rel, "var/log/journal/"):
		return nil, false, true, nil
	case base == ".env" || strings.HasSuffix(base, ".env"),
		strings.HasSuffix(base, ".pem") && !strings.HasPrefix(rel, "etc/ssl/certs/") && !strings.HasPrefix(rel, "usr/"),
		strings.HasSuffix(base, ".key") && !strings.HasPrefix(rel, "usr/") && !strings.HasPrefix(rel, "etc/apt/"),
		base == ".bash_history", base == ".mysql_history", base == ".lesshst":
		return nil, false, true, nil
	}
	return nil, false, false, nil
}

// lockPasswords replaces every password hash of a shadow file by "!" (locked): the host that pulls the
// image sets its own root password.
func lockPasswords(b []byte) []byte {
	var out bytes.Buffer
	for _, line := range strings.SplitAfter(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) > 2 && f[1] != "" && f[1] != "*" && f[1] != "!" && f[1] != "!*" {
			f[1] = "!"
		}
		out.WriteString(strings.Join(f, ":"))
	}
	return out.Bytes()
}

// Export writes the tree at dir to w as a reproducible gzip-compressed tar that systemd-importd (and
// machinectl import-tar) unpack (gzip, not zstd: systemd 252, Debian 12's, pulls xz, gzip and bzip2 only;
// gzip is the fastest of them to make, and made by one goroutine with no name or time in its header it is
// byte-for-byte reproducible): entries in name order, numeric owners only, no access or change times,
// modification times clamped to clampAt, extended attributes kept (capabilities, ACLs), hard links as links.
// Secrets of this host are left out or rewritten (see fixed); the directories in s.Empty are published
// empty. It returns the SHA-256 of what it wrote.
func Export(dir string, w io.Writer, s Strip, clampAt time.Time) (string, error) {
	h := sha256.New()
	zw, err := gzip.NewWriterLevel(io.MultiWriter(w, h), gzip.DefaultCompression)
	if err != nil {
		return "", err
	}
	tw := tar.NewWriter(zw)
	e := exporter{dir: dir, tw: tw, links: map[[2]uint64]string{}, empty: s.Empty, clamp: clampAt.Truncate(time.Second)}
	if err := e.walk("."); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

type exporter struct {
	dir   string
	tw    *tar.Writer
	links map[[2]uint64]string // (dev, inode) → first name, for hard links
	empty []string
	clamp time.Time
}

func (e *exporter) walk(rel string) error {
	full := filepath.Join(e.dir, rel)
	st, err := os.Lstat(full)
	if err != nil {
		return err
	}
	if err := e.entry(rel, full, st); err != nil {
		return fmt.Errorf("export %s: %w", full, err)
	}
	if !st.IsDir() || slices.Contains(e.empty, rel) {
		return nil
	}
	ents, err := os.ReadDir(full)
	if err != nil {
		return err
	}
	// os.ReadDir sorts by name.
	for _, d := range ents {
		child := d.Name()
		if rel != "." {
			child = rel + "/" + d.Name()
		}
		if err := e.walk(child); err != nil {
			return err
		}
	}
	return nil
}

func (e *exporter) entry(rel, full string, st fs.FileInfo) error {
	sys := st.Sys().(*syscall.Stat_t)
	var data []byte
	rewrite := false
	if st.Mode().IsRegular() {
		var drop bool
		var err error
		data, rewrite, drop, err = fixed(rel, func() ([]byte, error) { return os.ReadFile(full) })
		if err != nil || drop {
			return err
		}
	}
	name := "./" + rel
	if rel == "." {
		name = "./"
	}
	mtime := st.ModTime().Truncate(time.Second)
	if mtime.After(e.clamp) {
		mtime = e.clamp
	}
	hdr := &tar.Header{Name: name, Mode: int64(st.Mode().Perm()), Uid: int(sys.Uid), Gid: int(sys.Gid), ModTime: mtime, Format: tar.FormatPAX}
	if st.Mode()&fs.ModeSetuid != 0 {
		hdr.Mode |= 0o4000
	}
	if st.Mode()&fs.ModeSetgid != 0 {
		hdr.Mode |= 0o2000
	}
	if st.Mode()&fs.ModeSticky != 0 {
		hdr.Mode |= 0o1000
	}
	switch m := st.Mode(); {
	case m.IsDir():
		hdr.Typeflag = tar.TypeDir
		if rel != "." {
			hdr.Name += "/"
		}
	case m&fs.ModeSymlink != 0:
		hdr.Typeflag = tar.TypeSymlink
		target, err := os.Readlink(full)
		if err != nil {
			return err
		}
		hdr.Linkname = target
	case m.IsRegular():
		hdr.Typeflag = tar.TypeReg
		id := [2]uint64{uint64(sys.Dev), sys.Ino}
		if first, ok := e.links[id]; ok && sys.Nlink > 1 && !rewrite {
			hdr.Typeflag = tar.TypeLink
			hdr.Linkname = first
		} else {
			if sys.Nlink > 1 && !rewrite {
				e.links[id] = name
			}
			hdr.Size = st.Size()
			if rewrite {
				hdr.Size = int64(len(data))
			}
		}
	case m&fs.ModeCharDevice != 0:
		hdr.Typeflag = tar.TypeChar
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(uint64(sys.Rdev))), int64(unix.Minor(uint64(sys.Rdev)))
	case m&fs.ModeDevice != 0:
		hdr.Typeflag = tar.TypeBlock
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(uint64(sys.Rdev))), int64(unix.Minor(uint64(sys.Rdev)))
	case m&fs.ModeNamedPipe != 0:
		hdr.Typeflag = tar.TypeFifo
	default: // sockets: nothing to publish
		return nil
	}
	if hdr.Typeflag != tar.TypeLink {
		x, err := xattrs(full)
		if err != nil {
			return err
		}
		for k, v := range x {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
	}
	if err := e.tw.WriteHeader(hdr); err != nil {
		return err
	}
	if hdr.Typeflag != tar.TypeReg {
		return nil
	}
	if rewrite {
		_, err := e.tw.Write(data)
		return err
	}
	f, err := os.Open(full)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(e.tw, f)
	if err == nil && n != hdr.Size {
		err = fmt.Errorf("changed while being read (%d bytes instead of %d)", n, hdr.Size)
	}
	return err
}

// xattrs reads a file's extended attributes (not following a symlink).
func xattrs(p string) (map[string]string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if errors.Is(err, unix.ERANGE) {
		if n, err = unix.Llistxattr(p, nil); err == nil {
			buf = make([]byte, n)
			n, err = unix.Llistxattr(p, buf)
		}
	}
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list xattrs: %w", err)
	}
	out := map[string]string{}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		sz, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, fmt.Errorf("xattr %s: %w", name, err)
		}
		v := make([]byte, sz)
		if sz, err = unix.Lgetxattr(p, name, v); err != nil {
			return nil, fmt.Errorf("xattr %s: %w", name, err)
		}
		out[name] = string(v[:sz])
	}
	return out, nil
}

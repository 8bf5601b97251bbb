package base

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"berth/internal/fsx"
)

// goSource says where the Go toolchain archive comes from: [Base] GoTarball when set (a URL or a local
// path), else the toolchain zip that the Go module proxy serves (first http(s) entry of GOPROXY).
func goSource(tarball, version, arch string) string {
	if tarball != "" {
		return tarball
	}
	proxy := "https://proxy.golang.org"
	for _, p := range strings.FieldsFunc(os.Getenv("GOPROXY"), func(r rune) bool { return r == ',' || r == '|' }) {
		if strings.HasPrefix(p, "http://") || strings.HasPrefix(p, "https://") {
			proxy = strings.TrimRight(p, "/")
			break
		}
	}
	return fmt.Sprintf("%s/golang.org/toolchain/@v/v0.0.1-go%s.linux-%s.zip", proxy, version, arch)
}

// fetchGo returns the path of a verified copy of the archive at src in cacheDir. A cached copy is used when
// its checksum still matches; a download or copy whose checksum differs from want is an error and is not kept.
func fetchGo(ctx context.Context, src, want, cacheDir string) (string, error) {
	ext := ".tar.gz"
	if strings.HasSuffix(src, ".zip") {
		ext = ".zip"
	}
	dst := filepath.Join(cacheDir, "go", want+ext)
	if sum, err := fsx.FileSHA256(dst); err == nil && sum == want {
		return dst, nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	var body io.ReadCloser
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return "", err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", fmt.Errorf("download Go toolchain: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return "", fmt.Errorf("download Go toolchain %s: %s", src, resp.Status)
		}
		body = resp.Body
	} else {
		f, err := os.Open(src)
		if err != nil {
			return "", fmt.Errorf("[Base] GoTarball: %w", err)
		}
		body = f
	}
	defer body.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".fetch-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), body); err != nil {
		tmp.Close()
		return "", fmt.Errorf("read Go toolchain %s: %w", src, err)
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return "", fmt.Errorf("Go toolchain %s has sha256 %s, but [Base] GoSHA256 is %s: refusing to install it", src, got, want)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", err
	}
	return dst, fsx.SyncDir(filepath.Dir(dst))
}

// entry is one member of a Go archive, whatever its format.
type entry struct {
	name string
	mode fs.FileMode
	link string
	body io.Reader
}

// eachEntry calls fn for every member of a go.dev tarball (go/...) or a module-proxy zip
// (golang.org/toolchain@.../...), with the prefix that holds bin/go stripped from its name.
func eachEntry(archive string, fn func(entry) error) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := io.ReadFull(f, magic); err != nil {
		return fmt.Errorf("%s: %w", archive, err)
	}
	if bytes.Equal(magic, []byte("PK\x03\x04")) {
		st, err := f.Stat()
		if err != nil {
			return err
		}
		zr, err := zip.NewReader(f, st.Size())
		if err != nil {
			return err
		}
		prefix := ""
		for _, zf := range zr.File {
			if p, ok := strings.CutSuffix(zf.Name, "bin/go"); ok && (p == "" || strings.HasSuffix(p, "/")) {
				prefix = p
				break
			}
		}
		for _, zf := range zr.File {
			rel, ok := strings.CutPrefix(zf.Name, prefix)
			if !ok || rel == "" {
				continue
			}
			r, err := zf.Open()
			if err != nil {
				return err
			}
			err = fn(entry{name: rel, mode: zf.Mode(), body: r})
			r.Close()
			if err != nil {
				return err
			}
		}
		return nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	gz, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s is neither a zip nor a gzip tarball: %w", archive, err)
	}
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", archive, err)
		}
		rel, ok := strings.CutPrefix(hdr.Name, "go/")
		if !ok || rel == "" {
			continue
		}
		if err := fn(entry{name: rel, mode: hdr.FileInfo().Mode(), link: hdr.Linkname, body: tr}); err != nil {
			return err
		}
	}
}

// installGo unpacks the toolchain archive into dir/usr/local/go, writing through os.Root so that nothing in
// the rootfs can redirect a write outside it.
func installGo(archive, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	const goroot = "usr/local/go"
	if err := root.RemoveAll(goroot); err != nil {
		return err
	}
	if err := root.MkdirAll(goroot, 0o755); err != nil {
		return err
	}
	foundGo := false
	err = eachEntry(archive, func(e entry) error {
		rel := path.Clean(e.name)
		if !fs.ValidPath(rel) {
			return fmt.Errorf("%s: unsafe member name %q", archive, e.name)
		}
		target := path.Join(goroot, rel)
		if e.mode.IsDir() {
			return root.MkdirAll(target, 0o755)
		}
		if err := root.MkdirAll(path.Dir(target), 0o755); err != nil {
			return err
		}
		switch {
		case e.mode&fs.ModeSymlink != 0:
			return root.Symlink(e.link, target)
		case e.mode.IsRegular():
			foundGo = foundGo || rel == "bin/go"
			perm := fs.FileMode(0o644)
			if e.mode&0o111 != 0 {
				perm = 0o755
			}
			w, err := root.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
			if err != nil {
				return err
			}
			if _, err := io.Copy(w, e.body); err != nil {
				w.Close()
				return fmt.Errorf("unpack %s: %w", e.name, err)
			}
			return w.Close()
		}
		return nil
	})
	if err == nil && !foundGo {
		err = fmt.Errorf("%s does not contain bin/go: not a Go toolchain archive", archive)
	}
	return err
}

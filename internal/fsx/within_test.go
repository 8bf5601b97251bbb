package fsx

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWithin: links planted in a machine's data directory cannot make the host read or write outside it;
// links that stay inside work; the host file stays as it was.
func TestWithin(t *testing.T) {
	tmp := t.TempDir()
	dir, host := filepath.Join(tmp, "srv", "haproxy"), filepath.Join(tmp, "state")
	os.MkdirAll(filepath.Join(dir, "real"), 0o755)
	os.MkdirAll(host, 0o700)
	secret := filepath.Join(host, "secrets.env")
	os.WriteFile(secret, []byte("NOSTR_PRIVATE_KEY=x\n"), 0o600)
	os.Symlink(secret, filepath.Join(dir, "haproxy.cfg"))
	os.Symlink(host, filepath.Join(dir, "certs"))
	os.Symlink("../../state/secrets.env", filepath.Join(dir, "rel.cfg"))
	os.Symlink("real", filepath.Join(dir, "inside"))

	for _, rel := range []string{"haproxy.cfg", "rel.cfg", "certs/secrets.env"} {
		if b, err := ReadIn(dir, rel); !errors.Is(err, ErrEscapes) || b != nil {
			t.Errorf("ReadIn %s: %q %v", rel, b, err)
		}
		if err := CheckIn(dir, rel); !errors.Is(err, ErrEscapes) || strings.Contains(err.Error(), "\n") {
			t.Errorf("CheckIn %s: %v", rel, err)
		}
	}
	err := WriteIn(dir, "certs/bundle.pem", []byte("x"), 0o600, 0o700)
	if !errors.Is(err, ErrEscapes) {
		t.Fatalf("WriteIn through a link out: %v", err)
	}
	t.Logf("refused: %v", err)
	if _, err := os.Stat(filepath.Join(host, "bundle.pem")); !os.IsNotExist(err) {
		t.Fatal("the write landed on the host")
	}
	if b, _ := os.ReadFile(secret); string(b) != "NOSTR_PRIVATE_KEY=x\n" {
		t.Fatal("the host file changed")
	}
	// Inside: fine, and a missing file is not an escape.
	if err := WriteIn(dir, "inside/new/f", []byte("ok"), 0o600, 0o700); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadIn(dir, "real/new/f"); err != nil || string(b) != "ok" {
		t.Fatalf("ReadIn inside: %q %v", b, err)
	}
	if err := CheckIn(dir, "missing"); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadIn(dir, "missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
}

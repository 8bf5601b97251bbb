package fsx

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileIsAtomicAndPrivate(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "secret.env")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("KEY=new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	b, _ := os.ReadFile(p)
	if st.Mode().Perm() != 0o600 || string(b) != "KEY=new\n" {
		t.Fatalf("mode %v content %q", st.Mode(), b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
	if err := WriteFile(filepath.Join(dir, "missing", "x"), nil, 0o600); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
}

func TestSwapExchangesTrees(t *testing.T) {
	dir := t.TempDir()
	dst, staging := filepath.Join(dir, "base"), filepath.Join(dir, "base.staging")
	os.MkdirAll(staging, 0o755)
	os.WriteFile(filepath.Join(staging, "v"), []byte("1"), 0o644)
	if replaced, err := Swap(staging, dst); err != nil || replaced {
		t.Fatalf("first swap: %v %v", replaced, err)
	}
	os.MkdirAll(staging, 0o755)
	os.WriteFile(filepath.Join(staging, "v"), []byte("2"), 0o644)
	before, _ := TreeSum(dst)
	if replaced, err := Swap(staging, dst); err != nil || !replaced {
		t.Fatalf("second swap: %v %v", replaced, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "v")); string(b) != "2" {
		t.Fatalf("new tree not in place: %q", b)
	}
	if old, _ := TreeSum(staging); old != before {
		t.Fatal("the old tree is not left at staging")
	}
}

func TestTreeSumSeesContentModeAndLinks(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("a"), 0o644)
	os.Symlink("f", filepath.Join(dir, "l"))
	s0, _ := TreeSum(dir)
	os.WriteFile(filepath.Join(dir, "f"), []byte("b"), 0o644)
	s1, _ := TreeSum(dir)
	os.Chmod(filepath.Join(dir, "f"), 0o600)
	s2, _ := TreeSum(dir)
	os.Remove(filepath.Join(dir, "l"))
	os.Symlink("g", filepath.Join(dir, "l"))
	s3, _ := TreeSum(dir)
	if s0 == s1 || s1 == s2 || s2 == s3 {
		t.Fatalf("TreeSum missed a change: %s %s %s %s", s0, s1, s2, s3)
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{`/plain`: "/plain", `/a\040b`: "/a b", `/x\134y\011`: "/x\\y\t", `/bad\09`: `/bad\09`, `/end\04`: `/end\04`} {
		if got := UnescapeMount(in); got != want {
			t.Errorf("UnescapeMount(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestMountsBelow(t *testing.T) {
	mounts, err := MountsBelow("/proc")
	if err != nil || len(mounts) == 0 || mounts[len(mounts)-1] != "/proc" {
		t.Fatalf("mounts below /proc: %v %v", mounts, err)
	}
	if mounts, _ := MountsBelow(t.TempDir()); len(mounts) != 0 {
		t.Fatalf("a fresh temp dir has mounts: %v", mounts)
	}
}

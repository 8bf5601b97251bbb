package lxc

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestGrants(t *testing.T) {
	for _, tc := range []struct {
		content string
		want    bool
	}{
		{"", false},
		{"alice:100000:65536\n", false},
		{"root:1000000:65536\n", true},
		{"0:900000:200000\n", true},
		{"root:1000001:65536\n", false},
		{"root:1000000:65535\n", false},
	} {
		if got := grants(tc.content, 1000000, 65536); got != tc.want {
			t.Errorf("grants(%q) = %v, want %v", tc.content, got, tc.want)
		}
	}
}

// TestEnsureSubIDs: a missing entry is appended once; the files' other lines stay.
func TestEnsureSubIDs(t *testing.T) {
	dir := t.TempDir()
	// ensureSubIDs acts only where newuidmap is installed: a stand-in on PATH, so that the test runs anywhere.
	os.WriteFile(filepath.Join(dir, "newuidmap"), []byte("#!/bin/sh\n"), 0o755)
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	if _, err := exec.LookPath("newuidmap"); err != nil {
		t.Fatal(err)
	}
	oldU, oldG := SubUID, SubGID
	SubUID, SubGID = filepath.Join(dir, "subuid"), filepath.Join(dir, "subgid")
	defer func() { SubUID, SubGID = oldU, oldG }()
	os.WriteFile(SubUID, []byte("alice:100000:65536"), 0o644)
	for range 2 {
		if err := ensureSubIDs(1000000, 65536); err != nil {
			t.Fatal(err)
		}
	}
	u, _ := os.ReadFile(SubUID)
	g, _ := os.ReadFile(SubGID)
	if string(u) != "alice:100000:65536\nroot:1000000:65536\n" || string(g) != "root:1000000:65536\n" {
		t.Fatalf("subuid %q, subgid %q", u, g)
	}
}

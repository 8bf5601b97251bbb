package demo

import (
	"os"
	"path/filepath"
	"testing"

	"berth/internal/testutil"
)

// The HTTP helpers the demo's tests share with internal/haproxy's, under their old names.
var (
	proxyFreeAddr = testutil.FreeAddr
	proxyGet      = testutil.HTTPGet
	expectBody    = testutil.ExpectBody
	proxyLoad     = testutil.HTTPLoad
)

// writeHook writes a /bin/sh script at dir/name (creating its directory) with the given mode (as in
// internal/upgraded's tests).
func writeHook(t *testing.T, dir, name, body string, mode os.FileMode) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

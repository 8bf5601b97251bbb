// Package testutil holds what berth's integration tests share: the root/tool gate, the shared cache of
// rootfs tarballs, and a local Go toolchain archive so that no test reaches the internet.
package testutil

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"berth/internal/fsx"
	"berth/internal/lock"
	"berth/internal/prereqs"
	"berth/internal/run"
)

// Require gates an integration test: it skips the test, saying why, when it does not run as root or a tool
// is missing. Under CI (CI=true) it fails instead: CI installs everything, so a skip there would hide a
// broken setup. Under -short (the unit tier, `./mage test:unit`) it always skips, even as root under CI.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping: integration test, not part of the unit tier (-short)")
	}
	var why string
	if os.Geteuid() != 0 {
		why = "needs root"
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil && why == "" {
			why = "needs " + tool + " (run `go run mage.go prereqs`)"
		}
	}
	if why != "" {
		SkipOrFail(t, why)
	}
}

// SkipOrFail skips t with the reason, or fails it under CI=true, where a missing prerequisite is a broken setup
// (but not under -short: the unit tier needs nothing installed).
func SkipOrFail(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" && !testing.Short() {
		t.Fatalf("%s (CI=true: a missing prerequisite is a failure, not a skip)", why)
	}
	t.Skipf("skipping: %s", why)
}

// CacheDir is where integration tests keep rootfs tarballs and toolchain archives across tests and
// packages of one run (and across runs on one machine): $BERTH_TEST_CACHE or /var/cache/berth-test, or for
// a user other than root, who cannot write there, berth-test in the user's cache directory.
func CacheDir() string { return prereqs.TestCacheDir() }

// Mirror is the Debian archive tests debootstrap from: $BERTH_TEST_MIRROR or Debian's default.
func Mirror() string {
	if m := os.Getenv("BERTH_TEST_MIRROR"); m != "" {
		return m
	}
	return "http://deb.debian.org/debian"
}

// GoArchive returns a gzip tarball (go/...) of the Go toolchain that runs this test, made once and cached,
// with its sha256 and version: the base build installs it exactly like a downloaded one.
func GoArchive(t testing.TB) (path, sum, version string) {
	t.Helper()
	version = strings.TrimPrefix(runtime.Version(), "go")
	dir := filepath.Join(CacheDir(), "go")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, "go"+version+".linux-"+runtime.GOARCH+".tar.gz")
	ctx := context.Background()
	l, err := lock.Acquire(ctx, path+".lock", "test go archive", 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if _, err := os.Stat(path); err != nil {
		tmp := path + ".tmp"
		goroot := runtime.GOROOT()
		if _, err := (run.Cmd{Argv: []string{"tar", "-czf", tmp, "--transform", "s,^\\.,go,", "-C", goroot,
			"--exclude=./pkg/obj", "."}, Env: []string{"GZIP=-1"}}).Run(ctx); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	sum, err = fsx.FileSHA256(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, sum, version
}

// RepoRoot is the directory holding go.mod, found upwards from the test's working directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
}

// BerthBinary compiles the berth binary (the Mage targets, as `mage -compile` makes it for units) into a
// temporary directory and returns its path.
func BerthBinary(t testing.TB) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "berth")
	cmd := run.Cmd{Argv: []string{"go", "run", "mage.go", "-compile", out}, Dir: RepoRoot(t), Timeout: 10 * time.Minute}
	if _, err := cmd.Run(context.Background()); err != nil {
		t.Fatalf("compile berth: %v", err)
	}
	return out
}

// WriteScript writes a /bin/sh script with body at dir/name (creating its directory) with mode, past the
// umask: the upgrade.d hooks of the hook runner's and the demo's tests.
func WriteScript(t testing.TB, dir, name, body string, mode os.FileMode) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// Package testbase builds a real base rootfs for integration tests: Debian's archive through the shared
// debootstrap cache, and the Go toolchain from a local archive, so no test reaches the internet.
package testbase

import (
	"context"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"berth/internal/base"
	"berth/internal/config"
	"berth/internal/testutil"
)

// Config returns a configuration whose paths all lie under a temporary directory (the caches excepted,
// which are shared), with the given extra BERTH_* values.
func Config(t testing.TB, env map[string]string) *config.Config {
	t.Helper()
	tmp := t.TempDir()
	var goArchive, goSum, goVersion string
	if testing.Short() {
		// The unit tier builds no base (Build skips): a toolchain pin nothing reads, not a tarball of GOROOT.
		goArchive, goSum, goVersion = filepath.Join(tmp, "go.tar.gz"), strings.Repeat("0", 64), strings.TrimPrefix(runtime.Version(), "go")
	} else {
		goArchive, goSum, goVersion = testutil.GoArchive(t)
	}
	vars := map[string]string{
		"BERTH_PATHS_MACHINES": filepath.Join(tmp, "machines"), "BERTH_PATHS_STATE": filepath.Join(tmp, "state"),
		"BERTH_PATHS_SRV": filepath.Join(tmp, "srv"), "BERTH_PATHS_NSPAWN": filepath.Join(tmp, "nspawn"),
		"BERTH_PATHS_CACHE": testutil.CacheDir(), "BERTH_BASE_MIRROR": testutil.Mirror(),
		"BERTH_BASE_GOVERSION": goVersion, "BERTH_BASE_GOTARBALL": goArchive, "BERTH_BASE_GOSHA256": goSum,
	}
	for k, v := range env {
		vars[k] = v
	}
	c, err := config.LoadFrom(filepath.Join(tmp, "absent.conf"), func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Build builds the base for c (skipping, with the reason, where debootstrap or nspawn cannot run).
func Build(t testing.TB, c *config.Config) {
	t.Helper()
	testutil.Require(t, "debootstrap", "systemd-nspawn")
	if _, err := base.Build(context.Background(), c, base.Options{}); err != nil {
		t.Fatal(err)
	}
}

package base

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"berth/internal/nspawn"
	"berth/internal/testhost"
	"berth/internal/testutil"
)

// TestBootstrappersAgree builds the base with debootstrap (cached in the shared test cache: the one TestBuild
// uses, then updated and full-upgraded) and with mmdebstrap (bootstrapped anew, so that the recipe skips the
// update and full-upgrade) and checks that the two hold the same packages at the
// same versions, the same Go, a root password each, and that each boots with systemd as PID 1 in a test host.
func TestBootstrappersAgree(t *testing.T) {
	testutil.Require(t, "debootstrap", "mmdebstrap", "systemd-nspawn")
	goArchive, goSum, goVersion := testutil.GoArchive(t)
	ctx := context.Background()
	packages := map[string]string{}
	dirs := map[string]string{}
	for _, tool := range []string{"debootstrap", "mmdebstrap"} {
		c := testConfig(t, map[string]string{
			"BERTH_BASE_MIRROR": testutil.Mirror(), "BERTH_BASE_GOVERSION": goVersion,
			"BERTH_BASE_GOTARBALL": goArchive, "BERTH_BASE_GOSHA256": goSum, "BERTH_BASE_BOOTSTRAPPER": tool,
		})
		c.Paths.Cache = testutil.CacheDir()
		start := time.Now()
		// mmdebstrap bootstraps anew (not from the shared cache): its fresh tree skips apt-get update and
		// full-upgrade, and must still hold what debootstrap's tree holds after them.
		res, err := Build(ctx, c, Options{Force: tool == "mmdebstrap"})
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		if tool == "mmdebstrap" && res.DebootstrapHit {
			t.Fatal("mmdebstrap: FORCE took the bootstrap from the cache")
		}
		t.Logf("%s: base built in %s (bootstrap cache hit: %v)", tool, time.Since(start).Round(time.Millisecond), res.DebootstrapHit)
		out, err := nspawn.Exec{Dir: res.Dir, Argv: []string{"dpkg-query", "-W", "-f", "${Package}:${Architecture} ${Version} ${db:Status-Abbrev}\n"}}.Run(ctx)
		if err != nil {
			t.Fatalf("%s: dpkg-query: %v\n%s", tool, err, out)
		}
		packages[tool], dirs[tool] = string(out), res.Dir
		out, err = nspawn.Exec{Dir: res.Dir, Argv: []string{"/bin/bash", "-lc", "go version"}}.Run(ctx)
		if err != nil || !strings.Contains(string(out), "go"+goVersion) {
			t.Fatalf("%s: go in the base: %v %s", tool, err, out)
		}
		shadow, err := os.ReadFile(filepath.Join(res.Dir, "etc/shadow"))
		if err != nil || !strings.HasPrefix(string(shadow), "root:$6$") {
			t.Fatalf("%s: root has no password hash: %.20q %v", tool, shadow, err)
		}
	}
	if a, b := packages["debootstrap"], packages["mmdebstrap"]; a != b {
		t.Fatalf("the bases differ in packages:\n%s", lineDiff(a, b))
	}
	t.Logf("both bases hold the same %d packages at the same versions", strings.Count(packages["mmdebstrap"], "\n"))
	for _, tool := range []string{"debootstrap", "mmdebstrap"} {
		h := testhost.New(t, testhost.Options{Name: "berth-i16-" + tool[:2], Tree: dirs[tool]})
		if got := h.Must(t, "readlink", "/proc/1/exe"); !strings.Contains(got, "systemd") {
			t.Fatalf("%s: PID 1 is %s", tool, got)
		}
		if err := h.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// lineDiff lists the lines only in a (-) or only in b (+).
func lineDiff(a, b string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	ina, inb := in(a), in(b)
	var out []string
	for l := range ina {
		if !inb[l] {
			out = append(out, "- "+l)
		}
	}
	for l := range inb {
		if !ina[l] {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

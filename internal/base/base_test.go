package base

import (
	"archive/zip"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"berth/internal/config"
	"berth/internal/fsx"
	"berth/internal/nspawn"
	"berth/internal/progress"
	"berth/internal/testutil"
)

// testConfig makes a configuration whose paths are all under a temp dir, with the given env overrides.
func testConfig(t *testing.T, env map[string]string) *config.Config {
	t.Helper()
	tmp := t.TempDir()
	vars := map[string]string{
		"BERTH_PATHS_MACHINES": filepath.Join(tmp, "machines"),
		"BERTH_PATHS_STATE":    filepath.Join(tmp, "state"),
		"BERTH_PATHS_CACHE":    filepath.Join(tmp, "cache"),
		"BERTH_PATHS_SRV":      filepath.Join(tmp, "srv"),
	}
	for k, v := range env {
		vars[k] = v
	}
	c, err := config.LoadFrom(filepath.Join(tmp, "missing.conf"), func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestKeyCoversEveryInput(t *testing.T) {
	ref := testConfig(t, nil)
	k0, err := Key(ref, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	sha := strings.Repeat("ab", 32)
	for name, env := range map[string]map[string]string{
		"suite":    {"BERTH_BASE_SUITE": "trixie"},
		"mirror":   {"BERTH_BASE_MIRROR": "http://ftp.de.debian.org/debian"},
		"packages": {"BERTH_BASE_PACKAGES": "systemd dbus ca-certificates less vim"},
		"suites":   {"BERTH_BASE_EXTRASUITES": "updates"},
		"security": {"BERTH_BASE_SECURITYMIRROR": "http://security.debian.org/debian-security"},
		"go":       {"BERTH_BASE_GOVERSION": "1.25.1", "BERTH_BASE_GOSHA256": sha},
	} {
		k, err := Key(testConfig(t, env), "amd64")
		if err != nil {
			t.Fatal(err)
		}
		if k == k0 {
			t.Errorf("changing %s does not change the key %s", name, k)
		}
	}
	if k, _ := Key(ref, "arm64"); k == k0 {
		t.Error("the architecture does not change the key")
	}
	if k, _ := Key(testConfig(t, map[string]string{"BERTH_BASE_PACKAGES": "less ca-certificates dbus systemd"}), "amd64"); k != k0 {
		t.Error("the order of packages changes the key")
	}
	// The bootstrapper is no input: both make the same tree (TestBootstrappersAgree), so switching keeps the base.
	for _, b := range []string{"debootstrap", "mmdebstrap"} {
		if k, _ := Key(testConfig(t, map[string]string{"BERTH_BASE_BOOTSTRAPPER": b}), "amd64"); k != k0 {
			t.Errorf("Bootstrapper=%s changes the base's key", b)
		}
	}
	// mmdebstrap installs from the other suites of sources.list too: they are in its cache key.
	mm := testConfig(t, map[string]string{"BERTH_BASE_BOOTSTRAPPER": "mmdebstrap"})
	one := testConfig(t, map[string]string{"BERTH_BASE_BOOTSTRAPPER": "mmdebstrap", "BERTH_BASE_EXTRASUITES": "updates"})
	if s := bootstrapSpec(mm, "amd64"); len(s.Sources) != 2 || s.Key() == bootstrapSpec(one, "amd64").Key() || s.Key() == spec(mm, "amd64").Key() {
		t.Errorf("mmdebstrap's spec: sources %q, key %s (one extra suite: %s, debootstrap: %s)", s.Sources, s.Key(), bootstrapSpec(one, "amd64").Key(), spec(mm, "amd64").Key())
	}
	if s := bootstrapSpec(testConfig(t, map[string]string{"BERTH_BASE_BOOTSTRAPPER": "debootstrap"}), "amd64"); s.Tool != "debootstrap" || s.Sources != nil {
		t.Errorf("debootstrap's spec: %+v", s)
	}
}

func TestGoSource(t *testing.T) {
	t.Setenv("GOPROXY", "direct")
	if got := goSource("", "1.26.10", "arm64"); got != "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go1.26.10.linux-arm64.zip" {
		t.Errorf("default source: %s", got)
	}
	t.Setenv("GOPROXY", "https://goproxy.example/,direct")
	if got := goSource("", "1.26.10", "amd64"); !strings.HasPrefix(got, "https://goproxy.example/golang.org/toolchain/") {
		t.Errorf("GOPROXY not used: %s", got)
	}
	if got := goSource("/srv/go.tar.gz", "1.26.10", "amd64"); got != "/srv/go.tar.gz" {
		t.Errorf("explicit source: %s", got)
	}
}

// writeZip makes a module-proxy-style toolchain zip holding files under prefix.
func writeZip(t *testing.T, path, prefix string, files map[string]string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	zw := zip.NewWriter(f)
	for name, body := range files {
		h := &zip.FileHeader{Name: prefix + name, Method: zip.Store}
		h.SetMode(0o644)
		if strings.HasPrefix(name, "bin/") {
			h.SetMode(0o755)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(body))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestFetchAndInstallGo(t *testing.T) {
	tmp := t.TempDir()
	archive := filepath.Join(tmp, "toolchain.zip")
	writeZip(t, archive, "golang.org/toolchain@v0.0.1-go1.26.10.linux-amd64/", map[string]string{
		"bin/go": "#!/bin/sh\necho go\n", "VERSION": "go1.26.10\n", "src/fmt/print.go": "package fmt\n",
	})
	sum, err := fsx.FileSHA256(archive)
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(tmp, "cache")
	if _, err := fetchGo(context.Background(), archive, strings.Repeat("0", 64), cache); err == nil ||
		!strings.Contains(err.Error(), "GoSHA256") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("a wrong checksum must be a one-line error naming GoSHA256, got %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(cache, "go")); len(entries) != 0 {
		t.Fatalf("a rejected archive was kept: %v", entries)
	}
	got, err := fetchGo(context.Background(), archive, sum, cache)
	if err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(tmp, "rootfs")
	os.MkdirAll(filepath.Join(rootfs, "usr/local"), 0o755)
	// A symlink planted in the guest must not redirect the install onto the host.
	outside := filepath.Join(tmp, "outside")
	os.Mkdir(outside, 0o755)
	if err := os.Symlink(outside, filepath.Join(rootfs, "usr/local/go")); err != nil {
		t.Fatal(err)
	}
	if err := installGo(got, rootfs); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(rootfs, "usr/local/go/bin/go"))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("bin/go not installed executable: %v %v", st, err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("install escaped the rootfs through a symlink: %v", entries)
	}
	notGo := filepath.Join(tmp, "notgo.zip")
	writeZip(t, notGo, "x/", map[string]string{"README": "hi"})
	if err := installGo(notGo, rootfs); err == nil || !strings.Contains(err.Error(), "bin/go") {
		t.Fatalf("an archive without bin/go must be refused, got %v", err)
	}
}

func TestPasswordIsPrivateAndKept(t *testing.T) {
	file := filepath.Join(t.TempDir(), "passwords", "base")
	pw, err := Password(file)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(file)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("password file mode %v, %v", st.Mode(), err)
	}
	if dst, _ := os.Stat(filepath.Dir(file)); dst.Mode().Perm() != 0o700 {
		t.Fatalf("password dir mode %v", dst.Mode())
	}
	if len(pw) < 20 || pw == "creator" {
		t.Fatalf("weak password %q", pw)
	}
	again, _ := Password(file)
	if again != pw {
		t.Fatal("the password changed between builds")
	}
}

// TestBuild builds a real base (debootstrap from Debian's archive, cached in the test cache; the Go
// toolchain from a local archive of this test's own Go), checks it, rebuilds it warm, and then breaks a
// build midway to see the previous base survive.
func TestBuild(t *testing.T) {
	testutil.Require(t, "debootstrap", "systemd-nspawn")
	goArchive, goSum, goVersion := testutil.GoArchive(t)
	env := map[string]string{
		"BERTH_BASE_MIRROR":    testutil.Mirror(),
		"BERTH_BASE_GOVERSION": goVersion,
		"BERTH_BASE_GOTARBALL": goArchive,
		"BERTH_BASE_GOSHA256":  goSum,
	}
	c := testConfig(t, env)
	c.Paths.Cache = testutil.CacheDir() // share debootstrap results across the run
	ctx := context.Background()

	start := time.Now()
	res, err := Build(ctx, c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	cold := time.Since(start)
	t.Logf("cold build %s (debootstrap cache hit: %v)", cold.Round(time.Millisecond), res.DebootstrapHit)
	if res.Reused {
		t.Fatal("first build reported reuse")
	}

	out, err := nspawn.Exec{Dir: res.Dir, Argv: []string{"/bin/bash", "-lc", "go version && go env GOSUMDB GOROOT"}}.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "go version go"+goVersion) || !strings.Contains(string(out), "sum.golang.org") {
		t.Fatalf("go in the base: %s", out)
	}
	// apt knows the security and updates suites: every image and nightly upgrade gets security updates.
	out, err = nspawn.Exec{Dir: res.Dir, Argv: []string{"apt-cache", "policy"}}.Run(ctx)
	for _, suite := range []string{"n=bookworm-security", "n=bookworm-updates", "n=bookworm,"} {
		if err != nil || !strings.Contains(string(out), suite) {
			t.Fatalf("apt-cache policy in the base lacks %s: %v\n%s", suite, err, out)
		}
	}
	t.Logf("base sources.list:\n%s", SourcesList(c))
	out, err = nspawn.Exec{Dir: res.Dir, Argv: []string{"/bin/bash", "-ic", "command -v go"}}.Run(ctx)
	if err != nil || strings.TrimSpace(string(out)) != "/usr/local/go/bin/go" {
		t.Fatalf("interactive shell does not find go: %q %v", out, err)
	}
	st, err := os.Stat(PasswordFile(c))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("password file: %v %v", st, err)
	}
	shadow, err := os.ReadFile(filepath.Join(res.Dir, "etc/shadow"))
	if err != nil || !strings.HasPrefix(string(shadow), "root:$") {
		t.Fatalf("root has no password hash: %.40q %v", shadow, err)
	}
	if _, err := os.Stat(res.Dir + ".staging"); !os.IsNotExist(err) {
		t.Fatalf("staging left behind: %v", err)
	}

	start = time.Now()
	warm, err := Build(ctx, c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("warm build %s (cold %s)", time.Since(start).Round(time.Millisecond), cold.Round(time.Millisecond))
	if !warm.Reused || warm.Key != res.Key {
		t.Fatalf("warm build with unchanged inputs did not reuse the base: %+v", warm)
	}

	before, err := fsx.TreeSum(res.Dir)
	if err != nil {
		t.Fatal(err)
	}
	// An archive whose checksum is right but which is no Go toolchain fails the build after debootstrap,
	// provisioning and unpacking have run in staging.
	bogus := filepath.Join(t.TempDir(), "bogus.tar.gz")
	if err := exec.Command("tar", "-czf", bogus, "-C", t.TempDir(), ".").Run(); err != nil {
		t.Fatal(err)
	}
	bogusSum, _ := fsx.FileSHA256(bogus)
	broken := *c
	broken.Base.GoTarball, broken.Base.GoSHA256 = bogus, bogusSum
	_, err = Build(ctx, &broken, Options{})
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "bin/go") {
		t.Fatalf("broken build: want a one-line error about bin/go, got %v", err)
	}
	t.Logf("broken build failed with: %v", err)
	// A wrong checksum fails before anything is unpacked.
	wrong := *c
	wrong.Base.GoSHA256 = strings.Repeat("0", 64)
	if _, err := Build(ctx, &wrong, Options{}); err == nil || !strings.Contains(err.Error(), "GoSHA256") {
		t.Fatalf("wrong GoSHA256: %v", err)
	}
	after, err := fsx.TreeSum(res.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if before != after {
		t.Fatalf("failed builds changed the previous base: %s -> %s", before, after)
	}
	t.Logf("base tree sum before and after the failed builds: %s", before)
	if _, err := os.Stat(res.Dir + ".staging"); !os.IsNotExist(err) {
		t.Fatalf("staging left behind after failure: %v", err)
	}
	if again, err := Build(ctx, c, Options{}); err != nil || !again.Reused {
		t.Fatalf("after failed builds the good base is not current: %+v %v", again, err)
	}
}

// TestShowPassword: a console prints the password itself on a terminal (a real pty here), only the file
// holding it anywhere else (a pipe, a log).
func TestShowPassword(t *testing.T) {
	file := filepath.Join(t.TempDir(), "passwords", "mysql")
	pw, err := Password(file)
	if err != nil {
		t.Fatal(err)
	}
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pty here: %v", err)
	}
	defer ptm.Close()
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	if !progress.IsTerminal(ptm) || progress.IsTerminal(w) {
		t.Fatalf("IsTerminal: pty %v, pipe %v", progress.IsTerminal(ptm), progress.IsTerminal(w))
	}
	for _, tc := range []struct {
		terminal bool
		want     string
	}{{true, "root password (" + file + "): " + pw + "\n"}, {false, "root password: in " + file + "\n"}} {
		var out strings.Builder
		if err := ShowPassword(&out, file, tc.terminal); err != nil || out.String() != tc.want {
			t.Fatalf("terminal %v: %q %v, want %q", tc.terminal, out.String(), err, tc.want)
		}
	}
}

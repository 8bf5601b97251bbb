// Package prereqs prepares the host: the Debian packages berth and its tests need, and the kernel settings
// of the original prereqs.sh, kept in one sysctl.d file and applied at once.
package prereqs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"berth/internal/fsx"
	"berth/internal/run"
)

// Host lists what berth itself runs on the host.
var Host = []string{
	"debootstrap", "mmdebstrap", "systemd-container", "dbus", "tar", "xz-utils", "ca-certificates", "iproute2", "nftables",
	"lxc", "haproxy", "btrfs-progs", "xfsprogs", "acl", "attr", "libcap2-bin", "openssl",
	"gpg", // systemd-importd verifies signed images with it (machine:pull)
	// building berth itself: go-lxc from Debian's package, with cgo
	"golang-gopkg-lxc-go-lxc.v2-dev", "lxc-dev", "pkg-config", "gcc",
}

// Test lists what the test suite needs on top of Host.
var Test = []string{"busybox-static", "curl", "util-linux", "mariadb-client", "shellcheck", "apt-utils",
	"pebble", // the ACME server of the relay's and the demo's certificate tests (on loopback)
}

// GoTools are the Go programs the test suite runs, installed with `go install` from the module proxy into
// GoToolsDir: versitygw is the S3 server of the publish/pull system test.
var GoTools = map[string]string{"versitygw": "github.com/versity/versitygw/cmd/versitygw@v1.8.0"}

// TestCacheDir is where the tests cache what they make once (rootfs tarballs, Go tools):
// $BERTH_TEST_CACHE, else the user's cache directory (not root) or /var/cache/berth-test.
func TestCacheDir() string {
	if d := os.Getenv("BERTH_TEST_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil && os.Geteuid() != 0 {
		return filepath.Join(d, "berth-test")
	}
	return "/var/cache/berth-test"
}

// GoToolsDir holds the installed GoTools, one directory per module version.
func GoToolsDir() string { return filepath.Join(TestCacheDir(), "gotools") }

// GoTool is the path of an installed Go tool of GoTools.
func GoTool(name string) string {
	return filepath.Join(GoToolsDir(), strings.NewReplacer("/", "_", "@", "_").Replace(GoTools[name]), name)
}

// InstallGoTools installs the GoTools missing from GoToolsDir (about two minutes for versitygw, once).
func InstallGoTools(ctx context.Context) error {
	for name, mod := range GoTools {
		bin := GoTool(name)
		if _, err := os.Stat(bin); err == nil {
			continue
		}
		logger().Info("installing a Go tool for the tests", "tool", mod)
		tmp := filepath.Dir(bin) + ".tmp"
		os.RemoveAll(tmp)
		if _, err := (run.Cmd{Argv: []string{"go", "install", mod}, Env: []string{"GOBIN=" + tmp}, Timeout: 20 * time.Minute}).Run(ctx); err != nil {
			return err
		}
		os.RemoveAll(filepath.Dir(bin))
		if err := os.Rename(tmp, filepath.Dir(bin)); err != nil {
			return err
		}
	}
	return nil
}

// Bench lists what the benchmark's baselines need on top of Host (which has debootstrap and mmdebstrap, the
// bare bootstrap baselines): lxc-snapshot of a directory-backed container copies with rsync (only a
// Recommends of lxc).
var Bench = []string{"rsync"}

// SysctlFile is where berth keeps its kernel settings.
const SysctlFile = "/etc/sysctl.d/60-berth.conf"

// Sysctls are the original prereqs.sh settings (inotify limits for many machines, a wide ephemeral port
// range for HAProxy).
const Sysctls = `# Written by berth (mage prereqs). Applied with sysctl --system.
fs.inotify.max_user_watches = 524288
fs.inotify.max_user_instances = 8192
net.ipv4.ip_local_port_range = 1024 65535
`

// Missing returns the packages of pkgs that dpkg does not report as installed.
func Missing(ctx context.Context, pkgs []string) ([]string, error) {
	args := append([]string{"dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n"}, pkgs...)
	out, _ := run.Cmd{Argv: args, Timeout: time.Minute, Quiet: true}.Run(ctx) // exit 1 when a package is unknown
	installed := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if name, status, ok := strings.Cut(line, " "); ok && status == "installed" {
			installed[strings.SplitN(name, ":", 2)[0]] = true
		}
	}
	var missing []string
	for _, p := range pkgs {
		if !installed[p] {
			missing = append(missing, p)
		}
	}
	return missing, nil
}

// Install installs the packages that are missing, non-interactively; with nothing missing it does nothing.
func Install(ctx context.Context, pkgs []string) error {
	missing, err := Missing(ctx, pkgs)
	if err != nil || len(missing) == 0 {
		return err
	}
	logger().Info("installing packages", "packages", strings.Join(missing, " "))
	env := []string{"DEBIAN_FRONTEND=noninteractive"}
	if _, err := (run.Cmd{Argv: []string{"apt-get", "-q", "update"}, Env: env, Timeout: 10 * time.Minute}).Run(ctx); err != nil {
		return err
	}
	argv := append([]string{"apt-get", "-q", "-y", "--no-install-recommends", "-o", "Dpkg::Options::=--force-confold", "install"}, missing...)
	_, err = run.Cmd{Argv: argv, Env: env, Timeout: 30 * time.Minute}.Run(ctx)
	return err
}

// ApplySysctls writes SysctlFile when its content differs and loads every sysctl.d file with sysctl --system
// (the original's sysctl -p never loaded the port range).
func ApplySysctls(ctx context.Context, file string) error {
	if cur, err := os.ReadFile(file); err != nil || !bytes.Equal(cur, []byte(Sysctls)) {
		if err := fsx.WriteFile(file, []byte(Sysctls), 0o644); err != nil {
			return err
		}
	}
	if _, err := run.Command(ctx, "sysctl", "--system"); err != nil {
		return fmt.Errorf("apply %s: %w", file, err)
	}
	return nil
}

// Package prereqs prepares the host: the Debian packages berth and its tests need, and the kernel settings
// of the original prereqs.sh, kept in one sysctl.d file and applied at once.
package prereqs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"berth/internal/fsx"
	"berth/internal/run"
)

// Host lists what berth itself runs on the host.
var Host = []string{
	"debootstrap", "mmdebstrap", "systemd-container", "dbus", "tar", "xz-utils", "ca-certificates", "iproute2", "nftables",
	"lxc", "haproxy", "btrfs-progs", "xfsprogs", "acl", "attr", "libcap2-bin", "openssl",
	// building berth itself: go-lxc from Debian's package, with cgo
	"golang-gopkg-lxc-go-lxc.v2-dev", "lxc-dev", "pkg-config", "gcc",
}

// Test lists what the test suite needs on top of Host.
var Test = []string{"busybox-static", "curl", "util-linux", "mariadb-client", "shellcheck", "apt-utils"}

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

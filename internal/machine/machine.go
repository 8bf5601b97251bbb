// Package machine controls systemd-nspawn machines through the host's systemd over D-Bus: a machine is the
// instance systemd-nspawn@<name>.service, started, stopped and enabled at boot like any other unit.
package machine

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"berth/internal/run"
	"berth/internal/systemd"
	"berth/internal/systemd/unitname"
	"berth/internal/wait"
)

// Unit is the systemd unit that runs machine name.
func Unit(name string) string { return unitname.NSpawn(name) }

// ErrNoSystemd is returned where systemd is not running (a container, a build VM).
var ErrNoSystemd = systemd.ErrNoSystemd

// BootTimeout bounds how long Start waits for a machine's own systemd to finish booting.
var BootTimeout = 2 * time.Minute

// Start starts the machine (a no-op when it runs) and waits until its systemd has finished booting. A
// machine whose user namespace took the demo containers' host ids is stopped again, with an error.
func Start(ctx context.Context, name string) error {
	if err := systemd.Run(ctx, "start", Unit(name), 0); err != nil {
		return err
	}
	if err := checkIDs(ctx, name); err != nil {
		return err
	}
	return WaitBooted(ctx, name, BootTimeout)
}

// WaitBooted waits until the machine's systemd reports running (or degraded, which is logged with the
// failed units), at most timeout.
func WaitBooted(ctx context.Context, name string, timeout time.Duration) error {
	return wait.Until(ctx, timeout, 300*time.Millisecond, func(ctx context.Context) (bool, error) {
		out, _ := run.Cmd{Argv: []string{"systemctl", "-M", name, "is-system-running", "--wait"}, Timeout: timeout, Quiet: true}.Run(ctx)
		switch state := strings.TrimSpace(string(out)); state {
		case "running":
			return true, nil
		case "degraded":
			failed, _ := run.Output(ctx, "systemctl", "-M", name, "--failed", "--plain", "--no-legend", "--no-pager")
			logger().Warn("machine booted degraded", "machine", name, "failed", strings.Join(strings.Fields(failed), " "))
			return true, nil
		default:
			return false, fmt.Errorf("%s did not finish booting within %s (state %q): see journalctl -M %s", name, timeout, state, name)
		}
	})
}

// Stop stops the machine (a no-op when it is stopped).
func Stop(ctx context.Context, name string) error {
	return systemd.Run(ctx, "stop", Unit(name), 0)
}

// Restart restarts the machine and waits until it has booted again.
func Restart(ctx context.Context, name string) error {
	if err := systemd.Run(ctx, "restart", Unit(name), 0); err != nil {
		return err
	}
	if err := checkIDs(ctx, name); err != nil {
		return err
	}
	return WaitBooted(ctx, name, BootTimeout)
}

// Enable makes the machine start at boot (machines.target wants it, and multi-user.target wants
// machines.target), as `machinectl enable` does.
func Enable(ctx context.Context, name string) error {
	conn, err := systemd.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, _, err := conn.EnableUnitFilesContext(ctx, []string{Unit(name), unitname.MachinesTarget}, false, true); err != nil {
		return fmt.Errorf("enable %s: %w", Unit(name), err)
	}
	return conn.ReloadContext(ctx)
}

// Disable undoes Enable for this machine.
func Disable(ctx context.Context, name string) error {
	conn, err := systemd.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.DisableUnitFilesContext(ctx, []string{Unit(name)}, false); err != nil {
		return fmt.Errorf("disable %s: %w", Unit(name), err)
	}
	return conn.ReloadContext(ctx)
}

// State is what systemd says of a machine.
type State struct {
	Active  string // active, inactive, failed, activating, ... ("unknown" without systemd)
	Enabled string // enabled, disabled, ...
}

// Status asks systemd for the machine's state.
func Status(ctx context.Context, name string) (State, error) {
	conn, err := systemd.Connect(ctx)
	if err != nil {
		return State{Active: "unknown", Enabled: "unknown"}, err
	}
	defer conn.Close()
	props, err := conn.GetUnitPropertiesContext(ctx, Unit(name))
	if err != nil {
		return State{}, err
	}
	st := State{Active: fmt.Sprint(props["ActiveState"]), Enabled: fmt.Sprint(props["UnitFileState"])}
	if st.Enabled == "" {
		st.Enabled = "disabled"
	}
	return st, nil
}

// Running reports whether systemd runs the machine; without systemd nothing runs.
func Running(ctx context.Context, name string) bool {
	st, err := Status(ctx, name)
	return err == nil && (st.Active == "active" || st.Active == "activating" || st.Active == "reloading")
}

// WaitTCP waits until addr accepts a connection or timeout passes.
func WaitTCP(ctx context.Context, addr string, timeout time.Duration) error {
	return wait.Until(ctx, timeout, 250*time.Millisecond, func(ctx context.Context) (bool, error) {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err == nil {
			return true, c.Close()
		}
		return false, fmt.Errorf("%s did not accept connections within %s: %w", addr, timeout, err)
	})
}

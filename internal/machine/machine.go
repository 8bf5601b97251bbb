// Package machine controls systemd-nspawn machines through the host's systemd over D-Bus: a machine is the
// instance systemd-nspawn@<name>.service, started, stopped and enabled at boot like any other unit.
package machine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	sd "github.com/coreos/go-systemd/v22/dbus"

	"berth/internal/run"
)

// Unit is the systemd unit that runs machine name.
func Unit(name string) string { return "systemd-nspawn@" + name + ".service" }

// ErrNoSystemd is returned where systemd is not running (a container, a build VM).
var ErrNoSystemd = errors.New("systemd is not running on this host (no /run/systemd/system): machines cannot be started here")

func connect(ctx context.Context) (*sd.Conn, error) {
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		return nil, ErrNoSystemd
	}
	return sd.NewSystemConnectionContext(ctx)
}

// job runs a unit job (start, stop, restart) and waits for its result.
func job(ctx context.Context, name string, do func(*sd.Conn, chan<- string) (int, error)) error {
	conn, err := connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch := make(chan string, 1)
	if _, err := do(conn, ch); err != nil {
		return fmt.Errorf("%s: %w", Unit(name), err)
	}
	select {
	case res := <-ch:
		if res != "done" {
			return fmt.Errorf("%s: job %s (see journalctl -u %s)", Unit(name), res, Unit(name))
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", Unit(name), ctx.Err())
	}
}

// BootTimeout bounds how long Start waits for a machine's own systemd to finish booting.
var BootTimeout = 2 * time.Minute

// Start starts the machine (a no-op when it runs) and waits until its systemd has finished booting.
func Start(ctx context.Context, name string) error {
	err := job(ctx, name, func(c *sd.Conn, ch chan<- string) (int, error) {
		return c.StartUnitContext(ctx, Unit(name), "replace", ch)
	})
	if err != nil {
		return err
	}
	return WaitBooted(ctx, name, BootTimeout)
}

// WaitBooted waits until the machine's systemd reports running (or degraded, which is logged with the
// failed units), at most timeout.
func WaitBooted(ctx context.Context, name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		out, _ := run.Cmd{Argv: []string{"systemctl", "-M", name, "is-system-running", "--wait"}, Timeout: timeout, Quiet: true}.Run(ctx)
		switch state := strings.TrimSpace(string(out)); state {
		case "running":
			return nil
		case "degraded":
			failed, _ := run.Output(ctx, "systemctl", "-M", name, "--failed", "--plain", "--no-legend", "--no-pager")
			slog.Warn("machine booted degraded", "machine", name, "failed", strings.Join(strings.Fields(failed), " "))
			return nil
		default:
			if time.Now().After(deadline) {
				return fmt.Errorf("%s did not finish booting within %s (state %q): see journalctl -M %s", name, timeout, state, name)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// Stop stops the machine (a no-op when it is stopped).
func Stop(ctx context.Context, name string) error {
	return job(ctx, name, func(c *sd.Conn, ch chan<- string) (int, error) {
		return c.StopUnitContext(ctx, Unit(name), "replace", ch)
	})
}

// Restart restarts the machine and waits until it has booted again.
func Restart(ctx context.Context, name string) error {
	err := job(ctx, name, func(c *sd.Conn, ch chan<- string) (int, error) {
		return c.RestartUnitContext(ctx, Unit(name), "replace", ch)
	})
	if err != nil {
		return err
	}
	return WaitBooted(ctx, name, BootTimeout)
}

// Enable makes the machine start at boot (machines.target wants it, and multi-user.target wants
// machines.target), as `machinectl enable` does.
func Enable(ctx context.Context, name string) error {
	conn, err := connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, _, err := conn.EnableUnitFilesContext(ctx, []string{Unit(name), "machines.target"}, false, true); err != nil {
		return fmt.Errorf("enable %s: %w", Unit(name), err)
	}
	return conn.ReloadContext(ctx)
}

// Disable undoes Enable for this machine.
func Disable(ctx context.Context, name string) error {
	conn, err := connect(ctx)
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
	conn, err := connect(ctx)
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
	deadline := time.Now().Add(timeout)
	for {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not accept connections within %s: %w", addr, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

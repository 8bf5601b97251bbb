// Package systemd talks to the host's systemd over D-Bus: the connection, the error that says systemd is
// not running, and the one job runner that starts, stops, restarts or reloads a unit and waits for the job's
// result. Unit files are generated apart from it, without D-Bus (internal/units, with the names from
// internal/systemd/unitname), as go-systemd keeps unit/ apart from dbus/.
package systemd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	sd "github.com/coreos/go-systemd/v22/dbus"
)

// ErrNoSystemd is returned where systemd is not running (a container, a build VM).
var ErrNoSystemd = errors.New("systemd is not running on this host (no /run/systemd/system)")

// RunDir exists when systemd runs (sd_booted); a variable for tests.
var RunDir = "/run/systemd/system"

// Connect opens a connection to the system's systemd, or returns ErrNoSystemd where it does not run.
func Connect(ctx context.Context) (*sd.Conn, error) {
	if _, err := os.Stat(RunDir); err != nil {
		return nil, ErrNoSystemd
	}
	return sd.NewSystemConnectionContext(ctx)
}

// Job runs verb (start, stop, restart or reload) on the unit name in "replace" mode and waits for the job's
// result, at most timeout (0: as long as ctx lets it). A done or skipped job is a success.
func Job(ctx context.Context, conn *sd.Conn, verb, name string, timeout time.Duration) error {
	do := map[string]func(context.Context, string, string, chan<- string) (int, error){
		"start": conn.StartUnitContext, "stop": conn.StopUnitContext,
		"restart": conn.RestartUnitContext, "reload": conn.ReloadUnitContext,
	}[verb]
	if do == nil {
		return fmt.Errorf("%s %s: unknown job type", verb, name)
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	ch := make(chan string, 1)
	if _, err := do(ctx, name, "replace", ch); err != nil {
		return fmt.Errorf("%s %s: %w", verb, name, err)
	}
	select {
	case res := <-ch:
		if res != "done" && res != "skipped" {
			return fmt.Errorf("%s %s: job %s (journalctl -u %s)", verb, name, res, name)
		}
		return nil
	case <-ctx.Done():
		if timeout > 0 {
			return fmt.Errorf("%s %s: no result after %s: %w", verb, name, timeout, ctx.Err())
		}
		return fmt.Errorf("%s %s: %w", verb, name, ctx.Err())
	}
}

// Run connects and runs one Job.
func Run(ctx context.Context, verb, name string, timeout time.Duration) error {
	conn, err := Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return Job(ctx, conn, verb, name, timeout)
}

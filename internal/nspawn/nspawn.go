// Package nspawn runs commands inside a rootfs directory with systemd-nspawn, without booting it.
package nspawn

import (
	"context"
	"io"
	"maps"
	"os"
	"slices"
	"time"

	"berth/internal/run"
)

// Exec describes one command run inside a rootfs.
type Exec struct {
	Dir      string            // the rootfs
	Argv     []string          // the command inside
	Env      map[string]string // --setenv
	Stdin    io.Reader         // piped to the command (nil: none)
	Output   io.Writer         // stdout and stderr of the command (nil: captured for errors only)
	Settings bool              // read the machine's .nspawn settings file (binds, ...); off by default
	Bind     []string          // extra --bind= arguments (src:dst)
	BindRO   []string          // extra --bind-ro= arguments (src:dst)
	Timeout  time.Duration
}

// Harmless is the warning systemd-nspawn prints at exit where systemd is not PID 1 (with --register=no
// --keep-unit); it changes nothing, so it is left out of error messages (ARCHITECTURE.md, Conventions).
const Harmless = `Attempted to remove disk file system under "/run/systemd/nspawn/propagate/`

// CommandLine returns the systemd-nspawn command line for e. It does not register with machined and keeps the
// caller's unit, so it works both on a systemd host and where systemd is not PID 1.
func (e Exec) CommandLine() []string {
	argv := []string{"systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--pipe", "--directory=" + e.Dir}
	if !e.Settings {
		argv = append(argv, "--settings=no")
	}
	for _, b := range e.Bind {
		argv = append(argv, "--bind="+b)
	}
	for _, b := range e.BindRO {
		argv = append(argv, "--bind-ro="+b)
	}
	for _, k := range slices.Sorted(maps.Keys(e.Env)) {
		argv = append(argv, "--setenv="+k+"="+e.Env[k])
	}
	return append(append(argv, "--"), e.Argv...)
}

// Run runs the command and returns its output when Output is nil.
func (e Exec) Run(ctx context.Context) ([]byte, error) {
	return run.Cmd{Argv: e.CommandLine(), Stdin: e.Stdin, Stdout: e.Output, Stderr: e.Output, Timeout: e.Timeout,
		Ignore: []string{Harmless}}.Run(ctx)
}

// HostFlags starts a systemd-nspawn command line for an interactive machine: registered with machined on
// a systemd host, and with --register=no --keep-unit where systemd is not running (a container, a CI VM).
func HostFlags() []string {
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		return []string{"systemd-nspawn"}
	}
	return []string{"systemd-nspawn", "--register=no", "--keep-unit"}
}

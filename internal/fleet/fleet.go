// Package fleet is what the machine targets call: it loads the configuration and dispatches an action string
// (install, start, status, ...) to one machine or to every image folder, prints the status table, and waits
// for a machine's health check. The lifecycle of one machine over D-Bus is internal/machine.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"berth/images"
	"berth/internal/alert"
	"berth/internal/base"
	"berth/internal/clone"
	"berth/internal/config"
	"berth/internal/image"
	"berth/internal/lock"
	"berth/internal/machine"
	"berth/internal/progress"
	"berth/internal/publish"
	"berth/internal/run"
	"berth/internal/wait"
)

// Options are the operator's knobs for the machine actions, read by the magefiles.
type Options struct {
	Images  fs.FS             // the image folders (images.Active)
	Sources map[string]string // BERTH_SOURCE_<NAME>=<path>, keyed by NAME: local replacements of git sources
	Plan    bool              // PLAN=1: install prints its steps instead of running them
	Confirm string            // CONFIRM=<image>: purge deletes that image's data
	Force   bool              // FORCE=1: pull the build that is installed again
}

func (o Options) images() fs.FS {
	if o.Images == nil {
		return images.FS
	}
	return o.Images
}

// Do loads the configuration and runs action on the machine of image name.
func Do(action, name string, o Options) error {
	c, err := config.Load()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fsys := o.images()
	m, err := image.Load(fsys, name)
	if err != nil {
		return err
	}
	switch action {
	case "install":
		return image.Install(ctx, c, fsys, name, image.Options{Sources: image.SourceOverrides(m, o.Sources), DryRun: o.Plan, Out: os.Stdout})
	case "clean":
		return Clean(ctx, c, name)
	case "publish":
		return publishImages(ctx, c, fsys, []string{name})
	case "pull":
		_, err := publish.Pull(ctx, c, fsys, name, publish.PullOptions{Force: o.Force, Out: os.Stdout})
		return err
	case "purge":
		return Purge(ctx, c, fsys, name, o.Confirm)
	case "start":
		return machine.Start(ctx, name)
	case "stop":
		return machine.Stop(ctx, name)
	case "enable":
		return machine.Enable(ctx, name)
	case "status":
		return Status(ctx, c, fsys, []string{name})
	case "logs":
		return run.Interactive(ctx, time.Minute, "journalctl", "--no-pager", "-n", "200", "-u", machine.Unit(name))
	case "console":
		if err := machine.Start(ctx, name); err != nil {
			return err
		}
		if err := base.ShowPassword(os.Stdout, image.PasswordFile(c, name), progress.IsTerminal(os.Stdout)); err != nil {
			return err
		}
		return run.Interactive(ctx, 24*time.Hour, "machinectl", "login", name)
	}
	return fmt.Errorf("unknown action %q", action)
}

// All runs action on every image folder, in [Relay] Machines order first.
func All(action string, o Options) error {
	c, err := config.Load()
	if err != nil {
		return err
	}
	names, err := image.NamesOfKind(o.images(), "machine")
	if action == "status" {
		names, err = statusNames(o.images())
	}
	if err != nil {
		return err
	}
	// [Relay] Machines order first, then any other image folder.
	var ordered []string
	for _, n := range append(append([]string{}, c.Relay.Machines...), names...) {
		if slices.Contains(names, n) && !slices.Contains(ordered, n) {
			ordered = append(ordered, n)
		}
	}
	if action == "status" {
		return Status(context.Background(), c, o.images(), ordered)
	}
	for _, n := range ordered {
		if err := Do(action, n, o); err != nil {
			return err
		}
	}
	return nil
}

// Clean stops the machine and removes its rootfs, settings and password. Data under [Paths] Srv stays.
func Clean(ctx context.Context, c *config.Config, name string) error {
	l, err := lock.Acquire(ctx, filepath.Join(c.Paths.State, "locks", "machine-"+name+".lock"), name+" clean", time.Hour)
	if err != nil {
		return err
	}
	defer l.Release()
	if err := machine.Stop(ctx, name); err != nil && !errors.Is(err, machine.ErrNoSystemd) {
		return err
	}
	for _, p := range []string{image.MachineDir(c, name), filepath.Join(c.Paths.Machines, "."+name+".staging")} {
		if err := clone.Remove(ctx, p); err != nil {
			return err
		}
	}
	for _, p := range []string{image.NSpawnFile(c, name), image.PasswordFile(c, name), image.PasswordFile(c, name) + ".crypt"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	fmt.Printf("%s cleaned; its data under %s is kept\n", name, c.Paths.Srv)
	return nil
}

// CleanAll is the root clean of the original: every machine (each image folder of Kind=machine and every
// tree under [Paths] Machines that berth installed, a folder since removed included), then the base and
// its caches. Data under [Paths] Srv stays.
func CleanAll(ctx context.Context, c *config.Config, fsys fs.FS) error {
	names, err := image.NamesOfKind(fsys, "machine")
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(c.Paths.Machines)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, e := range entries {
		if st, serr := image.ReadStamp(filepath.Join(c.Paths.Machines, e.Name())); serr == nil && st.Image == e.Name() && e.IsDir() &&
			config.ValidName(e.Name()) == nil && !slices.Contains(names, e.Name()) {
			names = append(names, e.Name())
		}
	}
	for _, n := range names {
		if err := Clean(ctx, c, n); err != nil {
			return err
		}
	}
	removed, err := base.Clean(ctx, c)
	for _, p := range removed {
		fmt.Println("removed", p)
	}
	return err
}

// Purge deletes the machine's data directories, only when confirm names the image.
func Purge(ctx context.Context, c *config.Config, fsys fs.FS, name, confirm string) error {
	m, err := image.Load(fsys, name)
	if err != nil {
		return err
	}
	var dirs []string
	for _, b := range m.Binds {
		dirs = append(dirs, filepath.Join(c.Paths.Srv, b.Host))
	}
	if confirm != name {
		return fmt.Errorf("purge deletes %s for good: run it again with CONFIRM=%s", strings.Join(dirs, " "), name)
	}
	if machine.Running(ctx, name) {
		return fmt.Errorf("%s is running: stop it before purging its data", name)
	}
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
		fmt.Println("deleted", d)
	}
	return nil
}

// Status prints one table of the machines: state, enabled, health, ports, image build time.
func Status(ctx context.Context, c *config.Config, fsys fs.FS, names []string) error {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MACHINE\tSTATE\tENABLED\tHEALTH\tADDRESS\tBUILT")
	for _, n := range names {
		m, err := image.Load(fsys, n)
		if err != nil {
			// A broken folder is one row saying why, not a status that fails for every machine.
			fmt.Fprintf(tw, "%s\tbroken image: %s\t-\t-\t-\t-\n", n, strings.Join(strings.Fields(err.Error()), " "))
			continue
		}
		st, _ := machine.Status(ctx, n)
		built := "not installed"
		if s, err := image.ReadStamp(image.MachineDir(c, n)); err == nil {
			built = s.Built.Local().Format(time.DateTime)
		}
		health, addr := "-", "host network"
		if m.HealthTCP != "" {
			addr = m.HealthTCP
			health = "ok"
			if err := machine.WaitTCP(ctx, m.HealthTCP, 0); err != nil {
				health = "down"
			}
		}
		if m.HealthFile != "" && health == "ok" {
			if _, err := os.Stat(filepath.Join(c.Paths.Srv, m.HealthFile)); err != nil {
				health = "first run pending"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n, st.Active, st.Enabled, health, addr, built)
	}
	return tw.Flush()
}

// statusNames lists the machine folders and the broken ones, which status shows as rows with their error
// (image.NamesOfKind fails on the first broken folder).
func statusNames(fsys fs.FS) ([]string, error) {
	names, err := image.Names(fsys)
	var out []string
	for _, n := range names {
		if m, err := image.Load(fsys, n); err != nil || m.Kind == "machine" {
			out = append(out, n)
		}
	}
	return out, err
}

// BaseAndAll builds the base and then every machine, Parallel() at a time (installAll).
func BaseAndAll(ctx context.Context, o Options) error {
	c, err := config.Load()
	if err != nil {
		return err
	}
	if _, err := base.Build(ctx, c, base.Options{}); err != nil {
		return err
	}
	return InstallAll(ctx, c, o, Parallel())
}

// InstallAll installs every machine image over the built base, n at a time ([Relay] Machines first).
func InstallAll(ctx context.Context, c *config.Config, o Options, n int) error {
	names, err := machineOrder(c, o)
	if err != nil {
		return err
	}
	return installAll(ctx, c, o, names, n)
}

// WaitHealthy waits until the machine passes its image's health check (its port answers, its first-run file
// exists), at most [Relay] HealthTimeout; the error names the machine and what it waited for.
func WaitHealthy(ctx context.Context, c *config.Config, fsys fs.FS, name string) error {
	m, err := image.Load(fsys, name)
	if err != nil {
		return err
	}
	timeout := c.Relay.HealthTimeout
	deadline := time.Now().Add(timeout)
	if m.HealthTCP != "" {
		if err := machine.WaitTCP(ctx, m.HealthTCP, timeout); err != nil {
			return fmt.Errorf("machine %s is not healthy: %w", name, err)
		}
	}
	if m.HealthFile != "" {
		p := filepath.Join(c.Paths.Srv, m.HealthFile)
		return wait.Until(ctx, time.Until(deadline), 500*time.Millisecond, func(context.Context) (bool, error) {
			if _, err := os.Stat(p); err == nil {
				return true, nil
			}
			return false, fmt.Errorf("machine %s is not healthy: %s did not appear within %s", name, p, timeout)
		})
	}
	return nil
}

func publishImages(ctx context.Context, c *config.Config, fsys fs.FS, names []string) error {
	cred, err := publish.LoadCredentials(c, os.LookupEnv)
	if err != nil {
		return err
	}
	_, err = publish.Publish(ctx, c, fsys, names, cred, os.Stdout)
	return err
}

// PublishAll publishes every machine installed on this host.
func PublishAll(o Options) error {
	c, err := config.Load()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	names, err := publish.Installed(c, o.images())
	if err != nil {
		return err
	}
	return publishImages(ctx, c, o.images(), names)
}

// PullAll pulls every machine image the origin's index names, in [Relay] Machines order first, one at a
// time: a machine that restarted on a new build is waited on through its health check before the next is
// pulled, and the first failure stops the round with an alert (berth-machines-pull.timer runs it).
func PullAll(o Options) error {
	c, err := config.Load()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	origin, err := publish.Origin(c)
	if err != nil {
		return err
	}
	idx, err := publish.FetchIndex(ctx, origin)
	if err != nil {
		return err
	}
	names, err := image.NamesOfKind(o.images(), "machine")
	if err != nil {
		return err
	}
	var ordered []string
	for _, n := range append(append([]string{}, c.Relay.Machines...), names...) {
		if _, ok := idx.Images[n]; ok && slices.Contains(names, n) && !slices.Contains(ordered, n) {
			ordered = append(ordered, n)
		}
	}
	if len(ordered) == 0 {
		return fmt.Errorf("pull: %s names no machine image this berth knows", publish.Join(origin, publish.IndexName))
	}
	os.MkdirAll(filepath.Join(c.Paths.State, "publish"), 0o700)
	alerts := alert.Sender{Component: "pull", Log: filepath.Join(c.Paths.State, "publish", "alerts.log"), Command: c.Demo.AlertCommand}
	for _, n := range ordered {
		pulled, err := publish.Pull(ctx, c, o.images(), n, publish.PullOptions{Force: o.Force, Out: os.Stdout})
		if err == nil && pulled && machine.Running(ctx, n) {
			err = WaitHealthy(ctx, c, o.images(), n)
		}
		if err != nil {
			alerts.Send(ctx, fmt.Sprintf("pull stopped at %s: %v", n, err))
			return err
		}
	}
	return nil
}

// PublicKey prints the publisher's public key (making the signing key once when missing).
func PublicKey() error {
	c, err := config.Load()
	if err != nil {
		return err
	}
	return publish.ExportPublicKey(c, os.Stdout)
}

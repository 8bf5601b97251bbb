package publish

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/import1"
	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"berth/internal/base"
	"berth/internal/clone"
	"berth/internal/config"
	"berth/internal/fsx"
	"berth/internal/image"
	"berth/internal/lock"
	"berth/internal/machine"
	"berth/internal/progress"
	"berth/internal/run"
	"berth/internal/systemd"
)

// ImportdMachines is where systemd-importd puts what it pulls; [Paths] Machines must be it.
const ImportdMachines = "/var/lib/machines"

// PullTimeout bounds one download through systemd-importd.
var PullTimeout = 30 * time.Minute

// Origin is where pull reads index.json and the builds: [Publish] Pull, else the bucket's path-style URL.
func Origin(c *config.Config) (string, error) {
	if c.Publish.Pull != "" {
		return c.Publish.Pull, nil
	}
	if c.Publish.Endpoint == "" || c.Publish.Bucket == "" {
		return "", errors.New("pull: no origin: set [Publish] Pull to an HTTP(S) URL, or [Publish] Endpoint and Bucket (read anonymously)")
	}
	return Join(Join(c.Publish.Endpoint, c.Publish.Bucket), c.Publish.Prefix), nil
}

// FetchIndex reads index.json at origin.
func FetchIndex(ctx context.Context, origin string) (Index, error) {
	u := Join(origin, IndexName)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return Index{}, fmt.Errorf("pull: %s: %w", u, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Index{}, fmt.Errorf("pull: %s does not answer: %s", u, oneLine(errors.Unwrap(err)))
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return Index{}, fmt.Errorf("pull: nothing was ever published at %s (%s: 404)", origin, u)
	}
	if resp.StatusCode != http.StatusOK {
		return Index{}, fmt.Errorf("pull: %s answered %s: is the bucket readable without credentials, or [Publish] Pull right?", u, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Index{}, fmt.Errorf("pull: %s: %w", u, err)
	}
	idx, err := ParseIndex(b)
	if err != nil {
		return idx, fmt.Errorf("pull: %s: %w", u, err)
	}
	return idx, nil
}

// PullOptions change Pull.
type PullOptions struct {
	Force bool      // pull even when the same build is installed
	Out   io.Writer // what pull says
}

// Pull downloads the current build of image name through systemd-importd (PullTar over D-Bus, verified by
// signature or checksum) into a staging machine, takes the host-side steps an install takes (.nspawn file,
// data directories and skeleton, a root password of this host's own, a placeholder certificate), and swaps
// it in place of the machine, restarting it when it ran. The build already installed is not pulled again.
// A failed download or verification leaves the installed machine as it was and names the file.
func Pull(ctx context.Context, c *config.Config, fsys fs.FS, name string, o PullOptions) (pulled bool, err error) {
	err = pull(ctx, c, fsys, name, o, &pulled)
	return pulled, err
}

func pull(ctx context.Context, c *config.Config, fsys fs.FS, name string, o PullOptions, swapped *bool) error {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	m, err := image.Load(fsys, name)
	if err != nil {
		return err
	}
	if c.Paths.Machines != ImportdMachines {
		return fmt.Errorf("pull: [Paths] Machines = %s: systemd-importd pulls into %s only", c.Paths.Machines, ImportdMachines)
	}
	origin, err := Origin(c)
	if err != nil {
		return err
	}
	verify := c.Publish.Verify
	if verify == "signature" {
		if c.Publish.PublicKey != "" {
			fp, added, err := TrustKey(c.Publish.PublicKey)
			if err != nil {
				return fmt.Errorf("pull: %w", err)
			}
			if added {
				fmt.Fprintf(o.Out, "trusted the publisher's key %s in %s\n", fp, ImportKeyring)
			}
		} else if _, err := os.Stat(ImportKeyring); err != nil {
			return fmt.Errorf("pull: [Publish] Verify = signature, but no publisher key: set [Publish] PublicKey to the file `berth publish:key` wrote on the build host (or Verify = checksum)")
		}
	}
	idx, err := FetchIndex(ctx, origin)
	if err != nil {
		return err
	}
	e, ok := idx.Images[name]
	if !ok {
		return fmt.Errorf("pull: %s was never published at %s", name, Join(origin, IndexName))
	}
	dst := image.MachineDir(c, name)
	if st, err := image.ReadStamp(dst); err == nil && BuildKey(st) == e.Build && !o.Force {
		fmt.Fprintf(o.Out, "%s: build %s is already installed; nothing to do\n", name, e.Build)
		return nil
	}
	l, err := lock.Acquire(ctx, filepath.Join(c.Paths.State, "locks", "machine-"+name+".lock"), name+" pull", time.Hour)
	if err != nil {
		return err
	}
	defer l.Release()

	staging := "berth-staging-" + name
	stagingDir := filepath.Join(c.Paths.Machines, staging)
	if err := clone.Remove(ctx, stagingDir); err != nil {
		return err
	}
	defer clone.Remove(context.Background(), stagingDir)
	removeImportdCache(c.Paths.Machines, e.Build)
	src := Join(origin, e.Tarball)
	job := progress.New(name+":pull", 3)
	start := time.Now()
	step := job.Step(fmt.Sprintf("systemd-importd: pull-tar %s (verify=%s) into %s", src, verify, staging))
	if err := step.Done(importdPull(ctx, src, staging, verify, step)); err != nil {
		return fmt.Errorf("pull %s: %w; the installed machine is unchanged", name, err)
	}
	took := time.Since(start)
	removeImportdCache(c.Paths.Machines, e.Build)
	st, err := image.ReadStamp(stagingDir)
	if err != nil || BuildKey(st) != e.Build {
		return fmt.Errorf("pull %s: the pulled tree is not build %s (its stamp: %v %s); the installed machine is unchanged", name, e.Build, err, BuildKey(st))
	}
	step = job.Step("machine settings " + image.NSpawnFile(c, name) + ", data directories under " + c.Paths.Srv + ", root password " + image.PasswordFile(c, name))
	err = func() error {
		if err := os.MkdirAll(c.Paths.NSpawn, 0o755); err != nil {
			return err
		}
		if err := fsx.WriteFile(image.NSpawnFile(c, name), []byte(m.NSpawnFile(c.Paths.Srv)), 0o644); err != nil {
			return err
		}
		if err := image.PlaceHostSide(c, fsys, name); err != nil {
			return err
		}
		return base.SetRootPassword(ctx, stagingDir, image.PasswordFile(c, name))
	}()
	if err := step.Done(err); err != nil {
		return fmt.Errorf("pull %s: %w", name, err)
	}
	step = job.Step("swap " + staging + " into " + dst + " (restart the machine if it runs)")
	err = func() error {
		if _, err := fsx.Swap(stagingDir, dst); err != nil {
			return err
		}
		*swapped = true
		if machine.Running(ctx, name) {
			return machine.Restart(ctx, name)
		}
		return nil
	}()
	if err := step.Done(err); err != nil {
		return fmt.Errorf("pull %s: %w", name, err)
	}
	fmt.Fprintf(o.Out, "%s: pulled build %s from %s in %s (verified: %s)\n", name, e.Build, src, took.Round(100*time.Millisecond), verify)
	logger().Info("image pulled", "image", name, "build", e.Build, "from", src, "verify", verify)
	return nil
}

// importdPull asks systemd-importd to pull url into the machine local and waits for the transfer's end.
func importdPull(ctx context.Context, src, local, verify string, out io.Writer) error {
	if _, err := os.Stat(systemd.RunDir); err != nil {
		return systemd.ErrNoSystemd
	}
	bus, err := dbus.ConnectSystemBus()
	if err != nil {
		return err
	}
	defer bus.Close()
	if err := bus.AddMatchSignal(dbus.WithMatchInterface("org.freedesktop.import1.Manager"), dbus.WithMatchMember("TransferRemoved")); err != nil {
		return err
	}
	signals := make(chan *dbus.Signal, 16)
	bus.Signal(signals)
	imp, err := import1.New()
	if err != nil {
		return fmt.Errorf("systemd-importd over D-Bus: %w (is systemd-container installed?)", err)
	}
	defer imp.Close()
	// The journal's lines from this transfer on: the previous pull's (perhaps a second ago, perhaps under
	// the same transfer number, importd's count restarts with it) are not its cause.
	since := time.Now()
	tr, err := imp.PullTar(src, local, verify, true)
	if err != nil {
		return fmt.Errorf("systemd-importd refused to pull %s: %w", src, err)
	}
	ctx, cancel := context.WithTimeout(ctx, PullTimeout)
	defer cancel()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	last := -1
	for {
		select {
		case <-ctx.Done():
			imp.CancelTransfer(tr.Id)
			return fmt.Errorf("transfer %d of %s: %w", tr.Id, src, ctx.Err())
		case <-tick.C:
			if ts, err := imp.ListTransfers(); err == nil {
				for _, t := range ts {
					if p := int(t.Progress * 10); t.Id == tr.Id && p > last {
						last = p
						fmt.Fprintf(out, "downloaded %d%%\n", p*10)
					}
				}
			}
		case sig := <-signals:
			if sig == nil || len(sig.Body) < 3 {
				continue
			}
			if id, _ := sig.Body[0].(uint32); id != tr.Id {
				continue
			}
			if result, _ := sig.Body[2].(string); result != "done" {
				return fmt.Errorf("systemd-importd %s %s: %s", result, src, importdCause(ctx, since, tr.Id))
			}
			return nil
		}
	}
}

// importdCause is the line of systemd-importd's journal since since that says why transfer id failed (see
// transferCause), or its last line.
func importdCause(ctx context.Context, since time.Time, id uint32) string {
	last := "see journalctl -u systemd-importd"
	// The journal may not hold the transfer's last lines yet when its end is signalled: asked a few times.
	for try := 0; try < 6; try++ {
		b, _ := run.Cmd{Argv: []string{"journalctl", "--no-pager", "-o", "cat", "-u", "systemd-importd.service",
			"--since", fmt.Sprintf("@%d.%06d", since.Unix(), since.Nanosecond()/1000)}, Timeout: 20 * time.Second, Quiet: true}.Run(context.WithoutCancel(ctx))
		cause, found := transferCause(string(b), id)
		if found {
			return cause
		}
		if cause != "" {
			last = cause
		}
		time.Sleep(500 * time.Millisecond)
	}
	return last
}

// transferCause is the line of importd's journal that says why transfer id failed: an invalid download
// (checksum or signature, naming the file), or else its first error; found is false when there is none, and
// the cause is then the last line. Lines tagged with another transfer's number ("(transfer3) ...") are not read.
func transferCause(journal string, id uint32) (cause string, found bool) {
	var lines []string
	mine := fmt.Sprintf("(transfer%d)", id)
	for _, l := range strings.Split(journal, "\n") {
		if l = strings.TrimSpace(l); l != "" && (!strings.HasPrefix(l, "(transfer") || strings.HasPrefix(l, mine)) {
			lines = append(lines, l)
		}
	}
	for _, want := range []string{"DOWNLOAD INVALID", "ignature", "hecksum", "tar: ", "Failed", "failed"} {
		for _, l := range lines {
			if strings.Contains(l, want) && !strings.Contains(l, "exited with") && !strings.Contains(l, "Transfer failed") {
				return l, true
			}
		}
	}
	if len(lines) == 0 {
		return "", false
	}
	return lines[len(lines)-1], false
}

// removeImportdCache removes systemd-importd's hidden copies of what it downloaded (.tar-<escaped url>...,
// whose name carries the build key, hex digits that survive the escaping): the machine is kept once, and a
// later pull (FORCE=1) downloads and verifies again instead of answering from a copy (importd asks the server
// with the copy's ETag). importd marks its copy immutable; the flag is cleared first.
func removeImportdCache(machines, build string) {
	ents, _ := os.ReadDir(machines)
	for _, d := range ents {
		if strings.HasPrefix(d.Name(), ".tar-") && strings.Contains(d.Name(), build) {
			p := filepath.Join(machines, d.Name())
			clearImmutable(p)
			if err := clone.Remove(context.Background(), p); err != nil {
				logger().Warn("could not remove systemd-importd's copy", "dir", p, "err", err)
			}
		}
	}
}

// clearImmutable clears the immutable flag (chattr -i) of p, if it has it.
func clearImmutable(p string) {
	f, err := os.Open(p)
	if err != nil {
		return
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err == nil && flags&fsImmutable != 0 {
		unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags&^fsImmutable))
	}
}

const fsImmutable = 0x10 // FS_IMMUTABLE_FL, linux/fs.h

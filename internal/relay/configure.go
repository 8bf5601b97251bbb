package relay

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"berth/internal/acme"
	"berth/internal/config"
	"berth/internal/fleet"
	"berth/internal/fsx"
	"berth/internal/image"
	"berth/internal/lock"
	"berth/internal/machine"
	"berth/internal/run"
	"berth/internal/tlsx"
)

// Report says what configure or a rotation changed.
type Report struct {
	Changed   []string // files written
	Restarted []string // machine/unit restarted because a file it reads changed
}

func (r Report) String() string {
	if len(r.Changed) == 0 && len(r.Restarted) == 0 {
		return "nothing changed"
	}
	return fmt.Sprintf("wrote %s; restarted %s", orNone(r.Changed), orNone(r.Restarted))
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "nothing"
	}
	return strings.Join(s, ", ")
}

// BundleFile is the certificate bundle HAProxy serves.
func BundleFile(c *config.Config) string {
	return filepath.Join(edgeDir(c), bundleRel)
}

// edgeDir is the haproxy machine's data directory (its /etc/haproxy); berth reads and writes there only
// through os.Root (fsx.ReadIn, WriteIn).
func edgeDir(c *config.Config) string { return filepath.Join(c.Paths.Srv, "haproxy") }

const bundleRel = "certs/bundle.pem"

// guestPaths are the files configure, rotateKeys and renew read or write in the machines' data directories.
func guestPaths(c *config.Config) [][2]string {
	srv := func(m string) string { return filepath.Join(c.Paths.Srv, m) }
	return append([][2]string{{edgeDir(c), bundleRel}, {edgeDir(c), "haproxy.cfg"}, {edgeDir(c), ".cookiecutter.env"},
		{srv("mysql"), mysqlURIRel}, {srv("relaycreator"), ".env"}, {srv("relaycreator"), "deploy.env"},
		{srv("strfry"), ".cookiecutter.env"}, {srv("strfry"), ".interceptor.env"}}, Retired(c)...)
}

// checkGuestPaths refuses, in one line and before anything is written, a path in a machine's data directory
// that a link planted inside the machine leads out of it.
func checkGuestPaths(c *config.Config) error {
	for _, p := range guestPaths(c) {
		if err := fsx.CheckIn(p[0], p[1]); err != nil {
			return fmt.Errorf("relay: %w", err)
		}
	}
	return nil
}

// checkInputs validates the domain and the machines before anything changes.
func checkInputs(c *config.Config) error {
	if c.Relay.Domain == "" {
		return errors.New("relay: [Relay] Domain is empty: set it (or MYDOMAIN, or SELF_SIGNED=<domain>)")
	}
	for _, n := range append([]string{"mysql"}, c.Relay.Machines...) {
		if _, err := image.ReadStamp(image.MachineDir(c, n)); err != nil {
			return fmt.Errorf("relay: machine %s is not installed (%s:install)", n, n)
		}
	}
	return checkGuestPaths(c)
}

// check is checkInputs and, with ACME, a check that the directory answers; it returns the ACME client.
func check(ctx context.Context, c *config.Config) (*acme.Client, error) {
	if err := checkInputs(c); err != nil || c.Relay.SelfSigned {
		return nil, err
	}
	return acmeClient(ctx, c)
}

// Configure starts the relay machines in [Relay] Machines order, each waited on through its health check,
// and writes what they read: the env files (secrets made once and kept) and the TLS bundle. Running it again
// changes nothing unless an input changed; the services reading a changed file are restarted.
func Configure(ctx context.Context, c *config.Config, fsys fs.FS) (Report, error) {
	var rep Report
	cl, err := check(ctx, c)
	if err != nil {
		return rep, err
	}
	l, err := lock.Acquire(ctx, filepath.Join(c.Paths.State, "locks", "relay.lock"), "relay configure", 30*time.Minute)
	if err != nil {
		return rep, err
	}
	defer l.Release()
	// mysql comes first whatever the order: every env file needs its DATABASE_URL. Nothing is written
	// before it is healthy.
	if err := startHealthy(ctx, c, fsys, "mysql"); err != nil {
		return rep, err
	}
	secrets, _, err := LoadSecrets(SecretsFile(c))
	if err != nil {
		return rep, err
	}
	if rep, err = writeFiles(ctx, c, fsys, secrets); err != nil {
		return rep, err
	}
	for _, name := range c.Relay.Machines {
		if err := startHealthy(ctx, c, fsys, name); err != nil {
			return rep, err
		}
	}
	if cl != nil { // ACME validates through the running edge: the certificate comes last
		r, err := renew(ctx, c, cl, false)
		rep.Changed, rep.Restarted = append(rep.Changed, r.Changed...), append(rep.Restarted, r.Restarted...)
		if err != nil {
			return rep, err
		}
	}
	if slices.Contains(c.Relay.Machines, "relaycreator") {
		release, err := deploy(ctx, c)
		if release != "" {
			rep.Restarted = append(rep.Restarted, "relaycreator/app.service (built and migrated "+release+")")
		}
		return rep, err
	}
	return rep, nil
}

// deploy runs relaycreator's deploy service and waits for it: a new release when the configured branch moved
// or a public setting changed (the build bakes them in), migrated before it serves; nothing otherwise. It
// returns the release it switched to, if any. A failure leaves the previous release serving and returns
// the deploy's own last lines (the build's or the migration's error).
func deploy(ctx context.Context, c *config.Config) (string, error) {
	dir := filepath.Join(c.Paths.Srv, "relaycreator")
	current := func() string {
		root, err := os.OpenRoot(dir)
		if err != nil {
			return ""
		}
		defer root.Close()
		l, _ := root.Readlink("current")
		return l
	}
	before := current()
	if _, err := run.Command(ctx, "systemctl", "-M", "relaycreator", "start", "deploy.service"); err != nil {
		// The deploy's own last lines (the build's or the migration's error), without systemd's about the unit.
		journal, _ := run.Output(ctx, "journalctl", "-M", "relaycreator", "-u", "deploy.service", "-n", "20", "--no-pager", "-o", "cat")
		var lines []string
		for _, l := range strings.Split(journal, "\n") {
			if l = strings.Join(strings.Fields(l), " "); l != "" && !strings.Contains(l, "deploy.service") && !strings.HasPrefix(l, "Starting ") {
				lines = append(lines, l)
			}
		}
		return "", fmt.Errorf("relay: relaycreator's deploy failed, the previous release keeps serving: %s", strings.Join(lines[max(0, len(lines)-4):], " | "))
	}
	if after := current(); after != before {
		return filepath.Base(after), nil
	}
	return "", nil
}

func startHealthy(ctx context.Context, c *config.Config, fsys fs.FS, name string) error {
	if err := machine.Start(ctx, name); err != nil {
		return fmt.Errorf("relay: start %s: %w", name, err)
	}
	if err := fleet.WaitHealthy(ctx, c, fsys, name); err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	return nil
}

// writeFiles writes the env files and the certificate, restarting the running readers of changed ones.
func writeFiles(ctx context.Context, c *config.Config, fsys fs.FS, s Secrets) (Report, error) {
	var rep Report
	url, err := databaseURL(c)
	if err != nil {
		return rep, err
	}
	files, err := EnvFiles(c, c.Relay.Domain, url, s)
	if err != nil {
		return rep, err
	}
	files = append(files, DeployFile(c, fsys))
	if err != nil {
		return rep, err
	}
	changed, readers, err := WriteChanged(files)
	rep.Changed = changed
	if err != nil {
		return rep, fmt.Errorf("relay: %w", err)
	}
	for _, r := range Retired(c) {
		if root, err := os.OpenRoot(r[0]); err == nil {
			if root.Remove(r[1]) == nil {
				rep.Changed = append(rep.Changed, filepath.Join(r[0], r[1])+" (removed: nothing reads it)")
			}
			root.Close()
		}
	}
	renewed := false
	if c.Relay.SelfSigned {
		if renewed, err = certificate(ctx, c, nil, false); err != nil {
			return rep, err
		}
	}
	if renewed {
		rep.Changed = append(rep.Changed, BundleFile(c))
		readers = append(readers, Reader{"haproxy", "haproxy.service"})
	}
	for _, r := range readers {
		if !machine.Running(ctx, r.Machine) {
			continue
		}
		if r.Unit == "haproxy.service" {
			if err := reloadEdge(ctx, c); err != nil {
				return rep, err
			}
		} else if _, err := run.Command(ctx, "systemctl", "-M", r.Machine, "try-restart", r.Unit); err != nil {
			return rep, err
		}
		rep.Restarted = append(rep.Restarted, r.Machine+"/"+r.Unit)
	}
	return rep, nil
}

// EdgeAddr is where the haproxy machine's edge answers TLS on the host.
const EdgeAddr = "127.0.0.1:443"

// reloadEdge reloads HAProxy in the haproxy machine (it keeps its connections) and waits, at most 30 s,
// until the edge serves the bundle's certificate: systemd reports the reload done before HAProxy's new
// worker answers, and configure or renew must not return before the new certificate is served.
func reloadEdge(ctx context.Context, c *config.Config) error {
	if _, err := run.Command(ctx, "systemctl", "-M", "haproxy", "reload-or-restart", "haproxy.service"); err != nil {
		return err
	}
	want, err := readCert(c)
	if err != nil {
		return err
	}
	return tlsx.WaitServed(ctx, "relay: the edge", EdgeAddr, c.Relay.Domain, want)
}

const mysqlURIRel = ".creator-mysql-uri.txt"

func databaseURL(c *config.Config) (string, error) {
	dir := filepath.Join(c.Paths.Srv, "mysql")
	env, err := readEnvIn(dir, mysqlURIRel)
	if errors.Is(err, fsx.ErrEscapes) {
		return "", fmt.Errorf("relay: %w", err)
	}
	if err != nil || env["DATABASE_URL"] == "" {
		return "", fmt.Errorf("relay: no DATABASE_URL in %s (has mysql finished its first run?)", filepath.Join(dir, mysqlURIRel))
	}
	return env["DATABASE_URL"], nil
}

// certificate replaces the bundle when it is missing, is for another domain, has fewer than 30 days left,
// is not of the configured kind (self-signed, or from the ACME directory: cl), or force is set (tlsx.Due).
func certificate(ctx context.Context, c *config.Config, cl *acme.Client, force bool) (bool, error) {
	p := BundleFile(c)
	if !force {
		b, err := fsx.ReadIn(edgeDir(c), bundleRel)
		if errors.Is(err, fsx.ErrEscapes) {
			return false, fmt.Errorf("relay: %w", err)
		}
		if err == nil && tlsx.Due(b, c.Relay.Domain, cl == nil) == "" {
			return false, nil
		}
	}
	var bundle []byte
	var err error
	if cl != nil {
		bundle, err = obtainACME(ctx, c, cl)
	} else {
		bundle, err = tlsx.SelfSigned(c.Relay.Domain, 90*24*time.Hour)
	}
	if err != nil {
		return false, err
	}
	if err := os.MkdirAll(edgeDir(c), 0o755); err != nil {
		return false, err
	}
	logger().Info("new certificate", "domain", c.Relay.Domain, "acme", cl != nil, "file", p)
	if err := fsx.WriteIn(edgeDir(c), bundleRel, bundle, 0o600, 0o700); err != nil {
		return false, fmt.Errorf("relay: %w", err)
	}
	return true, nil
}

// readCert reads the edge's certificate through os.Root.
func readCert(c *config.Config) (*x509.Certificate, error) {
	b, err := fsx.ReadIn(edgeDir(c), bundleRel)
	if err != nil {
		return nil, err
	}
	cert, err := tlsx.Leaf(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", BundleFile(c), err)
	}
	return cert, nil
}

// RotateKeys replaces the Nostr deploy key and the NEXTAUTH secret, rewrites the files that carry them and
// restarts exactly the services that read them.
func RotateKeys(ctx context.Context, c *config.Config, fsys fs.FS) (Report, error) {
	if err := checkInputs(c); err != nil {
		return Report{}, err
	}
	l, err := lock.Acquire(ctx, filepath.Join(c.Paths.State, "locks", "relay.lock"), "relay key rotation", 30*time.Minute)
	if err != nil {
		return Report{}, err
	}
	defer l.Release()
	s, _, err := LoadSecrets(SecretsFile(c))
	if err != nil {
		return Report{}, err
	}
	k, err := NewKeypair()
	if err != nil {
		return Report{}, err
	}
	s.NostrPrivateHex, s.NextAuthSecret = k.PrivateHex, randomToken(32)
	if err := fsx.WriteFile(SecretsFile(c), []byte(s.env()), 0o600); err != nil {
		return Report{}, err
	}
	return writeFiles(ctx, c, fsys, s)
}

// Renew replaces the certificate (self-signed, or from [Relay] ACMEDirectory) when fewer than 30 days remain
// (or when force is set) and reloads HAProxy, which keeps its connections.
func Renew(ctx context.Context, c *config.Config, force bool) (Report, error) {
	cl, err := check(ctx, c)
	if err != nil {
		return Report{}, err
	}
	l, err := lock.Acquire(ctx, filepath.Join(c.Paths.State, "locks", "relay.lock"), "relay renew", 30*time.Minute)
	if err != nil {
		return Report{}, err
	}
	defer l.Release()
	return renew(ctx, c, cl, force)
}

func renew(ctx context.Context, c *config.Config, cl *acme.Client, force bool) (Report, error) {
	renewed, err := certificate(ctx, c, cl, force)
	if err != nil || !renewed {
		return Report{}, err
	}
	rep := Report{Changed: []string{BundleFile(c)}}
	if machine.Running(ctx, "haproxy") {
		if err := reloadEdge(ctx, c); err != nil {
			return rep, err
		}
		rep.Restarted = append(rep.Restarted, "haproxy/haproxy.service (reload)")
	}
	return rep, nil
}

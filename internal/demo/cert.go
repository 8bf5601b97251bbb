package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"berth/internal/acme"
	"berth/internal/budget"
	"berth/internal/config"
	"berth/internal/fsx"
	"berth/internal/tlsx"
)

// The demo's certificate (<State>/demo/tls/demo.pem, copied into the proxy's directory) comes from
// [Demo] ACMEDirectory when [Demo] Domain is a public name (config.PublicName) or [Demo] SelfSigned = no,
// its http-01 challenges answered by the demo's own proxy on [Demo] HTTP (internal/acme, shared with the
// relay's edge); otherwise it is self-signed. Either kind is replaced when tlsx.Due says so (missing, for
// another name, fewer than 30 days left, not of the configured kind): by demo:build, demo:start and the daily
// demo:renew, each installing it with a graceful reload of the proxy.

// useACME says whether the demo's certificate comes from ACME, and why not when it does not.
func (d *Demo) useACME() (bool, string) {
	switch {
	case d.cfg.HTTPS == "":
		return false, "[Demo] HTTPS is empty"
	case d.cfg.SelfSigned == "yes":
		return false, "[Demo] SelfSigned = yes"
	case d.cfg.SelfSigned == "no":
		return true, ""
	case d.cfg.Domain == "":
		return false, "no [Demo] Domain (a trial: the front answers any name)"
	}
	if ok, why := config.PublicName(d.cfg.Domain); !ok {
		return false, fmt.Sprintf("[Demo] Domain = %q is not a public name (%s): set [Demo] SelfSigned = no for ACME anyway", d.cfg.Domain, why)
	}
	if d.cfg.HTTP == "" {
		return false, "[Demo] HTTP is empty: ACME's http-01 challenge is answered there"
	}
	return true, ""
}

func (d *Demo) accountKey() string { return filepath.Join(d.dir, "acme-account.key") }

// due reads the bundle (nil when there is none) and says why it must be replaced to be of the kind
// selfSigned says (tlsx.Due), or "forced" when it need not be but force is set; "" when it stays.
func (d *Demo) due(selfSigned, force bool) (b []byte, why string, err error) {
	b, err = os.ReadFile(d.bundle())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, "", err
	}
	if why = tlsx.Due(b, d.domain(), selfSigned); why == "" && force {
		why = "forced"
	}
	return b, why, nil
}

// selfSignedDue replaces a self-signed bundle that tlsx.Due finds due (or any, with force), before the proxy
// (re)starts; a missing bundle is made self-signed for an ACME demo too, so that the proxy can start and answer the
// challenge. It reports why it wrote one, "" when it did not.
func (d *Demo) selfSignedDue(force bool) (string, error) {
	b, due, err := d.due(true, force)
	if err != nil {
		return "", err
	}
	acmeOn, why := d.useACME()
	if acmeOn && b != nil || due == "" {
		return "", nil // an ACME demo's bundle is replaced through the running proxy (certificate)
	}
	pem, err := tlsx.SelfSigned(d.domain(), 90*24*time.Hour)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(d.bundle()), 0o700); err != nil {
		return "", err
	}
	if err := fsx.WriteFile(d.bundle(), pem, 0o600); err != nil {
		return "", err
	}
	if acmeOn {
		why = "until ACME's certificate replaces it"
	}
	logger().Info("new self-signed certificate", "domain", d.domain(), "previous", due, "why", why, "file", d.bundle())
	return due, nil
}

// checkACME checks, before Build changes anything, that [Demo] ACMEDirectory answers when the certificate
// is to come from it now.
func (d *Demo) checkACME(ctx context.Context) error {
	if acmeOn, _ := d.useACME(); !acmeOn {
		return nil
	}
	if _, due, err := d.due(false, false); err == nil && due == "" {
		return nil
	}
	_, err := acme.New(ctx, "demo", d.cfg.ACMEDirectory, d.accountKey(), d.cfg.Email)
	return err
}

// certificate gets a certificate from [Demo] ACMEDirectory when the demo uses ACME and its bundle is due
// (or force), through the running proxy, and installs it with a graceful reload of the proxy, which keeps
// its connections; it returns the reason it replaced the bundle, "" when it did not. Without ACME it is
// selfSignedDue followed by the same reload.
func (d *Demo) certificate(ctx context.Context, active string, force bool) (string, error) {
	acmeOn, _ := d.useACME()
	if !acmeOn {
		due, err := d.selfSignedDue(force)
		if err != nil || due == "" || !d.proxy.Running() {
			return due, err
		}
		return due, d.installCert(ctx, active)
	}
	_, due, err := d.due(false, force)
	if err != nil || due == "" {
		return "", err
	}
	if !d.proxy.Running() {
		return "", fmt.Errorf("demo: the certificate for %s is due (%s) but the demo's proxy, which answers ACME's challenge, is not running: run demo:start", d.domain(), due)
	}
	cl, err := acme.New(ctx, "demo", d.cfg.ACMEDirectory, d.accountKey(), d.cfg.Email)
	if err != nil {
		return "", err
	}
	pem, err := cl.Obtain(ctx, d.domain(), func(ctx context.Context, answers map[string]string) (func() error, error) {
		return d.answer(ctx, active, answers)
	})
	if err != nil {
		return "", err
	}
	if err := fsx.WriteFile(d.bundle(), pem, 0o600); err != nil {
		return "", err
	}
	logger().Info("new certificate from ACME", "domain", d.domain(), "directory", d.cfg.ACMEDirectory, "previous", due, "file", d.bundle())
	return due, d.installCert(ctx, active)
}

// answer serves the http-01 answers on the proxy's HTTP frontend (a graceful reload) and checks that it
// does; restore takes them away (another reload).
func (d *Demo) answer(ctx context.Context, active string, answers map[string]string) (func() error, error) {
	restore := func() error {
		d.proxy.Challenges = nil
		return d.proxy.Ensure(context.WithoutCancel(ctx), active)
	}
	d.proxy.Challenges = answers
	if err := d.proxy.Ensure(ctx, active); err != nil {
		return nil, errors.Join(err, restore())
	}
	for path, want := range answers {
		if err := acme.WaitServed(ctx, "demo: the proxy", "http://"+loopback(d.cfg.HTTP)+path, d.domain(), want); err != nil {
			return nil, errors.Join(err, restore())
		}
	}
	logger().Info("ACME challenges answered by the demo's proxy", "count", len(answers), "listen", d.cfg.HTTP)
	return restore, nil
}

// installCert gives the proxy the new bundle (a graceful reload) and waits, at most 30 s, until its HTTPS
// frontend serves it.
func (d *Demo) installCert(ctx context.Context, active string) error {
	if err := d.proxy.Ensure(ctx, active); err != nil {
		return err
	}
	b, err := os.ReadFile(d.bundle())
	if err != nil {
		return err
	}
	want, err := tlsx.Leaf(b)
	if err != nil {
		return fmt.Errorf("demo: %s: %w", d.bundle(), err)
	}
	return tlsx.WaitServed(ctx, "demo: the proxy", loopback(d.cfg.HTTPS), d.domain(), want)
}

// loopback is where a listen address (":80", "0.0.0.0:443", "127.0.0.1:18080") answers on this host.
func loopback(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil || host == "" || host == "0.0.0.0" || host == "::" || host == "[::]" {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return listen
}

// certAfterServe is the last step of Build and Start: the ACME certificate when it is due. At boot (Start) a
// failure is an alert, not a failed start (the demo serves with the certificate it has, and demo:renew
// tries again daily); Build returns it.
func (d *Demo) certAfterServe(ctx context.Context, st *State, fail bool) error {
	due, err := d.certificate(ctx, st.Active, false)
	if err != nil && !fail {
		d.alert(ctx, "the demo's certificate could not be renewed; it serves the one it has: "+err.Error())
		return nil
	}
	if due != "" && err == nil {
		logger().Info("certificate installed", "domain", d.domain(), "previous", due)
	}
	return err
}

// Renew replaces the demo's certificate when it is due (tlsx.Due: fewer than 30 days left, another name,
// not of the configured kind) or force is set, from [Demo] ACMEDirectory or self-signed, and installs it with
// a graceful reload of the proxy. It reports why it replaced it, "" when nothing changed (berth-demo-renew,
// daily).
func (d *Demo) Renew(ctx context.Context, force bool) (string, error) {
	l, st, err := d.begin(ctx, budget.Renew, true)
	if err != nil {
		return "", err
	}
	defer l.Release()
	if st.Active == "" {
		return "", errors.New("demo: no container serves yet (demo:start)")
	}
	due, err := d.certificate(ctx, st.Active, force)
	if err != nil {
		d.alert(ctx, "the demo's certificate could not be renewed: "+err.Error())
	}
	return due, err
}

// RenewReport is Renew writing one line to w: what it replaced and why, or that nothing changed.
func (d *Demo) RenewReport(ctx context.Context, force bool, w io.Writer) error {
	why, err := d.Renew(ctx, force)
	if err == nil && why == "" {
		fmt.Fprintf(w, "demo certificate for %s: nothing changed (more than 30 days left)\n", d.domain())
	} else if err == nil {
		fmt.Fprintf(w, "demo certificate for %s: replaced (%s)\n", d.domain(), why)
	}
	return err
}

// certStatus is demo:status's line about the certificate: its name, issuer and end, where it comes from, and
// whether it is due.
func (d *Demo) certStatus() string {
	from := "ACME " + d.cfg.ACMEDirectory
	acmeOn, why := d.useACME()
	if !acmeOn {
		from = "self-signed: " + why
	}
	b, err := os.ReadFile(d.bundle())
	if err != nil {
		return "none yet (" + from + ")"
	}
	cert, err := tlsx.Leaf(b)
	if err != nil {
		return fmt.Sprintf("%s: %v (%s)", d.bundle(), err, from)
	}
	line := fmt.Sprintf("%s from %q until %s (%s)", d.domain(), cert.Issuer.CommonName, cert.NotAfter.UTC().Format(time.DateOnly), from)
	if due := tlsx.Due(b, d.domain(), !acmeOn); due != "" {
		line += "; due: " + due
	}
	return line
}

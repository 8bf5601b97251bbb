package demo

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"berth/images"
	"berth/internal/config"
	"berth/internal/testutil"
	"berth/internal/tlsx"
)

// servedCert is the certificate the proxy's HTTPS frontend at addr presents for name.
func servedCert(t *testing.T, addr, name string) *x509.Certificate {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{ServerName: name, InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// acmeFromPebble runs the built demo of c as demo.test with its certificate from a Pebble on loopback,
// which validates http-01 through the demo's proxy on [Demo] HTTP: the proxy serves Pebble's certificate;
// a second build orders nothing and leaves the file as it is; a forced renewal under a request loop fails
// no request and installs a certificate of another serial; a renewal with more than 30 days left changes
// nothing (demo:renew, as berth-demo-renew.service runs it).
func acmeFromPebble(t *testing.T, trial *config.Config, berthCmd func(...string) *exec.Cmd) {
	ctx := context.Background()
	const domain = "demo.test"
	_, port, _ := net.SplitHostPort(trial.Demo.HTTP)
	httpPort, _ := strconv.Atoi(port)
	pebble := testutil.StartPebble(t, httpPort, map[string]string{domain: "127.0.0.1"})
	t.Setenv("SSL_CERT_FILE", pebble.CertFile)
	c := *trial
	// demo.test is not a public name: SelfSigned = no asks for ACME all the same.
	c.Demo.Domain, c.Demo.SelfSigned, c.Demo.ACMEDirectory, c.Demo.Email = domain, "no", pebble.Directory, "ops@example.org"
	d, err := Open(&c, images.FS)
	if err != nil {
		t.Fatal(err)
	}
	sum := func() string {
		b, err := os.ReadFile(d.bundle())
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%x", sha256.Sum256(b))[:16]
	}

	// An ACME directory that does not answer: one line naming it, before anything changes.
	bad := c
	bad.Demo.ACMEDirectory = "https://localhost:9/dir"
	before := sum()
	if err := openTest(t, &bad).Build(ctx, false); err == nil || !strings.Contains(err.Error(), "ACME directory https://localhost:9/dir") ||
		strings.Contains(err.Error(), "\n") || sum() != before {
		t.Fatalf("build with an unreachable ACME directory: %v; bundle %s → %s", err, before, sum())
	} else {
		t.Logf("unreachable ACME directory: %v", err)
	}

	start := time.Now()
	if err := d.Build(ctx, false); err != nil {
		t.Fatal(err)
	}
	first := servedCert(t, c.Demo.HTTPS, domain)
	if !strings.Contains(first.Issuer.CommonName, "Pebble") || first.VerifyHostname(domain) != nil {
		t.Fatalf("the proxy serves a certificate for %v from %q, not Pebble's for %s", first.DNSNames, first.Issuer.CommonName, domain)
	}
	if cfg, _ := os.ReadFile(d.proxy.Dir + "/haproxy.cfg"); strings.Contains(string(cfg), "acme-challenge") {
		t.Fatalf("the challenge answers stayed in the proxy's configuration:\n%s", cfg)
	}
	if st, err := os.Stat(d.accountKey()); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("account key: %v %v", st, err)
	}
	t.Logf("build with ACME in %s: the proxy serves serial %x from %q, valid until %s; Pebble issued %d",
		time.Since(start).Round(100*time.Millisecond), first.SerialNumber, first.Issuer.CommonName, first.NotAfter.Format(time.DateOnly), pebble.Issued())

	before, issued := sum(), pebble.Issued()
	if err := d.Build(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	why, err := d.Renew(ctx, false)
	if err != nil || why != "" || sum() != before || pebble.Issued() != issued || servedCert(t, c.Demo.HTTPS, domain).SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatalf("a second build, a start and a renewal with %s left changed something: renew %q %v; bundle %s → %s; issued %d → %d",
			time.Until(first.NotAfter).Round(time.Hour), why, err, before, sum(), issued, pebble.Issued())
	}
	t.Logf("second build, start and renew (%d days left): nothing changed (bundle %s, Pebble issued %d)", int(time.Until(first.NotAfter).Hours()/24), before, issued)

	// HTTPS through the proxy as a visitor of demo.test does, for the whole renewal.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{ServerName: domain, InsecureSkipVerify: true}, MaxIdleConnsPerHost: 16,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, c.Demo.HTTPS)
		}}}
	stop := testutil.HTTPLoadWith(t, client, "https://"+domain+"/", 10*time.Millisecond)
	time.Sleep(time.Second)
	start = time.Now()
	why, err = d.Renew(ctx, true)
	took := time.Since(start)
	time.Sleep(time.Second)
	served, failed := stop()
	second := servedCert(t, c.Demo.HTTPS, domain)
	if err != nil || why != "forced" {
		t.Fatalf("forced renewal: %q %v", why, err)
	}
	if failed != 0 || served == 0 || second.SerialNumber.Cmp(first.SerialNumber) == 0 || !strings.Contains(second.Issuer.CommonName, "Pebble") {
		t.Fatalf("forced renewal under load: %d requests, %d failed; serial %x → %x", served, failed, first.SerialNumber, second.SerialNumber)
	}
	t.Logf("forced renewal under load in %s: %d requests, %d failed; serial %x → %x (Pebble issued %d)",
		took.Round(100*time.Millisecond), served, failed, first.SerialNumber, second.SerialNumber, pebble.Issued())

	// The daily renewal, as its unit runs it: the binary, the configuration from the environment.
	before, issued = sum(), pebble.Issued()
	cmd := berthCmd("demo:renew")
	cmd.Env = append(cmd.Env, "BERTH_DEMO_DOMAIN="+domain, "BERTH_DEMO_SELFSIGNED=no", "BERTH_DEMO_ACMEDIRECTORY="+pebble.Directory,
		"SSL_CERT_FILE="+pebble.CertFile)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "nothing changed") || sum() != before || pebble.Issued() != issued {
		t.Fatalf("berth demo:renew with %d days left: %v\n%s\nbundle %s → %s, issued %d → %d", int(time.Until(second.NotAfter).Hours()/24), err, out, before, sum(), issued, pebble.Issued())
	}
	t.Logf("berth demo:renew: %s", strings.TrimSpace(string(out)))
}

// TestSelfSignedRenewed: a self-signed certificate is remade when fewer than 30 days remain, when it is for
// another name, or when it does not exist, and kept otherwise.
func TestSelfSignedRenewed(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"BERTH_PATHS_STATE": dir, "BERTH_PATHS_LXC": dir, "BERTH_DEMO_DOMAIN": "demo.example.org",
		"BERTH_DEMO_SELFSIGNED": "yes", "BERTH_DEMO_BACKEND": "dir", "BERTH_DEMO_IMAGE": "demo-web"}
	c, err := config.LoadFrom("/nonexistent", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	d, err := Open(c, images.FS)
	if err != nil {
		t.Fatal(err)
	}
	serial := func() string {
		b, err := os.ReadFile(d.bundle())
		if err != nil {
			t.Fatal(err)
		}
		cert, err := tlsx.Leaf(b)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%x", cert.SerialNumber)
	}
	for _, step := range []struct {
		name, domain string
		lifetime     time.Duration
		force        bool
		want         string // why it is remade, "" kept
	}{
		{"missing", "", 0, false, "missing"},
		{"89 days left", "", 0, false, ""},
		{"89 days left, FORCE=1", "", 0, true, "forced"},
		{"29 days left", "demo.example.org", 29 * 24 * time.Hour, false, "fewer than 30 days"},
		{"another name", "other.example.org", 80 * 24 * time.Hour, false, "not for demo.example.org"},
	} {
		if step.domain != "" {
			b, _ := tlsx.SelfSigned(step.domain, step.lifetime)
			os.WriteFile(d.bundle(), b, 0o600)
		}
		var before string
		if _, err := os.Stat(d.bundle()); err == nil {
			before = serial()
		}
		why, err := d.selfSignedDue(step.force)
		if err != nil || !strings.Contains(why, step.want) || (step.want == "") != (why == "") || (serial() == before) != (step.want == "") {
			t.Fatalf("%s: remade %q (%v), want %q; serial %s → %s", step.name, why, err, step.want, before, serial())
		}
		b, _ := os.ReadFile(d.bundle())
		if cert, _ := tlsx.Leaf(b); time.Until(cert.NotAfter) < 89*24*time.Hour || !tlsx.IsSelfSigned(cert) {
			t.Fatalf("%s: the bundle ends %s", step.name, cert.NotAfter)
		}
	}
	if st := d.certStatus(); !strings.HasPrefix(st, `demo.example.org from "demo.example.org" until `) || !strings.Contains(st, "(self-signed: [Demo] SelfSigned = yes)") {
		t.Fatalf("status: %s", st)
	} else {
		t.Logf("demo:status: certificate %s", st)
	}
}

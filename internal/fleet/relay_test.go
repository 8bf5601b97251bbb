package fleet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"berth/internal/fsx"
	"berth/internal/run"
	"berth/internal/testhost"
	"berth/internal/testutil"
)

// relayConfiguration runs relay:configure, rotate-keys and renew on the machines TestMachinesOnSystemd built.
// sql runs a query as the creator user; get waits until relaycreator serves a page containing want.
func relayConfiguration(t *testing.T, h *testhost.Host, berth func(...string) string, hostFile func(string) string, sql func(string) string, get func(string)) {
	ctx := context.Background()
	files := []string{"srv/relaycreator/.env", "srv/relaycreator/deploy.env", "srv/haproxy/.cookiecutter.env",
		"srv/strfry/.cookiecutter.env", "srv/strfry/.interceptor.env", "srv/haproxy/certs/bundle.pem", "var/lib/berth/relay/secrets.env"}
	sums := func() string {
		var all []string
		for _, f := range files {
			sum, err := fsx.FileSHA256(hostFile(f))
			if err != nil {
				return "missing " + f
			}
			all = append(all, sum)
		}
		return strings.Join(all, " ")
	}
	serial := func() string {
		t.Helper()
		conn, err := tls.Dial("tcp", "127.0.0.1:443", &tls.Config{ServerName: "relay.test", InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("TLS to the edge: %v", err)
		}
		defer conn.Close()
		cert := conn.ConnectionState().PeerCertificates[0]
		if err := cert.VerifyHostname("relay.test"); err != nil {
			t.Fatalf("edge serves a certificate for %q %v: %v", cert.Subject.CommonName, cert.DNSNames, err)
		}
		return cert.Issuer.String() + " serial " + cert.SerialNumber.Text(16)
	}

	// Bad input changes nothing and says why in one line.
	if out, err := h.Run(ctx, "env", "BERTH_RELAY_DOMAIN=exa_mple..com", "/usr/local/sbin/berth", "relay:configure"); err == nil ||
		!strings.Contains(out, `[Relay] Domain = "exa_mple..com"`) {
		t.Fatalf("an invalid domain: %v\n%s", err, out)
	}
	if _, err := os.Stat(hostFile("var/lib/berth/relay/secrets.env")); !os.IsNotExist(err) {
		t.Fatal("a refused configure wrote secrets")
	}

	out := berth("relay:configure")
	t.Logf("configure: %s", strings.TrimSpace(out))
	for _, f := range files {
		if st, err := os.Stat(hostFile(f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, st, err)
		}
	}
	// relaycreator migrated its database before serving, and was rebuilt with the deployment's public setting.
	if tables := sql("SHOW TABLES"); !strings.Contains(tables, "Relay") || !strings.Contains(tables, "_prisma_migrations") {
		t.Fatalf("after configure the creator database has: %q", tables)
	}
	get("relaycreator fixture v1 for relay.test")
	t.Logf("after configure: tables %q; relaycreator serves its build for relay.test", strings.Fields(sql("SHOW TABLES")))
	// relaycreator listens on 127.0.0.1 only.
	listen := h.Must(t, "ss", "-Hltnp", "sport", "=", ":3000")
	if !strings.Contains(listen, "127.0.0.1:3000") || strings.Contains(listen, "0.0.0.0:3000") || strings.Contains(listen, "*:3000") {
		t.Fatalf("relaycreator listens on:\n%s", listen)
	}
	t.Logf("ss -ltnp for port 3000: %s", strings.Join(strings.Fields(listen), " "))
	first := serial()
	t.Logf("the edge serves %s", first)
	before := sums()
	if out := berth("relay:configure"); !strings.Contains(out, "nothing changed") {
		t.Fatalf("a second configure changed something: %s", out)
	}
	if after := sums(); after != before {
		t.Fatal("a second configure changed a file")
	}
	// The original's ./.env: the same inputs from a file and no environment change nothing; config:show names
	// the file; the environment wins over it.
	os.MkdirAll(hostFile("root/relay"), 0o755)
	os.WriteFile(hostFile("root/relay/.env"), []byte("MYDOMAIN=relay.test\nSELF_SIGNED=relay.test\n"), 0o600)
	if out, err := h.Run(ctx, "sh", "-c", "cd /root/relay && /usr/local/sbin/berth relay:configure"); err != nil || !strings.Contains(out, "nothing changed") || sums() != before {
		t.Fatalf("configure from ./.env alone: %v\n%s", err, out)
	}
	show := h.Must(t, "sh", "-c", "cd /root/relay && /usr/local/sbin/berth config:show && MYDOMAIN=env.relay.test SELF_SIGNED=no /usr/local/sbin/berth config:show")
	for _, want := range []string{"(from [Relay] SelfSigned)", "(env file /root/relay/.env:2 SELF_SIGNED)", "(env MYDOMAIN)", "(env SELF_SIGNED)"} {
		if !strings.Contains(show, want) {
			t.Fatalf("config:show lacks %q:\n%s", want, show)
		}
	}
	t.Logf("configure from ./.env with no environment: nothing changed; config:show names the file, the environment wins")

	// A mysql that never becomes healthy (its server masked): configure gives up after [Relay] HealthTimeout
	// with one line naming the machine, and changes nothing.
	if out, err := h.Run(ctx, "systemctl", "-M", "mysql", "mask", "--now", "mariadb.service"); err != nil {
		t.Fatalf("mask mariadb: %v\n%s", err, out)
	}
	start := time.Now()
	out, err := h.Run(ctx, "env", "SELF_SIGNED=relay.test", "BERTH_RELAY_HEALTHTIMEOUT=5s", "/usr/local/sbin/berth", "relay:configure")
	if err == nil || !strings.Contains(lastLine(out), "machine mysql is not healthy: 127.0.0.1:3306 did not accept connections within 5s") || sums() != before {
		t.Fatalf("a mysql that never becomes healthy: %v\n%s", err, out)
	}
	t.Logf("mysql never healthy (%s): %v: %s", time.Since(start).Round(100*time.Millisecond), err, lastLine(out))
	if out, err := h.Run(ctx, "sh", "-c", "systemctl -M mysql unmask mariadb.service && systemctl -M mysql start mariadb.service"); err != nil {
		t.Fatalf("unmask mariadb: %v\n%s", err, out)
	}

	// Key rotation: the new public key is in the dependent files, the old one nowhere.
	// The key pair: the private key kept in berth's state, the public one in relaycreator's .env.
	keys := func() (priv, pub string) {
		s, _ := os.ReadFile(hostFile("var/lib/berth/relay/secrets.env"))
		e, _ := os.ReadFile(hostFile("srv/relaycreator/.env"))
		return envValue(string(s), "NOSTR_PRIVATE_KEY"), envValue(string(e), "DEPLOY_PUBKEY")
	}
	oldPriv, oldPub := keys()
	if oldPriv == "" || oldPub == "" {
		t.Fatal("no key pair before the rotation")
	}
	out = berth("relay:rotateKeys")
	t.Logf("rotate-keys: %s", strings.TrimSpace(out))
	_, newPub := keys()
	if newPub == oldPub || !strings.Contains(out, "relaycreator/app.service") || !strings.Contains(out, "haproxy/haproxycheck.service") {
		t.Fatalf("rotation: %s", out)
	}
	for _, f := range files {
		b, _ := os.ReadFile(hostFile(f))
		if strings.Contains(string(b), oldPub) || strings.Contains(string(b), oldPriv) {
			t.Errorf("%s still holds the old key", f)
		}
	}
	if b, _ := os.ReadFile(hostFile("srv/relaycreator/.env")); !strings.Contains(string(b), "DEPLOY_PUBKEY="+newPub) {
		t.Fatal("relaycreator's .env lacks the new public key")
	}

	// A forced renewal under a request loop: the serial changes, no request fails.
	renewUnderLoad := func(env ...string) {
		t.Helper()
		before := serial()
		stop := edgeLoad()
		time.Sleep(500 * time.Millisecond)
		renewOut, renewErr := h.Run(ctx, append(append([]string{"env", "FORCE=1"}, env...), "/usr/local/sbin/berth", "relay:renew")...)
		if renewErr != nil {
			t.Fatalf("renew: %v\n%s", renewErr, renewOut)
		}
		t.Logf("renew: %s", strings.TrimSpace(renewOut))
		time.Sleep(time.Second)
		ok, failed := stop()
		after := serial()
		t.Logf("forced renewal under load: %d requests, %d failed; %s -> %s", ok+failed, failed, before, after)
		if after == before || failed != 0 || ok == 0 {
			t.Fatalf("renewal: %s -> %s, %d ok, %d failed", before, after, ok, failed)
		}
	}
	renewUnderLoad("SELF_SIGNED=relay.test")
	if b, _ := os.ReadFile(filepath.Join(hostFile("srv/haproxy/certs"), "bundle.pem")); !strings.Contains(string(b), "PRIVATE KEY") {
		t.Fatal("the bundle lacks its key")
	}

	deploys(t, h, berth, hostFile, sql, get)
	guestLinks(t, h, berth, hostFile)
	acmeWithPebble(t, h, hostFile, sums, serial, renewUnderLoad)
}

// deploys follows [Relay] DeployBranch of a repository in relaycreator's data directory: a new migration is
// applied by the deploy; a migration that fails leaves the previous release serving and configure exits with
// the migration's error; so does a build that fails.
func deploys(t *testing.T, h *testhost.Host, berth func(...string) string, hostFile func(string) string, sql func(string) string, get func(string)) {
	ctx := context.Background()
	fixtures := filepath.Join(testutil.RepoRoot(t), "internal/fleet/testdata/relaycreator")
	upstream := hostFile("srv/relaycreator/upstream")
	if _, err := (run.Cmd{Argv: []string{"cp", "-r", fixtures, upstream}}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	commit := func(msg string, files map[string]string) {
		t.Helper()
		for name, content := range files {
			os.MkdirAll(filepath.Dir(filepath.Join(upstream, name)), 0o755)
			os.WriteFile(filepath.Join(upstream, name), []byte(content), 0o644)
		}
		for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "."}, {"commit", "-q", "-m", msg}} {
			if _, err := (run.Cmd{Argv: append([]string{"git", "-C", upstream, "-c", "user.name=t", "-c", "user.email=t@t"}, args...)}).Run(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	deploy := []string{"env", "SELF_SIGNED=relay.test", "BERTH_RELAY_DEPLOYBRANCH=main", "BERTH_RELAY_DEPLOYREPO=/srv/relaycreator/upstream",
		"/usr/local/sbin/berth", "relay:configure"}
	commit("v2 with a second migration", map[string]string{"VERSION": "v2\n",
		"prisma/migrations/20240202000000_relay_owner/migration.sql": "CREATE TABLE `RelayOwner` (`id` VARCHAR(191) NOT NULL, PRIMARY KEY (`id`));\n"})
	out, err := h.Run(ctx, deploy...)
	if err != nil {
		t.Fatalf("configure with a deploy branch: %v\n%s", err, out)
	}
	get("relaycreator fixture v2 for relay.test")
	if tables := sql("SHOW TABLES"); !strings.Contains(tables, "RelayOwner") {
		t.Fatalf("the deploy did not apply its migration: %q", tables)
	}
	t.Logf("deploy of v2: %s; tables now %q", lastLine(out), strings.Fields(sql("SHOW TABLES")))

	commit("v3 whose migration fails", map[string]string{"VERSION": "v3\n",
		"prisma/migrations/20240303000000_broken/migration.sql": "ALTER TABLE `NoSuchTable` ADD COLUMN `x` INT;\n"})
	out, err = h.Run(ctx, deploy...)
	if err == nil || !strings.Contains(lastLine(out), "relaycreator's deploy failed, the previous release keeps serving") ||
		!strings.Contains(lastLine(out), "20240303000000_broken") || !strings.Contains(lastLine(out), "NoSuchTable") {
		t.Fatalf("a deploy whose migration fails: %v\n%s", err, out)
	}
	get("relaycreator fixture v2 for relay.test")
	t.Logf("v3's migration failed, v2 serves: %s", lastLine(out))

	commit("v4 whose build fails", map[string]string{"VERSION": "v4\n", "BROKEN": "",
		"prisma/migrations/20240303000000_broken/migration.sql": "SELECT 1;\n"})
	if out, err = h.Run(ctx, deploy...); err == nil || !strings.Contains(lastLine(out), "build failed on purpose") {
		t.Fatalf("a deploy whose build fails: %v\n%s", err, out)
	}
	get("relaycreator fixture v2 for relay.test")
	t.Logf("v4's build failed, v2 serves: %s", lastLine(out))

	// DeployBranch empty again: no automatic deploys; the image's own release, built for this deployment.
	out = berth("relay:configure")
	get("relaycreator fixture v1 for relay.test")
	if b, _ := os.ReadFile(hostFile("srv/relaycreator/deploy.env")); !strings.Contains(string(b), "DEPLOY_BRANCH=\n") {
		t.Fatalf("deploy.env after DeployBranch was emptied:\n%s", b)
	}
	t.Logf("DeployBranch off: %s", lastLine(out))
}

// guestLinks: root in the haproxy machine replaces haproxy.cfg and certs/ with links to the host's secrets;
// renew and configure refuse in one line and the host's files stay as they were.
func guestLinks(t *testing.T, h *testhost.Host, berth func(...string) string, hostFile func(string) string) {
	ctx := context.Background()
	guest := func(script string) {
		t.Helper()
		if out, err := h.Run(ctx, "systemd-run", "-M", "haproxy", "--wait", "--pipe", "-q", "sh", "-c", script); err != nil {
			t.Fatalf("in the haproxy machine: %v\n%s", err, out)
		}
	}
	hostFiles := []string{"var/lib/berth/relay/secrets.env", "var/lib/berth/relay/acme-account.key", "etc/shadow"}
	sums := func() string {
		var all []string
		for _, f := range hostFiles {
			s, _ := fsx.FileSHA256(hostFile(f))
			all = append(all, s)
		}
		return strings.Join(all, " ")
	}
	guest("cd /etc/haproxy && mv haproxy.cfg haproxy.cfg.real && ln -s /var/lib/berth/relay/secrets.env haproxy.cfg && " +
		"mv certs certs.real && ln -s /var/lib/berth/relay certs")
	before := sums()
	for _, argv := range [][]string{{"env", "FORCE=1", "SELF_SIGNED=relay.test", "/usr/local/sbin/berth", "relay:renew"},
		{"env", "SELF_SIGNED=relay.test", "/usr/local/sbin/berth", "relay:configure"}} {
		out, err := h.Run(ctx, argv...)
		if err == nil || !strings.Contains(lastLine(out), "refusing /srv/haproxy/") || !strings.Contains(lastLine(out), "leads out of the directory /srv/haproxy") {
			t.Fatalf("%s with links planted in the haproxy machine: %v\n%s", argv[len(argv)-1], err, out)
		}
		t.Logf("%s refused: %s", argv[len(argv)-1], lastLine(out))
	}
	if after := sums(); after != before {
		t.Fatal("a host file changed through the planted links")
	}
	if _, err := os.Stat(hostFile("var/lib/berth/relay/bundle.pem")); !os.IsNotExist(err) {
		t.Fatal("a bundle landed in the host's state directory")
	}
	t.Logf("host files unchanged: %s", before)
	guest("cd /etc/haproxy && rm haproxy.cfg certs && mv haproxy.cfg.real haproxy.cfg && mv certs.real certs")
	_ = berth
}

// edgeLoad sends HTTPS requests to the edge from four goroutines until stop is called.
func edgeLoad() (stop func() (ok, failed int64)) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{ServerName: "relay.test", InsecureSkipVerify: true}}}
	var okN, failedN atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 5000; n++ {
				select {
				case <-done:
					return
				default:
				}
				resp, err := client.Get("https://127.0.0.1:443/")
				if err != nil {
					failedN.Add(1)
					continue
				}
				resp.Body.Close()
				okN.Add(1)
			}
		}()
	}
	return func() (int64, int64) {
		close(done)
		wg.Wait()
		return okN.Load(), failedN.Load()
	}
}

// acmeWithPebble configures the relay with certificates from Pebble, Debian's ACME test server, run in the
// test host on loopback (its API at https://localhost:14000 with a certificate of its own, its validations
// to relay.test:80, which the test host's /etc/hosts points at 127.0.0.1, where the edge answers).
func acmeWithPebble(t *testing.T, h *testhost.Host, hostFile func(string) string, sums, serial func() string, renewUnderLoad func(...string)) {
	ctx := context.Background()
	run := func(argv ...string) string {
		t.Helper()
		return h.Must(t, argv...)
	}
	files := testutil.PebbleFiles(t, "/etc/pebble", "127.0.0.1:14000", "127.0.0.1:15000", 80)
	os.MkdirAll(hostFile("etc/pebble"), 0o755)
	for name, b := range files {
		os.WriteFile(hostFile("etc/pebble/"+name), b, 0o600)
	}
	certPEM := files["cert.pem"]
	run("sh", "-c", "echo '127.0.0.1 relay.test' >> /etc/hosts")
	pebble := []string{"systemd-run", "--unit=pebble"}
	for _, e := range testutil.PebbleEnv {
		pebble = append(pebble, "-E", e)
	}
	run(append(pebble, "pebble", "-config", "/etc/pebble/pebble.json")...)
	defer h.Run(ctx, "systemctl", "stop", "pebble")
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	pc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(300 * time.Millisecond) {
		if resp, err := pc.Get("https://localhost:14000/dir"); err == nil { // the test host shares the VM's network
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble does not answer:\n%s", run("journalctl", "-u", "pebble", "--no-pager"))
		}
	}
	acme := []string{"env", "BERTH_RELAY_DOMAIN=relay.test", "BERTH_RELAY_SELFSIGNED=no", "BERTH_RELAY_EMAIL=ops@relay.test",
		"BERTH_RELAY_ACMEDIRECTORY=https://localhost:14000/dir", "SSL_CERT_FILE=/etc/pebble/cert.pem", "/usr/local/sbin/berth"}

	// An unreachable directory: one line, non-zero, nothing changed.
	before := sums()
	out, err := h.Run(ctx, append(append([]string{}, acme[:4]...), "BERTH_RELAY_ACMEDIRECTORY=https://localhost:9/dir", "/usr/local/sbin/berth", "relay:configure")...)
	if _, serr := os.Stat(hostFile("var/lib/berth/relay/acme-account.key")); err == nil ||
		!strings.Contains(out, "ACME directory https://localhost:9/dir") || sums() != before || serr == nil {
		t.Fatalf("an unreachable ACME directory: %v\n%s", err, out)
	}
	t.Logf("unreachable ACME directory: %v: %s", err, lastLine(out))

	start := time.Now()
	out = run(append(acme, "relay:configure")...)
	t.Logf("configure with ACME (%s): %s", time.Since(start).Round(100*time.Millisecond), lastLine(out))
	first := serial()
	if !strings.Contains(first, "Pebble") {
		t.Fatalf("the edge serves %s, not Pebble's certificate", first)
	}
	t.Logf("the edge serves %s", first)
	for _, f := range []string{"srv/haproxy/certs/bundle.pem", "var/lib/berth/relay/acme-account.key"} {
		if st, err := os.Stat(hostFile(f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, st, err)
		}
	}
	before = sums()
	if out := run(append(acme, "relay:configure")...); !strings.Contains(out, "nothing changed") || sums() != before {
		t.Fatalf("a second configure with ACME changed something: %s", out)
	}
	if cfg, _ := os.ReadFile(hostFile("srv/haproxy/haproxy.cfg")); strings.Contains(string(cfg), "acme-challenge") {
		t.Fatalf("the challenge answers stayed in haproxy.cfg:\n%s", cfg)
	}
	if st := run("systemctl", "-M", "haproxy", "is-active", "haproxycheck.timer"); strings.TrimSpace(st) != "active" {
		t.Fatalf("haproxycheck.timer is %s after the validation", st)
	}
	renewUnderLoad(acme[1:6]...)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func envValue(env, key string) string {
	for _, line := range strings.Split(env, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && k == key {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

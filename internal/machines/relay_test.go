package machines

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"berth/internal/fsx"
	"berth/internal/testhost"
)

// relayConfiguration runs relay:configure, rotate-keys and renew on the machines TestMachinesOnSystemd built.
func relayConfiguration(t *testing.T, h *testhost.Host, berth func(...string) string, hostFile func(string) string) {
	ctx := context.Background()
	files := []string{"srv/relaycreator/.env", "srv/relaycreator/.nostrcreds.env", "srv/haproxy/.cookiecutter.env",
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
		if cert.Subject.CommonName != "relay.test" {
			t.Fatalf("edge serves a certificate for %q", cert.Subject.CommonName)
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
	first := serial()
	t.Logf("the edge serves %s", first)
	before := sums()
	if out := berth("relay:configure"); !strings.Contains(out, "nothing changed") {
		t.Fatalf("a second configure changed something: %s", out)
	}
	if after := sums(); after != before {
		t.Fatal("a second configure changed a file")
	}

	// Key rotation: the new public key is in the dependent files, the old one nowhere.
	oldEnv, _ := os.ReadFile(hostFile("srv/relaycreator/.nostrcreds.env"))
	oldPriv := envValue(string(oldEnv), "NOSTR_PRIVATE_KEY")
	oldPub := envValue(string(oldEnv), "NOSTR_PUBLIC_KEY")
	out = berth("relay:rotateKeys")
	t.Logf("rotate-keys: %s", strings.TrimSpace(out))
	newEnv, _ := os.ReadFile(hostFile("srv/relaycreator/.nostrcreds.env"))
	newPub := envValue(string(newEnv), "NOSTR_PUBLIC_KEY")
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
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{ServerName: "relay.test", InsecureSkipVerify: true}}}
	var ok, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 5000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get("https://127.0.0.1:443/")
				if err != nil {
					failed.Add(1)
					continue
				}
				resp.Body.Close()
				ok.Add(1)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	renewOut, renewErr := h.Run(ctx, "env", "FORCE=1", "SELF_SIGNED=relay.test", "/usr/local/sbin/berth", "relay:renew")
	if renewErr != nil {
		t.Fatalf("renew: %v", renewErr)
	}
	t.Logf("renew: %s", strings.TrimSpace(renewOut))
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	second := serial()
	t.Logf("forced renewal under load: %d requests, %d failed; serial %s -> %s", ok.Load()+failed.Load(), failed.Load(), first, second)
	if second == first || failed.Load() != 0 || ok.Load() == 0 {
		t.Fatalf("renewal: serial %s -> %s, %d ok, %d failed", first, second, ok.Load(), failed.Load())
	}
	if b, _ := os.ReadFile(filepath.Join(hostFile("srv/haproxy/certs"), "bundle.pem")); !strings.Contains(string(b), "PRIVATE KEY") {
		t.Fatal("the bundle lacks its key")
	}
}

func envValue(env, key string) string {
	for _, line := range strings.Split(env, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && k == key {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

package testutil

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"berth/internal/tlsx"
)

// PebbleFiles are the files Pebble (Debian's ACME test server) runs with, by name: its API's certificate
// (cert.pem, self-signed for localhost: also the file to trust it with, as SSL_CERT_FILE) and key (key.pem),
// and its configuration (pebble.json) with dir as the directory Pebble reads them from, its API on listen,
// its management API on mgmt, and its http-01 validations sent to port httpPort of the name certified.
func PebbleFiles(t testing.TB, dir, listen, mgmt string, httpPort int) map[string][]byte {
	bundle, err := tlsx.SelfSigned("localhost", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var cert, key []byte
	for b := bundle; ; {
		var block *pem.Block
		if block, b = pem.Decode(b); block == nil {
			break
		}
		if strings.Contains(block.Type, "PRIVATE KEY") {
			key = pem.EncodeToMemory(block)
		} else {
			cert = append(cert, pem.EncodeToMemory(block)...)
		}
	}
	cfg := fmt.Sprintf(`{"pebble": {"listenAddress": %q, "managementListenAddress": %q, "certificate": %q, "privateKey": %q,
"httpPort": %d, "tlsPort": 5001, "ocspResponderURL": "", "externalAccountBindingRequired": false}}`,
		listen, mgmt, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), httpPort)
	return map[string][]byte{"cert.pem": cert, "key.pem": key, "pebble.json": []byte(cfg)}
}

// PebbleEnv is the environment Pebble runs with in the tests: no random sleep before a validation, no
// rejected nonces.
var PebbleEnv = []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"}

// Pebble is a Pebble running on loopback for one test.
type Pebble struct {
	Directory string // the ACME directory URL
	CertFile  string // its API's certificate: the SSL_CERT_FILE to reach it with
	mu        sync.Mutex
	log       []string
}

// Issued counts the certificates Pebble has issued so far (its "Issued certificate serial" log lines).
func (p *Pebble) Issued() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.log {
		if strings.Contains(l, "Issued certificate serial") {
			n++
		}
	}
	return n
}

// StartPebble runs Pebble on free loopback ports until the test ends, validating http-01 on port httpPort
// of the names in hosts (name → address), which it resolves through an /etc/hosts of its own (a mount
// namespace of its own: the machine's /etc/hosts is not touched).
func StartPebble(t testing.TB, httpPort int, hosts map[string]string) *Pebble {
	Require(t, "pebble", "unshare")
	dir := t.TempDir()
	listen, mgmt := FreeAddr(t), FreeAddr(t)
	for name, b := range PebbleFiles(t, dir, listen, mgmt, httpPort) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	etcHosts := "127.0.0.1 localhost\n"
	for name, addr := range hosts {
		etcHosts += addr + " " + name + "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(etcHosts), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
		`mount --bind "$1" /etc/hosts && shift && exec "$@"`, "sh", filepath.Join(dir, "hosts"),
		"pebble", "-config", filepath.Join(dir, "pebble.json"))
	cmd.Env = append(os.Environ(), PebbleEnv...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Its certificate is for localhost, where it listens (127.0.0.1).
	p := &Pebble{Directory: "https://localhost:" + listen[strings.LastIndexByte(listen, ':')+1:] + "/dir", CertFile: filepath.Join(dir, "cert.pem")}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.mu.Lock()
			p.log = append(p.log, sc.Text())
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		cmd.Wait()
	})
	cert, _ := os.ReadFile(p.CertFile)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(cert)
	pc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if resp, err := pc.Get(p.Directory); err == nil {
			resp.Body.Close()
			return p
		}
		if time.Now().After(deadline) {
			p.mu.Lock()
			defer p.mu.Unlock()
			t.Fatalf("pebble does not answer at %s:\n%s", p.Directory, strings.Join(p.log, "\n"))
		}
	}
}

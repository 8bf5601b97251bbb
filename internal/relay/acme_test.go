package relay

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"berth/internal/testutil"
)

// TestWithChallenges: the answers go onto the frontend that binds port 80, ahead of its redirect (HAProxy
// runs http-request rules before redirect rules), or onto a frontend of their own; haproxy accepts both.
func TestWithChallenges(t *testing.T) {
	answers := map[string]string{"/.well-known/acme-challenge/tok1": "tok1.thumb"}
	relaycreator := "global\n\tlog /dev/log local0\ndefaults\n\tmode http\n\ttimeout connect 5s\n\ttimeout client 5s\n\ttimeout server 5s\n" +
		"frontend unsecured\n\tbind 0.0.0.0:80 name http\n\tmode http\n\tredirect prefix https://relay.test code 301\n"
	skeleton := "global\n\tlog /dev/log local0\ndefaults\n\tmode http\n\ttimeout connect 5s\n\ttimeout client 5s\n\ttimeout server 5s\n" +
		"frontend secured\n\tbind 127.0.0.1:8443\n\tdefault_backend main\nbackend main\n\tserver a 127.0.0.1:3000\n"
	for name, cfg := range map[string]string{"relaycreator's": relaycreator, "the skeleton": skeleton} {
		out := string(withChallenges([]byte(cfg), answers))
		rule := "http-request return status 200 content-type text/plain string tok1.thumb if { path /.well-known/acme-challenge/tok1 }"
		if strings.Count(out, rule) != 1 || strings.Count(out, ":80") != 1 {
			t.Fatalf("%s configuration:\n%s", name, out)
		}
		if i := strings.Index(out, "redirect"); i >= 0 && i < strings.Index(out, rule) {
			t.Fatalf("the answer comes after the redirect:\n%s", out)
		}
		if _, err := exec.LookPath("haproxy"); err != nil {
			testutil.SkipOrFail(t, "needs haproxy to check the configuration")
		}
		f := filepath.Join(t.TempDir(), "haproxy.cfg")
		os.WriteFile(f, []byte(out), 0o644)
		if b, err := exec.Command("haproxy", "-c", "-q", "-f", f).CombinedOutput(); err != nil {
			t.Fatalf("haproxy rejects %s configuration with the answers: %v\n%s\n%s", name, err, b, out)
		}
	}
}

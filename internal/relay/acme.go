package relay

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"golang.org/x/crypto/acme"

	"berth/internal/config"
	"berth/internal/fsx"
	"berth/internal/machine"
	"berth/internal/run"
	"berth/internal/tlsx"
	"berth/internal/wait"
)

// The ACME client answers HTTP-01 challenges through the running edge: for the few seconds of a
// validation, HAProxy's configuration gets one `http-request return` rule per challenge on its port-80
// frontend (a frontend of its own when the configuration has none), applied with a graceful reload, and the
// configuration is put back afterwards. HAProxy keeps its ports and its connections throughout;
// cookiecutter's refresh timer is held meanwhile so that it does not rewrite the file under us.

func accountKeyFile(c *config.Config) string {
	return filepath.Join(c.Paths.State, "relay", "acme-account.key")
}

const haproxyCfgRel = "haproxy.cfg"

// acmeClient loads (or creates, 0600) the account key and checks that the directory answers; it changes
// nothing else, so configure can call it before writing any file.
func acmeClient(ctx context.Context, c *config.Config) (*acme.Client, error) {
	cl := &acme.Client{DirectoryURL: c.Relay.ACMEDirectory, HTTPClient: &http.Client{Timeout: 30 * time.Second}, UserAgent: "berth"}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := cl.Discover(dctx); err != nil {
		return nil, fmt.Errorf("relay: ACME directory %s: %w", c.Relay.ACMEDirectory, oneLine(err))
	}
	key, err := loadOrCreateKey(accountKeyFile(c))
	cl.Key = key
	return cl, err
}

func oneLine(err error) error {
	return errors.New(strings.Join(strings.Fields(err.Error()), " "))
}

func loadOrCreateKey(path string) (crypto.Signer, error) {
	if b, err := os.ReadFile(path); err == nil {
		block, _ := pem.Decode(b)
		if block == nil {
			return nil, fmt.Errorf("%s: not a PEM key", path)
		}
		return x509.ParseECPrivateKey(block.Bytes)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	return key, fsx.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

// obtainACME gets a certificate for [Relay] Domain from [Relay] ACMEDirectory and returns HAProxy's bundle
// (chain, then key).
func obtainACME(ctx context.Context, c *config.Config, cl *acme.Client) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	acct := &acme.Account{}
	if c.Relay.Email != "" {
		acct.Contact = []string{"mailto:" + c.Relay.Email}
	}
	if _, err := cl.Register(ctx, acct, acme.AcceptTOS); err != nil && !errors.Is(err, acme.ErrAccountAlreadyExists) {
		return nil, fmt.Errorf("relay: ACME account: %w", oneLine(err))
	}
	order, err := cl.AuthorizeOrder(ctx, acme.DomainIDs(c.Relay.Domain))
	if err != nil {
		return nil, fmt.Errorf("relay: ACME order: %w", oneLine(err))
	}
	answers, chals, err := http01(ctx, cl, order)
	if err != nil {
		return nil, err
	}
	if len(chals) > 0 {
		if err := validate(ctx, c, cl, order, answers, chals); err != nil {
			return nil, err
		}
	}
	if order, err = cl.WaitOrder(ctx, order.URI); err != nil {
		return nil, fmt.Errorf("relay: ACME order: %w", oneLine(err))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: c.Relay.Domain}, DNSNames: []string{c.Relay.Domain}}, key)
	if err != nil {
		return nil, err
	}
	ders, _, err := cl.CreateOrderCert(ctx, order.FinalizeURL, csr, true)
	if err != nil {
		return nil, fmt.Errorf("relay: ACME certificate: %w", oneLine(err))
	}
	return tlsx.Bundle(ders, key)
}

// http01 returns the http-01 challenges of order's pending authorizations and their answers (path → key
// authorization).
func http01(ctx context.Context, cl *acme.Client, order *acme.Order) (map[string]string, []*acme.Challenge, error) {
	answers := map[string]string{} // path → key authorization
	var chals []*acme.Challenge
	for _, u := range order.AuthzURLs {
		z, err := cl.GetAuthorization(ctx, u)
		if err != nil {
			return nil, nil, err
		}
		if z.Status == acme.StatusValid {
			continue
		}
		var chal *acme.Challenge
		for _, ch := range z.Challenges {
			if ch.Type == "http-01" {
				chal = ch
			}
		}
		if chal == nil {
			return nil, nil, fmt.Errorf("relay: the ACME server offers no http-01 challenge for %s", z.Identifier.Value)
		}
		if err := validToken(chal.Token); err != nil {
			return nil, nil, err
		}
		resp, err := cl.HTTP01ChallengeResponse(chal.Token)
		if err != nil {
			return nil, nil, err
		}
		answers[cl.HTTP01ChallengePath(chal.Token)] = resp
		chals = append(chals, chal)
	}
	return answers, chals, nil
}

// validate serves answers through the running edge while the ACME server validates chals, then removes them.
func validate(ctx context.Context, c *config.Config, cl *acme.Client, order *acme.Order, answers map[string]string, chals []*acme.Challenge) error {
	restore, err := answerThroughEdge(ctx, c, answers)
	if err != nil {
		return err
	}
	err = func() error {
		for _, ch := range chals {
			if _, err := cl.Accept(ctx, ch); err != nil {
				return err
			}
		}
		for _, u := range order.AuthzURLs {
			if _, err := cl.WaitAuthorization(ctx, u); err != nil {
				return err
			}
		}
		return nil
	}()
	if rerr := restore(); rerr != nil {
		err = errors.Join(err, rerr)
	}
	if err != nil {
		return fmt.Errorf("relay: ACME validation of %s: %w", c.Relay.Domain, oneLine(err))
	}
	return nil
}

// tokenRE is RFC 8555's token: base64url characters only, which is all that may reach HAProxy's
// configuration (a token with a space, a quote or a newline would write directives of its own there).
var tokenRE = regexp.MustCompile(`^[A-Za-z0-9_-]{16,256}$`)

func validToken(token string) error {
	if !tokenRE.MatchString(token) {
		return fmt.Errorf("relay: the ACME server sent an http-01 token %.40q that is not base64url (RFC 8555 8.3): refusing to put it in HAProxy's configuration", token)
	}
	return nil
}

var port80 = regexp.MustCompile(`^\s*bind\s+\S*:80(\s|$)`)

// withChallenges returns cfg with a rule answering each challenge path on the frontend that binds port 80,
// ahead of its redirects; without such a frontend, one is added.
func withChallenges(cfg []byte, answers map[string]string) []byte {
	var rules strings.Builder
	rules.WriteString("\t# berth: ACME http-01 answers (removed after validation)\n")
	for path, resp := range answers {
		fmt.Fprintf(&rules, "\thttp-request return status 200 content-type text/plain string %s if { path %s }\n", resp, path)
	}
	lines := strings.SplitAfter(string(cfg), "\n")
	for i, l := range lines {
		if port80.MatchString(l) {
			return []byte(strings.Join(lines[:i+1], "") + rules.String() + strings.Join(lines[i+1:], ""))
		}
	}
	return []byte(strings.TrimRight(string(cfg), "\n") + "\n\nfrontend berth_acme\n\tbind 0.0.0.0:80\n\tmode http\n" + rules.String())
}

// answerThroughEdge puts the challenge answers into the running HAProxy and checks they are served on port
// 80; restore puts the configuration back.
func answerThroughEdge(ctx context.Context, c *config.Config, answers map[string]string) (restore func() error, err error) {
	if !machine.Running(ctx, "haproxy") {
		return nil, errors.New("relay: the haproxy machine is not running: it answers the ACME challenge")
	}
	orig, err := fsx.ReadIn(edgeDir(c), haproxyCfgRel)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	systemctl := func(args ...string) error {
		_, err := run.Command(ctx, append([]string{"systemctl", "-M", "haproxy"}, args...)...)
		return err
	}
	restore = func() error {
		err := fsx.WriteIn(edgeDir(c), haproxyCfgRel, orig, 0o644, 0o755)
		if err == nil {
			err = systemctl("reload", "haproxy.service")
		}
		return errors.Join(err, systemctl("start", "haproxycheck.timer"))
	}
	if err := systemctl("stop", "haproxycheck.timer"); err != nil {
		return nil, err
	}
	if err := fsx.WriteIn(edgeDir(c), haproxyCfgRel, withChallenges(orig, answers), 0o644, 0o755); err != nil {
		return nil, errors.Join(err, restore())
	}
	if err := systemctl("reload", "haproxy.service"); err != nil {
		return nil, errors.Join(err, restore())
	}
	for path, want := range answers {
		if err := waitServed(ctx, "http://127.0.0.1:80"+path, want); err != nil {
			return nil, errors.Join(err, restore())
		}
	}
	logger().Info("ACME challenges answered by the edge", "count", len(answers))
	return restore, nil
}

func waitServed(ctx context.Context, url, want string) error {
	return wait.Until(ctx, 20*time.Second, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.TrimSpace(string(b)) == want {
				return true, nil
			}
		}
		return false, fmt.Errorf("relay: the edge does not serve the ACME answer at %s after its reload", url)
	})
}

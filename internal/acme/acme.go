// Package acme gets certificates from an ACME directory (Let's Encrypt, or any RFC 8555 server) with
// http-01 challenges, for both of berth's fronts: the relay's edge (internal/relay) and the demo's proxy
// (internal/demo). The caller answers the challenges through its own running HAProxy (an Answerer): for the
// few seconds of a validation, one `http-request return` rule per challenge (Rule), applied with a graceful
// reload, and removed afterwards.
package acme

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
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

	"berth/internal/fsx"
	"berth/internal/tlsx"
	"berth/internal/wait"
)

// Client is an ACME account on one directory.
type Client struct {
	Who   string // "relay", "demo": starts every error
	Email string // the account's contact, optional
	cl    *acme.Client
}

// Answerer serves answers (challenge path → key authorization) on port 80 of the name being certified
// until restore is called.
type Answerer func(ctx context.Context, answers map[string]string) (restore func() error, err error)

// New loads (or creates, 0600) the account key at keyFile and checks that directory answers; it changes
// nothing else, so a caller can call it before writing any file. The directory's own certificate is
// checked against the system's roots, or those of the file $SSL_CERT_FILE names (read at each call: a
// private ACME server such as step-ca, or Pebble in the tests).
func New(ctx context.Context, who, directory, keyFile, email string) (*Client, error) {
	hc := &http.Client{Timeout: 30 * time.Second}
	if f := os.Getenv("SSL_CERT_FILE"); f != "" {
		b, err := os.ReadFile(f)
		roots := x509.NewCertPool()
		if err != nil || !roots.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s: SSL_CERT_FILE=%s: no certificates (%v)", who, f, err)
		}
		hc.Transport = &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: &tls.Config{RootCAs: roots}}
	}
	cl := &acme.Client{DirectoryURL: directory, HTTPClient: hc, UserAgent: "berth"}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := cl.Discover(dctx); err != nil {
		return nil, fmt.Errorf("%s: ACME directory %s: %w", who, directory, oneLine(err))
	}
	key, err := loadOrCreateKey(keyFile)
	if err != nil {
		return nil, fmt.Errorf("%s: ACME account key: %w", who, err)
	}
	cl.Key = key
	return &Client{Who: who, Email: email, cl: cl}, nil
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

// Obtain gets a certificate for domain, its http-01 challenges answered by answer, and returns HAProxy's
// bundle (chain, then key).
func (c *Client) Obtain(ctx context.Context, domain string, answer Answerer) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cl := c.cl
	acct := &acme.Account{}
	if c.Email != "" {
		acct.Contact = []string{"mailto:" + c.Email}
	}
	if _, err := cl.Register(ctx, acct, acme.AcceptTOS); err != nil && !errors.Is(err, acme.ErrAccountAlreadyExists) {
		return nil, fmt.Errorf("%s: ACME account: %w", c.Who, oneLine(err))
	}
	order, err := cl.AuthorizeOrder(ctx, acme.DomainIDs(domain))
	if err != nil {
		return nil, fmt.Errorf("%s: ACME order: %w", c.Who, oneLine(err))
	}
	answers, chals, err := c.http01(ctx, order)
	if err != nil {
		return nil, err
	}
	if len(chals) > 0 {
		if err := c.validate(ctx, domain, order, answers, chals, answer); err != nil {
			return nil, err
		}
	}
	if order, err = cl.WaitOrder(ctx, order.URI); err != nil {
		return nil, fmt.Errorf("%s: ACME order: %w", c.Who, oneLine(err))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: domain}, DNSNames: []string{domain}}, key)
	if err != nil {
		return nil, err
	}
	ders, _, err := cl.CreateOrderCert(ctx, order.FinalizeURL, csr, true)
	if err != nil {
		return nil, fmt.Errorf("%s: ACME certificate: %w", c.Who, oneLine(err))
	}
	return tlsx.Bundle(ders, key)
}

// http01 returns the http-01 challenges of order's pending authorizations and their answers (path → key
// authorization).
func (c *Client) http01(ctx context.Context, order *acme.Order) (map[string]string, []*acme.Challenge, error) {
	answers := map[string]string{}
	var chals []*acme.Challenge
	for _, u := range order.AuthzURLs {
		z, err := c.cl.GetAuthorization(ctx, u)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: ACME authorization: %w", c.Who, oneLine(err))
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
			return nil, nil, fmt.Errorf("%s: the ACME server offers no http-01 challenge for %s", c.Who, z.Identifier.Value)
		}
		if err := validToken(c.Who, chal.Token); err != nil {
			return nil, nil, err
		}
		resp, err := c.cl.HTTP01ChallengeResponse(chal.Token)
		if err != nil {
			return nil, nil, err
		}
		answers[c.cl.HTTP01ChallengePath(chal.Token)] = resp
		chals = append(chals, chal)
	}
	return answers, chals, nil
}

// validate serves answers through answer while the ACME server validates chals, then removes them.
func (c *Client) validate(ctx context.Context, domain string, order *acme.Order, answers map[string]string, chals []*acme.Challenge, answer Answerer) error {
	restore, err := answer(ctx, answers)
	if err != nil {
		return err
	}
	err = func() error {
		for _, ch := range chals {
			if _, err := c.cl.Accept(ctx, ch); err != nil {
				return err
			}
		}
		for _, u := range order.AuthzURLs {
			if _, err := c.cl.WaitAuthorization(ctx, u); err != nil {
				return err
			}
		}
		return nil
	}()
	if rerr := restore(); rerr != nil {
		err = errors.Join(err, rerr)
	}
	if err != nil {
		return fmt.Errorf("%s: ACME validation of %s: %w", c.Who, domain, oneLine(err))
	}
	return nil
}

// tokenRE is RFC 8555's token: base64url characters only, which is all that may reach HAProxy's
// configuration (a token with a space, a quote or a newline would write directives of its own there).
var tokenRE = regexp.MustCompile(`^[A-Za-z0-9_-]{16,256}$`)

func validToken(who, token string) error {
	if !tokenRE.MatchString(token) {
		return fmt.Errorf("%s: the ACME server sent an http-01 token %.40q that is not base64url (RFC 8555 8.3): refusing to put it in HAProxy's configuration", who, token)
	}
	return nil
}

// Rule is the HAProxy line (for a frontend on port 80) that answers one challenge: path → key
// authorization, both base64url and a fixed prefix once Obtain has checked the token.
func Rule(path, resp string) string {
	return fmt.Sprintf("http-request return status 200 content-type text/plain string %s if { path %s }", resp, path)
}

// WaitServed waits, at most 20 s, until url (asked with Host: host when host is set) answers want: a
// reloaded HAProxy answers the challenge.
func WaitServed(ctx context.Context, who, url, host, want string) error {
	return wait.Until(ctx, 20*time.Second, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if host != "" {
			req.Host = host
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.TrimSpace(string(b)) == want {
				return true, nil
			}
		}
		return false, fmt.Errorf("%s: HAProxy does not serve the ACME answer at %s after its reload", who, url)
	})
}

// Package tlsx makes the TLS material berth needs: self-signed certificates in HAProxy's bundle format.
package tlsx

import (
	"bytes"
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
	"io/fs"
	"math/big"
	"net"
	"time"

	"berth/internal/fsx"
	"berth/internal/wait"
)

// SelfSigned returns a PEM bundle (certificate, then key) for domain, valid for lifetime.
func SelfSigned(domain string, lifetime time.Duration) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: domain, Organization: []string{"berth self-signed"}},
		DNSNames:     []string{domain},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return Bundle([][]byte{der}, key)
}

// Bundle is HAProxy's PEM bundle of a certificate chain (DER, leaf first) and its private key (PKCS #8).
func Bundle(chain [][]byte, key crypto.Signer) ([]byte, error) {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	var out []byte
	for _, der := range chain {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...), nil
}

// RenewBefore is how long before its end a certificate is replaced (the relay's, the demo's, self-signed
// or from ACME): Let's Encrypt's certificates last 90 days, and they advise renewing with 30 left.
const RenewBefore = 30 * 24 * time.Hour

// Leaf is the first certificate of a PEM bundle.
func Leaf(bundle []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, bundle = pem.Decode(bundle)
		if block == nil {
			return nil, errors.New("no certificate")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

// Due says why the bundle must be replaced, "" when it need not: it is missing (nil) or unreadable, is
// for another name than domain, has fewer than RenewBefore left, or is not of the wanted kind (self-signed,
// or issued by a CA).
func Due(bundle []byte, domain string, selfSigned bool) string {
	if bundle == nil {
		return "missing"
	}
	cert, err := Leaf(bundle)
	switch {
	case err != nil:
		return "unreadable: " + err.Error()
	case cert.VerifyHostname(domain) != nil:
		return "not for " + domain
	case time.Until(cert.NotAfter) < RenewBefore:
		return "ends " + cert.NotAfter.UTC().Format(time.DateOnly) + ", fewer than 30 days from now"
	case IsSelfSigned(cert) != selfSigned:
		if selfSigned {
			return "issued by " + cert.Issuer.CommonName + ", not self-signed as configured"
		}
		return "self-signed, not from the ACME directory as configured"
	}
	return ""
}

// IsSelfSigned tells whether cert is its own issuer.
func IsSelfSigned(cert *x509.Certificate) bool { return bytes.Equal(cert.RawIssuer, cert.RawSubject) }

// EnsureBundleIn writes a self-signed bundle for domain at rel inside dir (mode 0600, directories 0700)
// unless a file is already there, and reports whether it wrote one; through os.Root: dir is a machine's
// data directory, where a link planted by the guest must not lead the write (or the check) onto the host.
func EnsureBundleIn(dir, rel, domain string, lifetime time.Duration) (bool, error) {
	if _, err := fsx.StatIn(dir, rel); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	pemData, err := SelfSigned(domain, lifetime)
	if err != nil {
		return false, err
	}
	return true, fsx.WriteIn(dir, rel, pemData, 0o600, 0o700)
}

// WaitServed waits, at most 30 s, until the TLS server at addr presents want for name: a reloaded HAProxy
// serves a new certificate only once its new worker answers. who names the server in errors ("relay: the
// edge").
func WaitServed(ctx context.Context, who, addr, name string, want *x509.Certificate) error {
	return wait.Until(ctx, 30*time.Second, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 2 * time.Second}, Config: &tls.Config{ServerName: name, InsecureSkipVerify: true}}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return false, fmt.Errorf("%s at %s after its reload: %w", who, addr, err)
		}
		defer conn.Close()
		if got := conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(want.SerialNumber) != 0 {
			return false, fmt.Errorf("%s at %s still serves serial %x, not the new %x, after its reload", who, addr, got, want.SerialNumber)
		}
		return true, nil
	})
}

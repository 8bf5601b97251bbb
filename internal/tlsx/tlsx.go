// Package tlsx makes the TLS material berth needs: self-signed certificates in HAProxy's bundle format.
package tlsx

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"berth/internal/fsx"
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

// EnsureBundle writes a self-signed bundle for domain at path (mode 0600, directory 0700) unless a file is
// already there; it reports whether it wrote one.
func EnsureBundle(path, domain string, lifetime time.Duration) (bool, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return false, err
	}
	return EnsureBundleIn(filepath.Dir(path), filepath.Base(path), domain, lifetime)
}

// EnsureBundleIn is EnsureBundle for rel inside dir, through os.Root: dir is a machine's data directory,
// where a link planted by the guest must not lead the write (or the check) onto the host.
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

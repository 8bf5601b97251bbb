package publish

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"berth/internal/fsx"
)

// ImportKeyring is systemd-importd's keyring for signature verification: when it exists it is used instead
// of the distribution's /usr/lib/systemd/import-pubring.gpg.
var ImportKeyring = "/etc/systemd/import-pubring.gpg"

var keyConfig = &packet.Config{DefaultHash: crypto.SHA256, Algorithm: packet.PubKeyAlgoRSA, RSABits: 3072}

// EnsureKey returns the signing key at path, making it (0600, armored) when the file does not exist. A key
// file an operator provides must be an armored or binary OpenPGP secret key without a passphrase, and not
// readable by others.
func EnsureKey(path string) (*openpgp.Entity, bool, error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		e, err := openpgp.NewEntity("berth publisher", "", "berth@localhost", keyConfig)
		if err != nil {
			return nil, false, err
		}
		var buf bytes.Buffer
		w, err := armor.Encode(&buf, openpgp.PrivateKeyType, nil)
		if err != nil {
			return nil, false, err
		}
		if err := e.SerializePrivate(w, keyConfig); err != nil {
			return nil, false, err
		}
		w.Close()
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, false, err
		}
		return e, true, fsx.WriteFile(path, buf.Bytes(), 0o600)
	}
	if err != nil {
		return nil, false, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, false, fmt.Errorf("signing key %s is readable by others (mode %v): chmod 600 it", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, false, err
	}
	list, err := readKeys(b)
	if err != nil || len(list) == 0 || list[0].PrivateKey == nil {
		return nil, false, fmt.Errorf("signing key %s: expected an OpenPGP secret key: %v", path, err)
	}
	if list[0].PrivateKey.Encrypted {
		return nil, false, fmt.Errorf("signing key %s is protected by a passphrase: berth signs unattended, give it a key without one", path)
	}
	return list[0], false, nil
}

func readKeys(b []byte) (openpgp.EntityList, error) {
	if bytes.HasPrefix(bytes.TrimSpace(b), []byte("-----BEGIN")) {
		return openpgp.ReadArmoredKeyRing(bytes.NewReader(b))
	}
	return openpgp.ReadKeyRing(bytes.NewReader(b))
}

// PublicKey is e's public key, armored: what a pulling host puts in [Publish] PublicKey.
func PublicKey(e *openpgp.Entity) ([]byte, error) {
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err != nil {
		return nil, err
	}
	if err := e.Serialize(w); err != nil {
		return nil, err
	}
	w.Close()
	return buf.Bytes(), nil
}

// Sign makes the detached binary signature of data (SHA256SUMS.gpg).
func Sign(e *openpgp.Entity, data []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := openpgp.DetachSign(&buf, e, bytes.NewReader(data), keyConfig); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Fingerprint is e's fingerprint in upper-case hex, as gpg prints it.
func Fingerprint(e *openpgp.Entity) string {
	return strings.ToUpper(fmt.Sprintf("%x", e.PrimaryKey.Fingerprint))
}

// TrustKey adds the publisher's public key (armored or binary, in file) to systemd-importd's keyring,
// keeping the keys already there; it writes only when the key is new. It returns the key's fingerprint.
func TrustKey(file string) (string, bool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", false, fmt.Errorf("[Publish] PublicKey: %w", err)
	}
	add, err := readKeys(b)
	if err != nil || len(add) == 0 {
		return "", false, fmt.Errorf("[Publish] PublicKey %s: expected an OpenPGP public key: %v", file, err)
	}
	var have openpgp.EntityList
	if old, err := os.ReadFile(ImportKeyring); err == nil && len(old) > 0 {
		if have, err = readKeys(old); err != nil {
			return "", false, fmt.Errorf("%s: %w", ImportKeyring, err)
		}
	}
	fp := Fingerprint(add[0])
	for _, e := range have {
		if Fingerprint(e) == fp {
			return fp, false, nil
		}
	}
	var out bytes.Buffer
	for _, e := range append(have, add[0]) {
		if err := e.Serialize(&out); err != nil {
			return "", false, err
		}
	}
	if err := os.MkdirAll(filepath.Dir(ImportKeyring), 0o755); err != nil {
		return "", false, err
	}
	return fp, true, fsx.WriteFile(ImportKeyring, out.Bytes(), 0o644)
}

// Package relay configures the relay platform: its secrets, made once and kept, and the files that carry them.
package relay

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
)

// Keypair is a Nostr identity: a secp256k1 secret key and its x-only public key (BIP-340), in hex and in
// NIP-19 form (nsec/npub).
type Keypair struct{ PrivateHex, PublicHex, Nsec, Npub string }

// NewKeypair makes a Nostr identity from the system's random source, in Go (no helper binary needed).
func NewKeypair() (Keypair, error) {
	priv, err := secp256k1.GeneratePrivateKey()
	if err != nil {
		return Keypair{}, err
	}
	return keypairOf(priv.Serialize())
}

// KeypairFromHex rebuilds the identity of a kept secret key.
func KeypairFromHex(privHex string) (Keypair, error) {
	b, err := hex.DecodeString(privHex)
	if err != nil || len(b) != 32 {
		return Keypair{}, errors.New("a Nostr secret key is 64 hexadecimal digits")
	}
	return keypairOf(b)
}

func keypairOf(priv []byte) (Keypair, error) {
	key := secp256k1.PrivKeyFromBytes(priv)
	if key.Key.IsZero() {
		return Keypair{}, errors.New("invalid Nostr secret key")
	}
	pub := key.PubKey().SerializeCompressed()[1:] // x-only
	nsec, err := bech32Encode("nsec", priv)
	if err != nil {
		return Keypair{}, err
	}
	npub, err := bech32Encode("npub", pub)
	if err != nil {
		return Keypair{}, err
	}
	return Keypair{PrivateHex: hex.EncodeToString(priv), PublicHex: hex.EncodeToString(pub), Nsec: nsec, Npub: npub}, nil
}

const bech32Charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"

func bech32Polymod(values []byte) uint32 {
	gen := [5]uint32{0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3}
	chk := uint32(1)
	for _, v := range values {
		top := chk >> 25
		chk = (chk&0x1ffffff)<<5 ^ uint32(v)
		for i := 0; i < 5; i++ {
			if (top>>i)&1 == 1 {
				chk ^= gen[i]
			}
		}
	}
	return chk
}

func hrpExpand(hrp string) []byte {
	out := make([]byte, 0, len(hrp)*2+1)
	for _, c := range hrp {
		out = append(out, byte(c)>>5)
	}
	out = append(out, 0)
	for _, c := range hrp {
		out = append(out, byte(c)&31)
	}
	return out
}

// bech32Encode encodes data (8-bit bytes) as bech32 (BIP-173) with the human-readable part hrp, as NIP-19 does.
func bech32Encode(hrp string, data []byte) (string, error) {
	five := convertBits(data, 8, 5, true)
	values := append(hrpExpand(hrp), five...)
	mod := bech32Polymod(append(values, 0, 0, 0, 0, 0, 0)) ^ 1
	var sb strings.Builder
	sb.WriteString(hrp + "1")
	for _, v := range five {
		sb.WriteByte(bech32Charset[v])
	}
	for i := 0; i < 6; i++ {
		sb.WriteByte(bech32Charset[(mod>>(5*(5-i)))&31])
	}
	return sb.String(), nil
}

// bech32Decode decodes a NIP-19 string and checks its checksum and prefix.
func bech32Decode(s, hrp string) ([]byte, error) {
	s = strings.ToLower(s)
	pos := strings.LastIndexByte(s, '1')
	if pos < 1 || s[:pos] != hrp || len(s)-pos-1 < 6 {
		return nil, fmt.Errorf("not a %s string", hrp)
	}
	var five []byte
	for _, c := range s[pos+1:] {
		i := strings.IndexRune(bech32Charset, c)
		if i < 0 {
			return nil, fmt.Errorf("invalid character %q", c)
		}
		five = append(five, byte(i))
	}
	if bech32Polymod(append(hrpExpand(hrp), five...)) != 1 {
		return nil, errors.New("bad bech32 checksum")
	}
	return convertBits(five[:len(five)-6], 5, 8, false), nil
}

// convertBits regroups bits from from-bit to to-bit groups (8→5 to encode, 5→8 to decode), padding the
// last group with zeros when pad is set.
func convertBits(data []byte, from, to uint, pad bool) []byte {
	var out []byte
	acc, bits := 0, uint(0)
	for _, b := range data {
		acc = acc<<from | int(b)
		bits += from
		for bits >= to {
			bits -= to
			out = append(out, byte(acc>>bits&(1<<to-1)))
		}
	}
	if pad && bits > 0 {
		out = append(out, byte(acc<<(to-bits)&(1<<to-1)))
	}
	return out
}

package relay

import (
	"encoding/hex"
	"testing"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
)

// The examples of NIP-19.
func TestNIP19Examples(t *testing.T) {
	for _, tc := range []struct{ hrp, bech, hexs string }{
		{"npub", "npub10elfcs4fr0l0r8af98jlmgdh9c8tcxjvz9qkw038js35mp4dma8qzvjptg", "7e7e9c42a91bfef19fa929e5fda1b72e0ebc1a4c1141673e2794234d86addf4e"},
		{"nsec", "nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe5", "67dea2ed018072d675f5415ecfaed7d2597555e202d85b3d65ea4e58d2d92ffa"},
	} {
		b, _ := hex.DecodeString(tc.hexs)
		if got, _ := bech32Encode(tc.hrp, b); got != tc.bech {
			t.Errorf("encode %s: %s, want %s", tc.hexs, got, tc.bech)
		}
		if got, err := bech32Decode(tc.bech, tc.hrp); err != nil || hex.EncodeToString(got) != tc.hexs {
			t.Errorf("decode %s: %x %v", tc.bech, got, err)
		}
	}
	if _, err := bech32Decode("npub10elfcs4fr0l0r8af98jlmgdh9c8tcxjvz9qkw038js35mp4dma8qzvjpth", "npub"); err == nil {
		t.Error("a wrong checksum decoded")
	}
}

func TestKeypair(t *testing.T) {
	k, err := NewKeypair()
	if err != nil {
		t.Fatal(err)
	}
	again, err := KeypairFromHex(k.PrivateHex)
	if err != nil || again != k {
		t.Fatalf("rebuilt identity differs: %+v %v", again, err)
	}
	priv, _ := hex.DecodeString(k.PrivateHex)
	pub := secp256k1.PrivKeyFromBytes(priv).PubKey().SerializeCompressed()[1:]
	if k.PublicHex != hex.EncodeToString(pub) || len(k.PublicHex) != 64 {
		t.Fatalf("public key %s", k.PublicHex)
	}
	if b, err := bech32Decode(k.Npub, "npub"); err != nil || hex.EncodeToString(b) != k.PublicHex {
		t.Fatalf("npub does not decode to the public key: %v", err)
	}
	other, _ := NewKeypair()
	if other.PrivateHex == k.PrivateHex {
		t.Fatal("two new identities are equal")
	}
	if _, err := KeypairFromHex("zz"); err == nil {
		t.Fatal("a malformed key was accepted")
	}
}

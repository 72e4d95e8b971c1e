package ims_ipsec_pcscf

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"testing"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Golden bytes from the reference (§5, §15): the Milenage TS 35.208 test set
// 1 CK/IK, the osmocom fixture and the rig's test values.
func TestDeriveKeys(t *testing.T) {
	const (
		milCK = "b40ba9a3c58b2a05bbf0d987b21bf8cb"
		milIK = "f769bcd751044604127672711c6d3441"
		osmCK = "0b389d08c833991734936bec55cac800"
		osmIK = "17141862125bd30c81c4224391a0909a"
		rigIK = "0123456789abcdef0123456789abcdef"
		rigCK = "fedcba9876543210fedcba9876543210"
	)
	tests := []struct {
		alg, ealg, ik, ck string
		authName, authKey string
		encName, encKey   string
	}{
		{"hmac-sha-1-96", "null", osmIK, osmCK, "hmac(sha1)", "17141862125bd30c81c4224391a0909a00000000", "ecb(cipher_null)", ""},
		{"hmac-sha-1-96", "aes-cbc", rigIK, rigCK, "hmac(sha1)", "0123456789abcdef0123456789abcdef00000000", "cbc(aes)", rigCK},
		{"hmac-md5-96", "aes-cbc", milIK, milCK, "hmac(md5)", milIK, "cbc(aes)", milCK},
		{"hmac-md5-96", "des-ede3-cbc", milIK, milCK, "hmac(md5)", milIK, "cbc(des3_ede)", milCK + "b40ba9a3c58b2a05"},
		{"hmac-sha-1-96", "des-ede3-cbc", rigIK, rigCK, "hmac(sha1)", rigIK + "00000000", "cbc(des3_ede)", "fedcba9876543210fedcba9876543210fedcba9876543210"},
		{"hmac-md5-96", "", milIK, milCK, "hmac(md5)", milIK, "ecb(cipher_null)", ""},
	}
	for _, tc := range tests {
		k, err := DeriveKeys(tc.alg, tc.ealg, unhex(t, tc.ik), unhex(t, tc.ck))
		if err != nil {
			t.Fatalf("%s/%s: %v", tc.alg, tc.ealg, err)
		}
		if k.AuthName != tc.authName || hex.EncodeToString(k.AuthKey) != tc.authKey || k.EncName != tc.encName || hex.EncodeToString(k.EncKey) != tc.encKey {
			t.Errorf("%s/%s: got %s %x %s %x", tc.alg, tc.ealg, k.AuthName, k.AuthKey, k.EncName, k.EncKey)
		}
	}
}

func TestDeriveKeysErrors(t *testing.T) {
	k16 := make([]byte, 16)
	for _, tc := range []struct {
		alg, ealg string
		ik, ck    []byte
	}{
		{"aes-gmac", "null", k16, k16},
		{"hmac-sha-1-96", "aes-gcm", k16, k16},
		{"hmac-sha-1-96", "null", k16[:15], k16},
		{"hmac-sha-1-96", "null", k16, nil},
	} {
		if _, err := DeriveKeys(tc.alg, tc.ealg, tc.ik, tc.ck); err == nil {
			t.Errorf("%s/%s ik %d ck %d: want an error", tc.alg, tc.ealg, len(tc.ik), len(tc.ck))
		}
	}
}

// The padded IK and the raw IK give the same HMAC-SHA1 (reference §0.3):
// why a UE using the raw IK interoperates.
func TestPaddedIKSameHMAC(t *testing.T) {
	ik := unhex(t, "f769bcd751044604127672711c6d3441")
	k, _ := DeriveKeys("hmac-sha-1-96", "null", ik, make([]byte, 16))
	a, b := hmac.New(sha1.New, ik), hmac.New(sha1.New, k.AuthKey)
	a.Write([]byte("REGISTER"))
	b.Write([]byte("REGISTER"))
	if !hmac.Equal(a.Sum(nil), b.Sum(nil)) {
		t.Error("padded IK changes the HMAC")
	}
}

// The derived keys never alias the caller's IK/CK.
func TestDeriveKeysCopies(t *testing.T) {
	ik, ck := make([]byte, 16), make([]byte, 16)
	k, _ := DeriveKeys("hmac-md5-96", "aes-cbc", ik, ck)
	ik[0], ck[0] = 1, 1
	if k.AuthKey[0] != 0 || k.EncKey[0] != 0 {
		t.Error("keys alias the input")
	}
}

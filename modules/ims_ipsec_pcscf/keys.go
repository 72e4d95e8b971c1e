package ims_ipsec_pcscf

import (
	"fmt"
)

// Keys are the kernel algorithm names and key bytes for one SA set, per
// TS 33.203 Annex I. Names are the kernel's canonical ones (ip xfrm prints
// them); the auth ICV is always truncated to 96 bits.
type Keys struct {
	AuthName string
	AuthKey  []byte
	EncName  string
	EncKey   []byte
}

// DeriveKeys maps the negotiated alg/ealg and the 128-bit IK/CK from the
// S-CSCF to what the kernel gets:
//   - hmac-md5-96: IK as is; hmac-sha-1-96: IK padded with 32 zero bits to 160
//     (HMAC would zero-pad anyway; Annex I writes it padded);
//   - null: no key; aes-cbc: CK; des-ede3-cbc: CK1||CK2||CK1 (CK = CK1||CK2).
func DeriveKeys(alg, ealg string, ik, ck []byte) (Keys, error) {
	if len(ik) != 16 {
		return Keys{}, fmt.Errorf("IK is %d bytes, want 16", len(ik))
	}
	if len(ck) != 16 {
		return Keys{}, fmt.Errorf("CK is %d bytes, want 16", len(ck))
	}
	var k Keys
	switch alg {
	case "hmac-sha-1-96":
		k.AuthName = "hmac(sha1)"
		k.AuthKey = append(append(make([]byte, 0, 20), ik...), 0, 0, 0, 0)
	case "hmac-md5-96":
		k.AuthName = "hmac(md5)"
		k.AuthKey = append([]byte(nil), ik...)
	default:
		return Keys{}, fmt.Errorf("unsupported alg %q", alg)
	}
	switch ealg {
	case "", "null":
		k.EncName = "ecb(cipher_null)"
		k.EncKey = []byte{}
	case "aes-cbc":
		k.EncName = "cbc(aes)"
		k.EncKey = append([]byte(nil), ck...)
	case "des-ede3-cbc":
		k.EncName = "cbc(des3_ede)"
		k.EncKey = append(append(make([]byte, 0, 24), ck...), ck[:8]...)
	default:
		return Keys{}, fmt.Errorf("unsupported ealg %q", ealg)
	}
	return k, nil
}

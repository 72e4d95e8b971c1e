package auth

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"strings"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/kamgo/kamgo/modules/core"
)

// Kamailio's auth_cfg_result_t: what the authenticate functions return.
const (
	OK                 = 1
	ErrGeneric         = -1
	ErrInvalidPassword = -2
	ErrUserUnknown     = -3
	ErrStaleNonce      = -4
	ErrNoCredentials   = -5
	ErrNonceReused     = -6
	ErrUserMismatch    = -8
)

// HF says which header pair a function works on.
type HF uint8

const (
	WWW   HF = iota // Authorization / WWW-Authenticate, 401
	Proxy           // Proxy-Authorization / Proxy-Authenticate, 407
)

// CredHeader is the header carrying the client's credentials.
func (h HF) CredHeader() string {
	if h == Proxy {
		return "Proxy-Authorization"
	}
	return "Authorization"
}

// ChallengeHeader is the header carrying our challenge.
func (h HF) ChallengeHeader() string {
	if h == Proxy {
		return "Proxy-Authenticate"
	}
	return "WWW-Authenticate"
}

// HFFor is Kamailio's choice: WWW for REGISTER, Proxy for the rest.
func HFFor(m *core.Msg) HF {
	if m.Method() == "REGISTER" {
		return WWW
	}
	return Proxy
}

// Cred is one parsed set of digest credentials.
type Cred struct {
	Username  string // as sent, possibly user@domain
	User      string // before the first '@'
	Domain    string // after it, "" if none
	Realm     string
	Algorithm string // "MD5" or "SHA-256"
	QOP       string

	d   *digest.Credentials
	hdr sip.Header
}

// maxCredLen bounds what is parsed from one credentials header.
const maxCredLen = 4096

// parseCred parses a Digest credentials header value; nil, nil for
// another scheme (Basic...), which Kamailio ignores too.
func parseCred(h sip.Header) (*Cred, error) {
	v := strings.TrimSpace(h.Value())
	if !digest.IsDigest(v) {
		return nil, nil
	}
	if len(v) > maxCredLen {
		return nil, fmt.Errorf("%s is %d bytes long (max %d)", h.Name(), len(v), maxCredLen)
	}
	d, err := digest.ParseCredentials(v)
	if err != nil {
		return nil, err
	}
	c := &Cred{Username: d.Username, User: d.Username, Realm: d.Realm, QOP: d.QOP, d: d, hdr: h}
	if i := strings.IndexByte(d.Username, '@'); i >= 0 {
		c.User, c.Domain = d.Username[:i], d.Username[i+1:]
	}
	switch strings.ToUpper(d.Algorithm) {
	case "", "MD5":
		c.Algorithm = "MD5"
	case "SHA-256":
		c.Algorithm = "SHA-256"
	default:
		c.Algorithm = d.Algorithm // refused by the checks
	}
	return c, nil
}

// findCred returns the credentials for realm: rc 0 found, ErrNoCredentials
// none, ErrGeneric a Digest header that does not parse.
func findCred(m *core.Msg, realm string, hf HF) (*Cred, int, error) {
	for _, h := range core.FindHeaders(m.Req, hf.CredHeader()) {
		c, err := parseCred(h)
		if err != nil {
			return nil, ErrGeneric, err
		}
		if c != nil && c.Realm == realm {
			return c, 0, nil
		}
	}
	return nil, ErrNoCredentials, nil
}

func newHash(alg string) hash.Hash {
	if alg == "SHA-256" {
		return sha256.New()
	}
	return md5.New()
}

// HexLen is the length of an HA1 or response for the algorithm.
func HexLen(alg string) int {
	if alg == "SHA-256" {
		return 64
	}
	return 32
}

// HA1 is H(username:realm:password) for "MD5" or "SHA-256".
func HA1(alg, username, realm, password string) string {
	h := newHash(alg)
	io.WriteString(h, username+":"+realm+":"+password)
	return hex.EncodeToString(h.Sum(nil))
}

// CheckHA1 reports why a stored HA1 cannot be used with alg ("" if it can).
func CheckHA1(alg, ha1 string) string {
	if len(ha1) != HexLen(alg) {
		return fmt.Sprintf("%d characters, %s needs %d hex digits", len(ha1), alg, HexLen(alg))
	}
	if _, err := hex.DecodeString(ha1); err != nil {
		return "not hexadecimal"
	}
	return ""
}

// response computes the expected digest response with icholy/digest, as
// a client would from the same inputs.
func response(c *Cred, method, ha1 string, body []byte) (string, error) {
	chal := &digest.Challenge{Realm: c.d.Realm, Nonce: c.d.Nonce, Algorithm: c.d.Algorithm, Opaque: c.d.Opaque}
	if c.QOP != "" {
		chal.QOP = []string{c.QOP}
	}
	o := digest.Options{Method: method, URI: c.d.URI, Username: c.d.Username, A1: strings.ToLower(ha1), Cnonce: c.d.Cnonce, Count: c.d.Nc}
	if c.QOP == "auth-int" {
		o.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	r, err := digest.Digest(chal, o)
	if err != nil {
		return "", err
	}
	return r.Response, nil
}

// equalHex compares two hex strings in constant time (case-insensitive).
func equalHex(got, want string) bool {
	return subtle.ConstantTimeCompare([]byte(strings.ToLower(got)), []byte(want)) == 1
}

// quotedSafe reports whether s may go between double quotes in a header
// as is: printable, no '"' or '\'.
func quotedSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

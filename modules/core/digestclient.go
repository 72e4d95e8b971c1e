package core

import (
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/emiago/sipgo/sip"
	"hash"
	"strings"
)

// The client side of HTTP digest for SIP (RFC 3261 22, RFC 7616, RFC
// 8760): what kamd puts into Authorization / Proxy-Authorization when a
// request it sends itself (uac's REGISTER, uac_req_send, uac_auth) is
// challenged. The one client implementation: uac and the route-test
// harness both use it; modules/auth is the server side.

// DigestChallenge is one parsed WWW-Authenticate / Proxy-Authenticate value.
type DigestChallenge struct {
	Realm  string
	Nonce  string
	Opaque string
	// HasOpaque tells an empty opaque="" (echoed) from none.
	HasOpaque bool
	// Algorithm in RFC 7616's spelling: MD5, MD5-sess, SHA-256,
	// SHA-256-sess, SHA-512-256, SHA-512-256-sess ("MD5" when the challenge
	// names none); an unknown one is kept as sent and refused by Authorize.
	Algorithm string
	QOP       []string // offered qop values, lower-case ("auth", "auth-int")
	Stale     bool
}

// maxChallengeLen bounds what is parsed from one challenge header.
const maxChallengeLen = 4096

// digestAlgs maps an upper-cased algorithm name to its canonical spelling.
var digestAlgs = map[string]string{
	"MD5": "MD5", "MD5-SESS": "MD5-sess",
	"SHA-256": "SHA-256", "SHA-256-SESS": "SHA-256-sess",
	"SHA-512-256": "SHA-512-256", "SHA-512-256-SESS": "SHA-512-256-sess",
}

// ParseDigestChallenge parses a WWW-Authenticate / Proxy-Authenticate value
// ("Digest realm=..., nonce=..., ..."). Realm and nonce are required.
func ParseDigestChallenge(v string) (*DigestChallenge, error) {
	v = strings.TrimSpace(v)
	if len(v) > maxChallengeLen {
		return nil, fmt.Errorf("digest challenge is %d bytes long (max %d)", len(v), maxChallengeLen)
	}
	scheme, rest, _ := strings.Cut(v, " ")
	if !strings.EqualFold(scheme, "Digest") {
		return nil, fmt.Errorf("not a Digest challenge: %q", trimForError(v))
	}
	params, err := parseAuthParams(rest)
	if err != nil {
		return nil, fmt.Errorf("digest challenge: %v", err)
	}
	c := &DigestChallenge{Algorithm: "MD5"}
	var haveRealm, haveNonce bool
	for _, p := range params {
		switch p.name {
		case "realm":
			c.Realm, haveRealm = p.value, true
		case "nonce":
			c.Nonce, haveNonce = p.value, true
		case "opaque":
			c.Opaque, c.HasOpaque = p.value, true
		case "algorithm":
			if canon, ok := digestAlgs[strings.ToUpper(p.value)]; ok {
				c.Algorithm = canon
			} else {
				c.Algorithm = p.value
			}
		case "qop":
			for _, q := range strings.Split(p.value, ",") {
				if q = strings.ToLower(strings.TrimSpace(q)); q != "" {
					c.QOP = append(c.QOP, q)
				}
			}
		case "stale":
			c.Stale = strings.EqualFold(p.value, "true")
		}
	}
	if !haveRealm || !haveNonce || c.Nonce == "" {
		return nil, errors.New("digest challenge without realm or nonce")
	}
	return c, nil
}

// Supported reports whether Authorize can answer this challenge's algorithm.
func (c *DigestChallenge) Supported() bool {
	_, ok := digestAlgs[strings.ToUpper(c.Algorithm)]
	return ok
}

// strength orders algorithms for PickDigestChallenge (higher is stronger).
func (c *DigestChallenge) strength() int {
	switch strings.TrimSuffix(strings.ToUpper(c.Algorithm), "-SESS") {
	case "SHA-512-256":
		return 3
	case "SHA-256":
		return 2
	case "MD5":
		return 1
	}
	return 0
}

// DigestChallengeValues returns the challenges of a 401 (WWW-Authenticate)
// or 407 (Proxy-Authenticate) and the header the answer goes in
// (Authorization or Proxy-Authorization).
func DigestChallengeValues(res *sip.Response) (values []string, credHeader string) {
	name, credHeader := "WWW-Authenticate", "Authorization"
	if res.StatusCode == 407 {
		name, credHeader = "Proxy-Authenticate", "Proxy-Authorization"
	}
	for _, h := range FindHeaders(res, name) {
		values = append(values, h.Value())
	}
	return values, credHeader
}

// PickDigestChallenge parses the challenge values of a 401/407 (every
// WWW-Authenticate or Proxy-Authenticate) and returns the strongest one
// Authorize supports (RFC 8760: SHA-512-256, SHA-256, then MD5), the first
// of equals. Values that are not Digest or do not parse are skipped.
func PickDigestChallenge(values []string) (*DigestChallenge, error) {
	var best *DigestChallenge
	var firstErr error
	for _, v := range values {
		c, err := ParseDigestChallenge(v)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if c.Supported() && (best == nil || c.strength() > best.strength()) {
			best = c
		}
	}
	if best == nil {
		if firstErr != nil {
			return nil, firstErr
		}
		return nil, errors.New("no digest challenge with a supported algorithm")
	}
	return best, nil
}

// DigestCredentials are what a request is authorized with. HA1 (hex) is
// used instead of Password when set; it is an MD5 HA1 (Kamailio's
// auth_ha1), so it serves MD5 and MD5-sess challenges only: other
// algorithms need the Password.
type DigestCredentials struct{ Username, Password, HA1 string }

// Authorize builds the Authorization / Proxy-Authorization value for one
// request: method and uri (the digest-uri, normally the R-URI) as sent,
// nc the nonce count (the caller counts per nonce, starting at 1), cnonce
// the client nonce (the caller picks it: random in production, fixed in
// tests), body the request body (hashed for qop=auth-int). When the
// challenge offers qop, "auth" is preferred, "auth-int" used if it is the
// only one; without qop the RFC 2069 response is sent (no nc, no cnonce).
func (c *DigestChallenge) Authorize(cred DigestCredentials, method, uri string, nc uint32, cnonce string, body []byte) (string, error) {
	alg, ok := digestAlgs[strings.ToUpper(c.Algorithm)]
	if !ok {
		return "", fmt.Errorf("digest: unsupported algorithm %q", c.Algorithm)
	}
	base, sess := strings.CutSuffix(alg, "-sess")
	newHash := map[string]func() hash.Hash{"MD5": md5.New, "SHA-256": sha256.New, "SHA-512-256": sha512.New512_256}[base]
	h := func(s string) string {
		x := newHash()
		x.Write([]byte(s))
		return hex.EncodeToString(x.Sum(nil))
	}
	if cred.Username == "" {
		return "", errors.New("digest: empty username")
	}
	if method == "" || uri == "" {
		return "", errors.New("digest: empty method or uri")
	}
	var ha1 string
	switch {
	case cred.HA1 != "" && base == "MD5":
		if len(cred.HA1) != 32 || !isHexString(cred.HA1) {
			return "", fmt.Errorf("digest: HA1 must be 32 hex digits (MD5), got %d characters", len(cred.HA1))
		}
		ha1 = strings.ToLower(cred.HA1)
	case cred.Password != "" || cred.HA1 == "":
		ha1 = h(cred.Username + ":" + c.Realm + ":" + cred.Password)
	default:
		return "", fmt.Errorf("digest: the challenge asks for %s but only an MD5 HA1 is configured (set the password)", alg)
	}
	qop := ""
	if len(c.QOP) > 0 {
		for _, q := range c.QOP {
			if q == "auth" {
				qop = "auth"
				break
			}
			if q == "auth-int" {
				qop = "auth-int"
			}
		}
		if qop == "" {
			return "", fmt.Errorf("digest: no supported qop in %q", strings.Join(c.QOP, ","))
		}
		if cnonce == "" || nc == 0 {
			return "", errors.New("digest: qop needs a cnonce and a nonce count of at least 1")
		}
	}
	if sess {
		if cnonce == "" {
			return "", fmt.Errorf("digest: %s needs a cnonce", alg)
		}
		ha1 = h(ha1 + ":" + c.Nonce + ":" + cnonce)
	}
	a2 := method + ":" + uri
	if qop == "auth-int" {
		a2 += ":" + h(string(body))
	}
	ha2 := h(a2)
	ncs := fmt.Sprintf("%08x", nc)
	var resp string
	if qop != "" {
		resp = h(ha1 + ":" + c.Nonce + ":" + ncs + ":" + cnonce + ":" + qop + ":" + ha2)
	} else {
		resp = h(ha1 + ":" + c.Nonce + ":" + ha2)
	}

	// Kamailio's field order; every quoted value goes through QuoteString.
	var b strings.Builder
	b.WriteString("Digest ")
	quoted := func(name, v string, first bool) error {
		q, err := QuoteString(v)
		if err != nil {
			return fmt.Errorf("digest: %s: %w", name, err)
		}
		if !first {
			b.WriteString(", ")
		}
		b.WriteString(name + "=" + q)
		return nil
	}
	for _, f := range []struct{ name, v string }{{"username", cred.Username}, {"realm", c.Realm}, {"nonce", c.Nonce}, {"uri", uri}} {
		if err := quoted(f.name, f.v, f.name == "username"); err != nil {
			return "", err
		}
	}
	if c.HasOpaque {
		if err := quoted("opaque", c.Opaque, false); err != nil {
			return "", err
		}
	}
	if qop != "" {
		b.WriteString(", qop=" + qop + ", nc=" + ncs)
		if err := quoted("cnonce", cnonce, false); err != nil {
			return "", err
		}
	} else if sess {
		if err := quoted("cnonce", cnonce, false); err != nil {
			return "", err
		}
	}
	b.WriteString(`, response="` + resp + `", algorithm=` + alg)
	return b.String(), nil
}

func isHexString(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return false
		}
	}
	return true
}

type authParam struct{ name, value string }

// parseAuthParams parses RFC 7235 auth-params: name=token or
// name="quoted string" (with \-escapes), separated by commas.
func parseAuthParams(s string) ([]authParam, error) {
	var out []authParam
	i := 0
	skip := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == ',') {
			i++
		}
	}
	for {
		skip()
		if i >= len(s) {
			return out, nil
		}
		start := i
		for i < len(s) && s[i] != '=' && s[i] != ',' && s[i] != ' ' && s[i] != '\t' {
			i++
		}
		name := strings.ToLower(s[start:i])
		if !IsToken(name) {
			return nil, fmt.Errorf("bad parameter name at offset %d", start)
		}
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i >= len(s) || s[i] != '=' {
			return nil, fmt.Errorf("parameter %q without a value", name)
		}
		i++
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		var val strings.Builder
		if i < len(s) && s[i] == '"' {
			i++
			closed := false
			for i < len(s) {
				ch := s[i]
				if ch == '\\' && i+1 < len(s) {
					val.WriteByte(s[i+1])
					i += 2
					continue
				}
				if ch == '"' {
					closed = true
					i++
					break
				}
				if ch == '\r' || ch == '\n' || ch == 0 {
					return nil, fmt.Errorf("parameter %q: control character in quoted string", name)
				}
				val.WriteByte(ch)
				i++
			}
			if !closed {
				return nil, fmt.Errorf("parameter %q: unterminated quoted string", name)
			}
		} else {
			start := i
			for i < len(s) && s[i] != ',' && s[i] != ' ' && s[i] != '\t' {
				i++
			}
			val.WriteString(s[start:i])
		}
		out = append(out, authParam{name, val.String()})
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i < len(s) && s[i] != ',' {
			return nil, fmt.Errorf("junk after parameter %q at offset %d", name, i)
		}
	}
}

func trimForError(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

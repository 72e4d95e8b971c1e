package core

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Every value kamd writes into a header it builds (;ftag=, ;received=,
// ;rport=, ;branch=, To tags, Contact and Path params, uac's and ipsec's
// headers) goes through the helpers below. Values copied from a request are
// attacker bytes: a From tag "a>,<sip:evil@203.0.113.9" written verbatim
// into a Record-Route URI adds a hop of the attacker's choice (issue 16).
// The rule: a token stays a token, a quoted string stays a well-formed
// quoted string, an IP address stays an IP address; anything else is an
// error, and the caller refuses the request (400) instead of writing it.

var tokenChars, uriParamChars [256]bool

func init() {
	for c := 'a'; c <= 'z'; c++ {
		tokenChars[c], uriParamChars[c] = true, true
		tokenChars[c-'a'+'A'], uriParamChars[c-'a'+'A'] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		tokenChars[c], uriParamChars[c] = true, true
	}
	// RFC 3261 25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
	for _, c := range "-.!%*_+`'~" {
		tokenChars[c] = true
	}
	// paramchar = param-unreserved / unreserved (escaped is checked apart)
	for _, c := range "[]/:&+$-_.!~*'()" {
		uriParamChars[c] = true
	}
}

// IsToken reports whether s is a non-empty RFC 3261 token.
func IsToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenChars[s[i]] {
			return false
		}
	}
	return true
}

// IsURIParamValue reports whether s is a non-empty URI parameter value
// (RFC 3261 pvalue: paramchar and %HH escapes), so it cannot end the URI
// or the header it sits in.
func IsURIParamValue(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' {
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return false
			}
			i += 2
			continue
		}
		if !uriParamChars[c] {
			return false
		}
	}
	return true
}

// EscapeURIParam %-escapes every byte of s that may not stand as itself
// in a URI parameter value ('%' included), so any token can be carried in
// a URI: "a`b%c" becomes "a%60b%25c". The result is a token and a URI
// parameter value.
func EscapeURIParam(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if !uriParamChars[s[i]] {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		if c := s[i]; uriParamChars[c] {
			b = append(b, c)
		} else {
			b = append(b, '%', hex[c>>4], hex[c&15])
		}
	}
	return string(b)
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// IsQuotedString reports whether s is one complete RFC 3261 quoted-string
// ("..." with \-escapes) holding no CR, LF or NUL.
func IsQuotedString(s string) bool {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		switch c := s[i]; {
		case c == '\r' || c == '\n' || c == 0:
			return false
		case c == '\\':
			i++
			if i >= len(s)-1 || s[i] == '\r' || s[i] == '\n' || s[i] == 0 {
				return false
			}
		case c == '"':
			return false
		case c < 0x20 && c != '\t' || c == 0x7f:
			return false
		}
	}
	return true
}

// QuoteString returns s as a quoted-string, escaping '"' and '\'. Text
// with a CR, LF, NUL or other control character (HTAB aside) is refused:
// RFC 3261 allows them only as quoted-pairs, and no peer needs them.
func QuoteString(s string) (string, error) {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 && c != '\t' || c == 0x7f {
			return "", fmt.Errorf("%w: control character 0x%02x in %q", ErrBadValue, c, s)
		}
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String(), nil
}

// isIPValue accepts an IP address as Via's received= writes it: dotted
// IPv4, bare IPv6 (RFC 3261 via-received) or a bracketed IPv6 reference.
func isIPValue(s string) bool {
	if s == "" || strings.ContainsAny(s, " \t\r\n\x00\"<>,;") {
		return false
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		a, err := netip.ParseAddr(s[1 : len(s)-1])
		return err == nil && a.Is6()
	}
	_, err := netip.ParseAddr(s)
	return err == nil
}

// ErrBadValue is the error of every check here: errors.Is(err, ErrBadValue)
// means "refuse the request", not "kamd is broken".
var ErrBadValue = fmt.Errorf("value cannot be written into a SIP header")

// CheckParam checks a header parameter (";name=value" after a name-addr
// or a Via): the name a token, the value empty (a flag such as ;lr), a
// token, an IP address or a quoted string.
func CheckParam(name, value string) error {
	if !IsToken(name) {
		return fmt.Errorf("%w: parameter name %q is not a token", ErrBadValue, name)
	}
	if value == "" || IsToken(value) || isIPValue(value) || IsQuotedString(value) {
		return nil
	}
	return fmt.Errorf("%w: %s=%q is neither a token, an IP address nor a quoted string", ErrBadValue, name, value)
}

// CheckParsedParam is CheckParam for a header parameter as sipgo holds it
// once parsed (see NormalizeParams): a value holding SP or HTAB without
// its quotes is the inside of a quoted string, which sipgo writes back
// between quotes.
func CheckParsedParam(name, value string) error {
	if value != "" && value[0] != '"' && strings.ContainsAny(value, " \t") {
		return CheckParam(name, `"`+value+`"`) // allocates only for such a value
	}
	return CheckParam(name, value)
}

// CheckURIParam checks a URI parameter (";name=value" inside <sip:...>):
// name and value made of paramchars only; no quoting exists there.
func CheckURIParam(name, value string) error {
	if !IsURIParamValue(name) {
		return fmt.Errorf("%w: URI parameter name %q", ErrBadValue, name)
	}
	if value != "" && !IsURIParamValue(value) {
		return fmt.Errorf("%w: URI parameter %s=%q", ErrBadValue, name, value)
	}
	return nil
}

// SetParam sets name=value in the params of a header kamd writes (Via,
// To, Contact, ...), replacing an existing one, after CheckParam.
func SetParam(p *sip.HeaderParams, name, value string) error {
	if err := CheckParam(name, value); err != nil {
		return err
	}
	// sipgo wraps a value holding SP or HTAB in quotes when it writes it:
	// keep only the inside of such a quoted string, or it would be quoted twice.
	if len(value) > 1 && value[0] == '"' && strings.ContainsAny(value, " \t") {
		value = value[1 : len(value)-1]
	}
	p.Remove(name)
	p.Add(name, value)
	return nil
}

// SetURIParam sets name=value in the params of a URI kamd writes (a
// Record-Route, a Path), replacing an existing one, after CheckURIParam.
func SetURIParam(p *sip.HeaderParams, name, value string) error {
	if err := CheckURIParam(name, value); err != nil {
		return err
	}
	p.Remove(name)
	p.Add(name, value)
	return nil
}

// AppendParam writes ";name=value" (";name" for an empty value) to b, for
// header text built by hand, after CheckParam.
func AppendParam(b *strings.Builder, name, value string) error {
	if err := CheckParam(name, value); err != nil {
		return err
	}
	b.WriteByte(';')
	b.WriteString(name)
	if value != "" {
		b.WriteByte('=')
		b.WriteString(value)
	}
	return nil
}

// CheckNameAddr checks a name-addr kamd writes from bytes it received or
// stored (a registered Path written back as a Route, ...): a display name
// that stays one quoted string, a URI that passes the door's checks (no
// quote, angle bracket, whitespace or control in it), and header
// parameters as CheckParam. sipgo's parser is lenient: that a value
// re-parses does not make it well-formed.
func CheckNameAddr(display string, u *sip.Uri, params sip.HeaderParams) error {
	if why := nameAddrProblem(display, u); why != "" {
		return fmt.Errorf("%w: %s", ErrBadValue, why)
	}
	for _, p := range params {
		if err := CheckParsedParam(p.K, p.V); err != nil {
			return err
		}
	}
	return nil
}

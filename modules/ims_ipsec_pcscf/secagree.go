package ims_ipsec_pcscf

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/kamgo/kamgo/modules/core"
)

// Mechanism is one sec-mechanism of a Security-Client/Server/Verify header
// (RFC 3329 §2.2 with the TS 33.203 Annex H ipsec-3gpp parameters).
type Mechanism struct {
	Name string // "ipsec-3gpp", "digest", "tls", ...
	// Q is the preference in thousandths; -1 when absent.
	Q int
	// ipsec-3gpp parameters; Prot/Mod/Ealg carry their defaults (esp,
	// trans, null) when the header omits them.
	Alg, Ealg, Prot, Mod string
	SpiC, SpiS           uint32
	PortC, PortS         uint16
	// Ext holds the parameters not listed above, in header order, so a
	// mechanism round-trips (d-alg, d-ver, vendor extensions).
	Ext []Param
}

// Param is one name[=value] parameter as written.
type Param struct{ Name, Value string }

// IsIPsec3GPP tells whether the mechanism is the one this module negotiates.
func (m *Mechanism) IsIPsec3GPP() bool { return strings.EqualFold(m.Name, "ipsec-3gpp") }

// Known algorithm names (TS 33.203; what key derivation supports).
var (
	knownAlgs  = []string{"hmac-sha-1-96", "hmac-md5-96"}
	knownEalgs = []string{"null", "aes-cbc", "des-ede3-cbc"}
)

func known(list []string, s string) bool {
	for _, k := range list {
		if k == s {
			return true
		}
	}
	return false
}

// Supported tells whether kamgo can build SAs for the mechanism's alg/ealg.
func (m *Mechanism) Supported() bool {
	return m.IsIPsec3GPP() && strings.EqualFold(m.Prot, "esp") && strings.EqualFold(m.Mod, "trans") &&
		known(knownAlgs, m.Alg) && known(knownEalgs, m.Ealg)
}

// SameSA tells whether two ipsec-3gpp mechanisms describe the same SA
// parameters: what a Security-Verify must repeat of the Security-Server.
func (m *Mechanism) SameSA(o *Mechanism) bool {
	return strings.EqualFold(m.Name, o.Name) && m.Alg == o.Alg && m.Ealg == o.Ealg &&
		strings.EqualFold(m.Prot, o.Prot) && strings.EqualFold(m.Mod, o.Mod) &&
		m.SpiC == o.SpiC && m.SpiS == o.SpiS && m.PortC == o.PortC && m.PortS == o.PortS
}

// ParseSecurity parses the values of one or several Security-Client,
// -Server or -Verify header lines (each a comma list of mechanisms).
func ParseSecurity(values ...string) ([]Mechanism, error) {
	var out []Mechanism
	for _, v := range values {
		items, err := splitOutside(v, ',')
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			if strings.TrimSpace(it) == "" {
				// RFC 7230-style empty list elements are tolerated.
				continue
			}
			m, err := parseMechanism(it)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("security header: no mechanism")
	}
	return out, nil
}

// splitOutside splits s at sep outside double quotes; an unterminated quote
// is an error.
func splitOutside(s string, sep byte) ([]string, error) {
	var out []string
	start, inq := 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case inq && c == '\\':
			i++
		case c == '"':
			inq = !inq
		case !inq && c == sep:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	if inq {
		return nil, errors.New("unterminated quoted string")
	}
	return append(out, s[start:]), nil
}

func parseMechanism(s string) (Mechanism, error) {
	parts, _ := splitOutside(s, ';') // quotes already balanced by the caller
	m := Mechanism{Name: strings.TrimSpace(parts[0]), Q: -1}
	if !core.IsToken(m.Name) {
		return m, fmt.Errorf("security header: bad mechanism name %q", m.Name)
	}
	var have struct{ spic, spis, portc, ports bool }
	seen := map[string]bool{}
	for _, p := range parts[1:] {
		name, val, hasEq := strings.Cut(p, "=")
		name, val = strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(val)
		if !core.IsToken(name) {
			return m, fmt.Errorf("security header: %s: bad parameter name %q", m.Name, name)
		}
		if hasEq && val == "" {
			return m, fmt.Errorf("security header: %s: empty value for %s", m.Name, name)
		}
		if hasEq && !core.IsToken(val) && !core.IsQuotedString(val) && !isHostValue(val) {
			return m, fmt.Errorf("security header: %s: bad value for %s: %q", m.Name, name, val)
		}
		switch name {
		case "q", "alg", "ealg", "prot", "mod", "spi-c", "spi-s", "port-c", "port-s":
			if seen[name] {
				return m, fmt.Errorf("security header: %s: %s given twice", m.Name, name)
			}
			seen[name] = true
			if !hasEq {
				return m, fmt.Errorf("security header: %s: %s without a value", m.Name, name)
			}
		}
		var err error
		switch name {
		case "q":
			m.Q, err = parseQ(val)
		case "alg":
			m.Alg = strings.ToLower(val)
		case "ealg":
			m.Ealg = strings.ToLower(val)
		case "prot":
			m.Prot = strings.ToLower(val)
		case "mod":
			m.Mod = val
		case "spi-c":
			m.SpiC, err = parseSPI(val)
			have.spic = true
		case "spi-s":
			m.SpiS, err = parseSPI(val)
			have.spis = true
		case "port-c":
			m.PortC, err = parsePort(val)
			have.portc = true
		case "port-s":
			m.PortS, err = parsePort(val)
			have.ports = true
		default:
			m.Ext = append(m.Ext, Param{Name: name, Value: val})
		}
		if err != nil {
			return m, fmt.Errorf("security header: %s: %s: %w", m.Name, name, err)
		}
	}
	if !m.IsIPsec3GPP() {
		return m, nil
	}
	// TS 33.203 defaults: esp, transport mode, and no ealg means null.
	if m.Prot == "" {
		m.Prot = "esp"
	}
	if m.Mod == "" {
		m.Mod = "trans"
	}
	if m.Ealg == "" {
		m.Ealg = "null"
	}
	if m.Alg == "" {
		return m, errors.New("security header: ipsec-3gpp: alg missing")
	}
	for _, c := range []struct {
		ok   bool
		name string
	}{{have.spic, "spi-c"}, {have.spis, "spi-s"}, {have.portc, "port-c"}, {have.ports, "port-s"}} {
		if !c.ok {
			return m, fmt.Errorf("security header: ipsec-3gpp: %s missing", c.name)
		}
	}
	return m, nil
}

// isHostValue accepts the gen-value host form (an IPv6 reference) that
// generic-param allows besides token and quoted-string.
func isHostValue(s string) bool {
	return len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' && !strings.ContainsAny(s[1:len(s)-1], "[]\" ;,")
}

// parseQ parses an RFC 3261 qvalue into thousandths.
func parseQ(s string) (int, error) {
	bad := fmt.Errorf("bad qvalue %q", s)
	ip, frac, dot := strings.Cut(s, ".")
	if (ip != "0" && ip != "1") || len(frac) > 3 || (!dot && frac != "") {
		return 0, bad
	}
	for _, c := range frac {
		if c < '0' || c > '9' {
			return 0, bad
		}
	}
	f := frac + strings.Repeat("0", 3-len(frac))
	n, _ := strconv.Atoi(f)
	if ip == "1" {
		if n != 0 {
			return 0, bad
		}
		return 1000, nil
	}
	return n, nil
}

func parseSPI(s string) (uint32, error) {
	if len(s) > 10 || !core.AllDigits(s) {
		return 0, fmt.Errorf("bad SPI %q", s)
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("SPI %q out of range", s)
	}
	if v == 0 {
		return 0, errors.New("SPI 0 is not allowed")
	}
	return uint32(v), nil
}

func parsePort(s string) (uint16, error) {
	if !core.AllDigits(s) || len(s) > 5 {
		return 0, fmt.Errorf("bad port %q", s)
	}
	v, _ := strconv.Atoi(s)
	if v == 0 || v > 65535 {
		return 0, fmt.Errorf("port %q out of range 1..65535", s)
	}
	return uint16(v), nil
}

func formatQ(q int) string {
	if q >= 1000 {
		return "1"
	}
	s := strings.TrimRight(fmt.Sprintf("%03d", q), "0")
	if s == "" {
		return "0"
	}
	return "0." + s
}

// String prints the mechanism in Kamailio's Security-Server order:
// ipsec-3gpp;q=0.1;prot=esp;mod=trans;spi-c;spi-s;port-c;port-s;alg;ealg,
// then the extension parameters as parsed.
func (m *Mechanism) String() string {
	var b strings.Builder
	b.WriteString(m.Name)
	if m.Q >= 0 {
		b.WriteString(";q=" + formatQ(m.Q))
	}
	if m.IsIPsec3GPP() {
		fmt.Fprintf(&b, ";prot=%s;mod=%s;spi-c=%d;spi-s=%d;port-c=%d;port-s=%d;alg=%s;ealg=%s",
			m.Prot, m.Mod, m.SpiC, m.SpiS, m.PortC, m.PortS, m.Alg, m.Ealg)
	}
	for _, p := range m.Ext {
		b.WriteByte(';')
		b.WriteString(p.Name)
		if p.Value != "" {
			b.WriteByte('=')
			b.WriteString(p.Value)
		}
	}
	return b.String()
}

// FormatSecurity prints a mechanism list as one header value.
func FormatSecurity(ms []Mechanism) string {
	s := make([]string, len(ms))
	for i := range ms {
		s[i] = ms[i].String()
	}
	return strings.Join(s, ", ")
}

// Choose picks the mechanism to use from a Security-Client list: the first
// supported offer matching the preferred alg/ealg ("" = any); with no
// preference match, the first supported offer. Kamailio lets the last
// offer win instead.
func Choose(offers []Mechanism, prefAlg, prefEalg string) (Mechanism, error) {
	var first *Mechanism
	for i := range offers {
		o := &offers[i]
		if !o.Supported() {
			continue
		}
		if first == nil {
			first = o
		}
		if (prefAlg == "" || o.Alg == prefAlg) && (prefEalg == "" || o.Ealg == prefEalg) {
			return *o, nil
		}
	}
	if first == nil {
		return Mechanism{}, errors.New("Security-Client offers no supported ipsec-3gpp mechanism")
	}
	return *first, nil
}

// StripCKIK removes the ck and ik auth-params from a WWW-Authenticate value
// and returns the rest, well formed, with the two 128-bit keys. The params
// are parsed as auth-params (quoted values may hold commas), never found by
// substring, so a nonce containing "ck=" is left alone.
func StripCKIK(value string) (rest string, ck, ik []byte, err error) {
	v := strings.TrimSpace(value)
	scheme, params, _ := strings.Cut(v, " ")
	if !core.IsToken(scheme) {
		return "", nil, nil, fmt.Errorf("WWW-Authenticate: bad scheme %q", scheme)
	}
	items, err := splitOutside(params, ',')
	if err != nil {
		return "", nil, nil, fmt.Errorf("WWW-Authenticate: %w", err)
	}
	var kept []string
	for _, it := range items {
		it = strings.TrimSpace(it)
		if it == "" {
			continue
		}
		name, val, ok := strings.Cut(it, "=")
		name, val = strings.TrimSpace(name), strings.TrimSpace(val)
		if !ok || !core.IsToken(name) || (val == "" || !core.IsToken(val) && !core.IsQuotedString(val)) {
			return "", nil, nil, fmt.Errorf("WWW-Authenticate: bad auth-param %q", it)
		}
		switch strings.ToLower(name) {
		case "ck", "ik":
			if (strings.EqualFold(name, "ck") && ck != nil) || (strings.EqualFold(name, "ik") && ik != nil) {
				return "", nil, nil, fmt.Errorf("WWW-Authenticate: %s given twice", name)
			}
			key, err := parseKey(val)
			if err != nil {
				return "", nil, nil, fmt.Errorf("WWW-Authenticate: %s: %w", name, err)
			}
			if strings.EqualFold(name, "ck") {
				ck = key
			} else {
				ik = key
			}
		default:
			kept = append(kept, name+"="+val)
		}
	}
	if ck == nil || ik == nil {
		return "", nil, nil, errors.New("WWW-Authenticate: ck or ik missing")
	}
	return scheme + " " + strings.Join(kept, ", "), ck, ik, nil
}

// parseKey reads a quoted (or bare) 32-hex-digit key.
func parseKey(v string) ([]byte, error) {
	v = strings.Trim(v, `"`)
	if len(v) != 32 {
		return nil, fmt.Errorf("want 32 hex digits, got %d characters", len(v))
	}
	b, err := hex.DecodeString(v)
	if err != nil {
		return nil, errors.New("not hex")
	}
	return b, nil
}

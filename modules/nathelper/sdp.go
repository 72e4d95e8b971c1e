package nathelper

import (
	"net/netip"
	"strings"
)

// SDP helpers shared by nat_uac_test (8, 256) and fix_nated_sdp: line
// based, as Kamailio's, so an SDP kamd does not fully understand is still
// rewritten where it can be and left alone elsewhere.

// sdpLines splits a body into lines, remembering the line ending used.
func sdpLines(body string) (lines []string, eol string) {
	eol = "\r\n"
	if !strings.Contains(body, "\r\n") {
		eol = "\n"
	}
	body = strings.TrimSuffix(body, eol)
	if body == "" {
		return nil, eol
	}
	return strings.Split(body, eol), eol
}

// connAddr is the address of a c= or o= line ("IN IP4 x"), or "".
func connAddr(line string) (addr string, ok bool) {
	var f []string
	switch {
	case strings.HasPrefix(line, "c="):
		f = strings.Fields(line[2:])
		if len(f) < 3 {
			return "", false
		}
	case strings.HasPrefix(line, "o="):
		f = strings.Fields(line[2:])
		if len(f) < 6 {
			return "", false
		}
		f = f[3:]
	default:
		return "", false
	}
	if f[0] != "IN" || (f[1] != "IP4" && f[1] != "IP6") {
		return "", false
	}
	// c=IN IP4 224.2.1.1/127: multicast TTL after the slash.
	a := f[2]
	if i := strings.IndexByte(a, '/'); i >= 0 {
		a = a[:i]
	}
	return a, true
}

// SDPConnAddrs lists the addresses of the c= lines (session and media).
func SDPConnAddrs(body string) []string {
	lines, _ := sdpLines(body)
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, "c=") {
			if a, ok := connAddr(l); ok {
				out = append(out, a)
			}
		}
	}
	return out
}

// replaceAddr rewrites the address of a c= or o= line to ip (and its
// family), keeping everything else of the line.
func replaceAddr(line, ip string) string {
	fam := "IP4"
	if strings.Contains(ip, ":") {
		fam = "IP6"
	}
	f := strings.Fields(line[2:])
	i := 0 // index of "IN" in f
	if strings.HasPrefix(line, "o=") {
		i = 3
	}
	f[i+1], f[i+2] = fam, ip
	return line[:2] + strings.Join(f, " ")
}

// isNullAddr is an address that means "on hold" (RFC 3264 §8.4), which
// fix_nated_sdp leaves alone as Kamailio does.
func isNullAddr(a string) bool { return a == "0.0.0.0" || a == "::" }

// FixSDP is fix_nated_sdp on a body: flags 0x01 adds a=direction:active,
// 0x02 rewrites c= (and a=rtcp: with an address), 0x04 adds
// a=nortpproxy:yes, 0x08 rewrites o=. As Kamailio, the added lines go at
// the end of the body, then one a=oldmediaip (a=oldmediaip6) line per
// replaced c= and o= address (checked side by side with Kamailio 5.6). It
// returns the new body, whether an address was replaced and whether
// anything changed.
func FixSDP(body string, flags int, ip string) (out string, replaced, changed bool) {
	lines, eol := sdpLines(body)
	if len(lines) == 0 {
		return body, false, false
	}
	var res, oldC, oldO []string
	hasDir, hasNo := false, false
	for _, l := range lines {
		switch {
		case flags&0x02 != 0 && strings.HasPrefix(l, "c="):
			if a, ok := connAddr(l); ok && !isNullAddr(a) && a != ip {
				l = replaceAddr(l, ip)
				oldC = append(oldC, a)
			}
		case flags&0x08 != 0 && strings.HasPrefix(l, "o="):
			if a, ok := connAddr(l); ok && !isNullAddr(a) && a != ip {
				l = replaceAddr(l, ip)
				oldO = append(oldO, a)
			}
		case flags&0x02 != 0 && strings.HasPrefix(l, "a=rtcp:"):
			// a=rtcp:port IN IP4 addr (RFC 3605): the address is optional.
			f := strings.Fields(l[len("a=rtcp:"):])
			if len(f) == 4 && f[1] == "IN" && f[3] != ip {
				f[2] = "IP4"
				if strings.Contains(ip, ":") {
					f[2] = "IP6"
				}
				f[3] = ip
				l = "a=rtcp:" + strings.Join(f, " ")
				replaced = true
			}
		case l == "a=direction:active":
			hasDir = true
		case l == "a=nortpproxy:yes":
			hasNo = true
		}
		res = append(res, l)
	}
	replaced = replaced || len(oldC)+len(oldO) > 0
	changed = replaced
	if flags&0x01 != 0 && !hasDir {
		res = append(res, "a=direction:active")
		changed = true
	}
	if flags&0x04 != 0 && !hasNo {
		res = append(res, "a=nortpproxy:yes")
		changed = true
	}
	for _, a := range append(oldC, oldO...) {
		if strings.Contains(a, ":") {
			res = append(res, "a=oldmediaip6:"+a)
		} else {
			res = append(res, "a=oldmediaip:"+a)
		}
	}
	return strings.Join(res, eol) + eol, replaced, changed
}

// private networks of nat_uac_test and is_rfc1918: RFC 1918, RFC 6598
// (carrier-grade NAT), RFC 7335 (192.0.0.0/29) as Kamailio's nets_1918,
// and IPv6 unique local addresses (RFC 4193).
var privateNets = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/29"),
	netip.MustParsePrefix("fc00::/7"),
}

// IsPrivate reports whether s is an IP address in one of the private
// ranges; a host name is not.
func IsPrivate(s string) bool {
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range privateNets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// sameIP compares two address texts as IPs (a name never matches).
func sameIP(a, b string) bool {
	x, err1 := netip.ParseAddr(strings.Trim(a, "[]"))
	y, err2 := netip.ParseAddr(strings.Trim(b, "[]"))
	return err1 == nil && err2 == nil && x.Unmap() == y.Unmap()
}

package core

import (
	"bytes"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// The door: what kamd refuses before (or instead of) routing a message,
// independent of the script. Two stages:
//
//   - WireProblem looks at the bytes as they arrived (what sipgo's parser
//     lets through: a bare LF or a NUL inside a header, a folded first
//     header line, a datagram without the blank line, the method's case);
//   - RequestRefusal looks at the parsed request (version, Via, From/To,
//     Call-ID, CSeq, R-URI, duplicates).
//
// What they refuse never reaches the script, storage or another hop. Every
// check is a byte loop over what is already in memory: no allocation on a
// well-formed message.

// doorTokenChars is RFC 3261's token (25.1): alphanum and -.!%*_+`'~
// (escape.go has the same table for what kamd writes; the door keeps its
// own so the two files stay independent.)
var doorTokenChars = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "-.!%*_+`'~" {
		t[c] = true
	}
	return
}()

// isDoorToken reports whether s is a non-empty RFC 3261 token.
func isDoorToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !doorTokenChars[s[i]] {
			return false
		}
	}
	return true
}

func isDoorTokenBytes(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !doorTokenChars[c] {
			return false
		}
	}
	return true
}

var cr = []byte{'\r'}

// WireProblem checks the header section of one message as it arrived
// (data holds the message's own bytes; a stream may have leading CRLFs).
// It answers the code and reason of the refusal, or 0 and "".
//
// RFC 3261 §7 and §25: every line ends in CRLF and the header section ends
// with an empty line; the only other CR or LF allowed is a CRLF followed by
// whitespace (folding), which cannot follow the start line. sipgo splits
// lines on CR only, so a bare LF or a NUL would reach the script, storage
// and the next hop inside a header value.
//
// For a request it also restores the method as written: sipgo upper-cases
// it, while methods are case-sensitive (RFC 3261 §7.1), so "invite" is an
// unknown method, never an INVITE.
func WireProblem(msg sip.Message, data []byte, datagram bool) (int, string) {
	for len(data) >= 2 && data[0] == '\r' && data[1] == '\n' {
		data = data[2:]
	}
	// One pass over the lines of the header section: each must end in
	// CRLF, and a header line starts with a token and a colon.
	first := bytes.IndexByte(data, '\n')
	if first <= 0 || data[first-1] != '\r' {
		return 400, "Bad Request - no CRLF after the start line"
	}
	lines, end := 1, -1
	for pos := first + 1; pos < len(data); {
		i := bytes.IndexByte(data[pos:], '\n')
		if i < 0 {
			break
		}
		nl := pos + i
		if i == 0 || data[nl-1] != '\r' {
			return 400, "Bad Request - bare LF in the header section"
		}
		line := data[pos : nl-1]
		lines++
		pos = nl + 1
		if len(line) == 0 {
			end = pos
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			if lines == 2 {
				return 400, "Bad Request - folded first header line"
			}
			continue // a continuation line
		}
		k := 0
		for k < len(line) && doorTokenChars[line[k]] {
			k++
		}
		if k == 0 {
			return 400, "Bad Request - invalid header name"
		}
		for k < len(line) && (line[k] == ' ' || line[k] == '\t') {
			k++
		}
		if k == len(line) || line[k] != ':' {
			return 400, "Bad Request - invalid header name"
		}
	}
	if end < 0 {
		if datagram {
			return 400, "Bad Request - no empty line after the headers"
		}
		end = len(data) // a stream parser framed it
	}
	head := data[:end]
	// Every line ends in the only CR it may have: no bare CR.
	if bytes.Count(head, cr) != lines {
		return 400, "Bad Request - bare CR in the header section"
	}
	// No NUL at all, even as a quoted-pair ("\\" NUL, which RFC 3261 25.1
	// allows and RFC 4475's intmeth uses; Kamailio drops intmeth): nothing
	// kamd sends carries a NUL in a header.
	if bytes.IndexByte(head, 0) >= 0 {
		return 400, "Bad Request - NUL in the header section"
	}
	if req, ok := msg.(*sip.Request); ok {
		sp := bytes.IndexByte(data[:first], ' ')
		if sp <= 0 || !isDoorTokenBytes(data[:sp]) {
			return 400, "Bad Request - invalid method"
		}
		if string(data[:sp]) != string(req.Method) { // no allocation: compared in place
			req.Method = sip.RequestMethod(data[:sp])
		}
	}
	return 0, ""
}

// RequestRefusal is kamd's own check of a parsed request before routing:
// the code and reason it is answered with, or 0 and "" when it may be
// routed. It refuses what cannot be forwarded safely, whatever the script
// does: another SIP version (505), a Via that is not
// SIP/2.0/transport sent-by, a From, To or R-URI that is not a valid URI,
// a Call-ID or CSeq that does not parse, a CSeq method other than the
// request's, a duplicated From/To/Call-ID/CSeq or conflicting
// Content-Lengths (400).
//
// It also repairs what sipgo misreads so the message is forwarded as
// received: an IPv6 sent-by keeps its brackets (sipgo drops them and then
// writes a v4-mapped or zoned address bare), and "SIP / 2.0 / UDP host"
// keeps its transport.
func RequestRefusal(r *sip.Request) (int, string) {
	if !strings.EqualFold(r.SipVersion, "SIP/2.0") {
		if validVersion(r.SipVersion) {
			return 505, "Version Not Supported"
		}
		return 400, "Bad Request - invalid SIP version"
	}
	if why := uriProblem(&r.Recipient); why != "" {
		return 400, "Bad Request - invalid R-URI (" + why + ")"
	}
	var from, to, callid, cseq, vias int
	var cl sip.ContentLengthHeader
	clSeen := false
	for _, h := range r.Headers() {
		switch x := h.(type) {
		case *sip.ViaHeader:
			vias++
			NormalizeVia(x)
			if why := viaProblem(x); why != "" {
				return 400, "Bad Request - invalid Via (" + why + ")"
			}
			if x.ProtocolVersion != "2.0" {
				return 400, "Bad Request - Via version is not 2.0"
			}
		case *sip.FromHeader:
			from++
			NormalizeParams(x.Params)
			if why := nameAddrProblem(x.DisplayName, &x.Address); why != "" {
				return 400, "Bad Request - invalid From (" + why + ")"
			}
		case *sip.ToHeader:
			to++
			NormalizeParams(x.Params)
			if why := nameAddrProblem(x.DisplayName, &x.Address); why != "" {
				return 400, "Bad Request - invalid To (" + why + ")"
			}
		case *sip.ContactHeader:
			NormalizeParams(x.Params)
		case *sip.CallIDHeader:
			callid++
			if !validCallID(string(*x)) {
				return 400, "Bad Request - invalid Call-ID"
			}
		case *sip.CSeqHeader:
			cseq++
			if !isDoorToken(cseqMethod(x)) {
				return 400, "Bad Request - invalid CSeq method"
			}
		case *sip.ContentLengthHeader:
			if clSeen && *x != cl {
				return 400, "Bad Request - duplicate header"
			}
			cl, clSeen = *x, true
		}
	}
	switch {
	case vias == 0:
		return 400, "Bad Request - missing Via"
	case from == 0:
		return 400, "Bad Request - missing From"
	case to == 0:
		return 400, "Bad Request - missing To"
	case callid == 0:
		return 400, "Bad Request - missing Call-ID"
	case cseq == 0:
		return 400, "Bad Request - missing CSeq"
	case from > 1 || to > 1 || callid > 1 || cseq > 1:
		return 400, "Bad Request - duplicate header"
	}
	if m := cseqMethod(r.CSeq()); m != string(r.Method) && !(r.IsAck() && m == string(sip.INVITE)) {
		return 400, "Bad Request - CSeq method mismatch"
	}
	return 0, ""
}

// ReplyProblem checks a reply arriving from outside before it is routed
// (and possibly relayed): "" or why it is dropped.
func ReplyProblem(res *sip.Response) string {
	if !strings.EqualFold(res.SipVersion, "SIP/2.0") {
		return "not SIP/2.0"
	}
	vias := 0
	for _, h := range res.Headers() {
		switch x := h.(type) {
		case *sip.ViaHeader:
			vias++
			NormalizeVia(x)
			if why := viaProblem(x); why != "" {
				return "invalid Via (" + why + ")"
			}
		case *sip.FromHeader:
			NormalizeParams(x.Params)
			if why := nameAddrProblem(x.DisplayName, &x.Address); why != "" {
				return "invalid From (" + why + ")"
			}
		case *sip.ToHeader:
			NormalizeParams(x.Params)
			if why := nameAddrProblem(x.DisplayName, &x.Address); why != "" {
				return "invalid To (" + why + ")"
			}
		case *sip.ContactHeader:
			NormalizeParams(x.Params)
		case *sip.CallIDHeader:
			if !validCallID(string(*x)) {
				return "invalid Call-ID"
			}
		}
	}
	if vias == 0 || res.CSeq() == nil || res.CallID() == nil || res.From() == nil || res.To() == nil {
		return "missing Via, From, To, Call-ID or CSeq"
	}
	if !isDoorToken(cseqMethod(res.CSeq())) {
		return "invalid CSeq method"
	}
	return ""
}

// RefusalReply builds the answer to a request refused at the door from
// those of its headers that are valid: Via (in order, up to the first
// invalid one), From, To, Call-ID and CSeq. ok is false when it cannot be
// built: the client matches it to its request by the top Via's branch and
// the CSeq (RFC 3261 17.1.3), or by Call-ID and CSeq, so it needs a valid
// CSeq and a valid Via or Call-ID; anything else invalid or missing is left
// out. The caller decides
// where it goes: with no valid top Via (ViaOK), there is nowhere to send it
// on UDP.
func RefusalReply(req *sip.Request, code int, reason string) (res *sip.Response, ok bool) {
	res = sip.NewResponse(code, reason)
	var from, to, callid, cseq, via bool
	viaDone := false
	for _, h := range req.Headers() {
		switch x := h.(type) {
		case *sip.ViaHeader:
			if viaDone {
				continue
			}
			NormalizeVia(x)
			if viaProblem(x) != "" {
				viaDone = true
				continue
			}
			via = true
			res.AppendHeader(sip.HeaderClone(x))
		case *sip.FromHeader:
			NormalizeParams(x.Params)
			if !from && nameAddrProblem(x.DisplayName, &x.Address) == "" {
				from = true
				res.AppendHeader(sip.HeaderClone(x))
			}
		case *sip.ToHeader:
			NormalizeParams(x.Params)
			if !to && nameAddrProblem(x.DisplayName, &x.Address) == "" {
				to = true
				t := sip.HeaderClone(x).(*sip.ToHeader)
				if code > 100 && !t.Params.Has("tag") {
					if t.Params == nil {
						t.Params = sip.NewParams()
					}
					t.Params.Add("tag", ToTag(req))
				}
				res.AppendHeader(t)
			}
		case *sip.CallIDHeader:
			if !callid && validCallID(string(*x)) {
				callid = true
				res.AppendHeader(sip.HeaderClone(x))
			}
		case *sip.CSeqHeader:
			if !cseq && isDoorToken(cseqMethod(x)) {
				cseq = true
				res.AppendHeader(sip.HeaderClone(x))
			}
		}
	}
	if !cseq || !callid && !via {
		return nil, false
	}
	if sh := ServerHeader(); sh != "" {
		res.AppendHeader(sip.NewHeader("Server", sh))
	}
	cl := sip.ContentLengthHeader(0)
	res.AppendHeader(&cl)
	return res, true
}

// ViaOK reports whether a Via is well-formed enough to route a reply by.
func ViaOK(v *sip.ViaHeader) bool {
	if v == nil {
		return false
	}
	NormalizeVia(v)
	return viaProblem(v) == ""
}

// NormalizeVia repairs sipgo's misreadings of a valid Via, so it is
// checked and forwarded as it was received:
//   - an IPv6 sent-by loses its brackets in parsing, and sipgo writes a
//     v4-mapped or zoned address back without them ("::ffff:192.0.2.10:5060");
//   - LWS after the second slash ("SIP / 2.0 / UDP host", RFC 3261 allows
//     it) leaves the transport empty and the host "UDP host".
//
// It allocates only in those cases.
func NormalizeVia(v *sip.ViaHeader) {
	if v.Transport == "" {
		if i := strings.IndexAny(v.Host, " \t"); i > 0 {
			v.Transport = v.Host[:i]
			v.Host = strings.TrimLeft(v.Host[i:], " \t")
		}
	}
	if strings.IndexByte(v.Host, ':') >= 0 && v.Host[0] != '[' {
		v.Host = "[" + v.Host + "]"
	}
	// sipgo keeps the LWS around a parameter's "=" (RFC 3261 EQUAL allows
	// it; RFC 4475 wsinv has "branch  =   z9hG4bK9ikj8  ") in its name and
	// value.
	for i := range v.Params {
		p := &v.Params[i]
		p.K, p.V = strings.Trim(p.K, " \t"), strings.Trim(p.V, " \t")
	}
}

// NormalizeParams repairs what sipgo misreads in the header parameters of
// a From, To or Contact, so they are written back as received:
//   - LWS around "=" (RFC 3261 EQUAL: "expires = 60") stays in the name and
//     value, and sipgo's writer then quotes the value: `expires =" 60"`;
//   - a quoted value holding SP or HTAB (`p="x y"`) keeps its quotes, and
//     the writer, which quotes every value holding SP or HTAB, quotes it a
//     second time: `p=""x y""`. Its quotes are dropped here and the writer
//     puts them back (kamd's params hold such a value unquoted, as SetParam
//     does; CheckParsedParam checks it).
//
// A value that is not one well-formed quoted string is left as it is. No
// allocation.
func NormalizeParams(p sip.HeaderParams) {
	for i := range p {
		kv := &p[i]
		kv.K, kv.V = trimLWS(kv.K), trimLWS(kv.V)
		if v := kv.V; len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' && hasLWS(v) && quotedBody(v[1:len(v)-1]) {
			kv.V = v[1 : len(v)-1]
		}
	}
}

// trimLWS is strings.Trim(s, " \t") without its cutset set-up: the door
// runs it on every From, To and Contact parameter.
func trimLWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

func hasLWS(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == ' ' || s[i] == '\t' {
			return true
		}
	}
	return false
}

// HostRef is host as written in a URI or a Via sent-by: an IPv6 address in
// brackets (RFC 3261 IPv6reference), anything else as it is.
func HostRef(host string) string {
	if strings.IndexByte(host, ':') >= 0 && !strings.HasPrefix(host, "[") {
		return "[" + host + "]"
	}
	return host
}

// BareHost is host without the brackets of an IPv6 reference.
func BareHost(host string) string {
	if len(host) >= 2 && host[0] == '[' && host[len(host)-1] == ']' {
		return host[1 : len(host)-1]
	}
	return host
}

func viaProblem(v *sip.ViaHeader) string {
	switch {
	case !strings.EqualFold(v.ProtocolName, "SIP"):
		return "protocol is not SIP"
	case !validVersionNumber(v.ProtocolVersion):
		return "bad version"
	case !isDoorToken(v.Transport):
		return "bad transport"
	case !validHost(v.Host):
		return "bad sent-by host"
	case v.Port < 0 || v.Port > 65535:
		return "bad sent-by port"
	}
	// Parameters: a token name and a token or host value (sipgo splits a
	// quoted value wrongly, so one cannot be forwarded as received);
	// received an IP address, with or without brackets (RFC 5118 4.5);
	// rport empty or a port.
	for _, p := range v.Params {
		switch {
		case !isDoorToken(p.K):
			return "bad parameter name"
		case strings.EqualFold(p.K, "received"):
			if !validIP(p.V) {
				return "received is not an IP address"
			}
		case strings.EqualFold(p.K, "rport"):
			if p.V != "" && (!AllDigits(p.V) || len(p.V) > 5) {
				return "bad rport"
			}
		case !paramValue(p.V):
			return "bad parameter value"
		}
	}
	return ""
}

// validIP is an IPv4 or IPv6 address, bare or in brackets.
func validIP(s string) bool {
	s = BareHost(s)
	if strings.IndexByte(s, ':') >= 0 {
		return validIPv6ish(s)
	}
	dots := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.':
			dots++
		case c < '0' || c > '9':
			return false
		}
	}
	return dots == 3 && s[0] != '.' && s[len(s)-1] != '.'
}

// paramValue is an empty, token or host parameter value.
func paramValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !doorTokenChars[c] && c != ':' && c != '[' && c != ']' {
			return false
		}
	}
	return true
}

// validVersion is "SIP/" 1*DIGIT "." 1*DIGIT (RFC 3261 25.1), any case.
func validVersion(s string) bool {
	return len(s) > 4 && strings.EqualFold(s[:4], "SIP/") && validVersionNumber(s[4:])
}

func validVersionNumber(s string) bool {
	dot := strings.IndexByte(s, '.')
	return dot > 0 && AllDigits(s[:dot]) && AllDigits(s[dot+1:])
}

// AllDigits is true for a non-empty string of ASCII digits.
func AllDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// validHost accepts a hostname or IPv4 address, an IPv6 reference in
// brackets (leniently: RFC 5118 §4.8 asks to tolerate "[2001:db8:::1]"; a
// zone is allowed), or a bare IPv6 address (sipgo's Via host).
func validHost(h string) bool {
	if h == "" {
		return false
	}
	if h[0] == '[' {
		if len(h) < 3 || h[len(h)-1] != ']' {
			return false
		}
		return validIPv6ish(h[1 : len(h)-1])
	}
	if strings.IndexByte(h, ':') >= 0 {
		return validIPv6ish(h)
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

func validIPv6ish(s string) bool {
	addr, zone, hasZone := strings.Cut(s, "%")
	if addr == "" || strings.IndexByte(addr, ':') < 0 || hasZone && zone == "" {
		return false
	}
	for i := 0; i < len(addr); i++ {
		c := addr[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == ':' || c == '.') {
			return false
		}
	}
	for i := 0; i < len(zone); i++ {
		c := zone[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// uriProblem checks a URI as sipgo parsed it: a sip/sips URI needs a valid
// host and port, and user and password without characters that would end
// or split it; any other scheme (tel, urn, ...) a valid scheme name and a
// non-empty body without such characters.
func uriProblem(u *sip.Uri) string {
	if u.Wildcard {
		return "wildcard"
	}
	if !validScheme(u.Scheme) {
		return "bad scheme"
	}
	if u.Scheme != "sip" && u.Scheme != "sips" {
		if raw := u.Raw(); raw == "" || !uriText(raw) {
			return "bad URI"
		}
		return ""
	}
	switch {
	case !validHost(u.Host):
		return "bad host"
	case u.Port < 0 || u.Port > 65535:
		return "bad port"
	case !uriText(u.User) || !uriText(u.Password):
		return "bad user part"
	}
	for _, p := range u.UriParams {
		if !uriText(p.K) || !uriText(p.V) {
			return "bad URI parameter"
		}
	}
	for _, p := range u.Headers {
		if !uriText(p.K) || !uriText(p.V) {
			return "bad URI header"
		}
	}
	return ""
}

// validScheme is RFC 3986's ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
func validScheme(s string) bool {
	if s == "" || !(s[0] >= 'a' && s[0] <= 'z' || s[0] >= 'A' && s[0] <= 'Z') {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// uriText rejects what cannot be inside a URI in a header: whitespace,
// controls, and the characters that end a name-addr or quote. (Raw UTF-8
// should be escaped, but it breaks nothing: tolerated, as Kamailio does.)
func uriText(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == 0x7f || c == '<' || c == '>' || c == '"' {
			return false
		}
	}
	return true
}

func nameAddrProblem(display string, u *sip.Uri) string {
	// sipgo keeps the LWS between an addr-spec's host and its parameters
	// ("To: sip:a@b.example.com ;tag=1", RFC 4475 wsinv) in the host.
	u.Host = strings.TrimRight(u.Host, " \t")
	if !quotedBody(display) {
		return "bad display name"
	}
	return uriProblem(u)
}

// quotedBody reports whether s can be written between double quotes as
// sipgo does: every '"' escaped, no trailing lone backslash, no controls.
func quotedBody(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			i++
			if i == len(s) || s[i] == 0 || s[i] == '\r' || s[i] == '\n' {
				return false
			}
		case c == '"':
			return false
		case c < ' ' && c != '\t' || c == 0x7f:
			return false
		}
	}
	return true
}

// validCallID accepts RFC 3261's word ["@" word] leniently: no
// whitespace or controls.
func validCallID(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// cseqMethod is the CSeq method without the LWS sipgo leaves in front of
// it when the number is followed by more than one space.
func cseqMethod(c *sip.CSeqHeader) string {
	if c == nil {
		return ""
	}
	return strings.TrimLeft(string(c.MethodName), " \t")
}

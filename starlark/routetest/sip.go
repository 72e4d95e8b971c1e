package routetest

// SIP text for route tests: normalising hand-written messages and the
// sip.* builders.

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

// NormalizeSIP makes hand-written SIP text parseable: when it uses bare "\n"
// line endings (a Starlark string or a triple-quoted block), common
// indentation and leading blank lines are removed, lines end in CRLF, the
// blank line after the headers is added if missing and Content-Length is set
// to the body's length. Text already in CRLF form is left as written (so a
// test can send a wrong Content-Length on purpose), except that a missing
// final blank line is added.
func NormalizeSIP(raw string) string {
	bare := strings.Count(raw, "\n") != strings.Count(raw, "\r\n")
	if !bare {
		switch {
		case raw == "" || strings.Contains(raw, "\r\n\r\n"):
			return raw
		case strings.HasSuffix(raw, "\r\n"):
			return raw + "\r\n"
		}
		return raw + "\r\n\r\n"
	}
	s := strings.ReplaceAll(raw, "\r\n", "\n")
	lines := strings.Split(s, "\n")
	for len(lines) > 0 && strings.TrimSpace(lines[0]) == "" {
		lines = lines[1:]
	}
	// The header block ends at the first blank line.
	end := len(lines)
	for i, l := range lines {
		if strings.TrimSpace(l) == "" {
			end = i
			break
		}
	}
	head := lines[:end]
	var body []string
	if end < len(lines) {
		body = lines[end+1:]
	}
	indent := commonIndent(head)
	for i, l := range head {
		head[i] = strings.TrimRight(strings.TrimPrefix(l, indent), " \t")
	}
	for i, l := range body {
		body[i] = strings.TrimPrefix(l, indent)
	}
	// Drop the closing indentation line of a triple-quoted block.
	for len(body) > 0 && strings.TrimSpace(body[len(body)-1]) == "" {
		body = body[:len(body)-1]
	}
	b := strings.Join(body, "\r\n")
	if len(body) > 0 {
		b += "\r\n"
	}
	head = setContentLength(head, len(b))
	return strings.Join(head, "\r\n") + "\r\n\r\n" + b
}

func commonIndent(lines []string) string {
	indent := ""
	for i, l := range lines {
		n := len(l) - len(strings.TrimLeft(l, " \t"))
		if i == 0 || n < len(indent) {
			indent = l[:n]
		}
	}
	return indent
}

func setContentLength(head []string, n int) []string {
	for i, l := range head {
		name, _, ok := strings.Cut(l, ":")
		if ok && core.CanonicalHeader(name) == "content-length" {
			head[i] = strings.TrimSpace(name) + ": " + strconv.Itoa(n)
			return head
		}
	}
	return append(head, "Content-Length: "+strconv.Itoa(n))
}

// Reason phrases of RFC 3261 §21 for sip.reply without a reason.
var reasonPhrases = map[int]string{
	100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued", 183: "Session Progress",
	200: "OK", 202: "Accepted", 300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
	400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
	407: "Proxy Authentication Required", 408: "Request Timeout", 480: "Temporarily Unavailable",
	481: "Call/Transaction Does Not Exist", 483: "Too Many Hops", 484: "Address Incomplete", 486: "Busy Here",
	487: "Request Terminated", 488: "Not Acceptable Here", 500: "Server Internal Error", 501: "Not Implemented",
	502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out", 600: "Busy Everywhere",
	603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}

// ReasonPhrase is the standard reason for a code ("" if unknown).
func ReasonPhrase(code int) string { return reasonPhrases[code] }

// header is one extra header of a builder, in the order given.
type header struct{ name, value string }

// reqSpec is what the request builders take.
type reqSpec struct {
	method      string
	ruri        string
	src         string
	proto       string
	fromURI     string
	toURI       string
	fromTag     string
	toTag       string
	callID      string
	cseq        int
	branch      string
	maxForwards int
	contact     string
	expires     int // -1: none
	rport       bool
	headers     []header
	body        string
	contentType string
}

func checkLine(what, s string) error { return core.CheckText(what, s) }

func (s *reqSpec) build() (string, error) {
	for _, f := range []struct{ what, v string }{{"method", s.method}, {"ruri", s.ruri}, {"src", s.src}, {"from_uri", s.fromURI},
		{"to_uri", s.toURI}, {"from_tag", s.fromTag}, {"to_tag", s.toTag}, {"call_id", s.callID}, {"branch", s.branch},
		{"contact", s.contact}, {"content_type", s.contentType}} {
		if err := checkLine(f.what, f.v); err != nil {
			return "", err
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s SIP/2.0\r\n", s.method, s.ruri)
	via := fmt.Sprintf("Via: SIP/2.0/%s %s;branch=%s", strings.ToUpper(s.proto), s.src, s.branch)
	if s.rport {
		via += ";rport"
	}
	b.WriteString(via + "\r\n")
	if s.maxForwards >= 0 {
		fmt.Fprintf(&b, "Max-Forwards: %d\r\n", s.maxForwards)
	}
	fmt.Fprintf(&b, "From: <%s>;tag=%s\r\n", s.fromURI, s.fromTag)
	if s.toTag != "" {
		fmt.Fprintf(&b, "To: <%s>;tag=%s\r\n", s.toURI, s.toTag)
	} else {
		fmt.Fprintf(&b, "To: <%s>\r\n", s.toURI)
	}
	fmt.Fprintf(&b, "Call-ID: %s\r\n", s.callID)
	fmt.Fprintf(&b, "CSeq: %d %s\r\n", s.cseq, s.method)
	if s.contact != "" {
		fmt.Fprintf(&b, "Contact: %s\r\n", s.contact)
	}
	if s.expires >= 0 {
		fmt.Fprintf(&b, "Expires: %d\r\n", s.expires)
	}
	if err := writeHeaders(&b, s.headers); err != nil {
		return "", err
	}
	body := crlf(s.body)
	if body != "" {
		fmt.Fprintf(&b, "Content-Type: %s\r\n", s.contentType)
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	return b.String(), nil
}

func writeHeaders(b *strings.Builder, hs []header) error {
	for _, h := range hs {
		if err := checkLine("header name", h.name); err != nil {
			return err
		}
		if err := checkLine("header "+h.name, h.value); err != nil {
			return err
		}
		if h.name == "" || strings.ContainsAny(h.name, ": \t") {
			return fmt.Errorf("bad header name %q", h.name)
		}
		fmt.Fprintf(b, "%s: %s\r\n", h.name, h.value)
	}
	return nil
}

// crlf makes a body's line endings CRLF.
func crlf(s string) string {
	if strings.Count(s, "\n") == strings.Count(s, "\r\n") {
		return s
	}
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}

// uriUser is the user part of a SIP URI, or "".
func uriUser(uri string) string {
	var u sip.Uri
	if err := sip.ParseUri(uri, &u); err != nil {
		return ""
	}
	return u.User
}

// headerLines splits a serialised message into its start line, header
// lines and body.
func headerLines(text string) (start string, hdrs []string, body string) {
	head, body, _ := strings.Cut(text, "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	return lines[0], lines[1:], body
}

// replySpec is what sip.reply takes.
type replySpec struct {
	code    int
	reason  string
	toTag   string
	contact string
	headers []header
	body    string
	ctype   string
}

// buildReply answers a request as a UAS would (RFC 3261 §8.2.6): Vias,
// From, To (with a tag above 100), Call-ID and CSeq copied, Record-Route too
// for 1xx/2xx.
func buildReply(req *sip.Request, text string, s replySpec) (string, error) {
	if s.code < 100 || s.code > 699 {
		return "", fmt.Errorf("invalid reply code %d (100-699)", s.code)
	}
	if s.reason == "" {
		s.reason = ReasonPhrase(s.code)
		if s.reason == "" {
			s.reason = "Unknown"
		}
	}
	for _, f := range []struct{ what, v string }{{"reason", s.reason}, {"to_tag", s.toTag}, {"contact", s.contact}, {"content_type", s.ctype}} {
		if err := checkLine(f.what, f.v); err != nil {
			return "", err
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "SIP/2.0 %d %s\r\n", s.code, s.reason)
	_, hdrs, _ := headerLines(text)
	hasTag := req.To() != nil && req.To().Params.Has("tag")
	for _, l := range hdrs {
		name, _, _ := strings.Cut(l, ":")
		switch core.CanonicalHeader(name) {
		case "via", "from", "call-id", "cseq":
			b.WriteString(l + "\r\n")
		case "to":
			if s.code > 100 && !hasTag {
				tag := s.toTag
				if tag == "" {
					tag = defaultToTag(req)
				}
				l += ";tag=" + tag
			}
			b.WriteString(l + "\r\n")
		case "record-route":
			if s.code > 100 && s.code < 300 {
				b.WriteString(l + "\r\n")
			}
		}
	}
	if s.contact != "" {
		fmt.Fprintf(&b, "Contact: %s\r\n", s.contact)
	}
	if err := writeHeaders(&b, s.headers); err != nil {
		return "", err
	}
	body := crlf(s.body)
	if body != "" {
		fmt.Fprintf(&b, "Content-Type: %s\r\n", s.ctype)
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	return b.String(), nil
}

// defaultToTag is stable per request, so a 180 and the 200 that follows it
// carry the same tag.
func defaultToTag(req *sip.Request) string {
	h := fnv.New32a()
	if c := req.CallID(); c != nil {
		h.Write([]byte(*c))
	}
	if v := req.Via(); v != nil {
		b, _ := v.Params.Get("branch")
		h.Write([]byte(b))
	}
	return "uas" + strconv.FormatUint(uint64(h.Sum32()), 36)
}

// buildInDialog builds CANCEL or ACK for an INVITE (RFC 3261 §9.1, §17.1.1.3):
// same R-URI, top Via, From, Call-ID and CSeq number; an ACK takes the
// reply's To (with its tag).
func buildInDialog(method string, inv *sip.Request, invText string, reply sip.Message) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s SIP/2.0\r\n", method, inv.Recipient.String())
	_, hdrs, _ := headerLines(invText)
	viaDone := false
	for _, l := range hdrs {
		name, _, _ := strings.Cut(l, ":")
		switch core.CanonicalHeader(name) {
		case "via":
			if !viaDone {
				b.WriteString(topViaOnly(l) + "\r\n")
				viaDone = true
			}
		case "from", "call-id", "max-forwards", "route":
			b.WriteString(l + "\r\n")
		case "to":
			if reply != nil {
				if to := core.FirstHeader(reply, "To"); to != nil {
					b.WriteString("To: " + to.Value() + "\r\n")
					continue
				}
			}
			b.WriteString(l + "\r\n")
		}
	}
	cs := inv.CSeq()
	if cs == nil {
		return "", fmt.Errorf("the INVITE has no CSeq")
	}
	fmt.Fprintf(&b, "CSeq: %d %s\r\nContent-Length: 0\r\n\r\n", cs.SeqNo, method)
	return b.String(), nil
}

// topViaOnly keeps the first value of a Via line that lists several.
func topViaOnly(line string) string {
	name, v, _ := strings.Cut(line, ":")
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	return name + ":" + strings.TrimRight(v, " ")
}

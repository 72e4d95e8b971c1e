package core

import (
	"fmt"
	"strings"

	"github.com/emiago/sipgo/sip"
)

var compactNames = map[string]string{
	"i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
	"c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to",
	"v": "via", "r": "refer-to", "b": "referred-by", "o": "event", "u": "allow-events",
	"a": "accept-contact", "x": "session-expires", "y": "identity", "j": "reject-contact",
	"d": "request-disposition",
}

// CanonicalHeader lower-cases a header name and expands compact forms.
func CanonicalHeader(name string) string {
	n := strings.ToLower(strings.TrimSpace(name))
	if full, ok := compactNames[n]; ok {
		return full
	}
	return n
}

type headerLister interface{ Headers() []sip.Header }

// Headers returns all headers of a message in order.
func Headers(msg sip.Message) []sip.Header {
	if hl, ok := msg.(headerLister); ok {
		return hl.Headers()
	}
	return nil
}

// HeaderIs matches a header name case-insensitively, compact forms included.
func HeaderIs(h sip.Header, canonical string) bool {
	n := h.Name()
	if len(n) == len(canonical) && strings.EqualFold(n, canonical) {
		return true
	}
	return CanonicalHeader(n) == canonical
}

// FindHeaders returns every header with that name.
func FindHeaders(msg sip.Message, name string) []sip.Header {
	c := CanonicalHeader(name)
	var out []sip.Header
	for _, h := range Headers(msg) {
		if HeaderIs(h, c) {
			out = append(out, h)
		}
	}
	return out
}

// FirstHeader returns the first header with that name, or nil.
func FirstHeader(msg sip.Message, name string) sip.Header {
	c := CanonicalHeader(name)
	for _, h := range Headers(msg) {
		if HeaderIs(h, c) {
			return h
		}
	}
	return nil
}

type headerRemover interface{ RemoveHeader(name string) bool }

// RemoveHeaders removes every header with that name (case-insensitive,
// unlike sipgo's RemoveHeader) and returns how many were removed.
func RemoveHeaders(msg sip.Message, name string) int {
	c := CanonicalHeader(name)
	hr, ok := msg.(headerRemover)
	if !ok {
		return 0
	}
	n := 0
	for {
		found := ""
		for _, h := range Headers(msg) {
			if HeaderIs(h, c) {
				found = h.Name()
				break
			}
		}
		if found == "" || !hr.RemoveHeader(found) {
			return n
		}
		n++
	}
}

var headerParser = sip.HeadersParser(sip.DefaultHeadersParser())

// typedHeader reports whether sipgo's parser has a parser for the header
// name (the map is keyed by the ASCII lower-case name, compact forms
// included); a name too long for the stack buffer is assumed typed, which
// only sends it down the general path.
func typedHeader(name string) bool {
	var lb [32]byte
	if len(name) > len(lb) {
		return true
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lb[i] = c
	}
	_, ok := headerParser[string(lb[:len(name)])]
	return ok
}

// ParseHeaderText parses script-supplied header text ("Name: value\r\n",
// possibly several lines) into headers. Known headers become typed so that
// later reads ($fu, Via handling) see them.
func ParseHeaderText(text string) ([]sip.Header, error) {
	if strings.IndexByte(text, 0) >= 0 {
		return nil, fmt.Errorf("header text contains a NUL character")
	}
	body := strings.TrimSuffix(text, "\r\n")
	if body == "" {
		return nil, fmt.Errorf("empty header text")
	}
	var out []sip.Header
	for rest, more := body, true; more; {
		var line string
		line, rest, more = strings.Cut(rest, "\r\n")
		if strings.ContainsAny(line, "\r\n") {
			return nil, fmt.Errorf("header text has a bare CR or LF: %q", text)
		}
		name, value, ok := strings.Cut(line, ":")
		name = strings.TrimSpace(name)
		if !ok || !IsToken(name) {
			return nil, fmt.Errorf("bad header line %q: want \"Name: value\"", line)
		}
		if !typedHeader(name) {
			// What sipgo's ParseHeader makes of a header it has no parser
			// for, without its []byte and string copies.
			out = append(out, sip.NewHeader(name, strings.TrimSpace(value)))
			continue
		}
		var err error
		n := len(out)
		out, err = headerParser.ParseHeader(out, []byte(line))
		if err != nil {
			return nil, fmt.Errorf("bad header line %q: %v", line, err)
		}
		if len(out) == n {
			out = append(out, sip.NewHeader(name, strings.TrimSpace(value)))
		}
	}
	return out, nil
}

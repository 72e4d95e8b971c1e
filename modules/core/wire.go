package core

import (
	"bytes"
	"net"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// WriteMessage serialises msg into b byte for byte as sipgo's StringWrite
// does, without its allocations: sipgo writes through io.StringWriter, so
// every number (ports, CSeq, Content-Length, status code) becomes a new
// string, an R-URI is built in a strings.Builder first, a parameter
// separator is a new string, the body is copied into a string, and every
// host is run through net.ParseIP to see whether it needs brackets. Here
// the common header types are written directly; any other header, and a
// message set to compact headers, goes through sipgo. TestWriteMessage
// checks the two agree on the torture corpus and on edited messages.
func WriteMessage(b *bytes.Buffer, msg sip.Message) {
	var nb [24]byte
	switch m := msg.(type) {
	case *sip.Request:
		if m.CompactHeaders {
			m.StringWrite(b)
			return
		}
		b.WriteString(string(m.Method))
		b.WriteByte(' ')
		writeURI(b, &m.Recipient)
		b.WriteByte(' ')
		b.WriteString(m.SipVersion)
	case *sip.Response:
		if m.CompactHeaders {
			m.StringWrite(b)
			return
		}
		b.WriteString(m.SipVersion)
		b.WriteByte(' ')
		b.Write(strconv.AppendInt(nb[:0], int64(m.StatusCode), 10))
		b.WriteByte(' ')
		b.WriteString(m.Reason)
	default:
		msg.StringWrite(b)
		return
	}
	b.WriteString("\r\n")
	for i, h := range Headers(msg) {
		if i > 0 {
			b.WriteString("\r\n")
		}
		writeHeader(b, h)
	}
	b.WriteString("\r\n\r\n") // sipgo ends the header list with CRLF even when empty
	if body := msg.Body(); body != nil {
		b.Write(body)
	}
}

func writeHeader(b *bytes.Buffer, h sip.Header) {
	var nb [24]byte
	switch h := h.(type) {
	case *sip.ViaHeader:
		b.WriteString("Via: ")
		b.WriteString(h.ProtocolName)
		b.WriteByte('/')
		b.WriteString(h.ProtocolVersion)
		b.WriteByte('/')
		b.WriteString(h.Transport)
		b.WriteByte(' ')
		writeHost(b, h.Host)
		if h.Port > 0 {
			b.WriteByte(':')
			b.Write(strconv.AppendInt(nb[:0], int64(h.Port), 10))
		}
		if len(h.Params) > 0 {
			b.WriteByte(';')
			writeParams(b, h.Params, ';')
		}
	case *sip.FromHeader:
		b.WriteString("From: ")
		writeNameAddr(b, h.DisplayName, &h.Address, h.Params)
	case *sip.ToHeader:
		b.WriteString("To: ")
		writeNameAddr(b, h.DisplayName, &h.Address, h.Params)
	case *sip.ContactHeader:
		b.WriteString("Contact: ")
		if h.Address.Wildcard {
			b.WriteByte('*')
			return
		}
		writeNameAddr(b, h.DisplayName, &h.Address, h.Params)
	case *sip.RouteHeader:
		b.WriteString("Route: ")
		writeNameAddr(b, "", &h.Address, nil)
	case *sip.RecordRouteHeader:
		b.WriteString("Record-Route: ")
		writeNameAddr(b, "", &h.Address, nil)
	case *sip.CallIDHeader:
		b.WriteString("Call-ID: ")
		b.WriteString(string(*h))
	case *sip.CSeqHeader:
		b.WriteString("CSeq: ")
		b.Write(strconv.AppendInt(nb[:0], int64(int(h.SeqNo)), 10))
		b.WriteByte(' ')
		b.WriteString(string(h.MethodName))
	case *sip.MaxForwardsHeader:
		b.WriteString("Max-Forwards: ")
		b.Write(strconv.AppendInt(nb[:0], int64(int(*h)), 10))
	case *sip.ContentLengthHeader:
		b.WriteString("Content-Length: ")
		b.Write(strconv.AppendInt(nb[:0], int64(int(*h)), 10))
	case *sip.ExpiresHeader:
		b.WriteString("Expires: ")
		b.Write(strconv.AppendInt(nb[:0], int64(int(*h)), 10))
	case *sip.ContentTypeHeader:
		b.WriteString("Content-Type: ")
		b.WriteString(string(*h))
	default:
		// sipgo's header list writes Name, ": ", the value; every
		// header's StringWrite does the same.
		h.StringWrite(b)
	}
}

func writeNameAddr(b *bytes.Buffer, display string, u *sip.Uri, params sip.HeaderParams) {
	if display != "" {
		b.WriteByte('"')
		b.WriteString(display)
		b.WriteString("\" ")
	}
	b.WriteByte('<')
	writeURI(b, u)
	b.WriteByte('>')
	if len(params) > 0 {
		b.WriteByte(';')
		writeParams(b, params, ';')
	}
}

// writeURI is sip.Uri.StringWrite.
func writeURI(b *bytes.Buffer, u *sip.Uri) {
	if u.Scheme == "" {
		b.WriteString("sip") // sipgo's default
	} else {
		b.WriteString(u.Scheme)
	}
	b.WriteByte(':')
	if raw := u.Raw(); raw != "" {
		b.WriteString(raw)
		return
	}
	if u.HierarhicalSlashes {
		b.WriteString("//")
	}
	if u.User != "" {
		b.WriteString(u.User)
		if u.Password != "" {
			b.WriteByte(':')
			b.WriteString(u.Password)
		}
		b.WriteByte('@')
	}
	writeHost(b, u.Host)
	if u.Port > 0 {
		var nb [24]byte
		b.WriteByte(':')
		b.Write(strconv.AppendInt(nb[:0], int64(u.Port), 10))
	}
	if len(u.UriParams) > 0 {
		b.WriteByte(';')
		writeParams(b, u.UriParams, ';')
	}
	if len(u.Headers) > 0 {
		b.WriteByte('?')
		writeParams(b, u.Headers, '&')
	}
}

// writeParams is sip.HeaderParams.ToStringWrite (and ToString, which
// writes the same).
func writeParams(b *bytes.Buffer, ps sip.HeaderParams, sep byte) {
	for i, kv := range ps {
		if i > 0 {
			b.WriteByte(sep)
		}
		b.WriteString(kv.K)
		if kv.V == "" {
			continue
		}
		if strings.ContainsAny(kv.V, " \t") {
			b.WriteString("=\"")
			b.WriteString(kv.V)
			b.WriteByte('"')
		} else {
			b.WriteByte('=')
			b.WriteString(kv.V)
		}
	}
}

// writeHost writes a host as sipgo does: an IPv6 address in brackets.
func writeHost(b *bytes.Buffer, host string) {
	if sipgoIsIPv6(host) {
		b.WriteByte('[')
		b.WriteString(host)
		b.WriteByte(']')
		return
	}
	b.WriteString(host)
}

// sipgoIsIPv6 answers as sipgo's isIPV6 does (net.ParseIP, not IPv4): a
// string without a colon is never one, so the usual IPv4 address or name
// is answered without parsing (net.ParseIP allocates). sipgo's early
// return for strings longer than 46 bytes is kept; no IPv6 address is
// that long.
func sipgoIsIPv6(host string) bool {
	if len(host) > '.' || strings.IndexByte(host, ':') < 0 {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.To4() == nil
}

package core

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/moduletest/sippmsg"
)

// wireCheck fails when WriteMessage and sipgo's StringWrite disagree.
func wireCheck(t *testing.T, name string, msg sip.Message) {
	t.Helper()
	var want strings.Builder
	msg.StringWrite(&want)
	var got bytes.Buffer
	WriteMessage(&got, msg)
	if got.String() != want.String() {
		t.Errorf("%s: WriteMessage differs from sipgo\n got: %q\nwant: %q", name, got.String(), want.String())
	}
}

// TestWriteMessage: WriteMessage writes what sipgo writes, on every
// torture message sipgo parses, on the bench messages, on kamd's replies
// and on messages edited the ways modules edit them.
func TestWriteMessage(t *testing.T) {
	dir := os.Getenv("KAMGO_SHARED")
	if dir == "" {
		dir = "../../../shared"
	}
	files, _ := filepath.Glob(filepath.Join(dir, "torture", "corpus", "*.sip"))
	if len(files) == 0 && os.Getenv("CI") == "true" {
		t.Fatalf("no torture corpus under %s (set KAMGO_SHARED)", dir)
	}
	parsed := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := sip.NewParser().ParseSIP(data)
		if err != nil || msg == nil {
			continue
		}
		parsed++
		wireCheck(t, filepath.Base(f), msg)
		if req, ok := msg.(*sip.Request); ok && req.Via() != nil && req.CSeq() != nil {
			wireCheck(t, filepath.Base(f)+" reply", BuildReply(req, 200, "OK", nil))
		}
	}
	if len(files) > 0 && parsed < 30 {
		t.Fatalf("only %d of %d torture messages parsed", parsed, len(files))
	}

	for _, raw := range []string{sippmsg.Register, sippmsg.Invite, sippmsg.Reply200} {
		msg, err := sip.NewParser().ParseSIP([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		wireCheck(t, "bench "+raw[:8], msg)
	}

	edit := func(name string, f func(req *sip.Request)) {
		req, err := sip.NewParser().ParseSIP([]byte(sippmsg.Invite))
		if err != nil {
			t.Fatal(err)
		}
		f(req.(*sip.Request))
		wireCheck(t, name, req)
	}
	edit("our Via on top", func(r *sip.Request) {
		r.PrependHeader(OurVia(Socket{Proto: "udp", IP: "127.0.0.1", Port: 5060}, "z9hG4bKsl1"))
	})
	edit("IPv6 Via and R-URI", func(r *sip.Request) {
		r.PrependHeader(OurVia(Socket{Proto: "tcp", IP: "::1", Port: 5060}, "z9hG4bKsl1"))
		r.Recipient.Host = "2001:db8::1"
		r.Recipient.Port = 5070
	})
	edit("bracketed and mapped hosts", func(r *sip.Request) {
		r.Recipient.Host = "[2001:db8::1]"
		r.Via().Host = "::ffff:127.0.0.1"
	})
	edit("long host", func(r *sip.Request) {
		r.Recipient.Host = strings.Repeat("a:", 30)
	})
	edit("R-URI with user, password, params and headers", func(r *sip.Request) {
		var u sip.Uri
		if err := sip.ParseUri("sips:bob:secret@example.com:5061;transport=tcp;lr?subject=hi&priority=urgent", &u); err != nil {
			t.Fatal(err)
		}
		u.UriParams.Add("x", "a b")
		u.Headers.Add("h", "")
		r.Recipient = u
	})
	edit("tel URI", func(r *sip.Request) {
		var u sip.Uri
		if err := sip.ParseUri("tel:+1-201-555-0123", &u); err != nil {
			t.Fatal(err)
		}
		r.Recipient = u
	})
	edit("no scheme", func(r *sip.Request) { r.Recipient.Scheme = "" })
	edit("params with blanks and empty values", func(r *sip.Request) {
		_ = SetParam(&r.From().Params, "p", "x")
		r.From().Params.Add("q", "")
		r.From().Params.Add("r", "a\tb")
		r.From().DisplayName = "Alice Smith"
		r.To().Params.Add("tag", "t1")
	})
	edit("wildcard Contact, Route, Record-Route, Expires", func(r *sip.Request) {
		c := r.Contact()
		c.Address.Wildcard = true
		rr, _ := ParseHeaderText("Record-Route: <sip:p1.example.com;lr>\r\nRoute: <sip:p2.example.com:5080;lr;transport=tcp>\r\nExpires: 60\r\nContact: \"B\" <sip:b@h>;q=0.5\r\n")
		for _, h := range rr {
			r.AppendHeader(h)
		}
	})
	edit("Refer-To and Referred-By", func(r *sip.Request) {
		hs, err := ParseHeaderText("Refer-To: <sip:c@example.com?Replaces=abc>\r\nReferred-By: \"A\" <sip:a@example.com>;cid=1\r\n")
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hs {
			r.AppendHeader(h)
		}
	})
	edit("no body", func(r *sip.Request) { r.SetBody(nil) })
	edit("no headers", func(r *sip.Request) {
		for _, h := range append([]sip.Header(nil), Headers(r)...) {
			r.RemoveHeader(h.Name())
		}
	})
	edit("compact headers", func(r *sip.Request) { r.CompactHeaders = true })

	req, _ := sip.NewParser().ParseSIP([]byte(sippmsg.Register))
	res := BuildReply(req.(*sip.Request), 486, "Busy Here", []sip.Header{sip.NewHeader("Retry-After", "5")})
	wireCheck(t, "reply with extra header", res)
	res.CompactHeaders = true
	wireCheck(t, "compact reply", res)
}

func TestSipgoIsIPv6(t *testing.T) {
	for _, h := range []string{"127.0.0.1", "::1", "2001:db8::1", "::ffff:1.2.3.4", "[::1]", "fe80::1%eth0", "example.com", "", "a:b",
		"0000:0000:0000:0000:0000:ffff:255.255.255.255", strings.Repeat("1:", 24)} {
		ip := net.ParseIP(h)
		want := ip != nil && ip.To4() == nil && len(h) <= 46
		if got := sipgoIsIPv6(h); got != want {
			t.Errorf("sipgoIsIPv6(%q) = %v, want %v", h, got, want)
		}
	}
}

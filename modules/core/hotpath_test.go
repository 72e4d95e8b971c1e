package core

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// The allocation-free shortcuts on the hot path must give what the
// general code gives.

func TestParseHeaderTextMatchesSipgo(t *testing.T) {
	lines := []string{
		"X-KEMI: I came from KEMI at 127.0.0.1",
		"x-kemi:no space",
		"X-Long-Header-Name-Beyond-Thirty-Two-Bytes: v",
		"Subject:   padded   ",
		"s: compact subject",
		"Route: <sip:a.example;lr>",
		"ROUTE: <sip:a.example;lr>",
		"Contact: <sip:u@h:5070>;expires=60",
		"m: <sip:u@h>",
		"Max-Forwards: 10",
		"MAX-FORWARDS: 10",
		"Max-forwards: 10",
		"CSEQ: 1 INVITE",
		"Call-ID: abc",
		"i: abc",
		"Via: SIP/2.0/UDP h;branch=z9hG4bKx",
		"Content-Length: 0",
		"Expires: 60",
		"Record-Route: <sip:b;lr>",
	}
	for _, line := range lines {
		t.Run(line, func(t *testing.T) {
			got, err := ParseHeaderText(line + "\r\n")
			if err != nil {
				t.Fatal(err)
			}
			want, err := headerParser.ParseHeader(nil, []byte(line))
			if err != nil {
				t.Fatal(err)
			}
			if len(want) == 0 { // the fallback ParseHeaderText adds
				name, value, _ := strings.Cut(line, ":")
				want = append(want, sip.NewHeader(strings.TrimSpace(name), strings.TrimSpace(value)))
			}
			if len(got) != len(want) {
				t.Fatalf("%d headers, sipgo %d", len(got), len(want))
			}
			for i := range got {
				g := fmt.Sprintf("%T %s|%s", got[i], got[i].Name(), got[i].Value())
				w := fmt.Sprintf("%T %s|%s", want[i], want[i].Name(), want[i].Value())
				if g != w {
					t.Errorf("got %s, sipgo gives %s", g, w)
				}
			}
		})
	}
}

func TestProtoCase(t *testing.T) {
	for _, s := range []string{"udp", "UDP", "Udp", "tcp", "TCP", "tls", "TLS", "ws", "WS", "wss", "WSS", "sctp", "SCTP", "x-foo", ""} {
		if got, want := lowerProto(s), strings.ToLower(s); got != want {
			t.Errorf("lowerProto(%q) = %q, want %q", s, got, want)
		}
		if got, want := upperProto(s), strings.ToUpper(s); got != want {
			t.Errorf("upperProto(%q) = %q, want %q", s, got, want)
		}
	}
}

func TestNormHostMatchesNetIP(t *testing.T) {
	for _, h := range []string{"127.0.0.1", "10.0.0.255", "[127.0.0.1]", "1.2.3.4", "01.2.3.4", "1.2.3", "256.1.1.1",
		"::1", "[::1]", "::ffff:1.2.3.4", "[::FFFF:7F00:1]", "FE80::1", "fe80::1%eth0", "Example.COM", "host", ""} {
		want := strings.ToLower(strings.Trim(h, "[]"))
		if ip := net.ParseIP(want); ip != nil {
			want = ip.String()
		}
		if got := normHost(h); got != want {
			t.Errorf("normHost(%q) = %q, want %q", h, got, want)
		}
	}
}

// buildReplyRef is BuildReply as it was before replyBox: sip.HeaderClone
// of each header. TestBuildReplyMatchesClone holds the two together.
func buildReplyRef(req *sip.Request, code int, reason string, extra []sip.Header) *sip.Response {
	res := sip.NewResponse(code, reason)
	for _, h := range Headers(req) {
		if isVia(h) {
			res.AppendHeader(sip.HeaderClone(h))
		}
	}
	if h := req.From(); h != nil {
		res.AppendHeader(sip.HeaderClone(h))
	}
	if h := req.To(); h != nil {
		to := sip.HeaderClone(h).(*sip.ToHeader)
		if code > 100 && !to.Params.Has("tag") {
			_ = SetParam(&to.Params, "tag", ToTag(req))
		}
		res.AppendHeader(to)
	}
	if h := req.CallID(); h != nil {
		res.AppendHeader(sip.HeaderClone(h))
	}
	if h := req.CSeq(); h != nil {
		res.AppendHeader(sip.HeaderClone(h))
	}
	if code == 100 {
		for _, h := range req.GetHeaders("Timestamp") {
			res.AppendHeader(sip.HeaderClone(h))
		}
	}
	for _, h := range extra {
		res.AppendHeader(h)
	}
	if sh := ServerHeader(); sh != "" {
		res.AppendHeader(sip.NewHeader("Server", sh))
	}
	cl := sip.ContentLengthHeader(0)
	res.SetBody(nil)
	if res.ContentLength() == nil {
		res.AppendHeader(&cl)
	}
	return res
}

// TestBuildReplyMatchesClone: BuildReply's one-allocation copies give the
// reply sipgo's clones gave, on the torture requests and edited ones, and
// stay independent of the request.
func TestBuildReplyMatchesClone(t *testing.T) {
	dir := os.Getenv("KAMGO_SHARED")
	if dir == "" {
		dir = "../../../shared"
	}
	files, _ := filepath.Glob(filepath.Join(dir, "torture", "corpus", "*.sip"))
	var reqs []*sip.Request
	for _, f := range files {
		data, _ := os.ReadFile(f)
		if msg, err := sip.NewParser().ParseSIP(data); err == nil {
			if r, ok := msg.(*sip.Request); ok {
				reqs = append(reqs, r)
			}
		}
	}
	many, _ := sip.NewParser().ParseSIP([]byte("OPTIONS sip:b@example.com SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP h1:-1;branch=z9hG4bK1;a=1;b=2;c=3;d=4;e=5\r\n" +
		"Via: SIP/2.0/TCP h2;branch=z9hG4bK2\r\n" +
		"From: \"A B\" <sip:a@example.com;transport=tcp;x=1?h=v>;tag=f1;p=1;q=2;r=3\r\n" +
		"To: <sip:b@example.com;user=phone>;x=1;y=2;z=3\r\n" +
		"Call-ID: c1\r\nCSeq: 7 OPTIONS\r\nTimestamp: 54\r\nContent-Length: 0\r\n\r\n"))
	reqs = append(reqs, many.(*sip.Request))
	if len(reqs) < 20 && os.Getenv("CI") == "true" {
		t.Fatalf("only %d requests (torture corpus under %s?)", len(reqs), dir)
	}
	for i, req := range reqs {
		for _, code := range []int{100, 180, 200, 486} {
			var extra []sip.Header
			if code == 486 {
				extra = []sip.Header{sip.NewHeader("Retry-After", "5")}
			}
			want := MessageString(buildReplyRef(req, code, "R", extra))
			res := BuildReply(req, code, "R", extra)
			if got := MessageString(res); got != want {
				t.Fatalf("request %d, %d: BuildReply gives\n%q\nclones give\n%q", i, code, got, want)
			}
			before := MessageString(req)
			for _, h := range Headers(res) {
				switch h := h.(type) {
				case *sip.ViaHeader:
					h.Params.Add("received", "192.0.2.1")
					h.Host = "x"
				case *sip.FromHeader:
					h.Params.Add("new", "1")
					h.Address.UriParams.Add("n", "1")
				case *sip.ToHeader:
					h.Params.Add("new", "1")
					h.Address.User = "changed"
				case *sip.CSeqHeader:
					h.SeqNo++
				}
			}
			if res.From() != nil && res.From().Params.Has("received") || res.To() != nil && res.To().Params.Has("received") ||
				res.Via() != nil && res.Via().Params.Has("new") {
				t.Fatalf("request %d, %d: reply headers share params: %q", i, code, MessageString(res))
			}
			if after := MessageString(req); after != before {
				t.Fatalf("request %d, %d: editing the reply changed the request:\n%q\n%q", i, code, before, after)
			}
		}
	}
}

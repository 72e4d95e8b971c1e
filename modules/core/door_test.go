package core_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

// doorMsg is a well-formed OPTIONS the cases below break one way each.
func doorMsg(start, via, from, extra string) string {
	return start + "\r\n" +
		via + "\r\n" +
		from + "\r\n" +
		"To: <sip:bob@example.com>\r\n" +
		"Call-ID: door-1@192.0.2.1\r\n" +
		"CSeq: 1 OPTIONS\r\n" +
		extra +
		"Content-Length: 0\r\n\r\n"
}

const (
	okStart = "OPTIONS sip:bob@example.com SIP/2.0"
	okVia   = "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-door"
	okFrom  = "From: <sip:alice@example.com>;tag=a1"
)

// door runs both stages as the transport does: "" when the message may be
// routed, else the answer's code and reason.
func door(t *testing.T, raw string, datagram bool) (int, string, sip.Message) {
	t.Helper()
	msg, err := sip.NewParser().ParseSIP([]byte(raw))
	if err != nil {
		return -1, err.Error(), nil
	}
	if code, why := core.WireProblem(msg, []byte(raw), datagram); code != 0 {
		return code, why, msg
	}
	if req, ok := msg.(*sip.Request); ok {
		code, why := core.RequestRefusal(req)
		return code, why, msg
	}
	return 0, "", msg
}

// TestDoorRefuses carries the exact bytes of issue 16.
func TestDoorRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		code      int // -1: sipgo does not parse it
		want      string
	}{
		{"well-formed", doorMsg(okStart, okVia, okFrom, ""), 0, ""},
		{"Contact with a bare LF", "REGISTER sip:127.0.0.1 SIP/2.0\r\n" + okVia + "\r\n" + okFrom + "\r\nTo: <sip:alice@example.com>\r\n" +
			"Call-ID: r1\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@192.0.2.1>;x=\nX-Injected: yes\r\nContent-Length: 0\r\n\r\n", 400, "bare"},
		{"bare LF ends a header", doorMsg(okStart, okVia, okFrom, "X-A: 1\nX-Injected: yes\r\n"), 400, "bare"},
		{"NUL in a header value", doorMsg(okStart, okVia, okFrom, "X-A: a\x00b\r\n"), 400, "NUL"},
		{"NUL inside a header name", doorMsg(okStart, okVia, okFrom, "X-N\x00ul: 1\r\n"), 400, "header name"},
		{"space inside a header name", doorMsg(okStart, okVia, okFrom, "X N: 1\r\n"), 400, "header name"},
		{"folded first header line", doorMsg(okStart, "  "+okVia, okFrom, ""), 400, "folded first header line"},
		{"Via: //R m", doorMsg(okStart, "Via: //R m", okFrom, ""), 400, "invalid Via"},
		{"Via: // 0", doorMsg(okStart, "Via: // 0", okFrom, ""), 400, "invalid Via"},
		{"Via: SIP//UDP", doorMsg(okStart, "Via: SIP//UDP 192.0.2.1;branch=z9hG4bK-door", okFrom, ""), 400, "invalid Via"},
		{"Via: SIP/3.0/UDP", doorMsg(okStart, "Via: SIP/3.0/UDP 192.0.2.1;branch=z9hG4bK-door", okFrom, ""), 400, "Via version"},
		{"Via received not an IP address", doorMsg(okStart, okVia+";received= 0", okFrom, ""), 400, "received is not an IP"},
		{"Via received a host name", doorMsg(okStart, okVia+";received=evil.example.com", okFrom, ""), 400, "received is not an IP"},
		{"Via rport not a port", doorMsg(okStart, okVia+";rport=x", okFrom, ""), 400, "bad rport"},
		{"Via quoted parameter (sipgo splits it wrongly)", doorMsg(okStart, okVia+`;x="a b"`, okFrom, ""), 400, "invalid Via"},
		{"Via received IPv6 with and without brackets", doorMsg(okStart, okVia+";received=[2001:db8::9:255]\r\nVia: SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255", okFrom, ""), 0, ""},
		{"a lower Via broken", doorMsg(okStart, okVia+"\r\nVia: SIP/2.0/UDP [];branch=z9hG4bK-2", okFrom, ""), 400, "invalid Via"},
		{"From: :0m0tag= [", doorMsg(okStart, okVia, "From: :0m0tag= [", ""), 400, "invalid From"},
		{"To without host", strings.Replace(doorMsg(okStart, okVia, okFrom, ""), "To: <sip:bob@example.com>", "To: <sip:bob@>", 1), 400, "invalid To"},
		{"display name with a lone quote", doorMsg(okStart, okVia, `From: "a\" <sip:alice@example.com>;tag=a1`, ""), -1, ""},
		{"OPTIONS sip:[]", doorMsg("OPTIONS sip:[] SIP/2.0", okVia, okFrom, ""), 400, "invalid R-URI"},
		{"SIP/3.0", doorMsg("OPTIONS sip:bob@example.com SIP/3.0", okVia, okFrom, ""), 505, "Version Not Supported"},
		{"bare SIP version", doorMsg("OPTIONS sip:bob@example.com SIP", okVia, okFrom, ""), 400, "SIP version"},
		{"Call-ID with a space", strings.Replace(doorMsg(okStart, okVia, okFrom, ""), "door-1@192.0.2.1", "door 1", 1), 400, "Call-ID"},
		{"CSeq method of another request", strings.Replace(doorMsg(okStart, okVia, okFrom, ""), "1 OPTIONS", "1 INFO", 1), 400, "CSeq method mismatch"},
		{"lower-case CSeq method", strings.Replace(doorMsg(okStart, okVia, okFrom, ""), "1 OPTIONS", "1 options", 1), 400, "CSeq method mismatch"},
		{"lower-case method and CSeq: an unknown method", strings.Replace(doorMsg("invite sip:bob@example.com SIP/2.0", okVia, okFrom, ""), "1 OPTIONS", "1 invite", 1), 0, ""},
		{"lower-case method, upper-case CSeq", strings.Replace(doorMsg("invite sip:bob@example.com SIP/2.0", okVia, okFrom, ""), "1 OPTIONS", "1 INVITE", 1), 400, "CSeq method mismatch"},
		{"no blank line (UDP)", strings.TrimSuffix(doorMsg(okStart, okVia, okFrom, ""), "\r\n"), -1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, why, msg := door(t, tc.raw, true)
			if code != tc.code || !strings.Contains(why, tc.want) {
				t.Fatalf("door: %d %q, want %d %q", code, why, tc.code, tc.want)
			}
			if code == 0 && strings.HasPrefix(tc.raw, "invite") {
				req := msg.(*sip.Request)
				if req.Method != "invite" || req.IsInvite() {
					t.Errorf("method %q: the method must stay as written", req.Method)
				}
				if out := req.String(); !strings.HasPrefix(out, "invite sip:") || !strings.Contains(out, "CSeq: 1 invite\r\n") {
					t.Errorf("forwarded as:\n%s", out)
				}
			}
		})
	}
}

// TestWireProblemDatagramEnd: the header section of a datagram must end
// with an empty line, whatever sipgo makes of it.
func TestWireProblemDatagramEnd(t *testing.T) {
	full := doorMsg(okStart, okVia, okFrom, "")
	msg, err := sip.NewParser().ParseSIP([]byte(full))
	if err != nil {
		t.Fatal(err)
	}
	for _, cut := range []string{strings.TrimSuffix(full, "\r\n"), strings.TrimSuffix(full, "\r\n\r\n"), full[:len(full)-1]} {
		if code, why := core.WireProblem(msg, []byte(cut), true); code != 400 {
			t.Errorf("datagram ending %q: %d %q, want 400", cut[len(cut)-8:], code, why)
		}
	}
	// On a stream the parser framed the message: the same bytes pass.
	if code, why := core.WireProblem(msg, []byte("\r\n\r\n"+full), false); code != 0 {
		t.Errorf("stream message after keepalive CRLFs: %d %q", code, why)
	}
}

// TestDoorIPv6 checks that every IPv6 reference keeps its brackets when the
// message is forwarded: sipgo drops them from a Via's sent-by and writes
// v4-mapped and zoned addresses back bare.
func TestDoorIPv6(t *testing.T) {
	for _, host := range []string{"[::ffff:192.0.2.10]", "[fe80::1%lo]", "[2001:db8::9:1]"} {
		raw := doorMsg("OPTIONS sip:bob@"+host+":5070 SIP/2.0",
			"Via: SIP/2.0/UDP "+host+":19823;branch=z9hG4bK-v6;received="+host,
			"From: <sip:alice@"+host+">;tag=a1",
			"Contact: <sip:alice@"+host+":5062>\r\nRecord-Route: <sip:"+host+";lr>\r\n")
		code, why, msg := door(t, raw, true)
		if code != 0 {
			t.Fatalf("%s: refused %d %q", host, code, why)
		}
		out := msg.String()
		for _, want := range []string{
			"OPTIONS sip:bob@" + host + ":5070 SIP/2.0",
			"Via: SIP/2.0/UDP " + host + ":19823;branch=z9hG4bK-v6;received=" + host,
			"From: <sip:alice@" + host + ">",
			"Contact: <sip:alice@" + host + ":5062>",
			"Record-Route: <sip:" + host + ";lr>",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: forwarded without %q:\n%s", host, want, out)
			}
		}
		// The reply target is the bare address.
		if tg := core.ViaTarget(msg.(*sip.Request).Via()); core.BareHost(tg.Host) != strings.Trim(host, "[]") || tg.Port != 19823 {
			t.Errorf("%s: reply target %+v", host, tg)
		}
	}
	// $rd = an IPv6 address: the R-URI keeps it in brackets.
	for _, ip := range []string{"::ffff:192.0.2.10", "fe80::1%lo", "2001:db8::1", "[2001:db8::2]"} {
		m := request(t, invite)
		if err := m.SetRURIHost(ip); err != nil {
			t.Fatal(err)
		}
		if got, want := m.Req.Recipient.String(), "sip:bob@"+core.HostRef(ip)+":5070;transport=tcp"; got != want || !strings.Contains(want, "[") {
			t.Errorf("$rd = %s: R-URI %s, want %s", ip, got, want)
		}
	}
	// Our own Via and Record-Route for an IPv6 socket.
	for _, ip := range []string{"::1", "::ffff:192.0.2.10", "fe80::1%lo"} {
		v := core.OurVia(core.Socket{Proto: "udp", IP: ip, Port: 5060}, "z9hG4bK1")
		if got := v.Value(); got != "SIP/2.0/UDP ["+ip+"]:5060;branch=z9hG4bK1" {
			t.Errorf("our Via on %s: %s", ip, got)
		}
		// rr builds its Record-Route URI from Socket.Host the same way.
		rr := sip.Uri{Scheme: "sip", Host: core.Socket{Proto: "udp", IP: ip, Port: 5060}.Host(), Port: 5060}
		if got := rr.String(); got != "sip:["+ip+"]:5060" {
			t.Errorf("Record-Route URI on %s: %s", ip, got)
		}
		if got := (core.Target{Proto: "udp", Host: "[" + ip + "]", Port: 5060}).URI(); got != "sip:["+ip+"]:5060" {
			t.Errorf("Target.URI of a bracketed host: %s", got)
		}
	}
}

// TestReplyProblem: replies from outside are checked too before a script
// sees them or kamd relays them.
func TestReplyProblem(t *testing.T) {
	ok := "SIP/2.0 200 OK\r\n" + okVia + "\r\n" + okFrom + "\r\nTo: <sip:bob@example.com>;tag=b\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
	for _, tc := range []struct {
		raw  string
		want string
	}{
		{ok, ""},
		{strings.Replace(ok, okVia, "Via: //R m", 1), "invalid Via"},
		{strings.Replace(ok, okFrom, "From: :0m0tag= [", 1), "invalid From"},
		{strings.Replace(ok, "SIP/2.0 200", "SIP/3.0 200", 1), "not SIP/2.0"},
	} {
		msg, err := sip.NewParser().ParseSIP([]byte(tc.raw))
		if err != nil {
			t.Fatal(err)
		}
		if got := core.ReplyProblem(msg.(*sip.Response)); (got == "") != (tc.want == "") || !strings.Contains(got, tc.want) {
			t.Errorf("ReplyProblem = %q, want %q", got, tc.want)
		}
	}
}

// TestRefusalReplyEchoesOnlyValid: the door's own answers never echo what
// it refused (issue 16: "Via: // 0" and "<sip:0m0tag= [>" in 400s).
func TestRefusalReplyEchoesOnlyValid(t *testing.T) {
	raw := doorMsg(okStart, "Via: // 0", okFrom, "")
	msg, err := sip.NewParser().ParseSIP([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	req := msg.(*sip.Request)
	if core.ViaOK(req.Via()) {
		t.Fatal("Via: // 0 is valid?")
	}
	res, ok := core.RefusalReply(req, 400, "Bad Request")
	if !ok || res.Via() != nil || strings.Contains(res.String(), "//") {
		t.Fatalf("ok=%v:\n%v", ok, res)
	}
	if _, err := sip.ParseMessage([]byte(res.String())); err != nil {
		t.Fatalf("the answer does not re-parse: %v", err)
	}
	bad := doorMsg(okStart, okVia, "From: :0m0tag= [", "")
	msg, _ = sip.NewParser().ParseSIP([]byte(bad))
	res, ok = core.RefusalReply(msg.(*sip.Request), 400, "Bad Request")
	if !ok || res.From() != nil || strings.Contains(res.String(), "0m0tag") || res.Via() == nil {
		t.Fatalf("ok=%v, want the Via and no From:\n%v", ok, res)
	}
	// RFC 4475 insuf: no From, To nor Call-ID; the Via's branch and the CSeq
	// still let the client match the 400.
	insuf := "INVITE sip:user@example.com SIP/2.0\r\nCSeq: 193942 INVITE\r\n" + okVia + "\r\nl: 0\r\n\r\n"
	msg, _ = sip.NewParser().ParseSIP([]byte(insuf))
	if code, _ := core.RequestRefusal(msg.(*sip.Request)); code != 400 {
		t.Fatalf("insuf: %d", code)
	}
	if res, ok := core.RefusalReply(msg.(*sip.Request), 400, "Bad Request"); !ok || res.Via() == nil || res.CSeq() == nil {
		t.Fatalf("insuf: ok=%v\n%v", ok, res)
	}
	bad = strings.Replace(doorMsg(okStart, okVia, okFrom, ""), "CSeq: 1 OPTIONS", "CSeq: 1 OPT IONS", 1)
	msg, _ = sip.NewParser().ParseSIP([]byte(bad))
	if res, ok := core.RefusalReply(msg.(*sip.Request), 400, "Bad Request"); ok {
		t.Fatalf("answered without a valid CSeq:\n%s", res)
	}
}

// TestDoorTortureCorpus: the torture messages kamd answers today (RFC 4475
// and RFC 5118 valid messages among them) all pass the door.
func TestDoorTortureCorpus(t *testing.T) {
	dir := os.Getenv("KAMGO_SHARED")
	if dir == "" {
		dir = "../../../shared"
	}
	files, _ := filepath.Glob(filepath.Join(dir, "torture", "corpus", "*.sip"))
	if len(files) == 0 {
		if os.Getenv("CI") == "true" { // as tests/inCI: CI must run it
			t.Fatalf("no torture corpus under %s (set KAMGO_SHARED)", dir)
		}
		t.Skip("no torture corpus (set KAMGO_SHARED)")
	}
	refused := map[string]bool{ // invalid or semantic ones the door answers itself
		"badvers": true, "insuf": true, "mcl01": true, "mismatch01": true, "mismatch02": true, "multi01": true,
		"intmeth": true, // a NUL (as a quoted-pair) in its To: no NUL ever leaves kamd in a header
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".sip")
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		code, why, msg := door(t, string(data), true)
		if code == -1 {
			continue // sipgo refuses it already
		}
		if refused[name] != (code != 0) {
			t.Errorf("%s: door answers %d %q", name, code, why)
		}
		if res, ok := msg.(*sip.Response); ok {
			if why := core.ReplyProblem(res); why != "" {
				t.Errorf("%s: reply dropped: %s", name, why)
			}
		}
	}
}

// TestDoorKeepsHeaderParams: valid From, To and Contact parameters are
// written back as received. sipgo keeps the LWS around "=" in the name and
// value and quotes every value holding SP or HTAB when it writes it, so
// kamd forwarded `;expires =" 60 "; q =" 0.5"` and `;p=""x y""`.
func TestDoorKeepsHeaderParams(t *testing.T) {
	raw := doorMsg(okStart, okVia, `From: "Al" <sip:alice@example.com>;tag=a1;p="x y"`,
		"Contact: <sip:a@192.0.2.10>;expires = 60 ; q = 0.5\r\n")
	raw = strings.Replace(raw, "To: <sip:bob@example.com>", `To: <sip:bob@example.com>;q = "a b";r="c`+"\t"+`d"`, 1)
	code, why, msg := door(t, raw, true)
	if code != 0 {
		t.Fatalf("refused: %d %s\n%s", code, why, raw)
	}
	out := msg.String()
	for _, want := range []string{
		`From: "Al" <sip:alice@example.com>;tag=a1;p="x y"` + "\r\n",
		`To: <sip:bob@example.com>;q="a b";r="c` + "\t" + `d"` + "\r\n",
		"Contact: <sip:a@192.0.2.10>;expires=60;q=0.5\r\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	// A refusal echoes them as well formed.
	res, ok := core.RefusalReply(msg.(*sip.Request), 400, "Bad Request")
	if !ok || !strings.Contains(res.String(), `;p="x y"`) || !strings.Contains(res.String(), `;q="a b"`) {
		t.Errorf("refusal:\n%v", res)
	}
	// Idempotent, and a value that is not one quoted string is left alone.
	for _, tc := range []struct{ in, want string }{
		{`"x y"`, "x y"},
		{"x y", "x y"},
		{`""x y""`, `""x y""`},
		{`"a" "b"`, `"a" "b"`},
		{`"a\"`, `"a\"`},
		{`"nospace"`, `"nospace"`},
	} {
		p := sip.HeaderParams{{K: " p ", V: tc.in}}
		core.NormalizeParams(p)
		core.NormalizeParams(p)
		if p[0].K != "p" || p[0].V != tc.want {
			t.Errorf("NormalizeParams(%q) = %q=%q, want p=%q", tc.in, p[0].K, p[0].V, tc.want)
		}
	}
}

package core_test

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

type nopSender struct{ out []*core.Outgoing }

func (s *nopSender) Send(o *core.Outgoing) error {
	s.out = append(s.out, &core.Outgoing{Kind: o.Kind, Dst: o.Dst, Msg: o.Msg, ConnID: o.ConnID})
	return nil
}

const invite = "INVITE sip:bob@example.com:5070;transport=tcp SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-abc;rport\r\n" +
	"Max-Forwards: 70\r\n" +
	"From: \"Alice A\" <sip:alice@example.com>;tag=ft1\r\n" +
	"To: <sip:bob@example.com>\r\n" +
	"Call-ID: c1@10.0.0.1\r\n" +
	"CSeq: 7 INVITE\r\n" +
	"User-Agent: phone/1.0\r\n" +
	"X-Foo: one\r\n" +
	"x-foo: two\r\n" +
	"Content-Length: 4\r\n\r\nbody"

func request(t *testing.T, raw string) *core.Msg {
	t.Helper()
	msg, err := sip.NewParser().ParseSIP([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	env := core.NewEnv(&nopSender{})
	env.SetSockets([]core.Socket{{Proto: "udp", IP: "127.0.0.1", Port: 5060}})
	return &core.Msg{Env: env, Req: msg.(*sip.Request), Proto: "udp", SrcIP: "192.0.2.7", SrcPort: 40000,
		Local: env.Sockets()[0]}
}

func TestPVGet(t *testing.T) {
	m := request(t, invite)
	for _, tc := range []struct {
		pv   string
		want core.Val
	}{
		{"$rm", core.Str("INVITE")},
		{"$ru", core.Str("sip:bob@example.com:5070;transport=tcp")},
		{"$rU", core.Str("bob")},
		{"$rd", core.Str("example.com")},
		{"$rp", core.Str("5070")}, // a string, as in Kamailio
		{"$fu", core.Str("sip:alice@example.com")},
		{"$fU", core.Str("alice")},
		{"$fn", core.Str(`"Alice A"`)}, // with quotes, as in Kamailio
		{"$ft", core.Str("ft1")},
		{"$tt", core.Null},
		{"$ci", core.Str("c1@10.0.0.1")},
		{"$cs", core.Str("7")},
		{"$si", core.Str("192.0.2.7")},
		{"$sp", core.Int(40000)},
		{"$Rp", core.Int(5060)},
		{"$pr", core.Str("udp")},
		{"$ua", core.Str("phone/1.0")},
		{"$hdr(x-foo)", core.Str("one")},
		{"$hdrc(X-Foo)", core.Int(2)},
		{"$hdr(X-None)", core.Null},
		{"$rs", core.Null},
		{"$du", core.Null},
		{"$var(unset)", core.Int(0)},
		{"$shv(unset)", core.Int(0)},
		{"$cl", core.Int(4)},
		{"$rb", core.Str("body")},
		{"$T_reply_code", core.Int(0)},
	} {
		pv, err := core.NewEnv(nil).ParsePV(tc.pv)
		if err != nil {
			t.Errorf("%s: %v", tc.pv, err)
			continue
		}
		if got := pv.Get(m); got != tc.want {
			t.Errorf("%s = %#v, want %#v", tc.pv, got, tc.want)
		}
	}
}

func TestPVSet(t *testing.T) {
	for _, tc := range []struct {
		pv, then string
		val      core.Val
		want     core.Val
		err      string
	}{
		{pv: "$rU", val: core.Str("carol"), then: "$ru", want: core.Str("sip:carol@example.com:5070;transport=tcp")},
		{pv: "$rd", val: core.Str("10.1.1.1"), then: "$ru", want: core.Str("sip:bob@10.1.1.1:5070;transport=tcp")},
		{pv: "$rp", val: core.Int(5080), then: "$rp", want: core.Str("5080")},
		{pv: "$rp", val: core.Str("5090"), then: "$rp", want: core.Str("5090")},
		{pv: "$rp", val: core.Str("abc"), err: "not a port"},
		{pv: "$ru", val: core.Str("sip:x@y"), then: "$ru", want: core.Str("sip:x@y")},
		{pv: "$ru", val: core.Str("http://x"), err: "invalid SIP URI"},
		{pv: "$ru", val: core.Str("sip:x@y\r\nX: 1"), err: "CR, LF"},
		{pv: "$du", val: core.Str("sip:10.0.0.2:5060"), then: "$du", want: core.Str("sip:10.0.0.2:5060")},
		{pv: "$du", val: core.Null, then: "$du", want: core.Null},
		{pv: "$var(x)", val: core.Int(5), then: "$var(x)", want: core.Int(5)},
		{pv: "$shv(x)", val: core.Str("s"), then: "$shv(x)", want: core.Str("s")},
		{pv: "$si", val: core.Str("1.2.3.4"), err: "read-only"},
		{pv: "$fu", val: core.Str("sip:a@b"), err: "read-only"},
	} {
		m := request(t, invite)
		pv, err := core.NewEnv(nil).ParsePV(tc.pv)
		if err != nil {
			t.Fatal(err)
		}
		err = pv.Set(m, tc.val)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("set %s=%v: err %v, want %q", tc.pv, tc.val, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("set %s: %v", tc.pv, err)
			continue
		}
		then, _ := core.NewEnv(nil).ParsePV(tc.then)
		if got := then.Get(m); got != tc.want {
			t.Errorf("after %s=%v: %s = %#v, want %#v", tc.pv, tc.val, tc.then, got, tc.want)
		}
	}
}

func TestParsePVErrors(t *testing.T) {
	for _, s := range []string{"ru", "$", "$nosuch", "$hdr", "$hdr()", "$ru(x)", "$hdr(X"} {
		if _, err := core.NewEnv(nil).ParsePV(s); err == nil {
			t.Errorf("ParsePV(%q) accepted", s)
		}
	}
}

func TestParseSocket(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "udp:127.0.0.1:5060", want: "udp:127.0.0.1:5060"},
		{in: "TCP:127.0.0.1:5070", want: "tcp:127.0.0.1:5070"},
		{in: "tls:127.0.0.1", want: "tls:127.0.0.1:5061"},
		{in: "udp:[::1]:5060", want: "udp:[::1]:5060"},
		{in: "sctp:127.0.0.1:5060", err: "unknown protocol"},
		{in: "udp:example.com:5060", err: "not an IP"},
		{in: "udp:127.0.0.1:99999", err: "bad port"},
		{in: "127.0.0.1", err: "proto:addr:port"},
	} {
		s, err := core.ParseSocket(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || s.String() != tc.want {
			t.Errorf("%s: %v %v, want %s", tc.in, s, err, tc.want)
		}
	}
}

func TestParseHeaderText(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		typ  string
		fail bool
	}{
		{in: "X-A: 1\r\n", n: 1},
		{in: "X-A: 1", n: 1},
		{in: "X-A: 1\r\nX-B: 2\r\n", n: 2},
		{in: "Via: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\n", n: 1, typ: "*sip.ViaHeader"},
		{in: "Route: <sip:a;lr>, <sip:b;lr>\r\n", n: 2, typ: "*sip.RouteHeader"},
		{in: "X-A: 1\nInjected: yes\r\n", fail: true},
		{in: "X-A: 1\r\nInjected\r\n", fail: true},
		{in: "no colon\r\n", fail: true},
		{in: "X-A: a\x00b", fail: true},
		{in: "", fail: true},
		{in: "X-A : 1\r\n", n: 1},
		// A header name that is not a token (the door refuses one received).
		{in: "X<y: 1\r\n", fail: true},
		{in: "X-A: 1\r\nX\"B: 2\r\n", fail: true},
	} {
		hs, err := core.ParseHeaderText(tc.in)
		if tc.fail {
			if err == nil {
				t.Errorf("%q accepted", tc.in)
			}
			continue
		}
		if err != nil || len(hs) != tc.n {
			t.Errorf("%q: %d headers, %v", tc.in, len(hs), err)
			continue
		}
		if tc.typ != "" && typeName(hs[0]) != tc.typ {
			t.Errorf("%q: parsed as %s, want %s", tc.in, typeName(hs[0]), tc.typ)
		}
	}
}

func typeName(h sip.Header) string {
	switch h.(type) {
	case *sip.ViaHeader:
		return "*sip.ViaHeader"
	case *sip.RouteHeader:
		return "*sip.RouteHeader"
	}
	return "generic"
}

func TestIsMyself(t *testing.T) {
	env := core.NewEnv(nil)
	env.SetSockets([]core.Socket{{Proto: "udp", IP: "127.0.0.1", Port: 5060}, {Proto: "udp", IP: "::1", Port: 5080, Advertise: "sip.example.com"}})
	env.Aliases = []string{"Proxy.Example.com"}
	for _, tc := range []struct {
		host string
		port int
		want bool
	}{
		{"127.0.0.1", 5060, true},
		{"127.0.0.1", 0, true}, // no port means 5060
		{"127.0.0.1", 5070, false},
		{"[::1]", 5080, true},
		{"0:0:0:0:0:0:0:1", 5080, true},
		{"::1", 0, false},
		{"SIP.example.com", 5080, true},
		{"proxy.example.com", 1234, true}, // aliases match any port
		{"10.0.0.1", 5060, false},
	} {
		if got := env.IsMyself(tc.host, tc.port); got != tc.want {
			t.Errorf("IsMyself(%s, %d) = %v, want %v", tc.host, tc.port, got, tc.want)
		}
	}
	for _, tc := range []struct {
		t    core.Target
		want bool
	}{
		{core.Target{Proto: "udp", Host: "127.0.0.1", Port: 5060}, true},
		{core.Target{Proto: "tcp", Host: "127.0.0.1", Port: 5060}, false}, // no tcp socket there
		{core.Target{Proto: "udp", Host: "127.0.0.1", Port: 5070}, false},
		{core.Target{Proto: "udp", Host: "sip.example.com", Port: 5080}, true},
	} {
		if got := env.IsLoop(tc.t); got != tc.want {
			t.Errorf("IsLoop(%s) = %v, want %v", tc.t, got, tc.want)
		}
	}
}

func TestFixViaAndReplyTarget(t *testing.T) {
	for _, tc := range []struct {
		via  string
		want string // reply destination
	}{
		{"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport", "udp:192.0.2.7:40000"},
		{"SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK1", "udp:192.0.2.7:5062"},
		{"SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK1", "udp:192.0.2.7:5060"},
		// A received= the client wrote itself must not steer our replies.
		{"SIP/2.0/UDP 10.0.0.1:5060;received=203.0.113.9;branch=z9hG4bK1", "udp:192.0.2.7:5060"},
		{"SIP/2.0/UDP 10.0.0.1:5060;received=203.0.113.9;rport;branch=z9hG4bK1", "udp:192.0.2.7:40000"},
	} {
		m := request(t, strings.Replace(invite, "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-abc;rport", tc.via, 1))
		m.FixVia()
		o := m.ReplyOutgoing(core.BuildReply(m.Req, 200, "OK", nil), core.OutReply)
		if got := o.Dst.String(); got != tc.want {
			t.Errorf("Via %s: reply to %s, want %s", tc.via, got, tc.want)
		}
	}
}

func TestBuildReply(t *testing.T) {
	m := request(t, invite)
	res := core.BuildReply(m.Req, 486, "Busy Here", nil)
	text := res.String()
	for _, want := range []string{"SIP/2.0 486 Busy Here\r\n", "Call-ID: c1@10.0.0.1", "CSeq: 7 INVITE", "Content-Length: 0", ";tag=kg"} {
		if !strings.Contains(text, want) {
			t.Errorf("reply lacks %q:\n%s", want, text)
		}
	}
	again := core.BuildReply(m.Req, 486, "Busy Here", nil)
	if a, b := res.To().Value(), again.To().Value(); a != b {
		t.Errorf("retransmissions get different To tags: %s vs %s", a, b)
	}
	if trying := core.BuildReply(m.Req, 100, "Trying", nil); trying.To().Params.Has("tag") {
		t.Errorf("100 Trying has a To tag")
	}
}

func TestSendReplyChecks(t *testing.T) {
	m := request(t, invite)
	if err := m.SendReply(200, "OK\r\nX: injected"); err == nil {
		t.Error("a reason with CRLF was sent")
	}
	if err := m.SendReply(99, "x"); err == nil {
		t.Error("code 99 was sent")
	}
	ack := request(t, strings.NewReplacer("INVITE sip", "ACK sip", "7 INVITE", "7 ACK").Replace(invite))
	if err := ack.SendReply(200, "OK"); err != nil || len(ack.Env.Sender.(*nopSender).out) != 0 {
		t.Errorf("an ACK was answered (err %v)", err)
	}
}

func TestStatelessBranch(t *testing.T) {
	a := request(t, invite)
	b := request(t, invite) // a retransmission
	cancel := request(t, strings.NewReplacer("INVITE sip", "CANCEL sip", "7 INVITE", "7 CANCEL").Replace(invite))
	other := request(t, strings.Replace(invite, "z9hG4bK-abc", "z9hG4bK-xyz", 1))
	ba, bb, bc, bo := core.StatelessBranch(a.Req), core.StatelessBranch(b.Req), core.StatelessBranch(cancel.Req), core.StatelessBranch(other.Req)
	if ba != bb || ba != bc {
		t.Errorf("retransmission/CANCEL map to other branches: %s %s %s", ba, bb, bc)
	}
	if ba == bo || !strings.HasPrefix(ba, "z9hG4bK") {
		t.Errorf("branches %s / %s", ba, bo)
	}
}

func TestRequestProblem(t *testing.T) {
	for _, tc := range []struct {
		edit func(string) string
		want string
	}{
		{func(s string) string { return s }, ""},
		{func(s string) string { return strings.Replace(s, "CSeq: 7 INVITE", "CSeq: 7 BYE", 1) }, "CSeq method mismatch"},
		// Methods are case-sensitive (RFC 3261 7.1): "invite" is not INVITE.
		{func(s string) string { return strings.Replace(s, "CSeq: 7 INVITE", "CSeq: 7 invite", 1) }, "CSeq method mismatch"},
		{func(s string) string { return strings.Replace(s, "To: <sip:bob@example.com>\r\n", "", 1) }, "missing To"},
		{func(s string) string {
			return strings.Replace(s, "Call-ID: c1@10.0.0.1\r\n", "Call-ID: c1@10.0.0.1\r\nCall-ID: c2\r\n", 1)
		}, "duplicate"},
	} {
		m := request(t, tc.edit(invite))
		got := core.RequestProblem(m.Req)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("RequestProblem = %q, want %q", got, tc.want)
		}
	}
}

func TestStats(t *testing.T) {
	s := core.NewStats()
	s.Counter("tm", "created").Add(3)
	s.Counter("sl", "sent_replies").Inc()
	g := s.Counter("tm", "current")
	g.NoReset = true
	g.Set(2)
	if got := s.Get("tm"); len(got) != 2 || got["tm:created"] != 3 {
		t.Errorf("Get(tm) = %v", got)
	}
	if got := s.Get("sent_replies"); got["sl:sent_replies"] != 1 {
		t.Errorf("Get(sent_replies) = %v", got)
	}
	if n := s.Reset("all"); n != 2 {
		t.Errorf("Reset reset %d counters, want 2 (gauges excepted)", n)
	}
	if g.Value() != 2 || s.Counter("tm", "created").Value() != 0 {
		t.Errorf("after reset: current %d created %d", g.Value(), s.Counter("tm", "created").Value())
	}
}

func TestModulePVs(t *testing.T) {
	get := func(_ *core.Msg, arg string) core.Val { return core.Str(arg) }
	env := core.NewEnv(nil)
	m := &core.Msg{Env: env}
	// Before the module is set its PV is unknown and a format prints it as written.
	if got := core.ExpandPV(m, "[$mpv(a)]"); got != "[$mpv(a)]" {
		t.Errorf("before SetModule: %q", got)
	}
	env.SetModule(&core.Module{Name: "m1", PVs: []core.PVDef{{Name: "mpv", HasArg: true, Get: get}}})
	// The cached parse of the same format must not hide the new PV.
	if got := core.ExpandPV(m, "[$mpv(a)]"); got != "[a]" {
		t.Errorf("after SetModule: %q", got)
	}
	if _, err := env.ParsePV("$mpv(x)"); err != nil {
		t.Error(err)
	}
	if _, err := core.NewEnv(nil).ParsePV("$mpv(x)"); err == nil {
		t.Error("another Env knows m1's PV")
	}
	for name, mod := range map[string]*core.Module{
		"same PV from another module": {Name: "m2", PVs: []core.PVDef{{Name: "mpv", HasArg: true, Get: get}}},
		"a core PV":                   {Name: "m3", PVs: []core.PVDef{{Name: "ru", Get: get}}},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			env.SetModule(mod)
		})
	}
}

func TestEmitUndeclaredTopic(t *testing.T) {
	var logs strings.Builder
	env := core.NewEnv(nil)
	env.Log = slog.New(slog.NewTextHandler(&logs, nil))
	var got []string
	env.Publish = func(topic string, _ any) { got = append(got, topic) }
	env.SetModule(&core.Module{Name: "m", Events: []string{"m"}})
	env.Emit("m", nil)
	env.Emit("typo", nil)
	env.Emit("typo", nil)
	if strings.Join(got, ",") != "m,typo,typo" {
		t.Errorf("published %v: every event must still go out", got)
	}
	if n := strings.Count(logs.String(), "declared in no module table"); n != 1 {
		t.Errorf("%d warnings, want 1 (for typo, once):\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "topic=m ") {
		t.Errorf("declared topic logged:\n%s", logs.String())
	}
}

// ParseURI refuses what sipgo parses but would end or split the name-addr
// it is written into (uac's From/To, a Route, $du): the door's R-URI check.
func TestParseURIRefusesUnsafe(t *testing.T) {
	for _, s := range []string{
		"sip:a@b;lr>;tag=1", "sip:a@b>", `sip:a"b@c`, "sip:a@b c",
		`sip:a@b;x="y`, "sip:a@b?X=<y>",
	} {
		if u, err := core.ParseURI(s); err == nil {
			t.Errorf("%q accepted as %q", s, u.String())
		}
	}
	for _, s := range []string{"sip:alice@192.0.2.1:5060;transport=tcp", "sips:[2001:db8::1]", "sip:a%20b@[fe80::1%25lo];lr", "sip:+1555@gw.example.com;user=phone?Subject=x"} {
		if _, err := core.ParseURI(s); err != nil {
			t.Errorf("%q refused: %v", s, err)
		}
	}
}

package sanity_test

import (
	"strings"
	"testing"

	mt "github.com/kamgo/kamgo/modules/moduletest"

	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/sanity"
)

func TestSanityCheck(t *testing.T) {
	r := strings.NewReplacer
	for _, tc := range []struct {
		name      string
		msg, body string
		checks    int
		uri       int
		setup     func(m *core.Msg)
		want      int64
		reply     string // start of the expected reply ("" = none)
		replyHdr  string
	}{
		{name: "ok defaults", msg: mt.Invite, checks: sanity.DefaultChecks, uri: 7, want: 1},
		{name: "ruri version", msg: r("INVITE sip:bob@example.com SIP/2.0", "INVITE sip:bob@example.com SIP/3.0").Replace(mt.Invite),
			checks: 1, want: -1, reply: "SIP/2.0 505 Version Not Supported (R-URI)"},
		{name: "ruri scheme", msg: r("INVITE sip:bob@example.com", "INVITE http://example.com/").Replace(mt.Invite),
			checks: 2, want: -1, reply: "SIP/2.0 416 Unsupported URI Scheme in Request URI"},
		{name: "tel scheme ok", msg: r("INVITE sip:bob@example.com", "INVITE tel:+4930123").Replace(mt.Invite), checks: 2 | 1024, uri: 1, want: 1},
		{name: "missing Call-ID", msg: r("Call-ID: call-1@192.0.2.10\n", "").Replace(mt.Invite),
			checks: 4, want: -1, reply: "SIP/2.0 400 Missing Required Header in Request"},
		{name: "missing header ACK not answered", msg: r("Call-ID: call-1@192.0.2.10\n", "", "INVITE sip", "ACK sip", "1 INVITE", "1 ACK").Replace(mt.Invite),
			checks: 4, want: -1},
		{name: "cseq method", msg: r("1 INVITE", "1 BYE").Replace(mt.Invite),
			checks: 32, want: -1, reply: "SIP/2.0 400 CSeq method does not match request method"},
		{name: "content length", msg: mt.Invite, body: "v=0\r\n", checks: 128,
			setup: func(m *core.Msg) { m.Req.SetBody([]byte("v=0\r\n")); *m.Req.ContentLength() = 99 },
			want:  -1, reply: "SIP/2.0 400 Content-Length mis-match"},
		{name: "content length ok", msg: mt.Invite, body: "v=0\r\n", checks: 128, want: 1},
		{name: "expires illegal", msg: mt.Invite + "\nExpires: soon", checks: 256, want: -1, reply: "SIP/2.0 400 Expires value is illegal"},
		{name: "expires ok", msg: mt.Invite + "\nExpires: 3600", checks: 256, want: 1},
		{name: "proxy require", msg: mt.Invite + "\nProxy-Require: foo, sec-agree", checks: 512,
			setup: nil, want: -1, reply: "SIP/2.0 420 Bad Extension", replyHdr: "Unsupported: foo\r\n"},
		{name: "bad From URI", msg: r("From: \"Alice\" <sip:alice@example.com>", "From: <mailto:alice@example.com>").Replace(mt.Invite),
			checks: 1024, uri: 2, want: -1, reply: "SIP/2.0 400 Bad From URI"},
		{name: "digest malformed", msg: mt.Invite + "\nAuthorization: Digest username=\"a\", realm=\"r\"", checks: 2048,
			want: -1, reply: "SIP/2.0 400 Bad Credentials"},
		{name: "basic fails digest", msg: mt.Invite + "\nAuthorization: Basic YTpi", checks: 2048, want: -1, reply: "SIP/2.0 400"},
		{name: "basic passes authorization", msg: mt.Invite + "\nAuthorization: Basic YTpi", checks: 8192, want: 1},
		{name: "digest ok", msg: mt.Invite + "\nAuthorization: Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"sip:b@c\", response=\"0123\"",
			checks: 2048 | 8192, want: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, rec := mt.NewEnv()
			mod := sanity.New(env)
			mt.SetParam(t, mod, "proxy_require", mt.S("sec-agree"))
			m := mt.NewMsg(t, env, tc.msg, tc.body)
			if tc.setup != nil {
				tc.setup(m)
			}
			if got := mt.MustInt(t, mod, m, "sanity_check", mt.I(tc.checks), mt.I(tc.uri)); got != tc.want {
				t.Fatalf("sanity_check = %d, want %d", got, tc.want)
			}
			out := rec.All()
			if tc.reply == "" {
				if len(out) != 0 {
					t.Fatalf("unexpected reply %q", out[0].Text)
				}
				return
			}
			if len(out) != 1 || !strings.HasPrefix(out[0].Text, tc.reply) {
				t.Fatalf("reply %+v, want %q", out, tc.reply)
			}
			if tc.replyHdr != "" && !strings.Contains(out[0].Text, tc.replyHdr) {
				t.Fatalf("reply lacks %q:\n%s", tc.replyHdr, out[0].Text)
			}
		})
	}
}

func TestSanityDefaultsAndNoreply(t *testing.T) {
	env, rec := mt.NewEnv()
	mod := sanity.New(env)
	bad := strings.Replace(mt.Invite, "1 INVITE", "1 BYE", 1)
	mt.SetParam(t, mod, "default_checks", mt.I(4))
	if got := mt.MustInt(t, mod, mt.NewMsg(t, env, bad, ""), "sanity_check_defaults"); got != 1 {
		t.Fatalf("default_checks=4 should not check the CSeq method, got %d", got)
	}
	mt.SetParam(t, mod, "default_checks", mt.I(sanity.DefaultChecks))
	mt.SetParam(t, mod, "noreply", mt.I(1))
	m := mt.NewMsg(t, env, bad, "")
	if got := mt.MustInt(t, mod, m, "sanity_check_defaults"); got != -1 {
		t.Fatalf("got %d", got)
	}
	if n := len(rec.All()); n != 0 {
		t.Fatalf("noreply: %d replies sent", n)
	}
	if got := mt.MustInt(t, mod, m, "sanity_reply"); got != 1 {
		t.Fatalf("sanity_reply = %d", got)
	}
	if out := rec.All(); len(out) != 1 || !strings.HasPrefix(out[0].Text, "SIP/2.0 400 CSeq method") {
		t.Fatalf("sanity_reply sent %+v", out)
	}
	for _, p := range []string{"default_checks", "uri_checks"} {
		for _, prm := range mod.Params {
			if prm.Name == p && prm.Set(core.Int(-5)) == nil {
				t.Errorf("%s accepted -5", p)
			}
		}
	}
}

func TestScriptSanity(t *testing.T) {
	env, rec := mt.NewEnv()
	m := mt.NewMsg(t, env, strings.Replace(mt.Invite, "Call-ID: call-1@192.0.2.10\n", "", 1), "")
	mt.RunScript(t, env, `
def ksr_request_route(msg):
    if KSR.sanity.sanity_check_defaults() < 0:
        return
    KSR.forward()
`, m)
	out := rec.All()
	if len(out) != 1 || out[0].Kind != core.OutReply || !strings.HasPrefix(out[0].Text, "SIP/2.0 400 Missing Required Header in Request") {
		t.Fatalf("want one 400 reply, got %+v", out)
	}
}

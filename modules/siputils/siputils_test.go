package siputils_test

import (
	"strings"
	"testing"

	mt "github.com/kamgo/kamgo/modules/moduletest"

	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/siputils"
)

const options = `OPTIONS sip:127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-o1
From: <sip:mon@example.com>;tag=o1
To: <sip:127.0.0.1>
Call-ID: opt-1
CSeq: 1 OPTIONS
Max-Forwards: 70`

func TestSiputils(t *testing.T) {
	env, _ := mt.NewEnv()
	mod := siputils.New(env)
	m := mt.NewMsg(t, env, strings.Replace(mt.Invite, "INVITE sip:bob@example.com", "INVITE sip:bob@example.com;user=phone;foo=bar", 1), "")
	dlg := mt.NewMsg(t, env, strings.Replace(mt.Invite, "To: <sip:bob@example.com>", "To: <sip:bob@example.com>;tag=x", 1)+"\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-0", "")
	for _, tc := range []struct {
		m    *core.Msg
		fn   string
		args []core.Val
		want int64
	}{
		{m, "has_totag", nil, -1},
		{dlg, "has_totag", nil, 1},
		{m, "is_request", nil, 1},
		{m, "is_reply", nil, -1},
		{m, "is_first_hop", nil, 1},
		{dlg, "is_first_hop", nil, -1},
		{m, "uri_param", []core.Val{mt.S("user")}, 1},
		{m, "uri_param", []core.Val{mt.S("lr")}, -1},
		{m, "uri_param_value", []core.Val{mt.S("user"), mt.S("phone")}, 1},
		{m, "uri_param_value", []core.Val{mt.S("user"), mt.S("ip")}, -1},
		{m, "is_uri", []core.Val{mt.S("sip:alice@example.com;transport=tcp")}, 1},
		{m, "is_uri", []core.Val{mt.S("tel:+4930123")}, 1},
		{m, "is_uri", []core.Val{mt.S("http://x")}, -1},
		{m, "is_uri", []core.Val{mt.S("alice")}, -1},
		{m, "is_tel_number", []core.Val{mt.S("+4930123")}, 1},
		{m, "is_tel_number", []core.Val{mt.S("49-30")}, -1},
		{m, "is_tel_number", []core.Val{mt.S("")}, -2},
		{m, "is_numeric", []core.Val{mt.S("0123")}, 1},
		{m, "is_numeric", []core.Val{mt.S("+1")}, -1},
		{m, "is_alphanum", []core.Val{mt.S("abC9")}, 1},
		{m, "is_alphanum", []core.Val{mt.S("ab_9")}, -1},
		{m, "cmp_uri", []core.Val{mt.S("sip:bob@EXAMPLE.com;transport=udp"), mt.S("sip:bob@example.com;transport=UDP")}, 1},
		{m, "cmp_uri", []core.Val{mt.S("sip:bob@example.com"), mt.S("sip:bob@example.com:5060")}, -1},
		{m, "cmp_uri", []core.Val{mt.S("sip:bob@example.com;transport=tcp"), mt.S("sip:bob@example.com")}, -1},
		{m, "cmp_uri", []core.Val{mt.S("sip:bob@example.com;foo=1"), mt.S("sip:bob@example.com")}, 1},
		{m, "cmp_uri", []core.Val{mt.S("sip:BOB@example.com"), mt.S("sip:bob@example.com")}, -1},
		{m, "cmp_uri", []core.Val{mt.S("garbage"), mt.S("sip:bob@example.com")}, -2},
		{m, "cmp_aor", []core.Val{mt.S("sip:bob@example.com"), mt.S("sips:bob@EXAMPLE.com:5060;transport=tcp")}, -1},
		{m, "cmp_aor", []core.Val{mt.S("sip:bob@example.com"), mt.S("sip:bob@EXAMPLE.com:5060;transport=tcp")}, 1},
	} {
		if got := mt.MustInt(t, mod, tc.m, tc.fn, tc.args...); got != tc.want {
			t.Errorf("%s%v = %d, want %d", tc.fn, tc.args, got, tc.want)
		}
	}
}

func TestURIParamEdits(t *testing.T) {
	env, _ := mt.NewEnv()
	mod := siputils.New(env)
	m := mt.NewMsg(t, env, strings.Replace(mt.Invite, "INVITE sip:bob@example.com", "INVITE sip:bob@example.com;foo=bar", 1), "")
	if got := mt.MustInt(t, mod, m, "add_uri_param", mt.S("nat=yes")); got != 1 {
		t.Fatal(got)
	}
	if u := m.Req.Recipient.String(); u != "sip:bob@example.com;foo=bar;nat=yes" {
		t.Fatalf("R-URI %q", u)
	}
	if got := mt.MustInt(t, mod, m, "uri_param_rm", mt.S("foo")); got != 1 {
		t.Fatal(got)
	}
	if got := mt.MustInt(t, mod, m, "uri_param_rm", mt.S("foo")); got != -1 {
		t.Fatal(got)
	}
	if u := m.Req.Recipient.String(); u != "sip:bob@example.com;nat=yes" {
		t.Fatalf("R-URI %q", u)
	}
	for _, bad := range []string{"a=b\r\nX: y", "a b", "a=<b>"} {
		if _, err := mt.Call(t, mod, m, "add_uri_param", mt.S(bad)); err == nil {
			t.Errorf("add_uri_param(%q) accepted", bad)
		}
	}
}

func TestOptionsReply(t *testing.T) {
	env, rec := mt.NewEnv()
	mod := siputils.New(env)
	mt.SetParam(t, mod, "options_support", mt.S("path"))
	if got := mt.MustInt(t, mod, mt.NewMsg(t, env, mt.Invite, ""), "options_reply"); got != -1 {
		t.Fatalf("INVITE: %d", got)
	}
	withUser := strings.Replace(options, "OPTIONS sip:127.0.0.1:5060", "OPTIONS sip:bob@127.0.0.1:5060", 1)
	if got := mt.MustInt(t, mod, mt.NewMsg(t, env, withUser, ""), "options_reply"); got != -1 {
		t.Fatalf("with user: %d", got)
	}
	notUs := strings.Replace(options, "OPTIONS sip:127.0.0.1:5060", "OPTIONS sip:198.51.100.1", 1)
	if got := mt.MustInt(t, mod, mt.NewMsg(t, env, notUs, ""), "options_reply"); got != -1 {
		t.Fatalf("not us: %d", got)
	}
	if n := len(rec.All()); n != 0 {
		t.Fatalf("%d replies for refused requests", n)
	}
	if got := mt.MustInt(t, mod, mt.NewMsg(t, env, options, ""), "options_reply"); got != 1 {
		t.Fatalf("options_reply: %d", got)
	}
	out := rec.All()
	if len(out) != 1 || !strings.HasPrefix(out[0].Text, "SIP/2.0 200 OK\r\n") {
		t.Fatalf("got %+v", out)
	}
	for _, h := range []string{"Accept: */*\r\n", "Accept-Language: en\r\n", "Supported: path\r\n", "To: <sip:127.0.0.1>;tag="} {
		if !strings.Contains(out[0].Text, h) {
			t.Errorf("reply lacks %q:\n%s", h, out[0].Text)
		}
	}
}

func TestScriptSiputils(t *testing.T) {
	env, rec := mt.NewEnv()
	m := mt.NewMsg(t, env, options, "")
	mt.RunScript(t, env, `
def ksr_request_route(msg):
    if KSR.is_OPTIONS() and KSR.siputils.has_totag() < 0 and KSR.siputils.options_reply() > 0:
        return
    KSR.sl.sl_send_reply(404, "Not here")
`, m)
	out := rec.All()
	if len(out) != 1 || !strings.HasPrefix(out[0].Text, "SIP/2.0 200 OK") || !strings.Contains(out[0].Text, "Accept: */*") {
		t.Fatalf("want 200 with Accept, got %+v", out)
	}
}

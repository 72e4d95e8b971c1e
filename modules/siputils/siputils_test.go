package siputils_test

import (
	"strings"
	"testing"

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
	env, _ := newEnv()
	mod := siputils.New(env)
	m := newMsg(t, env, strings.Replace(invite, "INVITE sip:bob@example.com", "INVITE sip:bob@example.com;user=phone;foo=bar", 1), "")
	dlg := newMsg(t, env, strings.Replace(invite, "To: <sip:bob@example.com>", "To: <sip:bob@example.com>;tag=x", 1)+"\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-0", "")
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
		{m, "uri_param", []core.Val{S("user")}, 1},
		{m, "uri_param", []core.Val{S("lr")}, -1},
		{m, "uri_param_value", []core.Val{S("user"), S("phone")}, 1},
		{m, "uri_param_value", []core.Val{S("user"), S("ip")}, -1},
		{m, "is_uri", []core.Val{S("sip:alice@example.com;transport=tcp")}, 1},
		{m, "is_uri", []core.Val{S("tel:+4930123")}, 1},
		{m, "is_uri", []core.Val{S("http://x")}, -1},
		{m, "is_uri", []core.Val{S("alice")}, -1},
		{m, "is_tel_number", []core.Val{S("+4930123")}, 1},
		{m, "is_tel_number", []core.Val{S("49-30")}, -1},
		{m, "is_tel_number", []core.Val{S("")}, -2},
		{m, "is_numeric", []core.Val{S("0123")}, 1},
		{m, "is_numeric", []core.Val{S("+1")}, -1},
		{m, "is_alphanum", []core.Val{S("abC9")}, 1},
		{m, "is_alphanum", []core.Val{S("ab_9")}, -1},
		{m, "cmp_uri", []core.Val{S("sip:bob@EXAMPLE.com;transport=udp"), S("sip:bob@example.com;transport=UDP")}, 1},
		{m, "cmp_uri", []core.Val{S("sip:bob@example.com"), S("sip:bob@example.com:5060")}, -1},
		{m, "cmp_uri", []core.Val{S("sip:bob@example.com;transport=tcp"), S("sip:bob@example.com")}, -1},
		{m, "cmp_uri", []core.Val{S("sip:bob@example.com;foo=1"), S("sip:bob@example.com")}, 1},
		{m, "cmp_uri", []core.Val{S("sip:BOB@example.com"), S("sip:bob@example.com")}, -1},
		{m, "cmp_uri", []core.Val{S("garbage"), S("sip:bob@example.com")}, -2},
		{m, "cmp_aor", []core.Val{S("sip:bob@example.com"), S("sips:bob@EXAMPLE.com:5060;transport=tcp")}, -1},
		{m, "cmp_aor", []core.Val{S("sip:bob@example.com"), S("sip:bob@EXAMPLE.com:5060;transport=tcp")}, 1},
	} {
		if got := mustInt(t, mod, tc.m, tc.fn, tc.args...); got != tc.want {
			t.Errorf("%s%v = %d, want %d", tc.fn, tc.args, got, tc.want)
		}
	}
}

func TestURIParamEdits(t *testing.T) {
	env, _ := newEnv()
	mod := siputils.New(env)
	m := newMsg(t, env, strings.Replace(invite, "INVITE sip:bob@example.com", "INVITE sip:bob@example.com;foo=bar", 1), "")
	if got := mustInt(t, mod, m, "add_uri_param", S("nat=yes")); got != 1 {
		t.Fatal(got)
	}
	if u := m.Req.Recipient.String(); u != "sip:bob@example.com;foo=bar;nat=yes" {
		t.Fatalf("R-URI %q", u)
	}
	if got := mustInt(t, mod, m, "uri_param_rm", S("foo")); got != 1 {
		t.Fatal(got)
	}
	if got := mustInt(t, mod, m, "uri_param_rm", S("foo")); got != -1 {
		t.Fatal(got)
	}
	if u := m.Req.Recipient.String(); u != "sip:bob@example.com;nat=yes" {
		t.Fatalf("R-URI %q", u)
	}
	for _, bad := range []string{"a=b\r\nX: y", "a b", "a=<b>"} {
		if _, err := call(t, mod, m, "add_uri_param", S(bad)); err == nil {
			t.Errorf("add_uri_param(%q) accepted", bad)
		}
	}
}

func TestOptionsReply(t *testing.T) {
	env, rec := newEnv()
	mod := siputils.New(env)
	setParam(t, mod, "options_support", S("path"))
	if got := mustInt(t, mod, newMsg(t, env, invite, ""), "options_reply"); got != -1 {
		t.Fatalf("INVITE: %d", got)
	}
	withUser := strings.Replace(options, "OPTIONS sip:127.0.0.1:5060", "OPTIONS sip:bob@127.0.0.1:5060", 1)
	if got := mustInt(t, mod, newMsg(t, env, withUser, ""), "options_reply"); got != -1 {
		t.Fatalf("with user: %d", got)
	}
	notUs := strings.Replace(options, "OPTIONS sip:127.0.0.1:5060", "OPTIONS sip:198.51.100.1", 1)
	if got := mustInt(t, mod, newMsg(t, env, notUs, ""), "options_reply"); got != -1 {
		t.Fatalf("not us: %d", got)
	}
	if n := len(rec.All()); n != 0 {
		t.Fatalf("%d replies for refused requests", n)
	}
	if got := mustInt(t, mod, newMsg(t, env, options, ""), "options_reply"); got != 1 {
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
	env, rec := newEnv()
	m := newMsg(t, env, options, "")
	runScript(t, env, `
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

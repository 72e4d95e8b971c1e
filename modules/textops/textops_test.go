package textops_test

import (
	"strings"
	"testing"

	mt "github.com/kamgo/kamgo/modules/moduletest"

	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/textops"
)

const sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\nc=IN IP4 192.0.2.10\r\nm=audio 4000 RTP/AVP 0\r\n"

func withBody() string { return mt.Invite + "\nContent-Type: application/sdp" }

func TestSearch(t *testing.T) {
	env, _ := mt.NewEnv()
	mod := textops.New(env)
	m := mt.NewMsg(t, env, withBody(), sdp)
	for _, tc := range []struct {
		fn, re string
		want   int64
	}{
		{"search", "^INVITE sip:bob", 1},
		{"search", "^call-id: call-1", 1}, // case-insensitive, line anchors
		{"search", "m=audio 4000", 1},
		{"search", "^X-Nope:", -1},
		{"search_body", "c=IN IP4 192\\.0\\.2\\.10", 1},
		{"search_body", "INVITE", -1},
		{"is_present_hf_re", "^max-fo", 1},
		{"is_present_hf_re", "^X-", -1},
	} {
		if got := mt.MustInt(t, mod, m, tc.fn, mt.S(tc.re)); got != tc.want {
			t.Errorf("%s(%q) = %d, want %d", tc.fn, tc.re, got, tc.want)
		}
	}
	_, err := mt.Call(t, mod, m, "search", mt.S("a(b"))
	if err == nil || !strings.Contains(err.Error(), `"a(b"`) {
		t.Fatalf("invalid regex: want error naming it, got %v", err)
	}
	if _, err := mt.Call(t, mod, m, "subst", mt.S("/a(/b/")); err == nil || !strings.Contains(err.Error(), "a(") {
		t.Fatalf("invalid subst regex: %v", err)
	}
}

func TestEdits(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fn    string
		args  []core.Val
		want  int64
		check func(t *testing.T, m *core.Msg)
	}{
		{"subst header with backref", "subst", []core.Val{mt.S(`/^Subject: ([^\r\n]*)/Subject: [\1]/s`)}, 1, func(t *testing.T, m *core.Msg) {
			if v := core.FirstHeader(m.Req, "Subject").Value(); v != "[hello]" {
				t.Fatalf("Subject = %q", v)
			}
		}},
		{"subst no match", "subst", []core.Val{mt.S("/^X-None: .*$//s")}, -1, nil},
		{"subst global icase body", "subst", []core.Val{mt.S("/192\\.0\\.2\\.10/10.1.1.1/gi")}, 1, func(t *testing.T, m *core.Msg) {
			if strings.Contains(core.MessageString(m.Req), "192.0.2.10") {
				t.Fatal("not all replaced")
			}
			if v := m.Req.Via().Host; v != "10.1.1.1" {
				t.Fatalf("typed Via host = %q, edits must be visible", v)
			}
			checkCL(t, m)
		}},
		{"subst escaped separator", "subst", []core.Val{mt.S(`|Subject: hello|Subject: a\|b|`)}, 1, func(t *testing.T, m *core.Msg) {
			if v := core.FirstHeader(m.Req, "Subject").Value(); v != "a|b" {
				t.Fatalf("Subject = %q", v)
			}
		}},
		{"subst_body", "subst_body", []core.Val{mt.S("/m=audio ([0-9]+)/m=audio 5\\1/")}, 1, func(t *testing.T, m *core.Msg) {
			if !strings.Contains(string(m.Req.Body()), "m=audio 54000 ") {
				t.Fatalf("body %q", m.Req.Body())
			}
			checkCL(t, m)
		}},
		{"subst_uri", "subst_uri", []core.Val{mt.S("/bob@example.com/carol@example.net/")}, 1, func(t *testing.T, m *core.Msg) {
			if u := m.Req.Recipient.String(); u != "sip:carol@example.net" {
				t.Fatalf("R-URI %q", u)
			}
		}},
		{"subst_user", "subst_user", []core.Val{mt.S("/^b(o)b$/r\\1b/")}, 1, func(t *testing.T, m *core.Msg) {
			if u := m.Req.Recipient.User; u != "rob" {
				t.Fatalf("user %q", u)
			}
		}},
		{"replace first", "replace", []core.Val{mt.S("example\\.com"), mt.S("example.org")}, 1, func(t *testing.T, m *core.Msg) {
			s := core.MessageString(m.Req)
			if strings.Count(s, "example.org") != 1 || !strings.HasPrefix(s, "INVITE sip:bob@example.com ") {
				t.Fatalf("replace touched the start line or replaced more than one:\n%s", s)
			}
		}},
		{"replace_all", "replace_all", []core.Val{mt.S("example\\.com"), mt.S("example.org")}, 1, func(t *testing.T, m *core.Msg) {
			if m.Req.From().Address.Host != "example.org" || m.Req.To().Address.Host != "example.org" {
				t.Fatal("From/To not rewritten")
			}
		}},
		{"replace rejects CRLF", "replace", []core.Val{mt.S("hello"), mt.S("x\r\nX-Evil: 1")}, 0, nil},
		{"replace_body_all", "replace_body_all", []core.Val{mt.S("192\\.0\\.2\\.10"), mt.S("203.0.113.7")}, 1, func(t *testing.T, m *core.Msg) {
			if strings.Count(string(m.Req.Body()), "203.0.113.7") != 2 {
				t.Fatalf("body %q", m.Req.Body())
			}
			checkCL(t, m)
		}},
		{"replace_body", "replace_body", []core.Val{mt.S("192\\.0\\.2\\.10"), mt.S("203.0.113.7")}, 1, func(t *testing.T, m *core.Msg) {
			if strings.Count(string(m.Req.Body()), "203.0.113.7") != 1 {
				t.Fatalf("body %q", m.Req.Body())
			}
		}},
		{"search_append", "search_append", []core.Val{mt.S("^Subject: hello"), mt.S(" world")}, 1, func(t *testing.T, m *core.Msg) {
			if v := core.FirstHeader(m.Req, "Subject").Value(); v != "hello world" {
				t.Fatalf("Subject %q", v)
			}
		}},
		{"remove_hf all", "remove_hf", []core.Val{mt.S("x-dup")}, 2, func(t *testing.T, m *core.Msg) {
			if core.FirstHeader(m.Req, "X-Dup") != nil {
				t.Fatal("X-Dup still present")
			}
		}},
		{"remove_hf compact", "remove_hf", []core.Val{mt.S("s")}, 1, func(t *testing.T, m *core.Msg) {
			if core.FirstHeader(m.Req, "Subject") != nil {
				t.Fatal("Subject still present")
			}
		}},
		{"remove_hf none", "remove_hf", []core.Val{mt.S("X-None")}, -1, nil},
		{"remove_hf_re", "remove_hf_re", []core.Val{mt.S("^x-")}, 2, func(t *testing.T, m *core.Msg) {
			if core.FirstHeader(m.Req, "X-Dup") != nil {
				t.Fatal("X-Dup still present")
			}
		}},
		{"append_hf", "append_hf", []core.Val{mt.S("X-New: 1\r\n")}, 1, func(t *testing.T, m *core.Msg) {
			hs := core.Headers(m.Req)
			if hs[len(hs)-1].Name() != "X-New" {
				t.Fatalf("last header %s", hs[len(hs)-1].Name())
			}
		}},
		{"append_hf injection", "append_hf", []core.Val{mt.S("X-New: 1\nX-Evil: 2")}, 0, nil},
		{"set_body", "set_body", []core.Val{mt.S("hello"), mt.S("text/plain")}, 1, func(t *testing.T, m *core.Msg) {
			if string(m.Req.Body()) != "hello" || core.FirstHeader(m.Req, "Content-Type").Value() != "text/plain" {
				t.Fatalf("body %q ct %q", m.Req.Body(), core.FirstHeader(m.Req, "Content-Type").Value())
			}
			if n := len(core.FindHeaders(m.Req, "Content-Type")); n != 1 {
				t.Fatalf("%d Content-Type headers", n)
			}
			checkCL(t, m)
		}},
		{"set_body bad ctype", "set_body", []core.Val{mt.S("x"), mt.S("text/plain\r\nX: 1")}, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, _ := mt.NewEnv()
			mod := textops.New(env)
			m := mt.NewMsg(t, env, withBody()+"\nSubject: hello\nX-Dup: 1\nX-Dup: 2", sdp)
			v, err := mt.Call(t, mod, m, tc.fn, tc.args...)
			if tc.want == 0 {
				if err == nil {
					t.Fatalf("want an error, got %v", v)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v.Int != tc.want {
				t.Fatalf("%s = %d, want %d", tc.fn, v.Int, tc.want)
			}
			if tc.check != nil {
				tc.check(t, m)
			}
			// The message must still serialise and parse.
			if _, err := parse2(core.MessageString(m.Req)); err != nil {
				t.Fatalf("result does not parse: %v", err)
			}
		})
	}
}

func checkCL(t *testing.T, m *core.Msg) {
	t.Helper()
	cl := m.Req.ContentLength()
	if cl == nil || int(*cl) != len(m.Req.Body()) {
		t.Fatalf("Content-Length %v, body %d bytes", cl, len(m.Req.Body()))
	}
	if n := len(core.FindHeaders(m.Req, "Content-Length")); n != 1 {
		t.Fatalf("%d Content-Length headers", n)
	}
}

func TestBodyAndStrings(t *testing.T) {
	env, _ := mt.NewEnv()
	mod := textops.New(env)
	m := mt.NewMsg(t, env, withBody(), sdp)
	empty := mt.NewMsg(t, env, mt.Invite, "")
	multi := mt.NewMsg(t, env, mt.Invite+"\nContent-Type: multipart/mixed;boundary=xx", "--xx\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--xx--\r\n")
	for _, tc := range []struct {
		m    *core.Msg
		fn   string
		args []core.Val
		want int64
	}{
		{m, "has_body", nil, 1},
		{empty, "has_body", nil, -1},
		{m, "has_body_type", []core.Val{mt.S("application/SDP")}, 1},
		{m, "has_body_type", []core.Val{mt.S("text/plain")}, -1},
		{multi, "has_body_type", []core.Val{mt.S("application/sdp")}, 1},
		{empty, "has_body_type", []core.Val{mt.S("application/sdp")}, -1},
		{m, "is_present_hf", []core.Val{mt.S("max-forwards")}, 1},
		{m, "is_present_hf", []core.Val{mt.S("v")}, 1},
		{m, "is_present_hf", []core.Val{mt.S("X-None")}, -1},
		{m, "in_list", []core.Val{mt.S("b"), mt.S("a, b ,c"), mt.S(",")}, 1},
		{m, "in_list", []core.Val{mt.S("d"), mt.S("a,b,c"), mt.S(",")}, -1},
		{m, "cmp_str", []core.Val{mt.S("abc"), mt.S("abc")}, 1},
		{m, "cmp_str", []core.Val{mt.S("abd"), mt.S("abc")}, -1},
		{m, "cmp_str", []core.Val{mt.S("abb"), mt.S("abc")}, -2},
		{m, "cmp_istr", []core.Val{mt.S("ABC"), mt.S("abc")}, 1},
		{m, "starts_with", []core.Val{mt.S("sip:alice"), mt.S("sip:")}, 1},
		{m, "starts_with", []core.Val{mt.S("tel:1"), mt.S("sip:")}, -1},
		{m, "ends_with", []core.Val{mt.S("a.example.com"), mt.S(".com")}, 1},
	} {
		if got := mt.MustInt(t, mod, tc.m, tc.fn, tc.args...); got != tc.want {
			t.Errorf("%s%v = %d, want %d", tc.fn, tc.args, got, tc.want)
		}
	}
	if _, err := mt.Call(t, mod, m, "in_list", mt.S("a"), mt.S("a,b"), mt.S(",,")); err == nil {
		t.Error("in_list accepted a two-character separator")
	}
}

func TestScriptTextops(t *testing.T) {
	env, rec := mt.NewEnv()
	m := mt.NewMsg(t, env, withBody()+"\nX-Secret: 1", sdp)
	mt.RunScript(t, env, `
def ksr_request_route(msg):
    KSR.textops.remove_hf("X-Secret")
    if KSR.textops.is_present_hf("X-Secret") > 0:
        KSR.sl.sl_send_reply(500, "still there")
        return
    KSR.textops.subst_body("/4000/4002/")
    KSR.textops.append_hf("X-Checked: yes\r\n")
    KSR.forward()
`, m)
	out := rec.All()
	if len(out) != 1 || out[0].Kind != core.OutForward {
		t.Fatalf("want one forward, got %+v", out)
	}
	s := out[0].Text
	if strings.Contains(s, "X-Secret") || !strings.Contains(s, "X-Checked: yes\r\n") || !strings.Contains(s, "m=audio 4002 ") ||
		!strings.Contains(s, "Content-Length: "+itoa(len(sdp))+"\r\n") {
		t.Fatalf("forwarded message:\n%s", s)
	}
}

func TestBrokenEditNotApplied(t *testing.T) {
	env, _ := mt.NewEnv()
	mod := textops.New(env)
	m := mt.NewMsg(t, env, withBody(), sdp)
	before := core.MessageString(m.Req)
	if got := mt.MustInt(t, mod, m, "subst", mt.S("/Call-ID: /Call-ID /")); got != -1 {
		t.Fatalf("broken edit returned %d", got)
	}
	if core.MessageString(m.Req) != before {
		t.Fatal("message changed by a rejected edit")
	}
}

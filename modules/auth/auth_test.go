package auth_test

import (
	"github.com/kamgo/kamgo/starlark/routetest"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/kamgo/kamgo/modules/auth"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/moduletest"
)

type fixture struct {
	t     *testing.T
	env   *core.Env
	rec   *moduletest.Recorder
	clock *routetest.FixedClock
	mod   *core.Module
}

func newFixture(t *testing.T, params map[string]core.Val) *fixture {
	t.Helper()
	env, rec := moduletest.NewEnv()
	clock := routetest.NewFixedClock(routetest.RouteTestEpoch)
	env.Clock = clock
	f := &fixture{t: t, env: env, rec: rec, clock: clock, mod: auth.New(env)}
	env.SetModule(f.mod) // its PVs ($au...) come from its table
	for k, v := range params {
		moduletest.SetParam(t, f.mod, k, v)
	}
	t.Cleanup(f.mod.Stop)
	return f
}

func register(extra ...string) string {
	return strings.Join(append([]string{
		"REGISTER sip:example.com SIP/2.0",
		"Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-1",
		"From: <sip:alice@example.com>;tag=1",
		"To: <sip:alice@example.com>",
		"Call-ID: c1@192.0.2.10",
		"CSeq: 1 REGISTER",
		"Max-Forwards: 70",
	}, extra...), "\n")
}

func invite(from string, extra ...string) string {
	return strings.Join(append([]string{
		"INVITE sip:bob@example.com SIP/2.0",
		"Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-2",
		"From: <sip:" + from + "@example.com>;tag=1",
		"To: <sip:bob@example.com>",
		"Call-ID: c2@192.0.2.10",
		"CSeq: 1 INVITE",
		"Max-Forwards: 70",
	}, extra...), "\n")
}

func (f *fixture) call(m *core.Msg, name string, args ...core.Val) int64 {
	f.t.Helper()
	return moduletest.MustInt(f.t, f.mod, m, name, args...)
}

// challenge sends a challenge for the message and returns the parsed
// challenge header of the reply and the reply.
func (f *fixture) challenge(hdrs, fn string, flags int) (*digest.Challenge, *sip.Response) {
	f.t.Helper()
	n := len(f.rec.All())
	m := moduletest.NewMsg(f.t, f.env, hdrs, "")
	if rc := f.call(m, fn, core.Str(""), core.Int(flags)); rc != 1 {
		f.t.Fatalf("%s: %d", fn, rc)
	}
	sent := f.rec.All()
	if len(sent) != n+1 {
		f.t.Fatalf("%s sent %d messages", fn, len(sent)-n)
	}
	res := parseRes(f.t, sent[n].Text)
	for _, name := range []string{"WWW-Authenticate", "Proxy-Authenticate"} {
		if h := res.GetHeader(name); h != nil {
			c, err := digest.ParseChallenge(h.Value())
			if err != nil {
				f.t.Fatalf("challenge %q: %v", h.Value(), err)
			}
			return c, res
		}
	}
	f.t.Fatalf("no challenge in\n%s", sent[n].Text)
	return nil, nil
}

type creds struct {
	user, pass, method, uri string
	nc                      int
	body                    string
}

func answer(t *testing.T, ch *digest.Challenge, c creds) string {
	t.Helper()
	if c.method == "" {
		c.method = "REGISTER"
	}
	if c.uri == "" {
		c.uri = "sip:example.com"
	}
	o := digest.Options{Method: c.method, URI: c.uri, Username: c.user, Password: c.pass, Count: c.nc, Cnonce: "0a4f113b"}
	if c.body != "" {
		o.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(c.body)), nil }
	}
	cr, err := digest.Digest(ch, o)
	if err != nil {
		t.Fatal(err)
	}
	return cr.String()
}

func TestChallengeHeaders(t *testing.T) {
	for _, tc := range []struct {
		name, msg, fn string
		flags         int
		params        map[string]core.Val
		code          int
		hdr, want     string
		notWant       string
	}{
		{"register 401", register(), "auth_challenge", 0, nil, 401, "WWW-Authenticate", `Digest realm="example.com", nonce="`, "qop"},
		{"invite 407 qop", invite("alice"), "auth_challenge", 1, nil, 407, "Proxy-Authenticate", `qop="auth"`, "stale"},
		{"auth-int", register(), "www_challenge", 2, nil, 401, "WWW-Authenticate", `qop="auth-int"`, ""},
		{"stale flag", register(), "www_challenge", 16, nil, 401, "WWW-Authenticate", `, stale=true`, ""},
		{"proxy on register", register(), "proxy_challenge", 0, nil, 407, "Proxy-Authenticate", `realm="example.com"`, ""},
		{"sha-256", register(), "www_challenge", 1, map[string]core.Val{"algorithm": core.Str("SHA-256")}, 401, "WWW-Authenticate", `, algorithm=SHA-256`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.params)
			_, res := f.challenge(tc.msg, tc.fn, tc.flags)
			r := res
			if r.StatusCode != tc.code {
				t.Errorf("code %d, want %d", r.StatusCode, tc.code)
			}
			v := r.GetHeader(tc.hdr).Value()
			if !strings.Contains(v, tc.want) || (tc.notWant != "" && strings.Contains(v, tc.notWant)) {
				t.Errorf("%s: %s\nwant %q, not %q", tc.hdr, v, tc.want, tc.notWant)
			}
		})
	}
}

func TestChallengeRefusesUnsafeRealm(t *testing.T) {
	f := newFixture(t, nil)
	m := moduletest.NewMsg(t, f.env, register(), "")
	if rc := f.call(m, "www_challenge", core.Str(`evil", nonce="x`), core.Int(0)); rc != -2 {
		t.Fatalf("rc %d, want -2", rc)
	}
	sent := f.rec.All()
	if len(sent) != 1 || !strings.HasPrefix(sent[0].Text, "SIP/2.0 500") {
		t.Fatalf("want a 500, got %v", sent)
	}
	m = moduletest.NewMsg(t, f.env, register(), "")
	if rc := f.call(m, "www_challenge", core.Str("a\\b"), core.Int(4)); rc != -2 || len(f.rec.All()) != 1 {
		t.Fatalf("flag 4: rc %d, %d sent; want -2 and no 500", rc, len(f.rec.All())-1)
	}
}

func TestPVAuthenticate(t *testing.T) {
	ha1 := auth.HA1("MD5", "alice", "example.com", "secret")
	type step struct {
		creds  creds
		flags  int    // challenge flags
		hdrs   string // message; default register()
		fn     string // default pv_www_authenticate
		pass   string // default "secret"
		pflags int    // pv flags
		before func(f *fixture)
		tamper func(string) string
		want   int64
	}
	alice := creds{user: "alice", pass: "secret"}
	for _, tc := range []struct {
		name   string
		params map[string]core.Val
		steps  []step
	}{
		{"no qop ok", nil, []step{{creds: alice, want: 1}}},
		{"qop auth ok", nil, []step{{creds: alice, flags: 1, want: 1}}},
		{"wrong password", nil, []step{{creds: creds{user: "alice", pass: "nope"}, flags: 1, want: -2}}},
		{"ha1 as password", nil, []step{{creds: alice, flags: 1, pass: ha1, pflags: 1, want: 1}}},
		{"bad ha1 length", nil, []step{{creds: alice, flags: 1, pass: "abc", pflags: 1, want: -1}}},
		{"tampered nonce", nil, []step{{creds: alice, flags: 1, tamper: func(s string) string {
			i := strings.Index(s, `nonce="`) + 8
			b := []byte(s)
			if b[i] == 'A' {
				b[i] = 'B'
			} else {
				b[i] = 'A'
			}
			return string(b)
		}, want: -1}}},
		{"expired nonce is stale", nil, []step{{creds: alice, flags: 1, before: func(f *fixture) { f.clock.Advance(301 * time.Second) }, want: -4}}},
		{"short nonce_expire", map[string]core.Val{"nonce_expire": core.Int(10)}, []step{{creds: alice, before: func(f *fixture) { f.clock.Advance(11 * time.Second) }, want: -4}}},
		{"sha-256", map[string]core.Val{"algorithm": core.Str("SHA-256")}, []step{{creds: alice, flags: 1, want: 1}}},
		{"sha-256 wrong password", map[string]core.Val{"algorithm": core.Str("SHA-256")}, []step{{creds: creds{user: "alice", pass: "x"}, flags: 1, want: -2}}},
		{"auth-int with body", nil, []step{{creds: creds{user: "alice", pass: "secret", body: "v=0\r\n"}, flags: 2, want: 1}}},
		{"qop offered but dropped", nil, []step{{creds: alice, flags: 1, tamper: func(s string) string {
			return s[:strings.Index(s, ", cnonce=")] // no qop, nc, cnonce: RFC 2069 style
		}, want: -1}}},
		{"proxy auth on invite", nil, []step{{creds: creds{user: "alice", pass: "secret", method: "INVITE", uri: "sip:bob@example.com"}, flags: 1,
			hdrs: invite("alice"), fn: "pv_proxy_authenticate", want: 1}}},
		{"www creds do not answer proxy", nil, []step{{creds: alice, flags: 1, fn: "pv_proxy_authenticate", want: -5}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.params)
			for _, s := range tc.steps {
				hdrs := s.hdrs
				if hdrs == "" {
					hdrs = register()
				}
				ch, _ := f.challenge(hdrs, "auth_challenge", s.flags)
				a := answer(t, ch, s.creds)
				if s.tamper != nil {
					a = s.tamper(a)
				}
				if s.before != nil {
					s.before(f)
				}
				hdrName := "Authorization"
				if strings.HasPrefix(hdrs, "INVITE") {
					hdrName = "Proxy-Authorization"
				}
				body := s.creds.body
				if body != "" {
					hdrs += "\nContent-Type: application/sdp"
				}
				m := moduletest.NewMsg(t, f.env, hdrs+"\n"+hdrName+": "+a, body)
				fn, pass := s.fn, s.pass
				if fn == "" {
					fn = "pv_www_authenticate"
				}
				if pass == "" {
					pass = "secret"
				}
				if rc := f.call(m, fn, core.Str("example.com"), core.Str(pass), core.Int(s.pflags)); rc != s.want {
					t.Fatalf("%s = %d, want %d (credentials %s)", fn, rc, s.want, a)
				}
			}
		})
	}
}

// authMsg builds a REGISTER answering ch with nc.
func (f *fixture) authMsg(ch *digest.Challenge, c creds) *core.Msg {
	return moduletest.NewMsg(f.t, f.env, register("Authorization: "+answer(f.t, ch, c)), "")
}

func TestNonceCountReplay(t *testing.T) {
	f := newFixture(t, nil)
	ch, _ := f.challenge(register(), "www_challenge", 1)
	pv := func(nc int) int64 {
		return f.call(f.authMsg(ch, creds{user: "alice", pass: "secret", nc: nc}), "pv_www_authenticate", core.Str("example.com"), core.Str("secret"), core.Int(0))
	}
	for i, tc := range []struct{ nc, want int }{{1, 1}, {1, -6}, {2, 1}, {2, -6}, {1, -6}, {5, 1}} {
		if got := pv(tc.nc); got != int64(tc.want) {
			t.Fatalf("step %d nc=%d: %d, want %d", i, tc.nc, got, tc.want)
		}
	}
	// A wrong password does not consume the nc.
	bad := f.call(f.authMsg(ch, creds{user: "alice", pass: "x", nc: 9}), "pv_www_authenticate", core.Str("example.com"), core.Str("secret"), core.Int(0))
	if bad != -2 || pv(6) != 1 {
		t.Fatalf("wrong password %d, then nc=6 should pass", bad)
	}
	// After a reused nonce the next challenge says stale=true.
	m := f.authMsg(ch, creds{user: "alice", pass: "secret", nc: 6})
	if rc := f.call(m, "pv_www_authenticate", core.Str("example.com"), core.Str("secret"), core.Int(0)); rc != -6 {
		t.Fatalf("replay: %d", rc)
	}
	f.call(m, "www_challenge", core.Str(""), core.Int(1))
	if last := f.rec.All(); !strings.Contains(last[len(last)-1].Text, "stale=true") {
		t.Errorf("challenge after a replay lacks stale=true:\n%s", last[len(last)-1].Text)
	}
}

func TestOneTimeNonce(t *testing.T) {
	f := newFixture(t, map[string]core.Val{"one_time_nonce": core.Int(1)})
	ch, _ := f.challenge(register(), "www_challenge", 0)
	for i, want := range []int64{1, -6} {
		m := f.authMsg(ch, creds{user: "alice", pass: "secret"})
		if rc := f.call(m, "pv_www_authenticate", core.Str("example.com"), core.Str("secret"), core.Int(0)); rc != want {
			t.Fatalf("use %d: %d, want %d", i+1, rc, want)
		}
	}
}

func TestTrackerIsBounded(t *testing.T) {
	f := newFixture(t, map[string]core.Val{"nc_array_size": core.Int(2)})
	var chs []*digest.Challenge
	for i := 0; i < 3; i++ {
		ch, _ := f.challenge(register(), "www_challenge", 1)
		chs = append(chs, ch)
		f.clock.Advance(time.Second)
	}
	use := func(ch *digest.Challenge, nc int) int64 {
		return f.call(f.authMsg(ch, creds{user: "alice", pass: "secret", nc: nc}), "pv_www_authenticate", core.Str("example.com"), core.Str("secret"), core.Int(0))
	}
	for i, ch := range chs {
		if rc := use(ch, 1); rc != 1 {
			t.Fatalf("nonce %d: %d", i, rc)
		}
	}
	// The first nonce was forgotten to make room: it is stale now, not replayable.
	if rc := use(chs[0], 1); rc != -4 {
		t.Fatalf("evicted nonce replayed: %d, want -4", rc)
	}
	if rc := use(chs[2], 1); rc != -6 {
		t.Fatalf("tracked nonce replayed: %d, want -6", rc)
	}
}

func TestSharedSecretAcrossNodes(t *testing.T) {
	secret := map[string]core.Val{"secret": core.Str("s3cr3t")}
	a, b, c := newFixture(t, secret), newFixture(t, secret), newFixture(t, nil)
	ch, _ := a.challenge(register(), "www_challenge", 1)
	pv := func(f *fixture) int64 {
		return f.call(f.authMsg(ch, creds{user: "alice", pass: "secret", nc: 1}), "pv_www_authenticate", core.Str("example.com"), core.Str("secret"), core.Int(0))
	}
	if rc := pv(b); rc != 1 {
		t.Errorf("node with the same secret: %d, want 1", rc)
	}
	if rc := pv(c); rc != -1 {
		t.Errorf("node with another secret: %d, want -1", rc)
	}
}

func TestAuthCheckIDsAndCredentials(t *testing.T) {
	f := newFixture(t, nil)
	ch, _ := f.challenge(invite("alice"), "auth_challenge", 1)
	ans := answer(t, ch, creds{user: "alice", pass: "secret", method: "INVITE", uri: "sip:bob@example.com"})
	for _, tc := range []struct {
		from   string
		checks int
		want   int64
	}{{"alice", 1, 1}, {"mallory", 1, -8}, {"mallory", 0, 1}} {
		ch, _ := f.challenge(invite("alice"), "auth_challenge", 1)
		ans = answer(t, ch, creds{user: "alice", pass: "secret", method: "INVITE", uri: "sip:bob@example.com"})
		m := moduletest.NewMsg(t, f.env, invite(tc.from, "Proxy-Authorization: "+ans), "")
		if rc := f.call(m, "pv_auth_check", core.Str("example.com"), core.Str("secret"), core.Int(0), core.Int(tc.checks)); rc != tc.want {
			t.Errorf("from %s checks %d: %d, want %d", tc.from, tc.checks, rc, tc.want)
		}
	}
	ch, _ = f.challenge(invite("alice"), "auth_challenge", 1)
	ans = answer(t, ch, creds{user: "alice", pass: "secret", method: "INVITE", uri: "sip:bob@example.com"})
	m := moduletest.NewMsg(t, f.env, invite("alice", "Proxy-Authorization: "+ans), "")
	if rc := f.call(m, "consume_credentials"); rc != -1 {
		t.Errorf("consume before authenticating: %d", rc)
	}
	if rc := f.call(m, "has_credentials", core.Str("example.com")); rc != 1 {
		t.Errorf("has_credentials: %d", rc)
	}
	if rc := f.call(m, "has_credentials", core.Str("other.org")); rc != -1 {
		t.Errorf("has_credentials(other.org): %d", rc)
	}
	for pv, want := range map[string]string{"$au": "alice", "$ar": "example.com", "$aU": "alice", "$ad": "<null>"} {
		p, err := f.env.ParsePV(pv)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Get(m).String(); got != want {
			t.Errorf("%s = %q, want %q", pv, got, want)
		}
	}
	if rc := f.call(m, "pv_proxy_authenticate", core.Str("example.com"), core.Str("secret"), core.Int(0)); rc != 1 {
		t.Fatalf("authenticate: %d", rc)
	}
	if rc := f.call(m, "consume_credentials"); rc != 1 || m.Req.GetHeader("Proxy-Authorization") != nil {
		t.Errorf("consume_credentials: %d, header left: %v", rc, m.Req.GetHeader("Proxy-Authorization"))
	}
}

func TestNoCredentialsAndExemptMethods(t *testing.T) {
	f := newFixture(t, nil)
	for _, tc := range []struct {
		msg  string
		want int64
	}{
		{register(), -5},
		{register("Authorization: Basic YWxpY2U6c2VjcmV0"), -5},
		{register(`Authorization: Digest username="alice", realm="other.org", nonce="x", uri="sip:example.com", response="0"`), -5},
		{register(`Authorization: Digest username="alice", realm="example.com", nonce="x"`), -1},
		{register(`Authorization: Digest username="alice", realm="example.com", nonce="x", uri="sip:example.com", response="00000000000000000000000000000000"`), -1},
		{register(`Authorization: Digest username="alice", realm="example.com", nonce="x`), -1},
		{strings.Replace(strings.Replace(invite("alice"), "INVITE", "ACK", -1), "CSeq: 1 ACK", "CSeq: 1 ACK", 1), 1},
	} {
		m := moduletest.NewMsg(t, f.env, tc.msg, "")
		fn := "pv_www_authenticate"
		if rc := f.call(m, fn, core.Str("example.com"), core.Str("secret"), core.Int(0)); rc != tc.want {
			t.Errorf("%s: %d, want %d\n%s", fn, rc, tc.want, tc.msg)
		}
	}
}

func TestStaleChallengeAfterExpiry(t *testing.T) {
	f := newFixture(t, nil)
	ch, _ := f.challenge(register(), "www_challenge", 1)
	f.clock.Advance(10 * time.Minute)
	m := f.authMsg(ch, creds{user: "alice", pass: "secret"})
	if rc := f.call(m, "pv_www_authenticate", core.Str("example.com"), core.Str("secret"), core.Int(0)); rc != -4 {
		t.Fatalf("expired: %d", rc)
	}
	f.call(m, "www_challenge", core.Str("example.com"), core.Int(1))
	all := f.rec.All()
	res := parseRes(t, all[len(all)-1].Text)
	c, err := digest.ParseChallenge(res.GetHeader("WWW-Authenticate").Value())
	if err != nil || !c.Stale {
		t.Fatalf("want stale=true: %v %v", c, err)
	}
	// The fresh nonce works.
	m = f.authMsg(c, creds{user: "alice", pass: "secret"})
	if rc := f.call(m, "pv_www_authenticate", core.Str("example.com"), core.Str("secret"), core.Int(0)); rc != 1 {
		t.Fatalf("fresh nonce: %d", rc)
	}
}

func parseRes(t *testing.T, text string) *sip.Response {
	t.Helper()
	msg, err := sip.NewParser().ParseSIP([]byte(text))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, text)
	}
	r, ok := msg.(*sip.Response)
	if !ok {
		t.Fatalf("not a response:\n%s", text)
	}
	return r
}

package uac

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

func TestRegisterWireFormatAndGrantedExpiry(t *testing.T) {
	h := newHarness(t, []Row{row("acc_ok")})
	h.clock.Advance(0)
	s := h.one()
	r := s.req
	if got := r.Recipient.String(); got != "sip:127.0.0.1:25070" {
		t.Errorf("R-URI %s", got)
	}
	if s.dst.String() != "udp:127.0.0.1:25070" {
		t.Errorf("dst %s", s.dst)
	}
	if got := hdr(r, "Contact"); got != "<sip:acc_ok@127.0.0.1:5060>" {
		t.Errorf("Contact %q", got)
	}
	if got := hdr(r, "Expires"); got != "120" {
		t.Errorf("Expires %q", got)
	}
	if got := r.From().Address.String(); got != "sip:acc_ok_r@127.0.0.1:25070" {
		t.Errorf("From %s", got)
	}
	if tag, _ := r.From().Params.Get("tag"); tag == "" {
		t.Error("no From tag")
	}
	if r.To().Address.String() != "sip:acc_ok_r@127.0.0.1:25070" {
		t.Errorf("To %s", r.To().Address.String())
	}
	if r.CSeq().SeqNo != 10 {
		t.Errorf("CSeq %d, want 10 as Kamailio", r.CSeq().SeqNo)
	}
	if got := h.info("acc_ok"); got.State != StateRegistering || got.Flags != flagInit|flagOngoing {
		t.Errorf("in flight: state %s flags %d", got.State, got.Flags)
	}
	h.clock.Advance(time.Second)
	h.reply(s, 200, "OK", "Contact: <sip:acc_ok@127.0.0.1:5060>;expires=60", "Expires: 120")
	got := h.info("acc_ok")
	if got.State != StateRegistered || got.Flags != 20 || got.GrantedExpires != 60 || got.LastCode != 200 {
		t.Fatalf("after 200: %+v", got)
	}
	if got.TimerExpires != t0.Unix()+60 {
		t.Errorf("timer_expires %d, want send time + 60", got.TimerExpires)
	}
	if d := got.NextRefresh - t0.Unix(); d < 6 || d > 45 {
		t.Errorf("first refresh %d s after the send, want 10-75%% of 60", d)
	}
	if h.u.Status("acc_ok") != 1 {
		t.Errorf("uac_reg_status %d", h.u.Status("acc_ok"))
	}
	if st := h.states("acc_ok"); !slices.Equal(st, []string{StateRegistering, StateRegistered}) {
		t.Errorf("events %v", st)
	}
	// Nothing until the refresh: no REGISTER on every tick.
	wait := time.Unix(got.NextRefresh, 0).Sub(h.clock.Now())
	h.clock.Advance(wait - time.Second)
	h.none()
	h.clock.Advance(2 * time.Second)
	s2 := h.one()
	if got := h.info("acc_ok"); got.State != StateRegistered {
		t.Errorf("during the refresh: %s, want registered (the binding is still valid)", got.State)
	}
	if h.u.Status("acc_ok") != 1 {
		t.Errorf("uac_reg_status during refresh %d", h.u.Status("acc_ok"))
	}
	h.reply(s2, 200, "OK", "Expires: 90")
	if got := h.info("acc_ok"); got.GrantedExpires != 90 || got.State != StateRegistered {
		t.Errorf("refresh with Expires header: %+v", got)
	}
}

func TestDigestChallenges(t *testing.T) {
	for _, tc := range []struct {
		name, challenge, alg string
		ha1                  bool
	}{
		{"md5", `WWW-Authenticate: Digest realm="fake.test", nonce="abc123", qop="auth", opaque="op42"`, "MD5", false},
		{"sha256", `WWW-Authenticate: Digest realm="fake.test", nonce="n256", qop="auth", algorithm=SHA-256`, "SHA-256", false},
		{"sha512-256", `WWW-Authenticate: Digest realm="fake.test", nonce="n512", qop="auth", algorithm=SHA-512-256`, "SHA-512-256", false},
		{"strongest", "WWW-Authenticate: Digest realm=\"fake.test\", nonce=\"m\", qop=\"auth\", algorithm=MD5\r\nWWW-Authenticate: Digest realm=\"fake.test\", nonce=\"s\", qop=\"auth\", algorithm=SHA-256", "SHA-256", false},
		{"proxy", `Proxy-Authenticate: Digest realm="fake.test", nonce="p1", qop="auth"`, "MD5", false},
		{"ha1", `WWW-Authenticate: Digest realm="fake.test", nonce="h1", qop="auth"`, "MD5", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rw := row("acc")
			ha1 := ""
			if tc.ha1 {
				ha1 = md5hex("acc_a:fake.test:secret")
				rw.AuthPassword, rw.AuthHA1 = "", strings.ToUpper(ha1)
			}
			h := newHarness(t, []Row{rw})
			h.clock.Advance(0)
			s := h.one()
			code := 401
			if tc.name == "proxy" {
				code = 407
			}
			h.reply(s, code, "Unauthorized", tc.challenge)
			if got := h.info("acc"); got.State != StateAuthenticating || got.Flags != flagInit|flagOngoing|flagAuthSent {
				t.Errorf("after challenge: %s flags %d", got.State, got.Flags)
			}
			s2 := h.one()
			if s2.req.CallID().Value() != s.req.CallID().Value() || s2.req.CSeq().SeqNo != 11 {
				t.Errorf("resubmission: Call-ID %s CSeq %d", s2.req.CallID().Value(), s2.req.CSeq().SeqNo)
			}
			name := "Authorization"
			if code == 407 {
				name = "Proxy-Authorization"
			}
			p := checkDigest(t, hdr(s2.req, name), "secret", ha1)
			if p["nc"] != "00000001" || p["cnonce"] == "" || p["uri"] != "sip:127.0.0.1:25070" || p["username"] != "acc_a" {
				t.Errorf("digest params %v", p)
			}
			if want := tc.alg; p["algorithm"] != want && !(want == "MD5" && p["algorithm"] == "") {
				t.Errorf("algorithm %q, want %s", p["algorithm"], want)
			}
			h.reply(s2, 200, "OK", "Contact: <sip:acc@127.0.0.1:5060>;expires=100")
			if got := h.info("acc"); got.State != StateRegistered || got.Failures != 0 {
				t.Errorf("after 200: %+v", got)
			}
			// The refresh reuses the nonce: nc counts on, a fresh cnonce.
			h.clock.Advance(100 * time.Second)
			s3 := h.one()
			p3 := checkDigest(t, hdr(s3.req, name), "secret", ha1)
			if p3["nc"] != "00000002" || p3["cnonce"] == p["cnonce"] {
				t.Errorf("refresh digest nc %s cnonce %s (was %s)", p3["nc"], p3["cnonce"], p["cnonce"])
			}
		})
	}
}

func TestStaleNonceIsNotAFailure(t *testing.T) {
	h := newHarness(t, []Row{row("acc")})
	h.clock.Advance(0)
	h.reply(h.one(), 401, "Unauthorized", `WWW-Authenticate: Digest realm="r", nonce="n1", qop="auth"`)
	h.reply(h.one(), 401, "Unauthorized", `WWW-Authenticate: Digest realm="r", nonce="n2", qop="auth", stale=true`)
	s := h.one()
	p := checkDigest(t, hdr(s.req, "Authorization"), "secret", "")
	if p["nonce"] != "n2" || p["nc"] != "00000001" {
		t.Errorf("after stale: %v", p)
	}
	h.reply(s, 200, "OK", "Expires: 60")
	if got := h.info("acc"); got.State != StateRegistered || got.Failures != 0 {
		t.Errorf("%+v", got)
	}
}

func TestWrongPasswordFailsWithBackoff(t *testing.T) {
	h := newHarness(t, []Row{row("acc")}, "reg_retry_interval=30", "reg_retry_max=100")
	h.clock.Advance(0)
	for i, want := range []int{30, 60, 100, 100} {
		h.reply(h.one(), 401, "Unauthorized", `WWW-Authenticate: Digest realm="r", nonce="n1"`)
		h.reply(h.one(), 401, "Unauthorized", `WWW-Authenticate: Digest realm="r", nonce="n2"`)
		got := h.info("acc")
		if got.State != StateFailed || got.LastCode != 401 || got.Failures != i+1 || got.Flags != flagInit {
			t.Fatalf("failure %d: %+v", i+1, got)
		}
		d := got.NextRefresh - h.clock.Now().Unix()
		if d < int64(want)*9/10-1 || d > int64(want)*11/10+1 {
			t.Errorf("failure %d: retry in %d s, want %d ±10%%", i+1, d, want)
		}
		h.none()
		h.clock.Advance(time.Duration(d+1) * time.Second)
	}
	if len(h.take()) != 1 {
		t.Error("no retry")
	}
}

func TestRealmMismatch(t *testing.T) {
	rw := row("acc")
	rw.Realm = "fake.test"
	h := newHarness(t, []Row{rw})
	h.clock.Advance(0)
	h.reply(h.one(), 401, "Unauthorized", `WWW-Authenticate: Digest realm="other.test", nonce="n1"`)
	got := h.info("acc")
	if got.State != StateFailed || got.LastReason != "realms do not match. requested realm: [other.test]" {
		t.Errorf("%+v", got)
	}
	h.none()
}

func TestFailuresAndRetries(t *testing.T) {
	for _, code := range []int{403, 404, 408, 500, 503, 603} {
		h := newHarness(t, []Row{row("acc")})
		h.clock.Advance(0)
		h.reply(h.one(), code, "Nope")
		got := h.info("acc")
		if got.State != StateFailed || got.LastCode != code || got.Failures != 1 {
			t.Errorf("%d: %+v", code, got)
		}
		if h.u.Status("acc") != -99 {
			t.Errorf("%d: status %d", code, h.u.Status("acc"))
		}
		h.clock.Advance(34 * time.Second)
		if len(h.take()) != 1 {
			t.Errorf("%d: no retry after the backoff", code)
		}
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	h := newHarness(t, []Row{row("acc")})
	h.clock.Advance(0)
	h.reply(h.one(), 503, "Busy", "Retry-After: 300")
	if d := h.info("acc").NextRefresh - h.clock.Now().Unix(); d != 300 {
		t.Errorf("retry in %d s, want Retry-After 300", d)
	}
}

func TestRetryZeroDisablesAsKamailio(t *testing.T) {
	h := newHarness(t, []Row{row("acc")}, "reg_retry_interval=0")
	h.clock.Advance(0)
	h.reply(h.one(), 403, "Forbidden")
	got := h.info("acc")
	if got.Flags != 17 || got.NextRefresh != 0 {
		t.Errorf("%+v", got)
	}
	if h.u.Status("acc") != -3 {
		t.Errorf("status %d", h.u.Status("acc"))
	}
	h.clock.Advance(time.Hour)
	h.none()
}

func TestIntervalTooBrief(t *testing.T) {
	h := newHarness(t, []Row{row("acc")})
	h.clock.Advance(0)
	h.reply(h.one(), 423, "Interval Too Brief", "Min-Expires: 600")
	s := h.one()
	if hdr(s.req, "Expires") != "600" || s.req.CSeq().SeqNo != 11 {
		t.Errorf("after 423: Expires %s CSeq %d", hdr(s.req, "Expires"), s.req.CSeq().SeqNo)
	}
	h.reply(s, 200, "OK", "Expires: 600")
	if got := h.info("acc"); got.Expires != 600 || got.State != StateRegistered {
		t.Errorf("%+v", got)
	}
}

func TestTimeoutThen200(t *testing.T) {
	h := newHarness(t, []Row{row("acc")})
	h.clock.Advance(0)
	h.reply(h.one(), 408, "Request Timeout")
	if got := h.info("acc"); got.State != StateFailed || got.LastCode != 408 {
		t.Errorf("%+v", got)
	}
	h.clock.Advance(40 * time.Second)
	h.reply(h.one(), 200, "OK", "Expires: 60")
	if got := h.info("acc"); got.State != StateRegistered || got.Failures != 0 {
		t.Errorf("%+v", got)
	}
}

func TestRefreshesAreSpread(t *testing.T) {
	var rows []Row
	for i := range 200 {
		rows = append(rows, row("acc"+string(rune('a'+i%26))+strings.Repeat("x", i/26)))
	}
	h := newHarness(t, rows)
	h.clock.Advance(time.Second)
	first := h.take()
	if len(first) != 200 {
		t.Fatalf("%d sent in the first second", len(first))
	}
	for _, s := range first {
		h.reply(s, 200, "OK", "Expires: 600")
	}
	// First refreshes fall in 60-450 s after the send (10-75% of 600),
	// later ones 390-450 s after theirs; count per second.
	perSec := map[int64]int{}
	for range 500 {
		h.clock.Advance(time.Second)
		for _, s := range h.take() {
			perSec[h.clock.Now().Unix()]++
			h.reply(s, 200, "OK", "Expires: 600")
		}
	}
	maxN, total := 0, 0
	for _, n := range perSec {
		maxN = max(maxN, n)
		total += n
	}
	if total < 200 {
		t.Fatalf("%d refreshes, want every one of the 200 refreshed", total)
	}
	if maxN > 6 {
		t.Errorf("a burst of %d refreshes in one second (200 registered in the same second, spread over ~390 s)", maxN)
	}
}

func TestStartIsSpreadAndDelayed(t *testing.T) {
	rd := row("late")
	rd.RegDelay = 30
	var rows []Row
	for i := range 1000 {
		rows = append(rows, row("a"+strconv.Itoa(i)))
	}
	rows = append(rows, rd)
	h := newHarness(t, rows)
	h.clock.Advance(0)
	if n := len(h.take()); n != 1 {
		t.Errorf("%d sent at once, want the first only", n)
	}
	h.clock.Advance(time.Second)
	if n := len(h.take()); n < 450 || n > 510 {
		t.Errorf("%d sent in the first second, want about 500", n)
	}
	h.clock.Advance(time.Second)
	h.take()
	h.clock.Advance(27 * time.Second)
	h.none()
	h.clock.Advance(2 * time.Second)
	if s := h.one(); !strings.Contains(hdr(s.req, "Contact"), "late") {
		t.Errorf("reg_delay: %s", hdr(s.req, "Contact"))
	}
}

// auth_proxy's transport comes from its URI; a name without a port goes
// through the resolver (SRV) once per proxy, outside the lock.
func TestProxyResolution(t *testing.T) {
	a, b := row("a"), row("b")
	a.AuthProxy = "sip:trunk.example;transport=tcp"
	b.AuthProxy = "sip:trunk.example:5080;transport=tcp"
	h := newHarness(t, nil)
	calls := 0
	h.u.resolve = func(tg core.Target, explicit bool) []core.Target {
		calls++
		if explicit {
			return []core.Target{tg}
		}
		x, y := tg, tg
		x.Host, x.Port = "192.0.2.7", 5099
		y.Host, y.Port = "192.0.2.8", 5098
		return []core.Target{x, y}
	}
	insertRow(h.env.DB, "uacreg", &a)
	insertRow(h.env.DB, "uacreg", &b)
	if _, _, _, err := h.u.Reload(); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(time.Second)
	got := map[string]string{}
	for _, s := range h.take() {
		got[s.req.From().Address.User] = s.dst.String()
	}
	if got["a_r"] != "tcp:192.0.2.7:5099" || got["b_r"] != "tcp:trunk.example:5080" || calls != 2 {
		t.Errorf("targets %v, %d lookups", got, calls)
	}
	// A timeout moves a's next attempt to the next SRV target; a 403 does not.
	h.take()
	h.u.mu.Lock()
	ra := h.u.recs["a"]
	h.u.mu.Unlock()
	for i, tc := range []struct {
		code int
		want string
	}{{408, "tcp:192.0.2.8:5098"}, {403, "tcp:192.0.2.8:5098"}, {503, "tcp:192.0.2.7:5099"}} {
		h.u.mu.Lock()
		h.u.unschedule(ra)
		h.u.startAttempt(ra, false)
		h.u.mu.Unlock()
		var s *sent
		for _, x := range h.take() {
			if x.req.From().Address.User == "a_r" {
				s = x
			}
		}
		h.reply(s, tc.code, "x")
		h.u.mu.Lock()
		got := ra.dst().String()
		h.u.mu.Unlock()
		if got != tc.want {
			t.Errorf("step %d (%d): next target %s, want %s", i, tc.code, got, tc.want)
		}
	}
}

func TestKeepCallID(t *testing.T) {
	for _, keep := range []int{0, 1} {
		h := newHarness(t, []Row{row("acc")}, "reg_keep_callid="+strconv.Itoa(keep))
		h.clock.Advance(0)
		s1 := h.one()
		h.reply(s1, 200, "OK", "Expires: 60")
		h.clock.Advance(time.Minute)
		s2 := h.one()
		same := s2.req.CallID().Value() == s1.req.CallID().Value()
		tag1, _ := s1.req.From().Params.Get("tag")
		tag2, _ := s2.req.From().Params.Get("tag")
		if same != (keep == 1) || (tag1 == tag2) != (keep == 1) {
			t.Errorf("keep %d: same Call-ID %v, same tag %v", keep, same, tag1 == tag2)
		}
		if want := uint32(10); keep == 1 {
			want = 11
			if s2.req.CSeq().SeqNo != want {
				t.Errorf("keep 1: CSeq %d, want %d", s2.req.CSeq().SeqNo, want)
			}
		} else if s2.req.CSeq().SeqNo != want {
			t.Errorf("keep 0: CSeq %d, want %d", s2.req.CSeq().SeqNo, want)
		}
	}
}

func TestRegActive(t *testing.T) {
	h := newHarness(t, []Row{row("acc")}, "reg_active=0")
	h.clock.Advance(time.Hour)
	h.none()
	if got := h.info("acc"); got.State != StateIdle {
		t.Errorf("inactive: %s", got.State)
	}
	if old := h.u.SetActive(true); old != 0 {
		t.Errorf("omode %d", old)
	}
	h.clock.Advance(0)
	h.one()
}

func TestUnregisterOnStop(t *testing.T) {
	h := newHarness(t, []Row{row("acc"), row("idle")}, "reg_unregister_on_stop=1")
	h.clock.Advance(0)
	h.reply(h.one(), 200, "OK", "Expires: 60") // acc registered; idle's first REGISTER is 2 ms later
	done := make(chan struct{})
	go func() { h.mod.Stop(); close(done) }()
	var s *sent
	for s == nil {
		if ss := h.take(); len(ss) > 0 {
			s = ss[0]
		}
		time.Sleep(time.Millisecond)
	}
	if hdr(s.req, "Expires") != "0" || !strings.Contains(hdr(s.req, "Contact"), "sip:acc@") {
		t.Fatalf("stop sent %s", s.req)
	}
	h.reply(s, 200, "OK")
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Stop did not return after the un-REGISTER's reply")
	}
	h.clock.Advance(time.Hour)
	h.none()
}

func TestDefaultSocketMustBeLocal(t *testing.T) {
	env := core.NewEnv(nil)
	env.SetSockets([]core.Socket{{Proto: "udp", IP: "127.0.0.1", Port: 5060}})
	mod := New(env)
	u := Of(env)
	u.send = fakeSend
	u.defaultSocket.Store("udp:127.0.0.1:5099")
	if err := mod.Init(); err == nil || !strings.Contains(err.Error(), "not a local listen socket") {
		t.Errorf("err %v", err)
	}
	u.defaultSocket.Store("udp:127.0.0.1:5060")
	if err := mod.Init(); err != nil {
		t.Error(err)
	}
}

// The granted expiry is our Contact's, also among several (one header or
// many), else the only Contact's (a registrar that rewrote it), else the
// Expires header.
func TestGrantedExpiry(t *testing.T) {
	for _, tc := range []struct {
		hdrs []string
		want int
	}{
		{[]string{"Contact: <sip:other@192.0.2.1>;expires=10, <sip:acc@127.0.0.1:5060>;expires=77", "Expires: 5"}, 77},
		{[]string{"Contact: <sip:other@192.0.2.1>;expires=10", "Contact: <sip:acc@127.0.0.1:5060>;expires=78"}, 78},
		{[]string{"Contact: <sip:rewritten@127.0.0.1:5060>;expires=79", "Expires: 5"}, 79},
		{[]string{"Contact: <sip:other@192.0.2.1>;expires=10, <sip:x@192.0.2.2>;expires=11", "Expires: 80"}, 80},
		{nil, 120}, // nothing said: the requested expires
	} {
		h := newHarness(t, []Row{row("acc")})
		h.clock.Advance(0)
		h.reply(h.one(), 200, "OK", tc.hdrs...)
		if got := h.info("acc").GrantedExpires; got != tc.want {
			t.Errorf("%v: granted %d, want %d", tc.hdrs, got, tc.want)
		}
	}
}

// Un-REGISTERs that cannot be sent at all at shutdown end Stop at once.
func TestUnregisterOnStopSendFails(t *testing.T) {
	h := newHarness(t, []Row{row("a"), row("b")}, "reg_unregister_on_stop=1")
	h.clock.Advance(time.Second)
	for _, s := range h.take() {
		h.reply(s, 200, "OK", "Expires: 60")
	}
	h.u.mu.Lock()
	h.u.send = func(*sip.Request, core.Target, string, func(*sip.Response)) error { return errors.New("down") }
	h.u.mu.Unlock()
	start := time.Now()
	h.mod.Stop()
	if time.Since(start) > time.Second {
		t.Error("Stop waited for un-REGISTERs that failed to send")
	}
}

// auth_ha1 has priority over auth_password (Kamailio's uacreg.xml); an
// HA1 alone (MD5) cannot answer a SHA-256-only challenge, and says so.
func TestHA1Priority(t *testing.T) {
	rw := row("acc")
	ha1 := md5hex("acc_a:fake.test:secret")
	rw.AuthPassword, rw.AuthHA1 = "not-the-password", ha1
	h := newHarness(t, []Row{rw})
	h.clock.Advance(0)
	h.reply(h.one(), 401, "Unauthorized", `WWW-Authenticate: Digest realm="fake.test", nonce="n", qop="auth"`)
	checkDigest(t, hdr(h.one().req, "Authorization"), "", ha1)

	rw.AuthPassword = ""
	h = newHarness(t, []Row{rw})
	h.clock.Advance(0)
	h.reply(h.one(), 401, "Unauthorized", `WWW-Authenticate: Digest realm="fake.test", nonce="n", qop="auth", algorithm=SHA-256`)
	h.none()
	if got := h.info("acc"); got.State != StateFailed || !strings.Contains(got.LastReason, "only auth_ha1 (MD5) is set and no MD5 challenge was offered") {
		t.Errorf("%+v", got)
	}
}

// With reg_active 0 a registered record is not refreshed; it shows
// registered until its binding runs out, idle afterwards, and reg_active 1
// refreshes a parked record at once.
func TestRegActiveParksRefreshes(t *testing.T) {
	h := newHarness(t, []Row{row("acc"), row("two")})
	h.clock.Advance(0)
	for _, s := range h.take() {
		h.reply(s, 200, "OK", "Expires: 100")
	}
	h.u.SetActive(false)
	h.clock.Advance(80 * time.Second) // past every refresh point (≤ 75%)
	h.none()
	if got := h.info("acc"); got.State != StateRegistered || h.u.Status("acc") != 1 {
		t.Errorf("before expiry: %s status %d", got.State, h.u.Status("acc"))
	}
	h.u.SetActive(true)
	h.clock.Advance(time.Second)
	if n := len(h.take()); n != 2 {
		t.Errorf("reg_active 1 sent %d refreshes, want 2 at once", n)
	}

	h = newHarness(t, []Row{row("acc")})
	h.clock.Advance(0)
	h.reply(h.one(), 200, "OK", "Expires: 100")
	h.u.SetActive(false)
	h.clock.Advance(101 * time.Second)
	h.none()
	if got := h.info("acc"); got.State != StateIdle || got.Flags&flagOnline != 0 {
		t.Errorf("after expiry: %s flags %d", got.State, got.Flags)
	}
	h.u.SetActive(true)
	h.clock.Advance(0)
	h.one()
}

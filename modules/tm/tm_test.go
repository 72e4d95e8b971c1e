package tm_test

import (
	"context"
	"fmt"
	"github.com/kamgo/kamgo/starlark/routetest"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/starlark"

	_ "github.com/kamgo/kamgo/modules/all"
)

// The test scripts. The R-URI user picks what the request route does.
const baseScript = `
modparam("tm", "fr_timer", 2000)
modparam("tm", "fr_inv_timer", 8000)
modparam("tm", "wait_timer", 1000)

def bump(name):
    KSR.pv.seti("$shv(" + name + ")", KSR.pv.get("$shv(" + name + ")") + 1)

def ksr_request_route():
    bump("runs")
    if KSR.is_CANCEL():
        bump("cancel_runs")
        if KSR.tm.t_check_trans() > 0:
            KSR.tm.t_relay()
        return
    if KSR.is_ACK():
        if KSR.tm.t_check_trans() == 0:
            return
        KSR.tm.t_relay()
        return
    u = KSR.pv.get("$rU")
    if KSR.hdr.is_present("X-Du") > 0:
        KSR.setdsturi(KSR.hdr.get("X-Du"))
    if u == "newtran":
        KSR.pv.seti("$shv(nt)", KSR.tm.t_newtran())
        KSR.tm.t_reply(404, "Not Here")
        return
    if u == "slreply":
        KSR.tm.t_newtran()
        KSR.sl.send_reply(486, "Busy Here")
        return
    if u == "notx":
        KSR.pv.seti("$shv(rc)", KSR.tm.t_reply(404, "Not Here"))
        KSR.sl.sl_send_reply(403, "Forbidden")
        return
    if u == "failover":
        KSR.tm.t_on_failure("to_backup")
    if u == "once":
        KSR.tm.t_on_failure("no_rearm")
    if u == "canceled":
        KSR.tm.t_on_failure("check_cancel")
    if u == "dyn":
        KSR.tm.t_on_failure(KSR.hdr.get("X-Route"))
    if u == "fork":
        KSR.setdsturi("sip:10.0.0.2:5060")
        KSR.tm.t_relay()
        KSR.setdsturi("sip:10.0.0.3:5060")
    if KSR.tm.t_relay() < 0:
        KSR.sl.sl_reply_error()

def to_backup():
    bump("failures")
    KSR.pv.seti("$shv(fcode)", KSR.pv.get("$T_reply_code"))
    if KSR.tm.t_is_canceled() > 0:
        return
    KSR.setdsturi("sip:10.0.0.9:5060")
    KSR.tm.t_on_failure("to_backup2")
    KSR.tm.t_relay()

def to_backup2():
    bump("failures2")

def no_rearm():
    bump("failures")
    KSR.setdsturi("sip:10.0.0.9:5060")
    KSR.tm.t_relay()

def check_cancel():
    bump("failures")
    KSR.pv.seti("$shv(canceled)", KSR.tm.t_is_canceled())
`

// sent is one message handed to the Sender, serialised at Send time.
type sent struct {
	kind   core.OutKind
	dst    core.Target
	branch int
	local  string // forced local socket, "" none
	text   string
	msg    sip.Message
}

func (s sent) req() *sip.Request   { r, _ := s.msg.(*sip.Request); return r }
func (s sent) res() *sip.Response  { r, _ := s.msg.(*sip.Response); return r }
func (s sent) method() string      { return s.msg.CSeq().MethodName.String() }
func (s sent) viaBranch() string   { b, _ := s.msg.Via().Params.Get("branch"); return b }
func (s sent) String() string      { return s.kind.String() + " " + s.dst.String() + "\n" + s.text }
func (s sent) isReq(m string) bool { r := s.req(); return r != nil && string(r.Method) == m }

type recorder struct {
	t    *testing.T
	mu   sync.Mutex
	sent []sent
	fail error // when set, every Send fails with it (nothing recorded)
}

func (r *recorder) Send(o *core.Outgoing) error {
	if r.fail != nil {
		return r.fail
	}
	var sb strings.Builder
	o.Msg.StringWrite(&sb)
	msg, err := sip.NewParser().ParseSIP([]byte(sb.String()))
	if err != nil {
		r.t.Errorf("unparsable message sent: %v\n%s", err, sb.String())
		return err
	}
	r.mu.Lock()
	s := sent{kind: o.Kind, dst: o.Dst, branch: o.Branch, text: sb.String(), msg: msg}
	if o.LocalSocket != nil {
		s.local = o.LocalSocket.String()
	}
	r.sent = append(r.sent, s)
	r.mu.Unlock()
	return nil
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sent)
}

func (r *recorder) since(i int) out {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append(out(nil), r.sent[i:]...)
}

// out is what one action made kamd send.
type out []sent

func (o out) of(k core.OutKind) out {
	var r out
	for _, s := range o {
		if s.kind == k {
			r = append(r, s)
		}
	}
	return r
}

// upstream are the replies sent to the caller (local or relayed).
func (o out) upstream() out {
	var r out
	for _, s := range o {
		if s.res() != nil {
			r = append(r, s)
		}
	}
	return r
}

func (o out) codes() []int {
	var c []int
	for _, s := range o.upstream() {
		c = append(c, s.res().StatusCode)
	}
	return c
}

func (o out) requests(method string) out {
	var r out
	for _, s := range o {
		if s.isReq(method) {
			r = append(r, s)
		}
	}
	return r
}

func (o out) String() string {
	var sb strings.Builder
	for _, s := range o {
		sb.WriteString(s.String())
		sb.WriteString("----\n")
	}
	return sb.String()
}

// logBuf collects log lines for assertions on errors.
type logBuf struct {
	mu sync.Mutex
	sb strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sb.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sb.String()
}

type fixture struct {
	t    *testing.T
	env  *core.Env
	eng  *starlark.Engine
	clk  *routetest.FixedClock
	rec  *recorder
	logs *logBuf
	seq  int
}

func newFixture(t *testing.T, script string) *fixture {
	t.Helper()
	f := &fixture{t: t, rec: &recorder{t: t}, logs: &logBuf{}, clk: routetest.NewFixedClock(routetest.RouteTestEpoch)}
	f.env = core.NewEnv(f.rec)
	f.env.Clock = f.clk
	f.env.Log = slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.env.DBPath = t.TempDir() + "/kamgo.db"
	f.env.SetSockets([]core.Socket{{Proto: "udp", IP: "127.0.0.1", Port: 5060}, {Proto: "tcp", IP: "127.0.0.1", Port: 5060}})
	f.eng = starlark.New(f.env)
	if _, err := f.eng.Load("test.star", []byte(script)); err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() {
		for _, m := range f.eng.Modules {
			if m.Stop != nil {
				m.Stop()
			}
		}
		if t.Failed() {
			t.Logf("logs:\n%s", f.logs.String())
		}
	})
	return f
}

func (f *fixture) do(fn func()) out {
	i := f.rec.len()
	fn()
	return f.rec.since(i)
}

func (f *fixture) msg(proto, src string) *core.Msg {
	ip, port := core.HostPort(src)
	local, _ := f.env.SocketFor(proto)
	m := &core.Msg{Env: f.env, Proto: proto, SrcIP: ip, SrcPort: port, Local: local, Arrived: f.clk.Now()}
	if proto != "udp" {
		m.ConnID = proto + ":" + src
	}
	return m
}

func parse(t *testing.T, raw string) sip.Message {
	t.Helper()
	msg, err := routetest.ParseMessage(raw)
	if err != nil {
		t.Fatalf("%v\n%s", err, raw)
	}
	return msg
}

// request routes raw SIP text received from the caller at 192.0.2.10:5060.
func (f *fixture) request(raw, proto string) out {
	f.t.Helper()
	m := f.msg(proto, "192.0.2.10:5060")
	m.Req = parse(f.t, raw).(*sip.Request)
	return f.do(func() { f.eng.HandleRequest(m) })
}

// reply answers one request kamd sent, as its destination would.
func (f *fixture) reply(to sent, code int, toTag string) out {
	f.t.Helper()
	res := f.response(to, code, toTag)
	m := f.msg(to.dst.Proto, fmt.Sprintf("%s:%d", to.dst.Host, to.dst.Port))
	m.Res = res
	return f.do(func() { f.eng.HandleReply(m) })
}

func (f *fixture) response(to sent, code int, toTag string) *sip.Response {
	req := to.req()
	if req == nil {
		f.t.Fatalf("not a request:\n%s", to.text)
	}
	res := core.BuildReply(req, code, reasons[code], nil)
	if toTag != "" {
		th := res.To()
		th.Params.Remove("tag")
		th.Params.Add("tag", toTag)
	}
	// Through the wire and back.
	return parse(f.t, res.String()).(*sip.Response)
}

var reasons = map[int]string{100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK", 404: "Not Found",
	408: "Request Timeout", 486: "Busy Here", 487: "Request Terminated", 500: "Server Internal Error", 503: "Service Unavailable", 603: "Decline"}

func (f *fixture) advance(d time.Duration) out {
	return f.do(func() { f.clk.Advance(d) })
}

func (f *fixture) shv(name string) int64 { return f.env.Shv.Get(name).Int }

func (f *fixture) stats() map[string]int64 {
	f.t.Helper()
	mod := f.env.Module("tm")
	for _, r := range mod.RPC {
		if r.Name == "tm.stats" {
			v, err := r.Handler(context.Background(), nil)
			if err != nil {
				f.t.Fatal(err)
			}
			return v.(map[string]int64)
		}
	}
	f.t.Fatal("no tm.stats")
	return nil
}

// callOpts describe the caller's INVITE.
type call struct {
	user, callID, branch string
	proto                string
	extra                string // header lines
	method               string
}

func (c call) withDefaults() call {
	if c.user == "" {
		c.user = "bob"
	}
	if c.callID == "" {
		c.callID = "call-" + c.user
	}
	if c.branch == "" {
		c.branch = "z9hG4bK-c-" + c.user
	}
	if c.proto == "" {
		c.proto = "udp"
	}
	if c.method == "" {
		c.method = "INVITE"
	}
	return c
}

func (c call) raw() string {
	c = c.withDefaults()
	return fmt.Sprintf("%s sip:%s@10.0.0.1:5060 SIP/2.0\n"+
		"Via: SIP/2.0/%s 192.0.2.10:5060;branch=%s;rport\n"+
		"Max-Forwards: 70\n"+
		"From: <sip:alice@example.com>;tag=a1\n"+
		"To: <sip:%s@example.com>\n"+
		"Call-ID: %s\n"+
		"CSeq: 1 %s\n"+
		"Contact: <sip:alice@192.0.2.10:5060>\n"+
		"%s"+
		"Content-Length: 0\n\n", c.method, c.user, strings.ToUpper(c.proto), c.branch, c.user, c.callID, c.method, c.extra)
}

func (c call) cancel() string {
	c = c.withDefaults()
	return fmt.Sprintf("CANCEL sip:%s@10.0.0.1:5060 SIP/2.0\n"+
		"Via: SIP/2.0/%s 192.0.2.10:5060;branch=%s;rport\n"+
		"Max-Forwards: 70\n"+
		"From: <sip:alice@example.com>;tag=a1\n"+
		"To: <sip:%s@example.com>\n"+
		"Call-ID: %s\n"+
		"CSeq: 1 CANCEL\n"+
		"Content-Length: 0\n\n", c.user, strings.ToUpper(c.proto), c.branch, c.user, c.callID)
}

// ack is the caller's ACK: to a negative final (same branch) or to a 2xx (new branch).
func (c call) ack(toTag string, twoxx bool) string {
	c = c.withDefaults()
	br, ruri := c.branch, "sip:"+c.user+"@10.0.0.1:5060"
	if twoxx {
		br = c.branch + "-ack"
	}
	return fmt.Sprintf("ACK %s SIP/2.0\n"+
		"Via: SIP/2.0/%s 192.0.2.10:5060;branch=%s;rport\n"+
		"Max-Forwards: 70\n"+
		"From: <sip:alice@example.com>;tag=a1\n"+
		"To: <sip:%s@example.com>;tag=%s\n"+
		"Call-ID: %s\n"+
		"CSeq: 1 ACK\n"+
		"Content-Length: 0\n\n", ruri, strings.ToUpper(c.proto), br, c.user, toTag, c.callID)
}

// start sends the INVITE and returns what went out and the first branch.
func (f *fixture) start(c call) (out, sent) {
	f.t.Helper()
	o := f.request(c.raw(), c.withDefaults().proto)
	br := o.of(core.OutBranch)
	if len(br) == 0 {
		f.t.Fatalf("no branch relayed; sent:\n%s", o)
	}
	return o, br[0]
}

func eqInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (f *fixture) wantCodes(what string, o out, want ...int) {
	f.t.Helper()
	if got := o.codes(); !eqInts(got, want) {
		f.t.Errorf("%s: upstream replies %v, want %v; sent:\n%s", what, got, want, o)
	}
}

func (f *fixture) wantTo(what string, s sent, dst string) {
	f.t.Helper()
	if got := s.dst.String(); got != dst {
		f.t.Errorf("%s: sent to %s, want %s", what, got, dst)
	}
}

const caller = "udp:192.0.2.10:5060"

func TestTM(t *testing.T) {
	tests := []struct {
		name   string
		script string
		run    func(t *testing.T, f *fixture)
	}{
		{"100 Trying at once, branch Via, R-URI honoured", baseScript, func(t *testing.T, f *fixture) {
			o, b := f.start(call{})
			if len(o) != 2 || o[0].res() == nil || o[0].res().StatusCode != 100 {
				t.Fatalf("want 100 Trying then the branch; sent:\n%s", o)
			}
			f.wantTo("100", o[0], caller)
			f.wantTo("branch", b, "udp:10.0.0.1:5060")
			if b.branch != 0 {
				t.Errorf("branch index %d", b.branch)
			}
			vias := b.req().GetHeaders("Via")
			if len(vias) != 2 {
				t.Fatalf("want our Via on top of the caller's: %v", vias)
			}
			v := b.req().Via()
			if v.Host != "127.0.0.1" || v.Port != 5060 || !strings.HasPrefix(b.viaBranch(), "z9hG4bK") {
				t.Errorf("our Via: %s", v.Value())
			}
			if b.req().Recipient.String() != "sip:bob@10.0.0.1:5060" {
				t.Errorf("R-URI %s", b.req().Recipient.String())
			}
			if mf := b.req().GetHeader("Max-Forwards"); mf == nil || mf.Value() != "70" && mf.Value() != "69" {
				t.Errorf("Max-Forwards %v", mf)
			}
			// A second call gets another branch id.
			_, b2 := f.start(call{user: "carol"})
			if b2.viaBranch() == b.viaBranch() {
				t.Errorf("two transactions share the branch %s", b.viaBranch())
			}
		}},
		{"$du honoured", baseScript, func(t *testing.T, f *fixture) {
			_, b := f.start(call{extra: "X-Du: sip:10.0.0.5:5070;transport=tcp\n"})
			f.wantTo("branch", b, "tcp:10.0.0.5:5070")
			if b.req().Via().Transport != "TCP" {
				t.Errorf("Via transport %s", b.req().Via().Transport)
			}
			if b.req().Recipient.String() != "sip:bob@10.0.0.1:5060" {
				t.Errorf("R-URI changed: %s", b.req().Recipient.String())
			}
		}},
		{"180 and 200 relayed with our Via popped; the UAS's 100 absorbed", baseScript, func(t *testing.T, f *fixture) {
			_, b := f.start(call{})
			o := f.reply(b, 100, "")
			if len(o) != 0 {
				t.Errorf("the UAS's 100 went somewhere:\n%s", o)
			}
			o = f.reply(b, 180, "b1")
			f.wantCodes("180", o, 180)
			if len(o) == 1 {
				f.wantTo("180", o[0], caller)
				if o[0].kind != core.OutRelayedReply || len(o[0].res().GetHeaders("Via")) != 1 || o[0].res().Via().Host != "192.0.2.10" {
					t.Errorf("relayed 180 not right:\n%s", o[0])
				}
			}
			o = f.reply(b, 200, "b1")
			f.wantCodes("200", o, 200)
			if len(o) == 1 && len(o[0].res().GetHeaders("Via")) != 1 {
				t.Errorf("our Via not popped:\n%s", o[0])
			}
			if n := len(o.requests("ACK")); n != 0 {
				t.Errorf("tm must not ACK a 2xx")
			}
		}},
		{"retransmitted INVITE absorbed, last provisional resent", baseScript, func(t *testing.T, f *fixture) {
			c := call{}
			first, b := f.start(c)
			o := f.request(c.raw(), "udp")
			f.wantCodes("retransmission before 180", o, 100)
			if up, up0 := o.upstream(), first.upstream(); len(up) == 1 && len(up0) == 1 && up[0].text != up0[0].text {
				// tm keeps no copy of its 100 (sendTrying): the one built again must be the same.
				t.Errorf("100 resent:\n%s\nfirst 100:\n%s", up[0].text, up0[0].text)
			}
			if len(o.of(core.OutBranch)) != 0 {
				t.Errorf("retransmission relayed again")
			}
			f.reply(b, 180, "b1")
			o = f.request(c.raw(), "udp")
			f.wantCodes("retransmission after 180", o, 180)
			if f.shv("runs") != 1 {
				t.Errorf("request route ran %d times", f.shv("runs"))
			}
		}},
		{"UDP retransmission of the branch at T1, 2T1, ... until a provisional", baseScript, func(t *testing.T, f *fixture) {
			_, b := f.start(call{})
			var at []time.Duration
			var first sent
			for step := time.Duration(0); step < 1900*time.Millisecond; step += 100 * time.Millisecond {
				o := f.advance(100 * time.Millisecond)
				for _, s := range o.of(core.OutBranch) {
					at = append(at, step+100*time.Millisecond)
					first = s
				}
			}
			want := []time.Duration{500 * time.Millisecond, 1500 * time.Millisecond}
			if fmt.Sprint(at) != fmt.Sprint(want) {
				t.Errorf("retransmissions at %v, want %v", at, want)
			}
			if first.text != b.text {
				t.Errorf("retransmission differs:\n%s\nvs\n%s", first.text, b.text)
			}
			// After a provisional, no more retransmissions.
			f2 := newFixture(t, baseScript)
			_, b2 := f2.start(call{})
			f2.reply(b2, 100, "")
			if o := f2.advance(5 * time.Second); len(o.of(core.OutBranch)) != 0 {
				t.Errorf("retransmitted after a provisional:\n%s", o)
			}
		}},
		{"non-INVITE retransmissions cap at T2, none over TCP", baseScript, func(t *testing.T, f *fixture) {
			_, _ = f.start(call{method: "OPTIONS"})
			o := f.advance(1900 * time.Millisecond)
			if n := len(o.of(core.OutBranch)); n != 2 { // 0.5, 1.5
				t.Errorf("%d retransmissions in 1.9 s, want 2", n)
			}
			o = f.advance(200 * time.Millisecond) // fr_timer 2 s
			f.wantCodes("OPTIONS timeout", o, 408)
			f2 := newFixture(t, baseScript)
			_, b := f2.start(call{proto: "tcp", extra: "X-Du: sip:10.0.0.1:5060;transport=tcp\n"})
			f2.wantTo("tcp branch", b, "tcp:10.0.0.1:5060")
			o = f2.advance(1900 * time.Millisecond)
			if n := len(o.of(core.OutBranch)); n != 0 {
				t.Errorf("retransmitted over TCP:\n%s", o)
			}
			o = f2.advance(7 * time.Second)
			f2.wantCodes("tcp INVITE timeout", o, 408)
		}},
		{"fr_timer without reply gives 408 upstream", baseScript, func(t *testing.T, f *fixture) {
			_, _ = f.start(call{})
			o := f.advance(1999 * time.Millisecond)
			f.wantCodes("before fr_timer", o)
			o = f.advance(time.Millisecond)
			f.wantCodes("at fr_timer", o, 408)
			if n := len(o.requests("CANCEL")); n != 0 {
				t.Errorf("CANCEL sent for a branch that never answered")
			}
			if o2 := f.advance(10 * time.Second); len(o2.of(core.OutBranch)) != 0 {
				t.Errorf("the branch is still retransmitted after the timeout:\n%s", o2)
			}
		}},
		{"fr_timer runs the failure route", baseScript, func(t *testing.T, f *fixture) {
			f.start(call{user: "failover"})
			o := f.advance(2 * time.Second)
			var br out
			for _, s := range o.of(core.OutBranch) {
				if s.branch == 1 {
					br = append(br, s)
				}
			}
			if len(br) != 1 {
				t.Fatalf("want a new branch 1 from the failure route:\n%s", o)
			}
			f.wantTo("backup", br[0], "udp:10.0.0.9:5060")
			f.wantCodes("timeout with failover", o)
			if f.shv("fcode") != 408 {
				t.Errorf("$T_reply_code in failure route %d", f.shv("fcode"))
			}
		}},
		{"fr_inv_timer after 180: CANCEL downstream, 408 upstream", baseScript, func(t *testing.T, f *fixture) {
			_, b := f.start(call{})
			f.advance(time.Second)
			f.reply(b, 180, "b1")
			o := f.advance(7999 * time.Millisecond)
			if len(o) != 0 {
				t.Errorf("something before fr_inv_timer:\n%s", o)
			}
			o = f.advance(time.Millisecond)
			cs := o.requests("CANCEL")
			if len(cs) != 1 {
				t.Fatalf("want one CANCEL:\n%s", o)
			}
			f.wantTo("CANCEL", cs[0], "udp:10.0.0.1:5060")
			if cs[0].viaBranch() != b.viaBranch() || cs[0].req().Recipient.String() != b.req().Recipient.String() {
				t.Errorf("CANCEL does not match the branch:\n%s", cs[0])
			}
			f.wantCodes("fr_inv_timer", o, 408)
		}},
		{"negative reply: hop-by-hop ACK with the response's To tag and the same branch", baseScript, func(t *testing.T, f *fixture) {
			_, b := f.start(call{})
			o := f.reply(b, 486, "busy1")
			acks := o.requests("ACK")
			if len(acks) != 1 {
				t.Fatalf("want one ACK:\n%s", o)
			}
			a := acks[0].req()
			f.wantTo("ACK", acks[0], "udp:10.0.0.1:5060")
			if tag, _ := a.To().Params.Get("tag"); tag != "busy1" {
				t.Errorf("ACK To tag %q", tag)
			}
			if acks[0].viaBranch() != b.viaBranch() || len(a.GetHeaders("Via")) != 1 {
				t.Errorf("ACK Via:\n%s", acks[0])
			}
			if a.CSeq().SeqNo != 1 || a.Recipient.String() != b.req().Recipient.String() {
				t.Errorf("ACK CSeq/R-URI:\n%s", acks[0])
			}
			f.wantCodes("486 relayed", o, 486)
			// A retransmitted 486 is ACKed again, not relayed again.
			o = f.reply(b, 486, "busy1")
			if len(o.requests("ACK")) != 1 || len(o.upstream()) != 0 {
				t.Errorf("486 retransmission:\n%s", o)
			}
		}},
		{"failure route after 486: second destination, new branch index, 486 not upstream", baseScript, func(t *testing.T, f *fixture) {
			_, b := f.start(call{user: "failover"})
			o := f.reply(b, 486, "busy1")
			f.wantCodes("486", o)
			br := o.of(core.OutBranch)
			if len(br) != 1 || br[0].branch != 1 {
				t.Fatalf("want branch 1:\n%s", o)
			}
			f.wantTo("backup", br[0], "udp:10.0.0.9:5060")
			if br[0].viaBranch() == b.viaBranch() {
				t.Errorf("the new branch reuses the branch id")
			}
			if f.shv("fcode") != 486 {
				t.Errorf("$T_reply_code %d", f.shv("fcode"))
			}
			o = f.reply(br[0], 200, "ok")
			f.wantCodes("answer from the backup", o, 200)
			if f.shv("failures2") != 0 {
				t.Errorf("failure route ran after a 2xx")
			}
		}},
		{"failure route re-armed runs again; the last failure goes upstream", baseScript, func(t *testing.T, f *fixture) {
			_, b := f.start(call{user: "failover"})
			b1 := f.reply(b, 486, "busy1").of(core.OutBranch)[0]
			o := f.reply(b1, 603, "dec")
			if f.shv("failures2") != 1 {
				t.Errorf("re-armed failure route ran %d times", f.shv("failures2"))
			}
			f.wantCodes("both failed", o, 603)
		}},
		{"failure route not re-armed runs only once", baseScript, func(t *testing.T, f *fixture) {
			_, b := f.start(call{user: "once"})
			b1 := f.reply(b, 486, "busy1").of(core.OutBranch)
			if len(b1) != 1 {
				t.Fatalf("no second branch")
			}
			o := f.reply(b1[0], 404, "nf")
			if f.shv("failures") != 1 {
				t.Errorf("failure route ran %d times", f.shv("failures"))
			}
			f.wantCodes("best of 486 and 404", o, 404)
		}},
		{"t_is_canceled in the failure route", baseScript, func(t *testing.T, f *fixture) {
			c := call{user: "canceled"}
			_, b := f.start(c)
			f.reply(b, 180, "b1")
			f.request(c.cancel(), "udp")
			o := f.reply(b, 487, "b1")
			if f.shv("failures") != 1 || f.shv("canceled") != 1 {
				t.Errorf("failure route runs %d, t_is_canceled %d", f.shv("failures"), f.shv("canceled"))
			}
			f.wantCodes("487", o, 487)
		}},
		{"CANCEL of a pending INVITE", baseScript, func(t *testing.T, f *fixture) {
			c := call{}
			_, b := f.start(c)
			f.reply(b, 180, "b1")
			o := f.request(c.cancel(), "udp")
			var okCancel int
			for _, s := range o.upstream() {
				if s.method() == "CANCEL" && s.res().StatusCode == 200 {
					okCancel++
				}
				if s.method() == "INVITE" {
					t.Errorf("an INVITE reply on CANCEL before the 487 came:\n%s", s)
				}
			}
			if okCancel != 1 {
				t.Errorf("want a 200 to the CANCEL:\n%s", o)
			}
			cs := o.requests("CANCEL")
			if len(cs) != 1 || cs[0].viaBranch() != b.viaBranch() {
				t.Fatalf("want one CANCEL for the branch:\n%s", o)
			}
			f.wantTo("CANCEL", cs[0], "udp:10.0.0.1:5060")
			if r := f.reply(cs[0], 200, "b1"); len(r) != 0 {
				t.Errorf("the 200 to our CANCEL went on:\n%s", r)
			}
			o = f.reply(b, 487, "b1")
			f.wantCodes("487", o, 487)
			if len(o.requests("ACK")) != 1 {
				t.Errorf("the 487 is not ACKed")
			}
			if f.shv("cancel_runs") != 0 {
				t.Errorf("the script ran for a CANCEL tm owns")
			}
			// A retransmitted CANCEL is answered again and changes nothing.
			o = f.request(c.cancel(), "udp")
			if len(o.requests("CANCEL")) != 0 {
				t.Errorf("CANCEL sent again:\n%s", o)
			}
		}},
		{"CANCEL retransmission does not end the transaction early", baseScript, func(t *testing.T, f *fixture) {
			c := call{}
			_, b := f.start(c)
			f.reply(b, 180, "b1")
			f.request(c.cancel(), "udp")
			o := f.request(c.cancel(), "udp")
			for _, s := range o.upstream() {
				if s.method() == "INVITE" {
					t.Errorf("INVITE answered on a CANCEL retransmission:\n%s", s)
				}
			}
			f.wantCodes("487 from downstream", f.reply(b, 487, "b1"), 487)
		}},
		{"CANCEL before any provisional is held until the 1xx", baseScript, func(t *testing.T, f *fixture) {
			c := call{}
			_, b := f.start(c)
			o := f.request(c.cancel(), "udp")
			if len(o.requests("CANCEL")) != 0 {
				t.Errorf("CANCEL sent before a provisional (RFC 3261 9.1):\n%s", o)
			}
			if codes := o.codes(); !eqInts(codes, []int{200}) {
				t.Errorf("replies to the CANCEL: %v", codes)
			}
			o = f.reply(b, 180, "b1")
			if len(o.requests("CANCEL")) != 1 {
				t.Errorf("CANCEL not sent when the 180 arrived:\n%s", o)
			}
			f.wantCodes("487", f.reply(b, 487, "b1"), 487)
		}},
		{"CANCEL before any provisional, no answer: 487 upstream at fr_timer", baseScript, func(t *testing.T, f *fixture) {
			c := call{}
			f.start(c)
			f.request(c.cancel(), "udp")
			o := f.advance(2 * time.Second)
			if len(o.requests("CANCEL")) != 0 {
				t.Errorf("CANCEL sent for a silent branch:\n%s", o)
			}
			f.wantCodes("timeout of a canceled INVITE", o, 487)
		}},
		{"CANCEL without a matching transaction", baseScript, func(t *testing.T, f *fixture) {
			o := f.request(call{user: "nobody"}.cancel(), "udp")
			if len(o) != 0 {
				t.Errorf("sent:\n%s", o)
			}
			if f.shv("cancel_runs") != 1 {
				t.Errorf("the script did not see the CANCEL")
			}
		}},
		{"ACK to our negative final absorbed; Timer G stops", baseScript, func(t *testing.T, f *fixture) {
			c := call{}
			_, b := f.start(c)
			o := f.reply(b, 486, "busy1")
			f.wantCodes("486", o, 486)
			o = f.advance(500 * time.Millisecond)
			f.wantCodes("Timer G", o, 486)
			o = f.advance(time.Second)
			f.wantCodes("Timer G 2", o, 486)
			runs := f.shv("runs")
			o = f.request(c.ack("busy1", false), "udp")
			if len(o) != 0 || f.shv("runs") != runs {
				t.Errorf("ACK not absorbed (runs %d→%d):\n%s", runs, f.shv("runs"), o)
			}
			if o = f.advance(10 * time.Second); len(o) != 0 {
				t.Errorf("sent after the ACK:\n%s", o)
			}
			if s := f.stats(); s["current"] != 0 {
				t.Errorf("transaction not freed after ACK + wait_timer: %v", s)
			}
		}},
		{"ACK to 2xx forwarded statelessly by t_relay", baseScript, func(t *testing.T, f *fixture) {
			c := call{}
			_, b := f.start(c)
			f.reply(b, 200, "b1")
			o := f.request(c.ack("b1", true), "udp")
			if len(o) != 1 || o[0].kind != core.OutForward || !o[0].isReq("ACK") {
				t.Fatalf("want the ACK forwarded:\n%s", o)
			}
			f.wantTo("ACK", o[0], "udp:10.0.0.1:5060")
			if len(o[0].req().GetHeaders("Via")) != 2 {
				t.Errorf("forwarded ACK lacks our Via")
			}
			if s := f.stats(); s["created"] != 1 {
				t.Errorf("a transaction for the ACK: %v", s)
			}
		}},
		{"t_check_trans matches an ACK to a relayed 2xx", `
def ksr_request_route():
    if KSR.is_ACK():
        KSR.pv.seti("$shv(ct)", KSR.tm.t_check_trans())
        return
    KSR.tm.t_relay()
`, func(t *testing.T, f *fixture) {
			c := call{}
			_, b := f.start(c)
			f.request(c.ack("b1", true), "udp")
			if f.shv("ct") != -1 {
				t.Errorf("ACK before any 2xx: t_check_trans %d", f.shv("ct"))
			}
			f.reply(b, 200, "b1")
			f.request(c.ack("b1", true), "udp")
			if f.shv("ct") != 1 {
				t.Errorf("e2e ACK: t_check_trans %d", f.shv("ct"))
			}
			f.request(call{callID: "other"}.ack("b1", true), "udp")
			if f.shv("ct") != -1 {
				t.Errorf("ACK of another call: t_check_trans %d", f.shv("ct"))
			}
		}},
		{"multiple 2xx all relayed", baseScript, func(t *testing.T, f *fixture) {
			_, b := f.start(call{})
			f.wantCodes("first 200", f.reply(b, 200, "t1"), 200)
			f.wantCodes("second 200 from another UAS", f.reply(b, 200, "t2"), 200)
			f.wantCodes("200 retransmission", f.reply(b, 200, "t1"), 200)
		}},
		{"parallel branches: 2xx relayed, the other branch CANCELed", baseScript, func(t *testing.T, f *fixture) {
			o, _ := f.start(call{user: "fork"})
			br := o.of(core.OutBranch)
			if len(br) != 2 || br[0].branch != 0 || br[1].branch != 1 {
				t.Fatalf("want two branches:\n%s", o)
			}
			f.wantCodes("one 100", o, 100)
			f.reply(br[0], 180, "t1")
			f.reply(br[1], 180, "t2")
			o = f.reply(br[1], 200, "t2")
			f.wantCodes("200", o, 200)
			cs := o.requests("CANCEL")
			if len(cs) != 1 || cs[0].viaBranch() != br[0].viaBranch() {
				t.Errorf("want a CANCEL for branch 0:\n%s", o)
			}
			f.wantCodes("a late 200 from branch 0", f.reply(br[0], 200, "t1"), 200)
			f.wantCodes("487 of branch 0", f.reply(br[0], 487, "t1"))
		}},
		{"503 from downstream becomes 500 upstream", baseScript, func(t *testing.T, f *fixture) {
			_, b := f.start(call{})
			o := f.reply(b, 503, "x")
			f.wantCodes("503", o, 500)
		}},
		{"best reply: 6xx beats 4xx, 401/407 preferred, 503 last", baseScript, func(t *testing.T, f *fixture) {
			cases := []struct {
				codes []int
				want  int
			}{
				{[]int{486, 603}, 603},
				{[]int{404, 407}, 407},
				{[]int{503, 486}, 486},
				{[]int{302, 486}, 302},
				{[]int{500, 404}, 404},
			}
			for i, tc := range cases {
				ff := newFixture(t, baseScript)
				o, _ := ff.start(call{user: "fork", callID: fmt.Sprint("best", i)})
				br := o.of(core.OutBranch)
				ff.reply(br[0], tc.codes[0], "a")
				o = ff.reply(br[1], tc.codes[1], "b")
				ff.wantCodes(fmt.Sprint(tc.codes), o, tc.want)
			}
		}},
		{"t_newtran + t_reply", baseScript, func(t *testing.T, f *fixture) {
			c := call{user: "newtran", method: "OPTIONS"}
			o := f.request(c.raw(), "udp")
			f.wantCodes("t_reply", o, 404)
			if f.shv("nt") != 1 {
				t.Errorf("t_newtran %d", f.shv("nt"))
			}
			if s := f.stats(); s["created"] != 1 || s["rpl_generated"] != 1 || s["4xx"] != 1 {
				t.Errorf("stats %v", s)
			}
			o = f.request(c.raw(), "udp")
			f.wantCodes("retransmission", o, 404)
			if f.shv("runs") != 1 {
				t.Errorf("script ran for a retransmission")
			}
		}},
		{"sl.send_reply in a transaction replies statefully", baseScript, func(t *testing.T, f *fixture) {
			c := call{user: "slreply"}
			o := f.request(c.raw(), "udp")
			f.wantCodes("reply", o, 486)
			o = f.advance(500 * time.Millisecond)
			f.wantCodes("Timer G for the stateful 486", o, 486)
			o = f.request(c.raw(), "udp")
			f.wantCodes("retransmission", o, 486)
		}},
		{"t_reply without transaction is -1", baseScript, func(t *testing.T, f *fixture) {
			o := f.request(call{user: "notx"}.raw(), "udp")
			if f.shv("rc") != -1 {
				t.Errorf("t_reply returned %d", f.shv("rc"))
			}
			f.wantCodes("sl reply", o, 403)
		}},
		{"transactions freed after wait_timer", baseScript, func(t *testing.T, f *fixture) {
			_, b := f.start(call{})
			f.reply(b, 200, "t1")
			f.start(call{user: "x", method: "OPTIONS"})
			if s := f.stats(); s["current"] != 2 {
				t.Errorf("current %d", s["current"])
			}
			f.advance(3 * time.Second) // wait_timer 1 s; the OPTIONS times out at 2 s
			s := f.stats()
			if s["current"] != 0 || s["freed"] != 2 || s["created"] != 2 {
				t.Errorf("stats %v", s)
			}
			if n := f.clk.Pending(); n != 0 {
				t.Errorf("%d timers still pending", n)
			}
		}},
		{"negative final on UDP freed after wait_timer without ACK too", baseScript, func(t *testing.T, f *fixture) {
			_, b := f.start(call{})
			f.reply(b, 486, "t1")
			f.advance(40 * time.Second)
			if s := f.stats(); s["current"] != 0 {
				t.Errorf("stats %v", s)
			}
			if n := f.clk.Pending(); n != 0 {
				t.Errorf("%d timers still pending", n)
			}
		}},
		{"t_on_failure with an undefined dynamic name is a script error", baseScript, func(t *testing.T, f *fixture) {
			o := f.request(call{user: "dyn", extra: "X-Route: nosuch\n"}.raw(), "udp")
			if len(o.of(core.OutBranch)) != 0 {
				t.Errorf("relayed anyway")
			}
			f.wantCodes("500 after the script error", o, 500)
			if !strings.Contains(f.logs.String(), "nosuch") {
				t.Errorf("the error does not name the function")
			}
			if s := f.stats(); s["current"] != 0 {
				t.Errorf("stats %v", s)
			}
		}},
		{"relay failure frees the transaction", baseScript, func(t *testing.T, f *fixture) {
			o := f.request(call{extra: "X-Du: sip:10.0.0.5:5061;transport=tls\n"}.raw(), "udp")
			if len(o.of(core.OutBranch)) != 0 {
				t.Errorf("relayed over a protocol kamd does not listen on")
			}
			f.advance(time.Second)
			if s := f.stats(); s["current"] != 0 {
				t.Errorf("stats %v", s)
			}
		}},
		{"bad $du does not leak a transaction", `
def ksr_request_route():
    KSR.tm.t_newtran()
    KSR.pv.sets("$du", "sip:")
    KSR.tm.t_relay()
`, func(t *testing.T, f *fixture) {
			f.request(call{}.raw(), "udp")
			f.advance(181 * time.Second) // max_inv_lifetime
			if s := f.stats(); s["current"] != 0 {
				t.Errorf("stats %v", s)
			}
		}},
		{"script version pinning: the failure route runs from the transaction's version", `
def ksr_request_route():
    KSR.tm.t_on_failure("fr")
    KSR.tm.t_relay()

def fr():
    KSR.pv.seti("$shv(ver)", 1)
`, func(t *testing.T, f *fixture) {
			_, b := f.start(call{})
			if _, err := f.eng.Load("test.star", []byte(`
def ksr_request_route():
    KSR.tm.t_on_failure("fr")
    KSR.tm.t_relay()

def fr():
    KSR.pv.seti("$shv(ver)", 2)
`)); err != nil {
				t.Fatal(err)
			}
			f.reply(b, 486, "x")
			if f.shv("ver") != 1 {
				t.Errorf("failure route of version %d ran", f.shv("ver"))
			}
			_, b2 := f.start(call{user: "new"})
			f.reply(b2, 486, "x")
			if f.shv("ver") != 2 {
				t.Errorf("a new transaction ran version %d", f.shv("ver"))
			}
		}},
		{"t_reply after the final reply is -1, nothing sent", `
def ksr_request_route():
    KSR.tm.t_newtran()
    KSR.pv.seti("$shv(a)", KSR.tm.t_reply(486, "Busy Here"))
    KSR.pv.seti("$shv(b)", KSR.tm.t_reply(200, "OK"))
    KSR.pv.seti("$shv(c)", KSR.tm.t_reply(180, "Ringing"))
`, func(t *testing.T, f *fixture) {
			o := f.request(call{}.raw(), "udp")
			f.wantCodes("replies", o, 486)
			if f.shv("a") != 1 || f.shv("b") != -1 || f.shv("c") != -1 {
				t.Errorf("t_reply returned %d %d %d", f.shv("a"), f.shv("b"), f.shv("c"))
			}
		}},
		{"non-INVITE: Timer E goes to T2 after a provisional", `
modparam("tm", "fr_timer", 10000)
def ksr_request_route():
    KSR.tm.t_relay()
`, func(t *testing.T, f *fixture) {
			_, b := f.start(call{method: "OPTIONS"})
			f.advance(600 * time.Millisecond)
			f.reply(b, 100, "")
			var at []time.Duration
			for now := 600 * time.Millisecond; now < 9900*time.Millisecond; {
				now += 100 * time.Millisecond
				if len(f.advance(100*time.Millisecond).of(core.OutBranch)) > 0 {
					at = append(at, now)
				}
			}
			want := []time.Duration{1500 * time.Millisecond, 5500 * time.Millisecond, 9500 * time.Millisecond}
			if fmt.Sprint(at) != fmt.Sprint(want) {
				t.Errorf("retransmissions at %v, want %v", at, want)
			}
		}},
		{"onreply and branch routes", `
def ksr_request_route():
    KSR.tm.t_on_reply("rpl")
    KSR.tm.t_on_branch("br")
    KSR.tm.t_relay()

def rpl():
    KSR.pv.seti("$shv(rpl)", KSR.pv.get("$T_reply_code"))
    if KSR.pv.get("$T_reply_code") == 183:
        KSR.set_drop()

def br():
    KSR.hdr.append("X-Branch: yes\r\n")
`, func(t *testing.T, f *fixture) {
			_, b := f.start(call{})
			if b.req().GetHeader("X-Branch") == nil {
				t.Errorf("branch route did not run:\n%s", b)
			}
			f.wantCodes("183 dropped", f.reply(b, 183, "t"))
			if f.shv("rpl") != 183 {
				t.Errorf("onreply saw %d", f.shv("rpl"))
			}
			f.wantCodes("180", f.reply(b, 180, "t"), 180)
			f.wantCodes("200", f.reply(b, 200, "t"), 200)
			if f.shv("rpl") != 200 {
				t.Errorf("onreply saw %d", f.shv("rpl"))
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, newFixture(t, tc.script))
		})
	}
}

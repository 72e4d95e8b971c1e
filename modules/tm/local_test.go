package tm_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/tm"
)

const localScript = `
def ksr_request_route():
    KSR.sl.sl_send_reply(404, "Not Found")
`

// replies collects what OnReply got.
type replies struct {
	mu        sync.Mutex
	codes     []int
	last      *sip.Response
	generated []bool // tm.Generated as seen inside OnReply
}

func (r *replies) on(res *sip.Response) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.codes = append(r.codes, res.StatusCode)
	r.last = res
	r.generated = append(r.generated, tm.Generated(res))
}

func (r *replies) got() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.codes...)
}

func localReq(method, ruri string) *sip.Request {
	var u sip.Uri
	if err := sip.ParseUri(ruri, &u); err != nil {
		panic(err)
	}
	req := sip.NewRequest(sip.RequestMethod(method), u)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "kamd", Host: "127.0.0.1"}, Params: sip.NewParams()}
	from.Params.Add("tag", "f1")
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: u, Params: sip.NewParams()})
	cid := sip.CallIDHeader("local-" + method + "@127.0.0.1")
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 10, MethodName: sip.RequestMethod(method)})
	if method == "MESSAGE" {
		req.AppendHeader(sip.NewHeader("Content-Type", "text/plain"))
		req.SetBody([]byte("hello"))
	}
	return req
}

// send starts a local request and returns what went out and the collector.
func (f *fixture) sendLocal(lr *tm.LocalRequest) (out, *replies) {
	f.t.Helper()
	t, err := tm.Of(f.env)
	if err != nil {
		f.t.Fatal(err)
	}
	r := &replies{}
	lr.OnReply = r.on
	o := f.do(func() {
		if err := t.SendRequest(lr); err != nil {
			f.t.Fatalf("SendRequest: %v", err)
		}
	})
	if len(o) != 1 || o[0].kind != core.OutLocalRequest {
		f.t.Fatalf("want one local request; sent:\n%s", o)
	}
	return o, r
}

// sendTimes advances the clock in 100 ms steps up to d and returns the
// offsets at which requests of method went out.
func (f *fixture) sendTimes(method string, d time.Duration) []time.Duration {
	start := f.clk.Now()
	var at []time.Duration
	for f.clk.Now().Sub(start) < d {
		o := f.advance(100 * time.Millisecond)
		for range o.requests(method) {
			at = append(at, f.clk.Now().Sub(start))
		}
	}
	return at
}

func eqDur(a, b []time.Duration) bool {
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

func ms(v ...int) []time.Duration {
	var d []time.Duration
	for _, x := range v {
		d = append(d, time.Duration(x)*time.Millisecond)
	}
	return d
}

func TestLocalRequests(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, f *fixture)
	}{
		{"the request as sent: our Via, Max-Forwards, Content-Length, target from the R-URI", func(t *testing.T, f *fixture) {
			o, _ := f.sendLocal(&tm.LocalRequest{Req: localReq("MESSAGE", "sip:bob@10.0.0.7:5070")})
			s := o[0]
			f.wantTo("MESSAGE", s, "udp:10.0.0.7:5070")
			req := s.req()
			if n := len(req.GetHeaders("Via")); n != 1 {
				t.Fatalf("%d Vias", n)
			}
			v := req.Via()
			if v.Transport != "UDP" || v.Host != "127.0.0.1" || v.Port != 5060 || !strings.HasPrefix(s.viaBranch(), "z9hG4bK") {
				t.Errorf("Via %s", v.Value())
			}
			if mf := req.MaxForwards(); mf == nil || mf.Val() != 70 {
				t.Errorf("Max-Forwards %v", mf)
			}
			if cl := req.ContentLength(); cl == nil || *cl != 5 || string(req.Body()) != "hello" {
				t.Errorf("Content-Length %v body %q", cl, req.Body())
			}
			// A second request gets its own branch.
			o2, _ := f.sendLocal(&tm.LocalRequest{Req: localReq("MESSAGE", "sip:bob@10.0.0.7:5070")})
			if o2[0].viaBranch() == s.viaBranch() {
				t.Errorf("two local requests share branch %s", s.viaBranch())
			}
		}},
		{"Dst and Socket honoured", func(t *testing.T, f *fixture) {
			o, _ := f.sendLocal(&tm.LocalRequest{Req: localReq("OPTIONS", "sip:bob@example.com"),
				Dst: core.Target{Proto: "tcp", Host: "10.0.0.8", Port: 5080}, Socket: "tcp:127.0.0.1:5060"})
			f.wantTo("OPTIONS", o[0], "tcp:10.0.0.8:5080")
			if v := o[0].req().Via(); v.Transport != "TCP" {
				t.Errorf("Via %s", v.Value())
			}
			if o[0].req().Recipient.String() != "sip:bob@example.com" {
				t.Errorf("R-URI %s", o[0].req().Recipient.String())
			}
		}},
		{"provisional and final delivered, the final once; duplicates absorbed", func(t *testing.T, f *fixture) {
			o, r := f.sendLocal(&tm.LocalRequest{Req: localReq("MESSAGE", "sip:bob@10.0.0.7:5060")})
			if x := f.reply(o[0], 100, ""); len(x) != 0 {
				t.Errorf("a reply to a local request went out:\n%s", x)
			}
			f.reply(o[0], 202, "b1")
			if x := f.reply(o[0], 202, "b1"); len(x) != 0 {
				t.Errorf("duplicate final made kamd send:\n%s", x)
			}
			f.reply(o[0], 500, "b1")
			if got := r.got(); !eqInts(got, []int{100, 202}) || r.generated[0] || r.generated[1] {
				t.Errorf("OnReply got %v (generated %v), want [100 202] received", got, r.generated)
			}
			if x := f.advance(40 * time.Second); len(x) != 0 {
				t.Errorf("sent after the final:\n%s", x)
			}
			if got := r.got(); len(got) != 2 {
				t.Errorf("OnReply got %v after the timers", got)
			}
			st := f.stats()
			if st["current"] != 0 || st["created"] != 2-1 || st["freed"] != 1 {
				t.Errorf("stats %v", st)
			}
		}},
		{"UDP non-INVITE: T1 doubling capped at T2; fr_timer gives 408 once", func(t *testing.T, f *fixture) {
			_, r := f.sendLocal(&tm.LocalRequest{Req: localReq("MESSAGE", "sip:bob@10.0.0.7:5060")})
			at := f.sendTimes("MESSAGE", 40*time.Second)
			want := ms(500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500) // 408 at fr_timer, 30 s
			if !eqDur(at, want) {
				t.Errorf("retransmissions at %v, want %v", at, want)
			}
			if got := r.got(); !eqInts(got, []int{408}) {
				t.Fatalf("OnReply got %v, want [408]", got)
			}
			if r.last.Reason != "Request Timeout" || r.last.CallID() == nil || !r.generated[0] {
				t.Errorf("408 (generated %v): %s", r.generated, r.last.String())
			}
			if tm.Generated(r.last) {
				t.Errorf("still marked generated after OnReply")
			}
			if f.stats()["timeouts"] != 1 {
				t.Errorf("timeouts %v", f.stats())
			}
		}},
		{"UDP non-INVITE: a provisional moves retransmissions to T2", func(t *testing.T, f *fixture) {
			o, r := f.sendLocal(&tm.LocalRequest{Req: localReq("MESSAGE", "sip:bob@10.0.0.7:5060")})
			f.advance(500 * time.Millisecond) // first retransmission, next due in 1 s
			f.reply(o[0], 100, "")
			at := f.sendTimes("MESSAGE", 6*time.Second)
			if !eqDur(at, ms(1000, 5000)) {
				t.Errorf("retransmissions at %v, want [1s 5s]", at)
			}
			if got := r.got(); !eqInts(got, []int{100}) {
				t.Errorf("OnReply got %v", got)
			}
		}},
		{"UDP INVITE: T1 doubling uncapped; a provisional stops it; non-2xx ACKed", func(t *testing.T, f *fixture) {
			o, r := f.sendLocal(&tm.LocalRequest{Req: localReq("INVITE", "sip:bob@10.0.0.7:5060")})
			at := f.sendTimes("INVITE", 8*time.Second)
			if !eqDur(at, ms(500, 1500, 3500, 7500)) {
				t.Errorf("retransmissions at %v", at)
			}
			f.reply(o[0], 180, "b1")
			if at := f.sendTimes("INVITE", 30*time.Second); len(at) != 0 {
				t.Errorf("retransmitted after 180 at %v", at)
			}
			x := f.reply(o[0], 486, "b1")
			acks := x.requests("ACK")
			if len(acks) != 1 || acks[0].kind != core.OutLocalRequest || acks[0].viaBranch() != o[0].viaBranch() {
				t.Fatalf("want one hop-by-hop ACK with the INVITE's branch; sent:\n%s", x)
			}
			if tag, _ := acks[0].req().To().Params.Get("tag"); tag != "b1" {
				t.Errorf("ACK To tag %q", tag)
			}
			// A retransmitted 486 is ACKed again, not delivered.
			if x := f.reply(o[0], 486, "b1"); len(x.requests("ACK")) != 1 {
				t.Errorf("retransmitted 486 not ACKed:\n%s", x)
			}
			if got := r.got(); !eqInts(got, []int{180, 486}) {
				t.Errorf("OnReply got %v", got)
			}
		}},
		{"INVITE 2xx: no ACK from tm", func(t *testing.T, f *fixture) {
			o, r := f.sendLocal(&tm.LocalRequest{Req: localReq("INVITE", "sip:bob@10.0.0.7:5060")})
			if x := f.reply(o[0], 200, "b1"); len(x) != 0 {
				t.Errorf("tm sent on a 2xx:\n%s", x)
			}
			if got := r.got(); !eqInts(got, []int{200}) {
				t.Errorf("OnReply got %v", got)
			}
		}},
		{"UDP INVITE: fr_timer without a provisional gives 408; after a provisional fr_inv_timer, then CANCEL", func(t *testing.T, f *fixture) {
			_, r := f.sendLocal(&tm.LocalRequest{Req: localReq("INVITE", "sip:bob@10.0.0.7:5060")})
			at := f.sendTimes("INVITE", 40*time.Second)
			if !eqDur(at, ms(500, 1500, 3500, 7500, 15500)) {
				t.Errorf("retransmissions at %v", at)
			}
			if got := r.got(); !eqInts(got, []int{408}) {
				t.Errorf("OnReply got %v", got)
			}
			o, r2 := f.sendLocal(&tm.LocalRequest{Req: localReq("INVITE", "sip:carol@10.0.0.7:5060")})
			f.reply(o[0], 180, "c1")
			x := f.advance(8 * time.Second) // fr_inv_timer is the 120 s default here
			if len(x) != 0 || len(r2.got()) != 1 {
				t.Errorf("ended early: %v\n%s", r2.got(), x)
			}
			x = f.advance(120 * time.Second)
			if len(x.requests("CANCEL")) != 1 {
				t.Errorf("no CANCEL after fr_inv_timer:\n%s", x)
			}
			if got := r2.got(); !eqInts(got, []int{180, 408}) {
				t.Errorf("OnReply got %v", got)
			}
		}},
		{"TCP: no retransmission, 408 at fr_timer", func(t *testing.T, f *fixture) {
			_, r := f.sendLocal(&tm.LocalRequest{Req: localReq("MESSAGE", "sip:bob@10.0.0.7:5060;transport=tcp")})
			if at := f.sendTimes("MESSAGE", 29900*time.Millisecond); len(at) != 0 {
				t.Errorf("retransmitted on TCP at %v", at)
			}
			if len(r.got()) != 0 {
				t.Errorf("OnReply early: %v", r.got())
			}
			f.advance(200 * time.Millisecond)
			if got := r.got(); !eqInts(got, []int{408}) {
				t.Errorf("OnReply got %v", got)
			}
		}},
		{"send failure: 503 delivered from a timer, not from SendRequest", func(t *testing.T, f *fixture) {
			f.rec.fail = errors.New("connection refused")
			tmi, _ := tm.Of(f.env)
			r := &replies{}
			if err := tmi.SendRequest(&tm.LocalRequest{Req: localReq("MESSAGE", "sip:bob@10.0.0.7:5060;transport=tcp"), OnReply: r.on}); err != nil {
				t.Fatal(err)
			}
			if len(r.got()) != 0 {
				t.Fatalf("delivered inside SendRequest")
			}
			f.advance(0)
			if got := r.got(); !eqInts(got, []int{503}) {
				t.Errorf("OnReply got %v", got)
			}
		}},
		{"errors: no request, no socket, foreign socket, loop, stopped", func(t *testing.T, f *fixture) {
			tmi, _ := tm.Of(f.env)
			for _, lr := range []*tm.LocalRequest{
				nil,
				{},
				{Req: localReq("MESSAGE", "sips:bob@10.0.0.7")},
				{Req: localReq("MESSAGE", "sip:bob@10.0.0.7"), Socket: "udp:10.9.9.9:5060"},
				{Req: localReq("MESSAGE", "sip:bob@10.0.0.7"), Socket: "tcp:127.0.0.1:5060"},
				{Req: localReq("MESSAGE", "sip:bob@10.0.0.7"), Socket: "bogus"},
				{Req: localReq("MESSAGE", "sip:bob@127.0.0.1:5060")},
				{Req: localReq("ACK", "sip:bob@10.0.0.7")},
			} {
				if err := tmi.SendRequest(lr); err == nil {
					t.Errorf("no error for %+v", lr)
				}
			}
			if f.rec.len() != 0 {
				t.Errorf("something was sent")
			}
			f.env.Module("tm").Stop()
			if err := tmi.SendRequest(&tm.LocalRequest{Req: localReq("MESSAGE", "sip:bob@10.0.0.7")}); !errors.Is(err, tm.ErrStopped) {
				t.Errorf("after Stop: %v", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, newFixture(t, localScript)) })
	}
}

func TestOfWithoutTM(t *testing.T) {
	if _, err := tm.Of(core.NewEnv(nil)); !errors.Is(err, tm.ErrNotLoaded) {
		t.Errorf("Of on an Env without tm: %v", err)
	}
}

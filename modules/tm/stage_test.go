package tm_test

// The tm stage of issue 15's per-stage benchmarks: a stateful proxy's
// transactions from t_relay to the final reply relayed back, on kamd's
// engine running tests/bench/route_stateful.star (record_route, t_relay,
// loose_route in dialog; what shared/bench/compare.sh measures), with a
// fixed clock. Parsing the incoming messages is not part of the stage
// (kamd/transport's parse stage measures it): every message is parsed
// before the timed/counted part. Neither is serializing what goes out
// (the serialize stage): the sender only looks at it.
//
//	go test ./modules/tm -run '^$' -bench StageTM -benchmem -count=5
//
// TestAllocBudgetTM (alloc_budget_test.go) holds each stage to its count.

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/starlark"
	"github.com/kamgo/kamgo/starlark/routetest"
)

// stageSender counts what the proxy sends by kind and keeps the top Via
// branch of the last branch request (the reply's Via must carry it). It
// allocates nothing, so a stage's count is tm's and the script's own.
type stageSender struct {
	n      [core.OutLocalRequest + 1]int
	branch string
}

func (s *stageSender) Send(o *core.Outgoing) error {
	s.n[o.Kind]++
	if o.Kind == core.OutBranch {
		if v := o.Msg.Via(); v != nil {
			s.branch, _ = v.Params.Get("branch")
		}
	}
	return nil
}

func (s *stageSender) total() int {
	t := 0
	for _, n := range s.n {
		t += n
	}
	return t
}

type stage struct {
	s     *stageSender
	clk   *routetest.FixedClock
	env   *core.Env
	eng   *starlark.Engine
	local core.Socket
	rr    string // the Record-Route kamd adds (the dialog's Route set)
	seq   int
}

func newStage(tb testing.TB) *stage {
	tb.Helper()
	script, err := os.ReadFile("../../tests/bench/route_stateful.star")
	if err != nil {
		tb.Fatal(err)
	}
	st := &stage{s: &stageSender{}, clk: routetest.NewFixedClock(routetest.RouteTestEpoch)}
	st.env = core.NewEnv(st.s)
	st.env.Clock = st.clk
	st.env.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	st.env.DBPath = tb.TempDir() + "/kamgo.db"
	st.env.SetSockets([]core.Socket{{Proto: "udp", IP: "127.0.0.1", Port: 5060}})
	st.local = st.env.Sockets()[0]
	st.eng = starlark.New(st.env)
	if _, err := st.eng.Load("route_stateful.star", script); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		for _, m := range st.eng.Modules {
			if m.Stop != nil {
				m.Stop()
			}
		}
	})
	// The Route set of the dialogs: the Record-Route of a relayed INVITE.
	rec := &recordRR{}
	st.env.Sender = rec
	c := st.prepInvite(tb, 1)[0]
	st.eng.HandleRequest(c.invite)
	if rec.rr == "" {
		tb.Fatal("the INVITE was relayed without a Record-Route")
	}
	st.rr = rec.rr
	st.env.Sender = st.s
	st.clk.Advance(time.Hour)
	return st
}

type recordRR struct{ rr string }

func (r *recordRR) Send(o *core.Outgoing) error {
	if req, ok := o.Msg.(*sip.Request); ok && o.Kind == core.OutBranch {
		if h := req.GetHeader("Record-Route"); h != nil {
			r.rr = h.Value()
		}
	}
	return nil
}

// An INVITE transaction's messages as they arrive; the replies' top Via
// branch is set once kamd's branch is known.
type inviteCall struct {
	invite, r100, r180, r200, ack *core.Msg
}

// A BYE transaction's messages.
type byeCall struct {
	bye, r200 *core.Msg
}

func (st *stage) parse(tb testing.TB, raw string, src int) *core.Msg {
	msg, err := sip.NewParser().ParseSIP([]byte(raw))
	if err != nil {
		tb.Fatalf("%v\n%s", err, raw)
	}
	m := &core.Msg{Env: st.env, Proto: "udp", SrcIP: "127.0.0.1", SrcPort: src, Local: st.local, Size: len(raw)}
	switch msg := msg.(type) {
	case *sip.Request:
		m.Req = msg
	case *sip.Response:
		m.Res = msg
	}
	return m
}

const (
	uacPort = 5080
	uasPort = 5070
	sdp     = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)

// stageReply is the callee's reply to kamd's branch request (top Via
// branch "BRANCH", replaced when it arrives).
func stageReply(code int, reason, id, via, cseq, toTag, rr, extra string) string {
	return "SIP/2.0 " + strconv.Itoa(code) + " " + reason + "\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=BRANCH\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-" + id + "-" + via + "\r\n" +
		rr +
		"From: sipp <sip:sipp@127.0.0.1:5080>;tag=" + id + "-uac\r\n" +
		"To: service <sip:service@127.0.0.1:5060>" + toTag + "\r\n" +
		"Call-ID: " + id + "@127.0.0.1\r\n" +
		"CSeq: " + cseq + "\r\n" +
		extra
}

// prepInvite parses n calls' INVITE transactions (unique Call-IDs).
func (st *stage) prepInvite(tb testing.TB, n int) []inviteCall {
	calls := make([]inviteCall, n)
	for i := range calls {
		st.seq++
		id := "stage" + strconv.Itoa(st.seq)
		rrH := ""
		if st.rr != "" {
			rrH = "Record-Route: " + st.rr + "\r\n"
		}
		contact := "Contact: <sip:127.0.0.1:5070;transport=UDP>\r\n"
		calls[i] = inviteCall{
			invite: st.parse(tb, "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n"+
				"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-"+id+"-1\r\n"+
				"From: sipp <sip:sipp@127.0.0.1:5080>;tag="+id+"-uac\r\n"+
				"To: service <sip:service@127.0.0.1:5060>\r\n"+
				"Call-ID: "+id+"@127.0.0.1\r\n"+
				"CSeq: 1 INVITE\r\n"+
				"Contact: sip:sipp@127.0.0.1:5080\r\n"+
				"Max-Forwards: 70\r\n"+
				"Subject: Performance Test\r\n"+
				"Content-Type: application/sdp\r\n"+
				"Content-Length: "+strconv.Itoa(len(sdp))+"\r\n\r\n"+sdp, uacPort),
			r100: st.parse(tb, stageReply(100, "Trying", id, "1", "1 INVITE", "", "", "Content-Length: 0\r\n\r\n"), uasPort),
			r180: st.parse(tb, stageReply(180, "Ringing", id, "1", "1 INVITE", ";tag="+id+"-uas", rrH, contact+"Content-Length: 0\r\n\r\n"), uasPort),
			r200: st.parse(tb, stageReply(200, "OK", id, "1", "1 INVITE", ";tag="+id+"-uas", rrH,
				contact+"Content-Type: application/sdp\r\nContent-Length: "+strconv.Itoa(len(sdp))+"\r\n\r\n"+sdp), uasPort),
			ack: st.parse(tb, "ACK sip:127.0.0.1:5070;transport=UDP SIP/2.0\r\n"+
				"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-"+id+"-1a\r\n"+
				"Route: "+st.rr+"\r\n"+
				"From: sipp <sip:sipp@127.0.0.1:5080>;tag="+id+"-uac\r\n"+
				"To: service <sip:service@127.0.0.1:5060>;tag="+id+"-uas\r\n"+
				"Call-ID: "+id+"@127.0.0.1\r\n"+
				"CSeq: 1 ACK\r\n"+
				"Contact: sip:sipp@127.0.0.1:5080\r\n"+
				"Max-Forwards: 70\r\n"+
				"Subject: Performance Test\r\n"+
				"Content-Length: 0\r\n\r\n", uacPort),
		}
	}
	return calls
}

// prepBye parses n calls' BYE transactions.
func (st *stage) prepBye(tb testing.TB, n int) []byeCall {
	calls := make([]byeCall, n)
	for i := range calls {
		st.seq++
		id := "stage" + strconv.Itoa(st.seq)
		calls[i] = byeCall{
			bye: st.parse(tb, "BYE sip:127.0.0.1:5070;transport=UDP SIP/2.0\r\n"+
				"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-"+id+"-2\r\n"+
				"Route: "+st.rr+"\r\n"+
				"From: sipp <sip:sipp@127.0.0.1:5080>;tag="+id+"-uac\r\n"+
				"To: service <sip:service@127.0.0.1:5060>;tag="+id+"-uas\r\n"+
				"Call-ID: "+id+"@127.0.0.1\r\n"+
				"CSeq: 2 BYE\r\n"+
				"Contact: sip:sipp@127.0.0.1:5080\r\n"+
				"Max-Forwards: 70\r\n"+
				"Subject: Performance Test\r\n"+
				"Content-Length: 0\r\n\r\n", uacPort),
			r200: st.parse(tb, stageReply(200, "OK", id, "2", "2 BYE", ";tag="+id+"-uas", "", "Content-Length: 0\r\n\r\n"), uasPort),
		}
	}
	return calls
}

// reply hands kamd the callee's reply to the last branch request.
func (st *stage) reply(m *core.Msg) {
	m.Res.Via().Params.Add("branch", st.s.branch)
	m.Arrived = st.clk.Now()
	st.eng.HandleReply(m)
}

func (st *stage) request(m *core.Msg) {
	m.Arrived = st.clk.Now()
	st.eng.HandleRequest(m)
}

// wait is past wait_timer: the finished transaction is retired.
const wait = 6 * time.Second

// runInvite is one INVITE transaction: relayed with 100 Trying, 100
// absorbed, 180 and 200 relayed up, the ACK routed in dialog, retired.
func (st *stage) runInvite(c *inviteCall) error {
	before := st.s.n
	st.request(c.invite)
	st.reply(c.r100)
	st.reply(c.r180)
	st.reply(c.r200)
	st.request(c.ack)
	st.clk.Advance(wait)
	n := st.s.n
	if n[core.OutBranch]-before[core.OutBranch] != 1 || n[core.OutReply]-before[core.OutReply] != 1 ||
		n[core.OutRelayedReply]-before[core.OutRelayedReply] != 2 || n[core.OutForward]-before[core.OutForward] != 1 {
		return fmt.Errorf("INVITE transaction sent %v, want 1 branch, 1 local reply (100), 2 relayed replies, 1 ACK (before %v)", n, before)
	}
	return nil
}

// runBye is one BYE transaction: relayed by loose_route, 200 relayed up, retired.
func (st *stage) runBye(c *byeCall) error {
	before := st.s.n
	st.request(c.bye)
	st.reply(c.r200)
	st.clk.Advance(wait)
	n := st.s.n
	if n[core.OutBranch]-before[core.OutBranch] != 1 || n[core.OutRelayedReply]-before[core.OutRelayedReply] != 1 || st.s.total()-sum(before) != 2 {
		return fmt.Errorf("BYE transaction sent %v, want 1 branch and 1 relayed reply (before %v)", n, before)
	}
	return nil
}

func sum(a [core.OutLocalRequest + 1]int) int {
	t := 0
	for _, n := range a {
		t += n
	}
	return t
}

// batch is how many transactions are parsed ahead at a time.
const batch = 512

func BenchmarkStageTMInvite(b *testing.B) {
	st := newStage(b)
	b.ReportAllocs()
	b.StopTimer()
	var calls []inviteCall
	for i := 0; i < b.N; i++ {
		if len(calls) == 0 {
			calls = st.prepInvite(b, min(batch, b.N-i))
			runtime.GC()
			b.StartTimer()
		}
		if err := st.runInvite(&calls[0]); err != nil {
			b.Fatal(err)
		}
		calls = calls[1:]
		if len(calls) == 0 {
			b.StopTimer()
		}
	}
}

func BenchmarkStageTMNonInvite(b *testing.B) {
	st := newStage(b)
	b.ReportAllocs()
	b.StopTimer()
	var calls []byeCall
	for i := 0; i < b.N; i++ {
		if len(calls) == 0 {
			calls = st.prepBye(b, min(batch, b.N-i))
			runtime.GC()
			b.StartTimer()
		}
		if err := st.runBye(&calls[0]); err != nil {
			b.Fatal(err)
		}
		calls = calls[1:]
		if len(calls) == 0 {
			b.StopTimer()
		}
	}
}

// BenchmarkActiveInviteTx reports the heap an INVITE transaction holds
// while it waits for its final reply (relayed, 100 sent, 180 relayed
// up; fr_inv_timer running): what issue 15's "RSS per 10,000 active
// stateful transactions" is made of. MB/10k-active is the same for
// 10,000 of them (Go's heap; RSS adds the GC's headroom, GOGC).
func BenchmarkActiveInviteTx(b *testing.B) {
	const n = 10000
	var before, after runtime.MemStats
	for b.Loop() {
		// A stage per round: retiring 10,000 transactions on the fixed
		// clock (which sorts its timers at each one) would take minutes.
		st := newStage(b)
		// The baseline is taken before parsing: what the transactions keep
		// of their messages is theirs, what they drop is not counted.
		runtime.GC()
		runtime.ReadMemStats(&before)
		calls := st.prepInvite(b, n)
		for i := range calls {
			c := &calls[i]
			st.request(c.invite)
			st.reply(c.r100)
			st.reply(c.r180)
			calls[i] = inviteCall{} // only kamd keeps them now
		}
		calls = nil
		runtime.GC()
		runtime.ReadMemStats(&after)
		per := float64(after.HeapAlloc-before.HeapAlloc) / n
		b.ReportMetric(per, "B/active-tx")
		b.ReportMetric(per*10000/(1<<20), "MB/10k-active")
		for _, m := range st.eng.Modules {
			if m.Stop != nil {
				m.Stop()
			}
		}
	}
}

package tm_test

// Transaction bookkeeping benchmarks: a stateful INVITE relay with
// Record-Route, its 200 OK matched and relayed upstream, and the
// transaction released when wait_timer fires (fixed clock).
//
//	go test ./modules/tm -run '^$' -bench . -benchmem

import (
	"github.com/kamgo/kamgo/starlark/routetest"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/starlark"
)

const benchStatefulScript = `
def ksr_request_route():
    if KSR.rr.loose_route() > 0:
        KSR.tm.t_relay()
        return 1
    if KSR.is_ACK():
        if KSR.tm.t_check_trans() > 0:
            KSR.tm.t_relay()
        return 1
    if KSR.is_INVITE():
        KSR.rr.record_route()
    KSR.sethost("127.0.0.1")
    KSR.pv.seti("$rp", 5070)
    KSR.tm.t_relay()
    return 1
`

const benchInviteTmpl = "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-bench-BRANCH\r\n" +
	"From: sipp <sip:sipp@127.0.0.1:5080>;tag=1234SIPpTag001\r\n" +
	"To: service <sip:service@127.0.0.1:5060>\r\n" +
	"Call-ID: BRANCH-1234@127.0.0.1\r\n" +
	"CSeq: 1 INVITE\r\n" +
	"Contact: sip:sipp@127.0.0.1:5080\r\n" +
	"Max-Forwards: 70\r\n" +
	"Subject: Performance Test\r\n" +
	"Content-Type: application/sdp\r\n" +
	"Content-Length: 129\r\n\r\n" +
	"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"

// lastSender keeps the last request and counts what was sent.
type lastSender struct {
	req *sip.Request
	n   int
}

func (s *lastSender) Send(o *core.Outgoing) error {
	s.n++
	if r, ok := o.Msg.(*sip.Request); ok {
		s.req = r.Clone() // the sender's message is only valid during Send
	}
	return nil
}

// benchEngine is kamd's engine on the stateful benchmark script, with a
// fixed clock and a sender that keeps the last request.
func benchEngine(b *testing.B) (*lastSender, *routetest.FixedClock, *core.Env, *starlark.Engine) {
	b.Helper()
	s := &lastSender{}
	clk := routetest.NewFixedClock(routetest.RouteTestEpoch)
	env := core.NewEnv(s)
	env.Clock = clk
	env.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	env.DBPath = b.TempDir() + "/kamgo.db"
	env.SetSockets([]core.Socket{{Proto: "udp", IP: "127.0.0.1", Port: 5060}})
	eng := starlark.New(env)
	if _, err := eng.Load("bench.star", []byte(benchStatefulScript)); err != nil {
		b.Fatal(err)
	}
	return s, clk, env, eng
}

// BenchmarkStatefulInviteTransaction: parse INVITE → t_relay (new
// transaction, branch, RR) → 200 OK matched and relayed up → release by
// wait_timer. Parsing the INVITE (~10 us here, see kamd/transport) is included.
func BenchmarkStatefulInviteTransaction(b *testing.B) {
	s, clk, env, eng := benchEngine(b)
	defer func() {
		for _, m := range eng.Modules {
			if m.Stop != nil {
				m.Stop()
			}
		}
	}()
	parser := sip.NewParser()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		raw := strings.ReplaceAll(benchInviteTmpl, "BRANCH", strconv.Itoa(i))
		msg, err := parser.ParseSIP([]byte(raw))
		if err != nil {
			b.Fatal(err)
		}
		s.req = nil
		eng.HandleRequest(&core.Msg{Env: env, Req: msg.(*sip.Request), Proto: "udp", SrcIP: "127.0.0.1", SrcPort: 5080, Local: env.Sockets()[0], Arrived: clk.Now()})
		if s.req == nil {
			b.Fatal("INVITE not relayed")
		}
		res := core.BuildReply(s.req, 200, "OK", nil)
		eng.HandleReply(&core.Msg{Env: env, Res: res, Proto: "udp", SrcIP: "127.0.0.1", SrcPort: 5070, Local: env.Sockets()[0], Arrived: clk.Now()})
		if i%64 == 0 {
			clk.Advance(10 * time.Second) // past wait_timer: release finished transactions
		}
	}
	if s.n < 2*i {
		b.Fatalf("sent %d messages for %d transactions", s.n, i)
	}
}

// BenchmarkRetainedPerFinishedTx measures the heap a finished INVITE
// transaction keeps while wait_timer holds it for retransmissions (the
// state issue 4 compares with Kamailio's per-transaction memory).
//
// Each round runs on an engine of its own, warmed up by a few calls
// (what the first ones set up once is not counted), then measured (its
// tables' growth included): on one engine the fixed clock's timer list keeps stale
// pointers to fired timers (and their transactions) from round to round,
// which made the baseline of the next round include them.
func BenchmarkRetainedPerFinishedTx(b *testing.B) {
	const n = 2000
	var before, after runtime.MemStats
	for b.Loop() {
		s, clk, env, eng := benchEngine(b)
		parser := sip.NewParser()
		warmUp(b, s, clk, env, eng)
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := 0; i < n; i++ {
			benchInvite(b, parser, env, eng, strconv.Itoa(i)+"x"+strconv.Itoa(b.N))
			benchAnswer(s, env, eng)
		}
		s.req = nil
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "retained-B/tx")
		stopModules(eng)
	}
}

// BenchmarkRetainedPerPendingTx measures the heap an INVITE transaction
// holds while its next hop does not answer (a flood towards a dead next
// hop): what max_transactions_mem's per-transaction estimate stands for.
// An engine per round, as above.
func BenchmarkRetainedPerPendingTx(b *testing.B) {
	const n = 2000
	var before, after runtime.MemStats
	for b.Loop() {
		s, clk, env, eng := benchEngine(b)
		parser := sip.NewParser()
		warmUp(b, s, clk, env, eng)
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := 0; i < n; i++ {
			benchInvite(b, parser, env, eng, strconv.Itoa(i)+"p"+strconv.Itoa(b.N))
		}
		s.req = nil
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "retained-B/tx")
		b.ReportMetric(float64(len(benchInviteTmpl)), "msg-B")
		stopModules(eng)
	}
}

// benchInvite routes one INVITE of benchInviteTmpl with this branch.
func benchInvite(b *testing.B, parser *sip.Parser, env *core.Env, eng *starlark.Engine, branch string) {
	raw := strings.ReplaceAll(benchInviteTmpl, "BRANCH", branch)
	msg, err := parser.ParseSIP([]byte(raw))
	if err != nil {
		b.Fatal(err)
	}
	eng.HandleRequest(&core.Msg{Env: env, Req: msg.(*sip.Request), Proto: "udp", SrcIP: "127.0.0.1", SrcPort: 5080, Local: env.Sockets()[0]})
}

// benchAnswer has the next hop answer 200 to the request kamd sent last.
func benchAnswer(s *lastSender, env *core.Env, eng *starlark.Engine) {
	res := core.BuildReply(s.req, 200, "OK", nil)
	eng.HandleReply(&core.Msg{Env: env, Res: res, Proto: "udp", SrcIP: "127.0.0.1", SrcPort: 5070, Local: env.Sockets()[0]})
}

// warmUp runs a few whole INVITE transactions through eng and frees them.
func warmUp(b *testing.B, s *lastSender, clk *routetest.FixedClock, env *core.Env, eng *starlark.Engine) {
	parser := sip.NewParser()
	for i := 0; i < 64; i++ {
		benchInvite(b, parser, env, eng, "warm"+strconv.Itoa(i))
		benchAnswer(s, env, eng)
	}
	s.req = nil
	clk.Advance(10 * time.Second)
}

func stopModules(eng *starlark.Engine) {
	for _, m := range eng.Modules {
		if m.Stop != nil {
			m.Stop()
		}
	}
}

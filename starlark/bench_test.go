package starlark

// Route-stage benchmarks: the stateless bench script of tests/bench/route.star
// run through Engine.HandleRequest with a discarding Sender.
//
//	go test ./starlark -run '^$' -bench . -benchmem

import (
	"testing"

	"github.com/kamgo/kamgo/modules/moduletest/sippmsg"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	_ "github.com/kamgo/kamgo/modules/sl"
)

// discard is a Sender that serialises like the transport does, then drops.
type discard struct{ n int }

func (d *discard) Send(o *core.Outgoing) error {
	d.n++
	return nil
}

func benchEngine(b testing.TB) (*Engine, *discard) {
	b.Helper()
	d := &discard{}
	env := core.NewEnv(d)
	env.SetSockets([]core.Socket{{Proto: "udp", IP: "127.0.0.1", Port: 5060}})
	e := New(env)
	// The Starlark twin of ../shared/bench/kamailio/route.lua, as benchmarked against Kamailio.
	if _, err := e.LoadFile("../tests/bench/route.star"); err != nil {
		b.Fatal(err)
	}
	return e, d
}

func benchParse(b testing.TB, raw string) *sip.Request {
	b.Helper()
	m, err := sip.NewParser().ParseSIP([]byte(raw))
	if err != nil {
		b.Fatal(err)
	}
	return m.(*sip.Request)
}

func newBenchMsg(e *Engine, req *sip.Request, srcPort int) *core.Msg {
	return &core.Msg{Env: e.Env, Req: req, Proto: "udp", SrcIP: "127.0.0.1", SrcPort: srcPort, Local: e.Env.Sockets()[0]}
}

// BenchmarkRouteRegister: REGISTER → KSR.sl.send_reply(200) (BuildReply
// included, serialisation not: the Sender discards).
func BenchmarkRouteRegister(b *testing.B) {
	e, d := benchEngine(b)
	req := benchParse(b, sippmsg.Register)
	b.ReportAllocs()
	for b.Loop() {
		e.HandleRequest(newBenchMsg(e, req, 5090))
	}
	if d.n == 0 {
		b.Fatal("nothing sent")
	}
}

// BenchmarkRouteInvite: INVITE → hdr.append, sethost, pv.seti("$rp"),
// forward (Via prepend/pop included, serialisation not). The message is
// restored after each run (X-KEMI removed, R-URI put back).
func BenchmarkRouteInvite(b *testing.B) {
	e, d := benchEngine(b)
	req := benchParse(b, sippmsg.Invite)
	ruri := req.Recipient
	b.ReportAllocs()
	for b.Loop() {
		e.HandleRequest(newBenchMsg(e, req, 5080))
		req.RemoveHeader("X-KEMI")
		req.Recipient = ruri
	}
	if d.n == 0 {
		b.Fatal("nothing sent")
	}
}

// BenchmarkRouteParallel: REGISTER routing on every P, to see pool contention.
func BenchmarkRouteRegisterParallel(b *testing.B) {
	e, _ := benchEngine(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := benchParse(b, sippmsg.Register)
		for pb.Next() {
			e.HandleRequest(newBenchMsg(e, req, 5090))
		}
	})
}

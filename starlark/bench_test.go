package starlark

// Route-stage benchmarks: the stateless bench script of tests/bench/route.star
// run through Engine.HandleRequest with a discarding Sender.
//
//	go test ./starlark -run '^$' -bench . -benchmem

import (
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	_ "github.com/kamgo/kamgo/modules/sl"
)

const benchScript = `
def ksr_request_route():
    if KSR.is_method("REGISTER"):
        KSR.sl.send_reply(200, "OK")
    elif KSR.is_method_in("IABC"):
        KSR.hdr.append("X-KEMI: I came from KEMI at 127.0.0.1\r\n")
        KSR.sethost("127.0.0.1")
        KSR.pv.seti("$rp", 5070)
        KSR.forward()
    else:
        KSR.sl.send_reply(500, "Got no idea...")
    return 1

def ksr_reply_route():
    return 1
`

// What sipp's built-in uac scenario and tests/bench register.xml send.
const benchInvite = "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-1234-1-0\r\n" +
	"From: sipp <sip:sipp@127.0.0.1:5080>;tag=1234SIPpTag001\r\n" +
	"To: service <sip:service@127.0.0.1:5060>\r\n" +
	"Call-ID: 1-1234@127.0.0.1\r\n" +
	"CSeq: 1 INVITE\r\n" +
	"Contact: sip:sipp@127.0.0.1:5080\r\n" +
	"Max-Forwards: 70\r\n" +
	"Subject: Performance Test\r\n" +
	"Content-Type: application/sdp\r\n" +
	"Content-Length: 129\r\n\r\n" +
	"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"

const benchRegister = "REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-1234-1-0\r\n" +
	"Max-Forwards: 70\r\n" +
	"From: <sip:user1@127.0.0.1>;tag=1\r\n" +
	"To: <sip:user1@127.0.0.1>\r\n" +
	"Call-ID: 1-1234@127.0.0.1\r\n" +
	"CSeq: 1 REGISTER\r\n" +
	"Contact: <sip:user1@127.0.0.1:5090>\r\n" +
	"Expires: 3600\r\n" +
	"Content-Length: 0\r\n\r\n"

// discard is a Sender that serialises like the transport does, then drops.
type discard struct{ n int }

func (d *discard) Send(o *core.Outgoing) error {
	d.n++
	return nil
}

func benchEngine(b *testing.B) (*Engine, *discard) {
	b.Helper()
	d := &discard{}
	env := core.NewEnv(d)
	env.Sockets = []core.Socket{{Proto: "udp", IP: "127.0.0.1", Port: 5060}}
	e := New(env)
	if _, err := e.Load("bench.star", []byte(benchScript)); err != nil {
		b.Fatal(err)
	}
	return e, d
}

func benchParse(b *testing.B, raw string) *sip.Request {
	b.Helper()
	m, err := sip.NewParser().ParseSIP([]byte(raw))
	if err != nil {
		b.Fatal(err)
	}
	return m.(*sip.Request)
}

func newBenchMsg(e *Engine, req *sip.Request, srcPort int) *core.Msg {
	return &core.Msg{Env: e.Env, Req: req, Proto: "udp", SrcIP: "127.0.0.1", SrcPort: srcPort, Local: e.Env.Sockets[0]}
}

// BenchmarkRouteRegister: REGISTER → KSR.sl.send_reply(200) (BuildReply
// included, serialisation not: the Sender discards).
func BenchmarkRouteRegister(b *testing.B) {
	e, d := benchEngine(b)
	req := benchParse(b, benchRegister)
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
	req := benchParse(b, benchInvite)
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
		req := benchParse(b, benchRegister)
		for pb.Next() {
			e.HandleRequest(newBenchMsg(e, req, 5090))
		}
	})
}

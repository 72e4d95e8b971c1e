package transport

// Per-stage benchmarks (issue 15): the parse stage (raw bytes → parsed
// message and the door's checks, as process does them) and the whole
// stateless path without sockets (parse → route → serialise; the
// transport's sendHook takes the bytes). TestAllocBudgets runs the same
// operations in plain `go test` and fails when one allocates more than
// its budget.
//
//	go test ./kamd/transport -run '^$' -bench Stage -benchmem

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/moduletest/allocbudget"
	"github.com/kamgo/kamgo/modules/moduletest/sippmsg"
	"github.com/kamgo/kamgo/starlark"
)

// stageParse: what process does with a datagram before routing: parse
// with the reader's parser, WireProblem on the bytes, then RequestRefusal
// or ReplyProblem on the parsed message.
func stageParse(raw string) func(testing.TB) func() {
	return func(tb testing.TB) func() {
		data := []byte(raw)
		p := sip.NewParser()
		return func() {
			msg, err := p.ParseSIP(data)
			if err != nil {
				tb.Fatal(err)
			}
			if code, why := core.WireProblem(msg, data, true); code != 0 {
				tb.Fatal(why)
			}
			switch x := msg.(type) {
			case *sip.Request:
				if code, why := core.RequestRefusal(x); code != 0 {
					tb.Fatal(why)
				}
			case *sip.Response:
				if why := core.ReplyProblem(x); why != "" {
					tb.Fatal(why)
				}
			}
		}
	}
}

// stageSink counts what the path stage sends.
type stageSink struct{ n, bytes int }

// stagePath: one datagram through process as the UDP reader hands it over
// inline: parse, door, the bench script (tests/bench/route.star: sl reply
// to a REGISTER, forward of an INVITE with a header added and the R-URI
// changed, a 200 relayed by its Via), serialise into the pooled buffer.
func stagePath(raw string, srcPort int) func(testing.TB) func() {
	return func(tb testing.TB) func() {
		env := core.NewEnv(nil)
		eng := starlark.New(env)
		if _, err := eng.LoadFile("../../tests/bench/route.star"); err != nil {
			tb.Fatal(err)
		}
		env.SetSockets([]core.Socket{{Proto: "udp", IP: "127.0.0.1", Port: 5060}})
		tr := New(env, eng, Config{Workers: 1})
		sink := &stageSink{}
		tr.sendHook = func(o *core.Outgoing, data []byte) error {
			sink.n++
			sink.bytes += len(data)
			return nil
		}
		env.Sender = eng.WrapSender(tr)
		p := sip.NewParser()
		data := []byte(raw)
		j := job{sock: env.Sockets()[0], proto: "udp", srcIP: "127.0.0.1", srcPort: srcPort, data: data, size: len(data)}
		return func() {
			n := sink.n
			tr.process(p, j)
			if sink.n != n+1 {
				tb.Fatalf("%d messages sent, want 1", sink.n-n)
			}
		}
	}
}

// stageSend: serialise and send over a real UDP socket, as a route's
// reply or forward ends: Transport.Send with the arrival-socket lookup
// and the raw sendto (which the path stage's sendHook skips). The peer is
// a socket of the test on a free port, never read (the kernel drops what
// does not fit).
func stageSend(forward bool) func(testing.TB) func() {
	return func(tb testing.TB) func() {
		sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { sink.Close() })
		port := sink.LocalAddr().(*net.UDPAddr).Port
		env := core.NewEnv(nil)
		tr := New(env, nil, Config{Workers: 1})
		socks, err := tr.Listen(context.Background(), []core.Socket{{Proto: "udp", IP: "127.0.0.1", Port: 0}})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(tr.Close)
		env.SetSockets(socks)
		env.Sender = tr
		raw := strings.Replace(sippmsg.Register, "127.0.0.1:5090", fmt.Sprintf("127.0.0.1:%d", port), 1)
		if forward {
			raw = sippmsg.Invite
		}
		msg, err := sip.NewParser().ParseSIP([]byte(raw))
		if err != nil {
			tb.Fatal(err)
		}
		req := msg.(*sip.Request)
		m := &core.Msg{Env: env, Req: req, Proto: "udp", SrcIP: "127.0.0.1", SrcPort: port, Local: socks[0]}
		dst := core.Target{Proto: "udp", Host: "127.0.0.1", Port: port}
		return func() {
			if forward {
				err = m.SendRequest(req, dst, core.OutForward, core.StatelessBranch(req), 0)
			} else {
				err = m.SendReply(200, "OK")
			}
			if err != nil {
				tb.Fatal(err)
			}
		}
	}
}

var (
	stageSendReply     = stageSend(false)
	stageSendForward   = stageSend(true)
	stageParseRegister = stageParse(sippmsg.Register)
	stageParseInvite   = stageParse(sippmsg.Invite)
	stageParseReply    = stageParse(sippmsg.Reply200)
	stagePathRegister  = stagePath(sippmsg.Register, 5090)
	stagePathInvite    = stagePath(sippmsg.Invite, 5080)
	stagePathReply     = stagePath(sippmsg.Reply200, 5070)
)

func benchStage(b *testing.B, setup func(testing.TB) func()) {
	op := setup(b)
	b.ReportAllocs()
	for b.Loop() {
		op()
	}
}

func BenchmarkStageParseRegister(b *testing.B) { benchStage(b, stageParseRegister) }
func BenchmarkStageParseInvite(b *testing.B)   { benchStage(b, stageParseInvite) }
func BenchmarkStageParseReply(b *testing.B)    { benchStage(b, stageParseReply) }
func BenchmarkStageSendReply(b *testing.B)     { benchStage(b, stageSendReply) }
func BenchmarkStageSendForward(b *testing.B)   { benchStage(b, stageSendForward) }
func BenchmarkStagePathRegister(b *testing.B)  { benchStage(b, stagePathRegister) }
func BenchmarkStagePathInvite(b *testing.B)    { benchStage(b, stagePathInvite) }
func BenchmarkStagePathReply(b *testing.B)     { benchStage(b, stagePathReply) }

// TestAllocBudgets guards the allocation counts of the stages above (see
// allocbudget.Check; the budgets are the counts measured with -benchmem).
func TestAllocBudgets(t *testing.T) {
	allocbudget.Check(t, []allocbudget.Stage{
		{Name: "ParseRegister", Budget: 29, Setup: stageParseRegister},
		{Name: "ParseInvite", Budget: 34, Setup: stageParseInvite},
		{Name: "ParseReply", Budget: 32, Setup: stageParseReply},
		{Name: "SendReply", Budget: 3, Setup: stageSendReply},
		{Name: "SendForward", Budget: 3, Setup: stageSendForward},
		{Name: "PathRegister", Budget: 36, Setup: stagePathRegister},
		{Name: "PathInvite", Budget: 47, Setup: stagePathInvite},
		{Name: "PathReply", Budget: 35, Setup: stagePathReply},
	})
}

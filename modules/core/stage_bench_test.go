package core

// Per-stage benchmarks (issue 15), serialize stage: building the outgoing
// message and writing its bytes, as the transport's Sender does (into a
// reused buffer). TestAllocBudgets runs the same operations in plain
// `go test` and fails when one allocates more than its budget.
//
//	go test ./modules/core -run '^$' -bench Stage -benchmem

import (
	"testing"

	"github.com/kamgo/kamgo/modules/moduletest/allocbudget"
	"github.com/kamgo/kamgo/modules/moduletest/sippmsg"
)

// stageSerializeReply: the sl reply to a REGISTER (no transaction), as
// KSR.sl.send_reply does: BuildReply, address it by the Via, serialise.
func stageSerializeReply(tb testing.TB) func() {
	env, s := benchEnv()
	req := benchReq(tb, sippmsg.Register)
	m := &Msg{Env: env, Req: req, Proto: "udp", SrcIP: "127.0.0.1", SrcPort: 5090,
		Local: Socket{Proto: "udp", IP: "127.0.0.1", Port: 5060}}
	return func() {
		if err := m.Reply(200, "OK"); err != nil || s.n == 0 {
			tb.Fatalf("reply: %v, %d bytes", err, s.n)
		}
	}
}

// stageSerializeForward: KSR.forward of an INVITE whose R-URI was changed
// and which got a header (the bench script's hdr.append + sethost +
// $rp): next hop, stateless branch, our Via, serialise, Via popped.
func stageSerializeForward(tb testing.TB) func() {
	env, s := benchEnv()
	req := benchReq(tb, sippmsg.Invite)
	m := &Msg{Env: env, Req: req, Proto: "udp", SrcIP: "127.0.0.1", SrcPort: 5080,
		Local: Socket{Proto: "udp", IP: "127.0.0.1", Port: 5060}}
	hs, err := ParseHeaderText("X-KEMI: I came from KEMI at 127.0.0.1\r\n")
	if err != nil {
		tb.Fatal(err)
	}
	req.AppendHeader(hs[0])
	if err := m.SetRURIHost("127.0.0.2"); err != nil {
		tb.Fatal(err)
	}
	if err := m.SetRURIPort(5070); err != nil {
		tb.Fatal(err)
	}
	return func() {
		s.n = 0
		if v, err := forward(m, ""); err != nil || v.Int != 1 || s.n == 0 {
			tb.Fatalf("forward: %v %v, %d bytes", v, err, s.n)
		}
	}
}

func benchStage(b *testing.B, setup func(testing.TB) func()) {
	op := setup(b)
	b.ReportAllocs()
	for b.Loop() {
		op()
	}
}

// BenchmarkStageSerializeReply: sl reply to a REGISTER, built and written.
func BenchmarkStageSerializeReply(b *testing.B) { benchStage(b, stageSerializeReply) }

// BenchmarkStageSerializeForward: the stateless forward of an INVITE with
// an added header and a changed R-URI, written.
func BenchmarkStageSerializeForward(b *testing.B) { benchStage(b, stageSerializeForward) }

// TestAllocBudgets guards the allocation counts of the stages above (see
// allocbudget.Check; the budgets are the counts measured with -benchmem).
func TestAllocBudgets(t *testing.T) {
	allocbudget.Check(t, []allocbudget.Stage{
		{Name: "SerializeReply", Budget: 3, Setup: stageSerializeReply},
		{Name: "SerializeForward", Budget: 3, Setup: stageSerializeForward},
	})
}

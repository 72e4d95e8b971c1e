package starlark

// Per-stage benchmarks (issue 15), route stage: the bench script
// (tests/bench/route.star) run by HandleRequest on a parsed message, the
// Sender discarding (BuildReply and the forward's Via handling included,
// serialisation not). TestAllocBudgets runs the same operations in plain
// `go test` and fails when one allocates more than its budget.
//
//	go test ./starlark -run '^$' -bench Stage -benchmem

import (
	"testing"

	"github.com/kamgo/kamgo/modules/moduletest/allocbudget"
	"github.com/kamgo/kamgo/modules/moduletest/sippmsg"
)

// stageRouteRegister: REGISTER → KSR.sl.send_reply(200, "OK").
func stageRouteRegister(tb testing.TB) func() {
	e, d := benchEngine(tb)
	req := benchParse(tb, sippmsg.Register)
	return func() {
		n := d.n
		e.HandleRequest(newBenchMsg(e, req, 5090))
		if d.n != n+1 {
			tb.Fatal("no reply sent")
		}
	}
}

// stageRouteInvite: INVITE → hdr.append, sethost, pv.seti("$rp"),
// forward. The message is restored after each run (X-KEMI removed, R-URI
// put back), outside the measured script run but inside the op.
func stageRouteInvite(tb testing.TB) func() {
	e, d := benchEngine(tb)
	req := benchParse(tb, sippmsg.Invite)
	ruri := req.Recipient
	return func() {
		n := d.n
		e.HandleRequest(newBenchMsg(e, req, 5080))
		if d.n != n+1 {
			tb.Fatal("nothing forwarded")
		}
		req.RemoveHeader("X-KEMI")
		req.Recipient = ruri
	}
}

func benchStage(b *testing.B, setup func(testing.TB) func()) {
	op := setup(b)
	b.ReportAllocs()
	for b.Loop() {
		op()
	}
}

// BenchmarkStageRouteRegister is BenchmarkRouteRegister under its stage name.
func BenchmarkStageRouteRegister(b *testing.B) { benchStage(b, stageRouteRegister) }

// BenchmarkStageRouteInvite is BenchmarkRouteInvite under its stage name.
func BenchmarkStageRouteInvite(b *testing.B) { benchStage(b, stageRouteInvite) }

// TestAllocBudgets guards the allocation counts of the stages above (see
// allocbudget.Check; the budgets are the counts measured with -benchmem).
func TestAllocBudgets(t *testing.T) {
	allocbudget.Check(t, []allocbudget.Stage{
		{Name: "RouteRegister", Budget: 7, Setup: stageRouteRegister},
		{Name: "RouteInvite", Budget: 12, Setup: stageRouteInvite},
	})
}

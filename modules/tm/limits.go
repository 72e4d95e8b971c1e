package tm

import (
	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

// The transaction table is bounded (max_transactions, max_transactions_mem)
// so a flood of requests towards a next hop that never answers cannot grow
// kamd without limit: each INVITE transaction lives fr_timer plus Timer H
// (≈ 62 s) and holds copies of its request. Beyond the bound a new
// transaction is refused with a stateless 503 (tm:refused_overload).
// INVITEs may use only inviteShare of it: the rest stays for non-INVITE
// requests (REGISTER, OPTIONS, BYE), which keep being served meanwhile.

const (
	// DefaultMaxTransactionsMem is max_transactions_mem's default, in MB
	// of estimated transaction memory (≈ 18 000 pending INVITEs of 500 B).
	DefaultMaxTransactionsMem = 128
	// txBaseBytes and txBytesPerByte estimate what a pending transaction
	// holds: measured 5.4 KB for a 513-byte INVITE relayed over UDP with
	// no answer, 7.6 KB once a 180 was relayed (BenchmarkRetainedPerPendingTx,
	// BenchmarkActiveInviteTx, issue 15): the request as received, the
	// transaction's copy, timers and bookkeeping.
	txBaseBytes    = 4096
	txBytesPerByte = 6
	// A finished transaction waiting out wait_timer keeps only what answers
	// a retransmission: measured 3.2 KB (BenchmarkRetainedPerFinishedTx),
	// about 45 % of a pending one's estimate. At 2000 calls/s the
	// transactions in wait_timer alone (20 000) were estimated at 136 MB
	// before, over the 115 MB INVITEs may use: calls were refused 503
	// with kamd far from that much memory.
	txFinishedPct = 45
	// An INVITE may take inviteSharePct % of either bound.
	inviteSharePct = 90
)

// txCost estimates the memory of m's transaction.
func txCost(m *core.Msg) int64 {
	size := m.Size
	if size <= 0 {
		size = 1024 // not from the network (route tests, local requests)
	}
	return txBaseBytes + txBytesPerByte*int64(size)
}

// txFinishedCost is the estimate of a finished transaction whose pending
// estimate was cost.
func txFinishedCost(cost int64) int64 { return cost * txFinishedPct / 100 }

// admit reports whether a new transaction for m fits; if not it answers
// 503 (Retry-After) statelessly, counts it and returns false.
func (t *TM) admit(m *core.Msg) bool {
	maxN, maxB := t.maxTx.Load(), t.maxTxMem.Load()<<20
	if m.Req.IsInvite() {
		maxN, maxB = maxN*inviteSharePct/100, maxB*inviteSharePct/100
	}
	cost := txCost(m)
	if (maxN <= 0 || t.st.current.Value() < maxN) && (maxB <= 0 || t.txBytes.Load()+cost <= maxB) {
		return true
	}
	if m.Req.IsInvite() {
		t.env.ShedInvites.Store(true) // cleared by release once there is room
	}
	t.st.refused.Inc()
	t.env.Log.Debug("tm: transaction table full; 503", "method", string(m.Req.Method), "current", t.st.current.Value(),
		"est_bytes", t.txBytes.Load(), "at", m.Pos())
	m.ReplyHeaders = append(m.ReplyHeaders, sip.NewHeader("Retry-After", "5"))
	if err := m.SendReply(503, "Service Unavailable"); err != nil {
		t.env.Log.Debug("tm: 503 not sent", "err", err)
	}
	return false
}

// roomForInvite reports whether an INVITE of average size would fit again
// (release clears Env.ShedInvites with it).
func (t *TM) roomForInvite() bool {
	maxN, maxB := t.maxTx.Load()*inviteSharePct/100, (t.maxTxMem.Load()<<20)*inviteSharePct/100
	return (maxN <= 0 || t.st.current.Value() < maxN) && (maxB <= 0 || t.txBytes.Load()+txCost(&core.Msg{}) <= maxB)
}

package tm_test

import (
	"fmt"
	"testing"
	"time"
)

// TestTransactionTableBound: with max_transactions 10, INVITEs towards a
// next hop that never answers fill 90% (9) and the next gets a stateless
// 503 with Retry-After (counted in tm:refused_overload, no branch, no
// script 500 after it); a non-INVITE still gets a transaction in the
// headroom; once the transactions end, INVITEs are relayed again.
func TestTransactionTableBound(t *testing.T) {
	f := newFixture(t, `modparam("tm", "max_transactions", 10)
modparam("tm", "max_transactions_mem", 0)
`+baseScript)
	for i := 0; i < 9; i++ {
		f.start(call{user: fmt.Sprintf("u%d", i)})
	}
	o := f.request(call{user: "over"}.raw(), "udp")
	f.wantCodes("INVITE beyond 90%", o, 503)
	if len(o.requests("INVITE")) > 0 {
		t.Errorf("refused INVITE was relayed:\n%s", o)
	}
	if up := o.upstream(); len(up) == 1 && up[0].res().GetHeader("Retry-After") == nil {
		t.Errorf("503 without Retry-After:\n%s", o)
	}
	if got := f.env.Stats.Counter("tm", "refused_overload").Value(); got != 1 {
		t.Errorf("tm:refused_overload = %d, want 1", got)
	}
	if !f.env.ShedInvites.Load() {
		t.Error("Env.ShedInvites not set with no room for an INVITE (the transport would keep queueing them)")
	}
	// A non-INVITE uses the headroom the INVITEs may not.
	o = f.request(call{user: "probe", method: "MESSAGE"}.raw(), "udp")
	if len(o.requests("MESSAGE")) != 1 || len(o.upstream()) != 0 {
		t.Errorf("MESSAGE in the headroom not relayed:\n%s", o)
	}
	// The table full: a non-INVITE is refused too.
	o = f.request(call{user: "probe2", method: "MESSAGE"}.raw(), "udp")
	f.wantCodes("MESSAGE beyond max_transactions", o, 503)
	// Every transaction ends (fr_timer, Timer H, wait_timer): room again.
	for i := 0; i < 30; i++ {
		f.advance(5 * time.Second)
	}
	if cur := f.stats()["current"]; cur != 0 {
		t.Fatalf("tm current = %d after every timer, want 0", cur)
	}
	if f.env.ShedInvites.Load() {
		t.Error("Env.ShedInvites still set with an empty table")
	}
	o = f.request(call{user: "after"}.raw(), "udp")
	if len(o.requests("INVITE")) != 1 {
		t.Errorf("INVITE after the burst not relayed:\n%s", o)
	}
}

// TestTransactionMemBound: max_transactions_mem bounds by estimated bytes
// (1 MB: about 4 KB + 6× each request) and is given back when they end.
func TestTransactionMemBound(t *testing.T) {
	f := newFixture(t, `modparam("tm", "max_transactions_mem", 1)
`+baseScript)
	relayed := 0
	for i := 0; i < 400; i++ {
		o := f.request(call{user: fmt.Sprintf("m%d", i)}.raw(), "udp")
		if len(o.requests("INVITE")) == 1 {
			relayed++
		}
	}
	// 1024 bytes assumed per request off the network: 10 KB each, 90% of 1 MB.
	if relayed < 80 || relayed > 95 {
		t.Errorf("%d INVITEs relayed under max_transactions_mem 1, want about 92", relayed)
	}
	for i := 0; i < 30; i++ {
		f.advance(5 * time.Second)
	}
	o := f.request(call{user: "again"}.raw(), "udp")
	if len(o.requests("INVITE")) != 1 {
		t.Errorf("INVITE after the transactions ended not relayed:\n%s", o)
	}
}

// TestFinishedTransactionsCountLess: a transaction that sent its final reply
// keeps only what answers retransmissions during wait_timer, so the bound
// counts it at txFinishedPct of a pending one: under max_transactions_mem 1
// about twice as many answered calls fit in wait_timer as pending ones.
func TestFinishedTransactionsCountLess(t *testing.T) {
	f := newFixture(t, `modparam("tm", "max_transactions_mem", 1)
`+baseScript)
	answered := 0
	for i := 0; i < 400; i++ {
		o := f.request(call{user: fmt.Sprintf("a%d", i)}.raw(), "udp")
		inv := o.requests("INVITE")
		if len(inv) != 1 {
			break
		}
		f.reply(inv[0], 200, "callee")
		answered++
	}
	// Pending: about 92 fit (TestTransactionMemBound); finished: 92 / 0.45.
	if answered < 180 || answered > 215 {
		t.Errorf("%d answered INVITEs fit in wait_timer under max_transactions_mem 1, want about 204", answered)
	}
	for i := 0; i < 30; i++ {
		f.advance(5 * time.Second)
	}
	if o := f.request(call{user: "again"}.raw(), "udp"); len(o.requests("INVITE")) != 1 {
		t.Errorf("INVITE after wait_timer not relayed:\n%s", o)
	}
}

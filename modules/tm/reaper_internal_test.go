package tm

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/starlark/routetest"
)

type nopSender struct{}

func (nopSender) Send(*core.Outgoing) error { return nil }

// reaperTM is a tm on clk with n registered transactions.
func reaperTM(t *testing.T, clk core.Clock, n int) (*TM, []*Tx) {
	t.Helper()
	env := core.NewEnv(nopSender{})
	env.Clock = clk
	New(env)
	tm, err := Of(env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tm.stop)
	txs := make([]*Tx, n)
	for i := range txs {
		tx := &Tx{tm: tm, key: "k" + strconv.Itoa(i), id: "id" + strconv.Itoa(i)}
		tm.mu.Lock()
		tm.txs[tx.key], tm.clients[tx.id] = tx, tx
		tm.mu.Unlock()
		tm.st.current.Inc()
		txs[i] = tx
	}
	return tm, txs
}

func (tx *Tx) isDeleted() bool {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	return tx.deleted
}

// The reaper frees each transaction when its own wait is over, whatever
// order waits of different lengths come in (a shorter one added later is
// freed first), and forgets it in the tables.
func TestReaperFreesEachAfterItsWait(t *testing.T) {
	clk := routetest.NewFixedClock(routetest.RouteTestEpoch)
	tm, txs := reaperTM(t, clk, 4)
	add := func(tx *Tx, d time.Duration) {
		tx.mu.Lock()
		tm.reap.add(tx, d)
		tx.mu.Unlock()
	}
	add(txs[0], 5*time.Second) // due at 5 s
	add(txs[1], 5*time.Second) // due at 5 s
	clk.Advance(time.Second)   //
	add(txs[2], 2*time.Second) // due at 3 s: arms the timer earlier
	add(txs[3], 5*time.Second) // due at 6 s
	want := func(at string, deleted ...bool) {
		t.Helper()
		for i, tx := range txs {
			if got := tx.isDeleted(); got != deleted[i] {
				t.Errorf("at %s: transaction %d freed %v, want %v", at, i, got, deleted[i])
			}
		}
	}
	clk.Advance(2*time.Second - time.Millisecond)
	want("2.999 s", false, false, false, false)
	clk.Advance(time.Millisecond)
	want("3 s", false, false, true, false)
	clk.Advance(2 * time.Second)
	want("5 s", true, true, true, false)
	clk.Advance(time.Second)
	want("6 s", true, true, true, true)
	tm.mu.Lock()
	left := len(tm.txs) + len(tm.clients)
	tm.mu.Unlock()
	if left != 0 || tm.st.current.Value() != 0 {
		t.Errorf("tables keep %d entries, current %d; want all freed", left, tm.st.current.Value())
	}
	// Emptied, the reaper works again for new ones.
	tx := &Tx{tm: tm, key: "again", id: "again"}
	add(tx, time.Second)
	clk.Advance(time.Second)
	if !tx.isDeleted() {
		t.Error("a transaction added after the queue emptied was not freed")
	}
}

// With the wall clock the deadlines are rounded up to reapTick: never
// freed early, and freed (the pool runs the release).
func TestReaperWallClock(t *testing.T) {
	tm, txs := reaperTM(t, core.RealClock, 3)
	start := time.Now()
	for i, tx := range txs {
		tx.mu.Lock()
		tm.reap.add(tx, time.Duration(i+1)*30*time.Millisecond)
		tx.mu.Unlock()
	}
	for i, tx := range txs {
		for !tx.isDeleted() {
			if time.Since(start) > 10*time.Second {
				t.Fatalf("transaction %d (wait %v) not freed after 10 s", i, time.Duration(i+1)*30*time.Millisecond)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if el := time.Since(start); el < time.Duration(i+1)*30*time.Millisecond {
			t.Errorf("transaction %d freed after %v, before its wait %v", i, el, time.Duration(i+1)*30*time.Millisecond)
		}
	}
}

// Deadlines keep the monotonic clock reading: compared on the wall clock
// alone, a clock step would hold finished transactions or free them early.
func TestRoundUpKeepsMonotonicClock(t *testing.T) {
	now := time.Now()
	for _, d := range []time.Duration{time.Millisecond, reapTick, time.Second} {
		r := roundUp(now, d)
		if !strings.Contains(r.String(), " m=") {
			t.Errorf("roundUp(now, %v) = %v: the monotonic reading is gone", d, r)
		}
		if r.Before(now) || r.Sub(now) >= d || r.UnixNano()%int64(d) != 0 {
			t.Errorf("roundUp(%v, %v) = %v: not the next multiple", now, d, r)
		}
	}
	exact := time.Unix(0, 3*int64(reapTick))
	if got := roundUp(exact, reapTick); !got.Equal(exact) {
		t.Errorf("roundUp of a multiple = %v, want it unchanged", got)
	}
}

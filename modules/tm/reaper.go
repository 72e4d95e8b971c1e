package tm

import (
	"sync"
	"time"

	"github.com/kamgo/kamgo/modules/core"
)

// Every finished transaction waits wait_timer (Timer H, I, J, K) before
// it is freed. One clock timer each meant, per transaction, a runtime
// timer, a goroutine when it fired and a wake-up of the timer pool: the
// wake-ups a busy proxy pays per call. The reaper keeps the finished
// transactions in one queue per wait (each queue is in deadline order:
// same wait, later start) behind a single clock timer for the earliest.
// With the wall clock deadlines are rounded up to reapTick, so one firing
// frees all the transactions of a tick (Kamailio's timers tick too); with
// a test's fixed clock they are exact.
const reapTick = 50 * time.Millisecond

type reaper struct {
	t       *TM
	mu      sync.Mutex
	queues  map[time.Duration]*reapQueue
	timer   core.Timer
	armedAt time.Time // deadline timer fires at (zero: none armed)
	fire    func()    // run, made once (timerFunc applied)
	// lastWait is the latest wait added: its queue is kept when empty.
	lastWait time.Duration
	stopped  bool
}

type reapItem struct {
	at time.Time
	tx *Tx
}

// reapQueue is a FIFO of items with non-decreasing deadlines.
type reapQueue struct {
	items []reapItem
	head  int
}

func newReaper(t *TM) *reaper {
	r := &reaper{t: t, queues: map[time.Duration]*reapQueue{}}
	r.fire = t.timerFunc(r.run)
	return r
}

// add frees tx after d. Called with tx.mu held.
func (r *reaper) add(tx *Tx, d time.Duration) {
	at := r.t.env.Clock.Now().Add(d)
	if r.t.pooled {
		at = roundUp(at, reapTick)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	r.lastWait = d
	q := r.queues[d]
	if q == nil {
		q = &reapQueue{}
		r.queues[d] = q
	}
	q.items = append(q.items, reapItem{at: at, tx: tx})
	if r.armedAt.IsZero() || at.Before(r.armedAt) {
		r.arm(at)
	}
}

// arm (re)starts the timer for deadline at. Called with r.mu held.
func (r *reaper) arm(at time.Time) {
	if r.timer != nil {
		r.timer.Stop()
	}
	r.armedAt = at
	r.timer = r.t.env.Clock.AfterFunc(at.Sub(r.t.env.Clock.Now()), r.fire)
}

// run frees the transactions whose deadline has come and arms the timer
// for the next one.
func (r *reaper) run() {
	now := r.t.env.Clock.Now()
	var buf [16]*Tx
	due := buf[:0]
	r.mu.Lock()
	r.armedAt = time.Time{}
	var next time.Time
	for d, q := range r.queues {
		for q.head < len(q.items) && !q.items[q.head].at.After(now) {
			due = append(due, q.items[q.head].tx)
			q.items[q.head] = reapItem{}
			q.head++
		}
		switch {
		case q.head == len(q.items):
			q.head = 0
			if cap(q.items) > 1024 {
				q.items = nil // a burst's array goes
			} else {
				q.items = q.items[:0]
			}
			if d != r.lastWait {
				delete(r.queues, d) // wait_timer changed: the old one is done
			}
			continue
		case q.head > len(q.items)/2:
			q.items = append(q.items[:0], q.items[q.head:]...)
			clear(q.items[len(q.items):cap(q.items)]) // no stale *Tx behind the live ones
			q.head = 0
		}
		if at := q.items[q.head].at; next.IsZero() || at.Before(next) {
			next = at
		}
	}
	if !next.IsZero() && !r.stopped {
		r.arm(next) // stops the timer that fired this run, if it was another
	}
	r.mu.Unlock()
	for _, tx := range due {
		tx.release()
	}
}

func (r *reaper) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	if r.timer != nil {
		r.timer.Stop()
	}
}

// roundUp rounds t up to a multiple of d. By Add, not Truncate: Truncate
// drops the monotonic clock reading, and deadlines compared on the wall
// clock alone move with it (an NTP step back would hold every finished
// transaction that long, a step forward free them before wait_timer).
func roundUp(t time.Time, d time.Duration) time.Time {
	rem := time.Duration(t.UnixNano() % int64(d))
	if rem <= 0 {
		return t.Add(-rem)
	}
	return t.Add(d - rem)
}

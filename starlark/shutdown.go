package starlark

import "time"

// Shutdown, in two steps: Drain stops new requests from reaching the
// script (they are answered 503) while callbacks of work under way —
// replies, failure routes, events — still run; CancelRunning then cancels
// whatever still runs and refuses every later run.

// Drain makes HandleRequest answer new requests 503 without running the
// script.
func (e *Engine) Drain() { e.stopping.CompareAndSwap(0, 1) }

// Draining reports whether Drain or CancelRunning was called.
func (e *Engine) Draining() bool { return e.stopping.Load() > 0 }

// Running is how many script runs of e are active.
func (e *Engine) Running() int { return wd.countOwned(e) }

// CancelRunning cancels e's active runs at their next step (they fail
// with ErrShuttingDown) and refuses every later run; it reports how many
// it cancelled.
func (e *Engine) CancelRunning() int {
	e.stopping.Store(2)
	return wd.cancelOwned(e)
}

// Shutdown drains e, waits up to grace for its running callbacks to
// finish, cancels those still running, and waits up to wait more for them
// to unwind (a KSR function blocked in Go is not interrupted: it ends when
// it returns). It reports how many runs it cancelled and how many were
// still active at the end.
func (e *Engine) Shutdown(grace, wait time.Duration) (cancelled, left int) {
	e.Drain()
	waitIdle(e, grace)
	cancelled = e.CancelRunning()
	waitIdle(e, wait) // requests queued meanwhile get their 503
	return cancelled, e.Running()
}

func waitIdle(e *Engine, d time.Duration) {
	end := time.Now().Add(d)
	for (e.Running() > 0 || e.handling.Load() > 0) && time.Now().Before(end) {
		time.Sleep(5 * time.Millisecond)
	}
}

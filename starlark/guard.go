package starlark

import (
	"errors"
	"fmt"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"

	sk "go.starlark.net/starlark"
)

// Script limits beyond the step limit. The step limit counts operations;
// one operation of go.starlark.net may allocate up to 1 GiB (a string or
// list repeat, google/starlark-go#606) or run for many milliseconds (s.find
// on a large string), and the interpreter has no allocation hook. So every
// script run — the config phase, mod_init, each callback, kamd test's test
// functions — is registered with one process-wide watchdog that samples the
// heap and the clock while runs are active and cancels a run
// (Thread.Cancel) at its next step when it outlives its time limit or the
// heap grew by more than its budget since it began.

const (
	// DefaultMemBudgetMB is core_param("script_mem_budget"): MB the heap may
	// grow while one script run is active.
	DefaultMemBudgetMB = 128
	// DefaultTimeLimit is core_param("script_time_limit_ms").
	DefaultTimeLimit = time.Second
	// MaxAllocPerOp is the most one go.starlark.net operation allocates
	// before the interpreter looks at its cancel flag again (its maxAlloc).
	MaxAllocPerOp = 1 << 30
)

// ErrTimeLimit and ErrMemBudget mark a run the watchdog cancelled;
// ErrShuttingDown one cancelled or refused because kamd is stopping.
var (
	ErrTimeLimit    = errors.New("script time limit exceeded")
	ErrMemBudget    = errors.New("script memory budget exceeded")
	ErrShuttingDown = errors.New("kamd is shutting down")
)

// Limits bound one script run; a zero field means no limit.
type Limits struct {
	MemBudget uint64        // bytes of heap growth
	TimeLimit time.Duration // wall clock
}

// LoadTimeFactor: the config phase and mod_init may run this many times
// a callback's time limit (10 s by default). They build tables once, and
// under the race detector on a loaded machine a 1 MiB file takes over a
// second to compile.
const LoadTimeFactor = 10

// load is l for the config phase and mod_init (guardLoad).
func (l Limits) load() Limits {
	l.TimeLimit *= LoadTimeFactor
	return l
}

type cause int32

const (
	causeNone cause = iota
	causeTime
	causeMem
	causeShutdown
)

// guard is one active run as the watchdog sees it. Callbacks' guards live
// in their pooled callCtx, so registering allocates nothing.
type guard struct {
	th     *sk.Thread
	owner  *Engine
	start  int64 // watchdog clock (ns since wdEpoch) at begin
	limit  int64 // ns; 0: none
	budget uint64
	base   uint64 // heap bytes at begin
	grew   uint64 // heap growth seen when cancelled for memory (under wd.mu)
	idx    int
	cause  atomic.Int32
	load   bool // config phase or mod_init: LoadTimeFactor × the limit
}

// The watchdog samples the heap and the clock at two speeds. While every
// active run is short (a callback takes tens of microseconds) it ticks every
// watchdogSlowTick: at 5 ms, 200 wakeups a second under steady traffic cost
// more than a REGISTER's whole routing (0.8 extra context switches per
// message at 1000/s). Once a run has been active for watchdogTick it ticks
// every watchdogTick until no run is that old, so a bomb is noticed within
// watchdogSlowTick and then followed closely. watchdogLinger is how long
// sampling goes on after the last run ends, so that steady traffic does not
// start a goroutine per run.
var (
	watchdogTick     = 5 * time.Millisecond
	watchdogSlowTick = 50 * time.Millisecond
	watchdogLinger   = time.Second
	wdEpoch          = time.Now()
)

const heapMetric = "/memory/classes/heap/objects:bytes"

type watchdog struct {
	mu        sync.Mutex
	runs      []*guard
	awake     bool
	idleSince int64
	sample    []metrics.Sample // for begin's read when asleep (under mu)
	clock     atomic.Int64     // last sample's time, ns since wdEpoch
	heap      atomic.Uint64    // last sample's heap bytes
	freeMu    sync.Mutex       // one release at a time
}

var wd = &watchdog{sample: []metrics.Sample{{Name: heapMetric}}}

func now() int64 { return int64(time.Since(wdEpoch)) }

func readHeap(s []metrics.Sample) uint64 {
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// begin registers g (its th, owner, limit and budget set) as running.
func (w *watchdog) begin(g *guard) {
	g.cause.Store(int32(causeNone))
	g.grew = 0
	w.mu.Lock()
	if !w.awake {
		w.awake = true
		w.clock.Store(now())
		w.heap.Store(readHeap(w.sample))
		go w.loop()
	}
	// The clock is cheap to read (vDSO); the heap sample is refreshed when
	// older than a fast tick, so a run's base is as fresh as at 5 ms ticks.
	g.start = now()
	if g.start-w.clock.Load() > int64(watchdogTick) {
		w.clock.Store(g.start)
		w.heap.Store(readHeap(w.sample))
	}
	g.base = w.heap.Load()
	g.idx = len(w.runs)
	w.runs = append(w.runs, g)
	w.mu.Unlock()
}

// end unregisters g: after it returns the watchdog no longer touches g's
// thread. It reports why g was cancelled, if it was.
func (w *watchdog) end(g *guard) cause {
	w.mu.Lock()
	last := len(w.runs) - 1
	if g.idx <= last && w.runs[g.idx] == g {
		w.runs[g.idx] = w.runs[last]
		w.runs[g.idx].idx = g.idx
		w.runs[last] = nil
		w.runs = w.runs[:last]
	}
	if len(w.runs) == 0 {
		w.idleSince = w.clock.Load()
	}
	w.mu.Unlock()
	c := cause(g.cause.Load())
	if c == causeMem {
		w.release()
	}
	return c
}

// release gives the memory of a cancelled bomb back to the OS before the
// run's caller goes on (before the request's 500 is sent): a forced GC and
// scavenge, one at a time. Otherwise the garbage of one bomb is still held
// when the next allocates, and a client sending bombs one after the other
// keeps two or three of them in memory. It costs a full GC, on memory
// cancels only.
func (w *watchdog) release() {
	w.freeMu.Lock()
	defer w.freeMu.Unlock()
	debug.FreeOSMemory()
}

func (w *watchdog) loop() {
	t := time.NewTimer(watchdogSlowTick)
	defer t.Stop()
	s := []metrics.Sample{{Name: heapMetric}}
	for range t.C {
		fast := false
		nw := now()
		h := readHeap(s)
		w.clock.Store(nw)
		w.heap.Store(h)
		w.mu.Lock()
		if len(w.runs) == 0 && nw-w.idleSince > int64(watchdogLinger) {
			w.awake = false
			w.mu.Unlock()
			return
		}
		for _, g := range w.runs {
			if g.cause.Load() != int32(causeNone) {
				continue
			}
			if nw-g.start >= int64(watchdogTick) {
				fast = true
			}
			// Memory first: when this goroutine was starved (a loaded
			// machine, a bomb's page faults) both may be due at once, and
			// the heap is the more telling reason.
			switch {
			case g.budget > 0 && h > g.base && h-g.base > g.budget:
				g.grew = h - g.base
				g.cause.Store(int32(causeMem))
				g.th.Cancel("script memory budget exceeded")
			case g.limit > 0 && nw-g.start > g.limit:
				g.cause.Store(int32(causeTime))
				g.th.Cancel("script time limit exceeded")
			}
		}
		w.mu.Unlock()
		if fast {
			t.Reset(watchdogTick)
		} else {
			t.Reset(watchdogSlowTick)
		}
	}
}

// cancelOwned cancels every run of e (shutdown) and reports how many.
func (w *watchdog) cancelOwned(e *Engine) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, g := range w.runs {
		if g.owner == e && g.cause.CompareAndSwap(int32(causeNone), int32(causeShutdown)) {
			g.th.Cancel("kamd is shutting down")
			n++
		}
	}
	return n
}

func (w *watchdog) countOwned(e *Engine) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, g := range w.runs {
		if g.owner == e {
			n++
		}
	}
	return n
}

// guardErr explains a run the watchdog cancelled: the script position it
// was at, which limit, and the figures, as a *ScriptError whose Cause is
// ErrTimeLimit, ErrMemBudget or ErrShuttingDown. err is sk.Call's error.
func guardErr(c cause, g *guard, what string, err error) error {
	if c == causeNone || err == nil {
		return nil
	}
	pos, bt := "?", ""
	var ee *sk.EvalError
	if errors.As(err, &ee) {
		pos, bt = posOf(ee), ee.Backtrace()
	}
	switch c {
	case causeTime:
		name := "script_time_limit_ms"
		if g.load {
			name = fmt.Sprintf("%d × script_time_limit_ms", LoadTimeFactor)
		}
		return &ScriptError{Msg: fmt.Sprintf("%s: %s: time limit of %d ms (%s) exceeded (cancelled)", pos, what, time.Duration(g.limit).Milliseconds(), name),
			Backtrace: bt, Cause: ErrTimeLimit}
	case causeMem:
		return &ScriptError{Msg: fmt.Sprintf("%s: %s: script_mem_budget of %d MB exceeded: the heap grew by %d MB while it ran (cancelled)", pos, what, g.budget>>20, g.grew>>20),
			Backtrace: bt, Cause: ErrMemBudget}
	}
	return &ScriptError{Msg: fmt.Sprintf("%s: %s: cancelled: kamd is shutting down", pos, what), Backtrace: bt, Cause: ErrShuttingDown}
}

// Guard runs f (which executes Starlark on th) under limits: the same
// watchdog as callbacks, for script runs outside the engine (kamd test's
// test functions). A run the watchdog cancelled returns a *ScriptError
// naming the limit; otherwise f's error is returned as is.
func Guard(th *sk.Thread, what string, lim Limits, f func() error) error {
	return guardRun(th, what, lim, false, f)
}

// guardLoad is Guard for the config phase and mod_init.
func guardLoad(th *sk.Thread, what string, lim Limits, f func() error) error {
	return guardRun(th, what, lim.load(), true, f)
}

func guardRun(th *sk.Thread, what string, lim Limits, load bool, f func() error) error {
	g := &guard{th: th, limit: int64(lim.TimeLimit), budget: lim.MemBudget, load: load}
	wd.begin(g)
	err := f()
	if gerr := guardErr(wd.end(g), g, what, err); gerr != nil {
		return gerr
	}
	return err
}

// IsLimit reports whether err is a run stopped by a limit: the step limit,
// the time limit, the memory budget or shutdown.
func IsLimit(err error) bool {
	return errors.Is(err, ErrStepLimit) || errors.Is(err, ErrTimeLimit) || errors.Is(err, ErrMemBudget) || errors.Is(err, ErrShuttingDown)
}

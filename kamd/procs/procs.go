// Package procs scales GOMAXPROCS with kamd's load.
//
// At light and moderate load, a second P costs more than it gives: when a
// goroutine becomes runnable (a datagram arrived, a message went to a
// worker) the Go scheduler wakes another OS thread for the idle P, which
// finds little to do and goes back to sleep — two context switches, each
// dear on a virtual machine, for a message whose routing takes
// microseconds. Kamailio pays one per message (a child blocked in recvfrom).
// Measured on 2 vCPUs at 1000 calls/s, a stateless call cost 25 % less CPU
// and half the context switches with one P. So kamd runs on as few Ps as
// its load needs and adds Ps as soon as it needs them: the controller looks
// at the process's CPU time every Interval, doubles the Ps (up to the
// default) when they are more than Up busy, and lowers them when the load
// would keep fewer Ps under Down busy for DownAfter.
package procs

import (
	"context"
	"log/slog"
	"math"
	"os"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Config tunes the controller; zero fields take the defaults.
type Config struct {
	Interval  time.Duration // how often the CPU time is read (100 ms)
	Up        float64       // busy fraction of the current Ps that adds Ps (0.6)
	Down      float64       // busy fraction of fewer Ps under which they suffice (0.35)
	DownAfter time.Duration // how long the load must stay that low (2 s)
	// Wait: when more than 1 % of goroutine wakeups waited longer than this
	// for a P in the last interval, the Ps are too few whatever the CPU
	// says (a garbage collection of a large heap on one P stalls messages
	// for tens of ms). 2 ms.
	Wait time.Duration
	Max  int // most Ps (runtime.GOMAXPROCS at Start)
	Log  *slog.Logger
}

func (c *Config) defaults() {
	if c.Interval <= 0 {
		c.Interval = 100 * time.Millisecond
	}
	if c.Up <= 0 {
		c.Up = 0.6
	}
	if c.Down <= 0 {
		c.Down = 0.35
	}
	if c.DownAfter <= 0 {
		c.DownAfter = 2 * time.Second
	}
	if c.Wait <= 0 {
		c.Wait = 2 * time.Millisecond
	}
	if c.Max <= 0 {
		c.Max = runtime.GOMAXPROCS(0)
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// Enabled reports whether the controller should run: more than one CPU,
// and GOMAXPROCS not fixed by the environment (the operator's choice wins).
func Enabled() bool {
	return os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) > 1
}

// Want is the decision: given cur Ps, the CPU used in the last interval
// as a number of cores and whether goroutines waited too long for a P in
// it, the Ps to run with; low counts the intervals in a row the load would
// have fit in fewer Ps (the caller keeps it).
func Want(c Config, cur int, cores float64, waited bool, low *int) int {
	// Slow wakeups add Ps from one P, or when the Ps are fairly used: with
	// several idle Ps the waits come from elsewhere (an overloaded host).
	if waited && cur < c.Max && (cur == 1 || cores >= c.Down*float64(cur)) {
		*low = 0
		return min(c.Max, max(cur*2, int(math.Ceil(cores/c.Up))))
	}
	if cores >= c.Up*float64(cur) && cur < c.Max {
		*low = 0
		return min(c.Max, max(cur*2, int(math.Ceil(cores/c.Up))))
	}
	fit := max(1, int(math.Ceil(cores/c.Down)))
	if fit >= cur || waited {
		*low = 0
		return cur
	}
	*low++
	if time.Duration(*low)*c.Interval < c.DownAfter {
		return cur
	}
	*low = 0
	return fit
}

var running atomic.Bool

// Start runs the controller until ctx ends or stop is called, then
// restores the default Ps. It starts on one P. One controller runs per
// process: a second Start (tests run several kamds in one process) does
// nothing.
func Start(ctx context.Context, c Config) (stop func()) {
	if !running.CompareAndSwap(false, true) {
		return func() {}
	}
	c.defaults()
	cur := 1
	runtime.GOMAXPROCS(cur)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer running.Store(false)
		defer runtime.SetDefaultGOMAXPROCS()
		t := time.NewTicker(c.Interval)
		defer t.Stop()
		last, at := cpuTime(), time.Now()
		lat := newLatencies()
		low := 0
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				cpu := cpuTime()
				cores := float64(cpu-last) / float64(now.Sub(at))
				last, at = cpu, now
				if n := Want(c, cur, cores, lat.slowShare(c.Wait) > 0.01, &low); n != cur {
					runtime.GOMAXPROCS(n)
					c.Log.Debug("GOMAXPROCS changed", "from", cur, "to", n, "cpu_cores", math.Round(cores*100)/100)
					cur = n
				}
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

// cpuTime is the user+system CPU time of the whole process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// latencies reads the runtime's histogram of how long runnable goroutines
// waited for a P (/sched/latencies:seconds), per interval.
type latencies struct {
	s    []metrics.Sample
	prev []uint64
}

func newLatencies() *latencies {
	l := &latencies{s: []metrics.Sample{{Name: "/sched/latencies:seconds"}}}
	l.slowShare(0)
	return l
}

// slowShare is the share of the waits since the last call longer than d.
func (l *latencies) slowShare(d time.Duration) float64 {
	metrics.Read(l.s)
	if l.s[0].Value.Kind() != metrics.KindFloat64Histogram {
		return 0
	}
	h := l.s[0].Value.Float64Histogram()
	if len(l.prev) != len(h.Counts) {
		l.prev = make([]uint64, len(h.Counts))
	}
	var all, slow uint64
	for i, n := range h.Counts {
		dn := n - l.prev[i]
		l.prev[i] = n
		all += dn
		if h.Buckets[i] >= d.Seconds() { // bucket i spans [Buckets[i], Buckets[i+1])
			slow += dn
		}
	}
	if all == 0 {
		return 0
	}
	return float64(slow) / float64(all)
}

package tm

import (
	"log/slog"
	"runtime"
	"sync"
)

// tm's timers (retransmissions, fr_timer, Timer G/H, wait_timer) fire in
// thousands at once after a burst: 17 000 transactions of an INVITE flood
// time out within a second of each other, then resend their 408 every few
// seconds. time.AfterFunc runs each callback on a new goroutine; when they
// fire faster than the socket drains, goroutines with grown stacks piled
// up by the thousand (kamd grew by 500 MB after a flood had ended). So
// with the wall clock a callback only queues itself here, and a fixed set
// of goroutines runs the queue: a backlog costs a closure, not a stack.
// (Route tests' fixed clock keeps running them inside Advance.)
type timerPool struct {
	once sync.Once
	mu   sync.Mutex
	cond *sync.Cond
	q    []func()
}

var firePool timerPool

func (p *timerPool) run(f func()) {
	p.once.Do(func() {
		p.cond = sync.NewCond(&p.mu)
		for i := 0; i < max(4, 2*runtime.GOMAXPROCS(0)); i++ {
			go p.worker()
		}
	})
	p.mu.Lock()
	p.q = append(p.q, f)
	p.mu.Unlock()
	p.cond.Signal()
}

func (p *timerPool) worker() {
	for {
		p.mu.Lock()
		for len(p.q) == 0 {
			p.cond.Wait()
		}
		f := p.q[0]
		p.q[0] = nil
		p.q = p.q[1:]
		if len(p.q) == 0 {
			p.q = nil // let a burst's backing array go
		}
		p.mu.Unlock()
		call(f)
	}
}

func call(f func()) {
	defer func() {
		if r := recover(); r != nil {
			slog.Error("tm: panic in a timer", "panic", r)
		}
	}()
	f()
}

// timerFunc is what tx.after arms: f itself with a fixed clock, else f
// queued on the pool when it fires.
func (t *TM) timerFunc(f func()) func() {
	if !t.pooled {
		return f
	}
	return func() { firePool.run(f) }
}

package starlark

import "sync"

// Step accounting for route tests (r.steps): Run reports the Starlark steps
// each callback used to the observer registered for its engine, if any.
// Engines without an observer pay one sync.Map lookup per callback.

var stepObservers sync.Map // *Engine -> *stepObserver

type stepObserver struct {
	f func(callback string, steps uint64)
}

// ObserveSteps makes e report the steps every callback run uses to f
// (called on the goroutine that ran the callback). The returned func stops it.
func (e *Engine) ObserveSteps(f func(callback string, steps uint64)) (stop func()) {
	o := &stepObserver{f}
	stepObservers.Store(e, o)
	return func() { stepObservers.CompareAndDelete(e, o) }
}

func (e *Engine) noteSteps(callback string, steps uint64) {
	if f, ok := stepObservers.Load(e); ok {
		f.(*stepObserver).f(callback, steps)
	}
}

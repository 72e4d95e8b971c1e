// Package allocbudget guards the allocation counts of the per-stage
// benchmarks in ordinary test runs (issue 15): each stage has a budget,
// the count it has today, and a test fails when a change adds one. It
// imports nothing of kamgo, so package core's own tests can use it.
package allocbudget

import "testing"

// Stage is one hot-path stage: Setup prepares it once and returns the
// operation, run once per message (the body of its benchmark).
type Stage struct {
	Name   string
	Budget int // allocations per run, as measured (-benchmem), no slack
	Setup  func(tb testing.TB) func()
}

// Runs is how many times AllocsPerRun repeats an operation (after one
// warm-up run, which fills pools and caches).
const Runs = 200

// Check measures every stage with testing.AllocsPerRun. A count above the
// budget fails the test; one below is logged, so the budget can be lowered
// to keep the gain. Under the race detector the operations still run but
// the counts are not checked: -race instruments and allocates differently
// (the guard is meant for the plain `go test`, see .ci/run).
func Check(t *testing.T, stages []Stage) {
	t.Helper()
	for _, s := range stages {
		t.Run(s.Name, func(t *testing.T) {
			op := s.Setup(t)
			got := testing.AllocsPerRun(Runs, op)
			if RaceEnabled {
				t.Logf("stage %s: %.1f allocs/op under -race; budget %d not checked (race builds allocate differently)", s.Name, got, s.Budget)
				return
			}
			if got > float64(s.Budget) {
				t.Errorf("stage %s: %.1f allocations per message, budget %d: a new allocation on the hot path needs a reason "+
					"(measure it with -benchmem; if it pays, raise the budget in the table and say why there)", s.Name, got, s.Budget)
			} else if got < float64(s.Budget) {
				t.Logf("stage %s: %.1f allocations per message, below the budget %d: lower the budget to keep the gain", s.Name, got, s.Budget)
			}
		})
	}
}

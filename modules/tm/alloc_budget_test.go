package tm_test

import (
	"testing"
)

// tmStages are the tm stages of issue 15's per-stage benchmarks (see
// stage_test.go) with their allocation budgets: the count each has today
// (go test -bench StageTM -benchmem), no slack. Counts are exact and
// stable (the same on every run), unlike times.
var tmStages = []struct {
	name   string
	budget int
	setup  func(tb testing.TB, runs int) func()
}{
	// INVITE → 100 (local) → 100, 180, 200 relayed → e2e ACK by loose_route → retired.
	{"StageTMInvite", 70, func(tb testing.TB, runs int) func() {
		st := newStage(tb)
		calls := st.prepInvite(tb, runs)
		return func() {
			if err := st.runInvite(&calls[0]); err != nil {
				tb.Fatal(err)
			}
			calls = calls[1:]
		}
	}},
	// In-dialog BYE by loose_route → 200 relayed → retired.
	{"StageTMNonInvite", 39, func(tb testing.TB, runs int) func() {
		st := newStage(tb)
		calls := st.prepBye(tb, runs)
		return func() {
			if err := st.runBye(&calls[0]); err != nil {
				tb.Fatal(err)
			}
			calls = calls[1:]
		}
	}},
}

// allocRuns is how many transactions AllocsPerRun averages (after one
// warm-up run, which fills caches and pools).
const allocRuns = 200

// TestAllocBudgetsTM fails when a tm stage allocates more per transaction
// than its budget. Only without -race: the race detector's
// instrumentation allocates differently, so under it the stages run but
// the counts are not checked (raceEnabled, race_test.go).
func TestAllocBudgetsTM(t *testing.T) {
	for _, s := range tmStages {
		t.Run(s.name, func(t *testing.T) {
			op := s.setup(t, allocRuns+1)
			got := testing.AllocsPerRun(allocRuns, op)
			switch {
			case raceEnabled:
				t.Logf("stage %s: %.1f allocs/op under -race; budget %d not checked (race builds allocate differently)", s.name, got, s.budget)
			case got > float64(s.budget):
				t.Errorf("stage %s: %.1f allocations per transaction, budget %d: a new allocation on the hot path needs a reason "+
					"(measure it with -benchmem; if it pays, raise the budget in tmStages and say why there)", s.name, got, s.budget)
			case got < float64(s.budget):
				t.Logf("stage %s: %.1f allocations per transaction, below the budget %d: lower the budget to keep the gain", s.name, got, s.budget)
			}
		})
	}
}

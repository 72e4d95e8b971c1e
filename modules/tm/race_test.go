//go:build race

package tm_test

// raceEnabled: this build runs under the race detector, whose
// instrumentation changes allocation counts; TestAllocBudgetsTM then
// skips its assertion.
const raceEnabled = true

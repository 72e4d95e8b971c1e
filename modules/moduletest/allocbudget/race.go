//go:build race

package allocbudget

// RaceEnabled: this build runs under the race detector, whose
// instrumentation changes allocation counts; Check then skips its assertion.
const RaceEnabled = true

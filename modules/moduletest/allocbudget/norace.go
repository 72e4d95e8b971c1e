//go:build !race

package allocbudget

// RaceEnabled: the race detector is off; allocation counts are exact.
const RaceEnabled = false

//go:build !race

package tm_test

// raceEnabled: the race detector is off; allocation counts are exact.
const raceEnabled = false

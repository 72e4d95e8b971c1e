package tests

// raceEnabled is set by race_test.go when the tests run under -race.
var raceEnabled bool

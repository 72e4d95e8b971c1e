package starlark

import (
	"testing"

	sk "go.starlark.net/starlark"
)

// BenchmarkGuard is what registering one run with the watchdog costs a
// callback (begin + end, the watchdog awake as under steady traffic); the
// route benchmarks give the whole callback before and after.
//
//	go test ./starlark -run '^$' -bench 'Guard|Route' -benchmem -count 5
func BenchmarkGuard(b *testing.B) {
	g := &guard{th: &sk.Thread{}, limit: int64(DefaultTimeLimit), budget: DefaultMemBudgetMB << 20}
	b.ReportAllocs()
	for b.Loop() {
		wd.begin(g)
		wd.end(g)
	}
}

func BenchmarkGuardParallel(b *testing.B) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		g := &guard{th: &sk.Thread{}, limit: int64(DefaultTimeLimit), budget: DefaultMemBudgetMB << 20}
		for pb.Next() {
			wd.begin(g)
			wd.end(g)
		}
	})
}

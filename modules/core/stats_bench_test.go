package core

import "testing"

// BenchmarkStatsCounter: the per-message counter lookup (core:rcv_requests)
// from every P at once, as the workers do it.
func BenchmarkStatsCounter(b *testing.B) {
	s := NewStats()
	s.Counter("core", "rcv_requests")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.Counter("core", "rcv_requests").Inc()
		}
	})
}

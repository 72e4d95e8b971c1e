package core

import (
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Stats is Kamailio's statistics registry: named counters in groups
// ("core:rcv_requests"), read by stats.get_statistics.
type Stats struct {
	mu sync.RWMutex
	m  map[string]*Counter
	// byPair finds a counter without building "group:name" (an allocation
	// per lookup on the per-message path) and without the lock: the map is
	// never changed once stored; a new counter stores a copy (counters are
	// made at start and rarely after), so every worker's lookup on the
	// per-message path is one atomic load, not a shared RWMutex.
	byPair atomic.Pointer[map[[2]string]*Counter]
}

// Counter is one statistic.
type Counter struct {
	v atomic.Int64
	// NoReset marks gauges that stats.reset_statistics leaves alone.
	NoReset bool
}

func (c *Counter) Inc()         { c.v.Add(1) }
func (c *Counter) Add(n int64)  { c.v.Add(n) }
func (c *Counter) Set(n int64)  { c.v.Store(n) }
func (c *Counter) Value() int64 { return c.v.Load() }

func NewStats() *Stats {
	return &Stats{m: map[string]*Counter{}}
}

// Counter returns (creating it if needed) the counter "group:name".
func (s *Stats) Counter(group, name string) *Counter {
	pair := [2]string{group, name}
	if bp := s.byPair.Load(); bp != nil {
		if c := (*bp)[pair]; c != nil {
			return c
		}
	}
	key := group + ":" + name
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.m[key]
	if c == nil {
		c = &Counter{}
		s.m[key] = c
	}
	old := s.byPair.Load()
	n := 1
	if old != nil {
		n += len(*old)
	}
	bp := make(map[[2]string]*Counter, n)
	if old != nil {
		for k, v := range *old {
			bp[k] = v
		}
	}
	bp[pair] = c
	s.byPair.Store(&bp)
	return c
}

// Get returns counters matching Kamailio's selectors: "all", "group:" or a name.
func (s *Stats) Get(selectors ...string) map[string]int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[string]int64{}
	for key, c := range s.m {
		group, name, _ := strings.Cut(key, ":")
		for _, sel := range selectors {
			if sel == "all" || sel == group || sel == group+":" || sel == name || sel == key {
				out[key] = c.Value()
				break
			}
		}
	}
	return out
}

// Reset zeroes matching counters (gauges excepted) and returns how many.
func (s *Stats) Reset(selectors ...string) int {
	n := 0
	for key := range s.Get(selectors...) {
		s.mu.RLock()
		c := s.m[key]
		s.mu.RUnlock()
		if c != nil && !c.NoReset {
			c.Set(0)
			n++
		}
	}
	return n
}

// Groups lists the known groups.
func (s *Stats) Groups() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	seen := map[string]bool{}
	for key := range s.m {
		g, _, _ := strings.Cut(key, ":")
		seen[g] = true
	}
	out := make([]string, 0, len(seen))
	for g := range seen {
		out = append(out, g)
	}
	sort.Strings(out)
	return out
}

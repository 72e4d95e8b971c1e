package ims_ipsec_pcscf

import (
	"errors"
	"strings"
	"sync"
	"testing"
)

func cfg(start, rng uint32, maxc int) PoolConfig {
	return PoolConfig{SPIStart: start, SPIRange: rng, ClientPort: 5100, ServerPort: 6100, MaxConnections: maxc}
}

func TestPoolConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		c      PoolConfig
		errHas string
	}{
		{cfg(4096, 1000, 10), ""},
		{cfg(100, 1000, 10), "reserved"},
		{cfg(4096, 1, 10), "at least one pair"},
		{cfg(4294967000, 1000, 10), "32 bits"},
		{cfg(4096, 1000, 0), "at least 1"},
		{PoolConfig{SPIStart: 4096, SPIRange: 10, ClientPort: 5062, ServerPort: 5063, MaxConnections: 2}, "overlap"},
		{PoolConfig{SPIStart: 4096, SPIRange: 10, ClientPort: 65535, ServerPort: 6100, MaxConnections: 2}, "65535"},
	} {
		err := tc.c.Validate()
		if tc.errHas == "" && err != nil || tc.errHas != "" && (err == nil || !strings.Contains(err.Error(), tc.errHas)) {
			t.Errorf("%+v: %v, want %q", tc.c, err, tc.errHas)
		}
	}
}

func TestPoolPairsAndPorts(t *testing.T) {
	p, err := NewPool(cfg(4096, 7, 2)) // 3 pairs: 4096/97, 98/99, 4100/01; 4102 alone is unused
	if err != nil {
		t.Fatal(err)
	}
	want := []Pair{{4096, 4097, 5100, 6100}, {4098, 4099, 5101, 6101}, {4100, 4101, 5100, 6100}}
	for i, w := range want {
		got, err := p.Acquire()
		if err != nil || got != w {
			t.Fatalf("acquire %d: %+v %v, want %+v", i, got, err, w)
		}
	}
	if _, err := p.Acquire(); !errors.Is(err, ErrExhausted) {
		t.Fatalf("4th acquire: %v, want ErrExhausted", err)
	}
	if u, n := p.Usage(); u != 3 || n != 3 {
		t.Errorf("usage %d/%d", u, n)
	}
	// FIFO: released pairs come back in release order, after nothing else.
	p.Release(want[1])
	p.Release(want[0])
	if !p.Owns(4102) || p.Owns(4103) || p.Owns(4095) {
		t.Error("Owns range wrong")
	}
	if got, _ := p.Acquire(); got != want[1] {
		t.Errorf("reuse got %+v, want %+v", got, want[1])
	}
	// Double release and a foreign pair are no-ops, not duplicates.
	if p.Release(want[0]) {
		t.Error("double release accepted")
	}
	if p.Release(Pair{SpiPC: 9, SpiPS: 10}) {
		t.Error("foreign pair accepted")
	}
	if u, n := p.Usage(); u != 2 || n != 3 {
		t.Errorf("usage after double release %d/%d", u, n)
	}
}

func TestPoolConcurrent(t *testing.T) {
	p, _ := NewPool(cfg(0x10000, 2*500, 10))
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[uint32]int{}
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				pr, err := p.Acquire()
				if err != nil {
					continue
				}
				mu.Lock()
				seen[pr.SpiPC]++
				if seen[pr.SpiPC] > 1 {
					t.Errorf("pair %d handed out twice", pr.SpiPC)
				}
				mu.Unlock()
				if i%2 == 0 {
					mu.Lock()
					seen[pr.SpiPC]--
					mu.Unlock()
					p.Release(pr)
				}
			}
		}()
	}
	wg.Wait()
	u, n := p.Usage()
	held := 0
	for _, c := range seen {
		held += c
	}
	if u != held || n != 500 {
		t.Errorf("usage %d/%d, held %d", u, n, held)
	}
}

// The largest range Validate accepts must not be built up front (it used to
// allocate 2^31 pairs and crash kamd at start); memory follows use.
func TestPoolMaxRangeLazy(t *testing.T) {
	c := cfg(256, 1<<32-256, 10)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(1, func() {
		if _, err := NewPool(c); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 5 {
		t.Errorf("NewPool of the max range: %v allocations", allocs)
	}
	p, _ := NewPool(c)
	if u, n := p.Usage(); u != 0 || n != (1<<32-256)/2 {
		t.Errorf("usage %d/%d", u, n)
	}
	a, _ := p.Acquire()
	b, _ := p.Acquire()
	if a != (Pair{256, 257, 5100, 6100}) || b != (Pair{258, 259, 5101, 6101}) {
		t.Errorf("first pairs %+v %+v", a, b)
	}
	// Fresh pairs come before released ones (reuse as late as possible).
	p.Release(a)
	if c, _ := p.Acquire(); c.SpiPC != 260 {
		t.Errorf("after release got %+v, want the fresh 260", c)
	}
	if !p.Owns(1<<32-1) || p.Owns(255) {
		t.Error("Owns at the range edges")
	}
}

// The last pair of the max range sits at the top of the 32-bit space.
func TestPoolLastPairOfMaxRange(t *testing.T) {
	p, _ := NewPool(cfg(256, 1<<32-256, 10))
	p.next = p.total - 1
	last, err := p.Acquire()
	if err != nil || last.SpiPC != 1<<32-2 || last.SpiPS != 1<<32-1 {
		t.Fatalf("last pair %+v %v", last, err)
	}
	if _, err := p.Acquire(); !errors.Is(err, ErrExhausted) {
		t.Fatalf("after the last pair: %v", err)
	}
	p.Release(last)
	if again, _ := p.Acquire(); again != last {
		t.Errorf("reuse %+v, want %+v", again, last)
	}
}

// BenchmarkNewPoolMaxRange: building the pool costs the same for any range.
func BenchmarkNewPoolMaxRange(b *testing.B) {
	c := cfg(256, 1<<32-256, 10)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewPool(c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPoolAcquireRelease: one UE's pair taken and given back.
func BenchmarkPoolAcquireRelease(b *testing.B) {
	p, _ := NewPool(cfg(256, 1<<32-256, 10))
	b.ReportAllocs()
	for b.Loop() {
		pr, err := p.Acquire()
		if err != nil {
			b.Fatal(err)
		}
		p.Release(pr)
	}
}

package ims_ipsec_pcscf

import (
	"errors"
	"fmt"
	"sync"
)

// ErrExhausted is returned when no SPI pair is free; ipsec_create turns it
// into a 503 with nothing created.
var ErrExhausted = errors.New("ipsec: no free SPI pair (ipsec_spi_id_range exhausted)")

// Pair is what the P-CSCF offers one UE: the SPIs of its two inbound SAs
// and its protected client/server ports.
type Pair struct {
	SpiPC, SpiPS   uint32
	PortPC, PortPS uint16
}

// PoolConfig is the allocator's share of the module params.
type PoolConfig struct {
	SPIStart, SPIRange     uint32
	ClientPort, ServerPort uint16
	MaxConnections         int
}

// Validate refuses configurations that cannot work: SPIs in the reserved
// 1..255 (RFC 4303), a range under one pair, over 32 bits, or port ranges
// that overlap or leave 1..65535.
func (c PoolConfig) Validate() error {
	if c.SPIStart < 256 {
		return fmt.Errorf("ipsec_spi_id_start %d: SPIs 1..255 are reserved (RFC 4303)", c.SPIStart)
	}
	if c.SPIRange < 2 {
		return fmt.Errorf("ipsec_spi_id_range %d: need at least one pair (2)", c.SPIRange)
	}
	if uint64(c.SPIStart)+uint64(c.SPIRange) > 1<<32 {
		return fmt.Errorf("ipsec_spi_id_start+ipsec_spi_id_range %d exceeds 32 bits", uint64(c.SPIStart)+uint64(c.SPIRange))
	}
	if c.MaxConnections < 1 {
		return fmt.Errorf("ipsec_max_connections %d: want at least 1", c.MaxConnections)
	}
	n := c.MaxConnections
	if c.ClientPort == 0 || int(c.ClientPort)+n-1 > 65535 || c.ServerPort == 0 || int(c.ServerPort)+n-1 > 65535 {
		return fmt.Errorf("ipsec_client_port %d / ipsec_server_port %d + ipsec_max_connections %d leave 1..65535", c.ClientPort, c.ServerPort, n)
	}
	cl, sl := int(c.ClientPort), int(c.ServerPort)
	if cl < sl+n && sl < cl+n {
		return fmt.Errorf("client ports %d..%d and server ports %d..%d overlap", cl, cl+n-1, sl, sl+n-1)
	}
	return nil
}

// Pool hands out SPI pairs and ports as Kamailio's spi_gen does: pairs
// (start, start+1), (start+2, start+3), ... with the port pair cycling
// through ipsec_max_connections (UEs share ports; the selectors carry the
// UE address). Released pairs go to the tail, so an SPI is reused as late
// as possible; releasing a pair not in use is a no-op (Kamailio could
// duplicate it). Never-used pairs come from a counter, so memory follows
// the pairs in use and released, not ipsec_spi_id_range (up to 2^31 pairs).
type Pool struct {
	mu    sync.Mutex
	cfg   PoolConfig
	next  uint64 // index of the first never-handed-out pair
	total uint64 // pairs in the range
	free  []Pair // released pairs, FIFO
	used  map[uint32]Pair
}

// NewPool builds the pool; cfg must Validate.
func NewPool(cfg PoolConfig) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Pool{cfg: cfg, total: uint64(cfg.SPIRange) / 2, used: map[uint32]Pair{}}, nil
}

// pair is the i-th pair of the range.
func (p *Pool) pair(i uint64) Pair {
	spi := uint64(p.cfg.SPIStart) + 2*i
	k := uint16(i % uint64(p.cfg.MaxConnections))
	return Pair{SpiPC: uint32(spi), SpiPS: uint32(spi + 1),
		PortPC: p.cfg.ClientPort + k, PortPS: p.cfg.ServerPort + k}
}

// Acquire takes a never-used pair, else the oldest released one.
func (p *Pool) Acquire() (Pair, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var pr Pair
	switch {
	case p.next < p.total:
		pr = p.pair(p.next)
		p.next++
	case len(p.free) > 0:
		pr = p.free[0]
		p.free[0] = Pair{}
		p.free = p.free[1:]
	default:
		return Pair{}, ErrExhausted
	}
	p.used[pr.SpiPC] = pr
	return pr, nil
}

// Release returns a pair; a pair not in use is ignored (reported false).
func (p *Pool) Release(pr Pair) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if got, ok := p.used[pr.SpiPC]; !ok || got != pr {
		return false
	}
	delete(p.used, pr.SpiPC)
	p.free = append(p.free, pr)
	return true
}

// Owns tells whether an SPI is in the configured range: kamgo's ownership
// tag for kernel states (the netlink API cannot set sel.user).
func (p *Pool) Owns(spi uint32) bool {
	return spi >= p.cfg.SPIStart && uint64(spi) < uint64(p.cfg.SPIStart)+uint64(p.cfg.SPIRange)
}

// Usage reports used and total pairs.
func (p *Pool) Usage() (used, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.used), int(p.total)
}

// Package dnstest is a DNS server on loopback for tests: it answers A,
// AAAA, SRV and NAPTR queries from records the test sets, and counts the
// queries it got (to see the cache at work).
package dnstest

import (
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/kamgo/kamgo/modules/core/dnsres"
)

// Record is one answer record.
type Record struct {
	TTL uint32
	IP  string // A / AAAA
	// SRV
	Priority, Weight, Port uint16
	Target                 string
	// NAPTR
	Order, Pref                         uint16
	Flags, Service, Regexp, Replacement string
}

// Server answers from its records; a name without records gets NXDOMAIN.
type Server struct {
	conn    *net.UDPConn
	mu      sync.Mutex
	records map[string][]Record
	queries map[string]int
	done    chan struct{}
}

func key(name string, t uint16) string {
	return strings.ToLower(strings.TrimSuffix(name, ".")) + "|" + strconv.Itoa(int(t))
}

// Start listens on 127.0.0.1 (a free port).
func Start() (*Server, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	s := &Server{conn: c, records: map[string][]Record{}, queries: map[string]int{}, done: make(chan struct{})}
	go s.serve()
	return s, nil
}

// Addr is "127.0.0.1:port".
func (s *Server) Addr() string { return s.conn.LocalAddr().String() }

// Close stops the server.
func (s *Server) Close() { s.conn.Close(); <-s.done }

// Set replaces the records of name and type.
func (s *Server) Set(name string, t uint16, rs ...Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[key(name, t)] = rs
}

// Queries is how many queries for name and type arrived.
func (s *Server) Queries(name string, t uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[key(name, t)]
}

func (s *Server) serve() {
	defer close(s.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		q, err := dnsres.Parse(buf[:n])
		if err != nil {
			continue
		}
		k := key(q.Question, q.QType)
		s.mu.Lock()
		s.queries[k]++
		rs, ok := s.records[k]
		s.mu.Unlock()
		rcode := dnsres.RcodeOK
		if !ok {
			rcode = dnsres.RcodeNXDomain
		}
		w, err := dnsres.Reply(buf[:n], rcode)
		if err != nil {
			continue
		}
		for _, r := range rs {
			switch q.QType {
			case dnsres.TypeA, dnsres.TypeAAAA:
				w.A(q.Question, r.TTL, net.ParseIP(r.IP))
			case dnsres.TypeSRV:
				w.SRV(q.Question, r.TTL, r.Priority, r.Weight, r.Port, r.Target)
			case dnsres.TypeNAPTR:
				w.NAPTR(q.Question, r.TTL, r.Order, r.Pref, r.Flags, r.Service, r.Regexp, r.Replacement)
			}
		}
		_, _ = s.conn.WriteToUDP(w.Bytes(), from)
	}
}

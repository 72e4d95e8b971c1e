package dnsres_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/core/dnsres"
	"github.com/kamgo/kamgo/modules/core/dnsres/dnstest"
)

func setup(t *testing.T) (*dnstest.Server, *dnsres.Resolver, *time.Time) {
	s, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	r := dnsres.New(s.Addr())
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r.Now = func() time.Time { return now }
	return s, r, &now
}

func str(ts []core.Target) string {
	var out []string
	for _, t := range ts {
		out = append(out, t.String())
	}
	return strings.Join(out, " ")
}

func TestResolveRFC3263(t *testing.T) {
	s, r, _ := setup(t)
	s.Set("gw1.example.com", dnsres.TypeA, dnstest.Record{TTL: 60, IP: "192.0.2.1"}, dnstest.Record{TTL: 60, IP: "192.0.2.11"})
	s.Set("gw2.example.com", dnsres.TypeA, dnstest.Record{TTL: 60, IP: "192.0.2.2"})
	s.Set("v6.example.com", dnsres.TypeAAAA, dnstest.Record{TTL: 60, IP: "2001:db8::6"})
	s.Set("_sip._udp.example.com", dnsres.TypeSRV,
		dnstest.Record{TTL: 60, Priority: 20, Weight: 0, Port: 5070, Target: "gw2.example.com"},
		dnstest.Record{TTL: 60, Priority: 10, Weight: 5, Port: 5080, Target: "gw1.example.com"})
	s.Set("_sip._tcp.example.com", dnsres.TypeSRV, dnstest.Record{TTL: 60, Priority: 1, Port: 5090, Target: "gw2.example.com"})
	s.Set("naptr.example.com", dnsres.TypeNAPTR,
		dnstest.Record{TTL: 60, Order: 20, Pref: 1, Flags: "s", Service: "SIP+D2U", Replacement: "_sip._udp.example.com"},
		dnstest.Record{TTL: 60, Order: 10, Pref: 1, Flags: "s", Service: "SIP+D2T", Replacement: "_sip._tcp.example.com"},
		dnstest.Record{TTL: 60, Order: 5, Pref: 1, Flags: "s", Service: "SIP+D2X", Replacement: "_sip._x.example.com"})
	s.Set("tcponly.example.com", dnsres.TypeNAPTR) // no NAPTR records: SRV per transport
	s.Set("_sip._tcp.tcponly.example.com", dnsres.TypeSRV, dnstest.Record{TTL: 60, Port: 5099, Target: "gw2.example.com"})
	for _, tc := range []struct {
		host  string
		port  int
		proto string
		want  string
	}{
		{"192.0.2.9", 0, "", "udp:192.0.2.9:5060"},
		{"[2001:db8::1]", 0, "tls", "tls:[2001:db8::1]:5061"},
		{"gw1.example.com", 5062, "", "udp:192.0.2.1:5062 udp:192.0.2.11:5062"},                // a port: A only
		{"example.com", 0, "udp", "udp:192.0.2.1:5080 udp:192.0.2.11:5080 udp:192.0.2.2:5070"}, // SRV by priority
		{"example.com", 0, "tcp", "tcp:192.0.2.2:5090"},                                        // SRV of the transport
		{"example.com", 0, "", "udp:192.0.2.1:5080 udp:192.0.2.11:5080 udp:192.0.2.2:5070"},    // no NAPTR: SRV udp first
		{"naptr.example.com", 0, "", "tcp:192.0.2.2:5090"},                                     // NAPTR order 10 (tcp) before 20; unknown service skipped
		{"tcponly.example.com", 0, "", "tcp:192.0.2.2:5099"},
		{"gw2.example.com", 0, "tls", "tls:192.0.2.2:5061"},    // no SRV: A on the default port
		{"v6.example.com", 0, "udp", "udp:[2001:db8::6]:5060"}, // AAAA when there is no A
	} {
		ts, err := r.Resolve(tc.host, tc.port, tc.proto)
		if err != nil || str(ts) != tc.want {
			t.Errorf("Resolve(%s, %d, %q) = %s, %v; want %s", tc.host, tc.port, tc.proto, str(ts), err, tc.want)
		}
	}
	if _, err := r.Resolve("nowhere.example.com", 0, "udp"); err == nil {
		t.Error("an unknown name resolved")
	}
}

func TestCacheTTL(t *testing.T) {
	s, r, now := setup(t)
	s.Set("gw.example.com", dnsres.TypeA, dnstest.Record{TTL: 30, IP: "192.0.2.1"})
	for i := 0; i < 3; i++ {
		if _, err := r.Resolve("gw.example.com", 5060, "udp"); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Queries("gw.example.com", dnsres.TypeA); n != 1 {
		t.Fatalf("%d queries within the TTL, want 1", n)
	}
	s.Set("gw.example.com", dnsres.TypeA, dnstest.Record{TTL: 30, IP: "192.0.2.7"})
	*now = now.Add(31 * time.Second)
	ts, err := r.Resolve("gw.example.com", 5060, "udp")
	if err != nil || str(ts) != "udp:192.0.2.7:5060" || s.Queries("gw.example.com", dnsres.TypeA) != 2 {
		t.Fatalf("after the TTL: %s %v (%d queries)", str(ts), err, s.Queries("gw.example.com", dnsres.TypeA))
	}
	// Negative answers are cached too (60 s without a SOA).
	r.Resolve("none.example.com", 5060, "udp")
	r.Resolve("none.example.com", 5060, "udp")
	if n := s.Queries("none.example.com", dnsres.TypeA); n != 1 {
		t.Fatalf("%d queries for a cached NXDOMAIN", n)
	}
}

func TestSRVWeights(t *testing.T) {
	recs := []dnsres.RR{{Priority: 1, Weight: 90, Target: "a"}, {Priority: 1, Weight: 10, Target: "b"}, {Priority: 0, Weight: 1, Target: "c"}}
	first := map[string]int{}
	for i := 0; i < 2000; i++ {
		o := dnsres.OrderSRV(append([]dnsres.RR(nil), recs...))
		if o[0].Target != "c" || len(o) != 3 {
			t.Fatalf("priority 0 not first: %v", o)
		}
		first[o[1].Target]++
	}
	// a should come first about 90% of the time.
	if first["a"] < 1600 || first["a"] > 1950 {
		t.Fatalf("weight 90 first %d of 2000 times", first["a"])
	}
}

func TestParseRejectsGarbage(t *testing.T) {
	for i, b := range [][]byte{nil, make([]byte, 11), {0, 1, 0x81, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 97}, {0, 1, 0x81, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12}} {
		if _, err := dnsres.Parse(b); err == nil {
			t.Errorf("%d: parsed %v", i, b)
		}
	}
	q, _ := dnsres.Query(7, "example.com", dnsres.TypeSRV)
	m, err := dnsres.Parse(q)
	if err != nil || m.Question != "example.com" || m.QType != dnsres.TypeSRV || m.ID != 7 {
		t.Fatal(fmt.Sprint(m, err))
	}
}

func TestServerDownIsRememberedBriefly(t *testing.T) {
	s, r, now := setup(t)
	s.Close() // nothing answers on its port any more
	r.Timeout = 100 * time.Millisecond
	if _, err := r.Resolve("gw.example.com", 0, ""); err == nil {
		t.Fatal("resolved without a server")
	}
	// One failed query, then the rest fail at once without asking.
	if _, err := r.Resolve("other.example.com", 0, ""); err == nil || !strings.Contains(err.Error(), "server down") {
		t.Fatalf("got %v", err)
	}
	*now = now.Add(dnsres.DownFor + time.Second)
	if _, err := r.Lookup("x.example.com", dnsres.TypeA); err == nil || strings.Contains(err.Error(), "server down") {
		t.Fatalf("after DownFor the server is asked again: %v", err)
	}
}

// BenchmarkResolveCached is the per-request cost of a next hop named by
// host once its SRV and A answers are cached.
func BenchmarkResolveCached(b *testing.B) {
	s, err := dnstest.Start()
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.Set("_sip._udp.example.com", dnsres.TypeSRV, dnstest.Record{TTL: 3600, Priority: 1, Weight: 1, Port: 5080, Target: "gw.example.com"},
		dnstest.Record{TTL: 3600, Priority: 1, Weight: 1, Port: 5080, Target: "gw2.example.com"})
	s.Set("gw.example.com", dnsres.TypeA, dnstest.Record{TTL: 3600, IP: "192.0.2.1"})
	s.Set("gw2.example.com", dnsres.TypeA, dnstest.Record{TTL: 3600, IP: "192.0.2.2"})
	r := dnsres.New(s.Addr())
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if ts, err := r.Resolve("example.com", 0, "udp"); err != nil || len(ts) != 2 {
			b.Fatal(ts, err)
		}
	}
}

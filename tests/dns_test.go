package tests

import (
	"strings"
	"testing"
	"time"

	"github.com/kamgo/kamgo/modules/core/dnsres"
	"github.com/kamgo/kamgo/modules/core/dnsres/dnstest"
)

const dnsScript = `
core_param("dns_server", "DNS")
modparam("tm", "fr_timer", 1000)
modparam("tm", "fr_inv_timer", 1500)

def ksr_request_route():
    if KSR.is_ACK():
        KSR.tm.t_relay()
        return
    KSR.tm.t_relay()
`

// TestDNSFailoverE2E: the R-URI names a host whose SRV records list two
// gateways on loopback (via a DNS server the test runs); the first by
// priority answers 503 (then, in the second call, nothing at all), and tm
// moves the INVITE to the second within the same transaction.
func TestDNSFailoverE2E(t *testing.T) {
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	first, second := newUAS(t), newDSUAS(t)
	first.Answer(503, "Service Unavailable", "")
	dns.Set("_sip._udp.gw.kamgo.test", dnsres.TypeSRV,
		dnstest.Record{TTL: 300, Priority: 10, Weight: 1, Port: uint16(first.Port()), Target: "a.kamgo.test"},
		dnstest.Record{TTL: 300, Priority: 20, Weight: 1, Port: uint16(second.Port()), Target: "b.kamgo.test"})
	dns.Set("a.kamgo.test", dnsres.TypeA, dnstest.Record{TTL: 300, IP: "127.0.0.1"})
	dns.Set("b.kamgo.test", dnsres.TypeA, dnstest.Record{TTL: 300, IP: "127.0.0.1"})
	// The script's core_param wins over the environment (a dead port here).
	t.Setenv(dnsres.EnvServer, "127.0.0.1:1")
	k := startKamd(t, strings.Replace(dnsScript, "DNS", dns.Addr(), 1))
	ua := newUAC(t)

	cid := randToken() + "@kamgo.test"
	r := ua.Do(k, reqSpec{Method: "INVITE", RURI: "sip:bob@gw.kamgo.test;transport=udp", CallID: cid})
	if code := r.Res().StatusCode; code != 200 {
		t.Fatalf("call through SRV: %d, want the second gateway's 200", code)
	}
	first.WaitRequest(cid, "INVITE", time.Second)
	if !second.got(cid) {
		t.Fatal("the second SRV target got no INVITE")
	}
	if !strings.Contains(k.Log(), "DNS failover to the next target") {
		t.Fatal("no failover logged")
	}

	// The first target times out now (a dsUAS that is dead): failover after fr_timer.
	dead := newDSUAS(t)
	dead.dead.Store(true)
	dns.Set("_sip._udp.gw2.kamgo.test", dnsres.TypeSRV,
		dnstest.Record{TTL: 300, Priority: 10, Port: uint16(dead.Port()), Target: "a.kamgo.test"},
		dnstest.Record{TTL: 300, Priority: 20, Port: uint16(second.Port()), Target: "b.kamgo.test"})
	cid = randToken() + "@kamgo.test"
	r = ua.Do(k, reqSpec{Method: "INVITE", RURI: "sip:bob@gw2.kamgo.test", CallID: cid})
	if code := r.Res().StatusCode; code != 200 {
		t.Fatalf("call after a timeout: %d", code)
	}
	if !second.got(cid) {
		t.Fatal("the second target got no INVITE after the first timed out")
	}
	dead.mu.Lock()
	tried := len(dead.dropped) > 0 && dead.dropped[0] == cid // and its retransmissions
	dead.mu.Unlock()
	if !tried {
		t.Fatal("the first SRV target was not tried first")
	}
	// Cached: the SRV name was asked once for both calls of gw.
	if n := dns.Queries("_sip._udp.gw.kamgo.test", dnsres.TypeSRV); n != 1 {
		t.Fatalf("%d SRV queries, want 1 (TTL cache)", n)
	}
}

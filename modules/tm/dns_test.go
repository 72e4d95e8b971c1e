package tm_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/kamd/node"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/core/dnsres"
	"github.com/kamgo/kamgo/modules/core/dnsres/dnstest"
	"github.com/kamgo/kamgo/starlark/routetest"
)

const dnsRoute = `
def ksr_request_route():
    KSR.tm.t_on_failure("failed")
    KSR.tm.t_relay()

def failed():
    KSR.info("failure route")
`

// TestDNSFailover: a next hop named by host goes to its SRV targets in
// order; a 503 or a timeout moves the branch to the next target before
// the failure route; with no target left the failure route runs.
func TestDNSFailover(t *testing.T) {
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	dns.Set("_sip._udp.gw.test", dnsres.TypeSRV,
		dnstest.Record{TTL: 60, Priority: 1, Port: 5080, Target: "a.gw.test"},
		dnstest.Record{TTL: 60, Priority: 2, Port: 5090, Target: "b.gw.test"})
	dns.Set("a.gw.test", dnsres.TypeA, dnstest.Record{TTL: 60, IP: "192.0.2.1"})
	dns.Set("b.gw.test", dnsres.TypeA, dnstest.Record{TTL: 60, IP: "192.0.2.2"}, dnstest.Record{TTL: 60, IP: "192.0.2.3"})
	h, err := routetest.NewHarness(node.RouteTest, "r.star", []byte(dnsRoute), routetest.HarnessOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	dnsres.Use(h.Env, dnsres.New(dns.Addr()))

	branches := func(r *routetest.Result) []string {
		var out []string
		for _, s := range r.Of(core.OutBranch) {
			out = append(out, s.Dst.String())
		}
		return out
	}
	invite := func(ruri string) *sip.Request {
		m, err := routetest.ParseMessage("INVITE " + ruri + " SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-" + ruri[8:10] +
			"\nFrom: <sip:alice@example.com>;tag=f\nTo: <" + ruri + ">\nCall-ID: " + ruri[8:10] + "@x\nCSeq: 1 INVITE\nMax-Forwards: 70\n\n")
		if err != nil {
			t.Fatal(err)
		}
		return m.(*sip.Request)
	}
	reply := func(r *routetest.Result, code int) *routetest.Result {
		t.Helper()
		bs := r.Of(core.OutBranch)
		b := bs[len(bs)-1]
		res := core.BuildReply(b.Msg.(*sip.Request), code, "X", nil)
		out, err := h.Reply(res, b.Dst.Host+":"+strconv.Itoa(b.Dst.Port), "udp")
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	r, err := h.Request(invite("sip:bob@gw.test"), "192.0.2.10:5060", "udp")
	if err != nil {
		t.Fatal(err)
	}
	if got := branches(r); len(got) != 1 || got[0] != "udp:192.0.2.1:5080" {
		t.Fatalf("first branch %v, want the priority 1 SRV target", got)
	}
	r2 := reply(r, 503)
	if got := branches(r2); len(got) != 1 || got[0] != "udp:192.0.2.2:5090" {
		t.Fatalf("after 503: %v, want the next SRV target", got)
	}
	for _, l := range r2.Logs {
		if l.Message == "failure route" {
			t.Fatal("the failure route ran while DNS targets were left")
		}
	}
	// A 486 is not a reason to fail over: the failure route runs.
	r3 := reply(r2, 486)
	if len(branches(r3)) != 0 {
		t.Fatalf("486 failed over: %v", branches(r3))
	}
	ran := false
	for _, l := range r3.Logs {
		ran = ran || l.Message == "failure route"
	}
	if !ran {
		t.Fatal("no failure route after the last target")
	}

	// Timeouts: each target in turn (b.gw.test has two addresses), then the failure route.
	r, err = h.Request(invite("sip:bo@gw.test;transport=udp"), "192.0.2.10:5060", "udp")
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	seen = append(seen, branches(r)...)
	for i := 0; i < 3; i++ {
		a := h.Advance(31 * time.Second)
		for _, s := range a.Of(core.OutBranch) {
			if len(seen) == 0 || seen[len(seen)-1] != s.Dst.String() {
				seen = append(seen, s.Dst.String())
			}
		}
	}
	want := []string{"udp:192.0.2.1:5080", "udp:192.0.2.2:5090", "udp:192.0.2.3:5090"}
	if len(seen) != 3 || seen[0] != want[0] || seen[1] != want[1] || seen[2] != want[2] {
		t.Fatalf("timeout failover went %v, want %v", seen, want)
	}
}

package uac_test

import (
	"testing"

	"github.com/kamgo/kamgo/kamd/node"
	"github.com/kamgo/kamgo/starlark/routetest"
)

// Values from a script (maybe from a received message) never inject
// header lines, and a script cannot pile up uac_req_send transactions.
const safetyScript = `
modparam("uac", "req_max_pending", 2)

def ksr_request_route():
    KSR.pv.unset("$uac_req(all)")
    KSR.pv.sets("$uac_req(method)", "MESSAGE")
    KSR.pv.sets("$uac_req(ruri)", "sip:phone@192.0.2.50:5070")
    k = KSR.pv.get("$hdr(X-Key)")
    if k:
        KSR.pv.sets("$uac_req(" + k + ")", KSR.pv.get("$hdr(X-Val)").replace("CRLF", "\r\n").replace("LF", "\n"))
    if KSR.pv.get("$rU") == "auth":
        KSR.pv.sets("$uac_req(auser)", "alice\"\r\nX-Evil: 1")
        KSR.pv.sets("$uac_req(apasswd)", "pw")
    if KSR.pv.get("$rU") == "big":
        KSR.pv.sets("$uac_req(hdrs)", "X-Big: " + "a" * 3000 + "\r\n")
    KSR.pv.seti("$shv(rc)", KSR.uac.uac_req_send())
`

const safetyTests = `
def send(ruri = "sip:x@127.0.0.1", key = None, val = None):
    h = {}
    if key:
        h = {"X-Key": key, "X-Val": val}
    return route.request(sip.request("OPTIONS", ruri = ruri, headers = h))

def test_crlf_in_values_is_refused():
    for key, val in [("furi", "sip:a@b.test>CRLFX-Evil: 1"), ("turi", "sip:a@b.testCRLFX-Evil: 1"),
                     ("callid", "abcCRLFX-Evil: 1"), ("method", "MESSAGECRLFX-Evil: 1"),
                     ("ouri", "sip:192.0.2.1CRLFX-Evil: 1"), ("sock", "udp:127.0.0.1:5060CRLFX: 1"),
                     ("hdrs", "X-A: 1CRLFCRLFINVITE sip:x SIP/2.0CRLF"), ("hdrs", "X-A: 1LFX-Evil: 1")]:
        r = send(key = key, val = val)
        assert.eq(state.shv("rc"), -1, key + " " + val)
        assert.eq(len(r.requests), 0, key)
        assert.contains(r.logs[0].message, "uac_req_send")

def test_crlf_in_auser_never_reaches_the_wire():
    r = send(ruri = "sip:auth@127.0.0.1")
    assert.eq(state.shv("rc"), 1)
    q = r.requests[0]
    r = route.reply(q.msg.reply(401, headers = {"WWW-Authenticate": 'Digest realm="r", nonce="n", qop="auth"'}))
    assert.eq(len(r.requests), 0)
    assert.contains(r.logs[0].message, "cannot answer the challenge")

def test_huge_hdrs_is_a_script_error():
    r = send(ruri = "sip:big@127.0.0.1")
    assert.contains(r.error, "$uac_req(hdrs): 3009 bytes, the limit is 2047")
    assert.eq(len(r.requests), 0)

def test_pending_cap():
    a = send().requests[0]
    b = send().requests[0]
    r = send()
    assert.eq(state.shv("rc"), -1)
    assert.eq(len(r.requests), 0)
    assert.contains(r.logs[0].message, "2 requests in flight already (modparam req_max_pending)")
    route.reply(a.msg.reply(200))
    r = send()
    assert.eq(state.shv("rc"), 1)
    # a timeout (local 408) frees its place too
    route.advance(40)
    r = send()
    assert.eq(state.shv("rc"), 1)
    r = send()
    assert.eq(state.shv("rc"), 1)
    r = send()
    assert.eq(state.shv("rc"), -1)
`

func TestUACRequestSafety(t *testing.T) {
	rep, err := routetest.RunRouteTests(node.RouteTest, "safe.star", []byte(safetyScript), "safe_test.star", []byte(safetyTests), routetest.RouteTestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Tests) != 4 {
		t.Errorf("ran %d tests", len(rep.Tests))
	}
	for _, r := range rep.Tests {
		if !r.Passed {
			t.Errorf("%s failed at %s:\n%s\n%s", r.Name, r.FailPos, r.Failure, r.Output)
		}
	}
}

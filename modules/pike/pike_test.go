package pike_test

import (
	"testing"

	"github.com/kamgo/kamgo/kamd/node"
	"github.com/kamgo/kamgo/starlark/routetest"

	_ "github.com/kamgo/kamgo/modules/all"
)

const script = `
modparam("pike", "sampling_time_unit", 2)
modparam("pike", "reqs_density_per_unit", 3)
modparam("pike", "remove_latency", 10)

def ksr_request_route():
    rc = KSR.pike.pike_check_req()
    if rc < 0:
        KSR.sl.sl_send_reply(503 if rc == -2 else 403, "Flood " + str(rc))
        return
    KSR.sl.sl_send_reply(200, "OK")
`

const tests = `
def codes(n, src = "192.0.2.10:5060"):
    return [route.request(sip.options(src = src)).replies[0].code for i in range(n)]

def test_flood_is_detected_then_known_then_released():
    assert.eq(codes(5), [200, 200, 200, 503, 403])
    # another IP is not affected
    assert.eq(codes(1, src = "192.0.2.11:5060"), [200])
    top = state.rpc("pike.top")
    assert.eq([(x["ip_addr"], x["status"], x["leaf_hits_curr"]) for x in top["list"]], [("192.0.2.10", "HOT", 5)])
    assert.eq((top["max_hits"], top["number_of_rows"]), (3, 1))
    assert.eq(state.rpc("pike.top", "ALL")["number_of_rows"], 2)
    assert.eq([x["ip_addr"] for x in state.rpc("pike.top", "WARM")["list"]], ["192.0.2.11"])
    # the next unit still sees the flood in its previous unit: blocked
    route.advance(2)
    assert.eq(codes(1), [403])
    # a quiet unit releases it
    route.advance(2)
    assert.eq(codes(1), [200])
    assert.eq(state.rpc("pike.top")["list"], [])

def test_forgotten_after_remove_latency():
    codes(2)
    route.advance(11)
    codes(1, src = "192.0.2.99:5060")
    assert.eq([x["ip_addr"] for x in state.rpc("pike.top", "ALL")["list"]], ["192.0.2.99"])

def test_bad_filter():
    assert.fails(lambda: state.rpc("pike.top", "COLD"), "Invalid filter")
`

func TestPikeRoutes(t *testing.T) {
	rep, err := routetest.RunRouteTests(node.RouteTest, "p.star", []byte(script), "p_test.star", []byte(tests), routetest.RouteTestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range rep.Tests {
		if !tr.Passed {
			t.Errorf("%s (%s): %s\n%s", tr.Name, tr.FailPos, tr.Failure, tr.Output)
		}
	}
	if len(rep.Tests) != 3 {
		t.Errorf("ran %d tests", len(rep.Tests))
	}
}

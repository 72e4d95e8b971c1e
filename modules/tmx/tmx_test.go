package tmx_test

import (
	"testing"

	"github.com/kamgo/kamgo/kamd/node"
	_ "github.com/kamgo/kamgo/modules/all"
	"github.com/kamgo/kamgo/starlark/routetest"
)

const script = `
def ksr_request_route():
    KSR.pv.seti("$shv(pre)", KSR.tmx.t_precheck_trans())
    KSR.pv.seti("$shv(req)", KSR.tmx.t_is_request_route())
    KSR.pv.seti("$shv(req_fail)", KSR.tmx.t_is_failure_route())
    KSR.tm.t_newtran()
    KSR.pv.seti("$shv(pre2)", KSR.tmx.t_precheck_trans())
    KSR.setflag(4)
    KSR.pv.seti("$shv(flush)", KSR.tmx.t_flush_flags())
    KSR.tm.t_on_failure("failed")
    KSR.tm.t_on_reply("replied")
    KSR.tm.t_relay()

def failed():
    KSR.pv.seti("$shv(fail)", KSR.tmx.t_is_failure_route())
    KSR.pv.seti("$shv(fail_reply)", KSR.tmx.t_is_reply_route())

def replied():
    KSR.pv.seti("$shv(reply)", KSR.tmx.t_is_reply_route())
    KSR.pv.seti("$shv(reply_branch)", KSR.tmx.t_is_branch_route())
`

const tests = `
def test_route_types_and_precheck():
    inv = sip.invite(ruri = "sip:bob@192.0.2.20:5060")
    r = route.request(inv)
    assert.eq(state.shv("pre"), -1)
    assert.eq(state.shv("pre2"), 1)
    assert.eq(state.shv("req"), 1)
    assert.eq(state.shv("req_fail"), -1)
    assert.eq(state.shv("flush"), 1)
    route.reply(r.relays[0].msg.reply(486))
    assert.eq(state.shv("reply"), 1)
    assert.eq(state.shv("reply_branch"), -1)
    assert.eq(state.shv("fail"), 1)
    assert.eq(state.shv("fail_reply"), -1)
`

func TestTmx(t *testing.T) {
	rep, err := routetest.RunRouteTests(node.RouteTest, "tmx.star", []byte(script), "tmx_test.star", []byte(tests), routetest.RouteTestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Tests) != 1 {
		t.Errorf("ran %d tests", len(rep.Tests))
	}
	for _, r := range rep.Tests {
		if !r.Passed {
			t.Errorf("%s failed at %s:\n%s\n%s", r.Name, r.FailPos, r.Failure, r.Output)
		}
	}
}

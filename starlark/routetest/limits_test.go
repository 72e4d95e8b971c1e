package routetest_test

import (
	"strings"
	"testing"
	"time"

	"github.com/kamgo/kamgo/kamd/node"
	"github.com/kamgo/kamgo/starlark"
	"github.com/kamgo/kamgo/starlark/routetest"
)

// kamd test's own test functions run under a memory budget and a time
// limit too: a bomb fails its test, and the next test runs.
func TestRouteTestFunctionLimits(t *testing.T) {
	const tests = `
BIG = "a" * (1 << 23)

def test_bomb():
    x = ["a" * (1 << 26) for i in range(1000)]

def test_spin():
    for i in range(100000):
        BIG.find("b")

def test_after():
    r = route.request(sip.options(ruri = "sip:127.0.0.1"))
    assert.eq(r.replies[0].code, 200)
`
	lim := &starlark.Limits{MemBudget: 16 << 20, TimeLimit: 300 * time.Millisecond}
	rep, err := routetest.RunRouteTests(node.RouteTest, "rt.star", []byte(rtScript), "rt_test.star", []byte(tests), routetest.RouteTestOptions{Limits: lim})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]routetest.TestResult{}
	for _, r := range rep.Tests {
		got[r.Name] = r
	}
	if f := got["test_bomb"]; f.Passed || !strings.Contains(f.Failure, "rt_test.star:5:") || !strings.Contains(f.Failure, "test_bomb: script_mem_budget of 16 MB exceeded") {
		t.Errorf("test_bomb: passed %v, failure %q", f.Passed, f.Failure)
	}
	if f := got["test_spin"]; f.Passed || !strings.Contains(f.Failure, "test_spin: time limit of 300 ms (script_time_limit_ms) exceeded") {
		t.Errorf("test_spin: passed %v, failure %q", f.Passed, f.Failure)
	}
	if f := got["test_after"]; !f.Passed {
		t.Errorf("test_after failed: %s", f.Failure)
	}
}

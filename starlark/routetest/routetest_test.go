package routetest_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/kamd/node"
	_ "github.com/kamgo/kamgo/modules/all"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/tm"
	"github.com/kamgo/kamgo/starlark/routetest"
)

const rtScript = `
def ksr_request_route():
    KSR.info("got " + KSR.pv.get("$rm"))
    if KSR.is_OPTIONS():
        KSR.sl.send_reply(200, "OK")
        return
    if KSR.is_method("MESSAGE"):
        KSR.pv.sets("$var(x)", "set")
        KSR.setflag(3)
        KSR.hdr.append("X-Shv: " + str(KSR.pv.get("$shv(mode)")) + "\r\n")
        KSR.setdsturi("sip:10.9.9.9:5080")
        KSR.forward()
        return
    if KSR.is_method("INFO"):
        fail("boom")
    if KSR.is_method("SUBSCRIBE"):
        for i in range(100000000):
            pass
    KSR.sl.send_reply(404, "Not Found")

def on_timer(msg):
    KSR.warn("timer event " + msg.method)
`

const rtPassing = `
def test_options():
    r = route.request(sip.options(ruri = "sip:127.0.0.1"))
    assert.eq(r.replies[0].code, 200)
    assert.eq(r.logs[0].message, "got OPTIONS")
    assert.eq(r.logs[0].level, "info")
    assert.true(r.steps > 0)

def test_message_forward_and_state():
    state.shv("mode", "night")
    r = route.request(sip.request("MESSAGE", ruri = "sip:bob@example.com", body = "hi"))
    assert.eq(r.forwards[0].dst, "sip:10.9.9.9:5080")
    assert.eq(r.forwards[0].msg.hdr("X-Shv"), "night")
    assert.eq(r.du, "sip:10.9.9.9:5080")
    assert.eq(r.flags, 8)
    assert.true(r.isflagset(3))
    assert.eq(r.pv("$var(x)"), "set")
    # r.msg is the request as the script left it: without kamd's Via.
    assert.eq(len(r.msg.hdrs("Via")), 1)
    assert.eq(len(r.forwards[0].msg.hdrs("Via")), 2)

def test_script_error_answers_500():
    r = route.request(sip.request("INFO"))
    assert.contains(r.error, "boom")
    assert.eq(r.replies[0].code, 500)

def test_event():
    r = route.event("on_timer")
    assert.eq(r.logs[0].message, "timer event OPTIONS")
    assert.eq(r.logs[0].level, "warn")
    assert.fails(lambda: route.event("nope"), "defines no callback nope")

def test_reply_is_forwarded_by_via():
    r = route.request(sip.request("MESSAGE"))
    r2 = route.reply(sip.reply(r.forwards[0].msg, 202))
    assert.eq(r2.relayed_replies[0].code, 202)
    assert.eq(r2.relayed_replies[0].dst, "sip:192.0.2.10:5060")
    assert.eq(len(r2.relayed_replies[0].msg.hdrs("Via")), 1)

def test_builders():
    inv = sip.invite(ruri = "sip:bob@example.com", headers = {"X-A": "1"}, body = "v=0\n")
    assert.eq(inv.method, "INVITE")
    assert.eq(inv.hdr("X-A"), "1")
    assert.eq(inv.hdr("Content-Length"), "5")
    assert.eq(inv.hdr("Content-Type"), "application/sdp")
    assert.eq(inv.hdr("Max-Forwards"), "70")
    assert.true(inv.hdr("Via").startswith("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK"))
    assert.ne(inv.from_tag, None)
    rep = sip.reply(inv, 180)
    assert.eq(rep.reason, "Ringing")
    assert.eq(rep.to_tag, sip.reply(inv, 200).to_tag)
    assert.eq(rep.call_id, inv.call_id)
    c = sip.cancel(inv)
    assert.eq(c.method, "CANCEL")
    assert.eq(c.hdr("Via"), inv.hdr("Via"))
    assert.eq(c.cseq, inv.cseq)
    a = sip.ack(inv, sip.reply(inv, 486))
    assert.eq(a.to_tag, sip.reply(inv, 486).to_tag)
    assert.eq(sip.register().hdr("Expires"), "3600")

def test_clock():
    t0 = route.now()
    route.advance(1.5)
    assert.eq(route.now() - t0, 1.5)
`

const rtFailing = `
def test_ok():
    assert.eq(1, 1)

def test_wrong_code():
    r = route.request(sip.options(ruri = "sip:127.0.0.1"))
    assert.eq(r.replies[0].code, 404, "the code")

def test_index_error():
    r = route.request(sip.options(ruri = "sip:127.0.0.1"))
    x = r.forwards[0]

def test_text_diff():
    assert.eq("a\nb\nc\n", "a\nB\nc\n")

def test_runaway():
    for i in range(1000000000):
        pass

def test_runaway_script():
    r = route.request(sip.request("SUBSCRIBE"))
    assert.eq(r.error, None)

def test_last():
    assert.true(True)
`

func TestRouteTestsPass(t *testing.T) {
	rep, err := routetest.RunRouteTests(node.RouteTest, "rt.star", []byte(rtScript), "rt_test.star", []byte(rtPassing), routetest.RouteTestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Tests) != 7 {
		t.Errorf("ran %d tests, want 7", len(rep.Tests))
	}
	for _, r := range rep.Tests {
		if !r.Passed {
			t.Errorf("%s failed at %s:\n%s", r.Name, r.FailPos, r.Failure)
		}
	}
	if rep.Tests[0].Name != "test_options" || rep.Tests[6].Name != "test_clock" {
		t.Errorf("tests not in file order: %v, %v", rep.Tests[0].Name, rep.Tests[6].Name)
	}
}

func TestRouteTestsFail(t *testing.T) {
	rep, err := routetest.RunRouteTests(node.RouteTest, "rt.star", []byte(rtScript), "rt_test.star", []byte(rtFailing), routetest.RouteTestOptions{MaxSteps: 100_000})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]routetest.TestResult{}
	for _, r := range rep.Tests {
		got[r.Name] = r
	}
	if len(got) != 7 {
		t.Fatalf("ran %d tests, want 7 (a failure must not stop the others)", len(got))
	}
	if !got["test_ok"].Passed || !got["test_last"].Passed {
		t.Errorf("passing tests failed: %+v %+v", got["test_ok"], got["test_last"])
	}
	if n := rep.Failed(); n != 5 {
		t.Errorf("Failed() = %d, want 5", n)
	}
	wc := got["test_wrong_code"]
	if wc.FailPos != "rt_test.star:7" {
		t.Errorf("FailPos = %q, want rt_test.star:7", wc.FailPos)
	}
	for _, want := range []string{"assert.eq: the code", "got:  200", "want: 404", "last route: reply SIP/2.0 200 OK"} {
		if !strings.Contains(wc.Failure, want) {
			t.Errorf("failure lacks %q:\n%s", want, wc.Failure)
		}
	}
	if f := got["test_index_error"].Failure; !strings.Contains(f, "index 0 out of range") || got["test_index_error"].FailPos != "rt_test.star:11" {
		t.Errorf("index error: %s at %s", f, got["test_index_error"].FailPos)
	}
	if f := got["test_text_diff"].Failure; !strings.Contains(f, "- B") || !strings.Contains(f, "+ b") {
		t.Errorf("no line diff:\n%s", f)
	}
	if f := got["test_runaway"].Failure; !strings.Contains(f, "step limit") {
		t.Errorf("runaway test: %s", f)
	}
	if f := got["test_runaway_script"].Failure; !strings.Contains(f, "step limit of") {
		t.Errorf("runaway script: %s", f)
	}
}

func TestRouteTestsRunFilter(t *testing.T) {
	rep, err := routetest.RunRouteTests(node.RouteTest, "rt.star", []byte(rtScript), "rt_test.star", []byte(rtFailing),
		routetest.RouteTestOptions{Run: regexp.MustCompile("ok|last")})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Tests) != 2 || rep.Failed() != 0 {
		t.Errorf("got %d tests, %d failed; want 2, 0", len(rep.Tests), rep.Failed())
	}
}

func TestRouteTestsLoadErrors(t *testing.T) {
	_, err := routetest.RunRouteTests(node.RouteTest, "bad.star", []byte("def ksr_request_route():\n    KSR.nope(\n"), "bad_test.star", []byte(rtPassing), routetest.RouteTestOptions{})
	if err == nil || !strings.HasPrefix(err.Error(), "bad.star:") {
		t.Errorf("broken script: err = %v, want bad.star:line:col: ...", err)
	}
	_, err = routetest.RunRouteTests(node.RouteTest, "rt.star", []byte(rtScript), "rt_test.star", []byte("def test_x(:\n"), routetest.RouteTestOptions{})
	if err == nil || !strings.HasPrefix(err.Error(), "rt_test.star:1:") {
		t.Errorf("broken test file: err = %v", err)
	}
	_, err = routetest.RunRouteTests(node.RouteTest, "rt.star", []byte(rtScript), "rt_test.star", []byte("r = route.request(sip.options())\n"), routetest.RouteTestOptions{})
	if err == nil || !strings.Contains(err.Error(), "only inside a test function") {
		t.Errorf("route.request at top level: err = %v", err)
	}
}

func TestHarnessGoAPI(t *testing.T) {
	h, err := routetest.NewHarness(node.RouteTest, "rt.star", []byte(rtScript), routetest.HarnessOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	msg, err := routetest.ParseMessage("MESSAGE sip:bob@example.com SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx\n" +
		"From: <sip:a@example.com>;tag=1\nTo: <sip:bob@example.com>\nCall-ID: c1\nCSeq: 1 MESSAGE\n\nhello\n")
	if err != nil {
		t.Fatal(err)
	}
	if cl := msg.ContentLength(); cl == nil || *cl != 7 {
		t.Errorf("Content-Length = %v, want 7 (hello CRLF)", cl)
	}
	r, err := h.Request(msg.(*sip.Request), "192.0.2.1:5060", "udp")
	if err != nil {
		t.Fatal(err)
	}
	fw := r.Of(core.OutForward)
	if len(fw) != 1 || fw[0].Dst.URI() != "sip:10.9.9.9:5080" {
		t.Fatalf("forwards = %+v", fw)
	}
	// Recorded at Send time: kamd's Via is in the record, not in the
	// message the script keeps.
	if n := len(core.FindHeaders(fw[0].Msg, "Via")); n != 2 {
		t.Errorf("recorded forward has %d Vias, want 2", n)
	}
	if n := len(core.FindHeaders(r.Msg.Req, "Via")); n != 1 {
		t.Errorf("routed request has %d Vias, want 1", n)
	}
	if r.Steps == 0 || len(r.Logs) != 1 || r.Logs[0].At == "" {
		t.Errorf("steps %d, logs %+v", r.Steps, r.Logs)
	}
	if _, err := h.Request(&sip.Request{Method: sip.OPTIONS}, "192.0.2.1:5060", "udp"); err == nil {
		t.Error("a request without Via was routed")
	}
}

func TestFixedClock(t *testing.T) {
	c := routetest.NewFixedClock(routetest.RouteTestEpoch)
	var fired []string
	c.AfterFunc(2*time.Second, func() { fired = append(fired, "b") })
	c.AfterFunc(time.Second, func() {
		fired = append(fired, "a")
		c.AfterFunc(500*time.Millisecond, func() { fired = append(fired, "a2@"+c.Now().Sub(routetest.RouteTestEpoch).String()) })
	})
	stop := c.AfterFunc(time.Second, func() { fired = append(fired, "stopped") })
	if !stop.Stop() || stop.Stop() {
		t.Error("Stop: want true then false")
	}
	c.Advance(999 * time.Millisecond)
	if len(fired) != 0 {
		t.Fatalf("fired early: %v", fired)
	}
	c.Advance(time.Second)
	if got := strings.Join(fired, ","); got != "a,a2@1.5s" {
		t.Errorf("fired %s, want a,a2@1.5s", got)
	}
	if c.Pending() != 1 || c.Now() != routetest.RouteTestEpoch.Add(1999*time.Millisecond) {
		t.Errorf("pending %d, now %v", c.Pending(), c.Now())
	}
}

func TestNormalizeSIP(t *testing.T) {
	in := "\n    OPTIONS sip:a SIP/2.0\n    Via: x\n    Content-Length: 99\n\n    body\n    "
	want := "OPTIONS sip:a SIP/2.0\r\nVia: x\r\nContent-Length: 6\r\n\r\nbody\r\n"
	if got := routetest.NormalizeSIP(in); got != want {
		t.Errorf("routetest.NormalizeSIP:\n%q\nwant\n%q", got, want)
	}
	crlf := "OPTIONS sip:a SIP/2.0\r\nContent-Length: 99\r\n"
	if got := routetest.NormalizeSIP(crlf); got != crlf+"\r\n" {
		t.Errorf("CRLF text changed: %q", got)
	}
}

// TestLocalRequestAnswered: a request kamd originates (tm.SendRequest, as
// uac does) is recorded as a local_request, and a reply routed back to
// the harness reaches its OnReply instead of going anywhere.
func TestLocalRequestAnswered(t *testing.T) {
	h, err := routetest.NewHarness(node.RouteTest, "rt.star", []byte(rtScript), routetest.HarnessOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	tmi, err := tm.Of(h.Env)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := routetest.ParseMessage("MESSAGE sip:bob@192.0.2.30:5070 SIP/2.0\nFrom: <sip:kamd@127.0.0.1>;tag=1\n" +
		"To: <sip:bob@192.0.2.30>\nCall-ID: local1\nCSeq: 10 MESSAGE\nContent-Type: text/plain\n\nhello")
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	if err := tmi.SendRequest(&tm.LocalRequest{Req: msg.(*sip.Request), OnReply: func(res *sip.Response) { got = append(got, res.StatusCode) }}); err != nil {
		t.Fatal(err)
	}
	all := h.AllSent()
	if len(all) != 1 || all[0].Kind != core.OutLocalRequest || all[0].Dst.URI() != "sip:192.0.2.30:5070" {
		t.Fatalf("recorded %+v", all)
	}
	// Retransmitted at T1 on UDP, seen by route.advance.
	if r := h.Advance(500 * time.Millisecond); len(r.Of(core.OutLocalRequest)) != 1 {
		t.Errorf("no retransmission at T1: %+v", r.Sent)
	}
	res := core.BuildReply(all[0].Msg.(*sip.Request), 200, "OK", nil)
	r, err := h.Reply(res, "192.0.2.30:5070", "udp")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Sent) != 0 || len(got) != 1 || got[0] != 200 {
		t.Errorf("reply: sent %+v, OnReply got %v", r.Sent, got)
	}
	if r := h.Advance(40 * time.Second); len(r.Sent) != 0 || len(got) != 1 {
		t.Errorf("after the final: sent %+v, OnReply got %v", r.Sent, got)
	}
}

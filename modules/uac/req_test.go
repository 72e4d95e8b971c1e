package uac_test

import (
	"strings"
	"testing"

	"github.com/kamgo/kamgo/kamd/node"
	"github.com/kamgo/kamgo/starlark/routetest"

	_ "github.com/kamgo/kamgo/modules/sl" // the script answers with KSR.sl (checked at load)
)

const reqScript = `
modparam("uac", "event_callback", "on_uac")
modparam("uac", "restore_mode", "none")
modparam("uac", "credential", "alice:sip.example.com:wonderland")

def on_uac(evname):
    KSR.info("%s code=%d type=%d param=%s method=%s" % (evname, KSR.pv.get("$uac_req(evcode)"),
        KSR.pv.get("$uac_req(evtype)"), KSR.pv.get("$uac_req(evparam)"), KSR.pv.get("$uac_req(method)")))

def prepare():
    KSR.pv.unset("$uac_req(all)")
    KSR.pv.sets("$uac_req(method)", "MESSAGE")
    KSR.pv.sets("$uac_req(ruri)", "sip:phone@192.0.2.50:5070")
    KSR.pv.sets("$uac_req(furi)", "sip:kamd@example.com")
    KSR.pv.sets("$uac_req(hdrs)", "Content-Type: text/plain\r\nX-Emergency: yes\r\n")
    KSR.pv.sets("$uac_req(body)", "hello")
    KSR.pv.seti("$uac_req(evroute)", 1)
    KSR.pv.sets("$uac_req(evparam)", "p1")

def ksr_request_route():
    u = KSR.pv.get("$rU")
    if u == "send":
        prepare()
        KSR.pv.seti("$shv(rc)", KSR.uac.uac_req_send())
    elif u == "auth":
        prepare()
        KSR.pv.sets("$uac_req(auser)", "alice")
        KSR.pv.sets("$uac_req(apasswd)", "wonderland")
        KSR.pv.sets("$uac_req(callid)", "fixed-call@example.com")
        KSR.pv.sets("$uac_req(ouri)", "sip:192.0.2.60:5080;transport=tcp")
        KSR.pv.seti("$shv(rc)", KSR.uac.uac_req_send())
    elif u == "quiet":
        prepare()
        KSR.pv.seti("$uac_req(evroute)", 0)
        KSR.pv.seti("$shv(rc)", KSR.uac.uac_req_send())
    elif u == "noruri":
        prepare()
        KSR.pv.unset("$uac_req(ruri)")
        KSR.pv.seti("$shv(rc)", KSR.uac.uac_req_send())
    elif u == "badhdrs":
        prepare()
        KSR.pv.sets("$uac_req(hdrs)", "Via: SIP/2.0/UDP 1.2.3.4\r\n")
        KSR.pv.seti("$shv(rc)", KSR.uac.uac_req_send())
    elif u == "reset":
        prepare()
        KSR.pv.sets("$uac_req(all)", "")
        KSR.pv.seti("$shv(rc)", 1 if KSR.pv.is_null("$uac_req(method)") else 0)
    elif u == "replace":
        KSR.uac.uac_replace_from("Emergency \"Desk\"", "sip:desk@example.com")
        KSR.uac.uac_replace_to("", "sip:psap@example.net")
        KSR.tm.t_relay()
        return
    elif u == "relayauth":
        KSR.tm.t_on_failure("authfail")
        KSR.tm.t_relay_to_proxy("udp:192.0.2.70:5060")
        return
    KSR.sl.send_reply(200, "OK")

def authfail():
    if KSR.tm.t_check_status("401|407") > 0 and KSR.uac.uac_auth() > 0:
        KSR.tm.t_relay_to_proxy("udp:192.0.2.70:5060")
`

const reqTests = `
def test_send_and_reply_to_callback():
    r = route.request(sip.request("MESSAGE", ruri = "sip:send@127.0.0.1"))
    assert.eq(state.shv("rc"), 1)
    assert.eq(len(r.requests), 1)
    q = r.requests[0]
    assert.eq(q.method, "MESSAGE")
    assert.eq(q.ruri, "sip:phone@192.0.2.50:5070")
    assert.eq(q.dst, "sip:192.0.2.50:5070")
    assert.eq(q.msg.body, "hello")
    assert.eq(q.msg.hdr("Content-Type"), "text/plain")
    assert.eq(q.msg.hdr("X-Emergency"), "yes")
    assert.eq(q.msg.from_uri, "sip:kamd@example.com")
    assert.eq(q.msg.to_uri, "sip:phone@192.0.2.50:5070")
    assert.eq(q.msg.cseq, 10)
    assert.true(q.msg.from_tag)
    # provisional: no callback
    r = route.reply(q.msg.reply(100))
    assert.eq(len(r.logs), 0)
    r = route.reply(q.msg.reply(202))
    assert.eq(len(r.sent), 0)
    assert.eq(r.logs[0].message, "uac:reply code=202 type=1 param=p1 method=MESSAGE")
    # a retransmitted final is absorbed
    r = route.reply(q.msg.reply(202))
    assert.eq(len(r.logs), 0)

def test_timeout_is_local_408():
    r = route.request(sip.request("MESSAGE", ruri = "sip:send@127.0.0.1"))
    r = route.advance(2)
    assert.eq([x.method for x in r.requests], ["MESSAGE", "MESSAGE"])  # at 0.5 s and 1.5 s
    r = route.advance(31)
    assert.eq(r.logs[-1].message, "uac:reply code=408 type=2 param=p1 method=MESSAGE")

def test_no_callback_without_evroute():
    r = route.request(sip.request("MESSAGE", ruri = "sip:quiet@127.0.0.1"))
    r = route.reply(r.requests[0].msg.reply(200))
    assert.eq(len(r.logs), 0)

def test_challenge_answered_once():
    r = route.request(sip.request("MESSAGE", ruri = "sip:auth@127.0.0.1"))
    q = r.requests[0]
    assert.eq(q.dst, "sip:192.0.2.60:5080;transport=tcp")
    assert.eq(q.msg.call_id, "fixed-call@example.com")
    chal = q.msg.reply(401, headers = {"WWW-Authenticate": 'Digest realm="sip.example.com", nonce="n1", qop="auth", algorithm=SHA-256'})
    r = route.reply(chal)
    assert.eq(r.logs[0].message, "uac:reply code=401 type=1 param=p1 method=MESSAGE")
    assert.eq(len(r.requests), 1)
    a = r.requests[0].msg
    assert.eq(a.call_id, "fixed-call@example.com")
    assert.eq(a.cseq, 11)
    assert.eq(a.from_tag, q.msg.from_tag)
    h = a.hdr("Authorization")
    assert.contains(h, 'Digest username="alice", realm="sip.example.com", nonce="n1", uri="sip:phone@192.0.2.50:5070", qop=auth, nc=00000001, cnonce="')
    assert.contains(h, "algorithm=SHA-256")
    # a second challenge is not answered again
    r = route.reply(a.reply(401, headers = {"WWW-Authenticate": 'Digest realm="sip.example.com", nonce="n2"'}))
    assert.eq(len(r.requests), 0)
    assert.eq(r.logs[0].message, "uac:reply code=401 type=1 param=p1 method=MESSAGE")

def test_missing_ruri_and_bad_hdrs():
    r = route.request(sip.request("MESSAGE", ruri = "sip:noruri@127.0.0.1"))
    assert.eq(state.shv("rc"), -1)
    assert.eq(len(r.requests), 0)
    assert.contains(r.logs[0].message, "$uac_req(method) and $uac_req(ruri) are required")
    r = route.request(sip.request("MESSAGE", ruri = "sip:badhdrs@127.0.0.1"))
    assert.eq(state.shv("rc"), -1)
    assert.contains(r.logs[0].message, "Via is built by uac_req_send")

def test_all_resets():
    route.request(sip.request("MESSAGE", ruri = "sip:reset@127.0.0.1"))
    assert.eq(state.shv("rc"), 1)

def test_replace_from_to():
    r = route.request(sip.invite(ruri = "sip:replace@10.0.0.5"))
    m = r.relays[0].msg
    assert.eq(m.hdr("From").split(";")[0], '"Emergency \\"Desk\\"" <sip:desk@example.com>')
    assert.eq(m.hdr("To"), "<sip:psap@example.net>")
    assert.true(m.from_tag)

def test_uac_auth_in_failure_route():
    r = route.request(sip.invite(ruri = "sip:relayauth@10.0.0.5"))
    b = r.relays[0].msg
    r = route.reply(b.reply(407, headers = {"Proxy-Authenticate": 'Digest realm="sip.example.com", nonce="pn", qop="auth"'}))
    assert.eq(len(r.relays), 1)
    h = r.relays[0].msg.hdr("Proxy-Authorization")
    assert.contains(h, 'username="alice", realm="sip.example.com", nonce="pn", uri="sip:relayauth@10.0.0.5"')
    assert.eq([x.method for x in r.requests], ["ACK"])
`

func TestUACRequests(t *testing.T) {
	rep, err := routetest.RunRouteTests(node.RouteTest, "req.star", []byte(reqScript), "req_test.star", []byte(reqTests), routetest.RouteTestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Tests) != 8 {
		t.Errorf("ran %d tests", len(rep.Tests))
	}
	for _, r := range rep.Tests {
		if !r.Passed {
			t.Errorf("%s failed at %s:\n%s\n%s", r.Name, r.FailPos, r.Failure, r.Output)
		}
	}
}

func TestEventCallbackCheckedAtLoad(t *testing.T) {
	for _, tc := range []struct{ script, want string }{
		{`modparam("uac", "event_callback", "nosuch")
def ksr_request_route():
    pass
`, `modparam("uac", "event_callback") names callback "nosuch" but the script defines no function nosuch`},
		{`modparam("uac", "event_callback", "")
def ksr_request_route():
    pass
`, ""},
	} {
		h, err := routetest.NewHarness(node.RouteTest, "x.star", []byte(tc.script), routetest.HarnessOptions{})
		if h != nil {
			h.Close()
		}
		if tc.want == "" {
			if err != nil {
				t.Errorf("load: %v", err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "x.star:1:") {
			t.Errorf("load error %v, want %q at x.star:1", err, tc.want)
		}
	}
}

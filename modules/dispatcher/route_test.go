package dispatcher_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kamgo/kamgo/kamd/node"
	"github.com/kamgo/kamgo/starlark/routetest"

	_ "github.com/kamgo/kamgo/modules/all"
)

const dsList = `# setid destination flags priority attrs
1 sip:10.0.0.1:5060 0 0 duid=gw1;weight=50;rweight=50
1 sip:10.0.0.2:5060 0 5 duid=gw2;weight=25;rweight=25
1 sip:10.0.0.3:5060 0 0 duid=gw3;weight=25;rweight=25;maxload=1
2 sip:10.0.1.1:5080;transport=tcp 8 0
`

const dsScript = `
modparam("dispatcher", "list_file", "LIST")
modparam("dispatcher", "ds_ping_interval", 10)
modparam("dispatcher", "ds_probing_mode", 1)
modparam("dispatcher", "ds_probing_threshold", 2)
modparam("dispatcher", "event_callback", "ds_event")
modparam("dispatcher", "ds_ping_reply_codes", "code=501;class=6")

def ds_event(evname):
    KSR.info("event " + evname + " " + KSR.pv.get("$du"))

def ksr_request_route():
    if KSR.is_method("BYE"):
        KSR.sl.send_reply(200, "OK")
        return
    if KSR.dispatcher.ds_is_from_list(-1) > 0:
        KSR.sl.send_reply(403, "From a gateway")
        return
    alg = int(KSR.hdr.get("X-Alg") or "4")
    setid = int(KSR.hdr.get("X-Set") or "1")
    domain = KSR.hdr.get("X-Domain")
    limit = int(KSR.hdr.get("X-Limit") or "0")
    if limit:
        rc = KSR.dispatcher.ds_select_domain_limit(setid, alg, limit) if domain else KSR.dispatcher.ds_select_dst_limit(setid, alg, limit)
    else:
        rc = KSR.dispatcher.ds_select_domain(setid, alg) if domain else KSR.dispatcher.ds_select_dst(setid, alg)
    if rc < 0:
        KSR.sl.send_reply(503, "No gateway")
        return
    KSR.tm.t_on_failure("ds_failover")
    KSR.tm.t_relay()

def ds_failover():
    if KSR.tm.t_is_canceled() > 0:
        return
    if KSR.tm.t_check_status("503") > 0 or KSR.tm.t_branch_timeout() > 0:
        KSR.dispatcher.ds_mark_dst_state("ip")
    if KSR.hdr.is_present("X-Domain") > 0:
        if KSR.dispatcher.ds_next_domain() > 0:
            KSR.tm.t_on_failure("ds_failover")
            KSR.tm.t_relay()
        return
    if KSR.dispatcher.ds_next_dst() > 0:
        KSR.tm.t_on_failure("ds_failover")
        KSR.tm.t_relay()
    elif KSR.dispatcher.ds_load_unset() > 0:
        KSR.info("load released")
`

const dsTests = `
def inv(alg, n = 1, setid = 1, call = None, extra = {}):
    h = {"X-Alg": str(alg), "X-Set": str(setid)}
    h.update(extra)
    if call:
        return sip.invite(ruri = "sip:bob@example.com", headers = h, call_id = call)
    return sip.invite(ruri = "sip:bob@example.com", headers = h)

def count(l, v):
    return len([x for x in l if x == v])

def dsts(alg, n, setid = 1):
    out = []
    for i in range(n):
        r = route.request(inv(alg, setid = setid))
        out.append(r.relays[0].dst if r.relays else r.replies[-1].code)
    return out

def test_round_robin():
    assert.eq(dsts(4, 4), ["sip:10.0.0.2:5060", "sip:10.0.0.1:5060", "sip:10.0.0.3:5060", "sip:10.0.0.2:5060"])

def test_priority_first():
    assert.eq(dsts(8, 2), ["sip:10.0.0.2:5060", "sip:10.0.0.2:5060"])

def test_hash_callid_is_stable():
    a = route.request(inv(0, call = "same@x")).relays[0].dst
    b = route.request(inv(0, call = "same@x")).relays[0].dst
    assert.eq(a, b)

def test_weight_spreads_by_weight():
    got = dsts(9, 100)
    assert.eq(count(got, "sip:10.0.0.1:5060"), 50)
    assert.eq(count(got, "sip:10.0.0.2:5060"), 25)
    assert.eq(count(got, "sip:10.0.0.3:5060"), 25)

def test_relative_weight_skips_inactive():
    state.rpc("dispatcher.set_state", "i", 1, "sip:10.0.0.1:5060")
    got = dsts(11, 10)
    assert.eq(count(got, "sip:10.0.0.1:5060"), 0)
    assert.eq(count(got, "sip:10.0.0.2:5060"), 5)

def test_call_load_and_maxload_and_bye():
    a = route.request(inv(10, call = "c1")).relays[0].dst
    b = route.request(inv(10, call = "c2")).relays[0].dst
    c = route.request(inv(10, call = "c3")).relays[0].dst
    assert.eq(sorted([a, b, c]), ["sip:10.0.0.1:5060", "sip:10.0.0.2:5060", "sip:10.0.0.3:5060"])
    loads = {t["DEST"]["URI"]: t["DEST"]["LOAD"] for t in state.rpc("dispatcher.list", "full")["RECORDS"][-1]["SET"]["TARGETS"]}
    assert.eq(loads["sip:10.0.0.3:5060"], 1)
    route.request(sip.request("BYE", ruri = "sip:bob@example.com", call_id = "c3"))
    loads = {t["DEST"]["URI"]: t["DEST"]["LOAD"] for t in state.rpc("dispatcher.list", "full")["RECORDS"][-1]["SET"]["TARGETS"]}
    assert.eq(loads["sip:10.0.0.3:5060"], 0)

def test_failover_in_failure_route():
    r = route.request(inv(8))
    assert.eq(r.relays[0].dst, "sip:10.0.0.2:5060")
    f = route.reply(r.relays[0].msg.reply(503))
    assert.eq(f.relays[0].dst, "sip:10.0.0.1:5060")
    assert.eq(f.events[0].topic, "dispatcher")
    assert.eq(f.events[0].data["event"], "dst-down")
    assert.eq(f.events[0].data["old_state"], "AP")
    assert.eq(f.events[0].data["state"], "IP")
    assert.contains([l.message for l in f.logs], "event dispatcher:dst-down sip:10.0.0.2:5060")
    f2 = route.reply(f.relays[0].msg.reply(408))
    assert.eq(f2.relays[0].dst, "sip:10.0.0.3:5060")
    f3 = route.reply(f2.relays[0].msg.reply(486))
    assert.eq(f3.relays, [])  # no destination left: the best reply goes upstream
    assert.eq([x.code for x in f3.relayed_replies], [408])  # tm ranks the branches' replies (RFC 3261 16.7)
    # 10.0.0.2 is inactive now: the next call starts at 10.0.0.1
    assert.eq(route.request(inv(8)).relays[0].dst, "sip:10.0.0.1:5060")

def test_limit_and_next_domain():
    r = route.request(inv(8, extra = {"X-Limit": "2", "X-Domain": "1"}))
    assert.eq(r.relays[0].msg.ruri, "sip:bob@10.0.0.2:5060")
    f = route.reply(r.relays[0].msg.reply(503))
    assert.eq(f.relays[0].msg.ruri, "sip:bob@10.0.0.1:5060")
    f2 = route.reply(f.relays[0].msg.reply(503))
    assert.eq(f2.relays, [])  # the limit of 2 leaves no third

def test_call_load_released_when_all_fail():
    r = route.request(inv(10, call = "c9"))
    f = route.reply(r.relays[0].msg.reply(486))  # the failure route moves the call (and its count) on
    f = route.reply(f.relays[0].msg.reply(486))
    f = route.reply(f.relays[0].msg.reply(486))
    assert.eq(f.relays, [])
    assert.contains([l.message for l in f.logs], "load released")
    loads = [t["DEST"]["LOAD"] for t in state.rpc("dispatcher.list", "full")["RECORDS"][-1]["SET"]["TARGETS"]]
    assert.eq(loads, [0, 0, 0])

def test_select_domain():
    r = route.request(inv(8, extra = {"X-Domain": "1"}))
    assert.eq(r.relays[0].dst, "sip:10.0.0.2:5060")
    assert.eq(r.relays[0].msg.ruri, "sip:bob@10.0.0.2:5060")

def test_no_set_and_all_down():
    assert.eq(dsts(4, 1, setid = 9), [503])
    state.rpc("dispatcher.set_state", "d", 1, "all")
    assert.eq(dsts(4, 1), [503])

def test_unsupported_algorithm_is_no_destination():
    r = route.request(inv(13))
    assert.eq(r.replies[-1].code, 503)
    assert.contains(r.logs[0].message, "algorithm 13 is not supported")

def test_is_from_list():
    r = route.request(sip.invite(ruri = "sip:bob@example.com", src = "10.0.0.3:5060"))
    assert.eq(r.replies[-1].code, 403)
    r = route.request(sip.invite(ruri = "sip:bob@example.com", src = "10.0.0.3:5099"))
    assert.ne(r.replies[-1].code, 403)

def test_list_rpc_shape():
    l = state.rpc("dispatcher.list")
    assert.eq(l["NRSETS"], 2)
    assert.eq([r["SET"]["ID"] for r in l["RECORDS"]], [2, 1])  # as Kamailio: last first
    s1 = l["RECORDS"][-1]["SET"]
    assert.eq(s1["ID"], 1)
    assert.eq([t["DEST"]["URI"] for t in s1["TARGETS"]], ["sip:10.0.0.2:5060", "sip:10.0.0.1:5060", "sip:10.0.0.3:5060"])
    d = s1["TARGETS"][0]["DEST"]
    assert.eq(d["FLAGS"], "AP")
    assert.eq(d["PRIORITY"], 5)
    assert.eq(d["ATTRS"]["DUID"], "gw2")
    assert.eq(d["ATTRS"]["WEIGHT"], 25)
    assert.eq(d["ATTRS"]["BODY"], "duid=gw2;weight=25;rweight=25")
    assert.eq(l["RECORDS"][0]["SET"]["TARGETS"][0]["DEST"]["FLAGS"], "AP")
    assert.eq(d["ATTRS"]["SOCKET"], None)
    assert.true("ATTRS" not in l["RECORDS"][0]["SET"]["TARGETS"][0]["DEST"])  # no attrs, as Kamailio
    assert.true("LOAD" not in d)
    assert.eq(state.rpc("dispatcher.list", "full")["RECORDS"][-1]["SET"]["TARGETS"][0]["DEST"]["LOAD"], 0)

def test_add_remove_duid():
    state.rpc("dispatcher.add", 1, "sip:10.0.0.9:5060", 0, 9, "duid=new")
    assert.eq(dsts(8, 1), ["sip:10.0.0.9:5060"])  # priority 9 is first now
    state.rpc("dispatcher.set_duid_state", "d", 1, "new")
    assert.eq(dsts(8, 1), ["sip:10.0.0.2:5060"])
    state.rpc("dispatcher.remove", 1, "sip:10.0.0.9:5060")
    assert.eq(len(state.rpc("dispatcher.list")["RECORDS"][-1]["SET"]["TARGETS"]), 3)
    state.rpc("dispatcher.add", 7, "sip:10.0.7.1")  # a new group
    assert.eq(state.rpc("dispatcher.list")["NRSETS"], 3)
    assert.fails(lambda: state.rpc("dispatcher.add", 1, "http://x"), "Adding dispatcher dst failed")
    assert.fails(lambda: state.rpc("dispatcher.remove", 1, "sip:10.9.9.9"), "Removing dispatcher dst failed")
    assert.fails(lambda: state.rpc("dispatcher.set_duid_state", "i", 1, "nope"), "State Update Failed")
    state.rpc("dispatcher.reload")  # back to the list file
    assert.eq(state.rpc("dispatcher.list")["NRSETS"], 2)

def test_set_state_errors():
    assert.fails(lambda: state.rpc("dispatcher.set_state", "x", 1, "sip:10.0.0.1:5060"), "Invalid State Parameter")
    assert.fails(lambda: state.rpc("dispatcher.set_state", "i", 1, "sip:10.9.9.9"), "State Update Failed")

def test_ping_active():
    assert.eq(state.rpc("dispatcher.ping_active"), {"OldPingState": 1})
    assert.eq(state.rpc("dispatcher.ping_active", 0), {"NewPingState": 0, "OldPingState": 1})
    r = route.advance(10)
    assert.eq([x for x in r.requests if x.method == "OPTIONS"], [])

def test_probing_marks_down_and_up():
    r = route.advance(10)
    opts = [x for x in r.requests if x.method == "OPTIONS"]
    assert.eq(sorted([x.dst for x in opts]), ["sip:10.0.0.1:5060", "sip:10.0.0.2:5060", "sip:10.0.0.3:5060", "sip:10.0.1.1:5080;transport=tcp"])
    assert.eq(opts[0].msg.hdr("From").startswith("<sip:dispatcher@localhost>"), True)
    for x in opts:
        if x.dst == "sip:10.0.0.3:5060":
            route.reply(x.msg.reply(501))  # up by ds_ping_reply_codes
        elif x.dst == "sip:10.0.1.1:5080;transport=tcp":
            route.reply(x.msg.reply(404))  # not in ds_ping_reply_codes: down at the second
        elif x.dst != "sip:10.0.0.2:5060":
            route.reply(x.msg.reply(200))
    # 10.0.0.2 does not answer: 408 after 32 s; threshold 2 -> trying, then inactive
    r = route.advance(32)
    flags = {t["DEST"]["URI"]: t["DEST"]["FLAGS"] for t in state.rpc("dispatcher.list")["RECORDS"][-1]["SET"]["TARGETS"]}
    assert.eq(flags["sip:10.0.0.2:5060"], "TP")
    assert.eq(flags["sip:10.0.0.3:5060"], "AP")
    assert.eq([e.data["event"] for e in r.events if e.topic == "dispatcher"], ["dst_state"])
    answered = []
    for i in range(6):
        r = route.advance(10)
        for x in r.requests:
            if x.method == "OPTIONS" and x.dst != "sip:10.0.0.2:5060" and x.msg.call_id not in answered:
                answered.append(x.msg.call_id)
                route.reply(x.msg.reply(200))
    flags = {t["DEST"]["URI"]: t["DEST"]["FLAGS"] for t in state.rpc("dispatcher.list")["RECORDS"][-1]["SET"]["TARGETS"]}
    assert.eq(flags["sip:10.0.0.2:5060"], "IP")
    assert.eq(flags["sip:10.0.0.1:5060"], "AP")
    assert.eq(dsts(8, 1), ["sip:10.0.0.1:5060"])
    # it answers again: active
    r = route.advance(40)
    last = None
    for x in r.requests:
        if x.method == "OPTIONS" and x.dst == "sip:10.0.0.2:5060":
            last = x
    ev = route.reply(last.msg.reply(200)).events
    assert.eq(ev[0].data["state"], "AP")
    assert.eq(ev[0].data["event"], "dst-up")
    assert.eq(dsts(8, 1), ["sip:10.0.0.2:5060"])
`

func TestDispatcherRoutes(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "dispatcher.list")
	if err := os.WriteFile(list, []byte(dsList), 0o644); err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(dsScript, "LIST", list, 1)
	rep, err := routetest.RunRouteTests(node.RouteTest, "ds.star", []byte(src), "ds_test.star", []byte(dsTests), routetest.RouteTestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range rep.Tests {
		if !tr.Passed {
			t.Errorf("%s (%s): %s\n%s", tr.Name, tr.FailPos, tr.Failure, tr.Output)
		}
	}
	if len(rep.Tests) < 15 {
		t.Errorf("ran %d tests", len(rep.Tests))
	}
}

func TestDispatcherBadConfig(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`modparam("dispatcher", "ds_ping_method", "INVITE")`, "probes must be non-INVITE"},
		{`modparam("dispatcher", "ds_ping_method", "options")`, "upper-case SIP method"},
		{`modparam("dispatcher", "ds_ping_from", "dispatcher@localhost")`, "invalid SIP URI"},
		{`modparam("dispatcher", "ds_probing_mode", 4)`, "want 0..3"},
		{`modparam("dispatcher", "ds_probing_threshold", 0)`, "at least 1"},
		{`modparam("dispatcher", "list_file", "/nonexistent/ds.list")`, "list_file"},
		{`modparam("dispatcher", "db_url", "mysql://x")`, "want sqlite:///path.db"},
	} {
		src := tc.src + "\ndef ksr_request_route():\n    pass\n"
		_, err := routetest.NewHarness(node.RouteTest, "b.star", []byte(src), routetest.HarnessOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.src, err, tc.want)
		}
	}
}

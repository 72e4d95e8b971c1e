package dialog_test

import (
	"testing"

	"github.com/kamgo/kamgo/kamd/node"
	_ "github.com/kamgo/kamgo/modules/all"
	"github.com/kamgo/kamgo/starlark/routetest"
)

const dlgScript = `
modparam("dialog", "profiles_with_value", "caller ; trunk")
modparam("dialog", "profiles_no_value", "inbound")
modparam("dialog", "default_timeout", 3600)

def ksr_request_route():
    if KSR.is_CANCEL():
        if KSR.tm.t_check_trans() > 0:
            KSR.tm.t_relay()
        return
    if KSR.siputils.has_totag() > 0:
        KSR.pv.seti("$shv(known)", KSR.dialog.is_known_dlg())
        if KSR.dialog.dlg_manage() > 0:
            KSR.pv.sets("$shv(acct)", KSR.pv.get("$dlg_var(acct)"))
            KSR.pv.seti("$shv(state)", KSR.pv.get("$dlg(state)"))
        if KSR.pv.get("$rU") == "hangup":
            KSR.pv.seti("$shv(bye)", KSR.dialog.dlg_bye("all"))
            KSR.sl.send_reply(200, "OK")
            return
        KSR.tm.t_relay()
        return
    KSR.pv.seti("$shv(known)", KSR.dialog.is_known_dlg())
    KSR.pv.sets("$dlg_var(acct)", "A-17")
    KSR.pv.seti("$shv(m)", KSR.dialog.dlg_manage())
    KSR.dialog.set_dlg_profile("caller", KSR.pv.get("$fU"))
    KSR.dialog.set_dlg_profile_static("inbound")
    KSR.pv.seti("$shv(undef)", KSR.dialog.set_dlg_profile("nosuch", "x"))
    KSR.dialog.get_profile_size("caller", KSR.pv.get("$fU"), "$var(n)")
    KSR.pv.seti("$shv(size)", KSR.pv.get("$var(n)"))
    KSR.pv.sets("$shv(cid)", KSR.pv.get("$dlg(callid)"))
    if KSR.pv.get("$rU") == "short":
        KSR.dialog.dlg_set_timeout(10)
    KSR.tm.t_relay()
`

const dlgTests = `
def answered():
    inv = sip.invite(ruri = "sip:bob@192.0.2.20:5060", from_uri = "sip:alice@example.com")
    r = route.request(inv)
    assert.eq(state.shv("m"), 1)
    assert.eq(state.shv("known"), -1)
    assert.eq(state.shv("size"), 1)
    assert.eq(state.shv("undef"), -1)
    assert.eq(state.shv("cid"), inv.call_id)
    d = state.rpc("dlg.list")
    assert.eq(len(d), 1)
    assert.eq(d[0]["state"], 1)
    route.reply(r.relays[0].msg.reply(180))
    assert.eq(state.rpc("dlg.list")[0]["state"], 2)
    ok = route.reply(r.relays[0].msg.reply(200, contact = "<sip:bob@192.0.2.20:5060>"))
    return inv, ok

def ack(inv, ok):
    return sip.request("ACK", ruri = "sip:bob@192.0.2.20:5060", call_id = inv.call_id, from_tag = inv.from_tag,
                       to_tag = ok.relayed_replies[0].msg.to_tag, from_uri = "sip:alice@example.com", to_uri = "sip:bob@192.0.2.20:5060")

def bye(inv, ok, ruri = "sip:bob@192.0.2.20:5060", method = "BYE"):
    return sip.request(method, ruri = ruri, call_id = inv.call_id, from_tag = inv.from_tag,
                       to_tag = ok.relayed_replies[0].msg.to_tag, cseq = 2, from_uri = "sip:alice@example.com", to_uri = "sip:bob@192.0.2.20:5060")

def test_call_lifecycle():
    inv, ok = answered()
    assert.eq(ok.events[0].topic, "dialog")
    assert.eq(ok.events[0].data["event"], "start")
    d = state.rpc("dlg.list")[0]
    assert.eq(d["state"], 3)
    assert.eq(d["call-id"], inv.call_id)
    assert.eq(d["caller"]["tag"], inv.from_tag)
    assert.eq(d["callee"]["tag"], ok.relayed_replies[0].msg.to_tag)
    assert.eq(d["callee"]["contact"], "sip:bob@192.0.2.20:5060")
    assert.eq(d["lifetime"], 3600)
    route.request(ack(inv, ok))
    assert.eq(state.shv("known"), 1)
    assert.eq(state.shv("state"), 4)
    assert.eq(state.shv("acct"), "A-17")
    assert.eq(state.rpc("dlg.stats_active"), {"starting": 0, "connecting": 0, "answering": 0, "ongoing": 1, "all": 1})
    ctx = state.rpc("dlg.list_ctx")[0]
    assert.eq(ctx["variables"], [{"acct": "A-17"}])
    assert.eq(ctx["profiles"], [{"caller": "alice"}, {"inbound": ""}])
    state.shv("acct", "")
    r = route.request(bye(inv, ok))
    assert.eq(r.events[0].data["event"], "end")
    assert.eq(state.shv("acct"), "A-17")  # the BYE still sees its dialog
    assert.eq(state.rpc("dlg.list"), [])
    assert.eq(state.rpc("dlg.stats_active")["all"], 0)
    assert.eq(len(r.relays), 1)

def test_failed_call_leaves_no_dialog():
    inv = sip.invite(ruri = "sip:bob@192.0.2.20:5060")
    r = route.request(inv)
    busy = route.reply(r.relays[0].msg.reply(486))
    assert.eq(busy.events[0].data["event"], "failed")
    assert.eq(state.rpc("dlg.list"), [])
    assert.eq(state.rpc("stats.get_statistics", "dialog:failed_dialogs"), {"dialog:failed_dialogs": 1})

def test_dlg_bye_ends_both_sides():
    inv, ok = answered()
    route.request(ack(inv, ok))
    r = route.request(bye(inv, ok, ruri = "sip:hangup@192.0.2.20:5060", method = "INFO"))
    assert.eq(state.shv("bye"), 1)
    byes = [x for x in r.requests if x.method == "BYE"]
    assert.eq(len(byes), 2)
    assert.eq(byes[0].dst, "sip:192.0.2.20:5060")
    assert.eq(byes[0].msg.to_tag, ok.relayed_replies[0].msg.to_tag)
    assert.eq(byes[1].dst, "sip:192.0.2.10:5060")
    assert.eq(byes[1].msg.to_tag, inv.from_tag)
    assert.eq(state.rpc("dlg.list"), [])

def test_end_dlg_rpc():
    inv, ok = answered()
    d = state.rpc("dlg.list")[0]
    assert.fails(lambda: state.rpc("dlg.end_dlg", d["h_entry"], d["h_id"] + 7), "Requested Dialog not found")
    state.rpc("dlg.end_dlg", d["h_entry"], d["h_id"])
    assert.eq(state.rpc("dlg.list"), [])

def test_timeout():
    inv = sip.invite(ruri = "sip:short@192.0.2.20:5060")
    r = route.request(inv)
    route.reply(r.relays[0].msg.reply(200))
    assert.eq(state.rpc("dlg.list")[0]["lifetime"], 10)
    r = route.advance(11)
    assert.eq([e.data["event"] for e in r.events if e.topic == "dialog"], ["end"])
    assert.eq(state.rpc("dlg.list"), [])
`

func TestDialog(t *testing.T) {
	rep, err := routetest.RunRouteTests(node.RouteTest, "dlg.star", []byte(dlgScript), "dlg_test.star", []byte(dlgTests), routetest.RouteTestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Tests) != 5 {
		t.Errorf("ran %d tests", len(rep.Tests))
	}
	for _, r := range rep.Tests {
		if !r.Passed {
			t.Errorf("%s failed at %s:\n%s\n%s", r.Name, r.FailPos, r.Failure, r.Output)
		}
	}
}

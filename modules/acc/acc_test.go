package acc_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/kamd/node"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/starlark/routetest"

	_ "github.com/kamgo/kamgo/modules/all"
)

const accScript = `
modparam("acc", "log_flag", 1)
modparam("acc", "db_flag", 2)
modparam("acc", "log_missed_flag", 3)
modparam("acc", "db_missed_flag", 3)
modparam("acc", "cdr_enable", 1)
modparam("acc", "cdrs_table", "acc_cdrs")

def ksr_request_route():
    if KSR.is_ACK() or KSR.is_CANCEL():
        if KSR.tm.t_check_trans() > 0:
            KSR.tm.t_relay()
        return
    u = KSR.pv.get("$rU")
    if u == "manual":
        KSR.acc.acc_log_request("404 Not here")
        KSR.pv.seti("$shv(rc)", KSR.acc.acc_db_request("404 Not here", "acc"))
        KSR.pv.seti("$shv(bad)", KSR.acc.acc_db_request("x", "nosuchtable"))
        KSR.sl.send_reply(404, "Not here")
        return
    if KSR.is_INVITE() and KSR.siputils.has_totag() < 0:
        KSR.dialog.dlg_manage()
    if u != "noacc":
        KSR.setflag(1)
        KSR.setflag(2)
        KSR.setflag(3)
    KSR.tm.t_relay()
`

type row struct{ method, fromTag, toTag, callID, code, reason, at string }

// rows reads a table (by Call-ID, then as written), waiting up to 2 s for n
// rows: acc_db_request writes at once, while the writer goroutine
// commits transaction records in batches after the reply went out.
func rows(t *testing.T, h *routetest.Harness, table string, n int) []row {
	t.Helper()
	for end := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if r := readRows(t, h, table); len(r) >= n || time.Now().After(end) {
			return r
		}
	}
}

func readRows(t *testing.T, h *routetest.Harness, table string) []row {
	t.Helper()
	q, err := h.Env.DB.Query(`SELECT method, from_tag, to_tag, callid, sip_code, sip_reason, time FROM ` + table + ` ORDER BY callid, id`)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	var out []row
	for q.Next() {
		var r row
		if err := q.Scan(&r.method, &r.fromTag, &r.toTag, &r.callID, &r.code, &r.reason, &r.at); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func invite(user, callID string, cseq int, method, toTag string) *sip.Request {
	to := "<sip:" + user + "@192.0.2.20>"
	if toTag != "" {
		to += ";tag=" + toTag
	}
	raw := fmt.Sprintf("%s sip:%s@192.0.2.20:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-%s-%d\r\n"+
		"Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=ft1\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d %s\r\n"+
		"Contact: <sip:alice@192.0.2.10:5060>\r\nContent-Length: 0\r\n\r\n", method, user, callID, cseq, to, callID, cseq, method)
	m, err := routetest.ParseMessage(raw)
	if err != nil {
		panic(err)
	}
	return m.(*sip.Request)
}

func answer(t *testing.T, h *routetest.Harness, r *routetest.Result, code int, toTag string) *routetest.Result {
	t.Helper()
	br := r.Of(core.OutBranch)
	if len(br) == 0 {
		t.Fatalf("nothing relayed: %+v", r.Errors)
	}
	res := core.BuildReply(br[0].Msg.(*sip.Request), code, map[int]string{200: "OK", 486: "Busy Here"}[code], nil)
	res.To().Params.Remove("tag")
	res.To().Params.Add("tag", toTag)
	out, err := h.Reply(res, "192.0.2.20:5060", "udp")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func logged(r *routetest.Result, prefix string) []string {
	var out []string
	for _, l := range r.Logs {
		if strings.HasPrefix(l.Message, prefix) {
			out = append(out, l.Message)
		}
	}
	return out
}

func TestAcc(t *testing.T) {
	h, err := routetest.NewHarness(node.RouteTest, "acc.star", []byte(accScript), routetest.HarnessOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	// An answered call: the 200 is logged and written to acc, and its BYE too.
	r, err := h.Request(invite("bob", "c1", 1, "INVITE", ""), "192.0.2.10:5060", "udp")
	if err != nil {
		t.Fatal(err)
	}
	ok := answer(t, h, r, 200, "tt1")
	want := "ACC: transaction answered: timestamp=" + fmt.Sprint(h.Clock.Now().Unix()) + ";method=INVITE;from_tag=ft1;to_tag=tt1;call_id=c1;code=200;reason=OK"
	if got := logged(ok, "ACC: transaction answered"); len(got) != 1 || got[0] != want {
		t.Errorf("log %q, want %q", got, want)
	}
	h.Clock.Advance(42 * time.Second)
	r, err = h.Request(invite("bob", "c1", 2, "BYE", "tt1"), "192.0.2.10:5060", "udp")
	if err != nil {
		t.Fatal(err)
	}
	bye := answer(t, h, r, 200, "tt1")
	if got := logged(r, "ACC: CDR: "); len(got) != 1 || !strings.Contains(got[0], ";duration=42.000;call_id=c1;from_tag=ft1;to_tag=tt1") {
		t.Errorf("CDR log %q", got)
	}
	_ = bye

	// A busy callee: a missed call (log and missed_calls), nothing in acc
	// (no failed_transaction_flag).
	r, _ = h.Request(invite("carol", "c2", 1, "INVITE", ""), "192.0.2.10:5060", "udp")
	busy := answer(t, h, r, 486, "tt2")
	if got := logged(busy, "ACC: call missed: "); len(got) != 1 || !strings.Contains(got[0], ";call_id=c2;code=486;reason=Busy Here") {
		t.Errorf("missed-call log %q", got)
	}
	// Without the flags nothing is accounted.
	r, _ = h.Request(invite("noacc", "c3", 1, "INVITE", ""), "192.0.2.10:5060", "udp")
	answer(t, h, r, 200, "tt3")
	// acc_db_request / acc_log_request.
	r, _ = h.Request(invite("manual", "c4", 1, "MESSAGE", ""), "192.0.2.10:5060", "udp")
	if got := logged(r, "ACC: request accounted: "); len(got) != 1 || !strings.HasSuffix(got[0], ";method=MESSAGE;from_tag=ft1;to_tag=;call_id=c4;code=404;reason=Not here") {
		t.Errorf("acc_log_request %q", got)
	}
	if rc, bad := h.Env.Shv.Get("rc").Int, h.Env.Shv.Get("bad").Int; rc != 1 || bad != -1 {
		t.Errorf("acc_db_request %d, to a missing table %d", rc, bad)
	}

	ts0 := routetest.RouteTestEpoch.UTC().Format("2006-01-02 15:04:05")
	ts1 := routetest.RouteTestEpoch.Add(42 * time.Second).UTC().Format("2006-01-02 15:04:05")
	wantAcc := []row{
		{"INVITE", "ft1", "tt1", "c1", "200", "OK", ts0},
		{"BYE", "ft1", "tt1", "c1", "200", "OK", ts1},
		{"MESSAGE", "ft1", "", "c4", "404", "Not here", ts1},
	}
	if got := rows(t, h, "acc", 3); fmt.Sprint(got) != fmt.Sprint(wantAcc) {
		t.Errorf("acc rows\n got %v\nwant %v", got, wantAcc)
	}
	wantMissed := []row{{"INVITE", "ft1", "tt2", "c2", "486", "Busy Here", ts1}}
	if got := rows(t, h, "missed_calls", 1); fmt.Sprint(got) != fmt.Sprint(wantMissed) {
		t.Errorf("missed_calls rows\n got %v\nwant %v", got, wantMissed)
	}
	var start, end string
	var dur float64
	if err := h.Env.DB.QueryRow(`SELECT start_time, end_time, duration FROM acc_cdrs`).Scan(&start, &end, &dur); err != nil || start != ts0 || end != ts1 || dur != 42 {
		t.Errorf("acc_cdrs: %s %s %v %v", start, end, dur, err)
	}
	var v int
	if err := h.Env.DB.QueryRow(`SELECT table_version FROM version WHERE table_name = 'acc'`).Scan(&v); err != nil || v != 5 {
		t.Errorf("acc version %d %v", v, err)
	}
}

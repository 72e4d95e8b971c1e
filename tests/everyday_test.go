package tests

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

// everydayScript is a registrar + stateful proxy with dialog tracking and
// accounting: lookup forks to every contact of the AoR.
func everydayScript(int) string {
	return `
modparam("tm", "fr_inv_timer", 8000)
modparam("acc", "log_flag", 1)
modparam("acc", "db_flag", 2)
modparam("acc", "log_missed_flag", 3)
modparam("acc", "db_missed_flag", 3)
modparam("acc", "cdr_enable", 1)

def ksr_request_route():
    if KSR.is_REGISTER():
        KSR.registrar.save("location", 0)
        return
    if KSR.is_CANCEL():
        if KSR.tm.t_check_trans() > 0:
            KSR.tm.t_relay()
        return
    if KSR.siputils.has_totag() > 0:
        if KSR.rr.loose_route() > 0:
            KSR.dialog.dlg_manage()
            if KSR.is_BYE():
                KSR.setflag(1)
                KSR.setflag(2)
            KSR.tm.t_relay()
            return
        if KSR.is_ACK():
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return
        KSR.sl.sl_send_reply(404, "Not here")
        return
    KSR.rr.record_route()
    KSR.dialog.dlg_manage()
    KSR.setflag(1)
    KSR.setflag(2)
    KSR.setflag(3)
    if KSR.registrar.lookup("location") < 0:
        KSR.sl.send_reply(404, "Not Found")
        return
    KSR.tm.t_relay()
`
}

// register binds contacts (URI, q) to the AoR user@127.0.0.1 with raw REGISTERs.
func registerContacts(t *testing.T, k *Kamd, user string, contacts map[int]string) {
	t.Helper()
	u := newUAC(t)
	var cs []string
	for port, q := range contacts {
		cs = append(cs, fmt.Sprintf("<sip:%s@127.0.0.1:%d>;q=%s", user, port, q))
	}
	callID := randToken()
	raw := fmt.Sprintf("REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK%s;rport\r\nMax-Forwards: 70\r\n"+
		"From: <sip:%s@127.0.0.1>;tag=%s\r\nTo: <sip:%s@127.0.0.1>\r\nCall-ID: %s\r\nCSeq: 1 REGISTER\r\nContact: %s\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n",
		u.Local(), randToken(), user, randToken(), user, callID, strings.Join(cs, ", "))
	u.Send(k.UDPAddr(), []byte(raw))
	if r := u.Final(callID, 5*time.Second); r.Res().StatusCode != 200 {
		t.Fatalf("REGISTER: %d\n%s", r.Res().StatusCode, k.Log())
	}
}

func callTo(user string, k *Kamd) sip.Uri {
	return sip.Uri{Scheme: "sip", User: user, Host: "127.0.0.1", Port: k.Port}
}

type dbRow struct{ method, toTag, code, reason string }

// accRows reads the rows of a call, waiting up to 2 s for n of them: acc
// writes after the reply has gone out, so the caller may see it first.
func accRows(t *testing.T, k *Kamd, table, callID string, n int) []dbRow {
	t.Helper()
	var out []dbRow
	for end := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		out = readAccRows(t, k, table, callID)
		if len(out) >= n || time.Now().After(end) {
			return out
		}
	}
}

func readAccRows(t *testing.T, k *Kamd, table, callID string) []dbRow {
	t.Helper()
	db, err := core.OpenDB(filepath.Join(k.Dir, "kamgo.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT method, to_tag, sip_code, sip_reason FROM `+table+` WHERE callid = ? ORDER BY id`, callID)
	if err != nil {
		t.Fatalf("%s: %v", table, err)
	}
	defer rows.Close()
	var out []dbRow
	for rows.Next() {
		var r dbRow
		if err := rows.Scan(&r.method, &r.toTag, &r.code, &r.reason); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func dlgList(t *testing.T, k *rpcKamd) []any {
	t.Helper()
	v := k.ctlJSON(t, "dlg.list")
	if v == nil {
		return nil
	}
	l, ok := v.([]any)
	if !ok {
		t.Fatalf("dlg.list: want a list, got %T %v", v, v)
	}
	return l
}

// A call to an AoR with three contacts rings all three at once; the one
// that answers wins, the other two get a CANCEL. The dialog is listed
// until the BYE, and the INVITE and the BYE are in the acc table.
func TestEverydayForkDialogAcc(t *testing.T) {
	ringing1 := startSipUAS(t, 180, 0)
	ringing2 := startSipUAS(t, 180, 0)
	answers := startSipUAS(t, 180, 200)
	k := startRPCKamd(t, rpcKamdOpts{script: everydayScript})
	registerContacts(t, k.Kamd, "bob", map[int]string{ringing1.port: "1.0", ringing2.port: "0.5", answers.port: "0.1"})

	uac := startSipUAC(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	dlg, err := uac.dialogs.Invite(ctx, callTo("bob", k.Kamd), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := dlg.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatalf("answer: %v\n%s", err, k.Log())
	}
	for _, u := range []*sipUAS{ringing1, ringing2, answers} {
		if u.first("INVITE") == nil {
			t.Errorf("UAS %d never got the INVITE", u.port)
		}
	}
	ringing1.waitEvent(t, "canceled", 5*time.Second)
	ringing2.waitEvent(t, "canceled", 5*time.Second)
	if err := dlg.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	answers.waitEvent(t, "ACK", 5*time.Second)
	callID := dlg.InviteRequest.CallID().Value()
	l := dlgList(t, k)
	if len(l) != 1 {
		t.Fatalf("dlg.list during the call: %v", l)
	}
	d := asObject(t, l[0], "dialog")
	if d["call-id"] != callID || fmt.Sprint(d["state"]) != "4" {
		t.Errorf("dlg.list: %v", d)
	}
	toTag, _ := dlg.InviteResponse.To().Params.Get("tag")
	if callee := asObject(t, d["callee"], "callee"); callee["tag"] != toTag {
		t.Errorf("callee tag %v, want %s", callee["tag"], toTag)
	}
	if err := dlg.Bye(ctx); err != nil {
		t.Fatalf("BYE: %v\n%s", err, k.Log())
	}
	answers.waitEvent(t, "BYE", 5*time.Second)
	if l := dlgList(t, k); len(l) != 0 {
		t.Errorf("dlg.list after the BYE: %v", l)
	}
	want := []dbRow{{"INVITE", toTag, "200", "OK"}, {"BYE", toTag, "200", "OK"}}
	if got := accRows(t, k.Kamd, "acc", callID, 2); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("acc rows %v, want %v", got, want)
	}
	if got := readAccRows(t, k.Kamd, "missed_calls", callID); len(got) != 0 {
		t.Errorf("missed_calls has an answered call: %v", got)
	}
	k.WaitLog(t, "ACC: CDR: ", 5*time.Second)
}

// A 603 from one contact ends the search: the ringing one is CANCELed, the
// caller gets the 603, and it is a missed call.
func TestEverydayFork6xxStops(t *testing.T) {
	ringing := startSipUAS(t, 180, 0)
	declines := startSipUAS(t, 603)
	k := startRPCKamd(t, rpcKamdOpts{script: everydayScript})
	registerContacts(t, k.Kamd, "carol", map[int]string{ringing.port: "1.0", declines.port: "0.5"})

	uac := startSipUAC(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	dlg, err := uac.dialogs.Invite(ctx, callTo("carol", k.Kamd), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = dlg.WaitAnswer(ctx, sipgo.AnswerOptions{})
	var de *sipgo.ErrDialogResponse
	if !errors.As(err, &de) || de.Res.StatusCode != 603 {
		t.Fatalf("want the 603 at the caller, got %v\n%s", err, k.Log())
	}
	ringing.waitEvent(t, "canceled", 5*time.Second)
	callID := dlg.InviteRequest.CallID().Value()
	if got := accRows(t, k.Kamd, "missed_calls", callID, 1); len(got) != 1 || got[0].code != "603" {
		t.Errorf("missed_calls %v, want the 603", got)
	}
	if l := dlgList(t, k); len(l) != 0 {
		t.Errorf("dlg.list after a declined call: %v", l)
	}
}

// dlg.end_dlg hangs up a call: both the caller and the callee get a BYE.
func TestEverydayEndDialogByRPC(t *testing.T) {
	callee := startSipUAS(t, 200)
	k := startRPCKamd(t, rpcKamdOpts{script: everydayScript})
	registerContacts(t, k.Kamd, "dave", map[int]string{callee.port: "1.0"})

	// The caller is a raw UA so the test sees the BYE that reaches it.
	caller := newUAC(t)
	callID := randToken()
	caller.Send(k.UDPAddr(), buildRequest(caller.Local(), reqSpec{Method: "INVITE", RURI: "sip:dave@" + k.Addr(), CallID: callID}))
	ok := caller.Final(callID, 5*time.Second).Res()
	if ok.StatusCode != 200 {
		t.Fatalf("INVITE: %d", ok.StatusCode)
	}
	toTag, _ := ok.To().Params.Get("tag")
	ack := fmt.Sprintf("ACK %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK%s;rport\r\nMax-Forwards: 70\r\nRoute: %s\r\n"+
		"From: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
		ok.Contact().Address.String(), caller.Local(), randToken(), ok.GetHeader("Record-Route").Value(), ok.From().Value(), ok.To().Value(), callID)
	caller.Send(k.UDPAddr(), []byte(ack))
	callee.waitEvent(t, "ACK", 5*time.Second)

	l := dlgList(t, k)
	if len(l) != 1 {
		t.Fatalf("dlg.list: %v", l)
	}
	d := asObject(t, l[0], "dialog")
	k.ctlOK(t, "dlg.end_dlg", fmt.Sprint(d["h_entry"]), fmt.Sprint(d["h_id"]))
	callee.waitEvent(t, "BYE", 5*time.Second)
	for {
		r, okr := caller.Recv(5 * time.Second)
		if !okr {
			t.Fatalf("the caller got no BYE\n%s", k.Log())
		}
		if req := r.Req(); req != nil && req.Method == sip.BYE {
			if f, _ := req.From().Params.Get("tag"); f != toTag {
				t.Errorf("BYE to the caller has From tag %s, want the callee's %s", f, toTag)
			}
			break
		}
	}
	if l := dlgList(t, k); len(l) != 0 {
		t.Errorf("dlg.list after dlg.end_dlg: %v", l)
	}
	r := k.ctl(t, "dlg.end_dlg", fmt.Sprint(d["h_entry"]), fmt.Sprint(d["h_id"]))
	if r.Code == 0 || !strings.Contains(r.Stdout+r.Stderr, "Requested Dialog not found") {
		t.Errorf("dlg.end_dlg of an ended dialog: %s", r)
	}
}

// A busy callee is a missed call: a missed_calls row with the 486, no acc
// row (the script sets no failed_transaction_flag), and no dialog left.
func TestEverydayBusyIsMissedCall(t *testing.T) {
	busy := startSipUAS(t, 486)
	k := startRPCKamd(t, rpcKamdOpts{script: everydayScript})
	registerContacts(t, k.Kamd, "erin", map[int]string{busy.port: "1.0"})

	uac := startSipUAC(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	dlg, err := uac.dialogs.Invite(ctx, callTo("erin", k.Kamd), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = dlg.WaitAnswer(ctx, sipgo.AnswerOptions{})
	var de *sipgo.ErrDialogResponse
	if !errors.As(err, &de) || de.Res.StatusCode != 486 {
		t.Fatalf("want the 486 at the caller, got %v\n%s", err, k.Log())
	}
	callID := dlg.InviteRequest.CallID().Value()
	toTag, _ := de.Res.To().Params.Get("tag")
	want := []dbRow{{"INVITE", toTag, "486", "Busy Here"}}
	if got := accRows(t, k.Kamd, "missed_calls", callID, 1); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("missed_calls %v, want %v", got, want)
	}
	if got := readAccRows(t, k.Kamd, "acc", callID); len(got) != 0 {
		t.Errorf("acc has the failed call: %v", got)
	}
	k.WaitLog(t, "ACC: call missed: ", 5*time.Second)
	if l := dlgList(t, k); len(l) != 0 {
		t.Errorf("dlg.list after a busy call: %v", l)
	}
}

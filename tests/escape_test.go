package tests

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// withFrom replaces the From line buildRequest wrote.
func withFrom(req []byte, from string) []byte {
	return regexp.MustCompile(`(?m)^From: [^\r]*`).ReplaceAll(req, []byte(from))
}

// Issue 16, on the wire: a From tag that would break out of ;ftag= in the
// Record-Route is answered 400 "Bad From tag" and nothing is relayed; a
// token tag is record-routed as one hop.
func TestRecordRouteFromTagInjection(t *testing.T) {
	uas := newUAS(t)
	k := startKamd(t, statefulScript(uas.Port(), uas.Port()))
	uac := newUAC(t)
	ruri := "sip:bob@" + k.Addr()
	for _, from := range []string{
		"From: <sip:alice@127.0.0.1>;tag=a>,<sip:evil@203.0.113.9;lr",
		`From: <sip:alice@127.0.0.1>;tag="x>,<sip:evil@203.0.113.9;lr>"`,
	} {
		callID := randToken() + "@kamgo.test"
		uac.Send(k.UDPAddr(), withFrom(buildRequest(uac.Local(), reqSpec{Method: "INVITE", RURI: ruri, CallID: callID}), from))
		r := uac.Final(callID, 5*time.Second)
		if res := r.Res(); res.StatusCode != 400 || res.Reason != "Bad From tag" {
			t.Errorf("%s: got %d %s, want 400 Bad From tag\n%s", from, res.StatusCode, res.Reason, r.Raw)
		}
		if strings.Contains(string(r.Raw), "Record-Route") {
			t.Errorf("%s: the 400 carries a Record-Route:\n%s", from, r.Raw)
		}
	}
	callID := randToken() + "@kamgo.test"
	uac.Send(k.UDPAddr(), withFrom(buildRequest(uac.Local(), reqSpec{Method: "INVITE", RURI: ruri, CallID: callID}),
		"From: <sip:alice@127.0.0.1>;tag=a8f3.b-c"))
	got := uas.WaitRequest(callID, "INVITE", 5*time.Second)
	rr := got.Req().GetHeaders("Record-Route")
	if len(rr) != 1 || rr[0].Value() != "<sip:127.0.0.1:"+strconv.Itoa(k.Port)+";lr;ftag=a8f3.b-c>" {
		t.Errorf("relayed Record-Route %v, want one hop with ;ftag=a8f3.b-c\n%s", rr, got.Raw)
	}
	for _, r := range uas.Received() {
		if strings.Contains(string(r.Raw), "evil") {
			t.Errorf("an injected request reached the UAS:\n%s", r.Raw)
		}
	}
}

// Issue 16, on the wire: a REGISTER whose Contact holds a bare LF is
// refused (at the door or by registrar), its Contact never echoed split.
func TestRegisterContactInjection(t *testing.T) {
	k := startKamd(t, "")
	uac := newUAC(t)
	callID := randToken() + "@kamgo.test"
	req := buildRequest(uac.Local(), reqSpec{Method: "REGISTER", RURI: "sip:" + k.Addr(), CallID: callID,
		Extra: []string{"Contact: <sip:alice@127.0.0.1;x=\nX-Injected: yes>"}})
	req = []byte(strings.Replace(string(req), "To: <sip:bob@kamgo.test>", "To: <sip:alice@127.0.0.1>", 1))
	uac.Send(k.UDPAddr(), req)
	r := uac.Final(callID, 5*time.Second)
	if res := r.Res(); res.StatusCode != 400 {
		t.Fatalf("got %d %s, want 400\n%s", res.StatusCode, res.Reason, r.Raw)
	}
	if strings.Contains(string(r.Raw), "X-Injected") {
		t.Fatalf("the reply echoes the injected header:\n%s", r.Raw)
	}
}

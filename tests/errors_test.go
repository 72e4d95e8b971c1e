package tests

import (
	"strings"
	"testing"
	"time"
)

// Scripts that fail: kamd answers 500 (Kamailio drops silently), logs the
// error with its script position, and keeps serving.

const failingScript = `
def ksr_request_route():
    what = KSR.hdr.get("X-Fail")
    if what == "fail":
        fail("boom")
    elif what == "div":
        x = 1 // 0
    elif what == "loop":
        for i in range(100000000):
            pass
    elif what == "ro-pv":
        KSR.pv.sets("$si", "x")
    elif what == "crlf-reason":
        KSR.sl.send_reply(200, "OK\r\nX-Injected: yes")
    KSR.sl.send_reply(200, "OK")
`

func TestScriptErrorsAnswer500(t *testing.T) {
	k := startKamd(t, failingScript, "--max-steps", "100000")
	uac := newUAC(t)
	for _, tc := range []struct {
		name, header string
		log          []string // each must appear in kamd's log
	}{
		{"fail()", "fail", []string{"boom", "route.star:5:"}},
		{"division by zero", "div", []string{"division by zero", "route.star:7:"}},
		{"step limit", "loop", []string{"step limit"}},
		{"read-only PV write", "ro-pv", []string{"$si"}},
		{"CR/LF in reply reason", "crlf-reason", []string{"CR, LF"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			uac.t = t
			before := k.Log()
			r := uac.Do(k, reqSpec{Method: "OPTIONS", RURI: "sip:" + k.Addr(), Extra: []string{"X-Fail: " + tc.header}})
			res := r.Res()
			if res.StatusCode != 500 || res.Reason != "Server Internal Error" {
				t.Fatalf("got %d %q, want 500 Server Internal Error:\n%s", res.StatusCode, res.Reason, r.Raw)
			}
			if len(headerLines(r.Raw, "X-Injected")) != 0 || strings.Contains(string(r.Raw), "X-Injected") {
				t.Fatalf("reply carries the injected header:\n%s", r.Raw)
			}
			uac.Nothing(300*time.Millisecond, "after the 500")
			// The error is logged with where it happened.
			deadline := time.Now().Add(5 * time.Second)
			for {
				newLog := strings.TrimPrefix(k.Log(), before)
				missing := ""
				for _, s := range tc.log {
					if !strings.Contains(newLog, s) {
						missing = s
					}
				}
				if missing == "" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("kamd's log lacks %q for this error; new log:\n%s", missing, newLog)
				}
				time.Sleep(20 * time.Millisecond)
			}
			// And kamd keeps serving.
			r = uac.Do(k, reqSpec{Method: "OPTIONS", RURI: "sip:" + k.Addr()})
			if res := r.Res(); res.StatusCode != 200 {
				t.Fatalf("next request after the error: got %d, want 200", res.StatusCode)
			}
			k.Alive(t)
		})
	}
}

func TestACKIsNeverAnswered(t *testing.T) {
	k := startKamd(t, `
def ksr_request_route():
    if KSR.hdr.get("X-Fail") == "fail":
        fail("boom on ACK")
    if KSR.is_ACK():
        KSR.sl.sl_send_reply(200, "OK")
        KSR.sl.send_reply(404, "Not Here")
        KSR.x.modf("sl_send_reply", "500", "Nope")
        return
    KSR.sl.sl_send_reply(200, "OK")
`)
	uac := newUAC(t)
	for _, extra := range [][]string{nil, {"X-Fail: fail"}} {
		ack := buildRequest(uac.Local(), reqSpec{Method: "ACK", RURI: "sip:bob@" + k.Addr(), Extra: extra})
		uac.Send(k.UDPAddr(), ack)
		// A request sent after the ACK is answered: whatever comes first
		// must be that answer, and nothing may follow.
		callID := randToken() + "@kamgo.test"
		uac.Send(k.UDPAddr(), buildRequest(uac.Local(), reqSpec{Method: "OPTIONS", RURI: "sip:" + k.Addr(), CallID: callID}))
		r, ok := uac.Recv(5 * time.Second)
		if !ok {
			t.Fatal("no answer to the OPTIONS sent after the ACK")
		}
		if res := r.Res(); res == nil || res.CallID() == nil || string(*res.CallID()) != callID {
			t.Fatalf("ACK (extra headers %q) was answered:\n%s", extra, r.Raw)
		}
		uac.Nothing(500*time.Millisecond, "after ACK and OPTIONS")
	}
	if strings.Contains(k.Log(), "boom on ACK") == false {
		t.Errorf("the script error on ACK was not logged")
	}
}

func TestMalformedRequests(t *testing.T) {
	k := startKamd(t, `
def ksr_request_route():
    KSR.sl.sl_send_reply(200, "OK")
`)
	uac := newUAC(t)
	ruri := "sip:" + k.Addr()

	t.Run("no Via: not answerable, no crash", func(t *testing.T) {
		uac.t = t
		uac.Send(k.UDPAddr(), buildRequest(uac.Local(), reqSpec{Method: "OPTIONS", RURI: ruri, NoVia: true}))
		uac.Nothing(500*time.Millisecond, "request without Via")
		k.Alive(t)
	})
	t.Run("no From: 400", func(t *testing.T) {
		uac.t = t
		r := uac.Do(k, reqSpec{Method: "OPTIONS", RURI: ruri, NoFrom: true})
		if res := r.Res(); res.StatusCode != 400 {
			t.Fatalf("request without From: got %d %s, want 400", res.StatusCode, res.Reason)
		}
	})
	t.Run("garbage and truncated datagrams: no crash", func(t *testing.T) {
		uac.t = t
		full := buildRequest(uac.Local(), reqSpec{Method: "INVITE", RURI: ruri})
		for _, b := range [][]byte{
			[]byte("hello"),
			[]byte("\x00\x01\x02\x03\xff\xfe"),
			[]byte("INVITE\r\n\r\n"),
			[]byte("SIP/2.0 200 OK\r\n\r\n"),
			[]byte("INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP\r\nCSeq: x\r\n\r\n"),
			full[:len(full)/2],
			full[:len(full)-3],
		} {
			uac.Send(k.UDPAddr(), b)
		}
		// Drain whatever answers (400s) came, then check kamd still serves.
		time.Sleep(300 * time.Millisecond)
		for {
			r, ok := uac.Recv(10 * time.Millisecond)
			if !ok {
				break
			}
			if res := r.Res(); res != nil && res.StatusCode < 300 {
				t.Errorf("a malformed message got %d:\n%s", res.StatusCode, r.Raw)
			}
		}
		r := uac.Do(k, reqSpec{Method: "OPTIONS", RURI: ruri})
		if res := r.Res(); res.StatusCode != 200 {
			t.Fatalf("after malformed input: got %d, want 200", res.StatusCode)
		}
		k.Alive(t)
	})
}

func TestLargeMessagesOverUDP(t *testing.T) {
	uas := newUAS(t)
	k := startKamd(t, tutorialScript(uas.Port()))
	uac := newUAC(t)
	body := strings.Repeat("a=x-padding:0123456789abcdef0123456789abcdef0123456789abcdef\r\n", 40) // 2520 bytes
	uas.Answer(200, "OK", body, "Content-Type: application/sdp", "X-Big: "+strings.Repeat("r", 500))
	callID := randToken() + "@kamgo.test"
	req := buildRequest(uac.Local(), reqSpec{Method: "INVITE", RURI: "sip:bob@10.1.1.1", CallID: callID, Body: body,
		Extra: []string{"Content-Type: application/sdp", "X-Big: " + strings.Repeat("q", 500)}})
	if len(req) <= 1300 {
		t.Fatalf("test request is only %d bytes", len(req))
	}
	uac.Send(k.UDPAddr(), req)
	got := uas.WaitRequest(callID, "INVITE", 5*time.Second)
	if string(got.Req().Body()) != body {
		t.Errorf("UAS got a %d-byte body, want the %d-byte original", len(got.Req().Body()), len(body))
	}
	if xs := headerLines(got.Raw, "X-Big"); len(xs) != 1 || xs[0] != strings.Repeat("q", 500) {
		t.Errorf("X-Big header not forwarded intact")
	}
	r := uac.Final(callID, 5*time.Second)
	if len(r.Raw) <= 1300 {
		t.Fatalf("reply at the UAC is only %d bytes", len(r.Raw))
	}
	if res := r.Res(); res.StatusCode != 200 || string(res.Body()) != body {
		t.Errorf("UAC got %d with a %d-byte body, want 200 with the UAS's %d bytes", res.StatusCode, len(res.Body()), len(body))
	}
}

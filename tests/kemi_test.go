package tests

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tutorialScript is the KEMI tutorial script of issue 2, with 10.1.1.1
// replaced by the test UAS on 127.0.0.1:uasPort.
func tutorialScript(uasPort int) string {
	return fmt.Sprintf(`
def ksr_request_route():
    KSR.dbg("method " + KSR.pv.get("$rm") + " r-uri " + KSR.pv.get("$ru"))
    if KSR.is_method("REGISTER"):
        KSR.sl.send_reply(200, "OK")
    elif KSR.is_method("INVITE"):
        KSR.hdr.append("X-KEMI: I came from KEMI\r\n")
        KSR.sethost("127.0.0.1")
        KSR.pv.seti("$rp", %d)
        KSR.forward()
    else:
        KSR.sl.send_reply(500, "Got no idea...")
`, uasPort)
}

func TestKEMITutorialScript(t *testing.T) {
	uas := newUAS(t)
	k := startKamd(t, tutorialScript(uas.Port()), "-d")
	uac := newUAC(t)

	t.Run("REGISTER gets 200", func(t *testing.T) {
		uac.t = t
		r := uac.Do(k, reqSpec{Method: "REGISTER", RURI: "sip:" + k.Addr(), Extra: []string{"Expires: 3600"}})
		res := r.Res()
		if res.StatusCode != 200 || res.Reason != "OK" {
			t.Fatalf("REGISTER: got %d %s, want 200 OK", res.StatusCode, res.Reason)
		}
		if tag, _ := res.To().Params.Get("tag"); tag == "" {
			t.Errorf("200 to REGISTER has no To tag:\n%s", r.Raw)
		}
		if n := len(res.GetHeaders("Via")); n != 1 {
			t.Errorf("200 has %d Vias, want the UAC's only:\n%s", n, r.Raw)
		}
		k.WaitLog(t, "method REGISTER r-uri sip:"+k.Addr(), 5*time.Second)
	})

	t.Run("INVITE is forwarded with X-KEMI and the host rewritten", func(t *testing.T) {
		uac.t = t
		uas.t = t
		callID := randToken() + "@kamgo.test"
		branch := "z9hG4bK" + randToken()
		uas.Answer(200, "OK", "")
		uac.Send(k.UDPAddr(), buildRequest(uac.Local(), reqSpec{Method: "INVITE", RURI: "sip:bob@10.1.1.1", CallID: callID, Branch: branch}))
		got := uas.WaitRequest(callID, "INVITE", 5*time.Second)
		req := got.Req()
		if req.Recipient.Host != "127.0.0.1" || req.Recipient.Port != uas.Port() || req.Recipient.User != "bob" {
			t.Errorf("R-URI at the UAS is %s, want sip:bob@127.0.0.1:%d", req.Recipient.String(), uas.Port())
		}
		if xs := headerLines(got.Raw, "X-KEMI"); len(xs) != 1 || xs[0] != "I came from KEMI" {
			t.Errorf("X-KEMI at the UAS = %q, want exactly one \"I came from KEMI\":\n%s", xs, got.Raw)
		}
		vias := req.GetHeaders("Via")
		if len(vias) != 2 {
			t.Fatalf("UAS got %d Via headers, want kamd's and the UAC's:\n%s", len(vias), got.Raw)
		}
		top := req.Via()
		if top.Host != "127.0.0.1" || top.Port != k.Port {
			t.Errorf("top Via %q is not kamd's (127.0.0.1:%d)", top.Value(), k.Port)
		}
		if b, _ := top.Params.Get("branch"); !strings.HasPrefix(b, "z9hG4bK") || b == branch {
			t.Errorf("kamd's Via branch %q: want a new RFC 3261 branch", b)
		}
		if !strings.Contains(vias[1].Value(), branch) {
			t.Errorf("second Via %q is not the UAC's (branch %s)", vias[1].Value(), branch)
		}
		if got.From.Port != k.Port {
			t.Errorf("INVITE came from port %d, want kamd's socket %d", got.From.Port, k.Port)
		}

		// The UAS's 200 goes to kamd's Via; kamd pops it and passes it on.
		r := uac.Final(callID, 5*time.Second)
		res := r.Res()
		if res.StatusCode != 200 {
			t.Fatalf("UAC got %d, want the UAS's 200", res.StatusCode)
		}
		rv := res.GetHeaders("Via")
		if len(rv) != 1 || !strings.Contains(rv[0].Value(), branch) {
			t.Errorf("reply at the UAC must carry only the UAC's Via; got %d:\n%s", len(rv), r.Raw)
		}
		if c := headerLines(r.Raw, "Contact"); len(c) != 1 || !strings.Contains(c[0], "uas@127.0.0.1:"+strconv.Itoa(uas.Port())) {
			t.Errorf("reply Contact %q is not the UAS's", c)
		}
		if r.From.Port != k.Port {
			t.Errorf("reply came from port %d, want kamd (%d)", r.From.Port, k.Port)
		}
	})

	t.Run("UAS error reply comes back", func(t *testing.T) {
		uac.t = t
		uas.t = t
		uas.Answer(486, "Busy Here", "")
		r := uac.Do(k, reqSpec{Method: "INVITE", RURI: "sip:bob@10.1.1.1"})
		if res := r.Res(); res.StatusCode != 486 || res.Reason != "Busy Here" {
			t.Fatalf("got %d %s, want the UAS's 486 Busy Here", res.StatusCode, res.Reason)
		}
	})

	t.Run("OPTIONS gets 500 Got no idea", func(t *testing.T) {
		uac.t = t
		r := uac.Do(k, reqSpec{Method: "OPTIONS", RURI: "sip:" + k.Addr()})
		if res := r.Res(); res.StatusCode != 500 || res.Reason != "Got no idea..." {
			t.Fatalf("OPTIONS: got %d %q, want 500 \"Got no idea...\"", res.StatusCode, res.Reason)
		}
	})
}

func TestKEMITutorialScriptOverTCP(t *testing.T) {
	uas := newUAS(t)
	k := startKamd(t, tutorialScript(uas.Port()))
	c := dialTCP(t, k)
	for _, tc := range []struct {
		method string
		code   int
		reason string
	}{{"REGISTER", 200, "OK"}, {"OPTIONS", 500, "Got no idea..."}, {"REGISTER", 200, "OK"}} {
		callID := randToken() + "@kamgo.test"
		c.Send(buildRequest(c.Local(), reqSpec{Method: tc.method, RURI: "sip:" + k.Addr(), Transport: "TCP", CallID: callID}))
		r := c.Final(callID, 5*time.Second)
		if res := r.Res(); res.StatusCode != tc.code || res.Reason != tc.reason {
			t.Fatalf("%s over TCP: got %d %q on the connection, want %d %q", tc.method, res.StatusCode, res.Reason, tc.code, tc.reason)
		}
	}
}

func TestModfSlSendReply(t *testing.T) {
	k := startKamd(t, `
def ksr_request_route():
    KSR.x.modf("sl_send_reply", "200", "OK")
`)
	uac := newUAC(t)
	r := uac.Do(k, reqSpec{Method: "OPTIONS", RURI: "sip:" + k.Addr()})
	if res := r.Res(); res.StatusCode != 200 || res.Reason != "OK" {
		t.Fatalf("KSR.x.modf(\"sl_send_reply\", \"200\", \"OK\"): got %d %s", res.StatusCode, res.Reason)
	}
}

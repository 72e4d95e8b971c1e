package tests

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// What kamd refuses at the door, before the script (issue 16), on the
// wire: the exact bytes of the issue, over UDP and TCP. The script forwards
// everything to a UAS, so anything that got past the door shows up there.

func doorScript(uasPort int) string {
	return fmt.Sprintf(`
def ksr_request_route():
    KSR.info("door: routed " + KSR.pv.get("$rm") + " " + KSR.pv.get("$ci"))
    KSR.forward_uri("sip:127.0.0.1:%d")
`, uasPort)
}

// doorReq is a request from local with the given start line, top Via and
// From, and a unique Call-ID (returned).
func doorReq(local, start, via, from, extra string) (string, string) {
	callID := "door-" + randToken()
	if via == "" {
		via = "Via: SIP/2.0/UDP " + local + ";branch=z9hG4bK" + randToken() + ";rport"
	}
	if from == "" {
		from = "From: <sip:alice@" + local + ">;tag=" + randToken()
	}
	return start + "\r\n" + via + "\r\n" + from + "\r\n" +
		"To: <sip:bob@kamgo.test>\r\n" +
		"Call-ID: " + callID + "\r\n" +
		"CSeq: 1 " + strings.Fields(start)[0] + "\r\n" +
		"Max-Forwards: 70\r\n" +
		extra +
		"Content-Length: 0\r\n\r\n", callID
}

// All collects what a TCP client receives until kamd closes the
// connection or d passes.
func (c *TCPClient) All(d time.Duration) (got []received, closed bool) {
	deadline := time.After(d)
	for {
		select {
		case r, ok := <-c.in:
			if !ok {
				return got, true
			}
			got = append(got, r)
		case <-deadline:
			return got, false
		}
	}
}

func TestDoorRefusesMalformedRequests(t *testing.T) {
	uas := newUAS(t)
	k := startKamd(t, doorScript(uas.Port()))
	uac := newUAC(t)
	local := uac.Local()
	ruri := "sip:bob@" + k.Addr()
	for _, tc := range []struct {
		name                    string
		start, via, from, extra string
		raw                     func(string) string // edits the request's bytes
		code                    int                 // 0: no answer at all
	}{
		{name: "bare LF in a Contact (REGISTER)", start: "REGISTER sip:" + k.Addr() + " SIP/2.0",
			extra: "Contact: <sip:alice@" + local + ">;x=\nX-Injected: yes\r\n", code: 400},
		{name: "bare LF ends a header", start: "OPTIONS " + ruri + " SIP/2.0", extra: "X-A: 1\nX-Injected: yes\r\n", code: 400},
		{name: "NUL in a header value", start: "OPTIONS " + ruri + " SIP/2.0", extra: "X-A: a\x00b\r\n", code: 400},
		{name: "NUL as a quoted-pair", start: "OPTIONS " + ruri + " SIP/2.0", extra: "X-A: \"a\\\x00b\"\r\n", code: 400},
		{name: "NUL inside a header name", start: "OPTIONS " + ruri + " SIP/2.0", extra: "X-N\x00ul: 1\r\n", code: 400},
		{name: "bare CR in a header", start: "OPTIONS " + ruri + " SIP/2.0", extra: "X-A: a\rX-Injected: yes\r\n", code: 400},
		{name: "Via: //R m (no valid Via: nowhere to answer)", start: "OPTIONS " + ruri + " SIP/2.0", via: "Via: //R m", code: 0},
		{name: "Via: SIP//UDP", start: "OPTIONS " + ruri + " SIP/2.0", via: "Via: SIP//UDP " + local + ";branch=z9hG4bK1", code: 0},
		{name: "Via: // 0", start: "OPTIONS " + ruri + " SIP/2.0", via: "Via: // 0", code: 0},
		{name: "From: :0m0tag= [ (answered without it)", start: "OPTIONS " + ruri + " SIP/2.0", from: "From: :0m0tag= [", code: 400},
		{name: "OPTIONS sip:[]", start: "OPTIONS sip:[] SIP/2.0", code: 400},
		{name: "SIP/3.0", start: "OPTIONS " + ruri + " SIP/3.0", code: 505},
		{name: "bare SIP version", start: "OPTIONS " + ruri + " SIP", code: 400},
		{name: "folded first header line", start: "OPTIONS " + ruri + " SIP/2.0",
			raw: func(s string) string { return strings.Replace(s, " SIP/2.0\r\nVia:", " SIP/2.0\r\n  Via:", 1) }, code: 400},
		{name: "no empty line after the headers", start: "OPTIONS " + ruri + " SIP/2.0",
			raw: func(s string) string { return strings.TrimSuffix(s, "\r\n") }, code: 400},
		{name: "CSeq method in another case", start: "OPTIONS " + ruri + " SIP/2.0",
			raw: func(s string) string { return strings.Replace(s, "CSeq: 1 OPTIONS", "CSeq: 1 options", 1) }, code: 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			uac.t = t
			raw, callID := doorReq(local, tc.start, tc.via, tc.from, tc.extra)
			if tc.raw != nil {
				raw = tc.raw(raw)
			}
			uac.Send(k.UDPAddr(), []byte(raw))
			r, ok := uac.Recv(time.Second)
			switch {
			case tc.code == 0 && ok:
				t.Fatalf("answered, want nothing:\n%s", r.Raw)
			case tc.code != 0 && !ok:
				t.Fatalf("no answer, want %d", tc.code)
			case ok:
				res := r.Res()
				if res == nil || res.StatusCode != tc.code || res.CallID() == nil || string(*res.CallID()) != callID {
					t.Fatalf("got, want %d for Call-ID %s:\n%s", tc.code, callID, r.Raw)
				}
				if bytes.Contains(r.Raw, []byte("X-Injected")) || bytes.Contains(r.Raw, []byte("\x00")) || bytes.Contains(r.Raw, []byte("0m0tag")) {
					t.Fatalf("the answer echoes the malformed header:\n%q", r.Raw)
				}
			}
			uac.Nothing(200*time.Millisecond, "after the answer")
			for _, got := range uas.Received() {
				if bytes.Contains(got.Raw, []byte(callID)) {
					t.Fatalf("forwarded to the UAS:\n%q", got.Raw)
				}
			}
			if strings.Contains(k.Log(), "door: routed") && strings.Contains(k.Log(), callID) {
				t.Fatalf("the script saw it")
			}
		})
	}
	k.Alive(t)
}

// TestDoorMethodCase: methods are case-sensitive (RFC 3261 7.1): "invite"
// is an unknown method, forwarded as written with its CSeq, never as INVITE.
func TestDoorMethodCase(t *testing.T) {
	uas := newUAS(t)
	k := startKamd(t, doorScript(uas.Port()))
	uac := newUAC(t)
	raw, callID := doorReq(uac.Local(), "invite sip:bob@"+k.Addr()+" SIP/2.0", "", "", "")
	if !strings.Contains(raw, "CSeq: 1 invite\r\n") {
		t.Fatalf("test request:\n%s", raw)
	}
	uac.Send(k.UDPAddr(), []byte(raw))
	got := uas.WaitRequest(callID, "INVITE", 5*time.Second) // the UAS's sipgo upper-cases it
	if !bytes.HasPrefix(got.Raw, []byte("invite sip:")) || !bytes.Contains(got.Raw, []byte("\r\nCSeq: 1 invite\r\n")) {
		t.Fatalf("forwarded as:\n%s", got.Raw)
	}
}

// TestDoorTCPFraming: a valid OPTIONS and a broken request in one TCP
// read. The 400 (if any) is built from the broken request's own bytes,
// never from the OPTIONS' Via, Call-ID or CSeq.
func TestDoorTCPFraming(t *testing.T) {
	k := startKamd(t, `
def ksr_request_route():
    KSR.sl.sl_send_reply(200, "OK")
`)
	for _, tc := range []struct {
		name   string
		broken func(local string) (string, string) // bytes, Call-ID expected in a 400 ("" none)
	}{
		{"broken request with readable headers", func(local string) (string, string) {
			raw, callID := doorReq(local, "INVITE sip:bob@"+k.Addr()+" SIP/2.0", "Via: SIP/2.0/TCP "+local+";branch=z9hG4bKbroken", "", "Max-Forwards: many\r\n")
			return raw, callID
		}},
		{"broken request with nothing to echo", func(local string) (string, string) {
			return "INVITE sip:bob@" + k.Addr() + " SIP/2.0\r\nContent-Length: x\r\n\r\n", ""
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialTCP(t, k)
			local := c.Local()
			ok, okCallID := doorReq(local, "OPTIONS sip:"+k.Addr()+" SIP/2.0", "Via: SIP/2.0/TCP "+local+";branch=z9hG4bK"+randToken(), "", "")
			broken, brokenCallID := tc.broken(local)
			c.Send([]byte(ok + broken))
			got, closed := c.All(3 * time.Second)
			if !closed {
				t.Errorf("the connection stayed open after the broken request")
			}
			var codes []string
			for _, r := range got {
				res := r.Res()
				if res == nil || res.CallID() == nil {
					t.Fatalf("unexpected message:\n%s", r.Raw)
				}
				cid := string(*res.CallID())
				codes = append(codes, fmt.Sprintf("%d %s", res.StatusCode, cid))
				switch {
				case res.StatusCode == 200 && cid == okCallID:
				case res.StatusCode == 400 && brokenCallID != "" && cid == brokenCallID:
					if bytes.Contains(r.Raw, []byte(okCallID)) || res.Via() == nil || !strings.Contains(res.Via().Value(), "z9hG4bKbroken") {
						t.Errorf("the 400 carries the OPTIONS' headers:\n%s", r.Raw)
					}
				default:
					t.Errorf("unexpected answer %d (Call-ID %s):\n%s", res.StatusCode, cid, r.Raw)
				}
			}
			want := []string{"200 " + okCallID}
			if brokenCallID != "" {
				want = append(want, "400 "+brokenCallID)
			}
			if strings.Join(codes, ",") != strings.Join(want, ",") {
				t.Errorf("answers %q, want %q", codes, want)
			}
		})
	}
}

// TestDoorTCPEchoesOnlyWhatParses: over TCP a request whose Via does not
// parse is answered on its connection, without that Via; over UDP
// (TestDoorRefusesMalformedRequests) it is not answered at all.
func TestDoorTCPEchoesOnlyWhatParses(t *testing.T) {
	uas := newUAS(t)
	k := startKamd(t, doorScript(uas.Port()))
	c := dialTCP(t, k)
	raw, callID := doorReq(c.Local(), "OPTIONS sip:bob@"+k.Addr()+" SIP/2.0", "Via: // 0", "", "")
	c.Send([]byte(raw))
	r := c.Final(callID, 3*time.Second)
	if res := r.Res(); res.StatusCode != 400 || res.Via() != nil || bytes.Contains(r.Raw, []byte("//")) {
		t.Fatalf("got:\n%s", r.Raw)
	}
	// The connection goes on: the framing was intact.
	raw, callID = doorReq(c.Local(), "OPTIONS sip:bob@"+k.Addr()+" SIP/2.0", "Via: SIP/2.0/TCP "+c.Local()+";branch=z9hG4bK"+randToken(), "", "")
	c.Send([]byte(raw))
	uas.WaitRequest(callID, "OPTIONS", 3*time.Second)
}

// TestDoorIPv6Brackets: IPv6 references keep their brackets when kamd
// forwards a request (sipgo drops them from a Via's v4-mapped or zoned
// sent-by).
func TestDoorIPv6Brackets(t *testing.T) {
	uas := newUAS(t)
	k := startKamd(t, doorScript(uas.Port()))
	uac := newUAC(t)
	for _, host := range []string{"[::ffff:192.0.2.10]", "[fe80::1%lo]", "[2001:db8::1]"} {
		t.Run(host, func(t *testing.T) {
			uac.t = t
			via := "Via: SIP/2.0/UDP " + host + ":19823;branch=z9hG4bK" + randToken()
			raw, callID := doorReq(uac.Local(), "OPTIONS sip:bob@"+k.Addr()+" SIP/2.0", via, "From: <sip:alice@"+host+">;tag=a1",
				"Contact: <sip:alice@"+host+":5062>\r\nRecord-Route: <sip:"+host+":5070;lr>\r\n")
			uac.Send(k.UDPAddr(), []byte(raw))
			got := uas.WaitRequest(callID, "OPTIONS", 5*time.Second)
			for _, want := range []string{
				via + ";received=127.0.0.1",
				"From: <sip:alice@" + host + ">;tag=a1",
				"Contact: <sip:alice@" + host + ":5062>",
				"Record-Route: <sip:" + host + ":5070;lr>",
			} {
				if !bytes.Contains(got.Raw, []byte(want+"\r\n")) {
					t.Errorf("forwarded without %q:\n%s", want, got.Raw)
				}
			}
		})
	}
}

package tests

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// SIP over WebSocket (RFC 7118): a browser-like client registers and
// places a call that kamd forwards to a UDP UAS; replies come back as frames.
func TestSIPOverWebSocket(t *testing.T) {
	uas := newUAS(t)
	wsPort := freePort(t)
	k := startKamd(t, tutorialScript(uas.Port()), "-l", "ws:127.0.0.1:"+strconv.Itoa(wsPort))
	k.WaitLog(t, "listening on ws:127.0.0.1:"+strconv.Itoa(wsPort), 5*time.Second)

	d := websocket.Dialer{Subprotocols: []string{"sip"}, HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial("ws://127.0.0.1:"+strconv.Itoa(wsPort)+"/", nil)
	if err != nil {
		t.Fatalf("websocket handshake: %v", err)
	}
	defer ws.Close()
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "sip" {
		t.Errorf("negotiated subprotocol %q, want sip", got)
	}
	local := "df7jal23ls0d.invalid"
	read := func(what string) string {
		t.Helper()
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				t.Fatalf("%s: no frame from kamd: %v\n%s", what, err, k.Log())
			}
			if s := string(data); !strings.HasPrefix(s, "SIP/2.0 100") {
				return s
			}
		}
	}

	reg := buildRequest(local, reqSpec{Method: "REGISTER", RURI: "sip:127.0.0.1", Transport: "WS"})
	if err := ws.WriteMessage(websocket.TextMessage, reg); err != nil {
		t.Fatal(err)
	}
	if got := read("REGISTER"); !strings.HasPrefix(got, "SIP/2.0 200 OK\r\n") {
		t.Fatalf("REGISTER over WS: got %q", firstLine(got))
	}

	uas.Answer(200, "OK", "")
	callID := randToken() + "@kamgo.test"
	inv := buildRequest(local, reqSpec{Method: "INVITE", RURI: "sip:bob@10.1.1.1", Transport: "WS", CallID: callID})
	if err := ws.WriteMessage(websocket.BinaryMessage, inv); err != nil { // binary frames are SIP too (RFC 7118)
		t.Fatal(err)
	}
	got := uas.WaitRequest(callID, "INVITE", 5*time.Second)
	if v := got.Req().Via(); v == nil || v.Port != k.Port || v.Transport != "UDP" {
		t.Errorf("INVITE at the UAS: top Via %v, want kamd's UDP socket", v)
	}
	if h := got.Req().GetHeader("X-KEMI"); h == nil {
		t.Errorf("INVITE at the UAS lacks X-KEMI")
	}
	if reply := read("INVITE"); !strings.HasPrefix(reply, "SIP/2.0 200 OK\r\n") || !strings.Contains(reply, callID) {
		t.Fatalf("the UAS's 200 did not come back over the websocket: %q", firstLine(reply))
	}
}

func firstLine(s string) string {
	if i := strings.Index(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

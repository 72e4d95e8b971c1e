package tests

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestDoorTCPFramingAttacks: a peer on one TCP connection pipelines
// valid and broken requests, splits them over many writes, announces more
// body than it sends, sends negative or overflowing Content-Lengths and
// CRLF keepalives between messages. Each request gets its own answer, a
// 400 is built only from the broken message's bytes, and the connection
// is closed only when the framing is lost.
func TestDoorTCPFramingAttacks(t *testing.T) {
	k := startKamd(t, `
def ksr_request_route():
    KSR.sl.sl_send_reply(200, "OK")
`)
	type msg struct{ raw, callID string }
	opts := func(local, extra, cl string) msg {
		raw, callID := doorReq(local, "OPTIONS sip:"+k.Addr()+" SIP/2.0", "Via: SIP/2.0/TCP "+local+";branch=z9hG4bK"+randToken(), "", extra)
		if cl != "" {
			raw = strings.Replace(raw, "Content-Length: 0\r\n", "Content-Length: "+cl+"\r\n", 1)
		}
		return msg{raw, callID}
	}
	for _, tc := range []struct {
		name string
		// chunks to write (with a pause between them) and the answers
		// expected, as "code Call-ID"
		run    func(local string) (chunks []string, want []string)
		closed bool
	}{
		{"valid, bare LF, valid", func(local string) ([]string, []string) {
			a, b, c := opts(local, "", ""), opts(local, "X-A: 1\nX-B: 2\r\n", ""), opts(local, "", "")
			return []string{a.raw + b.raw + c.raw}, []string{"200 " + a.callID, "400 " + b.callID, "200 " + c.callID}
		}, false},
		{"CRLF keepalives between messages", func(local string) ([]string, []string) {
			a, b, c := opts(local, "", ""), opts(local, "", ""), opts(local, "", "")
			return []string{a.raw + "\r\n\r\n" + b.raw + "\r\n", "\r\n\r\n", c.raw + "\r\n"}, []string{"200 " + a.callID, "200 " + b.callID, "200 " + c.callID}
		}, false},
		{"one message over many writes", func(local string) ([]string, []string) {
			a, b := opts(local, "", ""), opts(local, "", "")
			var chunks []string
			s := a.raw + b.raw
			for len(s) > 0 {
				n := min(7, len(s))
				chunks = append(chunks, s[:n])
				s = s[n:]
			}
			return chunks, []string{"200 " + a.callID, "200 " + b.callID}
		}, false},
		{"body arrives late", func(local string) ([]string, []string) {
			a := opts(local, "Content-Type: text/plain\r\n", "20")
			return []string{a.raw + "0123456789", "0123456789"}, []string{"200 " + a.callID}
		}, false},
		{"valid, then negative Content-Length", func(local string) ([]string, []string) {
			a, b := opts(local, "", ""), opts(local, "", "-5")
			return []string{a.raw + b.raw + "abcde"}, []string{"200 " + a.callID, "400 " + b.callID}
		}, true},
		{"valid, then overflowing Content-Length", func(local string) ([]string, []string) {
			a, b := opts(local, "", ""), opts(local, "", "184467440737095516160")
			return []string{a.raw + b.raw}, []string{"200 " + a.callID, "400 " + b.callID}
		}, true},
		{"valid, then Content-Length beyond the message limit", func(local string) ([]string, []string) {
			a, b := opts(local, "", ""), opts(local, "", "4294967296")
			return []string{a.raw + b.raw}, []string{"200 " + a.callID, "400 " + b.callID}
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialTCP(t, k)
			chunks, want := tc.run(c.Local())
			for _, ch := range chunks {
				c.Send([]byte(ch))
				time.Sleep(20 * time.Millisecond)
			}
			got, closed := c.All(2 * time.Second)
			var codes []string
			for _, r := range got {
				res := r.Res()
				if res == nil || res.CallID() == nil {
					t.Fatalf("unexpected message:\n%s", r.Raw)
				}
				codes = append(codes, fmt.Sprintf("%d %s", res.StatusCode, *res.CallID()))
				for _, w := range want {
					if id := strings.Fields(w)[1]; id != string(*res.CallID()) && strings.Contains(string(r.Raw), id) {
						t.Errorf("answer to %s carries %s:\n%s", *res.CallID(), id, r.Raw)
					}
				}
			}
			if strings.Join(codes, ",") != strings.Join(want, ",") {
				t.Errorf("answers %q, want %q", codes, want)
			}
			if closed != tc.closed {
				t.Errorf("connection closed: %v, want %v", closed, tc.closed)
			}
		})
	}
}

package transport

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

// echoHandler answers every request 200 with the receiving transport in a
// header, and records what it saw.
type echoHandler struct {
	mu   sync.Mutex
	seen []string
}

func (h *echoHandler) HandleRequest(m *core.Msg) {
	h.mu.Lock()
	h.seen = append(h.seen, string(m.Req.Method)+" "+m.Proto)
	h.mu.Unlock()
	m.ReplyHeaders = nil
	_ = m.SendReply(200, "OK "+m.Proto)
}

func (h *echoHandler) HandleReply(*core.Msg) {}

func (h *echoHandler) methods() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.seen...)
}

func start(t *testing.T, socks ...core.Socket) (*Transport, []core.Socket, *echoHandler) {
	t.Helper()
	env := core.NewEnv(nil)
	h := &echoHandler{}
	tr := New(env, h, Config{Workers: 2})
	bound, err := tr.Listen(context.Background(), socks)
	if err != nil {
		t.Fatal(err)
	}
	env.SetSockets(bound)
	env.Sender = tr
	tr.Start()
	t.Cleanup(tr.Close)
	return tr, bound, h
}

func request(method, via string, n int) string {
	return method + " sip:x@127.0.0.1 SIP/2.0\r\n" +
		"Via: SIP/2.0/" + via + ";branch=z9hG4bK-" + strconv.Itoa(n) + "\r\n" +
		"From: <sip:a@example.com>;tag=f\r\nTo: <sip:x@127.0.0.1>\r\n" +
		"Call-ID: t" + strconv.Itoa(n) + "\r\nCSeq: 1 " + method + "\r\nContent-Length: 0\r\n\r\n"
}

func addr(s core.Socket) string { return net.JoinHostPort(s.IP, strconv.Itoa(s.Port)) }

func TestUDPRequestAndKeepalive(t *testing.T) {
	_, socks, h := start(t, core.Socket{Proto: "udp", IP: "127.0.0.1"})
	c, err := net.Dial("udp", addr(socks[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("\r\n\r\n")) // a keepalive is ignored
	_, _ = c.Write([]byte(request("OPTIONS", "UDP "+c.LocalAddr().String(), 1)))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200 OK udp\r\n") {
		t.Fatalf("reply %q, %v", buf[:n], err)
	}
	if got := h.methods(); len(got) != 1 || got[0] != "OPTIONS udp" {
		t.Fatalf("handled %v", got)
	}
}

func TestTCPStream(t *testing.T) {
	_, socks, h := start(t, core.Socket{Proto: "tcp", IP: "127.0.0.1"})
	c, err := net.Dial("tcp", addr(socks[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	readStatus := func() string {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		// Skip the rest of the message.
		for {
			l, err := r.ReadString('\n')
			if err != nil || l == "\r\n" {
				break
			}
		}
		return strings.TrimSpace(line)
	}
	local := "TCP " + c.LocalAddr().String()
	// Two messages in one write, then one split across writes.
	_, _ = c.Write([]byte(request("OPTIONS", local, 1) + request("INFO", local, 2)))
	if a, b := readStatus(), readStatus(); a != "SIP/2.0 200 OK tcp" || b != "SIP/2.0 200 OK tcp" {
		t.Fatalf("replies %q %q", a, b)
	}
	msg := request("MESSAGE", local, 3)
	_, _ = c.Write([]byte(msg[:20]))
	time.Sleep(20 * time.Millisecond)
	_, _ = c.Write([]byte(msg[20:]))
	if s := readStatus(); s != "SIP/2.0 200 OK tcp" {
		t.Fatalf("split message: %q", s)
	}
	// RFC 5626 ping: CRLFCRLF gets a CRLF pong.
	_, _ = c.Write([]byte("\r\n\r\n"))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if l, err := r.ReadString('\n'); err != nil || l != "\r\n" {
		t.Fatalf("pong %q, %v", l, err)
	}
	if got := strings.Join(h.methods(), ","); got != "OPTIONS tcp,INFO tcp,MESSAGE tcp" {
		t.Fatalf("handled %s", got)
	}
	// A broken message is answered 400 when readable, then the connection closes.
	_, _ = c.Write([]byte("INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/" + local + ";branch=z9hG4bK-9\r\n" +
		"From: <sip:a@example.com>;tag=f\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: bad\r\nCSeq: 9 INVITE\r\nMax-Forwards: many\r\nContent-Length: 0\r\n\r\n"))
	if s := readStatus(); !strings.HasPrefix(s, "SIP/2.0 400") {
		t.Fatalf("broken message: %q", s)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("the connection stayed open after a parse error")
	}
}

// TestSalvageRequest: what a message that did not parse is answered with,
// over UDP (a valid Via is needed to send anything) and over a stream.
func TestSalvageRequest(t *testing.T) {
	const via = "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
	const rest = "From: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
	for _, tc := range []struct {
		name, in    string
		udp, stream bool // answered over UDP / over a stream
	}{
		{"readable", "OPTIONS sip:x SIP/2.0\r\n" + via + rest + "\r\n", true, true},
		{"huge CSeq: no CSeq to echo, not answered", "OPTIONS sip:x SIP/2.0\r\n" + via + "From: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 36893488147419103232 OPTIONS\r\n\r\n", false, false},
		{"no Via: nowhere to send it on UDP", "OPTIONS sip:x SIP/2.0\r\n" + rest + "\r\n", false, true},
		{"Via: // 0 is not echoed", "OPTIONS sip:x SIP/2.0\r\nVia: // 0\r\n" + rest + "\r\n", false, true},
		{"From that does not parse is not echoed", "OPTIONS sip:x SIP/2.0\r\n" + via + "From: :0m0tag= [\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n", true, true},
		{"a line with a bare LF is not echoed", "OPTIONS sip:x SIP/2.0\r\n" + via + "From: <sip:a@b>;tag=1\nX-Injected: yes\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n", true, true},
		{"ACK is never answered", "ACK sip:x SIP/2.0\r\n" + via + rest + "\r\n", false, false},
		{"a reply", "SIP/2.0 200 OK\r\n" + via + "\r\n", false, false},
		{"garbage", "\x00\x01\x02 hello", false, false},
	} {
		var res *sip.Response
		req, ok := salvageRequest([]byte(tc.in))
		if ok {
			res, ok = core.RefusalReply(req, 400, "Bad Request")
		}
		udp := ok && core.ViaOK(req.Via())
		if udp != tc.udp || ok != tc.stream {
			t.Errorf("%s: answered over UDP %v, over a stream %v; want %v, %v", tc.name, udp, ok, tc.udp, tc.stream)
			continue
		}
		if !ok {
			continue
		}
		out := res.String()
		if _, err := sip.ParseMessage([]byte(out)); err != nil || strings.Contains(out, "X-Injected") || strings.Contains(out, "//") || strings.Contains(out, "0m0tag") {
			t.Errorf("%s: the answer echoes what does not parse (%v):\n%s", tc.name, err, out)
		}
	}
}

// TestUDPBacklogDoor: when the workers are busy, the UDP reader parses and
// queues; a datagram the door refuses is answered from its bytes there and
// never reaches the handler.
func TestUDPBacklogDoor(t *testing.T) {
	tr, socks, h := start(t, core.Socket{Proto: "udp", IP: "127.0.0.1"})
	tr.inflight.Add(1) // as if a worker were busy: no inline handling
	defer tr.inflight.Add(-1)
	c, err := net.Dial("udp", addr(socks[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	via := "UDP " + c.LocalAddr().String()
	bad := strings.Replace(request("OPTIONS", via, 1), "Content-Length: 0\r\n", "X-A: 1\nX-Injected: yes\r\nContent-Length: 0\r\n", 1)
	_, _ = c.Write([]byte(bad))
	_, _ = c.Write([]byte(request("OPTIONS", via, 2)))
	buf := make([]byte, 4096)
	got := map[string]bool{}
	for i := 0; i < 2; i++ {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		res, err := sip.ParseMessage(buf[:n])
		if err != nil || strings.Contains(string(buf[:n]), "X-Injected") {
			t.Fatalf("reply %q, %v", buf[:n], err)
		}
		got[fmt.Sprintf("%d %s", res.(*sip.Response).StatusCode, *res.CallID())] = true
	}
	if !got["400 t1"] || !got["200 t2"] {
		t.Fatalf("replies %v", got)
	}
	if m := h.methods(); len(m) != 1 {
		t.Fatalf("handled %v, want only the well-formed OPTIONS", m)
	}
}

package transport

import (
	"bufio"
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

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
	env.Sockets, env.Sender = bound, tr
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
		"From: <sip:a@example.com>;tag=f\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: bad\r\nCSeq: 99999999999 INVITE\r\nContent-Length: 0\r\n\r\n"))
	if s := readStatus(); !strings.HasPrefix(s, "SIP/2.0 400") {
		t.Fatalf("broken message: %q", s)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("the connection stayed open after a parse error")
	}
}

func TestBadRequestReply(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		ok       bool
	}{
		{"readable", "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n", true},
		{"huge CSeq is echoed", "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 36893488147419103232 OPTIONS\r\n\r\n", true},
		{"no Via", "OPTIONS sip:x SIP/2.0\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n", false},
		{"ACK is never answered", "ACK sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 ACK\r\n\r\n", false},
		{"a reply", "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\r\n", false},
		{"garbage", "\x00\x01\x02 hello", false},
	} {
		res, _, ok := badRequestReply([]byte(tc.in), nil)
		if ok != tc.ok {
			t.Errorf("%s: ok=%v, want %v", tc.name, ok, tc.ok)
			continue
		}
		if ok && (res.StatusCode != 400 || res.CSeq() == nil && !strings.Contains(res.String(), "CSeq:")) {
			t.Errorf("%s: %s", tc.name, res.String())
		}
	}
}

package transport

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

func startCfg(t testing.TB, cfg Config, h Handler, socks ...core.Socket) (*Transport, []core.Socket) {
	t.Helper()
	env := core.NewEnv(nil)
	if cfg.Workers == 0 {
		cfg.Workers = 2
	}
	tr := New(env, h, cfg)
	bound, err := tr.Listen(context.Background(), socks)
	if err != nil {
		t.Fatal(err)
	}
	env.SetSockets(bound)
	env.Sender = tr
	tr.Start()
	t.Cleanup(tr.Close)
	return tr, bound
}

func dialFromIP(t testing.TB, ip, to string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", to)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByPeer reports whether kamd closed c within d (a read sees EOF or a reset).
func closedByPeer(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// options sends an OPTIONS over c and reads the status line of the answer.
func options(t testing.TB, c net.Conn, n int) string {
	t.Helper()
	_, _ = c.Write([]byte(request("OPTIONS", "TCP "+c.LocalAddr().String(), n)))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "error: " + err.Error()
	}
	return strings.TrimSpace(line)
}

// waitGate waits until the gate holds n connections (accept is asynchronous).
func waitGate(t testing.TB, tr *Transport, n int) {
	t.Helper()
	for i := 0; i < 500 && tr.GateLen() != n; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if got := tr.GateLen(); got != n {
		t.Fatalf("gate holds %d connections, want %d", got, n)
	}
}

func TestPerIPConnectionLimit(t *testing.T) {
	tr, socks := startCfg(t, Config{MaxConnsPerIP: 3}, &echoHandler{}, core.Socket{Proto: "tcp", IP: "127.0.0.1"})
	to := addr(socks[0])
	for i := 0; i < 3; i++ {
		dialFromIP(t, "127.0.0.1", to)
	}
	waitGate(t, tr, 3)
	fourth := dialFromIP(t, "127.0.0.1", to)
	if !closedByPeer(fourth, 5*time.Second) {
		t.Fatal("a 4th connection from one address was kept with tcp_accept_iplimit 3")
	}
	other := dialFromIP(t, "127.0.0.2", to)
	if s := options(t, other, 1); s != "SIP/2.0 200 OK tcp" {
		t.Fatalf("another address got %q", s)
	}
	if got := tr.connRejected.Value(); got != 1 {
		t.Errorf("tcp:local_reject = %d, want 1", got)
	}
}

// TestSlowLorisClosedByReadTimeout: one byte every 200 ms keeps a message
// arriving, yet it must be complete within tcp_msg_read_timeout (1 s).
func TestSlowLorisClosedByReadTimeout(t *testing.T) {
	tr, socks := startCfg(t, Config{MsgReadTimeout: time.Second, IdleTimeout: time.Minute}, &echoHandler{}, core.Socket{Proto: "tcp", IP: "127.0.0.1"})
	c := dialFromIP(t, "127.0.0.1", addr(socks[0]))
	msg := request("OPTIONS", "TCP "+c.LocalAddr().String(), 1)
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		_, _ = io.Copy(io.Discard, c)
	}()
	start := time.Now()
	for i := 0; i < len(msg)-1; i++ {
		if _, err := c.Write([]byte{msg[i]}); err != nil {
			break
		}
		select {
		case <-closed:
		case <-time.After(200 * time.Millisecond):
			continue
		}
		break
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("a connection dripping one byte per 200 ms is still open")
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("closed after %v", time.Since(start))
	}
	if got := tr.msgReadTimeout.Value(); got != 1 {
		t.Errorf("tcp:msg_read_timeout = %d, want 1", got)
	}
}

// TestSilentConnectionClosed: a connection that never sends a byte is
// closed after tcp_msg_data_timeout; CRLF keepalives keep one open.
func TestSilentConnectionClosed(t *testing.T) {
	_, socks := startCfg(t, Config{MsgDataTimeout: 500 * time.Millisecond, IdleTimeout: time.Minute}, &echoHandler{}, core.Socket{Proto: "tcp", IP: "127.0.0.1"})
	silent := dialFromIP(t, "127.0.0.1", addr(socks[0]))
	if !closedByPeer(silent, 5*time.Second) {
		t.Fatal("a silent connection outlived tcp_msg_data_timeout")
	}
	alive := dialFromIP(t, "127.0.0.1", addr(socks[0]))
	_, _ = alive.Write([]byte("\r\n\r\n"))
	pong := make([]byte, 2)
	_ = alive.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(alive, pong); err != nil || string(pong) != "\r\n" {
		t.Fatalf("keepalive pong %q, %v", pong, err)
	}
	if closedByPeer(alive, 1500*time.Millisecond) {
		t.Fatal("a connection that sent a keepalive was closed as silent")
	}
	if s := options(t, alive, 2); s != "SIP/2.0 200 OK tcp" {
		t.Fatalf("after keepalive: %q", s)
	}
}

// TestGlobalCapEvicts: with tcp_max_connections full of connections, a new
// client still gets in: the oldest connection that never completed a
// message is closed for it, and one that did is kept.
func TestGlobalCapEvicts(t *testing.T) {
	tr, socks := startCfg(t, Config{MaxConns: 4, MaxConnsPerIP: -1}, &echoHandler{}, core.Socket{Proto: "tcp", IP: "127.0.0.1"})
	to := addr(socks[0])
	active := dialFromIP(t, "127.0.0.1", to)
	if s := options(t, active, 1); s != "SIP/2.0 200 OK tcp" {
		t.Fatal(s)
	}
	var idle []net.Conn
	for i := 0; i < 3; i++ {
		idle = append(idle, dialFromIP(t, "127.0.0.1", to))
		waitGate(t, tr, 2+i)
	}
	fresh := dialFromIP(t, "127.0.0.1", to)
	if s := options(t, fresh, 2); s != "SIP/2.0 200 OK tcp" {
		t.Fatalf("a new client at tcp_max_connections got %q", s)
	}
	if !closedByPeer(idle[0], 5*time.Second) {
		t.Error("the oldest silent connection was not evicted")
	}
	if s := options(t, active, 3); s != "SIP/2.0 200 OK tcp" {
		t.Errorf("the connection that had sent a message was evicted: %q", s)
	}
	if got := tr.connEvicted.Value(); got != 1 {
		t.Errorf("tcp:evicted = %d, want 1", got)
	}
	// All have sent messages now: the one idle longest goes.
	for i, c := range idle[1:] {
		if s := options(t, c, 10+i); s != "SIP/2.0 200 OK tcp" {
			t.Fatal(s)
		}
	}
	_ = options(t, fresh, 20)
	_ = options(t, idle[1], 21)
	_ = options(t, idle[2], 22) // active is now the one idle longest
	late := dialFromIP(t, "127.0.0.1", to)
	if s := options(t, late, 30); s != "SIP/2.0 200 OK tcp" {
		t.Fatalf("late client: %q", s)
	}
	if !closedByPeer(active, 5*time.Second) {
		t.Error("the connection idle the longest was not evicted")
	}
}

// bigHandler answers with a 200 carrying a header of n bytes.
type bigHandler struct{ n int }

func (h bigHandler) HandleRequest(m *core.Msg) {
	m.ReplyHeaders = []sip.Header{sip.NewHeader("X-Big", strings.Repeat("x", h.n))}
	_ = m.SendReply(200, "OK")
}
func (bigHandler) HandleReply(*core.Msg) {}

// TestOversizeUDPReplyBecomes500: a 200 over 64 KB cannot go over UDP; the
// client gets a small 500 with a Warning instead of silence.
func TestOversizeUDPReplyBecomes500(t *testing.T) {
	tr, socks := startCfg(t, Config{}, bigHandler{n: 70000}, core.Socket{Proto: "udp", IP: "127.0.0.1"})
	c, err := net.Dial("udp", addr(socks[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte(request("REGISTER", "UDP "+c.LocalAddr().String(), 1)))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no answer to a request whose reply is too large: %v", err)
	}
	got := string(buf[:n])
	if !strings.HasPrefix(got, "SIP/2.0 500 ") || !strings.Contains(got, "Warning: 399 kamd") || !strings.Contains(got, "CSeq: 1 REGISTER") {
		t.Fatalf("reply:\n%s", got)
	}
	if v := tr.sendFailed.Value(); v != 1 {
		t.Errorf("core:rpl_send_failed = %d, want 1", v)
	}
}

// BenchmarkIdleConnMemory reports the heap an idle TCP connection keeps
// after one message (read buffers given back): go test -bench IdleConn.
func BenchmarkIdleConnMemory(b *testing.B) {
	const n = 300
	for b.Loop() {
		tr, socks := startCfg(b, Config{MaxConns: 2 * n, MaxConnsPerIP: -1}, &echoHandler{}, core.Socket{Proto: "tcp", IP: "127.0.0.1"})
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := 0; i < n; i++ {
			c := dialFromIP(b, "127.0.0.1", addr(socks[0]))
			if s := options(b, c, i); !strings.HasPrefix(s, "SIP/2.0 200") {
				b.Fatal(s)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse+after.StackInuse-before.HeapInuse-before.StackInuse)/n, "B/idle-conn")
		tr.Close()
	}
}

// TestEvictionSparesLightAddresses: the connection closed for a new one is
// the oldest silent one of the address holding the most connections, so
// one client per address (a phone that just connected) is not the victim
// of a crowd from other addresses, even when it is the oldest.
func TestEvictionSparesLightAddresses(t *testing.T) {
	tr, socks := startCfg(t, Config{MaxConns: 4, MaxConnsPerIP: -1}, &echoHandler{}, core.Socket{Proto: "tcp", IP: "127.0.0.1"})
	to := addr(socks[0])
	lone := dialFromIP(t, "127.0.0.6", to)
	waitGate(t, tr, 1)
	var crowd []net.Conn
	for i := 0; i < 3; i++ {
		crowd = append(crowd, dialFromIP(t, "127.0.0.5", to))
		waitGate(t, tr, 2+i)
	}
	fresh := dialFromIP(t, "127.0.0.7", to)
	if s := options(t, fresh, 1); s != "SIP/2.0 200 OK tcp" {
		t.Fatalf("new client: %q", s)
	}
	if !closedByPeer(crowd[0], 5*time.Second) {
		t.Error("the oldest connection of the crowded address was not the one evicted")
	}
	if closedByPeer(lone, 300*time.Millisecond) {
		t.Error("the lone (oldest) connection of another address was evicted")
	}
}

// gateHandler blocks on INVITEs until released and records what it saw.
type gateHandler struct {
	echoHandler
	release chan struct{}
}

func (h *gateHandler) HandleRequest(m *core.Msg) {
	if m.Req.IsInvite() {
		<-h.release
	}
	h.echoHandler.HandleRequest(m)
}

// TestQueueOverflowShedsInvites: once the worker queues overflow with a new
// INVITE, new INVITEs are answered 503 at the door for a second (no queue
// slot, no script), while other requests are still handled.
func TestQueueOverflowShedsInvites(t *testing.T) {
	h := &gateHandler{release: make(chan struct{})}
	tr, socks := startCfg(t, Config{Workers: 1, QueueLen: 1}, h, core.Socket{Proto: "tcp", IP: "127.0.0.1"})
	c := dialFromIP(t, "127.0.0.1", addr(socks[0]))
	via := "TCP " + c.LocalAddr().String()
	for i := 1; i <= 4; i++ { // one runs (blocked), two wait, the 4th overflows
		_, _ = c.Write([]byte(request("INVITE", via, i)))
	}
	deadline := time.Now().Add(5 * time.Second)
	for tr.dropped.Value() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if tr.dropped.Value() == 0 {
		t.Fatal("the queue never overflowed")
	}
	close(h.release)
	for tr.inflight.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	before := tr.shed.Value()
	_, _ = c.Write([]byte(request("INVITE", via, 20) + request("OPTIONS", via, 21)))
	r := bufio.NewReader(c)
	got := map[string]string{}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	status := ""
	for got["t20"] == "" || got["t21"] == "" {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("replies so far %v: %v", got, err)
		}
		if strings.HasPrefix(line, "SIP/2.0 ") {
			status = strings.TrimSpace(line)
		}
		for _, id := range []string{"t20", "t21"} {
			if line == "Call-ID: "+id+"\r\n" {
				got[id] = status
			}
		}
	}
	if !strings.HasPrefix(got["t20"], "SIP/2.0 503") || !strings.HasPrefix(got["t21"], "SIP/2.0 200") {
		t.Errorf("right after the overflow: INVITE %q (want 503), OPTIONS %q (want 200)", got["t20"], got["t21"])
	}
	if tr.shed.Value() != before+1 {
		t.Errorf("tm:refused_overload went %d → %d, want +1", before, tr.shed.Value())
	}
	// Queued INVITEs met after the overflow are shed too (at most the one
	// that was already running reached the handler); the OPTIONS was handled.
	m := h.methods()
	invites := 0
	for _, x := range m {
		if x == "INVITE tcp" {
			invites++
		}
	}
	if invites > 1 || len(m) == 0 || m[len(m)-1] != "OPTIONS tcp" {
		t.Errorf("handled %v, want at most one INVITE, then the OPTIONS", m)
	}
}

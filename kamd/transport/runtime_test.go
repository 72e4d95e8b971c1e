package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

// localHandler answers every request 200, from the socket in from when it
// is set (Outgoing.LocalSocket), and records the socket each request and
// reply arrived on.
type localHandler struct {
	tr      *Transport
	mu      sync.Mutex
	from    core.Socket
	locals  []core.Socket
	replies chan *core.Msg
}

func (h *localHandler) HandleRequest(m *core.Msg) {
	h.mu.Lock()
	h.locals = append(h.locals, m.Local)
	from := h.from
	h.mu.Unlock()
	res := core.BuildReply(m.Req, 200, "OK", nil)
	m.FixVia()
	o := m.ReplyOutgoing(res, core.OutReply)
	if from.Port != 0 {
		o.LocalSocket = &from
	}
	_ = h.tr.Send(o)
}

func (h *localHandler) HandleReply(m *core.Msg) {
	if h.replies != nil {
		h.replies <- m
	}
}

func startLocal(t *testing.T, socks ...core.Socket) (*Transport, *localHandler, *core.Env) {
	t.Helper()
	env := core.NewEnv(nil)
	h := &localHandler{replies: make(chan *core.Msg, 16)}
	tr := New(env, h, Config{Workers: 2})
	h.tr = tr
	bound, err := tr.Listen(context.Background(), socks)
	if err != nil {
		t.Fatal(err)
	}
	env.SetSockets(bound)
	env.Sender = tr
	env.SocketManager = tr
	tr.Start()
	t.Cleanup(tr.Close)
	return tr, h, env
}

func open(t *testing.T, env *core.Env, proto string) core.Socket {
	t.Helper()
	s, err := env.OpenSocket(context.Background(), core.Socket{Proto: proto, IP: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Port == 0 {
		t.Fatalf("open %s: no port bound", proto)
	}
	return s
}

func listed(env *core.Env, s core.Socket) bool {
	for _, x := range env.Sockets() {
		if x == s {
			return true
		}
	}
	return false
}

// udpAsk sends one OPTIONS from c to dst and returns the reply's source.
func udpAsk(c *net.UDPConn, dst core.Socket, n int) (*net.UDPAddr, string, error) {
	to := &net.UDPAddr{IP: net.ParseIP(dst.IP), Port: dst.Port}
	if _, err := c.WriteToUDP([]byte(request("OPTIONS", "UDP "+c.LocalAddr().String(), n)), to); err != nil {
		return nil, "", err
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 4096)
	k, from, err := c.ReadFromUDP(buf)
	if err != nil {
		return nil, "", err
	}
	return from, string(buf[:k]), nil
}

func udpClient(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Sockets opened at runtime take traffic through the same path as those
// of listen(), are listed in Env.Sockets() while open, and are gone once
// closed.
func TestOpenSocketCarriesTrafficAndCloses(t *testing.T) {
	_, h, env := startLocal(t, core.Socket{Proto: "udp", IP: "127.0.0.1"})
	u := open(t, env, "udp")
	tc := open(t, env, "tcp")
	if !listed(env, u) || !listed(env, tc) || len(env.Sockets()) != 3 {
		t.Fatalf("Env.Sockets() = %v, want the listen socket and %v, %v", env.Sockets(), u, tc)
	}
	c := udpClient(t)
	if _, reply, err := udpAsk(c, u, 1); err != nil || !strings.HasPrefix(reply, "SIP/2.0 200 OK\r\n") {
		t.Fatalf("UDP on a runtime socket: %q %v", reply, err)
	}
	conn, err := net.Dial("tcp", addr(tc))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = conn.Write([]byte(request("OPTIONS", "TCP "+conn.LocalAddr().String(), 2)))
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || line != "SIP/2.0 200 OK\r\n" {
		t.Fatalf("TCP on a runtime socket: %q %v", line, err)
	}
	h.mu.Lock()
	locals := append([]core.Socket(nil), h.locals...)
	h.mu.Unlock()
	if len(locals) != 2 || locals[0] != u || locals[1] != tc {
		t.Errorf("requests arrived on %v, want %v then %v", locals, u, tc)
	}
	// The door checks apply: a bad Content-Length is refused with a 400
	// before the script.
	bad := strings.Replace(request("OPTIONS", "UDP "+c.LocalAddr().String(), 3), "Content-Length: 0", "Content-Length: 99", 1)
	_, _ = c.WriteToUDP([]byte(bad), &net.UDPAddr{IP: net.ParseIP(u.IP), Port: u.Port})
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 4096)
	if k, _, err := c.ReadFromUDP(buf); err != nil || !strings.HasPrefix(string(buf[:k]), "SIP/2.0 400 ") {
		t.Errorf("a malformed request on a runtime socket: %q %v, want a 400 from the door", buf[:k], err)
	}

	if err := env.CloseSocket(tc); err != nil {
		t.Fatal(err)
	}
	// Its accepted connection is closed too.
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := bufio.NewReader(conn).ReadString('\n'); !closedErr(err) {
		t.Errorf("the connection accepted on a closed socket is still open (%v)", err)
	}
	if _, err := net.DialTimeout("tcp", addr(tc), time.Second); err == nil {
		t.Errorf("a closed TCP socket still accepts")
	}
	if err := env.CloseSocket(u); err != nil {
		t.Fatal(err)
	}
	if listed(env, u) || listed(env, tc) || len(env.Sockets()) != 1 {
		t.Errorf("Env.Sockets() after close = %v", env.Sockets())
	}
	if _, _, err := udpAsk(c, u, 4); err == nil {
		t.Errorf("a closed UDP socket still answers")
	}
	// The port is free again at once.
	again, err := env.OpenSocket(context.Background(), u)
	if err != nil || again != u {
		t.Fatalf("reopen %v: %v %v", u, again, err)
	}
	if _, reply, err := udpAsk(c, again, 5); err != nil || !strings.HasPrefix(reply, "SIP/2.0 200 OK\r\n") {
		t.Errorf("reopened socket: %q %v", reply, err)
	}
}

func TestOpenCloseErrors(t *testing.T) {
	tr, _, env := startLocal(t, core.Socket{Proto: "udp", IP: "127.0.0.1"})
	fixed := env.Sockets()[0]
	u := open(t, env, "udp")
	ctx := context.Background()
	for _, c := range []struct {
		s    core.Socket
		want string
	}{
		{core.Socket{Proto: "ws", IP: "127.0.0.1"}, `protocol "ws" cannot be opened at runtime`},
		{core.Socket{Proto: "tls", IP: "127.0.0.1"}, "no TLS certificate"},
		{core.Socket{Proto: "udp", IP: "example.com"}, "is not an IP address"},
		{core.Socket{Proto: "udp", IP: "127.0.0.1", Port: 70000}, "bad port 70000"},
		{u, "already open"},
		{fixed, "already open"},
	} {
		if _, err := tr.OpenSocket(ctx, c.s); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("OpenSocket(%v): %v, want %q", c.s, err, c.want)
		}
	}
	if err := tr.CloseSocket(fixed); err == nil || !strings.Contains(err.Error(), "listen() socket cannot be closed") {
		t.Errorf("closing a listen() socket: %v", err)
	}
	if err := tr.CloseSocket(u); err != nil {
		t.Fatal(err)
	}
	if err := tr.CloseSocket(u); err == nil || !strings.Contains(err.Error(), "not open") {
		t.Errorf("closing twice: %v", err)
	}
	req := sip.NewRequest(sip.OPTIONS, sip.Uri{Host: "127.0.0.1", Port: 9})
	for _, c := range []struct {
		o    core.Outgoing
		want string
	}{
		{core.Outgoing{Dst: core.Target{Proto: "udp", Host: "127.0.0.1", Port: 9}, LocalSocket: &u}, "no such open socket"},
		{core.Outgoing{Dst: core.Target{Proto: "tcp", Host: "127.0.0.1", Port: 9}, LocalSocket: &fixed}, "not the same protocol"},
		{core.Outgoing{Dst: core.Target{Proto: "udp", Host: "::1", Port: 9}, LocalSocket: &fixed}, "another address family"},
		{core.Outgoing{Dst: core.Target{Proto: "tcp", Host: "127.0.0.1", Port: 9}, LocalSocket: &core.Socket{Proto: "tcp", IP: "127.0.0.1", Port: 9}}, "no such open socket"},
	} {
		c.o.Msg = req
		if err := tr.Send(&c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Send to %v from %v: %v, want %q", c.o.Dst, c.o.LocalSocket, err, c.want)
		}
	}
	tr.Close()
	if _, err := tr.OpenSocket(ctx, core.Socket{Proto: "udp", IP: "127.0.0.1"}); err == nil || !strings.Contains(err.Error(), "stopping") {
		t.Errorf("OpenSocket after Close: %v", err)
	}
}

// A request to the listen socket (a P-CSCF's protected server port) is
// answered from another socket (its protected client port), as TS 33.203
// §7 wants over UDP; without LocalSocket the reply leaves from the first
// socket as before. A request sent with LocalSocket leaves from it too.
func TestUDPSendFromChosenSocket(t *testing.T) {
	tr, h, env := startLocal(t, core.Socket{Proto: "udp", IP: "127.0.0.1"})
	server := env.Sockets()[0]
	client := open(t, env, "udp")
	peer := udpClient(t)

	from, _, err := udpAsk(peer, server, 1)
	if err != nil || from.Port != server.Port {
		t.Fatalf("default reply from %v (%v), want port %d", from, err, server.Port)
	}
	h.mu.Lock()
	h.from = client
	h.mu.Unlock()
	from, reply, err := udpAsk(peer, server, 2)
	if err != nil || from.Port != client.Port || !strings.HasPrefix(reply, "SIP/2.0 200 OK\r\n") {
		t.Fatalf("reply from %v (%q, %v), want port %d", from, reply, err, client.Port)
	}

	pa := peer.LocalAddr().(*net.UDPAddr)
	req := sip.NewRequest(sip.OPTIONS, sip.Uri{Host: "127.0.0.1", Port: pa.Port})
	req.AppendHeader(sip.NewHeader("Via", "SIP/2.0/UDP 127.0.0.1:"+strconv.Itoa(client.Port)+";branch=z9hG4bK-out"))
	if err := tr.Send(&core.Outgoing{Kind: core.OutLocalRequest, Msg: req, Dst: core.Target{Proto: "udp", Host: "127.0.0.1", Port: pa.Port}, LocalSocket: &client}); err != nil {
		t.Fatal(err)
	}
	_ = peer.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 4096)
	k, src, err := peer.ReadFromUDP(buf)
	if err != nil || src.Port != client.Port || !strings.HasPrefix(string(buf[:k]), "OPTIONS ") {
		t.Fatalf("request from %v (%q, %v), want port %d", src, buf[:k], err, client.Port)
	}
}

// A TCP request with LocalSocket is dialled from that socket's address and
// port while the socket still listens there; the connection is reused,
// its replies arrive on that socket, and closing the socket closes it.
func TestTCPDialFromChosenPort(t *testing.T) {
	tr, h, env := startLocal(t, core.Socket{Proto: "udp", IP: "127.0.0.1"})
	pc := open(t, env, "tcp")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pport := ln.Addr().(*net.TCPAddr).Port
	dst := core.Target{Proto: "tcp", Host: "127.0.0.1", Port: pport}
	send := func(n int) {
		req := sip.NewRequest(sip.OPTIONS, sip.Uri{Host: "127.0.0.1", Port: pport})
		req.AppendHeader(sip.NewHeader("Via", fmt.Sprintf("SIP/2.0/TCP 127.0.0.1:%d;branch=z9hG4bK-%d", pc.Port, n)))
		req.AppendHeader(sip.NewHeader("From", "<sip:a@127.0.0.1>;tag=1"))
		req.AppendHeader(sip.NewHeader("To", "<sip:b@127.0.0.1>"))
		req.AppendHeader(sip.NewHeader("Call-ID", "dial-"+strconv.Itoa(n)))
		req.AppendHeader(sip.NewHeader("CSeq", strconv.Itoa(n)+" OPTIONS"))
		req.AppendHeader(sip.NewHeader("Content-Length", "0"))
		if err := tr.Send(&core.Outgoing{Kind: core.OutLocalRequest, Msg: req, Dst: dst, LocalSocket: &pc}); err != nil {
			t.Fatal(err)
		}
	}
	send(1)
	_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(3 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if p := c.RemoteAddr().(*net.TCPAddr).Port; p != pc.Port {
		t.Fatalf("connection from port %d, want %d", p, pc.Port)
	}
	r := bufio.NewReader(c)
	readMsg := func() string {
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		var b strings.Builder
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("reading at the peer: %v (%q)", err, b.String())
			}
			b.WriteString(line)
			if line == "\r\n" {
				return b.String()
			}
		}
	}
	first := readMsg()
	send(2) // the same connection
	second := readMsg()
	if !strings.Contains(first, "Call-ID: dial-1") || !strings.Contains(second, "Call-ID: dial-2") {
		t.Fatalf("the peer read %q then %q", first, second)
	}
	// The socket still listens on its port.
	in, err := net.Dial("tcp", addr(pc))
	if err != nil {
		t.Fatalf("the dialling socket stopped listening: %v", err)
	}
	defer in.Close()
	_, _ = in.Write([]byte(request("OPTIONS", "TCP "+in.LocalAddr().String(), 3)))
	_ = in.SetReadDeadline(time.Now().Add(3 * time.Second))
	if line, err := bufio.NewReader(in).ReadString('\n'); err != nil || line != "SIP/2.0 200 OK\r\n" {
		t.Fatalf("request to the dialling socket: %q %v", line, err)
	}
	// A reply on the dialled connection arrives on the chosen socket.
	res := "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 127.0.0.1:" + strconv.Itoa(pc.Port) + ";branch=z9hG4bK-2\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>;tag=2\r\nCall-ID: dial-2\r\nCSeq: 2 OPTIONS\r\nContent-Length: 0\r\n\r\n"
	_, _ = c.Write([]byte(res))
	select {
	case m := <-h.replies:
		if m.Local != pc || m.ConnID == "" {
			t.Errorf("the reply arrived on %v (conn %q), want %v", m.Local, m.ConnID, pc)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no reply handled")
	}
	if err := env.CloseSocket(pc); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := r.ReadString('\n'); !closedErr(err) {
		t.Errorf("the connection dialled from a closed socket is still open (%v)", err)
	}
}

// Closing a runtime socket while messages flow to it and to others stops
// its reader and loses none of the others' messages.
func TestCloseUnderTraffic(t *testing.T) {
	_, _, env := startLocal(t, core.Socket{Proto: "udp", IP: "127.0.0.1"})
	fixed := env.Sockets()[0]
	other := open(t, env, "udp")
	victim := open(t, env, "udp")
	vtcp := open(t, env, "tcp")

	stop := make(chan struct{})
	var flood sync.WaitGroup
	flood.Add(2)
	go func() { // UDP to the socket being closed, a few thousand a second
		defer flood.Done()
		c, err := net.Dial("udp", addr(victim))
		if err != nil {
			return
		}
		defer c.Close()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = c.Write([]byte(request("OPTIONS", "UDP "+c.LocalAddr().String(), i)))
			// Paced: traffic, not a flood that fills the shared workers
			// (then the other sockets rightly get 503s) on a loaded CI box.
			time.Sleep(200 * time.Microsecond)
		}
	}()
	go func() { // TCP to the runtime TCP socket
		defer flood.Done()
		c, err := net.Dial("tcp", addr(vtcp))
		if err != nil {
			return
		}
		defer c.Close()
		go func() { _, _ = bufio.NewReader(c).WriteTo(discardW{}) }()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.Write([]byte(request("OPTIONS", "TCP "+c.LocalAddr().String(), i))); err != nil {
				return // closed by CloseSocket
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	var lost atomic.Int64
	var asks sync.WaitGroup
	for _, s := range []core.Socket{fixed, other} {
		asks.Add(1)
		go func(s core.Socket) {
			defer asks.Done()
			c := udpClient(t)
			for i := 0; i < 150; i++ {
				if _, reply, err := udpAsk(c, s, i); err != nil || !strings.HasPrefix(reply, "SIP/2.0 200 OK\r\n") {
					lost.Add(1)
				}
			}
		}(s)
	}
	time.Sleep(50 * time.Millisecond)
	if err := env.CloseSocket(victim); err != nil {
		t.Error(err)
	}
	if err := env.CloseSocket(vtcp); err != nil {
		t.Error(err)
	}
	asks.Wait()
	close(stop)
	flood.Wait()
	if n := lost.Load(); n != 0 {
		t.Errorf("%d requests to the other sockets went unanswered", n)
	}
	if listed(env, victim) || !listed(env, other) {
		t.Errorf("Env.Sockets() = %v", env.Sockets())
	}
}

// closedErr is true for a read error that means the peer closed (not a
// timeout).
func closedErr(err error) bool {
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

type discardW struct{}

func (discardW) Write(p []byte) (int, error) { return len(p), nil }

func fds(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(es)
}

// Opening and closing sockets 200 times, with a message on each, leaks
// neither descriptors nor goroutines.
func TestOpenCloseLeaksNothing(t *testing.T) {
	_, _, env := startLocal(t, core.Socket{Proto: "udp", IP: "127.0.0.1"})
	c := udpClient(t)
	// Warm up what runs once (the resolver, pools, the client socket).
	if _, _, err := udpAsk(c, env.Sockets()[0], 0); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	fd0, g0 := fds(t), runtime.NumGoroutine()
	for i := 0; i < 200; i++ {
		u := open(t, env, "udp")
		tc := open(t, env, "tcp")
		if i%10 == 0 {
			if _, reply, err := udpAsk(c, u, i); err != nil || !strings.HasPrefix(reply, "SIP/2.0 200 OK\r\n") {
				t.Fatalf("round %d: %q %v", i, reply, err)
			}
			conn, err := net.Dial("tcp", addr(tc))
			if err != nil {
				t.Fatal(err)
			}
			_, _ = conn.Write([]byte(request("OPTIONS", "TCP "+conn.LocalAddr().String(), i)))
			_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || line != "SIP/2.0 200 OK\r\n" {
				t.Fatalf("round %d tcp: %q %v", i, line, err)
			}
			if err := env.CloseSocket(tc); err != nil {
				t.Fatal(err)
			}
			conn.Close()
		} else if err := env.CloseSocket(tc); err != nil {
			t.Fatal(err)
		}
		if err := env.CloseSocket(u); err != nil {
			t.Fatal(err)
		}
	}
	var fd1, g1 int
	for i := 0; i < 300; i++ { // readers stop at their next read
		fd1, g1 = fds(t), runtime.NumGoroutine()
		if fd1 <= fd0 && g1 <= g0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if fd1 > fd0 || g1 > g0 {
		t.Errorf("after 200 open/close: fds %d → %d, goroutines %d → %d", fd0, fd1, g0, g1)
	}
	if len(env.Sockets()) != 1 {
		t.Errorf("Env.Sockets() = %v", env.Sockets())
	}
}

// Env.Sockets() and what reads it per message (IsMyself, SocketFor,
// IsLoop) are safe while sockets open and close (run with -race).
func TestSocketsReadWhileChanging(t *testing.T) {
	_, _, env := startLocal(t, core.Socket{Proto: "udp", IP: "127.0.0.1"})
	done := make(chan struct{})
	var readers sync.WaitGroup
	for i := 0; i < 4; i++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				ss := env.Sockets()
				if len(ss) == 0 || ss[0].Proto != "udp" {
					t.Error("the listen socket vanished")
					return
				}
				for _, s := range ss {
					_ = s.String()
				}
				_ = env.IsMyself("127.0.0.1", ss[len(ss)-1].Port)
				_, _ = env.SocketFor("tcp")
				_ = env.IsLoop(core.Target{Proto: "udp", Host: "127.0.0.1", Port: 9})
			}
		}()
	}
	for i := 0; i < 50; i++ {
		u := open(t, env, "udp")
		tc := open(t, env, "tcp")
		if !env.IsMyself("127.0.0.1", tc.Port) {
			t.Errorf("an open socket is not myself")
		}
		_ = env.CloseSocket(u)
		_ = env.CloseSocket(tc)
	}
	close(done)
	readers.Wait()
}

// A socket opened before Start (a module's Init) is read once traffic is
// let in.
func TestOpenBeforeStart(t *testing.T) {
	env := core.NewEnv(nil)
	h := &localHandler{}
	tr := New(env, h, Config{Workers: 1})
	h.tr = tr
	t.Cleanup(tr.Close)
	env.Sender, env.SocketManager = tr, tr
	u, err := env.OpenSocket(context.Background(), core.Socket{Proto: "udp", IP: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if !listed(env, u) {
		t.Fatalf("Env.Sockets() = %v", env.Sockets())
	}
	// No listen() socket here: the reply is sent from u explicitly.
	h.from = u
	tr.Start()
	if _, reply, err := udpAsk(udpClient(t), u, 1); err != nil || !strings.HasPrefix(reply, "SIP/2.0 200 OK\r\n") {
		t.Fatalf("a socket opened before Start: %q %v", reply, err)
	}
}

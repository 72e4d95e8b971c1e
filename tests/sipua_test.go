package tests

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Test UAs: sipgo's sip package builds and parses messages; plain sockets
// carry them, so tests see exact bytes, can send malformed messages and can
// assert that nothing came back (no transaction layer retransmits or
// absorbs anything behind the test's back).

func randToken() string { return strconv.FormatUint(rand.Uint64(), 36) }

// reqSpec describes a request for buildRequest.
type reqSpec struct {
	Method    string
	RURI      string
	Transport string   // UDP (default) or TCP
	Extra     []string // extra header lines, without CRLF
	Body      string
	CSeq      int
	CallID    string
	Branch    string
	NoVia     bool
	NoFrom    bool
}

// buildRequest writes a request as it would leave a UA at local.
func buildRequest(local string, s reqSpec) []byte {
	if s.Transport == "" {
		s.Transport = "UDP"
	}
	if s.CSeq == 0 {
		s.CSeq = 1
	}
	if s.CallID == "" {
		s.CallID = randToken() + "@kamgo.test"
	}
	if s.Branch == "" {
		s.Branch = "z9hG4bK" + randToken()
	}
	cseqMethod := s.Method
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s SIP/2.0\r\n", s.Method, s.RURI)
	if !s.NoVia {
		fmt.Fprintf(&b, "Via: SIP/2.0/%s %s;branch=%s;rport\r\n", s.Transport, local, s.Branch)
	}
	b.WriteString("Max-Forwards: 70\r\n")
	if !s.NoFrom {
		fmt.Fprintf(&b, "From: <sip:alice@%s>;tag=%s\r\n", local, randToken())
	}
	b.WriteString("To: <sip:bob@kamgo.test>\r\n")
	fmt.Fprintf(&b, "Call-ID: %s\r\n", s.CallID)
	fmt.Fprintf(&b, "CSeq: %d %s\r\n", s.CSeq, cseqMethod)
	fmt.Fprintf(&b, "Contact: <sip:alice@%s;transport=%s>\r\n", local, strings.ToLower(s.Transport))
	b.WriteString("User-Agent: kamgo-e2e\r\n")
	for _, h := range s.Extra {
		b.WriteString(h + "\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(s.Body), s.Body)
	return []byte(b.String())
}

// received is one message a test UA got, raw and parsed.
type received struct {
	Raw  []byte
	Msg  sip.Message
	From *net.UDPAddr
}

func (r received) Res() *sip.Response {
	res, _ := r.Msg.(*sip.Response)
	return res
}

func (r received) Req() *sip.Request {
	req, _ := r.Msg.(*sip.Request)
	return req
}

// UAC is a test client on its own UDP socket.
type UAC struct {
	t    testing.TB // the test using it; never touched by readLoop
	conn *net.UDPConn
	in   chan received
	bg   background
}

// background runs a reader goroutine that never calls testing.T (it may
// outlive a subtest): it records problems, reported at cleanup.
type background struct {
	mu   sync.Mutex
	errs []string
	stop chan struct{}
	done chan struct{}
}

func (b *background) init() {
	b.stop = make(chan struct{})
	b.done = make(chan struct{})
}

func (b *background) errorf(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.errs = append(b.errs, fmt.Sprintf(format, args...))
}

// shutdown closes c, waits for the reader and reports what it recorded.
func (b *background) shutdown(t testing.TB, c io.Closer) {
	close(b.stop)
	c.Close()
	<-b.done
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.errs {
		t.Error(e)
	}
}

// newUAC opens a UDP socket on 127.0.0.1 with an ephemeral port.
func newUAC(t testing.TB) *UAC {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	u := &UAC{t: t, conn: c, in: make(chan received, 64)}
	u.bg.init()
	go u.readLoop()
	t.Cleanup(func() { u.bg.shutdown(t, c) })
	return u
}

func (u *UAC) readLoop() {
	defer close(u.bg.done)
	defer close(u.in)
	buf := make([]byte, 65535)
	for {
		n, from, err := u.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		raw := append([]byte(nil), buf[:n]...)
		msg, err := sip.NewParser().ParseSIP(raw)
		if err != nil {
			u.bg.errorf("UAC got an unparsable datagram from %v: %v\n%s", from, err, raw)
			continue
		}
		select {
		case u.in <- received{Raw: raw, Msg: msg, From: from}:
		case <-u.bg.stop:
			return
		}
	}
}

// Local is the UAC's address, 127.0.0.1:port.
func (u *UAC) Local() string { return u.conn.LocalAddr().String() }

// Send writes one datagram to kamd.
func (u *UAC) Send(to *net.UDPAddr, data []byte) {
	u.t.Helper()
	if _, err := u.conn.WriteToUDP(data, to); err != nil {
		u.t.Fatalf("UAC send: %v", err)
	}
}

// Recv waits for the next message, or returns ok=false after d.
func (u *UAC) Recv(d time.Duration) (received, bool) {
	select {
	case r, ok := <-u.in:
		return r, ok
	case <-time.After(d):
		return received{}, false
	}
}

// Final waits for the final response with the given Call-ID, skipping 1xx.
func (u *UAC) Final(callID string, d time.Duration) received {
	u.t.Helper()
	deadline := time.Now().Add(d)
	for {
		r, ok := u.Recv(time.Until(deadline))
		if !ok {
			u.t.Fatalf("UAC %s: no final response for Call-ID %s within %v", u.Local(), callID, d)
		}
		res := r.Res()
		if res == nil || res.CallID() == nil || string(*res.CallID()) != callID {
			continue
		}
		if res.StatusCode >= 200 {
			return r
		}
	}
}

// Do sends a request built from s to kamd and returns its final response.
func (u *UAC) Do(k *Kamd, s reqSpec) received {
	u.t.Helper()
	if s.CallID == "" {
		s.CallID = randToken() + "@kamgo.test"
	}
	u.Send(k.UDPAddr(), buildRequest(u.Local(), s))
	return u.Final(s.CallID, 5*time.Second)
}

// Nothing asserts that no message arrives within d.
func (u *UAC) Nothing(d time.Duration, why string) {
	u.t.Helper()
	if r, ok := u.Recv(d); ok {
		u.t.Fatalf("%s: got a message, want none:\n%s", why, r.Raw)
	}
}

// TCPClient is a test client on one TCP connection to kamd.
type TCPClient struct {
	t    testing.TB
	conn net.Conn
	in   chan received
	bg   background
}

func dialTCP(t testing.TB, k *Kamd) *TCPClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", k.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tc := &TCPClient{t: t, conn: c, in: make(chan received, 64)}
	tc.bg.init()
	go tc.readLoop()
	t.Cleanup(func() { tc.bg.shutdown(t, c) })
	return tc
}

func (c *TCPClient) readLoop() {
	defer close(c.bg.done)
	defer close(c.in)
	ps := sip.NewParser().NewSIPStream()
	buf := make([]byte, 65535)
	for {
		n, err := c.conn.Read(buf)
		if n > 0 {
			raw := append([]byte(nil), buf[:n]...)
			perr := ps.ParseSIPStream(raw, func(msg sip.Message) {
				select {
				case c.in <- received{Raw: []byte(msg.String()), Msg: msg}:
				case <-c.bg.stop:
				}
			})
			if perr != nil && perr != sip.ErrParseSipPartial {
				c.bg.errorf("TCP client: unparsable stream from kamd: %v", perr)
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (c *TCPClient) Local() string { return c.conn.LocalAddr().String() }

func (c *TCPClient) Send(data []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(data); err != nil {
		c.t.Fatalf("TCP send: %v", err)
	}
}

func (c *TCPClient) Final(callID string, d time.Duration) received {
	c.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case r, ok := <-c.in:
			if !ok {
				c.t.Fatalf("TCP connection closed before a final response for %s", callID)
			}
			res := r.Res()
			if res != nil && res.CallID() != nil && string(*res.CallID()) == callID && res.StatusCode >= 200 {
				return r
			}
		case <-deadline:
			c.t.Fatalf("TCP client: no final response for Call-ID %s within %v", callID, d)
		}
	}
}

// UAS is a test callee on a UDP socket: it records every request and
// answers non-ACK requests with Code/Reason, sending the reply to the top
// Via's sent-by (received/rport honoured) as RFC 3261 18.2.2 says.
type UAS struct {
	t      testing.TB
	conn   *net.UDPConn
	mu     sync.Mutex
	code   int
	reason string
	extra  []string // extra header lines in replies
	body   string
	got    []received
	notify chan struct{}
	bg     background
}

func newUAS(t testing.TB) *UAS {
	t.Helper()
	port := freePort(t)
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	s := &UAS{t: t, conn: c, code: 200, reason: "OK", notify: make(chan struct{}, 1)}
	s.bg.init()
	go s.readLoop()
	t.Cleanup(func() { s.bg.shutdown(t, c) })
	return s
}

// Port is the UAS's UDP port on 127.0.0.1.
func (s *UAS) Port() int { return s.conn.LocalAddr().(*net.UDPAddr).Port }

// Answer sets the reply code, reason, extra header lines and body.
func (s *UAS) Answer(code int, reason string, body string, extra ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.code, s.reason, s.body, s.extra = code, reason, body, extra
}

func (s *UAS) readLoop() {
	defer close(s.bg.done)
	buf := make([]byte, 65535)
	for {
		n, from, err := s.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		raw := append([]byte(nil), buf[:n]...)
		msg, err := sip.NewParser().ParseSIP(raw)
		if err != nil {
			s.bg.errorf("UAS got an unparsable datagram from %v: %v\n%s", from, err, raw)
			continue
		}
		s.mu.Lock()
		s.got = append(s.got, received{Raw: raw, Msg: msg, From: from})
		code, reason, body, extra := s.code, s.reason, s.body, s.extra
		s.mu.Unlock()
		select {
		case s.notify <- struct{}{}:
		default:
		}
		req, ok := msg.(*sip.Request)
		if !ok || req.IsAck() {
			continue
		}
		s.reply(req, code, reason, body, extra)
	}
}

func (s *UAS) reply(req *sip.Request, code int, reason, body string, extra []string) {
	v := req.Via()
	if v == nil {
		s.bg.errorf("UAS: request without Via")
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "SIP/2.0 %d %s\r\n", code, reason)
	for _, h := range req.GetHeaders("Via") {
		fmt.Fprintf(&b, "Via: %s\r\n", h.Value())
	}
	fmt.Fprintf(&b, "From: %s\r\n", req.From().Value())
	to := req.To().Value()
	if !strings.Contains(to, "tag=") {
		to += ";tag=uas" + randToken()
	}
	fmt.Fprintf(&b, "To: %s\r\n", to)
	fmt.Fprintf(&b, "Call-ID: %s\r\n", req.CallID().Value())
	fmt.Fprintf(&b, "CSeq: %s\r\n", req.CSeq().Value())
	fmt.Fprintf(&b, "Contact: <sip:uas@%s>\r\n", s.conn.LocalAddr())
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	host := v.Host
	if r, ok := v.Params.Get("received"); ok && r != "" {
		host = r
	}
	port := v.Port
	if rp, ok := v.Params.Get("rport"); ok && rp != "" {
		port, _ = strconv.Atoi(rp)
	}
	if port == 0 {
		port = 5060
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		s.bg.errorf("UAS: top Via sends the reply to %s:%d, not to loopback; not sending", host, port)
		return
	}
	if _, err := s.conn.WriteToUDP([]byte(b.String()), &net.UDPAddr{IP: ip, Port: port}); err != nil {
		s.bg.errorf("UAS reply: %v", err)
	}
}

// Received returns a copy of what the UAS got so far.
func (s *UAS) Received() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.got...)
}

// WaitRequest waits for a request with the given Call-ID and method.
func (s *UAS) WaitRequest(callID, method string, d time.Duration) received {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for {
		for _, r := range s.Received() {
			if req := r.Req(); req != nil && req.CallID() != nil && string(*req.CallID()) == callID && string(req.Method) == method {
				return r
			}
		}
		left := time.Until(deadline)
		if left <= 0 {
			s.t.Fatalf("UAS: no %s with Call-ID %s within %v", method, callID, d)
		}
		select {
		case <-s.notify:
		case <-time.After(min(left, 50*time.Millisecond)):
		}
	}
}

// headerValues returns every value of header name in a raw message
// (compact forms not expanded), for exact-bytes assertions.
func headerLines(raw []byte, name string) []string {
	var out []string
	head, _, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
	for _, ln := range strings.Split(string(head), "\r\n")[1:] {
		n, v, ok := strings.Cut(ln, ":")
		if ok && strings.EqualFold(strings.TrimSpace(n), name) {
			out = append(out, strings.TrimSpace(v))
		}
	}
	return out
}

// Package transport owns kamd's SIP sockets (UDP, TCP, TLS), a bounded
// worker pool, and the production core.Sender.
package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

// Handler processes one parsed message on a worker goroutine.
type Handler interface {
	HandleRequest(m *core.Msg)
	HandleReply(m *core.Msg)
}

// Config tunes the transport.
type Config struct {
	Workers   int // goroutines running scripts; default 4×GOMAXPROCS
	QueueLen  int // jobs waiting for a worker before kamd answers 503
	TLSConfig *tls.Config
	// IdleTimeout closes stream connections without traffic
	// (tcp_connection_lifetime).
	IdleTimeout time.Duration
	// MaxConns bounds accepted stream connections (tcp_max_connections);
	// beyond it the stalest one is evicted (see gate).
	MaxConns int
	// MaxConnsPerIP bounds accepted connections from one address
	// (tcp_accept_iplimit); a negative value: no limit.
	MaxConnsPerIP int
	// MsgReadTimeout is the time a message may take to arrive once its
	// first byte did, and a TLS handshake to complete (tcp_msg_read_timeout).
	MsgReadTimeout time.Duration
	// MsgDataTimeout is the time a new connection may stay silent before
	// its first byte (tcp_msg_data_timeout).
	MsgDataTimeout time.Duration
}

type job struct {
	data    []byte      // raw datagram (UDP), parsed by the worker
	msg     sip.Message // already parsed (stream transports)
	sock    core.Socket
	proto   string
	srcIP   string // UDP: the source, split (remote is then built only for logs)
	srcPort int
	remote  string // stream transports: "ip:port"
	connID  string
	at      time.Time
	// closeConn, set by a stream reader after a parse error, closes the
	// connection once the messages queued before it are handled (their
	// replies must go out first); data then holds the broken bytes.
	closeConn *streamConn
	// refuse, set by a stream reader whose message failed the wire check
	// (core.WireProblem), is the code to answer with from data, the
	// message's own bytes; why is its reason.
	refuse int
	why    string
	// size is the message's length on the wire (core.Msg.Size); 0: len(data).
	size int
}

// source returns the sender as ip, port.
func (j *job) source() (string, int) {
	if j.srcIP != "" {
		return j.srcIP, j.srcPort
	}
	return core.HostPort(j.remote)
}

// remoteAddr is "ip:port" for logs.
func (j *job) remoteAddr() string {
	if j.srcIP != "" {
		return net.JoinHostPort(j.srcIP, strconv.Itoa(j.srcPort))
	}
	return j.remote
}

// peerHash picks the worker queue: one peer, one queue, so its messages stay in order.
//
// UDP datagrams the reader has already parsed are spread by Call-ID
// instead: what must stay in order (a 180 and its 200, an INVITE and its
// CANCEL) shares a Call-ID, and a single busy peer — another proxy, or
// sipp — can then use every worker rather than one.
func (j *job) peerHash() uint32 {
	h := uint32(2166136261)
	if j.proto == "udp" && j.msg != nil {
		if cid := j.msg.CallID(); cid != nil {
			for i := 0; i < len(*cid); i++ {
				h = (h ^ uint32((*cid)[i])) * 16777619
			}
			return h
		}
	}
	key := j.remote
	if j.srcIP != "" {
		key = j.srcIP
		h = (h ^ uint32(j.srcPort)) * 16777619
		h = (h ^ uint32(j.srcPort>>8)) * 16777619
	}
	for i := 0; i < len(key); i++ {
		h = (h ^ uint32(key[i])) * 16777619
	}
	return h
}

// Transport implements core.Sender over real sockets.
type Transport struct {
	env *core.Env
	h   Handler
	cfg Config
	log *slog.Logger
	// One queue per worker, chosen by the sender's address: messages from
	// one peer are handled in order (a 180 must not overtake its 200),
	// while different peers spread over the workers.
	queues  []chan job
	udp     []*udpSock
	conns   sync.Map // key proto:ip:port and conn id → *streamConn
	nconns  atomic.Int64
	lns     []net.Listener
	pending []pendingListener // started by Start
	// inflight counts jobs queued for or running on workers; UDP readers
	// handle a message themselves only when it is 0 (see udpLoop).
	inflight atomic.Int64
	wg       sync.WaitGroup
	closing  atomic.Bool
	resolv   *resolver

	dropped *core.Counter
	badMsgs *core.Counter

	// Stream connection limits (limits.go) and their counters.
	gate           gate
	connRejected   *core.Counter // tcp:local_reject
	connEvicted    *core.Counter // tcp:evicted
	connTimeout    *core.Counter // tcp:con_timeout (idle lifetime, silent new connection)
	msgReadTimeout *core.Counter // tcp:msg_read_timeout
	sendFailed     *core.Counter // core:rpl_send_failed (replyfail.go)
	shed           *core.Counter // tm:refused_overload, INVITEs shed at the door
	shedUntil      atomic.Int64  // unix ns: shed new INVITEs until then (queueFull)

	// sendHook, set only by tests (the fuzz targets), gets every
	// serialised message instead of the network.
	sendHook func(o *core.Outgoing, data []byte) error

	// Sockets by key (sockKey): those of Listen (fixed) and those opened
	// at runtime (rt). Only Outgoing.LocalSocket sends, OpenSocket and
	// CloseSocket use them; the default send path does not.
	rtMu      sync.RWMutex
	started   bool
	fixed     map[string]bool
	udpBy     map[string]*udpSock
	rt        map[string]*rtSock
	rtPending []*rtSock // opened before Start
}

type pendingListener struct {
	ln   net.Listener
	sock core.Socket
}

type udpSock struct {
	sock core.Socket
	conn *net.UDPConn
	v4   bool // sock.IP is IPv4 (udpFor, without parsing per send)
	// senders pools raw sendto state (udp_linux.go); one per concurrent Send.
	senders sync.Pool
}

// New creates a transport that hands messages to h.
func New(env *core.Env, h Handler, cfg Config) *Transport {
	if cfg.Workers <= 0 {
		cfg.Workers = 4 * runtime.GOMAXPROCS(0)
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 4096
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConnsPerIP == 0 {
		cfg.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if cfg.MsgReadTimeout <= 0 {
		cfg.MsgReadTimeout = DefaultMsgReadTimeout
	}
	if cfg.MsgDataTimeout <= 0 {
		cfg.MsgDataTimeout = DefaultMsgDataTimeout
	}
	queues := make([]chan job, cfg.Workers)
	for i := range queues {
		queues[i] = make(chan job, cfg.QueueLen/cfg.Workers+1)
	}
	st := env.Stats
	return &Transport{env: env, h: h, cfg: cfg, log: env.Log, queues: queues,
		resolv:  &resolver{cache: map[string]resolved{}},
		dropped: st.Counter("core", "drop_requests"), badMsgs: st.Counter("core", "err_requests"),
		connRejected: st.Counter("tcp", "local_reject"), connEvicted: st.Counter("tcp", "evicted"),
		connTimeout: st.Counter("tcp", "con_timeout"), msgReadTimeout: st.Counter("tcp", "msg_read_timeout"),
		sendFailed: st.Counter("core", "rpl_send_failed"), shed: st.Counter("tm", "refused_overload")}
}

// Listen binds every socket; a port 0 is replaced with the bound port in
// the returned list (tests use it for free ports).
func (t *Transport) Listen(ctx context.Context, socks []core.Socket) ([]core.Socket, error) {
	out := make([]core.Socket, 0, len(socks))
	for _, s := range socks {
		switch s.Proto {
		case "udp":
			us, bound, err := t.bindUDP(s)
			if err != nil {
				t.Close()
				return nil, err
			}
			s = bound
			t.udp = append(t.udp, us)
			t.addFixed(s, us)
		case "tcp", "tls", "ws", "wss":
			ln, bound, err := t.bindStream(ctx, s, false)
			if err != nil {
				t.Close()
				return nil, err
			}
			s = bound
			t.lns = append(t.lns, ln)
			t.pending = append(t.pending, pendingListener{ln: ln, sock: s})
			t.addFixed(s, nil)
		default:
			t.Close()
			return nil, fmt.Errorf("listen %s: protocol %s is not supported yet", s, s.Proto)
		}
		out = append(out, s)
	}
	return out, nil
}

// bindUDP opens a UDP socket on s (port 0: a free one).
func (t *Transport) bindUDP(s core.Socket) (*udpSock, core.Socket, error) {
	ua, err := net.ResolveUDPAddr("udp", net.JoinHostPort(s.IP, strconv.Itoa(s.Port)))
	if err != nil {
		return nil, s, fmt.Errorf("listen %s: %w", s, err)
	}
	c, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, s, fmt.Errorf("listen %s: %w", s, err)
	}
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
	s.Port = c.LocalAddr().(*net.UDPAddr).Port
	us := &udpSock{sock: s, conn: c, v4: ua.IP.To4() != nil}
	us.senders.New = func() any { return newUDPSender(c, us.v4) }
	return us, s, nil
}

// bindStream opens a TCP listener on s (TLS-wrapped for tls and wss).
// reuse sets SO_REUSEADDR and SO_REUSEPORT, so that connections can also
// be dialled from its port (runtime sockets, Outgoing.LocalSocket).
func (t *Transport) bindStream(ctx context.Context, s core.Socket, reuse bool) (net.Listener, core.Socket, error) {
	if (s.Proto == "tls" || s.Proto == "wss") && t.cfg.TLSConfig == nil {
		return nil, s, fmt.Errorf("listen %s: no TLS certificate configured (core_param tls_certificate / tls_private_key)", s)
	}
	var lc net.ListenConfig
	if reuse {
		lc.Control = reuseControl
	}
	ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort(s.IP, strconv.Itoa(s.Port)))
	if err != nil {
		return nil, s, fmt.Errorf("listen %s: %w", s, err)
	}
	s.Port = ln.Addr().(*net.TCPAddr).Port
	ln = gateListener{Listener: ln, t: t}
	if s.Proto == "tls" || s.Proto == "wss" {
		ln = tls.NewListener(ln, t.cfg.TLSConfig)
	}
	return ln, s, nil
}

// Start runs the readers and workers. Call it after the Env's Sender and
// Sockets are set (the workers read the Sender without a lock; sockets
// opened before Start are read from here on).
func (t *Transport) Start() {
	t.startRuntime()
	for _, u := range t.udp {
		t.wg.Add(1)
		go t.udpLoop(u)
	}
	for _, q := range t.queues {
		t.wg.Add(1)
		go t.worker(q)
	}
	for _, l := range t.pending {
		t.wg.Add(1)
		if l.sock.Proto == "ws" || l.sock.Proto == "wss" {
			go t.serveWS(l.ln, l.sock)
		} else {
			go t.acceptLoop(l.ln, l.sock, nil)
		}
	}
	t.pending = nil
}

// Close stops every socket and waits for the workers.
func (t *Transport) Close() {
	if t.closing.Swap(true) {
		return
	}
	for _, u := range t.udp {
		u.conn.Close()
	}
	for _, ln := range t.lns {
		ln.Close()
	}
	t.closeRuntime()
	t.conns.Range(func(k, v any) bool {
		v.(*streamConn).c.Close()
		return true
	})
	for _, q := range t.queues {
		close(q)
	}
	t.wg.Wait()
}

func isKeepalive(b []byte) bool {
	return len(bytes.Trim(b, "\r\n\x00 ")) == 0
}

// enqueue hands a job to the workers; when they are saturated, requests
// get a 503 rather than waiting forever.
func (t *Transport) enqueue(j job) {
	if t.closing.Load() {
		return
	}
	// A reader racing Close may find its queue closed: drop the message.
	defer func() { _ = recover() }()
	t.inflight.Add(1)
	select {
	case t.queues[j.peerHash()%uint32(len(t.queues))] <- j:
	default:
		t.inflight.Add(-1)
		t.dropped.Inc()
		t.queueFull(j)
		t.overload(j)
	}
}

func (t *Transport) overload(j job) {
	if j.closeConn != nil {
		t.unregister(j.closeConn)
		return
	}
	if j.refuse != 0 {
		return
	}
	msg := j.msg
	if msg == nil {
		var err error
		if msg, err = sip.NewParser().ParseSIP(j.data); err != nil {
			return
		}
	}
	req, ok := msg.(*sip.Request)
	if !ok || req.IsAck() || req.Via() == nil {
		return
	}
	if j.msg == nil {
		if c, _ := core.WireProblem(req, j.data, true); c != 0 {
			return
		}
	}
	if c, _ := core.RequestRefusal(req); c != 0 {
		return // its answer would echo what the door refuses
	}
	m := t.newMsg(j)
	m.Req = req
	m.FixVia()
	res := core.BuildReply(req, 503, "Service Unavailable", []sip.Header{sip.NewHeader("Retry-After", "1")})
	_ = t.Send(m.ReplyOutgoing(res, core.OutReply))
}

func (t *Transport) newMsg(j job) *core.Msg {
	ip, port := j.source()
	m := &core.Msg{Env: t.env, Proto: j.proto, SrcIP: ip, SrcPort: port, Local: j.sock, ConnID: j.connID, Arrived: j.at}
	m.Size = j.size
	if m.Size == 0 {
		m.Size = len(j.data)
	}
	return m
}

func (t *Transport) worker(q chan job) {
	defer t.wg.Done()
	parser := sip.NewParser()
	for j := range q {
		t.process(parser, j)
		t.inflight.Add(-1)
	}
}

func (t *Transport) process(parser *sip.Parser, j job) {
	defer func() {
		// Nothing a message does may take the daemon down.
		if r := recover(); r != nil {
			t.log.Error("panic while handling message", "panic", r, "src", j.remoteAddr())
		}
	}()
	if j.closeConn != nil {
		defer t.unregister(j.closeConn)
		t.rejectRaw(j, 400, "Bad Request")
		return
	}
	if j.refuse != 0 {
		t.rejectRaw(j, j.refuse, j.why)
		return
	}
	msg := j.msg
	if msg == nil {
		var err error
		msg, err = parser.ParseSIP(j.data)
		if err != nil {
			t.badMsgs.Inc()
			t.log.Debug("unparsable message dropped", "src", j.remoteAddr(), "proto", j.proto, "err", err)
			t.rejectRaw(j, 400, "Bad Request")
			return
		}
		// A whole message (UDP datagram, WebSocket frame); stream readers
		// and the UDP backlog path check theirs before queueing.
		if code, why := core.WireProblem(msg, j.data, true); code != 0 {
			t.badMsgs.Inc()
			t.log.Debug("malformed message refused", "src", j.remoteAddr(), "proto", j.proto, "why", why)
			t.rejectRaw(j, code, why)
			return
		}
	}
	m := t.newMsg(j)
	switch x := msg.(type) {
	case *sip.Request:
		m.Req = x
		if code, why := core.RequestRefusal(x); code != 0 {
			t.badMsgs.Inc()
			t.log.Debug("request refused before routing", "src", j.remoteAddr(), "proto", j.proto, "code", code, "why", why)
			t.refuse(m, code, why, false)
			return
		}
		if t.shedInvite(j, x) {
			return
		}
		if j.proto != "udp" {
			m.ForceRport()
		}
		t.h.HandleRequest(m)
	case *sip.Response:
		m.Res = x
		if why := core.ReplyProblem(x); why != "" {
			t.badMsgs.Inc()
			t.log.Debug("malformed reply dropped", "src", j.remoteAddr(), "proto", j.proto, "why", why)
			return
		}
		t.h.HandleReply(m)
	}
}

// rejectRaw answers a message that did not parse or failed the wire check,
// from its own bytes (j.data): what salvageRequest can read of it.
func (t *Transport) rejectRaw(j job, code int, reason string) {
	if j.data == nil {
		return
	}
	req, ok := salvageRequest(j.data)
	if !ok {
		return
	}
	m := t.newMsg(j)
	m.Req = req
	t.refuse(m, code, reason, true)
}

// refuse answers a request the door refuses, echoing only headers that are
// valid (core.RefusalReply). With no valid top Via there is nowhere to send
// it over UDP; over a stream it goes back on the connection. toSource sends
// it to the packet's source rather than to the Via (the message did not
// parse: its Via is not trusted with more than being echoed).
func (t *Transport) refuse(m *core.Msg, code int, reason string, toSource bool) {
	req := m.Req
	if req.IsAck() {
		return
	}
	viaOK := core.ViaOK(req.Via())
	if !viaOK && m.Proto == "udp" {
		return
	}
	if viaOK && !toSource {
		m.FixVia()
	}
	res, ok := core.RefusalReply(req, code, reason)
	if !ok {
		return
	}
	var o *core.Outgoing
	if viaOK && !toSource {
		o = m.ReplyOutgoing(res, core.OutReply)
	} else {
		o = &core.Outgoing{Kind: core.OutReply, Msg: res, ConnID: m.ConnID,
			Dst: core.Target{Proto: m.Proto, Host: m.SrcIP, Port: m.SrcPort}}
	}
	_ = t.Send(o)
}

// bufPool holds serialisation buffers: a message is written once into a
// pooled buffer and sent from it (no strings.Builder → []byte copy).
var bufPool = sync.Pool{New: func() any { b := new(bytes.Buffer); b.Grow(2048); return b }}

// Send implements core.Sender. It serialises synchronously: callers may
// change the message as soon as it returns.
func (t *Transport) Send(o *core.Outgoing) error {
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	core.WriteMessage(buf, o.Msg) // sipgo's bytes, fewer allocations
	var err error
	if o.Kind == core.OutReply || o.Kind == core.OutRelayedReply {
		err = t.sendReply(o, buf.Bytes())
	} else {
		err = t.sendBytes(o, buf.Bytes())
	}
	if buf.Cap() <= 64<<10 {
		bufPool.Put(buf)
	}
	return err
}

// sendReply sends a reply; one that cannot go (too large for UDP, a
// failed write) is handled by replyFailed, never dropped silently.
func (t *Transport) sendReply(o *core.Outgoing, data []byte) error {
	var err error
	if len(data) > maxUDPPayload && (o.Dst.Proto == "udp" || o.Dst.Proto == "") {
		err = fmt.Errorf("%d bytes do not fit in a UDP datagram (%d at most)", len(data), maxUDPPayload)
	} else {
		err = t.sendBytes(o, data)
	}
	if err != nil {
		if res, ok := o.Msg.(*sip.Response); ok {
			t.replyFailed(o, res, len(data), err)
		}
	}
	return err
}

func (t *Transport) sendBytes(o *core.Outgoing, data []byte) error {
	if t.sendHook != nil {
		return t.sendHook(o, data)
	}
	if o.LocalSocket != nil {
		return t.sendFrom(o, data)
	}
	switch o.Dst.Proto {
	case "udp", "":
		ip, err := t.resolv.resolve(o.Dst.Host)
		if err != nil {
			return err
		}
		u := t.arrival(o, ip)
		if u == nil {
			u = t.udpFor(ip)
		}
		if u == nil {
			return fmt.Errorf("no UDP socket to send to %s", o.Dst)
		}
		return u.writeTo(data, netip.AddrPortFrom(ip, uint16(o.Dst.Port)))
	case "tcp", "tls", "ws", "wss":
		c, err := t.streamFor(o)
		if err != nil {
			return err
		}
		// write copies nothing: the data is on the wire when it returns.
		return c.write(data)
	}
	return fmt.Errorf("cannot send over %q", o.Dst.Proto)
}

// writeTo sends one datagram from u: through a pooled raw sender where the
// platform has one, else (or for another address family) a plain write.
func (u *udpSock) writeTo(data []byte, to netip.AddrPort) error {
	us := u.senders.Get().(*udpSender)
	ok, err := us.send(data, to)
	u.senders.Put(us)
	if !ok {
		_, err = u.conn.WriteToUDPAddrPort(data, to)
	}
	return err
}

// arrival is the open UDP socket of o.Arrival when it can reach ip.
func (t *Transport) arrival(o *core.Outgoing, ip netip.Addr) *udpSock {
	if o.Arrival == nil || o.Arrival.Proto != "udp" {
		return nil
	}
	var kb [80]byte
	k := appendSockKey(kb[:0], *o.Arrival)
	t.rtMu.RLock()
	u := t.udpBy[string(k)] // no allocation for the lookup
	t.rtMu.RUnlock()
	if u == nil || u.v4 != ip.Is4() {
		return nil
	}
	return u
}

func (t *Transport) udpFor(ip netip.Addr) *udpSock {
	v4 := ip.Is4()
	for _, u := range t.udp {
		if u.v4 == v4 {
			return u
		}
	}
	if len(t.udp) > 0 {
		return t.udp[0]
	}
	return nil
}

type resolved struct {
	ip  netip.Addr
	exp time.Time
}

type resolver struct {
	mu    sync.Mutex
	cache map[string]resolved
}

func (r *resolver) resolve(host string) (netip.Addr, error) {
	host = strings.Trim(host, "[]")
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap(), nil // IP literals: no allocation, no lookup
	}
	r.mu.Lock()
	c, ok := r.cache[host]
	r.mu.Unlock()
	if ok && time.Now().Before(c.exp) {
		return c.ip, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil || len(ips) == 0 {
		return netip.Addr{}, fmt.Errorf("cannot resolve %q: %v", host, err)
	}
	ip := ips[0].IP
	for _, a := range ips {
		if a.IP.To4() != nil {
			ip = a.IP
			break
		}
	}
	addr, _ := netip.AddrFromSlice(ip)
	addr = addr.Unmap()
	r.mu.Lock()
	r.cache[host] = resolved{ip: addr, exp: time.Now().Add(60 * time.Second)}
	r.mu.Unlock()
	return addr, nil
}

var _ io.Writer = (*streamConn)(nil)

// Conns is the number of open stream connections (TCP, TLS, WS, WSS), each
// with its own reader goroutine (for core.ps).
func (t *Transport) Conns() int { return int(t.nconns.Load()) }

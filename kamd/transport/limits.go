package transport

import (
	"container/list"
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of the stream-connection limits (TCP, TLS, WS, WSS), Kamailio's
// core parameters of the same names; docs/limits.md explains each.
const (
	DefaultMaxConns       = 2048             // tcp_max_connections
	DefaultMaxConnsPerIP  = 1024             // tcp_accept_iplimit
	DefaultIdleTimeout    = 10 * time.Minute // tcp_connection_lifetime (Kamailio: 120 s)
	DefaultMsgReadTimeout = 20 * time.Second // tcp_msg_read_timeout
	DefaultMsgDataTimeout = 20 * time.Second // tcp_msg_data_timeout
	// readBufSize is what an idle connection keeps for reading: a message
	// being read grows its own buffer, given back once it is complete.
	readBufSize = 4096
)

// gate admits accepted stream connections: at most MaxConnsPerIP from one
// address, and at most MaxConns in all — beyond that a connection that has
// not yet sent one complete message is closed to make room: the oldest of
// the address holding the most connections (so a client from another
// address, just connected, is not the one to go), else, when every
// connection has sent a message, the one idle the longest. Idle or stalled
// peers can never lock a new client out.
type gate struct {
	mu    sync.Mutex
	all   map[*gconn]struct{}
	perIP map[string]*ipConns
}

// ipConns are one address's connections.
type ipConns struct {
	n      int
	silent list.List // of *gconn that completed no message yet, oldest first
}

// gconn is an accepted connection as the gate knows it.
type gconn struct {
	net.Conn
	t       *Transport
	ip      string
	created int64         // unix ns
	last    atomic.Int64  // unix ns of the last complete message (or keepalive)
	msgs    atomic.Int64  // complete messages read
	gone    bool          // left the gate (under gate.mu)
	elem    *list.Element // in its address's silent list (under gate.mu)
	once    sync.Once
}

func (g *gconn) Close() error {
	g.once.Do(func() { g.t.gate.leave(g) })
	return g.Conn.Close()
}

// seen records a complete message (or keepalive) on the connection.
func (g *gconn) seen(msg bool) {
	if g == nil {
		return
	}
	g.last.Store(time.Now().UnixNano())
	if msg && g.msgs.Add(1) == 1 {
		gt := &g.t.gate
		gt.mu.Lock()
		if g.elem != nil {
			gt.perIP[g.ip].silent.Remove(g.elem)
			g.elem = nil
		}
		gt.mu.Unlock()
	}
}

// gateOf is the gate's record of an accepted connection (nil: dialled by kamd).
func gateOf(c net.Conn) *gconn {
	switch x := c.(type) {
	case *gconn:
		return x
	case *tls.Conn:
		g, _ := x.NetConn().(*gconn)
		return g
	}
	return nil
}

func (gt *gate) leave(g *gconn) {
	gt.mu.Lock()
	defer gt.mu.Unlock()
	gt.dropLocked(g)
}

func (gt *gate) dropLocked(g *gconn) {
	if g.gone {
		return
	}
	g.gone = true
	delete(gt.all, g)
	ic := gt.perIP[g.ip]
	if g.elem != nil {
		ic.silent.Remove(g.elem)
		g.elem = nil
	}
	if ic.n--; ic.n <= 0 {
		delete(gt.perIP, g.ip)
	}
}

// admit takes c in, or refuses it (false: the caller closes it).
func (t *Transport) admit(c net.Conn) (*gconn, bool) {
	ip := ""
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ip = a.IP.String()
	}
	now := time.Now().UnixNano()
	g := &gconn{Conn: c, t: t, ip: ip, created: now}
	g.last.Store(now)
	gt := &t.gate
	gt.mu.Lock()
	if gt.all == nil {
		gt.all, gt.perIP = map[*gconn]struct{}{}, map[string]*ipConns{}
	}
	ic := gt.perIP[ip]
	if t.cfg.MaxConnsPerIP > 0 && ic != nil && ic.n >= t.cfg.MaxConnsPerIP {
		gt.mu.Unlock()
		t.connRejected.Inc()
		t.log.Debug("connection refused: tcp_accept_iplimit reached", "remote", c.RemoteAddr().String(), "limit", t.cfg.MaxConnsPerIP)
		return nil, false
	}
	var victim *gconn
	if len(gt.all) >= t.cfg.MaxConns {
		victim = gt.victimLocked()
		if victim == nil {
			gt.mu.Unlock()
			t.connRejected.Inc()
			return nil, false
		}
		gt.dropLocked(victim)
	}
	gt.all[g] = struct{}{}
	if ic == nil || ic.n == 0 { // (victim may have been its last one)
		ic = gt.perIP[ip]
		if ic == nil {
			ic = &ipConns{}
			gt.perIP[ip] = ic
		}
	}
	ic.n++
	g.elem = ic.silent.PushBack(g)
	gt.mu.Unlock()
	if victim != nil {
		t.connEvicted.Inc()
		t.log.Debug("connection evicted: tcp_max_connections reached", "evicted", victim.RemoteAddr().String(),
			"messages", victim.msgs.Load(), "for", c.RemoteAddr().String())
		_ = victim.Conn.Close() // its reader sees the error and unregisters it
	}
	return g, true
}

// victimLocked picks the connection to close for a new one: the oldest
// silent connection of the address with the most connections, else the
// connection idle the longest.
func (gt *gate) victimLocked() *gconn {
	var heavy *ipConns
	for _, ic := range gt.perIP {
		if ic.silent.Len() > 0 && (heavy == nil || ic.n > heavy.n) {
			heavy = ic
		}
	}
	if heavy != nil {
		return heavy.silent.Front().Value.(*gconn)
	}
	var idle *gconn
	for g := range gt.all {
		if idle == nil || g.last.Load() < idle.last.Load() {
			idle = g
		}
	}
	return idle
}

// gateListener admits each accepted connection through the gate; it sits
// under the TLS and HTTP (websocket) layers, so a connection is counted
// and limited from its first byte, handshakes included.
type gateListener struct {
	net.Listener
	t *Transport
}

func (l gateListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if g, ok := l.t.admit(c); ok {
			return g, nil
		}
		_ = c.Close()
	}
}

// GateLen is the number of accepted connections the gate holds (tests).
func (t *Transport) GateLen() int {
	t.gate.mu.Lock()
	defer t.gate.mu.Unlock()
	return len(t.gate.all)
}

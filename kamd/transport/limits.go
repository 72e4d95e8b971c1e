package transport

import (
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
// address, and at most MaxConns in all — beyond that the connection that
// has not yet sent one complete message (oldest first), else the one idle
// the longest, is closed to make room, so idle or stalled peers can never
// lock a new client out.
type gate struct {
	mu    sync.Mutex
	all   map[*gconn]struct{}
	perIP map[string]int
}

// gconn is an accepted connection as the gate knows it.
type gconn struct {
	net.Conn
	t       *Transport
	ip      string
	created int64        // unix ns
	last    atomic.Int64 // unix ns of the last complete message (or keepalive)
	msgs    atomic.Int64 // complete messages read
	gone    bool         // left the gate (under gate.mu)
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
	if msg {
		g.msgs.Add(1)
	}
	g.last.Store(time.Now().UnixNano())
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
	if gt.perIP[g.ip]--; gt.perIP[g.ip] <= 0 {
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
		gt.all, gt.perIP = map[*gconn]struct{}{}, map[string]int{}
	}
	if t.cfg.MaxConnsPerIP > 0 && gt.perIP[ip] >= t.cfg.MaxConnsPerIP {
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
	gt.perIP[ip]++
	gt.mu.Unlock()
	if victim != nil {
		t.connEvicted.Inc()
		t.log.Debug("connection evicted: tcp_max_connections reached", "evicted", victim.RemoteAddr().String(),
			"messages", victim.msgs.Load(), "for", c.RemoteAddr().String())
		_ = victim.Conn.Close() // its reader sees the error and unregisters it
	}
	return g, true
}

// victimLocked picks the connection to close for a new one: the oldest of
// those that never completed a message, else the one idle the longest.
func (gt *gate) victimLocked() *gconn {
	var silent, idle *gconn
	for g := range gt.all {
		if g.msgs.Load() == 0 {
			if silent == nil || g.created < silent.created {
				silent = g
			}
			continue
		}
		if idle == nil || g.last.Load() < idle.last.Load() {
			idle = g
		}
	}
	if silent != nil {
		return silent
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

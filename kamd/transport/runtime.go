package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/kamgo/kamgo/modules/core"
)

// Sockets opened and closed while kamd runs (core.SocketManager), e.g. a
// P-CSCF's protected ports, and sends from a chosen local socket
// (core.Outgoing.LocalSocket).

// rtSock is a socket OpenSocket opened.
type rtSock struct {
	sock core.Socket
	key  string
	udp  *udpSock     // udp
	ln   net.Listener // tcp, tls

	mu     sync.Mutex
	closed bool
	conns  map[*streamConn]struct{} // accepted on it or dialled from it
}

var _ core.SocketManager = (*Transport)(nil)

// sockKey names a socket by protocol, address (normalised) and port.
func sockKey(s core.Socket) string {
	var buf [80]byte
	return string(appendSockKey(buf[:0], s))
}

// appendSockKey appends sockKey(s) to b: proto ":" host ":" port, an IPv6
// host in brackets (net.JoinHostPort). The per-reply lookup (arrival)
// uses it with a stack buffer: no allocation.
func appendSockKey(b []byte, s core.Socket) []byte {
	b = append(b, s.Proto...)
	b = append(b, ':')
	ip := core.BareHost(s.IP)
	start := len(b)
	b = append(b, '[') // dropped below unless the host has a colon
	if a, err := netip.ParseAddr(ip); err == nil {
		b = a.Unmap().AppendTo(b)
	} else {
		b = append(b, ip...)
	}
	if bytes.IndexByte(b[start+1:], ':') >= 0 {
		b = append(b, ']')
	} else {
		b = append(b[:start], b[start+1:]...)
	}
	b = append(b, ':')
	return strconv.AppendInt(b, int64(s.Port), 10)
}

func localConnKey(sock, remote string) string { return sock + ">" + remote }

// addFixed records a socket of Listen.
func (t *Transport) addFixed(s core.Socket, u *udpSock) {
	t.rtMu.Lock()
	defer t.rtMu.Unlock()
	if t.fixed == nil {
		t.fixed, t.udpBy, t.rt = map[string]bool{}, map[string]*udpSock{}, map[string]*rtSock{}
	}
	k := sockKey(s)
	t.fixed[k] = true
	if u != nil {
		t.udpBy[k] = u
	}
}

// OpenSocket implements core.SocketManager: it binds s and, once the
// transport runs, reads it like the sockets of Listen. The Env's socket
// list gets it before its first message can arrive.
func (t *Transport) OpenSocket(ctx context.Context, s core.Socket) (core.Socket, error) {
	switch s.Proto {
	case "udp", "tcp":
	case "tls":
		if t.cfg.TLSConfig == nil {
			return s, fmt.Errorf("open socket %s: no TLS certificate configured", s)
		}
	default:
		return s, fmt.Errorf("open socket %s: protocol %q cannot be opened at runtime (udp, tcp, tls)", s, s.Proto)
	}
	if _, err := netip.ParseAddr(core.BareHost(s.IP)); err != nil {
		return s, fmt.Errorf("open socket %s: %q is not an IP address", s, s.IP)
	}
	if s.Port < 0 || s.Port > 65535 {
		return s, fmt.Errorf("open socket %s: bad port %d", s, s.Port)
	}
	s.IP = core.BareHost(s.IP)
	t.rtMu.Lock()
	defer t.rtMu.Unlock()
	if t.closing.Load() {
		return s, fmt.Errorf("open socket %s: kamd is stopping", s)
	}
	if t.fixed == nil {
		t.fixed, t.udpBy, t.rt = map[string]bool{}, map[string]*udpSock{}, map[string]*rtSock{}
	}
	if s.Port != 0 {
		if k := sockKey(s); t.fixed[k] || t.rt[k] != nil {
			return s, fmt.Errorf("open socket %s: already open", s)
		}
	}
	rt := &rtSock{conns: map[*streamConn]struct{}{}}
	if s.Proto == "udp" {
		u, bound, err := t.bindUDP(s)
		if err != nil {
			return s, err
		}
		rt.udp, s = u, bound
	} else {
		ln, bound, err := t.bindStream(ctx, s, true)
		if err != nil {
			return s, err
		}
		rt.ln, s = ln, bound
	}
	rt.sock, rt.key = s, sockKey(s)
	t.rt[rt.key] = rt
	if rt.udp != nil {
		t.udpBy[rt.key] = rt.udp
	}
	t.env.AddSocket(s)
	if t.started {
		t.launch(rt)
	} else {
		t.rtPending = append(t.rtPending, rt)
	}
	t.log.Debug("socket opened", "socket", s.String())
	return s, nil
}

// CloseSocket implements core.SocketManager: it closes a socket OpenSocket
// opened and its connections. The socket leaves the Env's list first; a
// reader busy with a message finishes it and stops at its next read.
func (t *Transport) CloseSocket(s core.Socket) error {
	k := sockKey(s)
	t.rtMu.Lock()
	rt := t.rt[k]
	if rt == nil {
		fixed := t.fixed[k]
		t.rtMu.Unlock()
		if fixed {
			return fmt.Errorf("close socket %s: a listen() socket cannot be closed at runtime", s)
		}
		return fmt.Errorf("close socket %s: not open", s)
	}
	delete(t.rt, k)
	delete(t.udpBy, k)
	for i, p := range t.rtPending {
		if p == rt {
			t.rtPending = append(t.rtPending[:i], t.rtPending[i+1:]...)
			break
		}
	}
	t.rtMu.Unlock()
	t.env.RemoveSocket(rt.sock)
	t.closeRT(rt)
	t.log.Debug("socket closed", "socket", rt.sock.String())
	return nil
}

func (t *Transport) closeRT(rt *rtSock) {
	rt.mu.Lock()
	rt.closed = true
	conns := make([]*streamConn, 0, len(rt.conns))
	for sc := range rt.conns {
		conns = append(conns, sc)
	}
	rt.mu.Unlock()
	if rt.udp != nil {
		rt.udp.conn.Close()
	}
	if rt.ln != nil {
		rt.ln.Close()
	}
	// Their readers see the error and unregister them.
	for _, sc := range conns {
		sc.c.Close()
	}
}

// Opened lists the sockets opened at runtime (core.ps, core.sockets_list).
func (t *Transport) Opened() []core.Socket {
	t.rtMu.RLock()
	defer t.rtMu.RUnlock()
	var out []core.Socket
	for _, rt := range t.rt {
		out = append(out, rt.sock)
	}
	return out
}

func (t *Transport) launch(rt *rtSock) {
	t.wg.Add(1)
	if rt.udp != nil {
		go t.udpLoop(rt.udp)
	} else {
		go t.acceptLoop(rt.ln, rt.sock, rt)
	}
}

// startRuntime marks the transport started and runs the readers of the
// sockets opened before Start.
func (t *Transport) startRuntime() {
	t.rtMu.Lock()
	defer t.rtMu.Unlock()
	t.started = true
	for _, rt := range t.rtPending {
		t.launch(rt)
	}
	t.rtPending = nil
}

// closeRuntime closes every runtime socket (Close).
func (t *Transport) closeRuntime() {
	t.rtMu.Lock()
	rts := make([]*rtSock, 0, len(t.rt))
	for k, rt := range t.rt {
		rts = append(rts, rt)
		delete(t.rt, k)
		delete(t.udpBy, k)
	}
	t.rtPending = nil
	t.rtMu.Unlock()
	for _, rt := range rts {
		t.closeRT(rt)
	}
}

// sendFrom sends a message from o.LocalSocket.
func (t *Transport) sendFrom(o *core.Outgoing, data []byte) error {
	ls := *o.LocalSocket
	proto := o.Dst.Proto
	if proto == "" {
		proto = "udp"
	}
	if ls.Proto != proto {
		return fmt.Errorf("cannot send to %s from %s: not the same protocol", o.Dst, ls)
	}
	switch proto {
	case "udp":
		k := sockKey(ls)
		t.rtMu.RLock()
		u := t.udpBy[k]
		t.rtMu.RUnlock()
		if u == nil {
			return fmt.Errorf("cannot send to %s from %s: no such open socket", o.Dst, ls)
		}
		ip, err := t.resolv.resolve(o.Dst.Host)
		if err != nil {
			return err
		}
		if ip.Is4() != u.v4 {
			return fmt.Errorf("cannot send to %s from %s: another address family", o.Dst, ls)
		}
		return u.writeTo(data, netip.AddrPortFrom(ip, uint16(o.Dst.Port)))
	case "tcp", "tls", "ws", "wss":
		c, err := t.streamFrom(o)
		if err != nil {
			return err
		}
		return c.write(data)
	}
	return fmt.Errorf("cannot send over %q", o.Dst.Proto)
}

// streamFrom finds or dials the connection from o.LocalSocket to o.Dst:
// the ConnID's connection if it is on that socket, an open one between the
// two, or a new one dialled from the socket's address and port.
func (t *Transport) streamFrom(o *core.Outgoing) (*streamConn, error) {
	ls := *o.LocalSocket
	k := sockKey(ls)
	if o.ConnID != "" {
		if v, ok := t.conns.Load(o.ConnID); ok {
			if sc := v.(*streamConn); sockKey(sc.sock) == k {
				return sc, nil
			}
		}
	}
	ip, err := t.resolv.resolve(o.Dst.Host)
	if err != nil {
		return nil, err
	}
	remote := net.JoinHostPort(ip.String(), strconv.Itoa(o.Dst.Port))
	if v, ok := t.conns.Load(localConnKey(k, remote)); ok {
		return v.(*streamConn), nil
	}
	if o.Dst.Proto == "ws" || o.Dst.Proto == "wss" {
		return nil, fmt.Errorf("no websocket connection from %s to %s", ls, remote)
	}
	t.rtMu.RLock()
	rt, fixed := t.rt[k], t.fixed[k]
	t.rtMu.RUnlock()
	if rt == nil && !fixed {
		return nil, fmt.Errorf("cannot connect to %s from %s: no such open socket", remote, ls)
	}
	sock := ls
	if rt != nil {
		sock = rt.sock
	}
	c, err := dialFrom(o, sock, remote, t.cfg.TLSConfig)
	if err != nil {
		return nil, err
	}
	sc := t.register(c, o.Dst.Proto, sock, nil, rt)
	t.conns.Store(localConnKey(k, remote), sc)
	t.wg.Add(1)
	go t.readLoop(sc)
	return sc, nil
}

// dialFrom connects to remote from the local socket's address and port.
// SO_REUSEADDR and SO_REUSEPORT let it share the port with the socket's
// own listener (opened with them too); a listen() socket has no
// SO_REUSEPORT, so dialling from its port fails with "address in use".
func dialFrom(o *core.Outgoing, sock core.Socket, remote string, srv *tls.Config) (net.Conn, error) {
	la, err := netip.ParseAddr(core.BareHost(sock.IP))
	if err != nil {
		return nil, fmt.Errorf("connect %s from %s: %w", remote, sock, err)
	}
	d := net.Dialer{Timeout: 5 * time.Second, Control: reuseControl,
		LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(la.Unmap(), uint16(sock.Port)))}
	var c net.Conn
	if o.Dst.Proto == "tls" {
		cfg := &tls.Config{ServerName: core.BareHost(o.Dst.Host), MinVersion: tls.VersionTLS12}
		if srv != nil && srv.RootCAs != nil {
			cfg.RootCAs = srv.RootCAs
		}
		c, err = tls.DialWithDialer(&d, "tcp", remote, cfg)
	} else {
		c, err = d.Dial("tcp", remote)
	}
	if err != nil {
		return nil, fmt.Errorf("connect %s from %s: %w", remote, sock, err)
	}
	return c, nil
}

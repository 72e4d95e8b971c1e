package transport

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/gorilla/websocket"
	"github.com/kamgo/kamgo/modules/core"
)

var connSeq atomic.Uint64

type streamConn struct {
	c      net.Conn
	ws     *websocket.Conn // set for ws/wss connections
	proto  string
	id     string
	remote string
	sock   core.Socket
	rt     *rtSock // the runtime socket it was accepted on or dialled from
	g      *gconn  // the gate's record (accepted connections; nil: dialled)
	mu     sync.Mutex
}

func (s *streamConn) Write(p []byte) (int, error) { return len(p), s.write(p) }

func (s *streamConn) write(data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if s.ws != nil {
		// RFC 7118: one SIP message per text frame.
		return s.ws.WriteMessage(websocket.TextMessage, data)
	}
	_, err := s.c.Write(data)
	return err
}

func connKey(proto, remote string) string { return proto + ":" + remote }

func (t *Transport) acceptLoop(ln net.Listener, sock core.Socket, rt *rtSock) {
	defer t.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if t.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		sc := t.register(c, sock.Proto, sock, nil, rt)
		t.wg.Add(1)
		go t.readLoop(sc)
	}
}

func (t *Transport) register(c net.Conn, proto string, sock core.Socket, ws *websocket.Conn, rt *rtSock) *streamConn {
	sc := &streamConn{c: c, ws: ws, proto: proto, remote: c.RemoteAddr().String(), sock: sock, rt: rt,
		id: "c" + strconv.FormatUint(connSeq.Add(1), 10), g: gateOf(c)}
	t.nconns.Add(1)
	t.conns.Store(sc.id, sc)
	t.conns.Store(connKey(proto, sc.remote), sc)
	// Found by local socket and peer too, for Outgoing.LocalSocket.
	t.conns.Store(localConnKey(sockKey(sock), sc.remote), sc)
	if rt != nil {
		rt.mu.Lock()
		rt.conns[sc] = struct{}{}
		closed := rt.closed
		rt.mu.Unlock()
		if closed { // CloseSocket ran meanwhile: its reader unregisters it
			c.Close()
		}
	}
	return sc
}

func (t *Transport) unregister(sc *streamConn) {
	t.conns.CompareAndDelete(sc.id, sc)
	t.conns.CompareAndDelete(connKey(sc.proto, sc.remote), sc)
	t.conns.CompareAndDelete(localConnKey(sockKey(sc.sock), sc.remote), sc)
	if sc.rt != nil {
		sc.rt.mu.Lock()
		delete(sc.rt.conns, sc)
		sc.rt.mu.Unlock()
	}
	t.nconns.Add(-1)
	sc.c.Close()
}

func (t *Transport) readLoop(sc *streamConn) {
	defer t.wg.Done()
	handedOff := false
	defer func() {
		if !handedOff {
			t.unregister(sc)
		}
	}()
	if tc, ok := sc.c.(*tls.Conn); ok && sc.g != nil {
		// The handshake is the first message of a TLS connection: it gets
		// tcp_msg_read_timeout, so a stalled one cannot hold the slot.
		_ = tc.SetDeadline(time.Now().Add(t.cfg.MsgReadTimeout))
		if err := tc.Handshake(); err != nil {
			t.log.Debug("TLS handshake failed", "remote", sc.remote, "err", err)
			return
		}
		_ = tc.SetDeadline(time.Time{})
	}
	parser := sip.NewParser().NewSIPStream()
	defer func() { parser.Close() }()
	// An idle connection keeps only this small buffer (and its goroutine):
	// a message being read grows pending, which is dropped once complete.
	buf := make([]byte, readBufSize)
	// pending holds the bytes of the messages the parser has not finished,
	// from the first byte of the oldest one: each message is checked on
	// its own bytes (core.WireProblem), and a broken one is answered from
	// its own bytes only, never from those of the messages before it.
	// Until the header block of the first one is complete, pending is not
	// given to the parser (fed false): a peer dripping headers costs its
	// raw bytes only, never a growing parsed message.
	var pending []byte
	fed := false
	scanned := 0 // pending[:scanned] has no end of headers
	var msgStart time.Time
	opened := time.Now()
	for {
		var deadline time.Time
		switch {
		case len(pending) > 0:
			deadline = msgStart.Add(t.cfg.MsgReadTimeout)
		case sc.g != nil && sc.g.msgs.Load() == 0 && sc.g.last.Load() == sc.g.created:
			deadline = opened.Add(t.cfg.MsgDataTimeout)
		default:
			deadline = time.Now().Add(t.cfg.IdleTimeout)
		}
		_ = sc.c.SetReadDeadline(deadline)
		n, err := sc.c.Read(buf)
		if n > 0 {
			data := buf[:n]
			if len(pending) == 0 {
				// RFC 5626 keepalive: CRLFCRLF ping gets a CRLF pong.
				if bytes.Equal(data, []byte("\r\n\r\n")) {
					sc.g.seen(false)
					_ = sc.write([]byte("\r\n"))
					continue
				}
				// RFC 3261 7.5: CRLFs before a start line are ignored
				// (keepalives, pongs); they start no message.
				data = bytes.TrimLeft(data, "\r\n")
				if len(data) == 0 {
					sc.g.seen(false)
					continue
				}
				msgStart = time.Now()
			}
			pending = append(pending, data...)
			if !fed {
				end := headerEnd(pending, scanned)
				if end < 0 {
					if len(pending) > sip.ParseMaxMessageLength {
						t.badMsgs.Inc()
						t.log.Debug("closing stream: header block too large", "remote", sc.remote, "bytes", len(pending))
						return
					}
					scanned = max(0, len(pending)-3)
					continue
				}
				fed, scanned = true, 0
				_, _ = parser.Write(pending)
			} else {
				_, _ = parser.Write(data)
			}
			for parser.Buffer().Len() > 0 {
				msg, used, perr := parser.ParseNext()
				if errors.Is(perr, io.ErrUnexpectedEOF) {
					break // the rest of the message is still to come
				}
				if perr != nil {
					// A broken stream cannot be resynchronised: answer 400 if
					// the message is readable enough and close it, after the
					// messages queued before it are answered.
					t.badMsgs.Inc()
					t.log.Debug("closing stream after parse error", "remote", sc.remote, "err", perr)
					handedOff = true
					t.enqueue(job{closeConn: sc, data: append([]byte(nil), pending...), sock: sc.sock, proto: sc.proto, remote: sc.remote, connID: sc.id, at: time.Now()})
					return
				}
				used = min(used, len(pending))
				raw := pending[:used]
				j := job{msg: msg, sock: sc.sock, proto: sc.proto, remote: sc.remote, connID: sc.id, at: time.Now()}
				j.size = used
				if code, why := core.WireProblem(msg, raw, false); code != 0 {
					// Framing is intact: refuse this one, keep the connection.
					t.badMsgs.Inc()
					t.log.Debug("malformed message refused", "remote", sc.remote, "why", why)
					j = job{refuse: code, why: why, data: append([]byte(nil), raw...), sock: sc.sock, proto: sc.proto, remote: sc.remote, connID: sc.id, at: j.at}
				}
				sc.g.seen(true)
				t.enqueue(j)
				pending = append(pending[:0], pending[used:]...)
				msgStart = time.Now() // the next message starts here
			}
			if len(bytes.Trim(pending, "\r\n")) == 0 {
				// Between messages: nothing is in progress. Give the
				// buffers back, so an idle connection keeps only buf.
				pending, fed = nil, false
				parser.Close()
			}
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if len(pending) > 0 {
					t.msgReadTimeout.Inc()
					t.log.Debug("closing stream: message not complete within tcp_msg_read_timeout", "remote", sc.remote, "bytes", len(pending))
				} else {
					t.connTimeout.Inc()
					t.log.Debug("closing idle stream", "remote", sc.remote)
				}
			}
			return
		}
	}
}

// headerEnd is the index after the end of the header block in b (a blank
// line), or -1; b[:from] is known to have none.
func headerEnd(b []byte, from int) int {
	if i := bytes.Index(b[from:], []byte("\r\n\r\n")); i >= 0 {
		return from + i + 4
	}
	if i := bytes.Index(b[from:], []byte("\n\n")); i >= 0 {
		return from + i + 2
	}
	return -1
}

// streamFor finds the connection for a message: the request's own
// connection for replies, an open one to the destination, or a new one.
func (t *Transport) streamFor(o *core.Outgoing) (*streamConn, error) {
	if o.ConnID != "" {
		if v, ok := t.conns.Load(o.ConnID); ok {
			return v.(*streamConn), nil
		}
	}
	ip, err := t.resolv.resolve(o.Dst.Host)
	if err != nil {
		return nil, err
	}
	remote := net.JoinHostPort(ip.String(), strconv.Itoa(o.Dst.Port))
	if v, ok := t.conns.Load(connKey(o.Dst.Proto, remote)); ok {
		return v.(*streamConn), nil
	}
	if _, isReply := o.Msg.(*sip.Response); isReply {
		// RFC 3261 18.2.2: a reply whose connection is gone may be sent to
		// the Via address on a new connection.
	}
	if o.Dst.Proto == "ws" || o.Dst.Proto == "wss" {
		// WebSocket peers (browsers, softphones) connect to us; kamd does not dial them.
		return nil, fmt.Errorf("no websocket connection to %s", remote)
	}
	sock, ok := t.env.SocketFor(o.Dst.Proto)
	if !ok {
		return nil, fmt.Errorf("no %s socket to connect to %s", o.Dst.Proto, remote)
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	var c net.Conn
	if o.Dst.Proto == "tls" {
		cfg := &tls.Config{ServerName: core.BareHost(o.Dst.Host), MinVersion: tls.VersionTLS12}
		if t.cfg.TLSConfig != nil && t.cfg.TLSConfig.RootCAs != nil {
			cfg.RootCAs = t.cfg.TLSConfig.RootCAs
		}
		c, err = tls.DialWithDialer(&d, "tcp", remote, cfg)
	} else {
		c, err = d.Dial("tcp", remote)
	}
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", remote, err)
	}
	sc := t.register(c, o.Dst.Proto, sock, nil, nil)
	// Key it by the address we dialled too (RemoteAddr may differ for names).
	t.conns.Store(connKey(o.Dst.Proto, remote), sc)
	t.wg.Add(1)
	go t.readLoop(sc)
	return sc, nil
}

// salvageRequest reads what it can of a request that did not parse or
// failed the wire check, from its own bytes: the start line must be a
// request's (not an ACK: never answered), and every header line that
// contains no bare CR, LF or NUL and parses on its own (folded lines
// joined) is kept. core.RefusalReply then echoes only the valid ones.
func salvageRequest(data []byte) (*sip.Request, bool) {
	for len(data) >= 2 && data[0] == '\r' && data[1] == '\n' {
		data = data[2:]
	}
	end := bytes.Index(data, []byte("\r\n"))
	if end < 0 {
		return nil, false
	}
	first := data[:end]
	sp := bytes.IndexByte(first, ' ')
	if sp <= 0 || len(first) < 8 || !bytes.HasSuffix(first, []byte(" SIP/2.0")) || bytes.ContainsAny(first, "\n\x00") {
		return nil, false
	}
	method := string(first[:sp])
	if method == "ACK" {
		return nil, false
	}
	req := sip.NewRequest(sip.RequestMethod(method), sip.Uri{})
	head := data[end+2:]
	if i := bytes.Index(head, []byte("\r\n\r\n")); i >= 0 {
		head = head[:i+2]
	}
	hp := sip.HeadersParser(sip.DefaultHeadersParser())
	var line []byte
	flush := func() {
		if len(line) == 0 || bytes.ContainsAny(line, "\r\n\x00") {
			return
		}
		hs, err := hp.ParseHeader(nil, line)
		if err != nil {
			return
		}
		for _, h := range hs {
			req.AppendHeader(h)
		}
	}
	for _, ln := range bytes.Split(head, []byte("\r\n")) {
		if len(ln) > 0 && (ln[0] == ' ' || ln[0] == '\t') && line != nil {
			line = append(append(line, ' '), bytes.TrimLeft(ln, " \t")...)
			continue
		}
		flush()
		line = append([]byte(nil), ln...)
	}
	flush()
	return req, true
}

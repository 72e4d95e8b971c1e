package transport

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
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

func (t *Transport) acceptLoop(ln net.Listener, sock core.Socket) {
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
		if t.nconns.Load() >= int64(t.cfg.MaxConns) {
			c.Close()
			continue
		}
		sc := t.register(c, sock.Proto, sock, nil)
		t.wg.Add(1)
		go t.readLoop(sc)
	}
}

func (t *Transport) register(c net.Conn, proto string, sock core.Socket, ws *websocket.Conn) *streamConn {
	sc := &streamConn{c: c, ws: ws, proto: proto, remote: c.RemoteAddr().String(), sock: sock,
		id: "c" + strconv.FormatUint(connSeq.Add(1), 10)}
	t.nconns.Add(1)
	t.conns.Store(sc.id, sc)
	t.conns.Store(connKey(proto, sc.remote), sc)
	return sc
}

func (t *Transport) unregister(sc *streamConn) {
	t.conns.CompareAndDelete(sc.id, sc)
	t.conns.CompareAndDelete(connKey(sc.proto, sc.remote), sc)
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
	parser := sip.NewParser().NewSIPStream()
	defer parser.Close()
	r := bufio.NewReaderSize(sc.c, 65536)
	buf := make([]byte, 65536)
	for {
		_ = sc.c.SetReadDeadline(time.Now().Add(t.cfg.IdleTimeout))
		n, err := r.Read(buf)
		if n > 0 {
			data := buf[:n]
			// RFC 5626 keepalive: CRLFCRLF ping gets a CRLF pong.
			if bytes.Equal(data, []byte("\r\n\r\n")) {
				_ = sc.write([]byte("\r\n"))
				continue
			}
			perr := parser.ParseSIPStream(data, func(msg sip.Message) {
				t.enqueue(job{msg: msg, sock: sc.sock, proto: sc.proto, remote: sc.remote, connID: sc.id, at: time.Now()})
			})
			if perr != nil && !errors.Is(perr, sip.ErrParseSipPartial) {
				// A broken stream cannot be resynchronised: answer 400 if the
				// message is readable enough and close it, after the messages
				// queued before it are answered.
				t.badMsgs.Inc()
				t.log.Debug("closing stream after parse error", "remote", sc.remote, "err", perr)
				// The parser may have drained the broken message's first lines:
				// answer from whichever holds a readable request, its buffer or
				// the bytes just read.
				bad := append([]byte(nil), parser.Buffer().Bytes()...)
				if _, _, ok := badRequestReply(bad, perr); !ok {
					bad = append(bad[:0], data...)
				}
				handedOff = true
				t.enqueue(job{closeConn: sc, data: bad, sock: sc.sock, proto: sc.proto, remote: sc.remote, connID: sc.id, at: time.Now()})
				return
			}
		}
		if err != nil {
			return
		}
	}
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
		cfg := &tls.Config{ServerName: o.Dst.Host, MinVersion: tls.VersionTLS12}
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
	sc := t.register(c, o.Dst.Proto, sock, nil)
	// Key it by the address we dialled too (RemoteAddr may differ for names).
	t.conns.Store(connKey(o.Dst.Proto, remote), sc)
	t.wg.Add(1)
	go t.readLoop(sc)
	return sc, nil
}

// badRequestReply builds a 400 for a message whose start line says it is a
// request and whose headers are readable line by line.
func badRequestReply(data []byte, perr error) (*sip.Response, core.Target, bool) {
	end := bytes.Index(data, []byte("\r\n"))
	if end < 0 {
		return nil, core.Target{}, false
	}
	first := string(data[:end])
	if len(first) < 8 || first[len(first)-7:] != "SIP/2.0" || bytes.HasPrefix(data, []byte("ACK ")) {
		return nil, core.Target{}, false
	}
	res := sip.NewResponse(400, "Bad Request")
	var dst core.Target
	have := map[string]bool{}
	lines := bytes.Split(data[end+2:], []byte("\r\n"))
	hp := sip.HeadersParser(sip.DefaultHeadersParser())
	for _, ln := range lines {
		if len(ln) == 0 {
			break
		}
		var hs []sip.Header
		hs, err := hp.ParseHeader(nil, ln)
		if err != nil || len(hs) == 0 {
			// An unparsable CSeq (e.g. a number over 2^32) is echoed as it
			// came, so the 400 still matches the client's transaction.
			name, value, ok := bytes.Cut(ln, []byte(":"))
			if !ok || core.CanonicalHeader(string(name)) != "cseq" {
				continue
			}
			hs = []sip.Header{sip.NewHeader("CSeq", string(bytes.TrimSpace(value)))}
		}
		for _, h := range hs {
			c := core.CanonicalHeader(h.Name())
			switch c {
			case "via", "from", "to", "call-id", "cseq":
				if c != "via" && have[c] {
					continue
				}
				have[c] = true
				res.AppendHeader(h)
				if v, ok := h.(*sip.ViaHeader); ok && dst.Host == "" {
					dst = core.ViaTarget(v)
				}
			}
		}
	}
	if !have["via"] || !have["call-id"] || !have["cseq"] || !have["from"] || !have["to"] {
		return nil, core.Target{}, false
	}
	if sh := core.ServerHeader(); sh != "" {
		res.AppendHeader(sip.NewHeader("Server", sh))
	}
	cl := sip.ContentLengthHeader(0)
	res.AppendHeader(&cl)
	_ = perr
	return res, dst, true
}

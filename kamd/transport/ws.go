package transport

import (
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
	"github.com/kamgo/kamgo/modules/core"
)

// SIP over WebSocket (RFC 7118): every frame, text or binary, is one SIP
// message; the "sip" subprotocol is negotiated when the client offers it.
func (t *Transport) serveWS(ln net.Listener, sock core.Socket) {
	defer t.wg.Done()
	up := websocket.Upgrader{
		Subprotocols:     []string{"sip"},
		HandshakeTimeout: 10 * time.Second,
		// SIP phones and browsers connect from any origin, as with Kamailio's websocket module.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ws, err := up.Upgrade(w, r, nil)
			if err != nil {
				return // the upgrader has answered
			}
			ws.SetReadLimit(65535)
			sc := t.register(ws.UnderlyingConn(), sock.Proto, sock, ws, nil)
			t.wg.Add(1)
			t.wsReadLoop(sc)
		}),
	}
	go func() {
		for !t.closing.Load() {
			time.Sleep(100 * time.Millisecond)
		}
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !t.closing.Load() {
		t.log.Error("websocket listener stopped", "socket", sock.String(), "err", err)
	}
}

func (t *Transport) wsReadLoop(sc *streamConn) {
	defer t.wg.Done()
	defer t.unregister(sc)
	for {
		// Idle until a frame starts; from its first byte the whole message
		// gets tcp_msg_read_timeout, as on TCP.
		idle := t.cfg.IdleTimeout
		if sc.g != nil && sc.g.msgs.Load() == 0 {
			idle = min(idle, t.cfg.MsgDataTimeout)
		}
		_ = sc.ws.SetReadDeadline(time.Now().Add(idle))
		_, r, err := sc.ws.NextReader()
		if err == nil {
			_ = sc.ws.SetReadDeadline(time.Now().Add(t.cfg.MsgReadTimeout))
			var data []byte
			data, err = io.ReadAll(r)
			if err == nil {
				if len(data) < 4 || isKeepalive(data) {
					sc.g.seen(false)
					continue
				}
				sc.g.seen(true)
				t.enqueue(job{data: data, sock: sc.sock, proto: sc.proto, remote: sc.remote, connID: sc.id, at: time.Now()})
				continue
			}
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.connTimeout.Inc()
			t.log.Debug("closing websocket: idle or message not complete in time", "remote", sc.remote)
		}
		return
	}
}

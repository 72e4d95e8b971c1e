package transport

import (
	"errors"
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
			if t.nconns.Load() >= int64(t.cfg.MaxConns) {
				http.Error(w, "too many connections", http.StatusServiceUnavailable)
				return
			}
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
		_ = sc.ws.SetReadDeadline(time.Now().Add(t.cfg.IdleTimeout))
		_, data, err := sc.ws.ReadMessage()
		if err != nil {
			return
		}
		if len(data) < 4 || isKeepalive(data) {
			continue
		}
		t.enqueue(job{data: data, sock: sc.sock, proto: sc.proto, remote: sc.remote, connID: sc.id, at: time.Now()})
	}
}

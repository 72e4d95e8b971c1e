package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/kamgo/kamgo/modules/core"
)

// selfSigned is a throwaway certificate for 127.0.0.1.
func selfSigned(t testing.TB) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kamd test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
}

// TestTLSStalledHandshakeClosed: a TLS client that starts a handshake and
// stalls is closed after tcp_msg_read_timeout; the gate counts TLS
// connections like TCP ones (tcp_accept_iplimit).
func TestTLSStalledHandshakeClosed(t *testing.T) {
	tr, socks := startCfg(t, Config{TLSConfig: selfSigned(t), MsgReadTimeout: time.Second, MsgDataTimeout: time.Minute, IdleTimeout: time.Minute, MaxConnsPerIP: 2},
		&echoHandler{}, core.Socket{Proto: "tls", IP: "127.0.0.1"})
	c := dialFromIP(t, "127.0.0.1", addr(socks[0]))
	_, _ = c.Write([]byte{0x16, 0x03, 0x01, 0x00, 0x80}) // a ClientHello record header, then nothing
	if !closedByPeer(c, 5*time.Second) {
		t.Fatal("a stalled TLS handshake outlived tcp_msg_read_timeout")
	}
	// A real client still gets through; a third from the address does not.
	ok1, err := tls.Dial("tcp", addr(socks[0]), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ok1.Close()
	if s := options(t, ok1, 1); s != "SIP/2.0 200 OK tls" {
		t.Fatalf("TLS client: %q", s)
	}
	_ = dialFromIP(t, "127.0.0.1", addr(socks[0]))
	waitGate(t, tr, 2)
	third := dialFromIP(t, "127.0.0.1", addr(socks[0]))
	if !closedByPeer(third, 5*time.Second) {
		t.Fatal("a 3rd TLS connection from one address was kept with tcp_accept_iplimit 2")
	}
}

// TestWSSlowMessageClosed: a WebSocket message dripped one byte per
// 200 ms (one frame each) must be complete within tcp_msg_read_timeout.
func TestWSSlowMessageClosed(t *testing.T) {
	tr, socks := startCfg(t, Config{MsgReadTimeout: time.Second, IdleTimeout: time.Minute}, &echoHandler{}, core.Socket{Proto: "ws", IP: "127.0.0.1"})
	d := websocket.Dialer{Subprotocols: []string{"sip"}, WriteBufferSize: 1}
	ws, _, err := d.Dial("ws://"+addr(socks[0])+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	// A whole message is answered.
	if err := ws.WriteMessage(websocket.TextMessage, []byte(request("OPTIONS", "WS 127.0.0.1:1", 1))); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, b, err := ws.ReadMessage(); err != nil || !strings.HasPrefix(string(b), "SIP/2.0 200 OK ws") {
		t.Fatalf("reply %q, %v", b, err)
	}
	w, err := ws.NextWriter(websocket.TextMessage)
	if err != nil {
		t.Fatal(err)
	}
	msg := request("OPTIONS", "WS 127.0.0.1:1", 2)
	closed := false
	for i := 0; i < len(msg)/2 && !closed; i++ {
		if _, err := w.Write([]byte{msg[i]}); err != nil {
			closed = true
		}
		time.Sleep(200 * time.Millisecond)
		if tr.Conns() == 0 {
			closed = true
		}
	}
	if !closed {
		t.Fatal("a WebSocket message dripping one byte per 200 ms was still read after tcp_msg_read_timeout")
	}
	if tr.connTimeout.Value() != 1 {
		t.Errorf("tcp:con_timeout = %d, want 1 (closed by the deadline)", tr.connTimeout.Value())
	}
}

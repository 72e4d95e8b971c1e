package tests

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kamgo/kamgo/rpc"
)

// selfSigned writes a certificate for 127.0.0.1 and returns its paths and pool.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kamd test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	kb, _ := x509.MarshalECPrivateKey(key)
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestRegisterOverTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	tlsPort := freePort(t)
	k := startKamd(t, `
def ksr_request_route():
    if KSR.is_REGISTER() and KSR.is_TLS() and KSR.pv.get("$pr") == "tls":
        KSR.sl.send_reply(200, "OK")
    else:
        KSR.sl.send_reply(403, "TLS only")
`, "-l", "tls:127.0.0.1:"+strconv.Itoa(tlsPort), "--tls-cert", certFile, "--tls-key", keyFile)
	k.WaitLog(t, "listening on tls:127.0.0.1:"+strconv.Itoa(tlsPort), 5*time.Second)

	conn, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(tlsPort), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("TLS handshake with kamd: %v", err)
	}
	defer conn.Close()
	req := buildRequest(conn.LocalAddr().String(), reqSpec{Method: "REGISTER", RURI: "sip:127.0.0.1", Transport: "TLS"})
	if _, err := conn.Write(req); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("no reply over TLS: %v\n%s", err, k.Log())
	}
	if strings.TrimSpace(line) != "SIP/2.0 200 OK" {
		t.Fatalf("REGISTER over TLS: got %q, want SIP/2.0 200 OK", line)
	}
}

func TestTLSListenerWithoutCertificateFails(t *testing.T) {
	stdout, stderr, code := runKamd(t, "-l", "tls:127.0.0.1:"+strconv.Itoa(freePort(t)), "--rpc", "off", "--db", filepath.Join(t.TempDir(), "x.db"))
	if code == 0 || !strings.Contains(stderr, "no TLS certificate") {
		t.Fatalf("kamd with a tls listener and no certificate: exit %d, stdout %q, stderr %q; want a clear error", code, stdout, stderr)
	}
}

// TestRPCOverTLS: with --rpc-tls-cert/--rpc-tls-key kamd's RPC speaks TLS;
// kamctl reaches it over wss:// and https:// with --ca (or -k), and refuses
// a certificate it cannot verify.
func TestRPCOverTLS(t *testing.T) {
	cert, key, pool := selfSigned(t)
	k := startRPCKamd(t, rpcKamdOpts{script: func(int) string { return markerScript("tls") }, args: []string{"--rpc-tls-cert", cert, "--rpc-tls-key", key}})
	rp := strconv.Itoa(k.RPCPort)
	for _, url := range []string{"wss://127.0.0.1:" + rp + "/ws", "https://127.0.0.1:" + rp + "/RPC"} {
		r := runKamctl(t, nil, "-s", url, "--ca", cert, "core.version")
		if r.Code != 0 || !strings.Contains(r.Stdout, "kamd ") {
			t.Errorf("kamctl over %s with --ca: %s", url, r)
		}
		if r := runKamctl(t, nil, "-s", url, "-k", "core.uptime"); r.Code != 0 {
			t.Errorf("kamctl over %s with -k: %s", url, r)
		}
		if r := runKamctl(t, nil, "-s", url, "core.version"); r.Code == 0 || !strings.Contains(r.Stderr, "certificate") {
			t.Errorf("kamctl over %s trusted an unknown certificate: %s", url, r)
		}
	}
	// Plain ws:// to a TLS port does not work.
	if r := runKamctl(t, nil, "-s", "ws://127.0.0.1:"+rp+"/ws", "core.version"); r.Code == 0 {
		t.Errorf("plain ws:// reached the TLS RPC port: %s", r)
	}
	// Events over wss: a reload's script event arrives.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := rpc.DialTLS(ctx, "wss://127.0.0.1:"+rp+"/ws", "", &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	evs, err := cl.Subscribe(ctx, "script")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Call(ctx, "app_starlark.reload", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-evs:
		if ev.Topic != "script" {
			t.Errorf("event %+v, want topic script", ev)
		}
	case <-ctx.Done():
		t.Error("no script event over wss")
	}
	k.Alive(t)
}

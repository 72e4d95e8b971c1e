package tests

import (
	"bufio"
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

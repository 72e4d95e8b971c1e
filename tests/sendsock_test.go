package tests

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

const sendSockScript = `
def ksr_request_route():
    KSR.corex.set_send_socket(KSR.hdr.get("X-Sock"))
    if KSR.pv.get("$rU") == "sl":
        KSR.sl.sl_send_reply(403, "Forbidden")
        return
    KSR.setdsturi(KSR.hdr.get("X-Du"))
    KSR.tm.t_relay()
`

// TestSendSocketOnTheWire: with KSR.corex.set_send_socket, a relayed
// request, the reply relayed back and an sl reply really leave kamd from
// the chosen one of its two UDP sockets, and the branch's Via names it.
func TestSendSocketOnTheWire(t *testing.T) {
	second := freePort(t)
	k := startKamd(t, sendSockScript, "-l", "udp:127.0.0.1:"+strconv.Itoa(second))
	k.WaitLog(t, "listening on udp:127.0.0.1:"+strconv.Itoa(second), 10*time.Second)
	caller, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Close()
	callee, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer callee.Close()
	read := func(c *net.UDPConn) (string, *net.UDPAddr) {
		t.Helper()
		buf := make([]byte, 65535)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		return string(buf[:n]), from
	}
	cp := caller.LocalAddr().(*net.UDPAddr).Port
	req := func(user string) string {
		return fmt.Sprintf("OPTIONS sip:%s@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-%s;rport\r\n"+
			"Max-Forwards: 70\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:%s@x>\r\nCall-ID: ss-%s\r\nCSeq: 1 OPTIONS\r\n"+
			"X-Sock: udp:127.0.0.1:%d\r\nX-Du: sip:%s\r\nContent-Length: 0\r\n\r\n",
			user, cp, user, user, user, second, callee.LocalAddr().String())
	}
	if _, err := caller.WriteToUDP([]byte(req("bob")), k.UDPAddr()); err != nil {
		t.Fatal(err)
	}
	got, from := read(callee)
	if from.Port != second {
		t.Errorf("relayed request from port %d, want %d", from.Port, second)
	}
	via := fmt.Sprintf("Via: SIP/2.0/UDP 127.0.0.1:%d;branch=", second)
	if !strings.Contains(got, via) {
		t.Errorf("relayed request has no Via for the chosen socket:\n%s", got)
	}
	// The callee answers to kamd's Via (the chosen socket).
	var vias []string
	for _, l := range strings.Split(got, "\r\n") {
		if strings.HasPrefix(l, "Via:") || strings.HasPrefix(l, "From:") || strings.HasPrefix(l, "To:") ||
			strings.HasPrefix(l, "Call-ID:") || strings.HasPrefix(l, "CSeq:") {
			vias = append(vias, l)
		}
	}
	res := "SIP/2.0 200 OK\r\n" + strings.Join(vias, "\r\n") + "\r\nContent-Length: 0\r\n\r\n"
	if _, err := callee.WriteToUDP([]byte(res), from); err != nil {
		t.Fatal(err)
	}
	for {
		got, from = read(caller)
		if !strings.HasPrefix(got, "SIP/2.0 100") {
			break
		}
		if from.Port != second {
			t.Errorf("100 from port %d, want %d", from.Port, second)
		}
	}
	if !strings.HasPrefix(got, "SIP/2.0 200") || from.Port != second {
		t.Errorf("relayed reply from port %d, want %d:\n%s", from.Port, second, got)
	}
	// An sl reply leaves from it too.
	if _, err := caller.WriteToUDP([]byte(req("sl")), k.UDPAddr()); err != nil {
		t.Fatal(err)
	}
	got, from = read(caller)
	if !strings.HasPrefix(got, "SIP/2.0 403") || from.Port != second {
		t.Errorf("sl reply from port %d, want %d:\n%s", from.Port, second, got)
	}
}

package transport

import (
	"net"
	"net/netip"
	"strconv"
	"testing"

	"github.com/kamgo/kamgo/modules/core"
)

// TestSockKey: the allocation-free sockKey writes what the string
// concatenation it replaced wrote.
func TestSockKey(t *testing.T) {
	ref := func(s core.Socket) string {
		ip := core.BareHost(s.IP)
		if a, err := netip.ParseAddr(ip); err == nil {
			ip = a.Unmap().String()
		}
		return s.Proto + ":" + net.JoinHostPort(ip, strconv.Itoa(s.Port))
	}
	for _, s := range []core.Socket{
		{Proto: "udp", IP: "127.0.0.1", Port: 5060},
		{Proto: "tcp", IP: "::1", Port: 5061},
		{Proto: "tls", IP: "[2001:db8::1]", Port: 443},
		{Proto: "udp", IP: "::ffff:10.0.0.1", Port: 0},
		{Proto: "udp", IP: "[::FFFF:7f00:1]", Port: 65535},
		{Proto: "ws", IP: "fe80::1%eth0", Port: 80},
		{Proto: "udp", IP: "sip.example.com", Port: 5060},
		{Proto: "udp", IP: "odd:name", Port: 1},
		{Proto: "", IP: "", Port: 0},
		{Proto: "udp", IP: "0.0.0.0", Port: 5060, Advertise: "203.0.113.1"},
	} {
		if got, want := sockKey(s), ref(s); got != want {
			t.Errorf("sockKey(%+v) = %q, want %q", s, got, want)
		}
	}
}

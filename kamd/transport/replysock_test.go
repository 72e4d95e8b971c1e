package transport

import (
	"testing"

	"github.com/kamgo/kamgo/modules/core"
)

// A UDP reply leaves from the socket its request arrived on, as in
// Kamailio, not from the first listen socket (a NAT, a client checking
// the source, or a P-CSCF's protected port would drop it).
func TestUDPReplyFromArrivalSocket(t *testing.T) {
	_, _, env := startLocal(t, core.Socket{Proto: "udp", IP: "127.0.0.1"}, core.Socket{Proto: "udp", IP: "127.0.0.1"})
	socks := env.Sockets()
	if len(socks) != 2 {
		t.Fatalf("sockets %v", socks)
	}
	peer := udpClient(t)
	for i, s := range socks {
		from, reply, err := udpAsk(peer, s, i+1)
		if err != nil {
			t.Fatalf("request to %s: %v", s, err)
		}
		if from.Port != s.Port {
			t.Errorf("reply to a request on %s came from port %d (%.20q)", s, from.Port, reply)
		}
	}
	// A runtime socket answers from itself too.
	rt := open(t, env, "udp")
	if from, _, err := udpAsk(peer, rt, 3); err != nil || from.Port != rt.Port {
		t.Errorf("reply via runtime socket %s from %v (%v)", rt, from, err)
	}
}

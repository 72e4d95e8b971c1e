package transport

import (
	"net"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/kamgo/kamgo/modules/core"
)

// A UDP reply leaves from the socket its request arrived on, as in
// Kamailio, not from the first listen socket (a NAT, a client checking
// the source, or a P-CSCF's protected port would drop it).
func TestUDPReplyFromArrivalSocket(t *testing.T) {
	tr, _, env := startLocal(t, core.Socket{Proto: "udp", IP: "127.0.0.1"}, core.Socket{Proto: "udp", IP: "127.0.0.1"})
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
	// Closed before the reply went out (a P-CSCF removing a UE's SAs and
	// protected ports on a failed Security-Verify, then answering 494):
	// the reply still leaves, from the first socket.
	if err := env.CloseSocket(rt); err != nil {
		t.Fatal(err)
	}
	pa := peer.LocalAddr().(*net.UDPAddr)
	res := sip.NewResponse(494, "Security Agreement Required")
	if err := tr.Send(&core.Outgoing{Kind: core.OutReply, Msg: res, Dst: core.Target{Proto: "udp", Host: "127.0.0.1", Port: pa.Port}, Arrival: &rt}); err != nil {
		t.Fatalf("reply after its arrival socket closed: %v", err)
	}
	_ = peer.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 4096)
	if _, src, err := peer.ReadFromUDP(buf); err != nil || src.Port != socks[0].Port {
		t.Errorf("reply after close from %v (%v), want the first socket %d", src, err, socks[0].Port)
	}
}

package transport

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

// errRefused marks a datagram the door refuses (core.WireProblem).
var errRefused = errors.New("refused at the door")

// udpBatch is how many datagrams one read may return (recvmmsg on Linux).
const udpBatch = 16

// udpInline is the largest batch a reader handles itself when the workers
// are idle: a few datagrams in a row are cheaper to run here than to hand
// over; more mean a backlog, which the workers share.
const udpInline = 4

// udpLoop reads datagrams in batches. When a read returns a few datagrams
// (udpInline) and no worker has anything queued or running, the reader
// handles them itself, in order: at light and moderate load a message goes socket →
// parse → script → socket without waking another goroutine (that handoff
// cost more CPU than parsing and routing together). Otherwise — a backlog,
// i.e. kamd is busy — the messages go to the per-peer worker queues as
// before, which keeps each peer's messages in order, spreads peers over
// the CPUs and answers 503 when a queue is full. Handling inline only when
// the workers are idle keeps the per-peer order too: nothing from the
// same peer can be waiting or running elsewhere.
func (t *Transport) udpLoop(u *udpSock) {
	defer t.wg.Done()
	r := newBatchReader(u.conn)
	parser := sip.NewParser()
	var ips ipCache
	for {
		n, err := r.read()
		if err != nil {
			if t.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		now := time.Now()
		inline := n <= udpInline && t.inflight.Load() == 0
		for i := 0; i < n; i++ {
			data, src := r.msg(i)
			if len(data) < 4 || isKeepalive(data) {
				continue // CRLF keepalives and runts
			}
			j := job{sock: u.sock, proto: "udp", srcIP: ips.str(src.Addr()), srcPort: int(src.Port()), at: now}
			j.size = len(data)
			if inline {
				// The parser copies what it keeps, so the read buffer may
				// be reused once process returns.
				j.data = data
				if !t.closing.Load() {
					t.process(parser, j)
				}
				continue
			}
			// A backlog: parse here (the read buffer is reused) and let
			// the workers route, spread by Call-ID (see peerHash).
			msg, err := parser.ParseSIP(data)
			if err == nil {
				if code, _ := core.WireProblem(msg, data, true); code != 0 {
					err = errRefused
				}
			}
			if err != nil {
				// The error path (a 400 or a drop, from the datagram's
				// bytes) runs here, while they are still in the buffer.
				j.data = data
				t.process(parser, j)
				continue
			}
			if req, ok := msg.(*sip.Request); ok && t.shedInvite(j, req) {
				continue // tm is full: 503 from the reader, no queue slot
			}
			j.msg = msg
			t.enqueue(j)
		}
	}
}

// ipCache keeps the strings of the last source addresses seen, so a busy
// peer does not cost an allocation per datagram.
type ipCache struct {
	addr [4]netip.Addr
	strs [4]string
	next int
}

func (c *ipCache) str(a netip.Addr) string {
	a = a.Unmap()
	for i := range c.addr {
		if c.addr[i] == a && c.strs[i] != "" {
			return c.strs[i]
		}
	}
	s := a.String()
	c.addr[c.next], c.strs[c.next] = a, s
	c.next = (c.next + 1) % len(c.addr)
	return s
}

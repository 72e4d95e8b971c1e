package transport

import (
	"net"
	"net/netip"
)

// reader returns datagrams in batches: read fills up to udpBatch, msg(i)
// is valid until the next read.
type reader interface {
	read() (int, error)
	msg(i int) ([]byte, netip.AddrPort)
}

// singleReader is the portable one-datagram-per-read fallback.
type singleReader struct {
	c   *net.UDPConn
	buf []byte
	n   int
	src netip.AddrPort
}

func (r *singleReader) read() (int, error) {
	n, src, err := r.c.ReadFromUDPAddrPort(r.buf)
	if err != nil {
		return 0, err
	}
	r.n, r.src = n, src
	return 1, nil
}

func (r *singleReader) msg(int) ([]byte, netip.AddrPort) { return r.buf[:r.n], r.src }

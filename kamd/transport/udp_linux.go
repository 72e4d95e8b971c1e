package transport

import (
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsghdr is struct mmsghdr of recvmmsg(2).
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// batchReader reads up to udpBatch datagrams per system call with
// recvmmsg, waiting in Go's netpoller when none is queued.
type batchReader struct {
	rc    syscall.RawConn
	hdrs  [udpBatch]mmsghdr
	iovs  [udpBatch]unix.Iovec
	names [udpBatch]unix.RawSockaddrInet6
	bufs  [udpBatch][]byte
	n     int
	err   error
	fn    func(fd uintptr) bool
}

func newBatchReader(c *net.UDPConn) reader {
	rc, err := c.SyscallConn()
	if err != nil {
		return &singleReader{c: c, buf: make([]byte, 65535)}
	}
	r := &batchReader{rc: rc}
	for i := range r.bufs {
		r.bufs[i] = make([]byte, 65535)
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(len(r.bufs[i]))
		r.hdrs[i].hdr.Iov = &r.iovs[i]
		r.hdrs[i].hdr.SetIovlen(1)
		r.hdrs[i].hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
	}
	r.fn = func(fd uintptr) bool {
		for i := range r.hdrs {
			r.hdrs[i].hdr.Namelen = uint32(unsafe.Sizeof(r.names[i]))
			r.hdrs[i].hdr.Flags = 0
		}
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), udpBatch, unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EAGAIN || e == unix.EWOULDBLOCK {
			return false // nothing queued: wait in the netpoller
		}
		if e == unix.EINTR {
			return false
		}
		r.n, r.err = int(n), nil
		if e != 0 {
			r.n, r.err = 0, e
		}
		return true
	}
	return r
}

func (r *batchReader) read() (int, error) {
	if err := r.rc.Read(r.fn); err != nil {
		return 0, err
	}
	return r.n, r.err
}

func (r *batchReader) msg(i int) ([]byte, netip.AddrPort) {
	data := r.bufs[i][:r.hdrs[i].len]
	sa := &r.names[i]
	switch sa.Family {
	case unix.AF_INET:
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		p := (*[2]byte)(unsafe.Pointer(&s4.Port))
		return data, netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return data, netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(p[0])<<8|uint16(p[1]))
	}
	return data, netip.AddrPort{}
}

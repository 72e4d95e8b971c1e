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
		// RawSyscall: the socket is non-blocking and MSG_DONTWAIT is set,
		// so the call cannot block; skipping entersyscall/exitsyscall
		// saves the scheduler (and sysmon) work on every read.
		n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), udpBatch, unix.MSG_DONTWAIT, 0, 0)
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

// udpSender sends datagrams with a raw, non-blocking sendto(2): like
// recvmmsg above, it cannot block, so it skips the runtime's syscall
// bookkeeping; EAGAIN (a full socket buffer) waits in the netpoller.
type udpSender struct {
	rc   syscall.RawConn
	v4   bool
	data []byte
	sa4  unix.RawSockaddrInet4
	sa6  unix.RawSockaddrInet6
	err  error
	fn   func(fd uintptr) bool
}

func newUDPSender(c *net.UDPConn, v4 bool) *udpSender {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	s := &udpSender{rc: rc, v4: v4}
	s.sa4.Family = unix.AF_INET
	s.sa6.Family = unix.AF_INET6
	s.fn = func(fd uintptr) bool {
		var sa unsafe.Pointer
		var salen uintptr
		if s.v4 {
			sa, salen = unsafe.Pointer(&s.sa4), unsafe.Sizeof(s.sa4)
		} else {
			sa, salen = unsafe.Pointer(&s.sa6), unsafe.Sizeof(s.sa6)
		}
		var p unsafe.Pointer
		if len(s.data) > 0 {
			p = unsafe.Pointer(&s.data[0])
		}
		_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(p), uintptr(len(s.data)), unix.MSG_DONTWAIT, uintptr(sa), salen)
		if e == unix.EAGAIN || e == unix.EWOULDBLOCK {
			return false
		}
		s.err = nil
		if e != 0 {
			s.err = e
		}
		return true
	}
	return s
}

// send writes one datagram; ok is false when this sender cannot reach
// the address family (the caller falls back to the net package).
func (s *udpSender) send(data []byte, to netip.AddrPort) (ok bool, err error) {
	ip := to.Addr()
	if s == nil || ip.Is4() != s.v4 {
		return false, nil
	}
	port := to.Port()
	if s.v4 {
		s.sa4.Addr = ip.As4()
		p := (*[2]byte)(unsafe.Pointer(&s.sa4.Port))
		p[0], p[1] = byte(port>>8), byte(port)
	} else {
		s.sa6.Addr = ip.As16()
		p := (*[2]byte)(unsafe.Pointer(&s.sa6.Port))
		p[0], p[1] = byte(port>>8), byte(port)
	}
	s.data = data
	if err := s.rc.Write(s.fn); err != nil {
		s.data = nil
		return true, err
	}
	s.data = nil
	return true, s.err
}

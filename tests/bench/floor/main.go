// Command floor is the cheapest REGISTER responder this machine can run: one
// OS thread blocked in recvfrom(2), a 200 OK made by copying the request's
// Via, From, To, Call-ID and CSeq lines, one sendto(2). No parser, no script,
// no scheduler. compare.sh's CPU per call for it is the floor that the
// kernel (two system calls, the loopback delivery, one wakeup) sets for
// every proxy on this box; docs/performance.md compares kamd and Kamailio
// with it. Not a SIP server: it answers anything with 200.
//
//	go run ./tests/bench/floor -l 127.0.0.1:5060
package main

import (
	"bytes"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"syscall"
)

func main() {
	addr := flag.String("l", "127.0.0.1:5060", "udp address to answer on")
	flag.Parse()
	ap, err := netip.ParseAddrPort(*addr)
	if err != nil || !ap.Addr().Is4() {
		fmt.Fprintln(os.Stderr, "floor: -l wants an IPv4 addr:port")
		os.Exit(2)
	}
	runtime.LockOSThread()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	buf := make([]byte, 65535)
	out := make([]byte, 0, 4096)
	keep := [][]byte{[]byte("via:"), []byte("from:"), []byte("to:"), []byte("call-id:"), []byte("cseq:"), []byte("v:"), []byte("f:"), []byte("t:"), []byte("i:")}
	for {
		n, from, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil || n < 4 {
			continue
		}
		out = append(out[:0], "SIP/2.0 200 OK\r\n"...)
		for _, line := range bytes.Split(buf[:n], []byte("\r\n"))[1:] {
			if len(line) == 0 {
				break
			}
			for _, k := range keep {
				if len(line) >= len(k) && bytes.EqualFold(line[:len(k)], k) {
					out = append(append(out, line...), "\r\n"...)
					break
				}
			}
		}
		out = append(out, "Content-Length: 0\r\n\r\n"...)
		_ = syscall.Sendto(fd, out, 0, from)
	}
}

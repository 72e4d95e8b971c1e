//go:build !linux

package transport

import (
	"net"
	"net/netip"
)

func newBatchReader(c *net.UDPConn) reader { return &singleReader{c: c, buf: make([]byte, 65535)} }

type udpSender struct{}

func newUDPSender(*net.UDPConn, bool) *udpSender { return nil }

func (s *udpSender) send([]byte, netip.AddrPort) (bool, error) { return false, nil }

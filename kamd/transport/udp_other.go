//go:build !linux

package transport

import "net"

func newBatchReader(c *net.UDPConn) reader { return &singleReader{c: c, buf: make([]byte, 65535)} }

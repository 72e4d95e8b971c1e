//go:build !linux

package transport

import "syscall"

// reuseControl: only Linux sets SO_REUSEPORT here; elsewhere dialling from
// a listening port may fail with "address in use".
func reuseControl(_, _ string, _ syscall.RawConn) error { return nil }

package main

import (
	"strings"
	"testing"

	"github.com/kamgo/kamgo/rpc"
)

// TestFallbackToHTTPAtTheCap: with kamd's websockets all taken, kamctl makes
// its call over POST /RPC (watch, which needs a websocket, fails clearly).
func TestFallbackToHTTPAtTheCap(t *testing.T) {
	_, addr := startServer(t, rpc.Config{MaxConns: 1})
	held, err := rpc.Dial("ws://"+addr+"/ws", "")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	r := kamctl(t, nil, "-s", "ws://"+addr+"/ws", "--json", "uac.reg_dump")
	if r.code != 0 || !strings.Contains(r.stdout, `"l_uuid": "1001"`) || !strings.Contains(r.stderr, "/RPC") {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}
	r = kamctl(t, nil, "-s", "ws://"+addr+"/ws", "watch")
	if r.code != 2 || !strings.Contains(r.stderr, "too many") {
		t.Fatalf("watch: exit %d, stderr %s", r.code, r.stderr)
	}
}

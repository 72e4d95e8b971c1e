package core_test

import (
	"context"
	"strings"
	"testing"

	"github.com/kamgo/kamgo/modules/core"
)

// The socket list is copied on write: a slice a reader holds never changes
// under it, and RemoveSocket matches addresses however they are written.
func TestEnvSocketList(t *testing.T) {
	env := core.NewEnv(nil)
	if env.Sockets() != nil {
		t.Fatalf("a new Env lists %v", env.Sockets())
	}
	in := []core.Socket{{Proto: "udp", IP: "127.0.0.1", Port: 5060}}
	env.SetSockets(in)
	in[0].Port = 1 // the caller's slice is not the Env's
	held := env.Sockets()
	env.AddSocket(core.Socket{Proto: "udp", IP: "::1", Port: 6100})
	env.AddSocket(core.Socket{Proto: "tcp", IP: "::1", Port: 6100})
	if len(held) != 1 || held[0].Port != 5060 {
		t.Errorf("a held list changed: %v", held)
	}
	if !env.IsMyself("[::1]", 6100) {
		t.Errorf("an added socket is not myself")
	}
	for _, c := range []struct {
		s    core.Socket
		want bool
	}{
		{core.Socket{Proto: "udp", IP: "0:0:0:0:0:0:0:1", Port: 6100}, true},
		{core.Socket{Proto: "udp", IP: "::1", Port: 6100}, false}, // gone already
		{core.Socket{Proto: "udp", IP: "::1", Port: 6101}, false},
		{core.Socket{Proto: "tls", IP: "::1", Port: 6100}, false},
	} {
		if got := env.RemoveSocket(c.s); got != c.want {
			t.Errorf("RemoveSocket(%v) = %v, want %v", c.s, got, c.want)
		}
	}
	got := env.Sockets()
	if len(got) != 2 || got[0].Port != 5060 || got[1].Proto != "tcp" {
		t.Errorf("left %v", got)
	}
	if len(held) != 1 {
		t.Errorf("a held list changed: %v", held)
	}
	// Without a SocketManager (a bare Env) opening is a clear error.
	if _, err := env.OpenSocket(context.Background(), core.Socket{Proto: "udp", IP: "127.0.0.1"}); err == nil || !strings.Contains(err.Error(), "no socket manager") {
		t.Errorf("OpenSocket without a manager: %v", err)
	}
	if err := env.CloseSocket(core.Socket{Proto: "udp", IP: "127.0.0.1"}); err == nil {
		t.Errorf("CloseSocket without a manager worked")
	}
}

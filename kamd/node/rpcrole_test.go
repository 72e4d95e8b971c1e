package node_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/kamgo/kamgo/kamd/node"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/rpc"
)

// A module handler cannot import rpc; the adapter hands it the caller's
// role through core.RPCCallerIsAdmin (uac shows secrets only to admins).
func TestAdaptRPCPassesTheRole(t *testing.T) {
	s := rpc.NewServer(rpc.Config{})
	m := node.AdaptRPC(core.RPCMethod{Name: "t.who", ReadOnly: true,
		Handler: func(ctx context.Context, _ core.RPCArgs) (any, error) {
			return map[string]bool{"admin": core.RPCCallerIsAdmin(ctx)}, nil
		}})
	if err := s.Register(m); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		role rpc.Role
		want bool
	}{{rpc.RoleAdmin, true}, {rpc.RoleReadOnly, false}} {
		raw, err := s.Call(context.Background(), tc.role, "t.who")
		if err != nil {
			t.Fatal(err)
		}
		var got struct{ Admin bool }
		if err := json.Unmarshal(raw, &got); err != nil || got.Admin != tc.want {
			t.Errorf("role %s: admin=%s, want %v", tc.role, raw, tc.want)
		}
	}
	if core.RPCCallerIsAdmin(context.Background()) {
		t.Error("no role set must not be admin")
	}
}

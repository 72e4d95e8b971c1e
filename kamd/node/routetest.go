package node

import (
	"context"
	"encoding/json"

	"github.com/kamgo/kamgo/rpc"
	"github.com/kamgo/kamgo/starlark/routetest"
)

// RouteTest is the wiring route tests run on (routetest.Wiring): the same
// node as the daemon's, with the harness's recorder for a transport, its
// fixed clock and log capture, its own database file, and RPC calls made
// in process (as an admin) instead of over a socket.
func RouteTest(c routetest.NodeConfig) (*routetest.Node, error) {
	n, err := New(Options{Path: c.Path, Src: c.Src, Log: c.Log, DBPath: c.DBPath, MaxSteps: c.MaxSteps,
		Sender: c.Sender, Clock: c.Clock, OnEvent: c.OnEvent, RPCAddr: "off", Version: "route-test"})
	if err != nil {
		return nil, err
	}
	if err := n.Init(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := n.Start(ctx); err != nil {
		cancel()
		return nil, err
	}
	return &routetest.Node{Env: n.Env, Engine: n.Engine,
		Call: func(ctx context.Context, method string, params ...any) (json.RawMessage, error) {
			return n.RPC.Call(ctx, rpc.RoleAdmin, method, params...)
		},
		Stop: func() { cancel(); n.Stop() },
	}, nil
}

package core

import "context"

type rpcRoleKey struct{}

// WithRPCAdmin records in ctx whether the RPC caller has the admin role.
// The RPC server's adapter (kamd/node) sets it, since modules may not
// import rpc: a handler that shows secrets only to admins reads it with
// RPCCallerIsAdmin.
func WithRPCAdmin(ctx context.Context, admin bool) context.Context {
	return context.WithValue(ctx, rpcRoleKey{}, admin)
}

// RPCCallerIsAdmin reports whether the caller of the running RPC handler
// has the admin role; false when nothing set it (the safe answer).
func RPCCallerIsAdmin(ctx context.Context) bool {
	a, _ := ctx.Value(rpcRoleKey{}).(bool)
	return a
}

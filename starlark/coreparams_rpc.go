package starlark

import "github.com/kamgo/kamgo/modules/core"

// The RPC server's resource limits (docs/rpc.md "Limits"); kamd reads them
// at start and checks their values.
var rpcLimitParams = []string{
	"rpc_max_response_bytes", "rpc_max_batch_bytes", "rpc_memory_budget",
	"rpc_max_conns", "rpc_max_conns_per_ip", "rpc_admin_reserve", "rpc_idle_timeout", "rpc_workers",
}

func init() {
	for _, n := range rpcLimitParams {
		coreParams[n] = core.ArgInt
	}
}

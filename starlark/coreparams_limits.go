package starlark

import (
	"fmt"

	"github.com/kamgo/kamgo/modules/core"
)

// Core params of kamd's resource limits (docs/limits.md): stream
// connections (Kamailio's tcp_* names), the Go soft memory limit and the
// database check at start. kamd/node applies them at start.
var limitCoreParams = map[string]func(v core.Val) error{
	"tcp_max_connections":     positiveParam,
	"tcp_accept_iplimit":      nonNegativeParam, // 0: no limit
	"tcp_connection_lifetime": positiveParam,    // seconds
	"tcp_msg_read_timeout":    positiveParam,    // seconds
	"tcp_msg_data_timeout":    positiveParam,    // seconds
	"mem_soft_limit":          nonNegativeParam, // MB, 0: none
	"db_check":                nonNegativeParam, // 0: skip PRAGMA quick_check at start
	"procs_adaptive":          nonNegativeParam, // 0: always run on every P (kamd/procs)
}

func init() {
	for name := range limitCoreParams {
		coreParams[name] = core.ArgInt
	}
}

func positiveParam(v core.Val) error {
	if v.Int <= 0 {
		return fmt.Errorf("must be positive, got %d", v.Int)
	}
	return nil
}

func nonNegativeParam(v core.Val) error {
	if v.Int < 0 {
		return fmt.Errorf("must not be negative, got %d", v.Int)
	}
	return nil
}

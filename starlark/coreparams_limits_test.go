package starlark_test

import (
	"strings"
	"testing"

	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/starlark"
)

// TestLimitCoreParams: the resource-limit core params (docs/limits.md)
// are known ints, checked at load.
func TestLimitCoreParams(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`core_param("tcp_max_connections", 0)`, `core_param("tcp_max_connections"): must be positive`},
		{`core_param("tcp_msg_read_timeout", -1)`, `core_param("tcp_msg_read_timeout"): must be positive`},
		{`core_param("tcp_accept_iplimit", -1)`, `core_param("tcp_accept_iplimit"): must not be negative`},
		{`core_param("mem_soft_limit", "lots")`, `want int value`},
		{`core_param("db_check", -1)`, `must not be negative`},
		{`core_param("tcp_accept_iplimit", 0)` + "\n" + `core_param("tcp_connection_lifetime", 3605)` + "\n" +
			`core_param("tcp_msg_data_timeout", 5)` + "\n" + `core_param("mem_soft_limit", 0)` + "\n" + `core_param("db_check", 0)`, ""},
	} {
		eng := starlark.New(core.NewEnv(nil))
		p, err := eng.Load("s.star", []byte(tc.src+"\ndef ksr_request_route():\n    pass\n"))
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.src, err)
			} else if p.Config.CoreParams["tcp_connection_lifetime"].Int != 3605 {
				t.Errorf("tcp_connection_lifetime not recorded: %v", p.Config.CoreParams)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.src, err, tc.want)
		}
	}
}

// Package pvx is the part of Kamailio's pvx module that KEMI scripts need
// beyond KSR.pv: evaluating a format string with pseudo-variables.
package pvx

import (
	"github.com/kamgo/kamgo/modules/core"
)

func init() { core.Register(New) }

// New builds the pvx module.
func New(env *core.Env) *core.Module {
	return &core.Module{
		Name: "pvx",
		Doc:  "pseudo-variable helpers",
		Funcs: []core.Func{
			{Name: "evalx", Args: []core.ArgType{core.ArgStr, core.ArgStr}, Ret: core.RetInt,
				Doc: "(dst_pv, format) expand the $pv references in format (as xlog does) and store the string in dst_pv; 1. An unknown or read-only dst_pv is an error",
				Fn: func(m *core.Msg, a []core.Val) (core.Val, error) {
					pv, err := m.Env.ParsePV(a[0].Str)
					if err != nil {
						return core.Null, err
					}
					if err := pv.Set(m, core.Str(core.ExpandPV(m, a[1].Str))); err != nil {
						return core.Null, err
					}
					return core.Int(1), nil
				}},
		},
	}
}

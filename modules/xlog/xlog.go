// Package xlog is Kamailio's xlog module for KEMI: log lines with
// pseudo-variables expanded (KSR.info and friends print text as is, Q15).
package xlog

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/kamgo/kamgo/modules/core"
)

func init() { core.Register(New) }

// LevelAlert is above crit (core.LevelCrit).
const LevelAlert = core.LevelAlert

// ParseLevel accepts "L_ERR", "l_err", "err": the tree's one level map,
// core.ParseLogLevel.
func ParseLevel(s string) (slog.Level, bool) {
	l, err := core.ParseLogLevel(s)
	return l, err == nil
}

// Log expands the PVs of text on m and logs it with the script position.
func Log(m *core.Msg, level slog.Level, text string) {
	m.Env.Log.Log(nil, level, strings.TrimRight(core.ExpandPV(m, text), "\r\n"), "at", m.Pos())
}

// New builds the xlog module.
func New(env *core.Env) *core.Module {
	one := core.Int(1)
	lf := func(name string, level slog.Level) core.Func {
		return core.Func{Name: name, Args: []core.ArgType{core.ArgStr}, Ret: core.RetInt,
			Doc: "log at " + strings.TrimPrefix(name, "x") + " with $pv expansion (a trailing newline is trimmed); 1",
			Fn: func(m *core.Msg, a []core.Val) (core.Val, error) {
				Log(m, level, a[0].Str)
				return one, nil
			}}
	}
	return &core.Module{
		Name: "xlog",
		Doc:  "log lines with pseudo-variables expanded",
		Funcs: []core.Func{
			lf("xdbg", slog.LevelDebug), lf("xinfo", slog.LevelInfo), lf("xnotice", slog.LevelInfo),
			lf("xwarn", slog.LevelWarn), lf("xerr", slog.LevelError), lf("xcrit", core.LevelCrit),
			lf("xalert", LevelAlert),
			{Name: "xlog", Args: []core.ArgType{core.ArgStr, core.ArgStr}, Ret: core.RetInt,
				Doc: "(level, text) level L_DBG|L_INFO|L_NOTICE|L_WARN|L_ERR|L_CRIT|L_ALERT (the L_ prefix is optional); an unknown level is an error; 1",
				Fn: func(m *core.Msg, a []core.Val) (core.Val, error) {
					l, ok := ParseLevel(a[0].Str)
					if !ok {
						return core.Null, fmt.Errorf("xlog: unknown level %q (L_DBG, L_INFO, L_NOTICE, L_WARN, L_ERR, L_CRIT, L_ALERT)", a[0].Str)
					}
					Log(m, l, a[1].Str)
					return one, nil
				}},
		},
	}
}

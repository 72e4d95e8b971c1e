// Package tmx is Kamailio's tmx module: tm extensions for the script
// (route-type tests, the transaction precheck, flag flushing).
package tmx

import (
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/tm"
)

func init() { core.Register(New) }

// New builds the tmx module.
func New(env *core.Env) *core.Module {
	routeTest := func(name string, rt core.RouteType) core.Func {
		return core.Func{Name: name, Ret: core.RetInt, Doc: "1 if running in " + rtName(rt) + ", -1 if not",
			Fn: func(m *core.Msg, _ []core.Val) (core.Val, error) { return core.IntRet(m.RouteType&rt != 0), nil }}
	}
	withTM := func(f func(t *tm.TM, m *core.Msg) core.Val) func(m *core.Msg, _ []core.Val) (core.Val, error) {
		return func(m *core.Msg, _ []core.Val) (core.Val, error) {
			t, err := tm.Of(env)
			if err != nil {
				return core.Null, err
			}
			return f(t, m), nil
		}
	}
	return &core.Module{
		Name:  "tmx",
		Doc:   "tm extensions: route-type tests, transaction precheck",
		Needs: []string{"tm"},
		Funcs: []core.Func{
			{Name: "t_precheck_trans", Ret: core.RetInt, Routes: core.RouteRequest,
				Doc: "1 if a transaction for this request already exists (a retransmission of one being handled), -1 if not; ACK and CANCEL: -1",
				Fn:  withTM(func(t *tm.TM, m *core.Msg) core.Val { return t.Precheck(m) })},
			{Name: "t_flush_flags", Ret: core.RetInt, Doc: "copy the message flags to its transaction (after t_newtran); -1 without one",
				Fn: withTM(func(t *tm.TM, m *core.Msg) core.Val { return t.FlushFlags(m) })},
			routeTest("t_is_request_route", core.RouteRequest),
			routeTest("t_is_branch_route", core.RouteBranch),
			routeTest("t_is_failure_route", core.RouteFailure),
			routeTest("t_is_reply_route", core.RouteTmReply|core.RouteReply),
		},
	}
}

func rtName(rt core.RouteType) string {
	if rt == core.RouteTmReply|core.RouteReply {
		return "an onreply route (tm's or the core's)"
	}
	return rt.String()
}

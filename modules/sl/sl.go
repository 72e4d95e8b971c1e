// Package sl is Kamailio's sl module: stateless replies.
package sl

import (
	"context"
	"errors"

	"github.com/kamgo/kamgo/modules/core"
)

func init() { core.Register("sl", New) }

// New builds the sl module.
func New(env *core.Env) *core.Module {
	sent := map[int]*core.Counter{}
	for _, c := range []int{1, 2, 3, 4, 5, 6} {
		sent[c] = env.Stats.Counter("sl", [...]string{"", "1xx_replies", "2xx_replies", "3xx_replies", "4xx_replies", "5xx_replies", "6xx_replies"}[c])
	}
	total := env.Stats.Counter("sl", "sent_replies")
	failed := env.Stats.Counter("sl", "failures")
	reply := func(m *core.Msg, code int, reason string) (core.Val, error) {
		if m.Req == nil {
			return core.Null, core.ErrNoRequest
		}
		if err := m.SendReply(code, reason); err != nil {
			if err := core.CheckText("reason", reason); err != nil {
				return core.Null, err
			}
			if code < 100 || code > 699 {
				return core.Null, err
			}
			failed.Inc()
			env.Log.Warn("sl reply failed", "code", code, "err", err, "at", m.Pos())
			return core.Int(-1), nil
		}
		if m.Req.IsAck() {
			return core.Int(1), nil
		}
		total.Inc()
		sent[code/100].Inc()
		return core.Int(1), nil
	}
	send := func(m *core.Msg, a []core.Val) (core.Val, error) {
		if tx, ok := m.Tx.(core.TxReplier); ok && m.Req != nil {
			if err := tx.Reply(m, int(a[0].I), a[1].S); err != nil {
				if errors.Is(err, core.ErrFinalReplied) {
					env.Log.Warn("sl.send_reply: "+err.Error(), "code", a[0].I, "at", m.Pos())
					return core.Int(-1), nil
				}
				return core.Null, err
			}
			return core.Int(1), nil
		}
		return reply(m, int(a[0].I), a[1].S)
	}
	return &core.Module{
		Name: "sl",
		Doc:  "stateless replies",
		Funcs: []core.Func{
			{Name: "sl_send_reply", Args: []core.ArgType{core.ArgInt, core.ArgStr}, Ret: core.RetInt, Routes: core.RouteRequest | core.RouteFailure | core.RouteBranch,
				Doc: "(code, reason) send a stateless reply; 1 ok, -1 error; ACKs are never answered",
				Fn:  func(m *core.Msg, a []core.Val) (core.Val, error) { return reply(m, int(a[0].I), a[1].S) }},
			{Name: "send_reply", Args: []core.ArgType{core.ArgInt, core.ArgStr}, Ret: core.RetInt, Routes: core.RouteRequest | core.RouteFailure | core.RouteBranch,
				Doc: "(code, reason) reply statefully if a transaction exists, else statelessly", Fn: send},
			{Name: "sl_reply_error", Ret: core.RetInt, Routes: core.RouteRequest | core.RouteFailure,
				Doc: "reply 500 after an internal error (e.g. a failed t_relay)",
				Fn:  func(m *core.Msg, _ []core.Val) (core.Val, error) { return reply(m, 500, "Server Internal Error") }},
			{Name: "send_reply_error", Ret: core.RetInt, Routes: core.RouteRequest | core.RouteFailure,
				Doc: "like sl_reply_error, statefully if a transaction exists",
				Fn: func(m *core.Msg, _ []core.Val) (core.Val, error) {
					return send(m, []core.Val{core.Int(500), core.Str("Server Internal Error")})
				}},
		},
		RPC: []core.RPCMethod{{
			Name: "sl.stats", Doc: "stateless reply counters", ReadOnly: true,
			Result: `{"200": n, "202": n, "2xx": n, "300": n, ... "xxx": n} as in Kamailio's sl.stats`,
			Handler: func(ctx context.Context, _ core.RPCArgs) (any, error) {
				return env.Stats.Get("sl"), nil
			}}},
	}
}

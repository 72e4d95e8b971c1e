// Package sl is Kamailio's sl module: stateless replies.
package sl

import (
	"context"
	"errors"
	"strconv"

	"github.com/kamgo/kamgo/modules/core"
)

func init() { core.Register(New) }

// statCodes have counters of their own, as in Kamailio's sl module.
var statCodes = []int{200, 202, 300, 301, 302, 400, 401, 403, 404, 407, 408, 483, 500}

// New builds the sl module.
func New(env *core.Env) *core.Module {
	// Kamailio's sl counters: some codes on their own, the rest by class.
	byCode := map[int]*core.Counter{}
	for _, c := range statCodes {
		byCode[c] = env.Stats.Counter("sl", strconv.Itoa(c)+"_replies")
	}
	byClass := map[int]*core.Counter{}
	for c := 1; c <= 6; c++ {
		byClass[c] = env.Stats.Counter("sl", strconv.Itoa(c)+"xx_replies")
	}
	total := env.Stats.Counter("sl", "sent_replies")
	failed := env.Stats.Counter("sl", "failures")
	count := func(code int) {
		total.Inc()
		if c := byCode[code]; c != nil {
			c.Inc()
		} else {
			byClass[code/100].Inc()
		}
	}
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
		count(code)
		return core.Int(1), nil
	}
	send := func(m *core.Msg, a []core.Val) (core.Val, error) {
		if tx, ok := m.Tx.(core.TxReplier); ok && m.Req != nil {
			if err := tx.Reply(m, int(a[0].Int), a[1].Str); err != nil {
				if errors.Is(err, core.ErrFinalReplied) {
					env.Log.Warn("sl.send_reply: "+err.Error(), "code", a[0].Int, "at", m.Pos())
					return core.Int(-1), nil
				}
				return core.Null, err
			}
			return core.Int(1), nil
		}
		return reply(m, int(a[0].Int), a[1].Str)
	}
	return &core.Module{
		Name: "sl",
		Doc:  "stateless replies",
		Funcs: []core.Func{
			{Name: "sl_send_reply", Args: []core.ArgType{core.ArgInt, core.ArgStr}, Ret: core.RetInt, Routes: core.RouteRequest | core.RouteFailure | core.RouteBranch,
				Doc: "(code, reason) send a stateless reply; 1 ok, -1 error; ACKs are never answered",
				Fn:  func(m *core.Msg, a []core.Val) (core.Val, error) { return reply(m, int(a[0].Int), a[1].Str) }},
			{Name: "send_reply", Args: []core.ArgType{core.ArgInt, core.ArgStr}, Ret: core.RetInt, Routes: core.RouteRequest | core.RouteFailure | core.RouteBranch,
				Doc: "(code, reason) reply statefully if a transaction exists, else statelessly", Fn: send},
			{Name: "sl_reply_error", Ret: core.RetInt, Routes: core.RouteRequest | core.RouteFailure,
				Doc: "reply 500 after an internal error (e.g. a failed t_relay); nothing if a final reply was already sent (tm's 503 when its table is full)",
				Fn: func(m *core.Msg, _ []core.Val) (core.Val, error) {
					if m.Replied {
						return core.Int(1), nil
					}
					return reply(m, 500, "Server Internal Error")
				}},
			{Name: "send_reply_error", Ret: core.RetInt, Routes: core.RouteRequest | core.RouteFailure,
				Doc: "like sl_reply_error, statefully if a transaction exists",
				Fn: func(m *core.Msg, _ []core.Val) (core.Val, error) {
					if m.Replied {
						return core.Int(1), nil
					}
					return send(m, []core.Val{core.Int(500), core.Str("Server Internal Error")})
				}},
		},
		RPC: []core.RPCMethod{{
			Name: "sl.stats", Doc: "stateless reply counters", ReadOnly: true,
			Result: `{"200": n, "202": n, "2xx": n, "300": n, ... "6xx": n} as in Kamailio's sl.stats`,
			Handler: func(ctx context.Context, _ core.RPCArgs) (any, error) {
				out := map[string]int64{}
				for _, c := range statCodes {
					out[strconv.Itoa(c)] = byCode[c].Value()
				}
				for c := 1; c <= 6; c++ {
					out[strconv.Itoa(c)+"xx"] = byClass[c].Value()
				}
				return out, nil
			}}},
	}
}

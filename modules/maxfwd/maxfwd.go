// Package maxfwd is Kamailio's maxfwd module: Max-Forwards processing (RFC 3261 16.3/16.6).
package maxfwd

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

func init() { core.Register(New) }

// present returns the Max-Forwards value: -1 when absent, -2 when unparsable.
func present(msg sip.Message) (int, sip.Header) {
	h := core.FirstHeader(msg, "Max-Forwards")
	if h == nil {
		return -1, nil
	}
	if mf, ok := h.(*sip.MaxForwardsHeader); ok {
		return int(*mf), h
	}
	v, err := strconv.ParseUint(strings.TrimSpace(h.Value()), 10, 32)
	if err != nil || v > 255 {
		return -2, h
	}
	return int(v), h
}

// setValue writes v into the (first) Max-Forwards header, in place so that
// later reads see it.
func setValue(msg sip.Message, h sip.Header, v int) {
	if mf, ok := h.(*sip.MaxForwardsHeader); ok {
		*mf = sip.MaxForwardsHeader(v)
		return
	}
	nh := sip.MaxForwardsHeader(v)
	hs := core.Headers(msg)
	out := make([]sip.Header, len(hs))
	copy(out, hs)
	for i := range out {
		if out[i] == h {
			out[i] = &nh
		}
	}
	core.SetHeaders(msg, out)
}

// addHeader inserts Max-Forwards after the last Via (or first if there is none).
func addHeader(msg sip.Message, v int) {
	nh := sip.MaxForwardsHeader(v)
	hs := core.Headers(msg)
	at := 0
	for i, h := range hs {
		if core.HeaderIs(h, "via") {
			at = i + 1
		}
	}
	out := make([]sip.Header, 0, len(hs)+1)
	out = append(out, hs[:at]...)
	out = append(out, &nh)
	out = append(out, hs[at:]...)
	core.SetHeaders(msg, out)
}

func checkLimit(fn string, l int64) error {
	if l < 0 || l > 255 {
		return fmt.Errorf("%s: limit %d out of range 0..255", fn, l)
	}
	return nil
}

// withLimit runs f for a request whose limit argument (a[0]) is in range.
func withLimit(fn string, f func(m *core.Msg, a []core.Val) (core.Val, error)) func(m *core.Msg, a []core.Val) (core.Val, error) {
	return func(m *core.Msg, a []core.Val) (core.Val, error) {
		if m.Req == nil {
			return core.Null, core.ErrNoRequest
		}
		if err := checkLimit(fn, a[0].Int); err != nil {
			return core.Null, err
		}
		return f(m, a)
	}
}

// New builds the maxfwd module.
func New(env *core.Env) *core.Module {
	var maxLimit atomic.Int64
	return core.ApplyDefaults(&core.Module{
		Name: "maxfwd",
		Doc:  "Max-Forwards processing",
		Params: []core.Param{{Name: "max_limit", Type: core.ArgInt, Default: core.Int(256),
			Doc: "upper limit (1..256) for the decremented Max-Forwards of relayed requests",
			Set: func(v core.Val) error {
				if v.Int < 1 || v.Int > 256 {
					return fmt.Errorf("max_limit %d out of range 1..256", v.Int)
				}
				maxLimit.Store(v.Int)
				return nil
			},
			Get: func() core.Val { return core.Int(int(maxLimit.Load())) }}},
		Funcs: []core.Func{
			{Name: "process_maxfwd", Args: []core.ArgType{core.ArgInt}, Ret: core.RetInt,
				Routes: core.RouteRequest | core.RouteFailure | core.RouteBranch,
				Doc:    "(max) add Max-Forwards: max if absent (2), else decrement (1); value 0 → 483 sent by the module (-1, ACK/CANCEL not answered); -2 unparsable",
				Fn: withLimit("process_maxfwd", func(m *core.Msg, a []core.Val) (core.Val, error) {
					val, h := present(m.Req)
					switch {
					case val == -1:
						addHeader(m.Req, int(a[0].Int))
						return core.Int(2), nil
					case val == -2:
						env.Log.Warn("maxfwd: unparsable Max-Forwards", "value", h.Value(), "at", m.Pos())
						return core.Int(-2), nil
					case val == 0:
						if m.Req.IsAck() || m.Req.IsCancel() {
							return core.Int(-1), nil
						}
						if err := m.SendReply(483, "Too Many Hops"); err != nil {
							env.Log.Warn("maxfwd: cannot send 483", "err", err, "at", m.Pos())
						}
						return core.Int(-1), nil
					}
					if ml := int(maxLimit.Load()); val > ml {
						val = ml + 1
					}
					setValue(m.Req, h, val-1)
					return core.Int(1), nil
				})},
			{Name: "is_maxfwd_lt", Args: []core.ArgType{core.ArgInt}, Ret: core.RetInt,
				Routes: core.RouteRequest | core.RouteFailure | core.RouteBranch,
				Doc:    "(n) 1 if Max-Forwards < n; -1 if not; -2 no header; -3 unparsable",
				Fn: withLimit("is_maxfwd_lt", func(m *core.Msg, a []core.Val) (core.Val, error) {
					val, _ := present(m.Req)
					if val < 0 {
						return core.Int(val - 1), nil
					}
					return core.IntRet(int64(val) < a[0].Int), nil
				})},
		},
	})
}

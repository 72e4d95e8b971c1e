// Package kx is Kamailio's kemix module (KSR.kx): direct getters for the
// most used message attributes, without PV-name parsing. Each returns
// exactly what the matching pseudo-variable gives.
package kx

import (
	"github.com/emiago/sipgo/sip"

	"github.com/kamgo/kamgo/modules/core"
)

func init() { core.Register(New) }

// pvGetter reads a core PV: the kx getters are the PVs by another name.
func pvGetter(env *core.Env, spec string) func(m *core.Msg, _ []core.Val) (core.Val, error) {
	pv, err := env.ParsePV(spec)
	if err != nil {
		panic("kx: " + err.Error())
	}
	return func(m *core.Msg, _ []core.Val) (core.Val, error) { return pv.Get(m), nil }
}

// lenOf is a length getter: size of the message, 0 without one.
func lenOf(size func(sip.Message) int) func(m *core.Msg) int {
	return func(m *core.Msg) int {
		if msg := m.Message(); msg != nil {
			return size(msg)
		}
		return 0
	}
}

// New builds the kx module.
func New(env *core.Env) *core.Module {
	x := func(name, spec, doc string) core.Func {
		return core.Func{Name: name, Ret: core.RetXVal, Doc: doc + " (" + spec + ")", Fn: pvGetter(env, spec)}
	}
	intf := func(name, doc string, f func(m *core.Msg) int) core.Func {
		return core.Func{Name: name, Ret: core.RetInt, Doc: doc,
			Fn: func(m *core.Msg, _ []core.Val) (core.Val, error) { return core.Int(f(m)), nil }}
	}
	return &core.Module{
		Name: "kx",
		Doc:  "fast getters (Kamailio's kemix)",
		Funcs: []core.Func{
			x("get_ruri", "$ru", "request URI; None for replies"),
			x("get_ruser", "$rU", "request URI user; None if none"),
			x("get_rhost", "$rd", "request URI host"),
			x("get_duri", "$du", "destination URI; None if unset"),
			{Name: "get_nhuri", Ret: core.RetXVal, Doc: "next hop: $du if set, else $ru",
				Fn: func(m *core.Msg, _ []core.Val) (core.Val, error) {
					if m.DstURI != "" {
						return core.Str(m.DstURI), nil
					}
					if m.Req == nil {
						return core.Null, nil
					}
					return core.Str(m.Req.Recipient.String()), nil
				}},
			x("get_furi", "$fu", "From URI"),
			x("get_fuser", "$fU", "From URI user"),
			x("get_fhost", "$fd", "From URI host"),
			x("get_turi", "$tu", "To URI"),
			x("get_tuser", "$tU", "To URI user"),
			x("get_thost", "$td", "To URI host"),
			x("get_ua", "$ua", "User-Agent; None if absent"),
			x("get_callid", "$ci", "Call-ID"),
			x("get_method", "$rm", "request method (CSeq method for replies)"),
			x("get_body", "$rb", "message body (\"\" if none)"),
			x("get_srcip", "$si", "source IP"),
			x("get_rcvip", "$Ri", "local receiving IP"),
			x("get_proto", "$pr", "receiving protocol: udp, tcp, tls, ws, wss"),
			{Name: "get_srcuri", Ret: core.RetXVal, Doc: "source as a URI: sip:IP:PORT, with ;transport= for non-UDP",
				Fn: func(m *core.Msg, _ []core.Val) (core.Val, error) {
					return core.Str(core.Target{Proto: m.Proto, Host: m.SrcIP, Port: m.SrcPort}.URI()), nil
				}},
			intf("get_srcport", "source port", func(m *core.Msg) int { return m.SrcPort }),
			intf("get_rcvport", "local receiving port", func(m *core.Msg) int { return m.Local.Port }),
			intf("get_bodylen", "body length in bytes", lenOf(func(msg sip.Message) int { return len(msg.Body()) })),
			intf("get_msglen", "length of the message as it would be sent now (kamgo parses before routing: not the received bytes)",
				lenOf(func(msg sip.Message) int { return len(msg.String()) })),
			intf("get_status", "reply status code; -1 for a request", func(m *core.Msg) int {
				if m.Res == nil {
					return -1
				}
				return m.Res.StatusCode
			}),
			intf("get_timestamp", "current time, Unix seconds", func(m *core.Msg) int { return int(m.Env.Clock.Now().Unix()) }),
		},
	}
}

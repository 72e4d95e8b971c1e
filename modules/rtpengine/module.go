package rtpengine

import (
	"fmt"
	"sync/atomic"

	"github.com/kamgo/kamgo/modules/core"
)

func (r *RTPE) module() *core.Module {
	s, i := core.ArgStr, core.ArgInt
	fn := func(name string, args []core.ArgType, doc string, f func(m *core.Msg, a []core.Val) core.Val) core.Func {
		return core.Func{Name: name, Args: args, Ret: core.RetInt, Doc: doc,
			Fn: func(m *core.Msg, a []core.Val) (core.Val, error) { return f(m, a), nil }}
	}
	intParam := func(name string, def int, doc string, check func(core.Val) error, p *atomic.Int64) core.Param {
		return core.Param{Name: name, Type: i, Default: core.Int(def), Doc: doc, Check: check,
			Set: func(v core.Val) error { p.Store(v.Int); return nil },
			Get: func() core.Val { return core.Int(int(p.Load())) }}
	}
	positive := func(name string) func(core.Val) error {
		return func(v core.Val) error {
			if v.Int < 1 {
				return fmt.Errorf("%s %d: must be at least 1", name, v.Int)
			}
			return nil
		}
	}
	flagsDoc := " Flags as Kamailio passes them: words (trust-address, symmetric, asymmetric, SIP-source-address, port-latching, record-call...) go to the ng flags list, replace-origin/replace-session-connection to replace, internal/external and direction=x to direction, RTP/AVP.../SRTP/AVPF/DTLS to transport-protocol, rtcp-mux-x to rtcp-mux, ICE=remove and other key=value pairs to the dictionary; call-id=, from-tag=, to-tag= override the message's, via-branch=1|2 adds the Via branch. 1 ok, -1 error (no engine answered, the engine refused, no SDP)"
	return core.ApplyDefaults(&core.Module{
		Name: "rtpengine",
		Doc:  "media relay control: rtpengine over the ng protocol (offer/answer/delete/query), engine sets with weights and failover",
		Params: []core.Param{
			{Name: "rtpengine_sock", Type: s, Default: core.Str(""),
				Doc:   "the engines: \"udp:host:port[=weight] ...\", several sets as \"1 == udp:a:2223 udp:b:2223=2; 2 == udp:c:2223\" (no set id: setid_default); one is chosen per call by a hash of the Call-ID, weighted",
				Check: func(v core.Val) error { _, err := parseSock(v.Str, 0); return err },
				Set: func(v core.Val) error {
					x := v.Str
					r.sock.Store(&x)
					return r.setSock(x)
				},
				Get: func() core.Val { return core.Str(*r.sock.Load()) }},
			intParam("rtpengine_tout_ms", 1000, "milliseconds to wait for an engine's answer before sending the command again", positive("rtpengine_tout_ms"), &r.toutMS),
			intParam("rtpengine_retr", 5, "how many times a command is sent to one engine before it is disabled and the next engine of the set is tried", positive("rtpengine_retr"), &r.retr),
			intParam("rtpengine_disable_tout", 60, "seconds an engine that did not answer stays disabled; then it is pinged before it is used again", core.CheckNonNegative("rtpengine_disable_tout"), &r.disableTout),
			intParam("setid_default", 0, "the set used when the script does not call set_rtpengine_set (and of engines listed without \"id ==\")", core.CheckNonNegative("setid_default"), &r.setidDefault),
			intParam("queried_nodes_limit", 30, "most engines tried for one command", positive("queried_nodes_limit"), &r.queriedLimit),
			intParam("hash_table_tout", 3600, "seconds a call stays bound to the engine that took its offer", positive("hash_table_tout"), &r.hashTableTout),
		},
		Funcs: []core.Func{
			fn("rtpengine_manage", []core.ArgType{s}, "(flags) offer, answer or delete as the message needs: INVITE/UPDATE with SDP offer (INVITE in a failure route: delete), ACK with SDP answer, BYE/CANCEL delete, a reply >= 300 delete, a 1xx/2xx with SDP answer (offer when its INVITE had no SDP); the SDP is replaced by the engine's and Content-Length follows."+flagsDoc,
				func(m *core.Msg, a []core.Val) core.Val { return r.manage(m, a[0].Str) }),
			fn("rtpengine_manage0", nil, "rtpengine_manage with no flags",
				func(m *core.Msg, _ []core.Val) core.Val { return r.manage(m, "") }),
			fn("rtpengine_offer", []core.ArgType{s}, "(flags) ng offer with the message's SDP, replaced by the engine's."+flagsDoc,
				func(m *core.Msg, a []core.Val) core.Val { return r.offerAnswer(m, "offer", a[0].Str) }),
			fn("rtpengine_offer0", nil, "rtpengine_offer with no flags",
				func(m *core.Msg, _ []core.Val) core.Val { return r.offerAnswer(m, "offer", "") }),
			fn("rtpengine_answer", []core.ArgType{s}, "(flags) ng answer with the message's SDP (a reply, or an ACK; other requests: -1), replaced by the engine's."+flagsDoc,
				func(m *core.Msg, a []core.Val) core.Val { return r.answer(m, a[0].Str) }),
			fn("rtpengine_answer0", nil, "rtpengine_answer with no flags",
				func(m *core.Msg, _ []core.Val) core.Val { return r.answer(m, "") }),
			fn("rtpengine_delete", []core.ArgType{s}, "(flags) ng delete: the engine releases the call's media."+flagsDoc,
				func(m *core.Msg, a []core.Val) core.Val { return r.simple(m, "delete", a[0].Str) }),
			fn("rtpengine_delete0", nil, "rtpengine_delete with no flags",
				func(m *core.Msg, _ []core.Val) core.Val { return r.simple(m, "delete", "") }),
			fn("rtpengine_query", []core.ArgType{s}, "(flags) ng query: the call's media counters, kept for $rtpstat in this message. 1, -1",
				func(m *core.Msg, a []core.Val) core.Val { return r.query(m, a[0].Str) }),
			fn("rtpengine_query0", nil, "rtpengine_query with no flags",
				func(m *core.Msg, _ []core.Val) core.Val { return r.query(m, "") }),
			fn("set_rtpengine_set", []core.ArgType{i}, "(set) use that set for this message's commands; 1, -1 no such set",
				func(m *core.Msg, a []core.Val) core.Val {
					r.mu.Lock()
					found := false
					for _, n := range r.nodes {
						found = found || int64(n.set) == a[0].Int
					}
					r.mu.Unlock()
					if !found {
						r.env.Log.Error(fmt.Sprintf("rtpengine: set %d not configured", a[0].Int), "at", m.Pos())
						return core.Int(-1)
					}
					m.SetExt(extSet, int(a[0].Int))
					return core.Int(1)
				}),
		},
		PVs: []core.PVDef{{Name: "rtpstat", Doc: "the call's media counters from its engine (an ng query, or the last rtpengine_query of this message): \"RTP: x bytes, y packets, z errors; RTCP: ...\"",
			Get: func(m *core.Msg, _ string) core.Val {
				d, ok := m.Ext[extQuery].(map[string]any)
				if !ok {
					res, err := r.call(m, "query", "")
					if err != nil {
						return core.Null
					}
					d = res
				}
				return core.Str(rtpstat(d))
			}}},
		RPC: []core.RPCMethod{
			{Name: "rtpengine.show", Doc: "the engines matching url (\"all\": every one): url, set, index, weight, disabled (0, 1 or \"1(permanent)\"), recheck_ticks (seconds until a disabled engine is tried again, \"N/A\" if permanent)",
				Params: []core.RPCParam{{Name: "url", Type: "string", Doc: "an engine's url as configured, or all"}}, Result: "array of structs", ReadOnly: true, Handler: r.rpcShow},
			{Name: "rtpengine.enable", Doc: "enable (1: after a successful ping) or disable (0: permanently) the engines matching url; {url, status: enable|disable|fail}",
				Params: []core.RPCParam{{Name: "url", Type: "string"}, {Name: "flag", Type: "int"}}, Result: "struct", Handler: r.rpcEnable},
			{Name: "rtpengine.ping", Doc: "ping the engines matching url; one that does not answer is disabled; {url, status: success|fail}",
				Params: []core.RPCParam{{Name: "url", Type: "string"}}, Result: "struct", Handler: r.rpcPing},
			{Name: "rtpengine.reload", Doc: "rebuild the engine list from rtpengine_sock (kamd has no rtpengine database table): every engine enabled again",
				Result: "none", Handler: r.rpcReload},
		},
		Stop: func() { r.cl.close() },
	})
}

// answer is rtpengine_answer: on requests only for ACK, as Kamailio.
func (r *RTPE) answer(m *core.Msg, flags string) core.Val {
	if m.Req != nil && m.Req.Method != "ACK" {
		return core.Int(-1)
	}
	return r.offerAnswer(m, "answer", flags)
}

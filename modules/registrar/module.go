package registrar

import (
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/usrloc"
)

func (r *Reg) module() *core.Module {
	s, i := core.ArgStr, core.ArgInt
	req := core.RouteRequest | core.RouteFailure | core.RouteBranch
	fn := func(name string, args []core.ArgType, routes core.RouteType, doc string, f func(m *core.Msg, a []core.Val) (core.Val, error)) core.Func {
		return core.Func{Name: name, Args: args, Ret: core.RetInt, Routes: routes, Doc: doc, Fn: f}
	}
	intParam := func(name string, def int, doc string, check func(core.Val) error, p *atomic.Int64) core.Param {
		return core.Param{Name: name, Type: i, Default: core.Int(def), Doc: doc, Check: check,
			Set: func(v core.Val) error { p.Store(v.Int); return nil },
			Get: func() core.Val { return core.Int(int(p.Load())) }}
	}
	boolParam := func(name, doc string, p *atomic.Bool) core.Param {
		return core.Param{Name: name, Type: i, Default: core.Int(0), Doc: doc, Check: core.Check01(name),
			Set: func(v core.Val) error { p.Store(v.Int != 0); return nil },
			Get: func() core.Val { return core.Int01(p.Load()) }}
	}
	return core.ApplyDefaults(&core.Module{
		Name:  "registrar",
		Needs: []string{"usrloc"},
		Doc:   "SIP registrar: save REGISTERs into usrloc, look contacts up",
		PVs:   ulcPVs,
		Params: []core.Param{
			intParam("default_expires", 3600, "expires of a contact when neither its expires param nor an Expires header says", core.CheckNonNegative("default_expires"), &r.defaultExpires),
			intParam("min_expires", 60, "shortest accepted expires (0: none); see min_expires_mode", core.CheckNonNegative("min_expires"), &r.minExpires),
			intParam("min_expires_mode", 0, "0: raise a shorter expires to min_expires (Kamailio's default); 1: refuse it with 423 Interval Too Brief and Min-Expires (RFC 3261 §10.3 step 7)", core.Check01("min_expires_mode"), &r.minExpiresMode),
			intParam("max_expires", 0, "longest expires; longer ones are lowered to it (0: no limit)", core.CheckNonNegative("max_expires"), &r.maxExpires),
			intParam("max_contacts", DefaultMaxContacts, "most contacts per AoR; a REGISTER exceeding it gets 503 and save() returns -2 (0: no limit; kamgo's default 32, Kamailio's 0: one AoR's 200 must fit a UDP datagram)", core.CheckNonNegative("max_contacts"), &r.maxContacts),
			boolParam("use_path", "1: store the REGISTER's Path headers (RFC 3327), echo them in the 200 OK and route to the first hop on lookup", &r.usePath),
			{Name: "append_branches", Type: i, Default: core.Int(1), Check: core.Check01("append_branches"),
				Doc: "1: lookup puts every contact of the AoR in the destination set (the best in the R-URI, the others as branches by q), so t_relay forks to all; 0: only the best",
				Set: func(v core.Val) error { r.appendBranches.Store(v.Int != 0); return nil },
				Get: func() core.Val { return core.Int01(r.appendBranches.Load()) }},
			boolParam("method_filtering", "1: lookup skips contacts whose Allow (at REGISTER) lacks the request's method (returns -2 if none is left)", &r.methodFiltering),
		},
		Funcs: []core.Func{
			fn("save", []core.ArgType{s, i}, core.RouteRequest|core.RouteFailure,
				"(table, flags) process the REGISTER (RFC 3261 §10.3) and answer it: 200 OK listing the AoR's contacts with their expires, or the error (400, 423 with Min-Expires, 503, 500) with P-Registrar-Error. flags: 0x01 memory only, 0x02 no reply, 0x04 the new contact replaces the others, 0x08 accepted (no expires_range). 1 inserted, 2 updated, 3 deleted, 4 query (no Contact), -1 error, -2 too many contacts",
				func(m *core.Msg, a []core.Val) (core.Val, error) { return r.save(m, a[0].Str, int(a[1].Int), "") }),
			fn("save_uri", []core.ArgType{s, i, s}, core.RouteRequest|core.RouteFailure,
				"(table, flags, uri) save() for the AoR of uri instead of To",
				func(m *core.Msg, a []core.Val) (core.Val, error) { return r.save(m, a[0].Str, int(a[1].Int), a[2].Str) }),
			fn("lookup", []core.ArgType{s}, req,
				"(table) rewrite the R-URI to the best contact of its AoR (highest q, then most recent) and set $du to its Path first hop or received address; no parallel branches yet. 1 found, -1 not found, -2 found but the method is not allowed (method_filtering), -3 error",
				func(m *core.Msg, a []core.Val) (core.Val, error) { return r.lookup(m, a[0].Str, "") }),
			fn("lookup_uri", []core.ArgType{s, s}, req,
				"(table, uri) lookup() for the AoR of uri; the R-URI is rewritten as by lookup",
				func(m *core.Msg, a []core.Val) (core.Val, error) { return r.lookup(m, a[0].Str, a[1].Str) }),
			fn("registered", []core.ArgType{s}, 0,
				"(table) 1 if the R-URI's AoR (To for a reply) has a valid contact, else -1",
				func(m *core.Msg, a []core.Val) (core.Val, error) { return r.registered(m, a[0].Str, "") }),
			fn("registered_uri", []core.ArgType{s, s}, 0,
				"(table, uri) 1 if the AoR of uri has a valid contact, else -1",
				func(m *core.Msg, a []core.Val) (core.Val, error) { return r.registered(m, a[0].Str, a[1].Str) }),
			fn("unregister", []core.ArgType{s, s}, 0,
				"(table, aor) remove every contact of the AoR (a SIP URI); 1, -1 bad AoR",
				func(m *core.Msg, a []core.Val) (core.Val, error) { return r.unregister(m, a[0].Str, a[1].Str) }),
			fn("reg_fetch_contacts", []core.ArgType{s, s, s}, 0,
				"(table, aor, profile) load the AoR's valid contacts into $ulc(profile=>attr) for this message; 1 found, -1 none",
				func(m *core.Msg, a []core.Val) (core.Val, error) { return r.fetch(m, a[0].Str, a[1].Str, a[2].Str) }),
			fn("reg_free_contacts", []core.ArgType{s}, 0,
				"(profile) forget the contacts loaded into $ulc(profile=>...); 1",
				func(m *core.Msg, a []core.Val) (core.Val, error) {
					if p, ok := m.Ext[extKey].(map[string]*profile); ok {
						delete(p, a[0].Str)
					}
					return core.Int(1), nil
				}),
		},
	})
}

const extKey = "registrar:ulc"

type profile struct {
	table, aor string
	contacts   []usrloc.Contact
}

func (r *Reg) fetch(m *core.Msg, table, uri, name string) (core.Val, error) {
	d, aor, ok, err := r.aorIn(m, "reg_fetch_contacts", table, uri)
	if err != nil {
		return core.Null, err
	}
	if !ok {
		return core.Int(-1), nil
	}
	p, _ := m.Ext[extKey].(map[string]*profile)
	if p == nil {
		p = map[string]*profile{}
		m.SetExt(extKey, p)
	}
	cs := d.Lookup(aor)
	p[name] = &profile{table: table, aor: aor, contacts: cs}
	return core.IntRet(len(cs) > 0), nil
}

// ulcPVs is registrar's $ulc, declared in the module table.
var ulcPVs = []core.PVDef{{Name: "ulc", HasArg: true,
	Doc: "contacts loaded by reg_fetch_contacts: $ulc(profile=>attr) for the first contact, $ulc(profile=>attr=>i) for the i-th (from 0). attr: aor, domain, aorhash, count, addr, path, received, expires, callid, q, cseq, flags, cflags, user_agent, socket, modified, methods, ruid, reg_id, instance, conid, server_id, keepalive",
	Get: func(m *core.Msg, arg string) core.Val {
		parts := strings.Split(arg, "=>")
		if len(parts) < 2 || len(parts) > 3 {
			m.Env.Log.Error("$ulc("+arg+"): want profile=>attr", "at", m.Pos())
			return core.Null
		}
		p, _ := m.Ext[extKey].(map[string]*profile)
		pr := p[parts[0]]
		if pr == nil {
			return core.Null
		}
		idx := 0
		if len(parts) == 3 {
			n, err := strconv.Atoi(parts[2])
			if err != nil || n < 0 {
				m.Env.Log.Error("$ulc("+arg+"): bad index", "at", m.Pos())
				return core.Null
			}
			idx = n
		}
		switch parts[1] {
		case "aor":
			return core.Str(pr.aor)
		case "domain":
			return core.Str(pr.table)
		case "aorhash":
			return core.Val{Kind: core.KInt, Int: int64(usrloc.HashID(pr.aor))}
		case "count":
			return core.Int(len(pr.contacts))
		}
		if idx >= len(pr.contacts) {
			return core.Null
		}
		c := &pr.contacts[idx]
		var now = core.RealClock.Now()
		if u := usrloc.Of(m.Env); u != nil {
			now = u.Now()
		}
		i64 := func(n int64) core.Val { return core.Val{Kind: core.KInt, Int: n} }
		switch parts[1] {
		case "addr":
			return core.Str(c.Contact)
		case "path":
			return core.Str(c.Path)
		case "received":
			return core.Str(c.Received)
		case "expires":
			return core.Int(c.ExpiresIn(now))
		case "callid":
			return core.Str(c.CallID)
		case "q":
			return core.Int(c.Q)
		case "cseq":
			return core.Int(c.CSeq)
		case "flags":
			return core.Int(c.Flags)
		case "cflags":
			return core.Int(c.CFlags)
		case "user_agent":
			return core.Str(c.UserAgent)
		case "socket":
			return core.Str(c.Socket)
		case "modified":
			return i64(c.LastModified.Unix())
		case "methods":
			return i64(c.Methods)
		case "ruid":
			return core.Str(c.Ruid)
		case "reg_id":
			return core.Int(c.RegID)
		case "instance":
			return core.Str(c.Instance)
		case "conid":
			return core.Int(c.ConnID)
		case "server_id":
			return core.Int(c.ServerID)
		case "keepalive":
			return core.Int(c.Keepalive)
		}
		m.Env.Log.Error("$ulc("+arg+"): unknown attribute "+parts[1], "at", m.Pos())
		return core.Null
	}}}

// DefaultMaxContacts is max_contacts' default. Kamailio's is 0 (no limit),
// but the 200 to a REGISTER lists every contact of the AoR: 1634 contacts
// made a reply over 64 KB that UDP cannot carry. 32 contacts of even 1 KB
// each fit a datagram, and no real user has more devices than that.
const DefaultMaxContacts = 32

// Package dialog is Kamailio's dialog module: dialogs tracked from the
// initial INVITE through its replies, the ACK and the BYE, with timeouts,
// variables, profiles, dlg_bye and the dlg.* RPCs.
package dialog

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/tm"
)

func init() { core.Register(New) }

var instances core.PerEnv[*D]

// Of returns the dialog module built for env (nil if none).
func Of(env *core.Env) *D { return instances.Of(env) }

// D is one dialog module instance.
type D struct {
	env *core.Env
	st  *store

	defaultTimeout atomic.Int64 // s
	earlyTimeout   atomic.Int64 // s
	sendBye        atomic.Bool
	hashSize       atomic.Int64

	pmu      sync.Mutex
	profDefs map[string]bool // name → has values
	profNoV  string
	profV    string
	members  map[string]map[string]int // profile → value → dialogs

	hmu    sync.Mutex
	onEnds []func(Info)

	stats struct{ active, early, processed, expired, failed *core.Counter }
}

// OnEnd registers f to run when a confirmed dialog ends (BYE, dlg_bye,
// timeout), after it left the list: acc writes its CDR there.
func (x *D) OnEnd(f func(Info)) {
	x.hmu.Lock()
	x.onEnds = append(x.onEnds, f)
	x.hmu.Unlock()
}

// New builds the dialog module.
func New(env *core.Env) *core.Module {
	x := &D{env: env, profDefs: map[string]bool{}, members: map[string]map[string]int{}}
	instances.Set(env, x)
	s := env.Stats
	x.stats.active = s.Counter("dialog", "active_dialogs")
	x.stats.early = s.Counter("dialog", "early_dialogs")
	x.stats.processed = s.Counter("dialog", "processed_dialogs")
	x.stats.expired = s.Counter("dialog", "expired_dialogs")
	x.stats.failed = s.Counter("dialog", "failed_dialogs")
	x.stats.active.NoReset, x.stats.early.NoReset = true, true
	intParam := func(name string, def int, doc string, dst *atomic.Int64) core.Param {
		return core.Param{Name: name, Type: core.ArgInt, Default: core.Int(def), Doc: doc, Check: positive(name),
			Set: func(v core.Val) error { dst.Store(v.Int); return nil },
			Get: func() core.Val { return core.Int(int(dst.Load())) }}
	}
	strParam := func(name, doc string, dst *string, values bool) core.Param {
		return core.Param{Name: name, Type: core.ArgStr, Default: core.Str(""), Doc: doc, Check: checkProfiles,
			Set: func(v core.Val) error { x.setProfiles(dst, v.Str, values); return nil },
			Get: func() core.Val { x.pmu.Lock(); defer x.pmu.Unlock(); return core.Str(*dst) }}
	}
	s1, s2 := []core.ArgType{core.ArgStr}, []core.ArgType{core.ArgStr, core.ArgStr}
	return core.ApplyDefaults(&core.Module{
		Name:   "dialog",
		Doc:    "dialog tracking: state from INVITE to BYE, timeouts, variables, profiles",
		Needs:  []string{"tm"},
		Events: []string{"dialog"},
		Params: []core.Param{
			intParam("default_timeout", 43200, "seconds a confirmed dialog lives unless dlg_set_timeout says otherwise; then it ends (with BYEs if send_bye)", &x.defaultTimeout),
			intParam("early_timeout", 300, "seconds a dialog may stay unanswered (no 2xx) before it is dropped", &x.earlyTimeout),
			intParam("hash_size", 4096, "number of h_entry slots (h_entry is the Call-ID's hash modulo it)", &x.hashSize),
			{Name: "send_bye", Type: core.ArgInt, Default: core.Int(0), Check: core.Check01("send_bye"),
				Doc: "1: a dialog that times out is ended with a BYE to both sides",
				Set: func(v core.Val) error { x.sendBye.Store(v.Int != 0); return nil },
				Get: func() core.Val { return core.Int01(x.sendBye.Load()) }},
			strParam("profiles_no_value", "profiles without values, separated by ';' (\"inbound ; outbound\")", &x.profNoV, false),
			strParam("profiles_with_value", "profiles with values, separated by ';' (\"caller ; trunk\")", &x.profV, true),
		},
		Funcs: []core.Func{
			{Name: "dlg_manage", Ret: core.RetInt, Routes: core.RouteRequest,
				Doc: "track the dialog: an initial INVITE creates it, an in-dialog request is matched to it; 1 ok, -1 not an INVITE nor a known dialog",
				Fn:  x.dlgManage},
			{Name: "is_known_dlg", Ret: core.RetInt, Doc: "1 if the message belongs to a tracked dialog, -1 if not",
				Fn: func(m *core.Msg, _ []core.Val) (core.Val, error) { return core.IntRet(x.current(m) != nil), nil }},
			{Name: "dlg_bye", Args: s1, Ret: core.RetInt,
				Doc: "(\"all\"|\"caller\"|\"callee\") end the current dialog with BYEs; 1 sent, -1 no dialog or not confirmed",
				Fn:  x.dlgBye},
			{Name: "dlg_set_timeout", Args: []core.ArgType{core.ArgInt}, Ret: core.RetInt,
				Doc: "(seconds) lifetime of the current dialog from its answer (or from now once answered); 1 ok, -1 no dialog",
				Fn:  x.dlgSetTimeout},
			{Name: "set_dlg_profile", Args: s2, Ret: core.RetInt, Doc: "(profile, value) add the current dialog to a profile with values; 1 ok, -1 no dialog or unknown profile",
				Fn: func(m *core.Msg, a []core.Val) (core.Val, error) { return x.setProfile(m, a[0].Str, a[1].Str, true) }},
			{Name: "set_dlg_profile_static", Args: s1, Ret: core.RetInt, Doc: "(profile) add the current dialog to a profile without values",
				Fn: func(m *core.Msg, a []core.Val) (core.Val, error) { return x.setProfile(m, a[0].Str, "", false) }},
			{Name: "unset_dlg_profile", Args: s2, Ret: core.RetInt, Doc: "(profile, value) remove the current dialog from a profile",
				Fn: func(m *core.Msg, a []core.Val) (core.Val, error) { return x.unsetProfile(m, a[0].Str, a[1].Str, true) }},
			{Name: "unset_dlg_profile_static", Args: s1, Ret: core.RetInt, Doc: "(profile) remove the current dialog from a profile without values",
				Fn: func(m *core.Msg, a []core.Val) (core.Val, error) { return x.unsetProfile(m, a[0].Str, "", false) }},
			{Name: "is_in_profile", Args: s2, Ret: core.RetInt, Doc: "(profile, value) 1 if the current dialog is in the profile (with that value; \"\" any), -1 if not",
				Fn: func(m *core.Msg, a []core.Val) (core.Val, error) { return x.isInProfile(m, a[0].Str, a[1].Str) }},
			{Name: "is_in_profile_static", Args: s1, Ret: core.RetInt, Doc: "(profile) 1 if the current dialog is in the profile",
				Fn: func(m *core.Msg, a []core.Val) (core.Val, error) { return x.isInProfile(m, a[0].Str, "") }},
			{Name: "get_profile_size", Args: []core.ArgType{core.ArgStr, core.ArgStr, core.ArgStr}, Ret: core.RetInt,
				Doc: "(profile, value, \"$var(n)\") store the number of dialogs in the profile (with that value; \"\" all) in the PV; 1 ok, -1 unknown profile",
				Fn: func(m *core.Msg, a []core.Val) (core.Val, error) {
					return x.profileSizePV(m, a[0].Str, a[1].Str, a[2].Str)
				}},
			{Name: "get_profile_size_static", Args: s2, Ret: core.RetInt,
				Doc: "(profile, \"$var(n)\") store the profile's size in the PV",
				Fn:  func(m *core.Msg, a []core.Val) (core.Val, error) { return x.profileSizePV(m, a[0].Str, "", a[1].Str) }},
		},
		PVs: []core.PVDef{
			{Name: "dlg", HasArg: true, Doc: "attribute of the current dialog: h_id h_entry ref state callid from_uri from_tag from_cseq from_contact from_bindaddr from_rs to_uri to_tag to_cseq to_contact to_bindaddr to_rs start_ts init_ts end_ts lifetime timeout dflags sflags; $null without one",
				Get: x.dlgPV},
			{Name: "dlg_var", HasArg: true, Doc: "dialog variable (kept for the dialog's life; set before dlg_manage it is attached then); $null if unset",
				Get: x.varGet, Set: x.varSet},
		},
		RPC: []core.RPCMethod{
			{Name: "dlg.list", Doc: "the dialogs", ReadOnly: true, Result: dlgListShape,
				Handler: func(context.Context, core.RPCArgs) (any, error) { return x.rpcList(false), nil }},
			{Name: "dlg.list_ctx", Doc: "the dialogs with their profiles and variables", ReadOnly: true, Result: dlgListShape + ` plus "profiles": [{name: value}], "variables": [{name: value}]`,
				Handler: func(context.Context, core.RPCArgs) (any, error) { return x.rpcList(true), nil }},
			{Name: "dlg.end_dlg", Doc: "end a dialog by h_entry and h_id (BYE to both sides)",
				Params:  []core.RPCParam{{Name: "h_entry", Type: "int"}, {Name: "h_id", Type: "int"}},
				Result:  "null",
				Handler: x.rpcEnd},
			{Name: "dlg.stats_active", Doc: "dialogs by state", ReadOnly: true,
				Result:  `{"starting": n, "connecting": n, "answering": n, "ongoing": n, "all": n}`,
				Handler: func(context.Context, core.RPCArgs) (any, error) { return x.statsActive(), nil }},
		},
		Init:      x.init,
		OnRequest: x.onRequest,
		Stop:      x.stop,
	})
}

const dlgListShape = `[{"h_entry": n, "h_id": n, "ref": n, "call-id": s, "from_uri": s, "to_uri": s, "state": n, "start_ts": n, "init_ts": n, "end_ts": n, "timeout": n, "lifetime": n, "dflags": n, "sflags": n, "iflags": n, "caller": {"tag", "contact", "cseq", "route_set", "socket"}, "callee": {...}}]`

func positive(name string) func(core.Val) error {
	return func(v core.Val) error {
		if v.Int <= 0 {
			return fmt.Errorf("%s must be positive, got %d", name, v.Int)
		}
		return nil
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ";") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func checkProfiles(v core.Val) error {
	for _, p := range splitList(v.Str) {
		if strings.ContainsAny(p, " \t\r\n") {
			return fmt.Errorf("invalid profile name %q", p)
		}
	}
	return nil
}

func (x *D) setProfiles(dst *string, list string, values bool) {
	x.pmu.Lock()
	defer x.pmu.Unlock()
	for _, p := range splitList(*dst) {
		if x.profDefs[p] == values {
			delete(x.profDefs, p)
		}
	}
	*dst = list
	for _, p := range splitList(list) {
		x.profDefs[p] = values
	}
}

func (x *D) init() error {
	x.st = newStore(uint32(x.hashSize.Load()))
	t, err := tm.Of(x.env)
	if err != nil {
		return fmt.Errorf("dialog: %w", err)
	}
	t.OnReplyOut(x.onReplyOut)
	return nil
}

func (x *D) stop() {
	if x.st == nil {
		return
	}
	for _, d := range x.st.list() {
		x.st.mu.Lock()
		if d.timer != nil {
			d.timer.Stop()
		}
		x.st.mu.Unlock()
	}
	instances.Drop(x.env, x)
}

func (x *D) now() time.Time { return x.env.Clock.Now() }

// current is the dialog of the message: the one dlg_manage attached, else
// the one its Call-ID and tags match.
func (x *D) current(m *core.Msg) *Dialog {
	if d, ok := m.Ext["dialog"].(*Dialog); ok {
		return d
	}
	if x.st == nil {
		return nil
	}
	msg := m.Message()
	if msg == nil {
		return nil
	}
	cid, ft, tt, ok := msgTags(msg)
	if !ok {
		return nil
	}
	if m.Res != nil {
		tt = "" // a reply to the initial INVITE carries a To tag the dialog may not know yet
	}
	d, _ := x.st.find(cid, ft, tt)
	if d == nil || (m.Req != nil && tt == "") {
		return nil // an initial request is not in a dialog
	}
	return d
}

func (x *D) dlgManage(m *core.Msg, _ []core.Val) (core.Val, error) {
	if m.Req == nil {
		return core.Null, core.ErrNoRequest
	}
	cid, ft, tt, ok := msgTags(m.Req)
	if !ok {
		return core.Int(-1), nil
	}
	if tt != "" {
		if d, ok := m.Ext["dialog"].(*Dialog); ok && d != nil {
			return core.Int(1), nil // a BYE: matched (and ended) before the script
		}
		d, _ := x.st.find(cid, ft, tt)
		if d == nil {
			return core.Int(-1), nil
		}
		m.SetExt("dialog", d)
		return core.Int(1), nil
	}
	if !m.Req.IsInvite() {
		return core.Int(-1), nil
	}
	if d, ok := m.Ext["dialog"].(*Dialog); ok && d != nil {
		return core.Int(1), nil // twice on one INVITE
	}
	now := x.now()
	d := &Dialog{CallID: cid, FromTag: ft, FromURI: m.Req.From().Address.String(), ToURI: m.Req.To().Address.String(),
		ReqURI: m.Req.Recipient.String(), CallerContact: contactOf(m.Req), CallerCSeq: cseqOf(m.Req),
		CallerRoute: routeSet(m.Req), CallerSock: m.Local.String(), CalleeCSeq: "0",
		caller: core.Target{Proto: m.Proto, Host: m.SrcIP, Port: m.SrcPort},
		State:  StateUnconfirmed, InitTS: now.Unix(), Lifetime: int(x.defaultTimeout.Load())}
	if pv, ok := m.Ext["dialog.vars"].(*pendingVars); ok {
		d.vars, d.varOrder = pv.vars, pv.order
	}
	x.st.mu.Lock()
	if old := x.st.byKey[dlgKey(cid, ft)]; old != nil {
		// A retransmitted INVITE handled again, or a spiral: the same dialog.
		x.st.mu.Unlock()
		m.SetExt("dialog", old)
		return core.Int(1), nil
	}
	x.st.nextID++
	d.HEntry, d.HID = hashEntry(cid, x.st.size), x.st.nextID
	x.st.byKey[dlgKey(cid, ft)] = d
	x.st.byID[hid(d.HEntry, d.HID)] = d
	d.timer = x.env.Clock.AfterFunc(time.Duration(x.earlyTimeout.Load())*time.Second, func() { x.expireEarly(d) })
	x.st.mu.Unlock()
	x.stats.processed.Inc()
	x.stats.early.Inc()
	m.SetExt("dialog", d)
	return core.Int(1), nil
}

// onReplyOut follows the replies to the dialog's initial INVITE.
func (x *D) onReplyOut(ev *tm.ReplyOut) {
	d, ok := ev.Data["dialog"].(*Dialog)
	if !ok || ev.Req == nil || !ev.Req.IsInvite() {
		return
	}
	code := ev.Res.StatusCode
	x.st.mu.Lock()
	if d.State >= StateConfirmedNA || cseqOf(ev.Req) != d.CallerCSeq {
		x.st.mu.Unlock()
		return // a re-INVITE's reply or a second 2xx of a fork
	}
	totag := ""
	if t := ev.Res.To(); t != nil {
		totag = tagOf(t.Params)
	}
	switch {
	case code > 100 && code < 200 && totag != "":
		d.State = StateEarly
		x.st.mu.Unlock()
	case code >= 200 && code < 300:
		d.State = StateConfirmedNA
		d.ToTag = totag
		d.CalleeContact = contactOf(ev.Res)
		d.CalleeRoute = routeSet(ev.Res)
		now := x.now()
		d.StartTS = now.Unix()
		if d.timer != nil {
			d.timer.Stop()
		}
		d.deadline = now.Add(time.Duration(d.Lifetime) * time.Second)
		d.timer = x.env.Clock.AfterFunc(time.Duration(d.Lifetime)*time.Second, func() { x.expire(d) })
		x.st.mu.Unlock()
		x.stats.early.Add(-1)
		x.stats.active.Inc()
		x.env.Emit("dialog", x.event("start", d))
	case code >= 300:
		x.st.mu.Unlock()
		x.stats.failed.Inc()
		x.remove(d, "failed", false)
	default:
		x.st.mu.Unlock()
	}
}

// onRequest sees in-dialog requests before the script: an ACK confirms
// the dialog, a BYE ends it (Kamailio's DLG_EVENT_REQACK/REQBYE).
func (x *D) onRequest(m *core.Msg) bool {
	if x.st == nil || m.Req == nil || !(m.Req.IsAck() || m.Req.Method == sip.BYE) {
		return false
	}
	cid, ft, tt, ok := msgTags(m.Req)
	if !ok || tt == "" {
		return false
	}
	d, _ := x.st.find(cid, ft, tt)
	if d == nil {
		return false
	}
	if m.Req.IsAck() {
		x.st.mu.Lock()
		if d.State == StateConfirmedNA {
			d.State = StateConfirmed
		}
		x.st.mu.Unlock()
		return false
	}
	m.SetExt("dialog", d) // the script still sees the ended dialog ($dlg, $dlg_var)
	x.remove(d, "end", true)
	return false
}

func (x *D) expireEarly(d *Dialog) {
	x.st.mu.Lock()
	early := d.State < StateConfirmedNA && d.State != StateDeleted
	x.st.mu.Unlock()
	if early {
		x.stats.failed.Inc()
		x.remove(d, "failed", false)
	}
}

func (x *D) expire(d *Dialog) {
	x.st.mu.Lock()
	live := d.State == StateConfirmed || d.State == StateConfirmedNA
	x.st.mu.Unlock()
	if !live {
		return
	}
	x.stats.expired.Inc()
	if x.sendBye.Load() {
		x.bye(d, "all")
	}
	x.remove(d, "end", true)
}

// remove ends a dialog: state 5, out of the lists and profiles, the event,
// and (for an answered one) the end hooks.
func (x *D) remove(d *Dialog, event string, answered bool) {
	x.st.mu.Lock()
	if d.State == StateDeleted {
		x.st.mu.Unlock()
		return
	}
	wasActive := d.State >= StateConfirmedNA
	d.State = StateDeleted
	d.EndTS = x.now().Unix()
	if d.timer != nil {
		d.timer.Stop()
	}
	if x.st.byKey[dlgKey(d.CallID, d.FromTag)] == d {
		delete(x.st.byKey, dlgKey(d.CallID, d.FromTag))
	}
	delete(x.st.byID, hid(d.HEntry, d.HID))
	links := d.profiles
	d.profiles = nil
	info := x.info(d)
	x.st.mu.Unlock()
	if wasActive {
		x.stats.active.Add(-1)
	} else {
		x.stats.early.Add(-1)
	}
	x.pmu.Lock()
	for _, l := range links {
		x.dropMember(l)
	}
	x.pmu.Unlock()
	x.env.Emit("dialog", x.event(event, d))
	if answered && wasActive {
		x.hmu.Lock()
		hs := x.onEnds
		x.hmu.Unlock()
		for _, h := range hs {
			h(info)
		}
	}
}

// info copies d; called with x.st.mu held.
func (x *D) info(d *Dialog) Info {
	vars := make(map[string]string, len(d.vars))
	for k, v := range d.vars {
		vars[k] = v
	}
	return Info{CallID: d.CallID, FromTag: d.FromTag, ToTag: d.ToTag, FromURI: d.FromURI, ToURI: d.ToURI,
		StartTS: d.StartTS, EndTS: d.EndTS, Start: time.Unix(d.StartTS, 0), End: x.now(), State: d.State, Vars: vars}
}

func (x *D) event(kind string, d *Dialog) map[string]any {
	x.st.mu.Lock()
	defer x.st.mu.Unlock()
	return map[string]any{"event": kind, "h_entry": d.HEntry, "h_id": d.HID, "call-id": d.CallID,
		"from_uri": d.FromURI, "to_uri": d.ToURI, "from_tag": d.FromTag, "to_tag": d.ToTag,
		"state": d.State, "start_ts": d.StartTS, "end_ts": d.EndTS}
}

func (x *D) dlgSetTimeout(m *core.Msg, a []core.Val) (core.Val, error) {
	if a[0].Int <= 0 {
		return core.Null, fmt.Errorf("dlg_set_timeout: %d: want a positive number of seconds", a[0].Int)
	}
	d := x.current(m)
	if d == nil {
		return core.Int(-1), nil
	}
	x.st.mu.Lock()
	defer x.st.mu.Unlock()
	if d.State == StateDeleted {
		return core.Int(-1), nil
	}
	d.Lifetime = int(a[0].Int)
	if d.State >= StateConfirmedNA {
		if d.timer != nil {
			d.timer.Stop()
		}
		d.deadline = x.now().Add(time.Duration(d.Lifetime) * time.Second)
		d.timer = x.env.Clock.AfterFunc(time.Duration(d.Lifetime)*time.Second, func() { x.expire(d) })
	}
	return core.Int(1), nil
}

func (x *D) dlgBye(m *core.Msg, a []core.Val) (core.Val, error) {
	side := a[0].Str
	if side != "all" && side != "caller" && side != "callee" {
		return core.Null, fmt.Errorf("dlg_bye: side %q: want all, caller or callee", side)
	}
	d := x.current(m)
	if d == nil {
		return core.Int(-1), nil
	}
	x.st.mu.Lock()
	ok := d.State == StateConfirmed || d.State == StateConfirmedNA
	x.st.mu.Unlock()
	if !ok {
		return core.Int(-1), nil
	}
	if err := x.bye(d, side); err != nil {
		x.env.Log.Warn("dialog: dlg_bye: "+err.Error(), "call_id", d.CallID, "at", m.Pos())
		return core.Int(-1), nil
	}
	x.remove(d, "end", true)
	return core.Int(1), nil
}

// bye sends BYEs through tm to one side or both.
func (x *D) bye(d *Dialog, side string) error {
	t, err := tm.Of(x.env)
	if err != nil {
		return err
	}
	x.st.mu.Lock()
	var reqs []*tm.LocalRequest
	if side == "all" || side == "callee" {
		cs, _ := strconv.ParseUint(d.CallerCSeq, 10, 32)
		r, err := byeRequest(d.CalleeContact, d.FromURI, d.FromTag, d.ToURI, d.ToTag, d.CallID, uint32(cs)+1)
		if err != nil {
			x.st.mu.Unlock()
			return fmt.Errorf("BYE to the callee: %w", err)
		}
		reqs = append(reqs, &tm.LocalRequest{Req: r})
	}
	if side == "all" || side == "caller" {
		cs, _ := strconv.ParseUint(d.CalleeCSeq, 10, 32)
		r, err := byeRequest(d.CallerContact, d.ToURI, d.ToTag, d.FromURI, d.FromTag, d.CallID, uint32(cs)+1)
		if err != nil {
			x.st.mu.Unlock()
			return fmt.Errorf("BYE to the caller: %w", err)
		}
		// The caller is reached where its INVITE came from (it may be behind NAT).
		reqs = append(reqs, &tm.LocalRequest{Req: r, Dst: d.caller})
	}
	x.st.mu.Unlock()
	var first error
	for _, lr := range reqs {
		lr.OnReply = func(*sip.Response) {}
		if err := t.SendRequest(lr); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func byeRequest(ruri, fromURI, fromTag, toURI, toTag, callID string, cseq uint32) (*sip.Request, error) {
	u, err := core.ParseURI(ruri)
	if err != nil {
		return nil, fmt.Errorf("contact %q: %w", ruri, err)
	}
	fu, err := core.ParseURI(fromURI)
	if err != nil {
		return nil, err
	}
	tu, err := core.ParseURI(toURI)
	if err != nil {
		return nil, err
	}
	r := sip.NewRequest(sip.BYE, u)
	fp, tp := sip.NewParams(), sip.NewParams()
	fp.Add("tag", fromTag)
	if toTag != "" {
		tp.Add("tag", toTag)
	}
	r.AppendHeader(&sip.FromHeader{Address: fu, Params: fp})
	r.AppendHeader(&sip.ToHeader{Address: tu, Params: tp})
	cid := sip.CallIDHeader(callID)
	r.AppendHeader(&cid)
	r.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: sip.BYE})
	return r, nil
}

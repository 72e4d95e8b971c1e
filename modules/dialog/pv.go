package dialog

import (
	"context"
	"fmt"

	"github.com/kamgo/kamgo/modules/core"
)

// pendingVars are $dlg_var values set before dlg_manage created the dialog.
type pendingVars struct {
	vars  map[string]string
	order []string
}

func setVar(vars *map[string]string, order *[]string, k, v string, del bool) {
	if del {
		if _, ok := (*vars)[k]; ok {
			delete(*vars, k)
			for i, n := range *order {
				if n == k {
					*order = append((*order)[:i:i], (*order)[i+1:]...)
					break
				}
			}
		}
		return
	}
	if *vars == nil {
		*vars = map[string]string{}
	}
	if _, ok := (*vars)[k]; !ok {
		*order = append(*order, k)
	}
	(*vars)[k] = v
}

func (x *D) varGet(m *core.Msg, name string) core.Val {
	if d := x.current(m); d != nil {
		x.st.mu.Lock()
		defer x.st.mu.Unlock()
		if v, ok := d.vars[name]; ok {
			return core.Str(v)
		}
		return core.Null
	}
	if pv, ok := m.Ext["dialog.vars"].(*pendingVars); ok {
		if v, ok := pv.vars[name]; ok {
			return core.Str(v)
		}
	}
	return core.Null
}

func (x *D) varSet(m *core.Msg, name string, v core.Val) error {
	if err := core.CheckText("$dlg_var value", v.String()); err != nil {
		return err
	}
	if d := x.current(m); d != nil {
		x.st.mu.Lock()
		defer x.st.mu.Unlock()
		setVar(&d.vars, &d.varOrder, name, v.String(), v.IsNull())
		return nil
	}
	pv, ok := m.Ext["dialog.vars"].(*pendingVars)
	if !ok {
		pv = &pendingVars{}
		m.SetExt("dialog.vars", pv)
	}
	setVar(&pv.vars, &pv.order, name, v.String(), v.IsNull())
	return nil
}

func (x *D) dlgPV(m *core.Msg, attr string) core.Val {
	d := x.current(m)
	if d == nil {
		return core.Null
	}
	x.st.mu.Lock()
	defer x.st.mu.Unlock()
	switch attr {
	case "h_id":
		return core.Int(int(d.HID))
	case "h_entry":
		return core.Int(int(d.HEntry))
	case "ref":
		return core.Int(1)
	case "state":
		return core.Int(d.State)
	case "callid":
		return core.Str(d.CallID)
	case "from_uri":
		return core.Str(d.FromURI)
	case "from_tag":
		return core.Str(d.FromTag)
	case "from_cseq":
		return core.Str(d.CallerCSeq)
	case "from_contact":
		return core.Str(d.CallerContact)
	case "from_bindaddr":
		return core.Str(d.CallerSock)
	case "from_rs":
		return core.Str(d.CallerRoute)
	case "to_uri":
		return core.Str(d.ToURI)
	case "to_tag":
		return core.Str(d.ToTag)
	case "to_cseq":
		return core.Str(d.CalleeCSeq)
	case "to_contact":
		return core.Str(d.CalleeContact)
	case "to_bindaddr":
		return core.Str(d.CalleeSock)
	case "to_rs":
		return core.Str(d.CalleeRoute)
	case "start_ts":
		return core.Int(int(d.StartTS))
	case "init_ts":
		return core.Int(int(d.InitTS))
	case "end_ts":
		return core.Int(int(d.EndTS))
	case "lifetime":
		return core.Int(d.Lifetime)
	case "timeout":
		if d.deadline.IsZero() {
			return core.Int(0)
		}
		return core.Int(int(d.deadline.Unix()))
	case "dflags", "sflags", "iflags":
		return core.Int(0)
	}
	return core.Null
}

// Profiles.

func (x *D) profileKind(name string) (values, ok bool) {
	x.pmu.Lock()
	defer x.pmu.Unlock()
	values, ok = x.profDefs[name]
	return
}

func (x *D) checkProfile(m *core.Msg, fn, name string, withValue bool) bool {
	values, ok := x.profileKind(name)
	switch {
	case !ok:
		x.env.Log.Error(fmt.Sprintf("dialog: %s: profile %q is not defined (modparam profiles_with_value / profiles_no_value)", fn, name), "at", m.Pos())
		return false
	case values != withValue && withValue:
		x.env.Log.Error(fmt.Sprintf("dialog: %s: profile %q has no values", fn, name), "at", m.Pos())
		return false
	}
	return true
}

func (x *D) dropMember(l profileLink) {
	vs := x.members[l.name]
	if vs == nil {
		return
	}
	if vs[l.value]--; vs[l.value] <= 0 {
		delete(vs, l.value)
	}
}

func (x *D) setProfile(m *core.Msg, name, value string, withValue bool) (core.Val, error) {
	if !x.checkProfile(m, "set_dlg_profile", name, withValue) {
		return core.Int(-1), nil
	}
	if v, _ := x.profileKind(name); !v {
		value = ""
	}
	d := x.current(m)
	if d == nil {
		x.env.Log.Warn("dialog: set_dlg_profile: no dialog (call dlg_manage first)", "at", m.Pos())
		return core.Int(-1), nil
	}
	x.st.mu.Lock()
	defer x.st.mu.Unlock()
	if d.State == StateDeleted {
		return core.Int(-1), nil
	}
	for _, l := range d.profiles {
		if l.name == name && l.value == value {
			return core.Int(1), nil
		}
	}
	d.profiles = append(d.profiles, profileLink{name, value})
	x.pmu.Lock()
	if x.members[name] == nil {
		x.members[name] = map[string]int{}
	}
	x.members[name][value]++
	x.pmu.Unlock()
	return core.Int(1), nil
}

func (x *D) unsetProfile(m *core.Msg, name, value string, withValue bool) (core.Val, error) {
	if !x.checkProfile(m, "unset_dlg_profile", name, withValue) {
		return core.Int(-1), nil
	}
	d := x.current(m)
	if d == nil {
		return core.Int(-1), nil
	}
	x.st.mu.Lock()
	defer x.st.mu.Unlock()
	for i, l := range d.profiles {
		if l.name == name && (l.value == value || !withValue) {
			d.profiles = append(d.profiles[:i:i], d.profiles[i+1:]...)
			x.pmu.Lock()
			x.dropMember(l)
			x.pmu.Unlock()
			return core.Int(1), nil
		}
	}
	return core.Int(-1), nil
}

func (x *D) isInProfile(m *core.Msg, name, value string) (core.Val, error) {
	if _, ok := x.profileKind(name); !ok {
		return core.Int(-1), nil
	}
	d := x.current(m)
	if d == nil {
		return core.Int(-1), nil
	}
	x.st.mu.Lock()
	defer x.st.mu.Unlock()
	for _, l := range d.profiles {
		if l.name == name && (value == "" || l.value == value) {
			return core.Int(1), nil
		}
	}
	return core.Int(-1), nil
}

// ProfileSize is the number of dialogs in a profile (with value; "" all).
func (x *D) ProfileSize(name, value string) (int, bool) {
	x.pmu.Lock()
	defer x.pmu.Unlock()
	if _, ok := x.profDefs[name]; !ok {
		return 0, false
	}
	n := 0
	for v, c := range x.members[name] {
		if value == "" || v == value {
			n += c
		}
	}
	return n, true
}

func (x *D) profileSizePV(m *core.Msg, name, value, pvName string) (core.Val, error) {
	pv, err := m.Env.ParsePV(pvName)
	if err != nil {
		return core.Null, fmt.Errorf("get_profile_size: %w", err)
	}
	n, ok := x.ProfileSize(name, value)
	if !ok {
		x.env.Log.Error(fmt.Sprintf("dialog: get_profile_size: profile %q is not defined", name), "at", m.Pos())
		return core.Int(-1), nil
	}
	if err := pv.Set(m, core.Int(n)); err != nil {
		return core.Null, fmt.Errorf("get_profile_size: %w", err)
	}
	return core.Int(1), nil
}

// RPCs.

func (x *D) rpcList(ctx bool) []map[string]any {
	out := []map[string]any{}
	if x.st == nil {
		return out
	}
	now := x.now()
	for _, d := range x.st.list() {
		x.st.mu.Lock()
		timeout := int64(0)
		if !d.deadline.IsZero() {
			timeout = int64(d.deadline.Sub(now) / 1e9)
		}
		e := map[string]any{
			"h_entry": d.HEntry, "h_id": d.HID, "ref": 1, "call-id": d.CallID,
			"from_uri": d.FromURI, "to_uri": d.ToURI, "state": d.State,
			"start_ts": d.StartTS, "init_ts": d.InitTS, "end_ts": d.EndTS,
			"timeout": timeout, "lifetime": d.Lifetime, "dflags": 0, "sflags": 0, "iflags": 0,
			"caller": map[string]any{"tag": d.FromTag, "contact": d.CallerContact, "cseq": d.CallerCSeq, "route_set": d.CallerRoute, "socket": d.CallerSock},
			"callee": map[string]any{"tag": d.ToTag, "contact": d.CalleeContact, "cseq": d.CalleeCSeq, "route_set": d.CalleeRoute, "socket": d.CalleeSock},
		}
		if ctx {
			profiles := []map[string]string{}
			for _, l := range d.profiles {
				profiles = append(profiles, map[string]string{l.name: l.value})
			}
			vars := []map[string]string{}
			for _, k := range d.varOrder {
				vars = append(vars, map[string]string{k: d.vars[k]})
			}
			e["profiles"], e["variables"] = profiles, vars
		}
		x.st.mu.Unlock()
		out = append(out, e)
	}
	return out
}

func (x *D) rpcEnd(_ context.Context, args core.RPCArgs) (any, error) {
	he, err := args.Int(0)
	if err != nil {
		return nil, err
	}
	hi, err := args.Int(1)
	if err != nil {
		return nil, err
	}
	x.st.mu.Lock()
	d := x.st.byID[hid(uint32(he), uint32(hi))]
	x.st.mu.Unlock()
	if d == nil {
		return nil, &core.RPCError{Code: 404, Message: "Requested Dialog not found"}
	}
	x.st.mu.Lock()
	ok := d.State == StateConfirmed || d.State == StateConfirmedNA
	x.st.mu.Unlock()
	if !ok {
		return nil, &core.RPCError{Code: 500, Message: "Dialog is not confirmed"}
	}
	if err := x.bye(d, "all"); err != nil {
		return nil, &core.RPCError{Code: 500, Message: "Failed to end dialog: " + err.Error()}
	}
	x.remove(d, "end", true)
	return nil, nil
}

func (x *D) statsActive() map[string]int {
	out := map[string]int{"starting": 0, "connecting": 0, "answering": 0, "ongoing": 0, "all": 0}
	if x.st == nil {
		return out
	}
	x.st.mu.Lock()
	defer x.st.mu.Unlock()
	for _, d := range x.st.byID {
		switch d.State {
		case StateUnconfirmed:
			out["starting"]++
		case StateEarly:
			out["connecting"]++
		case StateConfirmedNA:
			out["answering"]++
		case StateConfirmed:
			out["ongoing"]++
		}
		out["all"]++
	}
	return out
}

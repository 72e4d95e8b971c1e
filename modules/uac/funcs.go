package uac

import (
	"strings"

	"github.com/kamgo/kamgo/modules/core"
)

// regFuncs are the registration-side script functions (Kamailio's
// KSR.uac.uac_reg_*; every one returns an int).
func (u *UAC) regFuncs() []core.Func {
	s1 := []core.ArgType{core.ArgStr}
	s2 := []core.ArgType{core.ArgStr, core.ArgStr}
	return []core.Func{
		{Name: "uac_reg_lookup", Args: s2, Ret: core.RetInt,
			Doc: "(l_uuid, dst) write sip:l_username@l_domain of the record into the pseudo-variable dst; 1 found, -1 not found or dst not writable",
			Fn:  u.fRegLookup},
		{Name: "uac_reg_lookup_uri", Args: s2, Ret: core.RetInt,
			Doc: "(uri, dst) write the l_uuid of the record whose l_username is the URI's user (and l_domain its host with reg_use_domain 1) into the pseudo-variable dst; 1 found, -1 not found",
			Fn:  u.fRegLookupURI},
		{Name: "uac_reg_status", Args: s1, Ret: core.RetInt,
			Doc: "(l_uuid) 1 registered, -2 a REGISTER in progress, -3 disabled, -99 otherwise (e.g. waiting for a retry), -1 not found",
			Fn:  u.fRegStatus},
		{Name: "uac_reg_enable", Args: s2, Ret: core.RetInt,
			Doc: "(attr, val) enable the record (l_uuid, l_username, r_username or auth_username = val) and register it; 1 ok, -1 not found",
			Fn:  func(m *core.Msg, a []core.Val) (core.Val, error) { return u.fRecord(a, u.enable) }},
		{Name: "uac_reg_disable", Args: s2, Ret: core.RetInt,
			Doc: "(attr, val) disable the record, unregistering it when registered; 1 ok, -1 not found",
			Fn:  func(m *core.Msg, a []core.Val) (core.Val, error) { return u.fRecord(a, u.disable) }},
		{Name: "uac_reg_refresh", Args: s1, Ret: core.RetInt,
			Doc: "(l_uuid) reload the record from the database; 1 ok, -1 not in the database or error",
			Fn:  u.fRegRefresh},
	}
}

func (u *UAC) fRegLookup(m *core.Msg, a []core.Val) (core.Val, error) {
	u.mu.Lock()
	r := u.recs[a[0].Str]
	var v string
	if r != nil && r.invalid == "" {
		v = "sip:" + r.LUsername + "@" + r.LDomain
	}
	u.unlock()
	if v == "" {
		return core.Int(-1), nil
	}
	pv, err := m.Env.ParsePV(a[1].Str)
	if err != nil {
		return core.Int(-1), nil
	}
	if err := pv.Set(m, core.Str(v)); err != nil {
		return core.Int(-1), nil
	}
	return core.Int(1), nil
}

// Status is uac_reg_status's answer for l_uuid.
func (u *UAC) Status(uuid string) int {
	u.mu.Lock()
	defer u.unlock()
	r := u.recs[uuid]
	switch {
	case r == nil || r.LUUID != uuid:
		return -1
	case r.flags&flagOnline != 0 && r.timerExpires.After(u.now()):
		return 1
	case r.flags&flagOngoing != 0:
		return -2
	case r.flags&flagDisabled != 0:
		return -3
	}
	return -99
}

func (u *UAC) fRegStatus(m *core.Msg, a []core.Val) (core.Val, error) {
	return core.Int(u.Status(a[0].Str)), nil
}

func (u *UAC) fRecord(a []core.Val, f func(r *record) error) (core.Val, error) {
	u.mu.Lock()
	defer u.unlock()
	r, err := u.find(a[0].Str, a[1].Str)
	if err != nil {
		return core.Int(-1), nil
	}
	if err := f(r); err != nil {
		return core.Int(-1), nil
	}
	return core.Int(1), nil
}

func (u *UAC) fRegRefresh(m *core.Msg, a []core.Val) (core.Val, error) {
	if err := u.Refresh(a[0].Str); err != nil {
		return core.Int(-1), nil
	}
	return core.Int(1), nil
}

func (u *UAC) fRegLookupURI(m *core.Msg, a []core.Val) (core.Val, error) {
	uri, err := core.ParseURI(a[0].Str)
	if err != nil || uri.User == "" {
		return core.Int(-1), nil
	}
	useDomain := u.regUseDomain.Load() == 1
	var v string
	u.mu.Lock()
	for _, r := range u.order {
		if r.invalid == "" && r.LUsername == uri.User && (!useDomain || strings.EqualFold(r.LDomain, uri.Host)) {
			v = r.LUUID
			break
		}
	}
	u.unlock()
	if v == "" {
		return core.Int(-1), nil
	}
	pv, err := m.Env.ParsePV(a[1].Str)
	if err != nil || pv.Set(m, core.Str(v)) != nil {
		return core.Int(-1), nil
	}
	return core.Int(1), nil
}

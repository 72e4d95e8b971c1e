package core

import (
	"fmt"

	"github.com/emiago/sipgo/sip"
)

func pvGet(m *Msg, a []Val) (*PV, error) { return m.Env.ParsePV(a[0].Str) }

func pvModule(env *Env) *Module {
	getter := func(name, doc string, args []ArgType, null func(a []Val) Val) Func {
		return Func{Name: name, Args: args, Ret: RetXVal, Doc: doc,
			Fn: func(m *Msg, a []Val) (Val, error) {
				pv, err := pvGet(m, a)
				if err != nil {
					return Null, err
				}
				v := pv.Get(m)
				if v.IsNull() && null != nil {
					return null(a), nil
				}
				return v, nil
			}}
	}
	return &Module{Name: "pv", Doc: "pseudo-variables", Funcs: []Func{
		getter("get", "value of a PV: str, int or None", []ArgType{ArgStr}, nil),
		getter("gete", "like get, $null gives \"\"", []ArgType{ArgStr}, func([]Val) Val { return Str("") }),
		getter("getw", "like get, $null gives \"<null>\"", []ArgType{ArgStr}, func([]Val) Val { return Str("<null>") }),
		getter("getvs", "like get, $null gives arg 2", []ArgType{ArgStr, ArgStr}, func(a []Val) Val { return a[1] }),
		getter("getvn", "like get, $null gives arg 2", []ArgType{ArgStr, ArgInt}, func(a []Val) Val { return a[1] }),
		{Name: "geti", Args: []ArgType{ArgStr}, Ret: RetInt, Doc: "integer value; $null or a non-number gives 0",
			Fn: func(m *Msg, a []Val) (Val, error) {
				pv, err := pvGet(m, a)
				if err != nil {
					return Null, err
				}
				i, _ := pv.Get(m).AsInt()
				return Int(int(i)), nil
			}},
		{Name: "sets", Args: []ArgType{ArgStr, ArgStr}, Ret: RetBool, Doc: "assign a string; a read-only PV is an error",
			Fn: func(m *Msg, a []Val) (Val, error) { return pvSet(m, a[0].Str, a[1]) }},
		{Name: "seti", Args: []ArgType{ArgStr, ArgInt}, Ret: RetBool, Doc: "assign an integer; a read-only PV is an error",
			Fn: func(m *Msg, a []Val) (Val, error) { return pvSet(m, a[0].Str, a[1]) }},
		{Name: "unset", Args: []ArgType{ArgStr}, Ret: RetBool, Doc: "assign $null",
			Fn: func(m *Msg, a []Val) (Val, error) { return pvSet(m, a[0].Str, Null) }},
		{Name: "is_null", Args: []ArgType{ArgStr}, Ret: RetBool, Doc: "true if the PV is $null; an invalid name is an error",
			Fn: func(m *Msg, a []Val) (Val, error) {
				pv, err := pvGet(m, a)
				if err != nil {
					return Null, err
				}
				return Bool(pv.Get(m).IsNull()), nil
			}},
	}}
}

func pvSet(m *Msg, name string, v Val) (Val, error) {
	pv, err := m.Env.ParsePV(name)
	if err != nil {
		return Null, err
	}
	if err := pv.Set(m, v); err != nil {
		return Null, err
	}
	return Bool(true), nil
}

// SetHeaders replaces the header list of msg with hs, in that order.
func SetHeaders(msg sip.Message, hs []sip.Header) {
	hr, ok := msg.(headerRemover)
	if !ok {
		return
	}
	for _, h := range append([]sip.Header(nil), Headers(msg)...) {
		hr.RemoveHeader(h.Name())
	}
	for _, h := range hs {
		msg.AppendHeader(h)
	}
}

// hdrInsertAt is KSR.hdr.append_after and insert_before: (text, name).
func hdrInsertAt(after bool) func(m *Msg, a []Val) (Val, error) {
	return func(m *Msg, a []Val) (Val, error) {
		msg, hs, err := hdrText(m, a[0].Str)
		if err != nil {
			return Null, err
		}
		return IntRet(insertAt(msg, hs, a[1].Str, after)), nil
	}
}

func insertAt(msg sip.Message, newHs []sip.Header, name string, after bool) bool {
	c := CanonicalHeader(name)
	old := Headers(msg)
	for i, h := range old {
		if HeaderIs(h, c) {
			at := i
			if after {
				at = i + 1
			}
			out := make([]sip.Header, 0, len(old)+len(newHs))
			out = append(out, old[:at]...)
			out = append(out, newHs...)
			out = append(out, old[at:]...)
			SetHeaders(msg, out)
			return true
		}
	}
	return false
}

func hdrText(m *Msg, text string) (sip.Message, []sip.Header, error) {
	msg := m.Message()
	if msg == nil {
		return nil, nil, fmt.Errorf("no message")
	}
	hs, err := ParseHeaderText(text)
	return msg, hs, err
}

func hdrModule(env *Env) *Module {
	getIdx := func(m *Msg, name string, idx int) Val {
		msg := m.Message()
		if msg == nil {
			return Null
		}
		hs := FindHeaders(msg, name)
		if idx < 0 {
			idx += len(hs)
		}
		if idx < 0 || idx >= len(hs) {
			return Null
		}
		return Str(hs[idx].Value())
	}
	get := func(name, doc string, null Val) Func {
		return Func{Name: name, Args: []ArgType{ArgStr}, Ret: RetXVal, Doc: doc,
			Fn: func(m *Msg, a []Val) (Val, error) {
				v := getIdx(m, a[0].Str, 0)
				if v.IsNull() {
					return null, nil
				}
				return v, nil
			}}
	}
	return &Module{Name: "hdr", Doc: "header operations; changes are visible to later reads at once (Kamailio's lumps are not)", Funcs: []Func{
		{Name: "append", Args: []ArgType{ArgStr}, Ret: RetInt, Doc: "append \"Name: value\\r\\n\" after the last header",
			Fn: func(m *Msg, a []Val) (Val, error) {
				msg, hs, err := hdrText(m, a[0].Str)
				if err != nil {
					return Null, err
				}
				for _, h := range hs {
					msg.AppendHeader(h)
				}
				return Int(1), nil
			}},
		{Name: "append_after", Args: []ArgType{ArgStr, ArgStr}, Ret: RetInt, Doc: "(text, name): add after the first header named name; -1 if none",
			Fn: hdrInsertAt(true)},
		{Name: "insert", Args: []ArgType{ArgStr}, Ret: RetInt, Doc: "add before the first header",
			Fn: func(m *Msg, a []Val) (Val, error) {
				msg, hs, err := hdrText(m, a[0].Str)
				if err != nil {
					return Null, err
				}
				SetHeaders(msg, append(hs, Headers(msg)...))
				return Int(1), nil
			}},
		{Name: "insert_before", Args: []ArgType{ArgStr, ArgStr}, Ret: RetInt, Doc: "(text, name): add before the first header named name; -1 if none",
			Fn: hdrInsertAt(false)},
		{Name: "remove", Args: []ArgType{ArgStr}, Ret: RetInt, Doc: "remove all headers with that name; 1 if any, -1 if none (Kamailio returns 1 always)",
			Fn: func(m *Msg, a []Val) (Val, error) {
				msg := m.Message()
				if msg == nil {
					return Int(-1), nil
				}
				return IntRet(RemoveHeaders(msg, a[0].Str) > 0), nil
			}},
		{Name: "rmappend", Args: []ArgType{ArgStr, ArgStr}, Ret: RetInt, Doc: "(name, text): remove headers named name, then append text",
			Fn: func(m *Msg, a []Val) (Val, error) {
				msg, hs, err := hdrText(m, a[1].Str)
				if err != nil {
					return Null, err
				}
				RemoveHeaders(msg, a[0].Str)
				for _, h := range hs {
					msg.AppendHeader(h)
				}
				return Int(1), nil
			}},
		{Name: "is_present", Args: []ArgType{ArgStr}, Ret: RetInt, Doc: "1 if a header with that name exists, -1 if not",
			Fn: func(m *Msg, a []Val) (Val, error) {
				msg := m.Message()
				return IntRet(msg != nil && FirstHeader(msg, a[0].Str) != nil), nil
			}},
		get("get", "body of the first header with that name, or None", Null),
		get("gete", "like get, absent gives \"\"", Str("")),
		get("getw", "like get, absent gives \"<null>\"", Str("<null>")),
		{Name: "get_idx", Args: []ArgType{ArgStr, ArgInt}, Ret: RetXVal, Doc: "(name, i): body of the i-th header with that name (negative counts from the end)",
			Fn: func(m *Msg, a []Val) (Val, error) { return getIdx(m, a[0].Str, int(a[1].Int)), nil }},
		{Name: "append_to_reply", Args: []ArgType{ArgStr}, Ret: RetInt, Doc: "header text added to the next locally generated reply",
			Fn: func(m *Msg, a []Val) (Val, error) {
				hs, err := ParseHeaderText(a[0].Str)
				if err != nil {
					return Null, err
				}
				m.ReplyHeaders = append(m.ReplyHeaders, hs...)
				return Int(1), nil
			}},
	}}
}

package htable

import (
	"fmt"
	"strings"

	"github.com/kamgo/kamgo/modules/core"
)

// pvGet is a PV read: resolve $sht's table=>key, read it, or log why not
// and give null.
func (h *HT) pvGet(pv string, read func(table, key string) (core.Val, error)) func(*core.Msg, string) core.Val {
	return func(m *core.Msg, arg string) core.Val {
		table, key, err := h.resolve(m, arg)
		if err == nil {
			var v core.Val
			if v, err = read(table, key); err == nil {
				return v
			}
		}
		pvErr(m, pv, err)
		return core.Null
	}
}

// pvs are htable's pseudo-variables, bound to this instance; the module
// table declares them.
func (h *HT) pvs() []core.PVDef {
	defs := []core.PVDef{{Name: "sht", HasArg: true,
		Doc: "htable item: $sht(table=>key); the key may contain PVs ($sht(ipban=>$si)); setting $null removes it",
		Get: h.pvGet("$sht", h.Get),
		Set: func(m *core.Msg, arg string, v core.Val) error {
			table, key, err := h.resolve(m, arg)
			if err != nil {
				return err
			}
			return h.Set(table, key, v, nil)
		}}, {Name: "shtex", HasArg: true,
		Doc: "seconds until the htable item expires (0: never, or no such item); setting it is sht_setex",
		Get: h.pvGet("$shtex", func(table, key string) (core.Val, error) {
			n, err := h.ExpireIn(table, key)
			return core.Val{Kind: core.KInt, Int: n}, err
		}),
		Set: func(m *core.Msg, arg string, v core.Val) error {
			table, key, err := h.resolve(m, arg)
			if err != nil {
				return err
			}
			n, ok := v.AsInt()
			if !ok {
				return fmt.Errorf("$shtex(%s): %q is not a number of seconds", arg, v.String())
			}
			_, err = h.SetExpire(table, key, n)
			return err
		}}}
	for _, x := range []struct {
		name  string
		delta int64
	}{{"shtinc", 1}, {"shtdec", -1}} {
		delta, name := x.delta, x.name
		defs = append(defs, core.PVDef{Name: name, HasArg: true,
			Doc: fmt.Sprintf("reading it adds %+d to the htable item atomically and gives the new value (as sht_inc/sht_dec)", delta),
			Get: func(m *core.Msg, arg string) core.Val {
				table, key, err := h.resolve(m, arg)
				if err == nil {
					var v core.Val
					if v, err = h.Add(m, table, key, delta); err == nil {
						return v
					}
				}
				pvErr(m, "$"+name, err)
				return core.Null
			}})
	}
	return defs
}

// SplitName splits "table=>key".
func SplitName(arg string) (table, key string, err error) {
	table, key, ok := strings.Cut(arg, "=>")
	if !ok || table == "" {
		return "", "", fmt.Errorf("htable: %q: want table=>key", arg)
	}
	return table, key, nil
}

func (h *HT) resolve(m *core.Msg, arg string) (string, string, error) {
	table, key, err := SplitName(arg)
	if err != nil {
		return "", "", err
	}
	if strings.IndexByte(key, '$') >= 0 {
		key = core.ExpandPV(m, key)
	}
	return table, key, nil
}

// pvErr logs a failed PV read: a PV read cannot return an error, so the
// unknown table or bad name is logged at ERR and the value is $null.
func pvErr(m *core.Msg, pv string, err error) {
	if m.Env != nil && m.Env.Log != nil {
		m.Env.Log.Error(pv+": "+err.Error(), "at", m.Pos())
	}
}

package starlark

import (
	"fmt"

	"github.com/kamgo/kamgo/modules/core"
	sk "go.starlark.net/starlark"
)

// msgValue is the read-only msg argument of callbacks.
type msgValue struct{ m *core.Msg }

var msgAttrs = []string{"Type", "body", "call_id", "dst_uri", "from_uri", "hdr", "method", "proto", "reason", "ruri", "src_ip", "src_port", "status", "to_uri", "type"}

func (v *msgValue) String() string        { return fmt.Sprintf("<msg %s>", v.m.Method()) }
func (v *msgValue) Type() string          { return "msg" }
func (v *msgValue) Freeze()               {}
func (v *msgValue) Truth() sk.Bool        { return true }
func (v *msgValue) Hash() (uint32, error) { return 0, fmt.Errorf("unhashable: msg") }
func (v *msgValue) AttrNames() []string   { return msgAttrs }

func (v *msgValue) pv(name string) sk.Value {
	pv, err := v.m.Env.ParsePV(name)
	if err != nil {
		return sk.None
	}
	return fromVal(pv.Get(v.m))
}

func (v *msgValue) Attr(name string) (sk.Value, error) {
	m := v.m
	switch name {
	case "type", "Type":
		if m.IsRequest() {
			return sk.String("SIP_REQUEST"), nil
		}
		return sk.String("SIP_REPLY"), nil
	case "method":
		return sk.String(m.Method()), nil
	case "ruri":
		return v.pv("$ru"), nil
	case "status":
		return v.pv("$rs"), nil
	case "reason":
		return v.pv("$rr"), nil
	case "src_ip":
		return sk.String(m.SrcIP), nil
	case "src_port":
		return sk.MakeInt(m.SrcPort), nil
	case "proto":
		return sk.String(m.Proto), nil
	case "call_id":
		return v.pv("$ci"), nil
	case "from_uri":
		return v.pv("$fu"), nil
	case "to_uri":
		return v.pv("$tu"), nil
	case "dst_uri":
		return v.pv("$du"), nil
	case "body":
		return v.pv("$rb"), nil
	case "hdr":
		return sk.NewBuiltin("msg.hdr", func(_ *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
			var name string
			if err := sk.UnpackPositionalArgs(b.Name(), args, kw, 1, &name); err != nil {
				return nil, err
			}
			if msg := m.Message(); msg != nil {
				if h := core.FirstHeader(msg, name); h != nil {
					return sk.String(h.Value()), nil
				}
			}
			return sk.None, nil
		}), nil
	}
	return nil, nil
}

package htable

import (
	"context"
	"fmt"
	"time"

	"github.com/kamgo/kamgo/modules/core"
)

func valJSON(v core.Val) (any, string) {
	if v.Kind == core.KStr {
		return v.Str, "str"
	}
	return v.Int, "int"
}

func (h *HT) rpcTable(args core.RPCArgs) (*Table, error) {
	name, err := args.String(0)
	if err != nil || name == "" {
		return nil, &core.RPCError{Code: 500, Message: "No htable name given"}
	}
	t := h.Table(name)
	if t == nil {
		return nil, &core.RPCError{Code: 500, Message: fmt.Sprintf("No such htable: %q", name)}
	}
	return t, nil
}

func rpcKey(args core.RPCArgs) (string, error) {
	k, err := args.String(1)
	if err != nil {
		return "", &core.RPCError{Code: 500, Message: "Not enough parameters (htable name and key name)"}
	}
	return k, nil
}

// rpcTableKey reads the (htable, key) params most methods start with.
func (h *HT) rpcTableKey(args core.RPCArgs) (*Table, string, error) {
	t, err := h.rpcTable(args)
	if err != nil {
		return nil, "", err
	}
	k, err := rpcKey(args)
	if err != nil {
		return nil, "", err
	}
	return t, k, nil
}

func (h *HT) rpcMethods() []core.RPCMethod {
	tbl := core.RPCParam{Name: "htable", Type: "string", Doc: "table name"}
	key := core.RPCParam{Name: "key", Type: "string", Doc: "item name"}
	set := func(isInt bool) func(ctx context.Context, args core.RPCArgs) (any, error) {
		return func(ctx context.Context, args core.RPCArgs) (any, error) {
			t, k, err := h.rpcTableKey(args)
			if err != nil {
				return nil, err
			}
			var v core.Val
			if isInt {
				n, err := args.Int(2)
				if err != nil {
					return nil, &core.RPCError{Code: 500, Message: "Not enough parameters (htable name, key name and integer value)"}
				}
				v = core.Int(n)
			} else {
				s, err := args.String(2)
				if err != nil {
					return nil, &core.RPCError{Code: 500, Message: "Not enough parameters (htable name, key name and value)"}
				}
				v = core.Str(s)
			}
			if err := h.Set(t.Def().Name, k, v, nil); err != nil {
				return nil, &core.RPCError{Code: 500, Message: err.Error()}
			}
			return nil, nil
		}
	}
	return []core.RPCMethod{
		{Name: "htable.get", Doc: "one item of a table", ReadOnly: true, Params: []core.RPCParam{tbl, key},
			Result:  `{"item": {"name": key, "value": str|int, "type": "str"|"int", "flags": 2 str / 0 int, "expire": "YYYY-MM-DD HH:MM:SS" (UTC) | "NEVER"}}; 404 when the key does not exist`,
			Handler: h.rpcHtableGet},
		{Name: "htable.sets", Doc: "set an item to a str value", Params: []core.RPCParam{tbl, key, {Name: "value", Type: "string"}},
			Result: "null", Handler: set(false)},
		{Name: "htable.seti", Doc: "set an item to an int value", Params: []core.RPCParam{tbl, key, {Name: "value", Type: "int"}},
			Result: "null", Handler: set(true)},
		{Name: "htable.delete", Doc: "remove one item", Params: []core.RPCParam{tbl, key}, Result: "null",
			Handler: h.rpcHtableDelete},
		{Name: "htable.reset", Doc: "remove every item of a table", Params: []core.RPCParam{tbl}, Result: "null",
			Handler: h.rpcHtableReset},
		{Name: "htable.dump", Doc: "the items of a table, by slot", ReadOnly: true, Params: []core.RPCParam{tbl},
			Result:  `[{"entry": slot index, "size": items, "slot": [{"name": key, "value": str|int, "type": "str"|"int"}]}] (non-empty slots only, names sorted)`,
			Handler: h.rpcHtableDump},
		{Name: "htable.listTables", Doc: "the defined tables", ReadOnly: true,
			Result:  `[{"name", "dbtable", "dbmode", "expire", "updateexpire", "size", "dmqreplicate", "initval"?}] in definition order; size is the slot count`,
			Handler: h.rpcHtableListTables},
		{Name: "htable.stats", Doc: "items per table and per slot", ReadOnly: true,
			Result:  `[{"name", "slots", "all", "min", "max"}] (items per slot, expired items not yet swept included)`,
			Handler: h.rpcHtableStats},
	}
}

// rpcHtableGet is the RPC method htable.get.
func (h *HT) rpcHtableGet(ctx context.Context, args core.RPCArgs) (any, error) {
	t, k, err := h.rpcTableKey(args)
	if err != nil {
		return nil, err
	}
	var gone []Expired
	v, exp, ok := t.Get(k, h.now(), &gone)
	h.done(gone, false)
	if !ok {
		return nil, &core.RPCError{Code: 404, Message: "Key name doesn't exist in htable."}
	}
	val, typ := valJSON(v)
	flags := 0
	if typ == "str" {
		flags = 2
	}
	expire := "NEVER"
	if !exp.IsZero() {
		expire = exp.UTC().Format(time.DateTime)
	}
	return map[string]any{"item": map[string]any{"name": k, "value": val, "type": typ, "flags": flags, "expire": expire}}, nil
}

// rpcHtableDelete is the RPC method htable.delete.
func (h *HT) rpcHtableDelete(ctx context.Context, args core.RPCArgs) (any, error) {
	t, k, err := h.rpcTableKey(args)
	if err != nil {
		return nil, err
	}
	t.Delete(k)
	return nil, nil
}

// rpcHtableReset is the RPC method htable.reset.
func (h *HT) rpcHtableReset(ctx context.Context, args core.RPCArgs) (any, error) {
	t, err := h.rpcTable(args)
	if err != nil {
		return nil, err
	}
	t.Reset()
	return nil, nil
}

// rpcHtableDump is the RPC method htable.dump.
func (h *HT) rpcHtableDump(ctx context.Context, args core.RPCArgs) (any, error) {
	t, err := h.rpcTable(args)
	if err != nil {
		return nil, err
	}
	now := h.now()
	out := []any{}
	for i := range t.shards {
		es := t.Slot(i, now)
		if len(es) == 0 {
			continue
		}
		slot := make([]any, len(es))
		for j, e := range es {
			v, typ := valJSON(e.Val)
			slot[j] = map[string]any{"name": e.Name, "value": v, "type": typ}
		}
		out = append(out, map[string]any{"entry": i, "size": len(es), "slot": slot})
	}
	return out, nil
}

// rpcHtableListTables is the RPC method htable.listTables.
func (h *HT) rpcHtableListTables(ctx context.Context, args core.RPCArgs) (any, error) {
	out := []any{}
	for _, t := range h.Tables() {
		d := t.Def()
		ue := 0
		if d.UpdateExpire {
			ue = 1
		}
		row := map[string]any{"name": d.Name, "dbtable": d.DBTable, "dbmode": d.DBMode, "expire": d.AutoExpire,
			"updateexpire": ue, "size": len(t.shards), "dmqreplicate": d.DMQReplicate}
		if d.HasInitVal {
			row["initval"] = d.InitVal
		}
		out = append(out, row)
	}
	return out, nil
}

// rpcHtableStats is the RPC method htable.stats.
func (h *HT) rpcHtableStats(ctx context.Context, args core.RPCArgs) (any, error) {
	out := []any{}
	for _, t := range h.Tables() {
		ls := t.lens()
		all, mn, mx := 0, -1, 0
		for _, n := range ls {
			all += n
			if mn < 0 || n < mn {
				mn = n
			}
			mx = max(mx, n)
		}
		out = append(out, map[string]any{"name": t.Def().Name, "slots": len(ls), "all": all, "min": mn, "max": mx})
	}
	return out, nil
}

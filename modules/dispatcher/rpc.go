package dispatcher

import (
	"context"

	"github.com/kamgo/kamgo/modules/core"
)

func rpcErr(code int, msg string) error { return &core.RPCError{Code: code, Message: msg} }

// Kamailio 5.6's dispatcher.list shapes.
type listResult struct {
	NRSETS  int         `json:"NRSETS"`
	RECORDS []setRecord `json:"RECORDS"`
}

type setRecord struct {
	SET setBody `json:"SET"`
}

type setBody struct {
	ID      int          `json:"ID"`
	TARGETS []destRecord `json:"TARGETS"`
}

type destRecord struct {
	DEST destBody `json:"DEST"`
}

type destBody struct {
	URI      string    `json:"URI"`
	FLAGS    string    `json:"FLAGS"`
	PRIORITY int       `json:"PRIORITY"`
	ATTRS    attrsBody `json:"ATTRS"`
	// kamgo: the description column and the calls counted (algorithm 10).
	DESCRIPTION string `json:"DESCRIPTION,omitempty"`
	LOAD        int    `json:"LOAD"`
}

type attrsBody struct {
	BODY    string `json:"BODY"`
	DUID    string `json:"DUID"`
	MAXLOAD int    `json:"MAXLOAD"`
	WEIGHT  int    `json:"WEIGHT"`
	RWEIGHT int    `json:"RWEIGHT"`
	SOCKET  string `json:"SOCKET"`
}

// List is dispatcher.list's result.
func (d *DS) List() any {
	d.mu.Lock()
	defer d.mu.Unlock()
	res := listResult{NRSETS: len(d.ids), RECORDS: []setRecord{}}
	for _, id := range d.ids {
		s := d.sets[id]
		sb := setBody{ID: id, TARGETS: []destRecord{}}
		for _, x := range s.Dests {
			sb.TARGETS = append(sb.TARGETS, destRecord{DEST: destBody{URI: x.URI, FLAGS: stateString(x.Flags), PRIORITY: x.Priority,
				ATTRS:       attrsBody{BODY: x.Attrs, DUID: x.DUID, MAXLOAD: x.MaxLoad, WEIGHT: x.Weight, RWEIGHT: x.RWeight, SOCKET: x.Socket},
				DESCRIPTION: x.Description, LOAD: x.load}})
		}
		res.RECORDS = append(res.RECORDS, setRecord{SET: sb})
	}
	return res
}

func (d *DS) rpcMethods() []core.RPCMethod {
	return []core.RPCMethod{
		{Name: "dispatcher.list", Doc: "List the destination sets with their state.", ReadOnly: true,
			Result:  `{"NRSETS": n, "RECORDS": [{"SET": {"ID": n, "TARGETS": [{"DEST": {"URI", "FLAGS": "AX|AP|IP|TP|DX...", "PRIORITY", "ATTRS": {"BODY","DUID","MAXLOAD","WEIGHT","RWEIGHT","SOCKET"}, "DESCRIPTION", "LOAD"}}]}}]}`,
			Handler: func(ctx context.Context, args core.RPCArgs) (any, error) { return d.List(), nil }},
		{Name: "dispatcher.set_state", Doc: "Set the state of a destination (a, i, t or d, with p for probing); address \"all\" for every destination of the group.",
			Params: []core.RPCParam{{Name: "state", Type: "string"}, {Name: "group", Type: "int"}, {Name: "address", Type: "string"}},
			Result: `{}; 500 "Invalid State Parameter", 500 "State Update Failed"`, ParamError: &core.RPCError{Code: 500, Message: "Invalid Parameters"},
			Handler: d.rpcSetState},
		{Name: "dispatcher.reload", Doc: "Reload the destinations from the list file or the table (states of kept destinations stay).",
			Result: `{}; 500 "Reload Failed"`, Handler: func(ctx context.Context, args core.RPCArgs) (any, error) {
				if err := d.init(); err != nil {
					d.env.Log.Error("dispatcher: reload failed", "err", err)
					return nil, rpcErr(500, "Reload Failed")
				}
				return nil, nil
			}},
		{Name: "dispatcher.ping_active", Doc: "Read (no param) or set (0 or 1) whether probing runs.",
			Params: []core.RPCParam{{Name: "state", Type: "int", Optional: true}},
			Result: `{"PingState": n} or {"NewPingState": n, "OldPingState": n}; 500 "Ping State Update Failed"`,
			Handler: func(ctx context.Context, args core.RPCArgs) (any, error) {
				old := d.pingActive.Load()
				if args.Len() == 0 {
					return map[string]int64{"PingState": old}, nil
				}
				n, err := args.Int(0)
				if err != nil || (n != 0 && n != 1) {
					return nil, rpcErr(500, "Ping State Update Failed")
				}
				d.pingActive.Store(int64(n))
				return map[string]int64{"NewPingState": int64(n), "OldPingState": old}, nil
			}},
	}
}

func (d *DS) rpcSetState(ctx context.Context, args core.RPCArgs) (any, error) {
	if args.Len() < 3 {
		return nil, rpcErr(500, "Invalid Parameters")
	}
	s, err1 := args.String(0)
	g, err2 := args.Int(1)
	addr, err3 := args.String(2)
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, rpcErr(500, "Invalid Parameters")
	}
	st, err := parseState(s)
	if err != nil {
		return nil, rpcErr(500, "Invalid State Parameter")
	}
	if d.setState(g, addr, st, "rpc") == 0 {
		return nil, rpcErr(500, "State Update Failed")
	}
	return nil, nil
}

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
	URI      string     `json:"URI"`
	FLAGS    string     `json:"FLAGS"`
	PRIORITY int        `json:"PRIORITY"`
	ATTRS    *attrsBody `json:"ATTRS,omitempty"` // as Kamailio: only with attrs
	// kamgo, with "full": the description column and the calls counted
	// (algorithm 10).
	DESCRIPTION *string `json:"DESCRIPTION,omitempty"`
	LOAD        *int    `json:"LOAD,omitempty"`
}

type attrsBody struct {
	BODY     string  `json:"BODY"`
	DUID     string  `json:"DUID"`
	MAXLOAD  int     `json:"MAXLOAD"`
	WEIGHT   int     `json:"WEIGHT"`
	RWEIGHT  int     `json:"RWEIGHT"`
	SOCKET   *string `json:"SOCKET"`
	SOCKNAME *string `json:"SOCKNAME"`
	OBPROXY  *string `json:"OBPROXY"`
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// List is dispatcher.list's result; full adds kamgo's DESCRIPTION and LOAD.
func (d *DS) List(full bool) any {
	d.mu.Lock()
	defer d.mu.Unlock()
	res := listResult{NRSETS: len(d.ids), RECORDS: []setRecord{}}
	// Kamailio lists the sets last first.
	for i := len(d.ids) - 1; i >= 0; i-- {
		id := d.ids[i]
		s := d.sets[id]
		sb := setBody{ID: id, TARGETS: []destRecord{}}
		for _, x := range s.Dests {
			db := destBody{URI: x.URI, FLAGS: stateString(x.Flags), PRIORITY: x.Priority}
			if x.Attrs != "" {
				db.ATTRS = &attrsBody{BODY: x.Attrs, DUID: x.DUID, MAXLOAD: x.MaxLoad, WEIGHT: x.Weight, RWEIGHT: x.RWeight, SOCKET: nullable(x.Socket)}
			}
			if full {
				desc, load := x.Description, x.load
				db.DESCRIPTION, db.LOAD = &desc, &load
			}
			sb.TARGETS = append(sb.TARGETS, destRecord{DEST: db})
		}
		res.RECORDS = append(res.RECORDS, setRecord{SET: sb})
	}
	return res
}

func (d *DS) rpcMethods() []core.RPCMethod {
	return append([]core.RPCMethod{
		{Name: "dispatcher.list", Doc: "List the destination sets with their state (\"full\": also kamgo's DESCRIPTION and LOAD).", ReadOnly: true,
			Params: []core.RPCParam{{Name: "rmode", Type: "string", Optional: true, Doc: "short or full"}},
			Result: `{"NRSETS": n, "RECORDS": [{"SET": {"ID": n, "TARGETS": [{"DEST": {"URI", "FLAGS": "AX|AP|IP|TP|DX...", "PRIORITY", "ATTRS" (when set): {"BODY","DUID","MAXLOAD","WEIGHT","RWEIGHT","SOCKET","SOCKNAME","OBPROXY"}, "DESCRIPTION", "LOAD" (full)}}]}}]}`,
			Handler: func(ctx context.Context, args core.RPCArgs) (any, error) {
				full := false
				if args.Len() > 0 {
					m, err := args.String(0)
					if err != nil || (m != "short" && m != "full") {
						return nil, rpcErr(500, "Invalid Parameters")
					}
					full = m == "full"
				}
				return d.List(full), nil
			}},
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
			Result: `{"OldPingState": n} or {"NewPingState": n, "OldPingState": n}; 500 "Ping State Update Failed"`,
			Handler: func(ctx context.Context, args core.RPCArgs) (any, error) {
				old := d.pingActive.Load()
				if args.Len() == 0 {
					return map[string]int64{"OldPingState": old}, nil // Kamailio's name for the current state
				}
				n, err := args.Int(0)
				if err != nil || (n != 0 && n != 1) {
					return nil, rpcErr(500, "Ping State Update Failed")
				}
				d.pingActive.Store(int64(n))
				return map[string]int64{"NewPingState": int64(n), "OldPingState": old}, nil
			}},
	}, d.extraRPC()...)
}

// extraRPC are the in-memory edits: dispatcher.add, dispatcher.remove and
// dispatcher.set_duid_state (a reload drops what add and remove did).
func (d *DS) extraRPC() []core.RPCMethod {
	bad := &core.RPCError{Code: 500, Message: "Invalid Parameters"}
	return []core.RPCMethod{
		{Name: "dispatcher.add", Doc: "Add a destination to a group in memory (a reload drops it).", ParamError: bad,
			Params: []core.RPCParam{{Name: "group", Type: "int"}, {Name: "address", Type: "string"},
				{Name: "flags", Type: "int", Optional: true}, {Name: "priority", Type: "int", Optional: true}, {Name: "attrs", Type: "string", Optional: true}},
			Result: `{}; 500 "Invalid Parameters", 500 "Adding dispatcher dst failed"`, Handler: d.rpcAdd},
		{Name: "dispatcher.remove", Doc: "Remove a destination from a group in memory (a reload brings it back).", ParamError: bad,
			Params: []core.RPCParam{{Name: "group", Type: "int"}, {Name: "address", Type: "string"}},
			Result: `{}; 500 "Invalid Parameters", 500 "Removing dispatcher dst failed"`, Handler: d.rpcRemove},
		{Name: "dispatcher.set_duid_state", Doc: "Set the state of the destinations of a group whose duid attribute matches.", ParamError: bad,
			Params: []core.RPCParam{{Name: "state", Type: "string"}, {Name: "group", Type: "int"}, {Name: "duid", Type: "string"}},
			Result: `{}; 500 "Invalid State Parameter", 500 "State Update Failed"`, Handler: d.rpcSetDUIDState},
	}
}

func (d *DS) rpcAdd(ctx context.Context, args core.RPCArgs) (any, error) {
	g, err1 := args.Int(0)
	addr, err2 := args.String(1)
	if err1 != nil || err2 != nil {
		return nil, rpcErr(500, "Invalid Parameters")
	}
	flags, prio, attrs := 0, 0, ""
	var err error
	if args.Len() > 2 {
		if flags, err = args.Int(2); err != nil {
			return nil, rpcErr(500, "Invalid Parameters")
		}
	}
	if args.Len() > 3 {
		if prio, err = args.Int(3); err != nil {
			return nil, rpcErr(500, "Invalid Parameters")
		}
	}
	if args.Len() > 4 {
		if attrs, err = args.String(4); err != nil {
			return nil, rpcErr(500, "Invalid Parameters")
		}
	}
	x, err := newDest(addr, flags, prio, attrs, "")
	if err != nil {
		d.env.Log.Warn("dispatcher.add: "+err.Error(), "group", g)
		return nil, rpcErr(500, "Adding dispatcher dst failed")
	}
	d.emu.Lock()
	defer d.emu.Unlock()
	d.mu.Lock()
	sets := map[int]*Set{}
	for id, s := range d.sets {
		sets[id] = &Set{ID: id, Dests: append([]*Dest(nil), s.Dests...), rr: s.rr, wpos: s.wpos, rwpos: s.rwpos}
	}
	d.mu.Unlock()
	add(sets, g, x)
	finish(sets)
	d.install(sets)
	return nil, nil
}

func (d *DS) rpcRemove(ctx context.Context, args core.RPCArgs) (any, error) {
	g, err1 := args.Int(0)
	addr, err2 := args.String(1)
	if err1 != nil || err2 != nil {
		return nil, rpcErr(500, "Invalid Parameters")
	}
	d.emu.Lock()
	defer d.emu.Unlock()
	d.mu.Lock()
	sets := map[int]*Set{}
	found := false
	for id, s := range d.sets {
		ns := &Set{ID: id, rr: s.rr, wpos: s.wpos, rwpos: s.rwpos}
		for _, x := range s.Dests {
			if id == g && x.URI == addr {
				found = true
				continue
			}
			ns.Dests = append(ns.Dests, x)
		}
		if len(ns.Dests) > 0 {
			sets[id] = ns
		}
	}
	d.mu.Unlock()
	if !found {
		return nil, rpcErr(500, "Removing dispatcher dst failed")
	}
	finish(sets)
	d.install(sets)
	return nil, nil
}

func (d *DS) rpcSetDUIDState(ctx context.Context, args core.RPCArgs) (any, error) {
	s, err1 := args.String(0)
	g, err2 := args.Int(1)
	duid, err3 := args.String(2)
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, rpcErr(500, "Invalid Parameters")
	}
	st, err := parseState(s)
	if err != nil {
		return nil, rpcErr(500, "Invalid State Parameter")
	}
	d.mu.Lock()
	var uris []string
	if set := d.sets[g]; set != nil {
		for _, x := range set.Dests {
			if x.DUID != "" && x.DUID == duid {
				uris = append(uris, x.URI)
			}
		}
	}
	d.mu.Unlock()
	if len(uris) == 0 {
		return nil, rpcErr(500, "State Update Failed")
	}
	for _, u := range uris {
		d.setState(g, u, st, "rpc")
	}
	return nil, nil
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

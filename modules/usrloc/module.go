package usrloc

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kamgo/kamgo/modules/core"
)

func (u *UL) module() *core.Module {
	i := core.ArgInt
	return &core.Module{
		Name: "usrloc",
		Doc:  "user location: the contacts registered for each AoR, in memory and (db_mode 1, 2) in the location table",
		Params: []core.Param{
			{Name: "db_mode", Type: i, Default: core.Int(0), Static: true,
				Doc: "0 memory only (default, as Kamailio: registrations are lost on restart), 1 write-through, 2 write-back on the timer (flushed on shutdown); 3 (DB only) is not supported",
				Check: func(v core.Val) error {
					if v.Int < 0 || v.Int > 2 {
						return fmt.Errorf("db_mode %d: want 0 (memory), 1 (write-through) or 2 (write-back); 3 (DB only) is not supported", v.Int)
					}
					return nil
				},
				Set: func(v core.Val) error {
					if u.inited.Load() && v.Int != u.mode.Load() {
						u.env.Log.Warn("usrloc: db_mode changes apply after a restart", "db_mode", u.mode.Load(), "new", v.Int)
					}
					u.dbMode.Store(v.Int)
					return nil
				},
				Get: func() core.Val { return core.Int(int(u.dbMode.Load())) }},
			{Name: "timer_interval", Type: i, Default: core.Int(60), Doc: "seconds between sweeps of expired contacts (and write-back flushes)",
				Check: positive("timer_interval"), Set: func(v core.Val) error { u.timerInterval.Store(v.Int); return nil },
				Get: func() core.Val { return core.Int(int(u.timerInterval.Load())) }},
			{Name: "use_domain", Type: i, Default: core.Int(0), Doc: "1: AoRs are user@domain; 0: the user part only",
				Check: core.Check01("use_domain"), Set: func(v core.Val) error { u.useDomain.Store(v.Int != 0); return nil },
				Get: func() core.Val { return core.Int01(u.useDomain.Load()) }},
			{Name: "nat_bflag", Type: i, Default: core.Int(-1), Doc: "the flag (0-63) marking contacts behind NAT: saved in the contact's cflags when set on the REGISTER, set on the message again by lookup",
				Check: func(v core.Val) error {
					if v.Int < -1 || v.Int > 63 {
						return fmt.Errorf("nat_bflag %d: want a flag 0-63 (or -1: none)", v.Int)
					}
					return nil
				},
				Set: func(v core.Val) error { u.natBflag.Store(v.Int); return nil },
				Get: func() core.Val { return core.Int(int(u.natBflag.Load())) }},
			{Name: "hash_size", Type: i, Default: core.Int(10), Static: true, Doc: "the location table has 2^hash_size slots (each with its own lock); applies at start",
				Check: func(v core.Val) error {
					if v.Int < 1 || v.Int > 16 {
						return fmt.Errorf("hash_size %d: want 1-16", v.Int)
					}
					return nil
				},
				Set: func(v core.Val) error { u.hashSize.Store(v.Int); return nil },
				Get: func() core.Val { return core.Int(int(u.hashSize.Load())) }},
		},
		RPC:    u.rpcMethods(),
		Events: []string{"usrloc"},
		Init:   u.start,
		Stop:   u.stop,
	}
}

func positive(name string) func(v core.Val) error {
	return func(v core.Val) error {
		if v.Int <= 0 {
			return fmt.Errorf("%s must be a positive number of seconds", name)
		}
		return nil
	}
}

func notSet(s string) string {
	if s == "" {
		return "[not set]"
	}
	return s
}

// DumpContact is a contact as ul.dump and ul.lookup show it.
func DumpContact(c *Contact, now time.Time) map[string]any {
	return map[string]any{"Contact": map[string]any{
		"Address":        c.Contact,
		"Expires":        dumpExpires(c, now),
		"Q":              qFloat(c.Q),
		"Call-ID":        c.CallID,
		"CSeq":           c.CSeq,
		"User-Agent":     notSet(c.UserAgent),
		"Received":       notSet(c.Received),
		"Path":           notSet(c.Path),
		"State":          c.State,
		"Flags":          c.Flags,
		"CFlags":         c.CFlags,
		"Socket":         notSet(c.Socket),
		"Methods":        c.Methods,
		"Ruid":           notSet(c.Ruid),
		"Instance":       notSet(c.Instance),
		"Reg-Id":         c.RegID,
		"Server-Id":      c.ServerID,
		"Tcpconn-Id":     c.ConnID,
		"Keepalive":      c.Keepalive,
		"Last-Keepalive": 0,
		"Last-Modified":  c.LastModified.Unix(),
	}}
}

func rpcErr(code int, msg string) error { return &core.RPCError{Code: code, Message: msg} }

func (u *UL) rpcDomain(args core.RPCArgs, need int, what string) (*Domain, string, error) {
	if args.Len() < need {
		return nil, "", rpcErr(500, "Not enough parameters ("+what+")")
	}
	t, err := args.String(0)
	if err != nil {
		return nil, "", rpcErr(500, "Not enough parameters ("+what+")")
	}
	d := u.FindDomain(t)
	if d == nil {
		return nil, "", rpcErr(500, "Domain not found")
	}
	a, err := args.String(1)
	if err != nil {
		return nil, "", rpcErr(500, "Not enough parameters ("+what+")")
	}
	aor, err := u.FixAoR(a)
	if err != nil {
		return nil, "", rpcErr(500, err.Error())
	}
	return d, aor, nil
}

func (u *UL) rpcMethods() []core.RPCMethod {
	table := core.RPCParam{Name: "table", Type: "string", Doc: "location table (\"location\")"}
	aorP := core.RPCParam{Name: "aor", Type: "string", Doc: "user@domain (the user part only with use_domain=0; a sip: prefix is accepted)"}
	contactShape := `{"Contact": {"Address", "Expires": seconds | "permanent" | "expired", "Q", "Call-ID", "CSeq", "User-Agent", "Received", "Path", "State", "Flags", "CFlags", "Socket", "Methods", "Ruid", "Instance", "Reg-Id", "Server-Id", "Tcpconn-Id", "Keepalive", "Last-Keepalive", "Last-Modified"}} ("[not set]" for empty strings)`
	return []core.RPCMethod{
		{Name: "ul.dump", Doc: "dump every location table (page it with limit and cursor for large tables)", ReadOnly: true,
			Params: []core.RPCParam{{Name: "brief", Type: "string", Optional: true, Doc: "\"brief\": AoRs only (anything else, or null: full)"},
				{Name: "limit", Type: "int", Optional: true, Doc: "at most this many AoRs in this page (default: all, up to the reply bound)"},
				{Name: "cursor", Type: "string", Optional: true, Doc: "the Next value of the previous page"}},
			Result:  `{"Domains": [{"Domain": {"Domain": table, "Size": slots, "AoRs": [{"Info": {"AoR", "HashID", "Contacts": [` + contactShape + `]}}] (brief: [{"AoR": aor}]), "Stats": {"Records": n, "Max-Slots": n}}}], "Next": cursor (only when more AoRs remain)}; 400 "Invalid limit", 400 "Invalid cursor", 507 "Response too large" (page it)`,
			Handler: u.rpcUlDump},
		{Name: "ul.lookup", Doc: "the valid contacts of one AoR", ReadOnly: true, Params: []core.RPCParam{table, aorP},
			Result:  `{"AoR": aor, "Contacts": [` + contactShape + `]}; 404 "AOR not found" when it has no valid contact`,
			Handler: u.rpcUlLookup},
		{Name: "ul.rm", Doc: "delete an AoR with all its contacts", Params: []core.RPCParam{table, aorP}, Result: "null; 404 \"AOR not found\"",
			Handler: u.rpcUlRm},
		{Name: "ul.rm_contact", Doc: "delete one contact of an AoR",
			Params:  []core.RPCParam{table, aorP, {Name: "contact", Type: "string", Doc: "the contact URI as registered"}},
			Result:  `null; 404 "AOR not found" / "Contact not found"`,
			Handler: u.rpcUlRmContact},
		{Name: "ul.add", Doc: "add or update a contact of an AoR",
			Params: []core.RPCParam{table, aorP, {Name: "contact", Type: "string"}, {Name: "expires", Type: "int", Doc: "seconds; 0 permanent"},
				{Name: "q", Type: "float"}, {Name: "path", Type: "string", Doc: "\"0\" for none"}, {Name: "flags", Type: "int"},
				{Name: "cflags", Type: "int"}, {Name: "methods", Type: "int"}},
			Result:  "null",
			Handler: u.rpcUlAdd},
		{Name: "ul.flush", Doc: "write the in-memory changes to the database now (db_mode 2)", Result: "null",
			Handler: u.rpcUlFlush},
	}
}

// rpcUlDump is the RPC method ul.dump [brief] [limit] [cursor].
func (u *UL) rpcUlDump(ctx context.Context, args core.RPCArgs) (any, error) {
	x := &ulDump{u: u, now: u.Now()}
	if hasArg(args, 0) {
		if s, err := args.String(0); err == nil && s == "brief" {
			x.brief = true
		}
	}
	if hasArg(args, 1) {
		n, err := args.Int(1)
		if err != nil || n <= 0 {
			return nil, rpcErr(400, "Invalid limit: want a number of AoRs above 0")
		}
		x.limit = n
	}
	if hasArg(args, 2) {
		s, err := args.String(2)
		c, ok := parseDumpCursor(s)
		if err != nil || !ok {
			return nil, rpcErr(400, "Invalid cursor: pass the Next value of the previous page")
		}
		x.from = &c
	}
	return x, nil
}

// rpcUlLookup is the RPC method ul.lookup.
func (u *UL) rpcUlLookup(ctx context.Context, args core.RPCArgs) (any, error) {
	d, aor, err := u.rpcDomain(args, 2, "table and AOR to lookup")
	if err != nil {
		return nil, err
	}
	now := u.Now()
	list := []any{}
	for _, c := range d.Get(aor) {
		if c.Valid(now) {
			list = append(list, DumpContact(&c, now))
		}
	}
	if len(list) == 0 {
		return nil, rpcErr(404, "AOR not found")
	}
	return map[string]any{"AoR": aor, "Contacts": list}, nil
}

// rpcUlRm is the RPC method ul.rm.
func (u *UL) rpcUlRm(ctx context.Context, args core.RPCArgs) (any, error) {
	d, aor, err := u.rpcDomain(args, 2, "table and AOR to delete")
	if err != nil {
		return nil, err
	}
	if d.DeleteAoR(aor) == 0 {
		return nil, rpcErr(404, "AOR not found")
	}
	return nil, nil
}

// rpcUlRmContact is the RPC method ul.rm_contact.
func (u *UL) rpcUlRmContact(ctx context.Context, args core.RPCArgs) (any, error) {
	d, aor, err := u.rpcDomain(args, 3, "table, AOR and contact")
	if err != nil {
		return nil, err
	}
	uri, err := args.String(2)
	if err != nil {
		return nil, rpcErr(500, "Not enough parameters (table, AOR and contact)")
	}
	var rerr error
	_, _ = d.Update(aor, func(cs []Contact) ([]Contact, error) {
		if len(cs) == 0 {
			rerr = rpcErr(404, "AOR not found")
			return nil, rerr
		}
		for i := range cs {
			if cs[i].Contact == uri {
				return append(cs[:i], cs[i+1:]...), nil
			}
		}
		rerr = rpcErr(404, "Contact not found")
		return nil, rerr
	})
	return nil, rerr
}

// rpcUlAdd is the RPC method ul.add.
func (u *UL) rpcUlAdd(ctx context.Context, args core.RPCArgs) (any, error) {
	bad := rpcErr(500, "Not enough parameters or wrong format")
	if args.Len() != 9 {
		return nil, bad
	}
	d, aor, err := u.rpcDomain(args, 2, "table and AOR")
	if err != nil {
		return nil, err
	}
	uri, err1 := args.String(2)
	exp, err2 := args.Int(3)
	qs, err3 := args.String(4)
	path, err4 := args.String(5)
	flags, err5 := args.Int(6)
	cflags, err6 := args.Int(7)
	methods, err7 := args.Int(8)
	if err := errors.Join(err1, err2, err3, err4, err5, err6, err7); err != nil || uri == "" || exp < 0 {
		return nil, bad
	}
	qf, err := strconv.ParseFloat(strings.TrimSpace(qs), 64)
	if err != nil || qf > 1 {
		return nil, bad
	}
	q := int(qf*1000 + 0.5)
	if qf < 0 {
		q = -1
	}
	if path == "0" {
		path = ""
	}
	if _, err := core.ParseURI(uri); err != nil {
		return nil, rpcErr(500, err.Error())
	}
	now := u.Now()
	c := Contact{Contact: uri, Q: q, Path: path, Flags: flags, CFlags: cflags, Methods: int64(methods),
		CallID: "dfjrewr12386fd6-343@kamailio.mi", CSeq: 1, UserAgent: "SIP Router MI Server", LastModified: now}
	if exp > 0 {
		c.Expires = now.Add(time.Duration(exp) * time.Second)
	}
	_, err = d.Update(aor, func(cs []Contact) ([]Contact, error) {
		for i := range cs {
			if cs[i].Contact == uri {
				c.Ruid = cs[i].Ruid
				cs[i] = c
				return cs, nil
			}
		}
		return append(cs, c), nil
	})
	return nil, err
}

// rpcUlFlush is the RPC method ul.flush.
func (u *UL) rpcUlFlush(ctx context.Context, args core.RPCArgs) (any, error) {
	if err := u.Flush(); err != nil {
		return nil, rpcErr(500, err.Error())
	}
	return nil, nil
}

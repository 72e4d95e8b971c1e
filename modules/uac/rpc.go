package uac

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/kamgo/kamgo/modules/core"
)

func rpcErr(code int, msg string) error { return &core.RPCError{Code: code, Message: msg} }

var (
	errInvalidParams = rpcErr(400, "Invalid Parameters")
	errNotFound      = rpcErr(404, "Record not found")
	errBadAttr       = rpcErr(400, "Unsupported filter attribute")
)

// Rec is one record as uac.reg_dump / uac.reg_info show it: Kamailio 5.6's
// 18 fields in its order and JSON types, then kamgo's status fields.
type Rec struct {
	LUUID        string  `json:"l_uuid"`
	LUsername    string  `json:"l_username"`
	LDomain      string  `json:"l_domain"`
	RUsername    string  `json:"r_username"`
	RDomain      string  `json:"r_domain"`
	Realm        *string `json:"realm"`
	AuthUsername string  `json:"auth_username"`
	AuthPassword string  `json:"auth_password"`
	AuthHA1      string  `json:"auth_ha1"`
	AuthProxy    string  `json:"auth_proxy"`
	Expires      int     `json:"expires"`
	Flags        int     `json:"flags"`
	DiffExpires  int64   `json:"diff_expires"`
	TimerExpires int64   `json:"timer_expires"`
	RegInit      int64   `json:"reg_init"`
	RegDelay     int     `json:"reg_delay"`
	ContactAddr  string  `json:"contact_addr"`
	Socket       *string `json:"socket"`
	// kamgo's status.
	State          string `json:"state"`
	LastCode       int    `json:"last_code"`
	LastReason     string `json:"last_reason"`
	LastAttempt    int64  `json:"last_attempt"`
	LastSuccess    int64  `json:"last_success"`
	NextRefresh    int64  `json:"next_refresh"`
	GrantedExpires int    `json:"granted_expires"`
	Failures       int    `json:"failures"`
	CallID         string `json:"call_id"`
	CSeq           uint32 `json:"cseq"`
}

func none(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func epoch(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

// redact hides a secret: "none" when empty (as Kamailio), "***" otherwise.
func redact(s string, show bool) string {
	if s == "" || show {
		return none(s)
	}
	return "***"
}

// dump renders r (under mu).
func (u *UAC) dump(r *record, now time.Time, secrets bool) Rec {
	rec := Rec{
		LUUID: r.LUUID, LUsername: r.LUsername, LDomain: r.LDomain, RUsername: r.RUsername, RDomain: r.RDomain,
		Realm: nullable(r.Realm), AuthUsername: r.AuthUsername,
		AuthPassword: redact(r.AuthPassword, secrets), AuthHA1: redact(r.AuthHA1, secrets),
		AuthProxy: none(r.AuthProxy), Expires: r.expires, Flags: r.flags,
		TimerExpires: epoch(r.timerExpires), RegInit: epoch(r.regInit), RegDelay: r.RegDelay,
		ContactAddr: none(r.ContactAddr), Socket: nullable(r.Socket),
		State: r.state, LastCode: r.lastCode, LastReason: r.lastReason,
		LastAttempt: epoch(r.lastAttempt), LastSuccess: epoch(r.lastSuccess), NextRefresh: epoch(r.nextRefresh),
		GrantedExpires: r.granted, Failures: r.failures, CallID: r.callID, CSeq: r.cseq,
	}
	rec.DiffExpires = rec.TimerExpires - now.Unix()
	if r.invalid != "" {
		rec.LastReason = r.invalid
	}
	if r.cseq == 0 && r.callID == "" {
		rec.CSeq = 0
	}
	return rec
}

// Dump returns every record (reg_dump's order: the table's, then reg_add's).
func (u *UAC) Dump(secrets bool) []Rec {
	u.mu.Lock()
	defer u.unlock()
	now := u.now()
	out := make([]Rec, 0, len(u.order))
	for _, r := range u.order {
		out = append(out, u.dump(r, now, secrets))
	}
	return out
}

// StateCounts returns the number of records per state (/metrics reads it at
// scrape time instead of a reg_dump of the whole table).
func (u *UAC) StateCounts() map[string]int {
	u.mu.Lock()
	defer u.unlock()
	by := make(map[string]int, 8)
	for _, r := range u.order {
		by[r.state]++
	}
	return by
}

// find looks a record up by Kamailio's filter attributes (under mu).
func (u *UAC) find(attr, val string) (*record, error) {
	switch attr {
	case "l_uuid":
		if r := u.recs[val]; r != nil && r.LUUID == val {
			return r, nil
		}
		return nil, errNotFound
	case "l_username", "r_username", "auth_username":
	default:
		return nil, errBadAttr
	}
	for _, r := range u.order {
		var v string
		switch attr {
		case "l_username":
			v = r.LUsername
		case "r_username":
			v = r.RUsername
		case "auth_username":
			v = r.AuthUsername
		}
		if v == val {
			return r, nil
		}
	}
	return nil, errNotFound
}

func attrVal(args core.RPCArgs) (string, string, error) {
	if args.Len() < 2 {
		return "", "", errInvalidParams
	}
	a, err1 := args.String(0)
	v, err2 := args.String(1)
	if err1 != nil || err2 != nil {
		return "", "", rpcErr(400, "Invalid Parameter Values")
	}
	return a, v, nil
}

// wantSecrets reads the optional "secrets" argument at i: clear-text
// passwords for an admin caller only.
func wantSecrets(ctx context.Context, args core.RPCArgs, i int) (bool, error) {
	if args.Len() <= i {
		return false, nil
	}
	s, err := args.String(i)
	if err != nil || s != "secrets" {
		return false, rpcErr(400, "Invalid Parameter Values: the optional last parameter is \"secrets\"")
	}
	if !core.RPCCallerIsAdmin(ctx) {
		return false, rpcErr(403, "secrets are shown to the admin role only")
	}
	return true, nil
}

func (u *UAC) rpcMethods() []core.RPCMethod {
	attr := core.RPCParam{Name: "attr", Type: "string", Doc: "l_uuid, l_username, r_username or auth_username"}
	val := core.RPCParam{Name: "val", Type: "string", Doc: "the value to match"}
	uuid := core.RPCParam{Name: "l_uuid", Type: "string"}
	secrets := core.RPCParam{Name: "secrets", Type: "string", Optional: true, Doc: "\"secrets\": auth_password and auth_ha1 in clear text (admin role only; otherwise \"***\")"}
	rec := `{"l_uuid","l_username","l_domain","r_username","r_domain","realm": string|null,"auth_username","auth_password": "***"|"none","auth_ha1": "***"|"none","auth_proxy","expires","flags","diff_expires","timer_expires","reg_init","reg_delay","contact_addr","socket": string|null,"state","last_code","last_reason","last_attempt","last_success","next_refresh","granted_expires","failures","call_id","cseq"}`
	noErr := `{}; 400 "Invalid Parameters", 400 "Unsupported filter attribute", 404 "Record not found"`
	ms := []core.RPCMethod{
		{Name: "uac.reg_dump", Doc: "Dump the contents of user registrations table (page it with limit and cursor for large tables).", ReadOnly: true,
			Params: []core.RPCParam{secrets,
				{Name: "limit", Type: "int", Optional: true, Doc: "at most this many records in this page; the result becomes {\"records\": [...], \"next\": cursor}"},
				{Name: "cursor", Type: "string", Optional: true, Doc: "the next value of the previous page"}},
			Result: "[" + rec + "]; paged (limit or cursor given): {\"records\": [the same records], \"next\": cursor (only when more remain)}; 507 \"Response too large\" (page it)", Handler: u.rpcDump},
		{Name: "uac.reg_info", Doc: "Return the details of registration record.", ReadOnly: true,
			Params: []core.RPCParam{attr, val, secrets}, Result: rec + `; 400 "Invalid Parameters", 400 "Unsupported filter attribute", 404 "Record not found"`, Handler: u.rpcInfo},
		{Name: "uac.reg_enable", Doc: "Enable registration for a particular record (and send the REGISTER now).",
			Params: []core.RPCParam{attr, val}, Result: noErr, Handler: u.rpcEnable},
		{Name: "uac.reg_disable", Doc: "Disable registration for a particular record (unregistering it first when registered).",
			Params: []core.RPCParam{attr, val}, Result: noErr, Handler: u.rpcDisable},
		{Name: "uac.reg_unregister", Doc: "Send an un-REGISTER (Expires: 0) for a particular record; it stays disabled.",
			Params: []core.RPCParam{attr, val}, Result: noErr, Handler: u.rpcUnregister},
		{Name: "uac.reg_register", Doc: "Send a REGISTER for a particular record now.",
			Params: []core.RPCParam{attr, val}, Result: noErr, Handler: u.rpcRegister},
		{Name: "uac.reg_reload", Doc: "Reload the records from the database, as a diff: unchanged rows keep their registration.",
			Result: `{"added": n, "changed": n, "removed": n}; 500 "Failed to reload records - check log messages"`, Handler: u.rpcReload},
		{Name: "uac.reg_refresh", Doc: "Reload one record from the database.",
			Params: []core.RPCParam{uuid}, Result: `{}; 400 "Invalid Parameters", 404 "Record not found" (not in the database)`, Handler: u.rpcRefresh},
		{Name: "uac.reg_remove", Doc: "Remove a record from memory (unregistering it first when registered).",
			Params: []core.RPCParam{uuid}, Result: `{}; 400 "Invalid Parameters", 404 "Record not found"`, Handler: u.rpcRemove},
		{Name: "uac.reg_add", Doc: "Add a record to memory (not to the database) and register it; \".\" means empty.",
			Params: []core.RPCParam{uuid, {Name: "l_username", Type: "string"}, {Name: "l_domain", Type: "string"},
				{Name: "r_username", Type: "string"}, {Name: "r_domain", Type: "string"}, {Name: "realm", Type: "string"},
				{Name: "auth_username", Type: "string"}, {Name: "auth_password", Type: "string"}, {Name: "auth_ha1", Type: "string"},
				{Name: "auth_proxy", Type: "string"}, {Name: "expires", Type: "int"}, {Name: "flags", Type: "int"},
				{Name: "reg_delay", Type: "int"}, {Name: "socket", Type: "string"}, {Name: "contact_addr", Type: "string"}},
			Result: `{}; 400 "Invalid Parameters", 409 "uuid already exists", 500 "Failed to add record - invalid password or ha1", 500 "Failed to add record - <reason>"`, Handler: u.rpcAdd},
		{Name: "uac.reg_active", Doc: "Set the global registration switch (reg_active).",
			Params: []core.RPCParam{{Name: "mode", Type: "int", Doc: "0 or 1"}}, Result: `{"omode": old, "nmode": new}; 500 "Missing parameter"`, Handler: u.rpcActive},
	}
	// Missing or wrongly typed params get Kamailio's faults, not -32602.
	for i := range ms {
		switch ms[i].Name {
		case "uac.reg_active":
			ms[i].ParamError = rpcErr(500, "Missing parameter").(*core.RPCError)
		default:
			ms[i].ParamError = errInvalidParams.(*core.RPCError)
		}
	}
	return ms
}

func (u *UAC) rpcInfo(ctx context.Context, args core.RPCArgs) (any, error) {
	a, v, err := attrVal(args)
	if err != nil {
		return nil, err
	}
	sec, err := wantSecrets(ctx, args, 2)
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	defer u.unlock()
	r, err := u.find(a, v)
	if err != nil {
		return nil, err
	}
	return u.dump(r, u.now(), sec), nil
}

// withRecord runs f on the record args name (under mu).
func (u *UAC) withRecord(args core.RPCArgs, f func(r *record) error) (any, error) {
	a, v, err := attrVal(args)
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	defer u.unlock()
	r, err := u.find(a, v)
	if err != nil {
		return nil, err
	}
	if err := f(r); err != nil {
		return nil, err
	}
	return nil, nil
}

// Enable clears the disabled flag and registers now (expires restored
// from the row if an unregister zeroed it).
func (u *UAC) enable(r *record) error {
	if r.invalid != "" {
		return rpcErr(500, "Invalid record: "+r.invalid)
	}
	r.flags &^= flagDisabled
	if r.expires == 0 {
		r.expires = r.Row.Expires
	}
	if r.state == StateDisabled {
		u.setState(r, StateIdle)
	}
	if u.started && r.flags&flagOngoing == 0 && r.expires > 0 {
		u.schedule(r, u.now())
	}
	return nil
}

func (u *UAC) disable(r *record) error {
	r.flags |= flagDisabled
	u.unregister(r, func() { u.setState(r, StateDisabled) })
	if r.flags&flagOngoing == 0 {
		u.setState(r, StateDisabled)
	}
	return nil
}

func (u *UAC) rpcEnable(ctx context.Context, args core.RPCArgs) (any, error) {
	return u.withRecord(args, u.enable)
}

func (u *UAC) rpcDisable(ctx context.Context, args core.RPCArgs) (any, error) {
	return u.withRecord(args, u.disable)
}

func (u *UAC) rpcUnregister(ctx context.Context, args core.RPCArgs) (any, error) {
	return u.withRecord(args, func(r *record) error {
		if r.invalid != "" {
			return rpcErr(500, "Invalid record: "+r.invalid)
		}
		// Kamailio: expires 0 and disabled afterwards; enable or
		// reg_register brings the row's expires back.
		r.expires = 0
		r.flags |= flagDisabled
		if r.flags&(flagOnline|flagOngoing) == 0 {
			// Not known to be registered: still send the Expires: 0 the
			// caller asked for (a binding may survive a restart).
			r.flags |= flagOnline
		}
		u.unregister(r, func() { u.setState(r, StateDisabled) })
		return nil
	})
}

func (u *UAC) rpcRegister(ctx context.Context, args core.RPCArgs) (any, error) {
	return u.withRecord(args, func(r *record) error {
		if r.invalid != "" {
			return rpcErr(500, "Invalid record: "+r.invalid)
		}
		r.flags &^= flagDisabled
		if r.expires == 0 {
			r.expires = r.Row.Expires
		}
		if r.expires == 0 {
			return rpcErr(500, "Record has expires 0")
		}
		if r.flags&flagOngoing != 0 {
			return nil // a REGISTER is in flight already
		}
		u.unschedule(r)
		r.flags |= flagInit
		u.startAttempt(r, false)
		return nil
	})
}

func (u *UAC) rpcReload(ctx context.Context, args core.RPCArgs) (any, error) {
	a, c, r, err := u.Reload()
	if err != nil {
		u.env.Log.Error("uac: reload failed", "err", err)
		return nil, rpcErr(500, "Failed to reload records - check log messages")
	}
	return map[string]int{"added": a, "changed": c, "removed": r}, nil
}

// Refresh re-reads one row from the database: a changed row replaces its
// record, an unchanged one is left alone, a new one is added.
func (u *UAC) Refresh(uuid string) error {
	u.reloadMu.Lock()
	defer u.reloadMu.Unlock()
	if u.db == nil {
		return errors.New("no database")
	}
	rows, err := loadRows(u.db, u.table, uuid)
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		return errNotFound
	}
	u.resolveRows(rows, false)
	u.mu.Lock()
	defer u.unlock()
	row := rows[0]
	old := u.recs[uuid]
	if old != nil && sameRow(old.src, row) {
		old.ID, old.src.ID = row.ID, row.ID
		return nil
	}
	r := u.newRecord(row, u.now())
	if old != nil {
		u.replaced(old, r)
		for i, o := range u.order {
			if o == old {
				u.order[i] = r
			}
		}
	} else {
		u.order = append(u.order, r)
	}
	u.recs[uuid] = r
	u.adopt(r)
	u.stTotal.Set(int64(len(u.recs)))
	if u.started {
		u.kick([]*record{r})
	}
	return nil
}

func (u *UAC) rpcRefresh(ctx context.Context, args core.RPCArgs) (any, error) {
	uuid, err := args.String(0)
	if err != nil || uuid == "" {
		return nil, errInvalidParams
	}
	if err := u.Refresh(uuid); err != nil {
		var re *core.RPCError
		if errors.As(err, &re) {
			return nil, err
		}
		u.env.Log.Error("uac: refresh failed", "l_uuid", uuid, "err", err)
		return nil, rpcErr(500, "Failed to refresh record - check log messages")
	}
	return nil, nil
}

func (u *UAC) rpcRemove(ctx context.Context, args core.RPCArgs) (any, error) {
	uuid, err := args.String(0)
	if err != nil || uuid == "" {
		return nil, errInvalidParams
	}
	u.mu.Lock()
	defer u.unlock()
	r := u.recs[uuid]
	if r == nil {
		return nil, errNotFound
	}
	u.removeLocked(r)
	return nil, nil
}

func (u *UAC) removeLocked(r *record) {
	delete(u.recs, recKey(r.src))
	for i, o := range u.order {
		if o == r {
			u.order = append(u.order[:i:i], u.order[i+1:]...)
			break
		}
	}
	u.retire(r)
	u.stTotal.Set(int64(len(u.recs)))
}

func dot(s string) string {
	if s == "." {
		return ""
	}
	return s
}

func (u *UAC) rpcAdd(ctx context.Context, args core.RPCArgs) (any, error) {
	if args.Len() < 15 {
		return nil, errInvalidParams
	}
	var s [12]string
	idx := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 14}
	for j, i := range idx {
		v, err := args.String(i)
		if err != nil {
			return nil, errInvalidParams
		}
		s[j] = dot(v)
	}
	var n [3]int
	for j := range n {
		v, err := args.Int(10 + j)
		if err != nil {
			return nil, errInvalidParams
		}
		n[j] = v
	}
	row := Row{LUUID: s[0], LUsername: s[1], LDomain: s[2], RUsername: s[3], RDomain: s[4], Realm: s[5],
		AuthUsername: s[6], AuthPassword: s[7], AuthHA1: s[8], AuthProxy: s[9],
		Expires: n[0], Flags: n[1], RegDelay: n[2], Socket: s[10], ContactAddr: s[11]}
	u.resolveRows([]Row{row}, false)
	u.mu.Lock()
	defer u.unlock()
	if row.LUUID == "" {
		return nil, errInvalidParams
	}
	if u.recs[row.LUUID] != nil {
		return nil, rpcErr(409, "uuid already exists")
	}
	r := u.newRecord(row, u.now())
	if r.invalid != "" {
		if strings.Contains(r.invalid, "password") || strings.Contains(r.invalid, "auth_ha1") {
			return nil, rpcErr(500, "Failed to add record - invalid password or ha1")
		}
		return nil, rpcErr(500, "Failed to add record - "+r.invalid)
	}
	u.recs[row.LUUID] = r
	u.adopt(r)
	u.stTotal.Set(int64(len(u.recs)))
	u.order = append(u.order, r)
	if u.started {
		u.kick([]*record{r})
	}
	return nil, nil
}

// SetActive is the reg_active switch; turning it on registers the
// records that waited.
func (u *UAC) SetActive(on bool) (old int) {
	u.mu.Lock()
	defer u.unlock()
	old = int(u.regActive.Load())
	if on {
		u.regActive.Store(1)
		for _, r := range u.order {
			if r.parked { // its refresh is overdue: now
				u.unschedule(r)
				r.parked = false
			}
		}
		if u.started {
			u.kick(u.order)
		}
	} else {
		u.regActive.Store(0)
	}
	return old
}

func (u *UAC) rpcActive(ctx context.Context, args core.RPCArgs) (any, error) {
	if args.Len() < 1 {
		return nil, rpcErr(500, "Missing parameter")
	}
	m, err := args.Int(0)
	if err != nil {
		return nil, rpcErr(500, "Missing parameter")
	}
	old := u.SetActive(m != 0)
	return map[string]int{"omode": old, "nmode": m}, nil
}

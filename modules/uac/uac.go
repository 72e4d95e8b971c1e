// Package uac is Kamailio's uac module: outbound registrations from the
// uacreg table (kept in SQLite, status over RPC) and requests kamd sends
// itself (uac_req_send). Registration needs tm's local requests, so the
// module Needs tm: it starts after tm and stops before it, which lets Stop
// still unregister through tm.
package uac

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/tm"
)

func init() { core.Register(New) }

// strVar is a string param readable from any goroutine.
type strVar struct{ p atomic.Pointer[string] }

func (s *strVar) Load() string {
	if v := s.p.Load(); v != nil {
		return *v
	}
	return ""
}
func (s *strVar) Store(v string) { s.p.Store(&v) }

// UAC is one uac module instance.
type UAC struct {
	spreadSeq atomic.Uint64 // first refreshes placed so far (refreshAfter)
	emitMu    sync.Mutex    // orders event publishing (unlock)
	env       *core.Env

	// Registration params (Kamailio names).
	regDBURL       strVar
	regDBTable     strVar
	regContactAddr strVar
	regTimerIntv   atomic.Int64
	regRetryIntv   atomic.Int64
	regRetryMax    atomic.Int64
	regKeepCallID  atomic.Int64
	regRandomDelay atomic.Int64
	regActive      atomic.Int64
	regGCIntv      atomic.Int64
	reloadDelta    atomic.Int64
	regHashSize    atomic.Int64
	regUseDomain   atomic.Int64
	regUnregStop   atomic.Int64
	defaultSocket  strVar
	// Request-side params (used by req*.go).
	eventCallback   strVar
	restoreMode     strVar
	restoreDlg      atomic.Int64
	restoreFromAVP  strVar
	restoreToAVP    strVar
	rrFromParam     strVar
	rrToParam       strVar
	credential      strVar
	authUserAVP     strVar
	authRealmAVP    strVar
	authPasswordAVP strVar
	// reqMaxPending caps the uac_req_send requests in flight (reqPending):
	// a script looping over uac_req_send cannot pile up transactions.
	reqMaxPending atomic.Int64
	reqPending    atomic.Int64

	// Registrations. mu guards every record and the index; events are
	// the state changes queued under mu, published by unlock.
	mu      sync.Mutex
	recs    map[string]*record // by l_uuid
	order   []*record          // reg_dump order: the table's, then reg_add's
	events  []map[string]any
	started bool
	db      *sql.DB
	ownDB   bool
	table   string
	// reloadMu serialises reloads (never refused for being too fast).
	reloadMu sync.Mutex

	// send hands a REGISTER to tm (tests replace it).
	send func(req *sip.Request, dst core.Target, socket string, onReply func(*sip.Response)) error
	// Kamailio's counters, as gauges derived from the states.
	stTotal, stActive, stDisabled *core.Counter

	// dsts caches auth_proxy → next hop, filled by resolveRows before mu
	// is taken (a DNS lookup never runs under the registration lock).
	dstMu sync.Mutex
	dsts  map[string][]core.Target
	// resolve turns auth_proxy into its next hops (SRV for a name without
	// port: every target, in the order to try them).
	resolve func(t core.Target, explicitPort bool) []core.Target
}

var instances sync.Map // *core.Env -> *UAC

// Of returns the uac instance built for env, or nil.
func Of(env *core.Env) *UAC {
	if v, ok := instances.Load(env); ok {
		return v.(*UAC)
	}
	return nil
}

// New builds the uac module.
func New(env *core.Env) *core.Module {
	u := &UAC{env: env, recs: map[string]*record{}, resolve: srvTargets}
	u.stTotal = env.Stats.Counter("uac", "regtotal")
	u.stActive = env.Stats.Counter("uac", "regactive")
	u.stDisabled = env.Stats.Counter("uac", "regdisabled")
	for _, c := range []*core.Counter{u.stTotal, u.stActive, u.stDisabled} {
		c.NoReset = true
	}
	instances.Store(env, u)
	return core.ApplyDefaults(u.module())
}

// EventCallback is the event_callback param: the script function called
// with "uac:reply" instead of event_route[uac:reply].
func (u *UAC) EventCallback() string { return u.eventCallback.Load() }

// DefaultSocket is the default_socket param ("" = tm's choice).
func (u *UAC) DefaultSocket() string { return u.defaultSocket.Load() }

func intP(name string, def int, doc string, dst *atomic.Int64, check func(int64) error) core.Param {
	return core.Param{Name: name, Type: core.ArgInt, Default: core.Int(def), Doc: doc,
		Check: func(v core.Val) error {
			if check != nil {
				return check(v.Int)
			}
			return nil
		},
		Set: func(v core.Val) error {
			if check != nil {
				if err := check(v.Int); err != nil {
					return err
				}
			}
			dst.Store(v.Int)
			return nil
		},
		Get: func() core.Val { return core.Int(int(dst.Load())) }}
}

func strP(name, def, doc string, dst *strVar, check func(string) error) core.Param {
	return core.Param{Name: name, Type: core.ArgStr, Default: core.Str(def), Doc: doc,
		Check: func(v core.Val) error {
			if check != nil {
				return check(v.Str)
			}
			return nil
		},
		Set: func(v core.Val) error {
			if check != nil {
				if err := check(v.Str); err != nil {
					return err
				}
			}
			dst.Store(v.Str)
			return nil
		},
		Get: func() core.Val { return core.Str(dst.Load()) }}
}

func nonNeg(name string) func(int64) error {
	return func(v int64) error {
		if v < 0 {
			return fmt.Errorf("%s %d: must not be negative", name, v)
		}
		return nil
	}
}

func positive(name string) func(int64) error {
	return func(v int64) error {
		if v <= 0 {
			return fmt.Errorf("%s %d: must be positive", name, v)
		}
		return nil
	}
}

func bool01(name string) func(int64) error {
	return func(v int64) error {
		if v != 0 && v != 1 {
			return fmt.Errorf("%s %d: want 0 or 1", name, v)
		}
		return nil
	}
}

func static(p core.Param) core.Param { p.Static = true; return p }

func callback(p core.Param) core.Param { p.Callback = true; return p }

func (u *UAC) module() *core.Module {
	return &core.Module{
		Name:  "uac",
		Doc:   "outbound registrations from the uacreg table (status over RPC) and requests kamd sends itself",
		Needs: []string{"tm"},
		Params: []core.Param{
			static(strP("reg_db_url", "", "the database of the uacreg table: sqlite:///abs/path.db (Kamailio's sqlite:////abs/path.db also works); empty: kamd's own database (--db)", &u.regDBURL, nil)),
			static(strP("reg_db_table", "uacreg", "the table the registrations are read from", &u.regDBTable, func(s string) error {
				if !core.ValidSQLName(s) {
					return fmt.Errorf("reg_db_table %q: not a valid table name", s)
				}
				return nil
			})),
			strP("reg_contact_addr", "", "host[:port][;params] of the Contact (sip:l_uuid@addr) for rows whose contact_addr is empty; empty: the first listen socket", &u.regContactAddr, func(s string) error {
				if strings.ContainsAny(s, "\r\n\x00<> ") || strings.HasPrefix(strings.ToLower(s), "sip:") {
					return fmt.Errorf("reg_contact_addr %q: want host[:port][;params], without sip:", s)
				}
				return nil
			}),
			intP("reg_timer_interval", 90, "accepted for compatibility: kamd schedules each record at its own due time, so this is no longer the refresh granularity", &u.regTimerIntv, positive("reg_timer_interval")),
			intP("reg_retry_interval", 30, "seconds before the first retry after a failure, doubled per consecutive failure up to reg_retry_max (±10% jitter); 0: a failure disables the record, as Kamailio's default", &u.regRetryIntv, nonNeg("reg_retry_interval")),
			intP("reg_retry_max", 1800, "kamgo: the cap of the retry backoff in seconds", &u.regRetryMax, positive("reg_retry_max")),
			intP("reg_keep_callid", 0, "1: refreshes reuse the Call-ID and From-tag with CSeq+1", &u.regKeepCallID, bool01("reg_keep_callid")),
			intP("reg_random_delay", 0, "rows with reg_delay 0 start after a random delay in [0, N) seconds", &u.regRandomDelay, nonNeg("reg_random_delay")),
			func() core.Param {
				p := intP("reg_active", 1, "0: no REGISTER is sent (runtime switch: uac.reg_active)", &u.regActive, bool01("reg_active"))
				p.Set = func(v core.Val) error { u.SetActive(v.Int == 1); return nil }
				return p
			}(),
			intP("reg_gc_interval", 150, "accepted for compatibility: reloads are applied as a diff, nothing is kept for garbage collection", &u.regGCIntv, nonNeg("reg_gc_interval")),
			intP("reload_delta", 30, "accepted for compatibility: reloads are serialised, never refused for being too fast", &u.reloadDelta, nonNeg("reload_delta")),
			static(intP("reg_hash_size", 4, "accepted for compatibility (records are indexed by maps)", &u.regHashSize, func(v int64) error {
				if v < 1 || v > 20 {
					return fmt.Errorf("reg_hash_size %d: want 1-20", v)
				}
				return nil
			})),
			intP("reg_use_domain", 0, "1: uac_reg_lookup_uri also matches the domain", &u.regUseDomain, bool01("reg_use_domain")),
			intP("reg_unregister_on_stop", 0, "kamgo: 1 sends Expires: 0 for every registered record when kamd stops", &u.regUnregStop, bool01("reg_unregister_on_stop")),
			strP("default_socket", "", "proto:ip:port to send from when a row has no socket (and for uac_req_send)", &u.defaultSocket, func(s string) error {
				if s == "" {
					return nil
				}
				_, err := core.ParseSocket(s)
				return err
			}),
			intP("req_max_pending", 1000, "kamgo: the most uac_req_send requests in flight (sent, no final reply yet); beyond it uac_req_send returns -1 and logs; 0: no cap", &u.reqMaxPending, nonNeg("req_max_pending")),
			callback(strP("event_callback", "", "script function called for uac_req_send replies (event \"uac:reply\"); a name the script does not define fails the load", &u.eventCallback, nil)),
			strP("restore_mode", "auto", "none, manual or auto: how uac_replace_from/to are restored", &u.restoreMode, func(s string) error {
				switch s {
				case "none", "manual", "auto":
					return nil
				}
				return fmt.Errorf("restore_mode %q: want none, manual or auto", s)
			}),
			intP("restore_dlg", 0, "1: keep the original From/To in the dialog instead of a Record-Route param", &u.restoreDlg, bool01("restore_dlg")),
			strP("restore_from_avp", "", "AVP that keeps the original From URI", &u.restoreFromAVP, nil),
			strP("restore_to_avp", "", "AVP that keeps the original To URI", &u.restoreToAVP, nil),
			strP("rr_from_store_param", "vsf", "Record-Route param holding the original From", &u.rrFromParam, nil),
			strP("rr_to_store_param", "vst", "Record-Route param holding the original To", &u.rrToParam, nil),
			strP("credential", "", "username:realm:password for uac_auth (Kamailio's format; may be set several times in Kamailio; kamd keeps the last)", &u.credential, nil),
			strP("auth_username_avp", "", "AVP with the username for uac_auth", &u.authUserAVP, nil),
			strP("auth_realm_avp", "", "AVP with the realm for uac_auth", &u.authRealmAVP, nil),
			strP("auth_password_avp", "", "AVP with the password for uac_auth", &u.authPasswordAVP, nil),
		},
		Funcs:  append(u.regFuncs(), u.reqFuncs()...),
		PVs:    u.reqPVs(),
		RPC:    u.rpcMethods(),
		Events: []string{"uac"},
		Init:   u.init,
		Start:  u.start,
		Stop:   u.stop,
	}
}

// init opens the uacreg table (creating or migrating it) and loads it;
// an unknown table version stops kamd with the error.
func (u *UAC) init() error {
	if u.send == nil {
		t, err := tm.Of(u.env)
		if err != nil {
			return fmt.Errorf("uac: %w", err)
		}
		u.send = func(req *sip.Request, dst core.Target, socket string, onReply func(*sip.Response)) error {
			return t.SendRequest(&tm.LocalRequest{Req: req, Dst: dst, Socket: socket, OnReply: onReply})
		}
	}
	if ds := u.defaultSocket.Load(); ds != "" && len(u.env.Sockets()) > 0 {
		want, _ := core.ParseSocket(ds)
		local := false
		for _, s := range u.env.Sockets() {
			local = local || s.Proto == want.Proto && s.IP == want.IP && s.Port == want.Port
		}
		if !local {
			return fmt.Errorf("uac: default_socket %s is not a local listen socket", ds)
		}
	}
	if u.env.DB == nil && u.regDBURL.Load() == "" {
		// Route tests and kamd -c run without a database: no registrations.
		u.env.Log.Debug("uac: no database, outbound registrations are off")
		return nil
	}
	db, own, err := u.openDB()
	if err != nil {
		return err
	}
	u.db, u.ownDB, u.table = db, own, u.regDBTable.Load()
	if err := core.EnsureTable(db, u.schema(u.table)); err != nil {
		return fmt.Errorf("uac: %w", err)
	}
	rows, err := loadRows(db, u.table, "")
	if err != nil {
		return err
	}
	u.resolveRows(rows, true)
	u.mu.Lock()
	defer u.unlock()
	u.apply(rows)
	return nil
}

// start sends the first REGISTERs (spread) once the listeners are up.
func (u *UAC) start(ctx context.Context) error {
	u.mu.Lock()
	defer u.unlock()
	u.started = true
	u.kick(u.order)
	return nil
}

// stopWait bounds how long Stop waits for the un-REGISTERs to finish.
const stopWait = 5 * time.Second

// stop cancels every timer and, with reg_unregister_on_stop, unregisters
// the registered records first (tm is still running: uac Needs it).
func (u *UAC) stop() {
	done := make(chan struct{})
	u.mu.Lock()
	u.started = false
	unreg := u.regUnregStop.Load() == 1
	// pending counts the un-REGISTERs in flight (guarded by mu); it starts
	// at 1 for the loop itself, so a send that fails at once cannot close
	// done early.
	pending := 1
	finish := func() {
		if pending--; pending == 0 {
			close(done)
		}
	}
	for _, r := range u.order {
		if unreg && r.flags&flagOnline != 0 {
			pending++
			u.unregister(r, finish)
		} else {
			u.unschedule(r)
		}
	}
	finish()
	u.unlock()
	select {
	case <-done:
	case <-time.After(stopWait):
		u.env.Log.Warn("uac: un-REGISTERs still pending at shutdown")
	}
	u.mu.Lock()
	for _, r := range u.order {
		r.removed = true
		u.unschedule(r)
	}
	u.unlock()
	if u.ownDB && u.db != nil {
		u.db.Close()
	}
}

// newRecord builds the record of a row (state invalid if the row breaks
// the load rules).
func (u *UAC) newRecord(row Row, now time.Time) *record {
	r := &record{Row: row, src: row, regInit: now, expires: row.Expires, flags: row.Flags &^ (flagOngoing | flagOnline | flagAuthSent | flagInit)}
	if r.ContactAddr == "" {
		r.ContactAddr = u.contactAddr()
	}
	r.AuthHA1 = strings.ToLower(r.AuthHA1)
	err := checkRow(&r.Row)
	if err == nil && r.ContactAddr == "" {
		err = fmt.Errorf("no contact address: set contact_addr or modparam reg_contact_addr")
	}
	if err == nil {
		if _, perr := core.ParseURI("sip:" + r.LUUID + "@" + r.ContactAddr); perr != nil {
			err = fmt.Errorf("contact sip:%s@%s is not a SIP URI: %v", r.LUUID, r.ContactAddr, perr)
		}
	}
	if err != nil {
		r.invalid = err.Error()
		r.state = StateInvalid
		u.env.Log.Error("uac: invalid uacreg row - ignoring record", "id", row.ID, "l_uuid", row.LUUID, "reason", r.invalid)
		return r
	}
	r.dsts = u.targets(r.AuthProxy)
	if r.RegDelay == 0 && u.regRandomDelay.Load() > 0 {
		r.RegDelay = int(rand.Int64N(u.regRandomDelay.Load()))
	}
	r.state = StateIdle
	if r.flags&flagDisabled != 0 || r.expires == 0 {
		r.state = StateDisabled
	}
	return r
}

// resolveRows looks up the next hops of rows (once per auth_proxy, with
// the lock not held); fresh drops what earlier loads cached, so a reload
// sees DNS changes.
func (u *UAC) resolveRows(rows []Row, fresh bool) {
	u.dstMu.Lock()
	if fresh || u.dsts == nil {
		u.dsts = map[string][]core.Target{}
	}
	todo := map[string]bool{}
	for _, r := range rows {
		if _, ok := u.dsts[r.AuthProxy]; !ok && r.AuthProxy != "" {
			todo[r.AuthProxy] = true
		}
	}
	u.dstMu.Unlock()
	for p := range todo {
		t, explicit := proxyTargetPort(p)
		ts := u.resolve(t, explicit)
		u.dstMu.Lock()
		u.dsts[p] = ts
		u.dstMu.Unlock()
	}
}

// targets are auth_proxy's next hops (from the cache resolveRows filled).
func (u *UAC) targets(proxy string) []core.Target {
	u.dstMu.Lock()
	ts, ok := u.dsts[proxy]
	u.dstMu.Unlock()
	if ok && len(ts) > 0 {
		return ts
	}
	t, _ := proxyTargetPort(proxy) // not resolved ahead: the transport does A/AAAA
	return []core.Target{t}
}

// contactAddr is reg_contact_addr, else the first listen socket's address.
func (u *UAC) contactAddr() string {
	if a := u.regContactAddr.Load(); a != "" {
		return a
	}
	if len(u.env.Sockets()) > 0 {
		s := u.env.Sockets()[0]
		a := net.JoinHostPort(s.Host(), strconv.Itoa(s.Port))
		if s.Proto != "udp" {
			a += ";transport=" + s.Proto
		}
		return a
	}
	return ""
}

// apply makes the records match rows (under mu), as a diff: unchanged
// rows keep their state, Call-ID, CSeq and timers; changed rows are
// replaced (the old binding unregistered, the new one registered); rows
// gone (and records reg_add put in memory only) are unregistered and
// dropped; new rows register.
func (u *UAC) apply(rows []Row) (added, changed, removed int) {
	now := u.now()
	next := map[string]*record{}
	var order, kick []*record
	for _, row := range rows {
		key := recKey(row)
		if next[key] != nil {
			continue // the unique index makes this impossible in SQL
		}
		old := u.recs[key]
		if old != nil && sameRow(old.src, row) {
			old.ID, old.src.ID = row.ID, row.ID
			next[key] = old
			order = append(order, old)
			continue
		}
		r := u.newRecord(row, now)
		if old != nil {
			changed++
			u.replaced(old, r)
		} else {
			added++
		}
		next[key] = r
		order = append(order, r)
		kick = append(kick, r)
		u.adopt(r)
	}
	for key, old := range u.recs {
		if next[key] == nil {
			u.retire(old)
			removed++
		}
	}
	u.recs, u.order = next, order
	u.stTotal.Set(int64(len(u.recs)))
	if u.started {
		u.kick(kick)
	}
	return
}

// recKey indexes a record: its l_uuid (an invalid row without one by id).
func recKey(row Row) string {
	if row.LUUID == "" {
		return fmt.Sprintf("#%d", row.ID)
	}
	return row.LUUID
}

// sameRow reports whether two rows hold the same registration.
func sameRow(a, b Row) bool {
	a.ID = b.ID
	return a == b
}

// replaced drops old, which the record r of a changed row replaces: its
// binding is unregistered (a row disabled in the table unregisters)
// unless r registers the very same one (an un-REGISTER
// racing that REGISTER could remove the binding it just made).
func (u *UAC) replaced(old, r *record) {
	registers := r.invalid == "" && r.flags&flagDisabled == 0 && r.expires > 0
	if !registers || !sameBinding(old.src, r.src) {
		u.retire(old)
		return
	}
	u.markRemoved(old)
	u.unschedule(old)
	old.gen++
	if old.flags&flagOnline != 0 && old.timerExpires.After(u.now()) {
		// The binding is the same and still valid: r stays registered
		// while its first REGISTER refreshes it.
		r.state, r.flags = StateRegistered, r.flags|flagOnline|flagInit
		r.timerExpires, r.granted, r.lastSuccess = old.timerExpires, old.granted, old.lastSuccess
		r.lastCode, r.lastReason = old.lastCode, old.lastReason
	}
}

// sameBinding reports whether two rows register the same Contact for the
// same AoR at the same place.
func sameBinding(a, b Row) bool {
	return a.LUUID == b.LUUID && a.RUsername == b.RUsername && a.RDomain == b.RDomain &&
		a.AuthProxy == b.AuthProxy && a.ContactAddr == b.ContactAddr
}

// retire drops a record: its binding is unregistered, its timer stopped.
func (u *UAC) retire(r *record) {
	u.markRemoved(r)
	u.unregister(r, nil)
	r.gen++
}

// gauge is the counter a state counts in (uac:regactive: registered,
// uac:regdisabled: disabled), or nil.
func (u *UAC) gauge(state string) *core.Counter {
	switch state {
	case StateRegistered:
		return u.stActive
	case StateDisabled:
		return u.stDisabled
	}
	return nil
}

// adopt counts a record entering the table.
func (u *UAC) adopt(r *record) {
	if c := u.gauge(r.state); c != nil {
		c.Add(1)
	}
}

// markRemoved takes a record out of the counts; its later replies change
// nothing that is counted.
func (u *UAC) markRemoved(r *record) {
	if r.removed {
		return
	}
	r.removed = true
	if c := u.gauge(r.state); c != nil {
		c.Add(-1)
	}
}

// kick schedules the first REGISTER of each record, spread by
// startSpacing, after its reg_delay.
func (u *UAC) kick(rs []*record) {
	now := u.now()
	i := 0
	for _, r := range rs {
		if r.invalid != "" || r.removed || r.flags&flagDisabled != 0 || r.expires == 0 || r.flags&flagOngoing != 0 || r.timer != nil {
			continue
		}
		at := now.Add(time.Duration(i) * startSpacing)
		if r.flags&flagInit == 0 && r.RegDelay > 0 {
			at = r.regInit.Add(time.Duration(r.RegDelay) * time.Second)
		}
		u.schedule(r, at)
		i++
	}
}

// Reload re-reads the table and applies it as a diff (uac.reg_reload).
func (u *UAC) Reload() (added, changed, removed int, err error) {
	u.reloadMu.Lock()
	defer u.reloadMu.Unlock()
	if u.db == nil {
		return 0, 0, 0, fmt.Errorf("no database")
	}
	rows, err := loadRows(u.db, u.table, "")
	if err != nil {
		return 0, 0, 0, err
	}
	u.resolveRows(rows, true)
	u.mu.Lock()
	defer u.unlock()
	a, c, r := u.apply(rows)
	u.env.Log.Info("uac: registrations reloaded", "added", a, "changed", c, "removed", r)
	return a, c, r, nil
}

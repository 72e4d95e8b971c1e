// Package htable is Kamailio's htable module: named in-memory hash tables
// shared by every message and callback, with per-item expiry. Starlark
// globals are frozen, so counters, bans and caches live here.
package htable

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kamgo/kamgo/modules/core"
)

func init() { core.Register(New) }

// ErrInc is sht_inc/sht_dec's error value (Kamailio's ambiguous -255, Q5).
const ErrInc = -255

// HT is one htable module instance (one per Env).
type HT struct {
	env *core.Env

	mu      sync.RWMutex
	tables  core.Ordered[*Table] // in definition order
	pending []error              // definition errors before Init: Init fails with them
	inited  bool

	timerInterval atomic.Int64 // seconds

	tmu   sync.Mutex
	timer core.Timer // the one sweep timer, armed while expiring items exist
	armed bool
}

// instances maps an Env to its htable, so the global PV registry
// ($sht...) reaches the instance of the message's Env.
var instances core.PerEnv[*HT]

// Of returns the htable instance bound to env (nil if none was built).
func Of(env *core.Env) *HT { return instances.Of(env) }

func errorf(format string, a ...any) error { return fmt.Errorf("htable: "+format, a...) }

// New builds the htable module.
func New(env *core.Env) *core.Module {
	h := &HT{env: env}
	instances.Set(env, h)
	return core.ApplyDefaults(h.module())
}

// Define adds a table or updates its definition. Re-defining a table with
// the same attributes (a script reload) keeps its data; changed attributes
// (autoexpire, initval, updateexpire) apply from now on, the slot count stays.
func (h *HT) Define(d *TableDef) {
	h.mu.Lock()
	t, _ := h.tables.Get(d.Name)
	if t == nil {
		h.tables.Add(d.Name, newTable(d), false)
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	old := t.Def()
	if reflect.DeepEqual(old, d) {
		return
	}
	nd := *d
	if nd.Size != old.Size {
		h.env.Log.Warn("htable: size change applies after a restart", "table", d.Name, "size", old.Size, "new", d.Size)
	}
	t.def.Store(&nd)
	if nd.AutoExpire > 0 {
		h.arm()
	}
}

// Table returns the named table or nil.
func (h *HT) Table(name string) *Table {
	h.mu.RLock()
	defer h.mu.RUnlock()
	t, _ := h.tables.Get(name)
	return t
}

// Tables lists the tables in definition order.
func (h *HT) Tables() []*Table {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.tables.Values()
}

// table is Table for script use: an unknown name is an error.
func (h *HT) table(name string) (*Table, error) {
	if t := h.Table(name); t != nil {
		return t, nil
	}
	h.mu.RLock()
	known := h.tables.Names()
	h.mu.RUnlock()
	sort.Strings(known)
	if len(known) == 0 {
		return nil, errorf("no table %q: no table is defined (modparam(\"htable\", \"htable\", \"%s=>size=8\"))", name, name)
	}
	return nil, errorf("no table %q (defined: %s)", name, strings.Join(known, ", "))
}

func (h *HT) now() time.Time { return h.env.Clock.Now() }

// done emits expiry events and arms the sweep timer if needed.
func (h *HT) done(gone []Expired, expiring bool) {
	for _, e := range gone {
		h.emitExpired(e)
	}
	if expiring {
		h.arm()
	}
}

func (h *HT) emitExpired(e Expired) {
	var v any
	switch e.Val.Kind {
	case core.KInt:
		v = e.Val.Int
	case core.KStr:
		v = e.Val.Str
	}
	h.env.Emit("htable", map[string]any{"event": "expired", "table": e.Table, "key": e.Key, "value": v})
}

// arm starts the sweep timer unless it is running.
func (h *HT) arm() {
	h.tmu.Lock()
	defer h.tmu.Unlock()
	if h.armed {
		return
	}
	h.armed = true
	h.timer = h.env.Clock.AfterFunc(time.Duration(h.timerInterval.Load())*time.Second, h.sweep)
}

// sweep removes expired items from every table and re-arms itself while
// items with an expire time remain (so an idle htable holds no timer).
func (h *HT) sweep() {
	h.tmu.Lock()
	h.armed = false
	h.timer = nil
	h.tmu.Unlock()
	now := h.now()
	var gone []Expired
	expiring := false
	for _, t := range h.Tables() {
		if t.Sweep(now, &gone) {
			expiring = true
		}
	}
	h.done(gone, expiring)
}

func (h *HT) stop() {
	h.tmu.Lock()
	if h.timer != nil {
		h.timer.Stop()
		h.timer = nil
	}
	h.armed = false
	h.tmu.Unlock()
	instances.Drop(h.env, h)
}

// ---- operations shared by KSR functions, PVs and RPC ----

// Get returns the item's value, the table's initval for a missing item of
// a table defined with one, else Null.
func (h *HT) Get(table, key string) (core.Val, error) {
	t, err := h.table(table)
	if err != nil {
		return core.Null, err
	}
	var gone []Expired
	v, _, ok := t.Get(key, h.now(), &gone)
	h.done(gone, false)
	if !ok {
		if d := t.Def(); d.HasInitVal {
			return core.Val{Kind: core.KInt, Int: d.InitVal}, nil
		}
	}
	return v, nil
}

// Set stores a value; expire nil applies the table's autoexpire, else the
// item expires after *expire seconds (0: never).
func (h *HT) Set(table, key string, v core.Val, expire *int64) error {
	t, err := h.table(table)
	if err != nil {
		return err
	}
	if v.Kind == core.KBool {
		v = core.Val{Kind: core.KInt, Int: v.Int}
	}
	now := h.now()
	var exp *time.Time
	if expire != nil {
		if *expire < 0 {
			return errorf("negative expire %d", *expire)
		}
		e := time.Time{}
		if *expire > 0 {
			e = now.Add(time.Duration(*expire) * time.Second)
		}
		exp = &e
	}
	var gone []Expired
	if v.IsNull() {
		t.Delete(key)
		h.done(gone, false)
		return nil
	}
	expiring := t.Set(key, v, exp, now, &gone)
	h.done(gone, expiring)
	return nil
}

// SetExpire sets an item's expire to now+secs (0: never); false if absent.
func (h *HT) SetExpire(table, key string, secs int64) (bool, error) {
	t, err := h.table(table)
	if err != nil {
		return false, err
	}
	if secs < 0 {
		return false, errorf("negative expire %d", secs)
	}
	now := h.now()
	e := time.Time{}
	if secs > 0 {
		e = now.Add(time.Duration(secs) * time.Second)
	}
	var gone []Expired
	ok := t.SetExpire(key, e, now, &gone)
	h.done(gone, ok && secs > 0)
	return ok, nil
}

// ExpireIn is the item's remaining lifetime in seconds (0: never or absent).
func (h *HT) ExpireIn(table, key string) (int64, error) {
	t, err := h.table(table)
	if err != nil {
		return 0, err
	}
	now := h.now()
	var gone []Expired
	_, exp, ok := t.Get(key, now, &gone)
	h.done(gone, false)
	if !ok || exp.IsZero() {
		return 0, nil
	}
	return int64((exp.Sub(now) + time.Second - 1) / time.Second), nil
}

// Add increments an int item (creating it from initval or 0).
func (h *HT) Add(m *core.Msg, table, key string, delta int64) (core.Val, error) {
	t, err := h.table(table)
	if err != nil {
		return core.Null, err
	}
	var gone []Expired
	n, ok, expiring := t.Add(key, delta, h.now(), &gone)
	h.done(gone, expiring)
	if !ok {
		// Kamailio's -255 is kept for compatibility; it is also a value a
		// counter can reach, so the error is logged too (Q5).
		h.env.Log.Error("htable: cannot add to a str item", "table", table, "key", key, "delta", delta, "at", pos(m))
		return core.Int(ErrInc), nil
	}
	return core.Val{Kind: core.KInt, Int: n}, nil
}

func pos(m *core.Msg) string {
	if m == nil {
		return ""
	}
	return m.Pos()
}

func (h *HT) module() *core.Module {
	s, i := core.ArgStr, core.ArgInt
	ss := []core.ArgType{s, s}
	sss := []core.ArgType{s, s, s}
	one := core.Int(1)
	fn := func(name string, args []core.ArgType, ret core.RetType, doc string, f func(m *core.Msg, a []core.Val) (core.Val, error)) core.Func {
		return core.Func{Name: name, Args: args, Ret: ret, Doc: doc, Fn: f}
	}
	matchFn := func(name, doc string, byValue, remove bool) core.Func {
		ops := "eq,ne,re,sw"
		if remove {
			ops = "re,sw"
		}
		return fn(name, sss, core.RetInt, doc, func(m *core.Msg, a []core.Val) (core.Val, error) {
			t, err := h.table(a[0].Str)
			if err != nil {
				return core.Null, err
			}
			match, err := NewMatch(a[1].Str, a[2].Str, ops)
			if err != nil {
				return core.Null, err
			}
			if remove {
				t.RemoveMatching(match, byValue)
				return one, nil
			}
			return core.IntRet(t.Any(match, byValue, h.now())), nil
		})
	}
	reFn := func(name, doc string, byValue bool) core.Func {
		return fn(name, ss, core.RetInt, doc, func(m *core.Msg, a []core.Val) (core.Val, error) {
			t, err := h.table(a[0].Str)
			if err != nil {
				return core.Null, err
			}
			match, err := NewMatch("re", a[1].Str, "re")
			if err != nil {
				return core.Null, err
			}
			t.RemoveMatching(match, byValue)
			return one, nil
		})
	}
	funcs := []core.Func{
		fn("sht_get", ss, core.RetXVal, "(table, key) the value (str or int); a missing item is the table's initval if it has one, else None",
			h.shtGet),
		fn("sht_gete", ss, core.RetXVal, "(table, key) like sht_get, but \"\" instead of None",
			h.shtGete),
		fn("sht_sets", sss, core.RetInt, "(table, key, value) store a str; 1",
			h.shtSets),
		fn("sht_seti", []core.ArgType{s, s, i}, core.RetInt, "(table, key, value) store an int; 1",
			h.shtSeti),
		fn("sht_setxs", []core.ArgType{s, s, s, i}, core.RetInt, "(table, key, value, expire) store a str that expires after expire seconds (0: never); 1",
			h.shtSetxs),
		fn("sht_setxi", []core.ArgType{s, s, i, i}, core.RetInt, "(table, key, value, expire) store an int that expires after expire seconds (0: never); 1",
			h.shtSetxi),
		fn("sht_setex", []core.ArgType{s, s, i}, core.RetInt, "(table, key, expire) the item expires after expire seconds from now (0: never); 1, -1 no such item",
			h.shtSetex),
		fn("sht_rm", ss, core.RetInt, "(table, key) remove the item; 1 (also when absent, as Kamailio)",
			h.shtRm),
		reFn("sht_rm_name_re", "(table, regex) remove the items whose name matches (RE2); 1", false),
		reFn("sht_rm_value_re", "(table, regex) remove the str items whose value matches (RE2); 1", true),
		matchFn("sht_rm_name", "(table, op, value) remove items by name: op re (regex) or sw (starts with); 1", false, true),
		matchFn("sht_rm_value", "(table, op, value) remove str items by value: op re or sw; 1", true, true),
		matchFn("sht_match_name", "(table, op, value) 1 if an item name matches: op eq, ne, re or sw; else -1", false, false),
		matchFn("sht_has_name", "alias of sht_match_name", false, false),
		matchFn("sht_match_str_value", "(table, op, value) 1 if a str item value matches: op eq, ne, re or sw; else -1", true, false),
		matchFn("sht_has_str_value", "alias of sht_match_str_value", true, false),
		fn("sht_inc", ss, core.RetInt, "(table, key) atomic +1, returns the new value; a missing item starts from initval or 0; -255 (and an ERR log) for a str item",
			h.shtInc),
		fn("sht_dec", ss, core.RetInt, "(table, key) atomic -1, as sht_inc",
			h.shtDec),
		fn("sht_is_null", ss, core.RetInt, "(table, key) 1 absent, -1 exists, -2 the table has an initval (never null)",
			h.shtIsNull),
		fn("sht_reset", []core.ArgType{s}, core.RetInt, "(table) remove every item; 1",
			h.shtReset),
	}
	intParam := func(v core.Val) error {
		if v.Int <= 0 {
			return errors.New("timer_interval must be a positive number of seconds")
		}
		h.timerInterval.Store(v.Int)
		return nil
	}
	return &core.Module{
		Name: "htable",
		Doc:  "shared in-memory hash tables with expiry",
		Params: []core.Param{
			{Name: "htable", Type: s, Default: core.Str(""), Doc: "define a table: \"name=>size=8;autoexpire=300;initval=0;updateexpire=1\" (repeatable; \"\" defines none)",
				Check: func(v core.Val) error {
					if v.Str == "" {
						return nil
					}
					_, err := ParseTableDef(v.Str)
					return err
				}, Set: h.setDefParam, Get: h.tableNames},
			{Name: "timer_interval", Type: i, Default: core.Int(20), Doc: "seconds between sweeps of expired items", Set: intParam,
				Get: func() core.Val { return core.Int(int(h.timerInterval.Load())) }},
		},
		Funcs:  funcs,
		RPC:    h.rpcMethods(),
		PVs:    h.pvs(),
		Events: []string{"htable"},
		Init: func() error {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.inited = true
			err := errors.Join(h.pending...)
			h.pending = nil
			return err
		},
		Stop: h.stop,
	}
}

// tableNames is the htable param's value in effect: the defined tables'
// names in definition order, comma-separated ("" for none).
func (h *HT) tableNames() core.Val {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return core.Str(strings.Join(h.tables.Names(), ","))
}

// setDefParam applies one modparam("htable", "htable", spec). An invalid
// definition fails startup (Init) and is ignored (logged) on a reload.
func (h *HT) setDefParam(v core.Val) error {
	if v.Str == "" {
		return nil
	}
	d, err := ParseTableDef(v.Str)
	if err != nil {
		h.mu.Lock()
		if !h.inited {
			h.pending = append(h.pending, err)
		}
		h.mu.Unlock()
		return err
	}
	h.Define(d)
	return nil
}

// shtGet is KSR.htable.sht_get.
func (h *HT) shtGet(m *core.Msg, a []core.Val) (core.Val, error) { return h.Get(a[0].Str, a[1].Str) }

// shtGete is KSR.htable.sht_gete.
func (h *HT) shtGete(m *core.Msg, a []core.Val) (core.Val, error) {
	v, err := h.Get(a[0].Str, a[1].Str)
	if err == nil && v.IsNull() {
		v = core.Str("")
	}
	return v, err
}

// shtSets is KSR.htable.sht_sets.
func (h *HT) shtSets(m *core.Msg, a []core.Val) (core.Val, error) {
	return core.Int(1), h.Set(a[0].Str, a[1].Str, a[2], nil)
}

// shtSeti is KSR.htable.sht_seti.
func (h *HT) shtSeti(m *core.Msg, a []core.Val) (core.Val, error) {
	return core.Int(1), h.Set(a[0].Str, a[1].Str, a[2], nil)
}

// shtSetxs is KSR.htable.sht_setxs.
func (h *HT) shtSetxs(m *core.Msg, a []core.Val) (core.Val, error) {
	return core.Int(1), h.Set(a[0].Str, a[1].Str, a[2], &a[3].Int)
}

// shtSetxi is KSR.htable.sht_setxi.
func (h *HT) shtSetxi(m *core.Msg, a []core.Val) (core.Val, error) {
	return core.Int(1), h.Set(a[0].Str, a[1].Str, a[2], &a[3].Int)
}

// shtSetex is KSR.htable.sht_setex.
func (h *HT) shtSetex(m *core.Msg, a []core.Val) (core.Val, error) {
	ok, err := h.SetExpire(a[0].Str, a[1].Str, a[2].Int)
	return core.IntRet(ok), err
}

// shtRm is KSR.htable.sht_rm.
func (h *HT) shtRm(m *core.Msg, a []core.Val) (core.Val, error) {
	t, err := h.table(a[0].Str)
	if err != nil {
		return core.Null, err
	}
	t.Delete(a[1].Str)
	return core.Int(1), nil
}

// shtInc is KSR.htable.sht_inc.
func (h *HT) shtInc(m *core.Msg, a []core.Val) (core.Val, error) {
	return h.Add(m, a[0].Str, a[1].Str, 1)
}

// shtDec is KSR.htable.sht_dec.
func (h *HT) shtDec(m *core.Msg, a []core.Val) (core.Val, error) {
	return h.Add(m, a[0].Str, a[1].Str, -1)
}

// shtIsNull is KSR.htable.sht_is_null.
func (h *HT) shtIsNull(m *core.Msg, a []core.Val) (core.Val, error) {
	t, err := h.table(a[0].Str)
	if err != nil {
		return core.Null, err
	}
	if t.Def().HasInitVal {
		return core.Int(-2), nil
	}
	var gone []Expired
	_, _, ok := t.Get(a[1].Str, h.now(), &gone)
	h.done(gone, false)
	if ok {
		return core.Int(-1), nil
	}
	return core.Int(1), nil
}

// shtReset is KSR.htable.sht_reset.
func (h *HT) shtReset(m *core.Msg, a []core.Val) (core.Val, error) {
	t, err := h.table(a[0].Str)
	if err != nil {
		return core.Null, err
	}
	t.Reset()
	return core.Int(1), nil
}

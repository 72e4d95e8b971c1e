// Package uac is Kamailio's uac module: outbound registrations from the
// uacreg table (kept in SQLite, status over RPC) and requests kamd sends
// itself (uac_req_send). Registration needs tm's local requests, so the
// module Needs tm: it starts after tm and stops before it, which lets Stop
// still unregister through tm.
package uac

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/kamgo/kamgo/modules/core"
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
	env *core.Env

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

	mu sync.Mutex
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
	u := &UAC{env: env}
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
			intP("reg_active", 1, "0: no REGISTER is sent (runtime switch: uac.reg_active)", &u.regActive, bool01("reg_active")),
			intP("reg_gc_interval", 150, "accepted for compatibility: reloads are applied as a diff, nothing is kept for garbage collection", &u.regGCIntv, nonNeg("reg_gc_interval")),
			intP("reload_delta", 30, "accepted for compatibility: reloads are serialised, never refused for being too fast", &u.reloadDelta, nonNeg("reload_delta")),
			static(intP("reg_hash_size", 4, "accepted for compatibility (records are indexed by maps)", &u.regHashSize, func(v int64) error {
				if v < 1 || v > 20 {
					return fmt.Errorf("reg_hash_size %d: want 1-20", v)
				}
				return nil
			})),
			intP("reg_use_domain", 0, "1: uac_reg_lookup also matches the domain", &u.regUseDomain, bool01("reg_use_domain")),
			intP("reg_unregister_on_stop", 0, "kamgo: 1 sends Expires: 0 for every registered record when kamd stops", &u.regUnregStop, bool01("reg_unregister_on_stop")),
			strP("default_socket", "", "proto:ip:port to send from when a row has no socket (and for uac_req_send)", &u.defaultSocket, func(s string) error {
				if s == "" {
					return nil
				}
				_, err := core.ParseSocket(s)
				return err
			}),
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

// init runs after the config phase.
func (u *UAC) init() error { return nil }

// start runs when the listeners are up.
func (u *UAC) start(ctx context.Context) error { return nil }

// stop runs on shutdown, before tm's Stop.
func (u *UAC) stop() {}

// regFuncs are the registration-side script functions.
func (u *UAC) regFuncs() []core.Func { return nil }

// rpcMethods are the uac.* RPC methods.
func (u *UAC) rpcMethods() []core.RPCMethod { return nil }

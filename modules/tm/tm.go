// Package tm is Kamailio's tm module: the stateful proxy core
// (RFC 3261 §16/§17): transactions, retransmissions, final-response timers,
// CANCEL, serial forking through failure routes, and reply routes.
package tm

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

func init() { core.Register(New) }

// TM is one tm module instance.
type TM struct {
	env *core.Env

	mu      sync.Mutex
	txs     map[string]*Tx // server key → tx
	clients map[string]*Tx // our branch id → tx
	dlgs    map[string]*Tx // Call-ID|From tag|CSeq → INVITE tx (e2e ACK matching)
	seq     atomic.Uint64
	stopped atomic.Bool // no new local requests once tm stops
	hooks   hooks       // Go callbacks of modules following transactions (dialog, acc)

	frTimer    atomic.Int64 // ms
	frInvTimer atomic.Int64 // ms
	waitTimer  atomic.Int64 // ms
	maxInvLife atomic.Int64 // ms
	maxLife    atomic.Int64 // ms
	maxTx      atomic.Int64 // max_transactions (0: no count limit)
	maxTxMem   atomic.Int64 // max_transactions_mem, MB (0: no limit)
	txBytes    atomic.Int64 // estimated bytes of the live transactions (limits.go)
	pooled     bool         // timers run on firePool (the wall clock; timerpool.go)
	reap       *reaper      // frees finished transactions after wait_timer (reaper.go)

	st struct {
		created, freed, rplReceived, rplGenerated, rplSent, relayed, canceled, timeouts *core.Counter
		current                                                                         *core.Counter
		refused                                                                         *core.Counter
		codes                                                                           [7]*core.Counter
	}
}

type settings struct {
	frInv, fr time.Duration
}

// New builds the tm module.
func New(env *core.Env) *core.Module {
	t := &TM{env: env, txs: map[string]*Tx{}, clients: map[string]*Tx{}, dlgs: map[string]*Tx{}}
	instances.Store(env, t)
	t.pooled = core.IsRealClock(env.Clock)
	t.reap = newReaper(t)
	s := env.Stats
	t.st.created = s.Counter("tm", "created")
	t.st.freed = s.Counter("tm", "freed")
	t.st.rplReceived = s.Counter("tm", "rpl_received")
	t.st.rplGenerated = s.Counter("tm", "rpl_generated")
	t.st.rplSent = s.Counter("tm", "rpl_sent")
	t.st.relayed = s.Counter("tm", "relayed")
	t.st.canceled = s.Counter("tm", "canceled")
	t.st.timeouts = s.Counter("tm", "timeouts")
	t.st.current = s.Counter("tm", "current")
	t.st.current.NoReset = true
	t.st.refused = s.Counter("tm", "refused_overload")
	for i := 1; i <= 6; i++ {
		t.st.codes[i] = s.Counter("tm", strconv.Itoa(i)+"xx")
	}
	positive := func(v core.Val) error {
		if v.Int <= 0 {
			return fmt.Errorf("must be a positive number of milliseconds, got %d", v.Int)
		}
		return nil
	}
	msParam := func(name string, def int, doc string, dst *atomic.Int64) core.Param {
		return core.Param{Name: name, Type: core.ArgInt, Default: core.Int(def), Doc: doc, Check: positive,
			Set: func(v core.Val) error {
				if err := positive(v); err != nil {
					return err
				}
				dst.Store(v.Int)
				return nil
			},
			Get: func() core.Val { return core.Int(int(dst.Load())) }}
	}
	limitParam := func(name string, def int, doc string, dst *atomic.Int64) core.Param {
		check := core.CheckNonNegative(name)
		return core.Param{Name: name, Type: core.ArgInt, Default: core.Int(def), Doc: doc, Check: check,
			Set: func(v core.Val) error {
				if err := check(v); err != nil {
					return err
				}
				dst.Store(v.Int)
				return nil
			},
			Get: func() core.Val { return core.Int(int(dst.Load())) }}
	}
	i := core.ArgInt
	s1 := []core.ArgType{core.ArgStr}
	reqRoutes := core.RouteRequest | core.RouteFailure
	return core.ApplyDefaults(&core.Module{
		Name: "tm",
		Doc:  "stateful transactions",
		Params: []core.Param{
			msParam("fr_timer", 30000, "ms to wait for a final reply when no provisional came", &t.frTimer),
			msParam("fr_inv_timer", 120000, "ms to wait for a final reply to an INVITE after a provisional", &t.frInvTimer),
			msParam("wait_timer", 5000, "ms a finished transaction is kept to absorb retransmissions", &t.waitTimer),
			msParam("max_inv_lifetime", 180000, "ms an INVITE transaction may live before it is ended (408 on pending branches)", &t.maxInvLife),
			msParam("max_noninv_lifetime", 32000, "ms a non-INVITE transaction may live before it is ended", &t.maxLife),
			limitParam("max_transactions", 0, "most live transactions; a new one beyond it gets a stateless 503 (INVITEs: beyond 90%, the rest is kept for non-INVITE requests); 0: no count limit", &t.maxTx),
			limitParam("max_transactions_mem", DefaultMaxTransactionsMem, "MB of estimated memory all live transactions may hold (about 4 KB + 6× the request's size each while pending, 45 % of that in wait_timer); beyond it, as max_transactions; 0: no limit", &t.maxTxMem),
		},
		Funcs: []core.Func{
			{Name: "t_relay", Ret: core.RetInt, Routes: reqRoutes, Doc: "relay statefully to $du or the R-URI; 1 ok, 0 retransmission absorbed, <0 error",
				Fn: t.tRelay},
			{Name: "t_relay_to_proxy", Args: s1, Ret: core.RetInt, Routes: reqRoutes, Doc: "(\"proto:host:port\") relay statefully to that address",
				Fn: t.tRelayToProxy},
			cbSetter("t_on_failure", func(m *core.Msg, n string) { m.OnFailure = n }),
			cbSetter("t_on_reply", func(m *core.Msg, n string) { m.OnReply = n }),
			cbSetter("t_on_branch", func(m *core.Msg, n string) { m.OnBranch = n }),
			cbSetter("t_on_branch_failure", func(m *core.Msg, n string) { m.OnBranchFailure = n }),
			{Name: "t_is_set", Args: s1, Ret: core.RetInt, Doc: "(\"branch_route\"|\"failure_route\"|\"onreply_route\") 1 if that callback is armed (on the transaction, else the message), -1 if not",
				Fn: t.tIsSet},
			{Name: "t_check_trans", Ret: core.RetInt, Doc: "requests: 0 retransmission absorbed (or ACK to a negative reply), 1 CANCEL/ACK whose INVITE transaction exists, -1 none; replies: 1/-1",
				Fn: t.tCheckTrans},
			{Name: "t_newtran", Ret: core.RetInt, Routes: core.RouteRequest, Doc: "create the transaction now: 1 new, 0 retransmission (absorbed), -10 already exists for this message",
				Fn: t.tNewtran},
			{Name: "t_reply", Args: []core.ArgType{i, core.ArgStr}, Ret: core.RetInt, Routes: reqRoutes, Doc: "(code, reason) stateful reply; -1 without a transaction",
				Fn: t.tReply},
			{Name: "t_send_reply", Args: []core.ArgType{i, core.ArgStr}, Ret: core.RetInt, Routes: reqRoutes, Doc: "t_newtran() then t_reply()",
				Fn: t.tSendReply},
			{Name: "t_set_fr", Args: []core.ArgType{i, i}, Ret: core.RetInt, Routes: reqRoutes | core.RouteBranch, Doc: "(fr_inv_ms, fr_ms) final-response timers for this transaction; 0 leaves one unchanged",
				Fn: t.tSetFr},
			{Name: "t_reset_fr", Ret: core.RetInt, Routes: reqRoutes, Doc: "back to the fr_timer/fr_inv_timer modparams",
				Fn: t.tResetFr},
			{Name: "t_is_canceled", Ret: core.RetInt, Doc: "1 if the transaction was CANCELed",
				Fn: t.tIsCanceled},
			{Name: "t_branch_timeout", Ret: core.RetInt, Routes: core.RouteFailure, Doc: "1 if the failed branch timed out",
				Fn: t.tBranchTimeout},
			{Name: "t_branch_replied", Ret: core.RetInt, Routes: core.RouteFailure, Doc: "1 if the failed branch received a reply",
				Fn: t.tBranchReplied},
			{Name: "t_any_timeout", Ret: core.RetInt, Doc: "1 if any branch timed out",
				Fn: t.tAnyTimeout},
			{Name: "t_any_replied", Ret: core.RetInt, Doc: "1 if any branch received a reply",
				Fn: t.tAnyReplied},
			{Name: "t_get_status_code", Ret: core.RetInt, Doc: "the most relevant status code, or -1",
				Fn: t.tGetStatusCode},
			{Name: "t_check_status", Args: s1, Ret: core.RetInt, Doc: "(regex) match the reply status: received (onreply), winning (failure) or last sent (request)",
				Fn: t.tCheckStatus},
		},
		RPC: []core.RPCMethod{{
			Name: "tm.stats", Doc: "transaction statistics", ReadOnly: true,
			Result:  `{"current": n, "total": n, "rpl_received": n, "rpl_generated": n, "rpl_sent": n, "6xx".."2xx": n, "created": n, "freed": n}`,
			Handler: func(context.Context, core.RPCArgs) (any, error) { return t.stats(), nil },
		}},
		PVs:       tmPVs,
		OnRequest: t.onRequest,
		OnReply:   t.onReply,
		Stop:      t.stop,
	})
}

// reply is t_reply: like Kamailio, a reply after the final one is -1 (logged), not a script error.
func (t *TM) reply(tx *Tx, m *core.Msg, a []core.Val) (core.Val, error) {
	if ls := m.ForcedSocket(tx.origin.Proto); ls != nil {
		tx.mu.Lock()
		tx.up.LocalSocket = ls // set_send_socket after t_newtran
		tx.mu.Unlock()
	}
	if err := tx.Reply(m, int(a[0].Int), a[1].Str); err != nil {
		if errors.Is(err, errFinalSent) {
			t.env.Log.Error("tm: t_reply: "+err.Error(), "code", a[0].Int, "at", m.Pos())
			return core.Int(-1), nil
		}
		return core.Null, err
	}
	return core.Int(1), nil
}

func nz(a, b time.Duration) time.Duration {
	if a > 0 {
		return a
	}
	return b
}

func cbSetter(name string, set func(m *core.Msg, n string)) core.Func {
	return core.Func{Name: name, Args: []core.ArgType{core.ArgStr}, Ret: core.RetInt, CallbackArg: 1,
		Doc: "(\"function\") name the callback; \"\" resets; an undefined name is an error (checked at load for literals)",
		Fn: func(m *core.Msg, a []core.Val) (core.Val, error) {
			if a[0].Str != "" && m.Env.Router != nil && !m.Env.Router.HasCallback(m.Prog, a[0].Str) {
				return core.Null, fmt.Errorf("%s: the script defines no function %q", name, a[0].Str)
			}
			set(m, a[0].Str)
			if tx, ok := m.Tx.(*Tx); ok && m.RouteType == core.RouteFailure {
				// In a failure route the names apply to the new branches.
				tx.mu.Lock()
				switch name {
				case "t_on_failure":
					tx.onFailure = a[0].Str
				case "t_on_reply":
					tx.onReply = a[0].Str
				case "t_on_branch":
					tx.onBranch = a[0].Str
				}
				tx.mu.Unlock()
			}
			return core.Int(1), nil
		}}
}

func settingsOf(m *core.Msg) *settings {
	if s, ok := m.Ext["tm"].(*settings); ok {
		return s
	}
	s := &settings{}
	m.SetExt("tm", s)
	return s
}

func (t *TM) stats() map[string]int64 {
	g := t.env.Stats.Get("tm")
	out := map[string]int64{}
	for k, v := range g {
		out[strings.TrimPrefix(k, "tm:")] = v
	}
	out["total"] = out["created"]
	return out
}

func (t *TM) stop() {
	t.stopped.Store(true)
	t.reap.stop()
	t.mu.Lock()
	txs := make([]*Tx, 0, len(t.txs))
	for _, tx := range t.txs {
		txs = append(txs, tx)
	}
	t.mu.Unlock()
	for _, tx := range txs {
		tx.mu.Lock()
		tx.stopTimers()
		tx.mu.Unlock()
	}
}

func (t *TM) lookup(key string) *Tx {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.txs[key]
}

// lookupReq is lookup(txKey(req, method)) without building the key string.
func (t *TM) lookupReq(req *sip.Request, method string) *Tx {
	var buf [128]byte
	k := appendTxKey(buf[:0], req, method)
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.txs[string(k)]
}

// lookupDlg is the INVITE transaction an end-to-end ACK belongs to.
func (t *TM) lookupDlg(req *sip.Request) *Tx {
	var buf [128]byte
	k := appendDlgKey(buf[:0], req)
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.dlgs[string(k)]
}

// branchID derives our client branch prefix from the server key, so the
// same request gives the same branches (deterministic for route tests).
func branchID(key string, seq uint64) string {
	// FNV-1a (hash/fnv's New64a) inline: hash/fnv costs two allocations.
	h := uint64(14695981039346656037)
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= 1099511628211
	}
	var buf [64]byte
	b := append(buf[:0], "z9hG4bKkg"...)
	b = strconv.AppendUint(b, h, 36)
	b = strconv.AppendUint(b, seq, 36)
	return string(b)
}

// onsendRoute reports whether the current script has ksr_onsend_route
// (starlark.OnsendRoute; modules do not import starlark), which runs on
// every request tm sends and may change it.
func (t *TM) onsendRoute() bool {
	r := t.env.Router
	return r != nil && r.HasCallback(r.Current(), "ksr_onsend_route")
}

// tRelay is KSR.tm.t_relay.
func (t *TM) tRelay(m *core.Msg, _ []core.Val) (core.Val, error) { return t.relay(m, nil) }

// tRelayToProxy is KSR.tm.t_relay_to_proxy.
func (t *TM) tRelayToProxy(m *core.Msg, a []core.Val) (core.Val, error) {
	sock, err := core.ParseSocket(a[0].Str)
	if err != nil {
		return core.Null, err
	}
	dst := core.Target{Proto: sock.Proto, Host: sock.IP, Port: sock.Port}
	return t.relay(m, &dst)
}

// tCheckTrans is KSR.tm.t_check_trans.
func (t *TM) tCheckTrans(m *core.Msg, _ []core.Val) (core.Val, error) { return t.checkTrans(m), nil }

// tNewtran is KSR.tm.t_newtran.
func (t *TM) tNewtran(m *core.Msg, _ []core.Val) (core.Val, error) { return t.newtran(m) }

// tReply is KSR.tm.t_reply.
func (t *TM) tReply(m *core.Msg, a []core.Val) (core.Val, error) {
	tx, _ := m.Tx.(*Tx)
	if tx == nil {
		return core.Int(-1), nil
	}
	return t.reply(tx, m, a)
}

// tSendReply is KSR.tm.t_send_reply.
func (t *TM) tSendReply(m *core.Msg, a []core.Val) (core.Val, error) {
	if m.Tx == nil {
		if v, err := t.newtran(m); err != nil || v.Int <= 0 {
			return v, err
		}
	}
	return t.reply(m.Tx.(*Tx), m, a)
}

// tSetFr is KSR.tm.t_set_fr.
func (t *TM) tSetFr(m *core.Msg, a []core.Val) (core.Val, error) {
	if a[0].Int < 0 || a[1].Int < 0 {
		return core.Null, fmt.Errorf("t_set_fr: timers must not be negative")
	}
	s := settingsOf(m)
	if a[0].Int > 0 {
		s.frInv = time.Duration(a[0].Int) * time.Millisecond
	}
	if a[1].Int > 0 {
		s.fr = time.Duration(a[1].Int) * time.Millisecond
	}
	if tx, ok := m.Tx.(*Tx); ok {
		tx.mu.Lock()
		tx.frInv, tx.frTimeout = nz(s.frInv, tx.frInv), nz(s.fr, tx.frTimeout)
		tx.mu.Unlock()
	}
	return core.Int(1), nil
}

// tResetFr is KSR.tm.t_reset_fr.
func (t *TM) tResetFr(m *core.Msg, _ []core.Val) (core.Val, error) {
	m.SetExt("tm", &settings{})
	return core.Int(1), nil
}

// tIsCanceled is KSR.tm.t_is_canceled.
func (t *TM) tIsCanceled(m *core.Msg, _ []core.Val) (core.Val, error) {
	tx, _ := m.Tx.(*Tx)
	return core.IntRet(tx != nil && tx.isCanceled()), nil
}

// tBranchTimeout is KSR.tm.t_branch_timeout.
func (t *TM) tBranchTimeout(m *core.Msg, _ []core.Val) (core.Val, error) {
	return t.branchTest(m, func(b *branch) bool { return b.timedOut }), nil
}

// tBranchReplied is KSR.tm.t_branch_replied.
func (t *TM) tBranchReplied(m *core.Msg, _ []core.Val) (core.Val, error) {
	return t.branchTest(m, func(b *branch) bool { return b.code > 0 && !b.timedOut }), nil
}

// tAnyTimeout is KSR.tm.t_any_timeout.
func (t *TM) tAnyTimeout(m *core.Msg, _ []core.Val) (core.Val, error) {
	return t.anyBranch(m, func(b *branch) bool { return b.timedOut }), nil
}

// tAnyReplied is KSR.tm.t_any_replied.
func (t *TM) tAnyReplied(m *core.Msg, _ []core.Val) (core.Val, error) {
	return t.anyBranch(m, func(b *branch) bool { return b.code > 0 && !b.timedOut }), nil
}

// tGetStatusCode is KSR.tm.t_get_status_code.
func (t *TM) tGetStatusCode(m *core.Msg, _ []core.Val) (core.Val, error) {
	if m.Res != nil {
		return core.Int(m.Res.StatusCode), nil
	}
	if m.ReplyCode > 0 {
		return core.Int(m.ReplyCode), nil
	}
	return core.Int(-1), nil
}

// tCheckStatus is KSR.tm.t_check_status.
func (t *TM) tCheckStatus(m *core.Msg, a []core.Val) (core.Val, error) {
	code := m.ReplyCode
	if m.Res != nil {
		code = m.Res.StatusCode
	}
	re, err := compileStatus(a[0].Str)
	if err != nil {
		return core.Null, err
	}
	return core.IntRet(code > 0 && re.MatchString(strconv.Itoa(code))), nil
}

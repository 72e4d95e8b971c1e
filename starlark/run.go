package starlark

import (
	"errors"
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/kamgo/kamgo/modules/core"
	sk "go.starlark.net/starlark"
)

func (e *Engine) newThread() any {
	c := &callCtx{}
	th := &sk.Thread{Name: "route", Print: e.printer()}
	c.th = th
	c.g.th, c.g.owner = th, e
	c.where = func() string { return th.CallFrame(1).Pos.String() }
	th.SetLocal(ctxKey, c)
	return c
}

// ErrStepLimit marks a callback stopped by the step limit.
var ErrStepLimit = errors.New("step limit exceeded")

// Run calls a callback of prog (or the current program when prog is nil)
// with m bound. A missing callback is not an error for the core reply and
// onsend routes; it is for named tm callbacks (logged by the caller).
func (e *Engine) Run(prog any, name string, rt core.RouteType, m *core.Msg) (err error) {
	p, _ := prog.(*Program)
	if p == nil {
		p = e.current.Load()
	}
	if p == nil {
		return errors.New("no script loaded")
	}
	if e.stopping.Load() >= 2 {
		return fmt.Errorf("%s not run: %w", name, ErrShuttingDown)
	}
	fn := p.callbacks[name]
	if fn == nil {
		return fmt.Errorf("callback %s is not defined in %s (version %d)", name, p.Path, p.Version)
	}
	c := e.pool.Get().(*callCtx)
	th := c.th
	prevRT, prevWhere := m.RouteType, m.Where
	m.RouteType, m.Prog, m.Where = rt, p, c.where
	c.msg = m
	g := &c.g
	ended := false
	defer func() {
		if !ended {
			wd.end(g)
		}
		if r := recover(); r != nil {
			// A Go panic in a KSR function must never take the daemon down.
			err = fmt.Errorf("panic in %s: %v\n%s", name, r, debug.Stack())
			th = nil // the thread's stack state is unknown: do not reuse it
		}
		m.RouteType, m.Where = prevRT, prevWhere
		c.msg = nil
		if th != nil {
			e.pool.Put(c)
		}
	}()
	th.Uncancel()
	th.SetMaxExecutionSteps(th.ExecutionSteps() + p.MaxSteps)
	var args sk.Tuple
	if fn.NumParams() == 1 {
		args = sk.Tuple{&msgValue{m: m}}
		if m.Event != "" {
			args = sk.Tuple{sk.String(m.Event)} // KEMI: ksr_uac_event(evname)
		}
	}
	start := th.ExecutionSteps() // route tests count steps: see steps.go
	g.limit, g.budget = int64(p.Limits.TimeLimit), p.Limits.MemBudget
	wd.begin(g)
	_, err = sk.Call(th, fn, args, nil)
	ended = true
	cause := wd.end(g)
	e.noteSteps(name, th.ExecutionSteps()-start) // route tests (steps.go)
	if err == nil || errors.Is(err, core.ErrExit) {
		return nil
	}
	if gerr := guardErr(cause, g, name, err); gerr != nil {
		return gerr
	}
	var ee *sk.EvalError
	if errors.As(err, &ee) && isStepLimit(ee.Msg) {
		return &ScriptError{Msg: fmt.Sprintf("%s: %s: step limit of %d exceeded", posOf(ee), name, p.MaxSteps), Backtrace: ee.Backtrace(), Cause: ErrStepLimit}
	}
	return evalErr(err)
}

func isStepLimit(msg string) bool { return strings.Contains(msg, "too many steps") }

func posOf(ee *sk.EvalError) string {
	for i := len(ee.CallStack) - 1; i >= 0; i-- {
		if p := ee.CallStack[i].Pos; p.Filename() != "<builtin>" {
			return p.String()
		}
	}
	return "?"
}

func (e *Engine) logScriptErr(name string, m *core.Msg, err error) {
	var se *ScriptError
	if errors.As(err, &se) {
		e.Env.Log.Error("script error in "+name, "err", se.Msg, "backtrace", se.Backtrace, "call_id", callID(m))
		return
	}
	e.Env.Log.Error("script error in "+name, "err", err, "call_id", callID(m))
}

func callID(m *core.Msg) string {
	if msg := m.Message(); msg != nil && msg.CallID() != nil {
		return string(*msg.CallID())
	}
	return ""
}

// HandleRequest routes one received request: module pre-hooks, the
// request route, and a 500 if the script failed without answering
// (Kamailio drops the request silently).
func (e *Engine) HandleRequest(m *core.Msg) {
	e.handling.Add(1) // shutdown waits for the answer too (shutdown.go)
	defer e.handling.Add(-1)
	e.Env.Stats.Counter("core", "rcv_requests").Inc()
	m.FixVia()
	for _, mod := range e.Modules {
		if mod.OnRequest != nil && mod.OnRequest(m) {
			return
		}
	}
	if e.stopping.Load() > 0 {
		// Shutting down (shutdown.go): accept no new work.
		if m.Req != nil && !m.Req.IsAck() {
			_ = m.Reply(503, "Service Unavailable")
		}
		return
	}
	err := e.Run(nil, RequestRoute, core.RouteRequest, m)
	if err == nil {
		return
	}
	e.Env.Stats.Counter("core", "script_errors").Inc()
	e.logScriptErr(RequestRoute, m, err)
	if !m.Replied && !m.Forwarded && m.Req != nil && !m.Req.IsAck() {
		// Statefully if a transaction exists, so retransmissions get the same 500.
		if rerr := m.Reply(500, "Server Internal Error"); rerr != nil {
			e.Env.Log.Error("cannot send 500 after script error", "err", rerr)
		}
	}
}

// HandleReply routes one received reply: the core reply route, then
// modules (tm), then stateless forwarding by the next Via.
func (e *Engine) HandleReply(m *core.Msg) {
	e.Env.Stats.Counter("core", "rcv_replies").Inc()
	if p := e.current.Load(); p != nil && p.callbacks[ReplyRoute] != nil {
		if err := e.Run(p, ReplyRoute, core.RouteReply, m); err != nil {
			e.logScriptErr(ReplyRoute, m, err)
		}
		if m.Dropped {
			e.Env.Stats.Counter("core", "drop_replies").Inc()
			return
		}
	}
	for _, mod := range e.Modules {
		if mod.OnReply != nil && mod.OnReply(m) {
			return
		}
	}
	e.ForwardReply(m)
}

// ForwardReply passes a reply on statelessly: pop our Via, send by the next.
func (e *Engine) ForwardReply(m *core.Msg) {
	res := m.Res
	v := res.Via()
	if v == nil || !e.Env.IsMyself(v.Host, v.Port) {
		e.Env.Log.Debug("dropping reply whose top Via is not ours", "call_id", callID(m))
		e.Env.Stats.Counter("core", "drop_replies").Inc()
		return
	}
	core.PopTopVia(res)
	next := res.Via()
	if next == nil {
		e.Env.Stats.Counter("core", "drop_replies").Inc()
		return
	}
	dst := core.ViaTarget(next)
	if err := e.Env.Sender.Send(&core.Outgoing{Kind: core.OutRelayedReply, Msg: res, Dst: dst}); err != nil {
		e.Env.Log.Warn("cannot forward reply", "dst", dst.String(), "err", err)
		return
	}
	e.Env.Stats.Counter("core", "fwd_replies").Inc()
}

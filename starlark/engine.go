// Package starlark compiles, validates, freezes, versions and runs kamd's
// routing scripts, and builds the KSR tree from the modules' export tables.
package starlark

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kamgo/kamgo/modules/core"
	sk "go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
	"go.starlark.net/syntax"
)

// Callback names Kamailio's KEMI uses by default.
const (
	RequestRoute = "ksr_request_route"
	ReplyRoute   = "ksr_reply_route"
	OnsendRoute  = "ksr_onsend_route"
	ModInit      = "mod_init"
)

// DefaultMaxSteps bounds one callback run; a routing script of a few dozen
// KSR calls uses well under a thousand steps.
const DefaultMaxSteps = 1_000_000

var fileOptions = &syntax.FileOptions{Set: true, TopLevelControl: true, While: false, Recursion: false, GlobalReassign: false}

// Config is what a script's top level (the config phase) declares.
type Config struct {
	Listen     []core.Socket
	Aliases    []string
	ModParams  []ModParam
	CoreParams map[string]core.Val
}

// ModParam is one modparam() call.
type ModParam struct {
	Module, Name string
	Value        core.Val
	Pos          string
}

// Program is one loaded, frozen version of a script.
type Program struct {
	Version  int
	Path     string
	SHA256   string
	LoadedAt time.Time
	Config   Config
	MaxSteps uint64
	// Limits bound mod_init and every callback (script_mem_budget,
	// script_time_limit_ms; the engine's defaults where the script sets none).
	Limits Limits

	globals   sk.StringDict
	callbacks map[string]*sk.Function
}

// Callback returns the named function or nil.
func (p *Program) Callback(name string) *sk.Function { return p.callbacks[name] }

// Engine owns the modules' KSR tree and the current program.
type Engine struct {
	Env     *core.Env
	Modules []*core.Module

	ksr      *starlarkstruct.Module
	funcs    map[string]*core.Func // native names for KSR.x.modf
	modfFns  map[string]*sk.Builtin
	params   map[string]map[string]*core.Param
	current  atomic.Pointer[Program]
	mu       sync.Mutex        // serialises loads
	versions []*Program        // kept for status and rollback, newest last
	static   map[string]string // Static params' values, fixed by the first version
	nextVer  int
	pool     sync.Pool
	// callbackArgs[module][func] is the Func's CallbackArg (load checks).
	callbackArgs map[string]map[string]int
	// MaxSteps is the default step limit when the script sets none.
	MaxSteps uint64
	// Limits are the default memory budget and time limit of every script
	// run (the config phase always runs with these, its time limit
	// LoadTimeFactor times longer: it sets the others).
	Limits Limits
	// stopping is 0 while serving, 1 once Drain refuses new requests, 2
	// once CancelRunning refuses every run (shutdown.go).
	stopping atomic.Int32
	// handling counts HandleRequest calls under way (shutdown waits for
	// a cancelled request's 500 to be sent).
	handling atomic.Int64
	// OnLoad, when set, is told about every load attempt (for events).
	OnLoad func(p *Program, err error)
	// ksrNames indexes the KSR tree for load-time name checks (ksrcheck.go).
	ksrOnce  sync.Once
	ksrNames *ksrNames
}

// KeepVersions is how many previous versions app_starlark.rollback can reach.
const KeepVersions = 5

// New builds every registered module against env and the KSR tree.
func New(env *core.Env) *Engine {
	e := &Engine{Env: env, funcs: map[string]*core.Func{}, modfFns: map[string]*sk.Builtin{}, params: map[string]map[string]*core.Param{}, callbackArgs: map[string]map[string]int{}, MaxSteps: DefaultMaxSteps,
		Limits: Limits{MemBudget: DefaultMemBudgetMB << 20, TimeLimit: DefaultTimeLimit}}
	env.Router = e
	// Core statistics exist from the start, as in Kamailio (0 until used).
	for _, name := range []string{"rcv_requests", "rcv_replies", "fwd_requests", "fwd_replies", "drop_requests", "drop_replies", "err_requests", "script_errors"} {
		env.Stats.Counter("core", name)
	}
	e.Modules = core.BuildModules(env)
	x := e.xModule()
	env.SetModule(x)
	e.Modules = append(e.Modules, x)
	e.buildKSR()
	e.pool.New = func() any { return e.newThread() }
	return e
}

func (e *Engine) buildKSR() {
	members := sk.StringDict{}
	sub := map[string]sk.StringDict{}
	for _, mod := range e.Modules {
		ps := map[string]*core.Param{}
		for i := range mod.Params {
			ps[mod.Params[i].Name] = &mod.Params[i]
		}
		e.params[mod.Name] = ps
		for i := range mod.Funcs {
			f := &mod.Funcs[i]
			if f.CallbackArg > 0 {
				if e.callbackArgs[mod.Name] == nil {
					e.callbackArgs[mod.Name] = map[string]int{}
				}
				e.callbackArgs[mod.Name][f.Name] = f.CallbackArg
			}
			var b sk.Value = e.builtin(mod.Name, f)
			if mod.Name == "x" && f.Name == "modf" {
				b = sk.NewBuiltin("x.modf", e.modf)
			}
			if mod.Name == "" {
				members[f.Name] = b
			} else {
				if sub[mod.Name] == nil {
					sub[mod.Name] = sk.StringDict{}
				}
				sub[mod.Name][f.Name] = b
			}
			// Native names for modf: module functions win over core sub-modules.
			if _, dup := e.funcs[f.Name]; !dup || (mod.Name != "pv" && mod.Name != "hdr") {
				if mod.Name != "x" {
					e.funcs[f.Name] = f
					e.modfFns[f.Name] = e.builtin("", f)
				}
			}
		}
	}
	for name, d := range sub {
		m := &starlarkstruct.Module{Name: name, Members: d}
		m.Freeze()
		members[name] = m
	}
	e.ksr = &starlarkstruct.Module{Name: "KSR", Members: members}
	e.ksr.Freeze()
}

// Funcs lists every KSR function as module.name with its entry (api_list).
func (e *Engine) Funcs() []FuncInfo {
	var out []FuncInfo
	for _, mod := range e.Modules {
		for i := range mod.Funcs {
			out = append(out, FuncInfo{Module: mod.Name, Func: &mod.Funcs[i]})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Module != out[j].Module {
			return out[i].Module < out[j].Module
		}
		return out[i].Func.Name < out[j].Func.Name
	})
	return out
}

// PVInfo names a pseudo-variable and the module whose table declares it.
type PVInfo struct {
	Module string
	Def    *core.PVDef
}

// PVs lists the pseudo-variables of every module's table, sorted by name
// case-insensitively ($ru before $rU), for api_list and the docs.
func (e *Engine) PVs() []PVInfo {
	var out []PVInfo
	for _, mod := range e.Modules {
		for i := range mod.PVs {
			out = append(out, PVInfo{Module: mod.Name, Def: &mod.PVs[i]})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := strings.ToLower(out[i].Def.Name), strings.ToLower(out[j].Def.Name)
		if a != b {
			return a < b
		}
		return out[i].Def.Name < out[j].Def.Name
	})
	return out
}

// Spec is how a script writes it: $name or $name(name).
func (p PVInfo) Spec() string {
	if p.Def.HasArg {
		return "$" + p.Def.Name + "(name)"
	}
	return "$" + p.Def.Name
}

// FuncInfo names a KSR function.
type FuncInfo struct {
	Module string
	Func   *core.Func
}

// Path is how a script calls it: KSR.name or KSR.mod.name.
func (f FuncInfo) Path() string {
	if f.Module == "" {
		return "KSR." + f.Func.Name
	}
	return "KSR." + f.Module + "." + f.Func.Name
}

// Current is the program new messages run with.
func (e *Engine) Current() any {
	if p := e.current.Load(); p != nil {
		return p
	}
	return nil
}

// Program returns the current program (nil before the first load).
func (e *Engine) Program() *Program { return e.current.Load() }

// Versions returns the loaded versions, newest last.
func (e *Engine) Versions() []*Program {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*Program(nil), e.versions...)
}

// HasCallback implements core.Router.
func (e *Engine) HasCallback(prog any, name string) bool {
	p, _ := prog.(*Program)
	return p != nil && p.callbacks[name] != nil
}

// LoadFile compiles path and, on success, makes it current.
func (e *Engine) LoadFile(path string) (*Program, error) {
	src, err := ReadScript(path)
	if err != nil {
		return e.Install(nil, fmt.Errorf("%s: %v", path, err))
	}
	return e.Load(path, src)
}

// Load compiles src, runs its config phase, checks every callback name and
// only then swaps it in. A failure changes nothing.
func (e *Engine) Load(path string, src []byte) (*Program, error) {
	return e.Install(e.Compile(path, src))
}

func (e *Engine) install(p *Program) {
	e.versions = append(e.versions, p)
	if len(e.versions) > KeepVersions+1 {
		e.versions = e.versions[len(e.versions)-KeepVersions-1:]
	}
	e.current.Store(p)
}

// Install makes a program from Compile current (after checks the caller
// made, such as app_starlark.reload's listen-socket comparison); with an
// error it only reports the failed attempt to OnLoad.
func (e *Engine) Install(p *Program, err error) (*Program, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err == nil {
		err = e.applyParams(p, e.current.Load())
	}
	if err == nil {
		e.nextVer++
		p.Version = e.nextVer
		e.install(p)
	}
	if e.OnLoad != nil {
		e.OnLoad(p, err)
	}
	return p, err
}

// Rollback makes the previous version current again.
func (e *Engine) Rollback() (*Program, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	cur := e.current.Load()
	for i := len(e.versions) - 1; i >= 0; i-- {
		if e.versions[i] == cur && i > 0 {
			prev := e.versions[i-1]
			if err := e.applyParams(prev, cur); err != nil {
				return nil, err
			}
			e.versions = e.versions[:i]
			e.current.Store(prev)
			return prev, nil
		}
	}
	return nil, errors.New("no previous version to roll back to")
}

// applyParams sets p's modparams. With a previous program (a reload or a
// rollback) a param p no longer sets goes back to its Default, and Static
// params are left as they are: they cannot change live (StaticChanges).
func (e *Engine) applyParams(p, prev *Program) error {
	for _, mp := range p.Config.ModParams {
		if prm := e.params[mp.Module][mp.Name]; prm != nil && prm.Set != nil && (prev == nil || !prm.Static) {
			if err := prm.Set(mp.Value); err != nil {
				return fmt.Errorf("%s: modparam(%q, %q): %v", mp.Pos, mp.Module, mp.Name, err)
			}
		}
	}
	if prev == nil {
		e.static = p.staticValues(e.params)
		return nil
	}
	now := p.paramValues()
	for _, k := range sortedKeys(prev.paramValues()) {
		if _, still := now[k]; still {
			continue
		}
		mod, name, _ := strings.Cut(k, "\x00")
		if prm := e.params[mod][name]; prm != nil && prm.Set != nil && !prm.Static {
			if err := prm.Set(prm.Default); err != nil {
				return fmt.Errorf("modparam(%q, %q) back to its default %s: %v", mod, name, prm.Default, err)
			}
		}
	}
	return nil
}

// paramValues are the values p gives each modparam, keyed "module\x00name",
// in order (a param such as htable's may be given several times).
func (p *Program) paramValues() map[string][]core.Val {
	out := map[string][]core.Val{}
	for _, mp := range p.Config.ModParams {
		k := mp.Module + "\x00" + mp.Name
		out[k] = append(out[k], mp.Value)
	}
	return out
}

// StaticChanges lists the Static modparams whose value p would change from
// the running one (what the first version set: static params never change
// later; a param not set counts as its Default), as
// "modparam(mod, name) a → b": a reload must refuse them or leave them.
func (e *Engine) StaticChanges(p *Program) []string {
	e.mu.Lock()
	running := e.static
	e.mu.Unlock()
	if running == nil {
		return nil
	}
	now := p.staticValues(e.params)
	var out []string
	for _, k := range sortedKeys(now) {
		if a, b := running[k], now[k]; a != b {
			mod, name, _ := strings.Cut(k, "\x00")
			out = append(out, fmt.Sprintf("modparam(%q, %q) %s → %s", mod, name, a, b))
		}
	}
	return out
}

// staticValues renders the value p gives each Static param, keyed
// "module\x00name".
func (p *Program) staticValues(params map[string]map[string]*core.Param) map[string]string {
	vals := p.paramValues()
	out := map[string]string{}
	for mod, ps := range params {
		for name, prm := range ps {
			if prm.Static {
				k := mod + "\x00" + name
				out[k] = valList(vals[k], prm.Default)
			}
		}
	}
	return out
}

func valList(vs []core.Val, def core.Val) string {
	if len(vs) == 0 {
		vs = []core.Val{def}
	}
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = v.String()
		if v.Kind == core.KStr {
			s[i] = strconv.Quote(v.Str)
		}
	}
	return strings.Join(s, ", ")
}

// Check compiles and validates without installing (kamd -c).
func (e *Engine) Check(path string, src []byte) (*Program, error) { return e.Compile(path, src) }

// Compile builds a Program from source without installing it.
func (e *Engine) Compile(path string, src []byte) (*Program, error) {
	sum := sha256.Sum256(src)
	r := &refs{callbacks: map[string]string{}}
	cfg := &Config{CoreParams: map[string]core.Val{}}
	th := &sk.Thread{Name: "config " + path, Print: e.printer(), Load: e.loader(filepath.Dir(path), r)}
	th.SetLocal(cfgKey, cfg)
	th.SetMaxExecutionSteps(e.MaxSteps)
	var globals sk.StringDict
	err := guardLoad(th, "config phase", e.Limits, func() (err error) {
		globals, err = e.execFile(th, path, src, r)
		return err
	})
	if err != nil {
		return nil, err
	}
	refs := r // the callback names every compiled file referred to
	p := &Program{Path: path, SHA256: hex.EncodeToString(sum[:]), LoadedAt: time.Now(), Config: *cfg,
		globals: globals, callbacks: map[string]*sk.Function{}, MaxSteps: e.MaxSteps, Limits: e.Limits}
	if v, ok := cfg.CoreParams["max_steps"]; ok {
		p.MaxSteps = uint64(v.Int)
	}
	p.Limits = cfg.limits(p.Limits)
	for name, v := range globals {
		if fn, ok := v.(*sk.Function); ok {
			if fn.NumParams() > 1 {
				if name == RequestRoute || name == ReplyRoute || name == OnsendRoute || refs.callbacks[name] != "" {
					return nil, fmt.Errorf("%s: callback %s takes %d parameters; want none or one (msg)", fn.Position(), name, fn.NumParams())
				}
				continue
			}
			p.callbacks[name] = fn
		}
	}
	if p.callbacks[RequestRoute] == nil {
		return nil, fmt.Errorf("%s:1:1: the script defines no %s(msg) function", path, RequestRoute)
	}
	for _, name := range sortedKeys(refs.callbacks) {
		if p.callbacks[name] == nil {
			return nil, fmt.Errorf("%s: callback %q is named here but the script defines no function %s", refs.callbacks[name], name, name)
		}
	}
	for _, mp := range cfg.ModParams {
		// A modparam naming a callback (uac's event_callback) is checked like t_on_failure's literal.
		if prm := e.params[mp.Module][mp.Name]; prm != nil && prm.Callback && mp.Value.Str != "" && p.callbacks[mp.Value.Str] == nil {
			return nil, fmt.Errorf("%s: modparam(%q, %q) names callback %q but the script defines no function %s (of none or one parameter)",
				mp.Pos, mp.Module, mp.Name, mp.Value.Str, mp.Value.Str)
		}
	}
	if init := p.callbacks[ModInit]; init != nil {
		if err := e.runModInit(p, init); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// execFile is the one compile path, for the main script and every file it
// load()s: parse, scan literal callback and PV names into r (checked once
// the main script's callbacks are known), resolve names, run the top level
// and freeze it.
func (e *Engine) execFile(th *sk.Thread, path string, src []byte, r *refs) (sk.StringDict, error) {
	f, err := fileOptions.Parse(path, src, 0)
	if err != nil {
		return nil, err
	}
	pre := e.predeclared()
	prog, err := sk.FileProgram(f, pre.Has)
	if err != nil {
		return nil, err
	}
	if err := e.scanRefs(f, r); err != nil {
		return nil, err
	}
	if err := e.checkKSRNames(f); err != nil {
		return nil, err
	}
	globals, err := prog.Init(th, pre)
	if err != nil {
		return nil, evalErr(err)
	}
	globals.Freeze()
	return globals, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// evalErr turns a Starlark runtime error into "file:line:col: message" plus its backtrace.
func evalErr(err error) error {
	var ee *sk.EvalError
	if errors.As(err, &ee) {
		// The innermost frame may be a builtin (modparam, KSR.*): report
		// the script line that called it.
		pos := ""
		for i := len(ee.CallStack) - 1; i >= 0; i-- {
			if p := ee.CallStack[i].Pos; p.Filename() != "<builtin>" {
				pos = p.String() + ": "
				break
			}
		}
		return &ScriptError{Msg: pos + ee.Msg, Backtrace: ee.Backtrace(), Cause: ee}
	}
	return err
}

// ScriptError is a runtime error with its Starlark backtrace.
type ScriptError struct {
	Msg       string
	Backtrace string
	Cause     error
}

func (e *ScriptError) Error() string { return e.Msg }
func (e *ScriptError) Unwrap() error { return e.Cause }

type refs struct {
	callbacks map[string]string // name -> position of first reference
}

// scanRefs finds callback names and PV names given as literals, so typos
// fail the load instead of a message at runtime (Kamailio #3572). Which
// argument names a callback comes from the functions' tables (CallbackArg).
func (e *Engine) scanRefs(f *syntax.File, r *refs) error {
	// aliases: tt = KSR.tabletest makes tt.f(...) a call of tabletest's f.
	aliases := map[string]string{}
	syntax.Walk(f, func(n syntax.Node) bool {
		if as, ok := n.(*syntax.AssignStmt); ok && as.Op == syntax.EQ {
			lhs, ok1 := as.LHS.(*syntax.Ident)
			rhs, ok2 := as.RHS.(*syntax.DotExpr)
			if ok1 && ok2 {
				if x, ok := rhs.X.(*syntax.Ident); ok && x.Name == "KSR" {
					aliases[lhs.Name] = rhs.Name.Name
				}
			}
		}
		return true
	})
	var firstErr error
	syntax.Walk(f, func(n syntax.Node) bool {
		call, ok := n.(*syntax.CallExpr)
		if !ok || firstErr != nil || len(call.Args) == 0 {
			return true
		}
		dot, ok := call.Fn.(*syntax.DotExpr)
		if !ok {
			return true
		}
		owner := ""
		switch x := dot.X.(type) {
		case *syntax.DotExpr: // KSR.tm.t_on_failure
			owner = x.Name.Name
		case *syntax.Ident: // tm = KSR.tm; tm.t_on_failure; KSR.is_method
			owner = x.Name
			if owner == "KSR" {
				owner = ""
			} else if mod, ok := aliases[owner]; ok {
				owner = mod
			}
		}
		name := dot.Name.Name
		i := e.callbackArgs[owner][name]
		if owner == "x" && name == "modf" {
			// KSR.x.modf("t_on_failure", "name"): the native name's table entry, one argument on.
			if fname, _, ok := stringLit(call.Args[0]); ok {
				if f := e.funcs[fname]; f != nil && f.CallbackArg > 0 {
					i = f.CallbackArg + 1
				}
			}
		}
		if i > 0 && i <= len(call.Args) {
			if s, pos, ok := stringLit(call.Args[i-1]); ok && s != "" {
				if _, seen := r.callbacks[s]; !seen {
					r.callbacks[s] = pos
				}
			}
		}
		if owner == "pv" {
			if s, pos, ok := stringLit(call.Args[0]); ok {
				if _, err := e.Env.ParsePV(s); err != nil {
					firstErr = fmt.Errorf("%s: %v", pos, err)
				}
			}
		}
		return true
	})
	return firstErr
}

func stringLit(x syntax.Expr) (s, pos string, ok bool) {
	lit, ok := x.(*syntax.Literal)
	if !ok || lit.Token != syntax.STRING {
		return "", "", false
	}
	s, _ = lit.Value.(string)
	return s, lit.TokenPos.String(), true
}

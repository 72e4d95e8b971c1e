package starlark

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kamgo/kamgo/modules/core"
	sk "go.starlark.net/starlark"
)

const (
	cfgKey = "kamd.cfg"
	ctxKey = "kamd.ctx"
)

// callCtx is bound to a pooled thread; msg changes per run.
type callCtx struct {
	msg   *core.Msg
	th    *sk.Thread
	where func() string
	// init marks mod_init's context: a message-less msg (ksrcheck.go).
	init bool
	g    guard // this thread's registration with the watchdog (guard.go)
	// vals holds a KSR call's converted arguments: a local array would
	// escape to the heap through the Func call (one allocation per KSR
	// call). valsBusy guards against a nested call on the same thread.
	vals     [6]core.Val
	valsBusy bool
}

func (e *Engine) printer() func(*sk.Thread, string) {
	return func(th *sk.Thread, msg string) {
		e.Env.Log.Info(msg, "at", th.CallFrame(1).Pos.String(), "via", "print")
	}
}

// loader allows load() of .star files from the script's own directory
// only: regular files of at most MaxScriptSize that are still inside it
// once links are followed (loadfile.go).
func (e *Engine) loader(dir string, r *refs) func(*sk.Thread, string) (sk.StringDict, error) {
	cache := map[string]sk.StringDict{}
	return func(th *sk.Thread, module string) (sk.StringDict, error) {
		if filepath.IsAbs(module) || strings.Contains(module, "..") || strings.ContainsRune(module, filepath.Separator) || !strings.HasSuffix(module, ".star") {
			return nil, fmt.Errorf("load(%q): only .star files in the script's directory may be loaded", module)
		}
		if g, ok := cache[module]; ok {
			if g == nil {
				return nil, fmt.Errorf("load(%q): cycle", module)
			}
			return g, nil
		}
		cache[module] = nil
		path := filepath.Join(dir, module)
		real, err := loadPath(dir, module)
		if err != nil {
			return nil, err
		}
		src, err := ReadScript(real)
		if err != nil {
			return nil, err
		}
		// The same path as the main script, so the same load-time checks.
		g, err := e.execFile(th, path, src, r)
		if err != nil {
			return nil, err
		}
		cache[module] = g
		return g, nil
	}
}

func (e *Engine) predeclared() sk.StringDict {
	return sk.StringDict{
		"KSR":        e.ksr,
		"listen":     sk.NewBuiltin("listen", e.cfgListen),
		"alias":      sk.NewBuiltin("alias", e.cfgAlias),
		"modparam":   sk.NewBuiltin("modparam", e.cfgModparam),
		"core_param": sk.NewBuiltin("core_param", e.cfgCoreParam),
	}
}

func configOf(th *sk.Thread, b *sk.Builtin) (*Config, error) {
	c, _ := th.Local(cfgKey).(*Config)
	if c == nil {
		return nil, fmt.Errorf("%s: only allowed at the top level of the script (the config phase)", b.Name())
	}
	return c, nil
}

func (e *Engine) cfgListen(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
	c, err := configOf(th, b)
	if err != nil {
		return nil, err
	}
	var spec, advertise string
	if err := sk.UnpackArgs(b.Name(), args, kw, "spec", &spec, "advertise?", &advertise); err != nil {
		return nil, err
	}
	s, err := core.ParseSocket(spec)
	if err != nil {
		return nil, err
	}
	s.Advertise = advertise
	c.Listen = append(c.Listen, s)
	return sk.None, nil
}

func (e *Engine) cfgAlias(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
	c, err := configOf(th, b)
	if err != nil {
		return nil, err
	}
	var host string
	if err := sk.UnpackPositionalArgs(b.Name(), args, kw, 1, &host); err != nil {
		return nil, err
	}
	c.Aliases = append(c.Aliases, host)
	return sk.None, nil
}

func toVal(v sk.Value) (core.Val, error) {
	switch x := v.(type) {
	case sk.String:
		return core.Str(string(x)), nil
	case sk.Int:
		i, ok := x.Int64()
		if !ok {
			return core.Null, fmt.Errorf("integer %s out of range", x)
		}
		return core.Val{Kind: core.KInt, Int: i}, nil
	case sk.Bool:
		if x {
			return core.Val{Kind: core.KInt, Int: 1}, nil
		}
		return core.Val{Kind: core.KInt}, nil
	case sk.NoneType:
		return core.Null, nil
	}
	return core.Null, fmt.Errorf("got %s, want str or int", v.Type())
}

func fromVal(v core.Val) sk.Value {
	switch v.Kind {
	case core.KInt:
		return sk.MakeInt64(v.Int)
	case core.KStr:
		return sk.String(v.Str)
	case core.KBool:
		return sk.Bool(v.Int != 0)
	}
	return sk.None
}

// CoreParams the config phase accepts, with their types. kamd applies them
// (kamd/node); command-line flags win over them.
var coreParams = map[string]core.ArgType{
	"max_steps": core.ArgInt, "workers": core.ArgInt, "rpc_listen": core.ArgStr, "server_header": core.ArgStr,
	"log_level": core.ArgStr, "db_path": core.ArgStr, "tls_certificate": core.ArgStr, "tls_private_key": core.ArgStr,
	"rpc_tls_certificate": core.ArgStr, "rpc_tls_private_key": core.ArgStr,
	"dns_server": core.ArgStr, // ip[:port] of the DNS server for next hops (modules/core/dnsres)
	// Script limits and shutdown (guard.go, shutdown.go); 0 disables a limit.
	"script_mem_budget": core.ArgInt, "script_time_limit_ms": core.ArgInt, "shutdown_grace_ms": core.ArgInt, "exit_timeout": core.ArgInt,
}

// limits are def with the script's script_mem_budget (MB) and
// script_time_limit_ms applied.
func (c *Config) limits(def Limits) Limits {
	if v, ok := c.CoreParams["script_mem_budget"]; ok {
		def.MemBudget = uint64(v.Int) << 20
	}
	if v, ok := c.CoreParams["script_time_limit_ms"]; ok {
		def.TimeLimit = time.Duration(v.Int) * time.Millisecond
	}
	return def
}

func (e *Engine) cfgCoreParam(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
	c, err := configOf(th, b)
	if err != nil {
		return nil, err
	}
	var name string
	var val sk.Value
	if err := sk.UnpackPositionalArgs(b.Name(), args, kw, 2, &name, &val); err != nil {
		return nil, err
	}
	t, ok := coreParams[name]
	if !ok {
		return nil, fmt.Errorf("core_param: unknown parameter %q (known: %s)", name, strings.Join(sortedKeys(coreParams), ", "))
	}
	v, err := toVal(val)
	if err != nil || (t == core.ArgInt) != (v.Kind == core.KInt) {
		return nil, fmt.Errorf("core_param(%q): want %s value, got %s", name, t, val.Type())
	}
	switch name {
	case "max_steps", "workers":
		if v.Int <= 0 {
			return nil, fmt.Errorf("core_param(%q): must be positive", name)
		}
	case "script_mem_budget", "script_time_limit_ms", "shutdown_grace_ms":
		if v.Int < 0 || v.Int > 1<<40 {
			return nil, fmt.Errorf("core_param(%q): must be 0 (no limit) or positive", name)
		}
	case "exit_timeout":
		if v.Int <= 0 || v.Int > 1<<30 {
			return nil, fmt.Errorf("core_param(%q): must be positive (seconds)", name)
		}
	case "log_level":
		if _, err := core.ParseLogLevel(v.Str); err != nil {
			return nil, fmt.Errorf("core_param(\"log_level\"): %v", err)
		}
	case "dns_server":
		host := v.Str
		if h, _, err := net.SplitHostPort(v.Str); err == nil {
			host = h
		}
		if net.ParseIP(host) == nil {
			return nil, fmt.Errorf("core_param(\"dns_server\"): %q: want an IP address, optionally with :port", v.Str)
		}
	}
	if check := limitCoreParams[name]; check != nil {
		if err := check(v); err != nil {
			return nil, fmt.Errorf("core_param(%q): %v", name, err)
		}
	}
	c.CoreParams[name] = v
	return sk.None, nil
}

func (e *Engine) cfgModparam(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
	c, err := configOf(th, b)
	if err != nil {
		return nil, err
	}
	var mod, name string
	var val sk.Value
	if err := sk.UnpackPositionalArgs(b.Name(), args, kw, 3, &mod, &name, &val); err != nil {
		return nil, err
	}
	ps, ok := e.params[mod]
	if !ok || mod == "" {
		return nil, fmt.Errorf("modparam: unknown module %q", mod)
	}
	p := ps[name]
	if p == nil {
		known := sortedKeys(ps)
		return nil, fmt.Errorf("modparam: module %q has no parameter %q (it has: %s)", mod, name, strings.Join(known, ", "))
	}
	v, err := toVal(val)
	if err != nil {
		return nil, fmt.Errorf("modparam(%q, %q): %v", mod, name, err)
	}
	if p.Type == core.ArgInt && v.Kind != core.KInt {
		// Kamailio accepts "60" for an int param; so do we.
		i, err := strconv.ParseInt(v.Str, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("modparam(%q, %q): want int, got %q", mod, name, v.Str)
		}
		v = core.Val{Kind: core.KInt, Int: i}
	}
	if p.Type == core.ArgStr && v.Kind != core.KStr {
		return nil, fmt.Errorf("modparam(%q, %q): want str, got %s", mod, name, val.Type())
	}
	if p.Check != nil {
		if err := p.Check(v); err != nil {
			return nil, fmt.Errorf("modparam(%q, %q): %v", mod, name, err)
		}
	}
	c.ModParams = append(c.ModParams, ModParam{Module: mod, Name: name, Value: v, Pos: th.CallFrame(1).Pos.String()})
	return sk.None, nil
}

func typeList(f *core.Func) string {
	s := make([]string, len(f.Args))
	for i, a := range f.Args {
		s[i] = a.String()
	}
	return "(" + strings.Join(s, ", ") + ")"
}

// builtin wraps a Func: strict argument checks (Kamailio returns a soft
// False), route checks, and KEMI return conventions.
func (e *Engine) builtin(mod string, f *core.Func) *sk.Builtin {
	name := f.Name
	if mod != "" {
		name = mod + "." + f.Name
	}
	return sk.NewBuiltin(name, func(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
		c, _ := th.Local(ctxKey).(*callCtx)
		if c == nil || c.msg == nil {
			return nil, fmt.Errorf("KSR.%s is callable only inside callbacks, not in the config phase", name)
		}
		if c.init {
			if err := initCheck(mod, f.Name, args); err != nil {
				return nil, err
			}
		}
		if len(kw) > 0 {
			return nil, fmt.Errorf("KSR.%s takes no keyword arguments", name)
		}
		if !f.ArityOK(len(args)) {
			return nil, fmt.Errorf("KSR.%s: want %s arguments %s, got %d", name, f.ArityString(), typeList(f), len(args))
		}
		m := c.msg
		if f.Routes != 0 && f.Routes&m.RouteType == 0 {
			return nil, fmt.Errorf("KSR.%s is not allowed in %s", name, m.RouteType)
		}
		var vals []core.Val
		scratch := !c.valsBusy && len(args) <= len(c.vals)
		if scratch {
			c.valsBusy = true
			vals = c.vals[:len(args)]
		} else {
			vals = make([]core.Val, len(args))
		}
		v, err := e.callFunc(f, name, m, args, vals)
		if scratch {
			clear(vals) // drop the strings it held
			c.valsBusy = false
		}
		if err != nil {
			return nil, err
		}
		switch f.Ret {
		case core.RetNone:
			return sk.None, nil
		case core.RetBool:
			return sk.Bool(v.Int != 0), nil
		case core.RetInt:
			return sk.MakeInt64(v.Int), nil
		}
		return fromVal(v), nil
	})
}

// callFunc converts the Starlark arguments into vals and calls f.
func (e *Engine) callFunc(f *core.Func, name string, m *core.Msg, args sk.Tuple, vals []core.Val) (core.Val, error) {
	for i, a := range args {
		switch f.Args[i] {
		case core.ArgStr:
			s, ok := a.(sk.String)
			if !ok {
				return core.Null, fmt.Errorf("KSR.%s: argument %d: want str, got %s", name, i+1, a.Type())
			}
			vals[i] = core.Val{Kind: core.KStr, Str: string(s)}
		case core.ArgInt:
			switch x := a.(type) {
			case sk.Int:
				n, ok := x.Int64()
				if !ok {
					return core.Null, fmt.Errorf("KSR.%s: argument %d: integer out of range", name, i+1)
				}
				vals[i] = core.Val{Kind: core.KInt, Int: n}
			case sk.Bool:
				vals[i] = core.Bool(bool(x))
				vals[i].Kind = core.KInt
			default:
				return core.Null, fmt.Errorf("KSR.%s: argument %d: want int, got %s", name, i+1, a.Type())
			}
		}
	}
	return f.Fn(m, vals)
}

// xModule is KSR.x: exit, drop and modf, which need the whole table.
func (e *Engine) xModule() *core.Module {
	// The engine's script loads publish on "script" (kamd sends them).
	return &core.Module{Name: "x", Doc: "script control", Events: []string{"script"}, Funcs: []core.Func{
		{Name: "exit", Ret: core.RetNone, Doc: "stop the callback (Kamailio's exit)",
			Fn: func(m *core.Msg, _ []core.Val) (core.Val, error) { return core.Null, core.ErrExit }},
		{Name: "drop", Ret: core.RetNone, Doc: "set_drop() and stop the callback",
			Fn: func(m *core.Msg, _ []core.Val) (core.Val, error) { m.Dropped = true; return core.Null, core.ErrExit }},
		{Name: "modf", Args: nil, Ret: core.RetInt, Doc: "modf(name, args...): call a module function by its native name with string args"},
	}}
}

// modfBuiltin is KSR.x.modf, variadic so it is built apart from the table.
func (e *Engine) modf(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
	c, _ := th.Local(ctxKey).(*callCtx)
	if c == nil || c.msg == nil {
		return nil, fmt.Errorf("KSR.x.modf is callable only inside callbacks")
	}
	if len(args) < 1 || len(kw) > 0 {
		return nil, fmt.Errorf("KSR.x.modf: want (name, args...)")
	}
	fname, ok := args[0].(sk.String)
	if !ok {
		return nil, fmt.Errorf("KSR.x.modf: function name must be a str, got %s", args[0].Type())
	}
	f := e.funcs[string(fname)]
	if f == nil || f.Fn == nil {
		return nil, fmt.Errorf("KSR.x.modf: unknown function %q", string(fname))
	}
	rest := args[1:]
	if !f.ArityOK(len(rest)) {
		return nil, fmt.Errorf("KSR.x.modf(%q): want %s arguments %s, got %d", string(fname), f.ArityString(), typeList(f), len(rest))
	}
	conv := make(sk.Tuple, len(rest))
	for i, a := range rest {
		s, ok := a.(sk.String)
		if !ok {
			return nil, fmt.Errorf("KSR.x.modf(%q): argument %d: native functions take str arguments, got %s", string(fname), i+1, a.Type())
		}
		if f.Args[i] == core.ArgInt {
			n, err := strconv.ParseInt(string(s), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("KSR.x.modf(%q): argument %d: %q is not an integer", string(fname), i+1, string(s))
			}
			conv[i] = sk.MakeInt64(n)
		} else {
			conv[i] = s
		}
	}
	v, err := sk.Call(th, e.modfFns[string(fname)], conv, nil)
	if err != nil {
		return nil, err
	}
	// Native functions return ints: map bool to 1/-1.
	if bv, ok := v.(sk.Bool); ok {
		if bv {
			return sk.MakeInt(1), nil
		}
		return sk.MakeInt(-1), nil
	}
	return v, nil
}

package node

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/rpc"
	"github.com/kamgo/kamgo/starlark"
)

// buildRPC builds the RPC server from kamd's own table (CoreRPC) and the
// modules' tables, and attaches the event hub. It runs before any module's
// Init, so nothing publishes while it is being set.
func (n *Node) buildRPC(p *starlark.Program) error {
	addr := n.Opts.RPCAddr
	if addr == "" {
		if v, ok := p.Config.CoreParams["rpc_listen"]; ok {
			addr = v.Str
		} else {
			addr = rpc.DefaultAddr
		}
	}
	n.rpcAddr = addr
	tokens, err := rpc.LoadTokens(n.Opts.RPCTokens)
	if err != nil {
		return err
	}
	cert, key := n.Opts.RPCTLSCert, n.Opts.RPCTLSKey
	if cert == "" {
		cert = p.Config.CoreParams["rpc_tls_certificate"].Str
	}
	if key == "" {
		key = p.Config.CoreParams["rpc_tls_private_key"].Str
	}
	if (cert == "") != (key == "") {
		return fmt.Errorf("RPC TLS needs both a certificate and a private key")
	}
	var srv *rpc.Server
	met := n.newMetrics(&srv)
	cfg := rpc.Config{Addr: addr, Tokens: tokens, Logger: n.Env.Log, TLSCertFile: cert, TLSKeyFile: key, Observe: met.ObserveRPC}
	if err := rpcLimits(&cfg, p.Config.CoreParams); err != nil {
		return err
	}
	srv = rpc.NewServer(cfg)
	n.mountWeb(srv, met)
	hub := srv.Hub()
	hub.SetStatsSource(func() any { return n.Env.Stats.Get("all") })
	reloads, reloadFailures := n.Env.Stats.Counter("script", "reloads"), n.Env.Stats.Counter("script", "reload_failures")
	n.Env.Stats.Counter("script", "rollbacks")
	n.Engine.OnLoad = func(p *starlark.Program, err error) {
		if err != nil {
			reloadFailures.Inc()
			n.Env.Emit("script", map[string]any{"event": "reload_failed", "error": err.Error()})
			return
		}
		reloads.Inc()
		n.applyCoreParams(p)
		n.Env.Emit("script", map[string]any{"event": "loaded", "version": p.Version, "path": p.Path, "sha256": p.SHA256})
	}
	for _, m := range n.CoreRPC() {
		if err := srv.Register(AdaptRPC(m)); err != nil {
			return err
		}
	}
	for _, mod := range n.Modules {
		for _, rm := range mod.RPC {
			if err := srv.Register(AdaptRPC(rm)); err != nil {
				return err
			}
		}
	}
	if srv.Enabled() && n.Opts.Sender == nil {
		if err := srv.Validate(); err != nil {
			return err
		}
		if cert != "" {
			// Fail at start, not at the first connection.
			if _, err := loadTLS("RPC TLS", cert, key); err != nil {
				return err
			}
		}
	}
	n.RPC = srv
	return nil
}

// rpcLimits applies the rpc_* limit core params (docs/rpc.md "Limits"); an
// unset one keeps the rpc package's default.
func rpcLimits(cfg *rpc.Config, cp map[string]core.Val) error {
	for _, p := range []struct {
		name   string
		zeroOK bool
		set    func(int64)
	}{
		{"rpc_max_response_bytes", false, func(v int64) { cfg.MaxResponseBytes = v }},
		{"rpc_max_batch_bytes", false, func(v int64) { cfg.MaxBatchBytes = v }},
		{"rpc_memory_budget", false, func(v int64) { cfg.MemoryBudget = v }},
		{"rpc_max_conns", false, func(v int64) { cfg.MaxConns = int(v) }},
		{"rpc_max_conns_per_ip", false, func(v int64) { cfg.MaxConnsPerIP = int(v) }},
		{"rpc_admin_reserve", false, func(v int64) { cfg.AdminReserve = int(v) }},
		{"rpc_workers", false, func(v int64) { cfg.MaxRunning = int(v) }},
		// Seconds; 0 disables the idle timeout.
		{"rpc_idle_timeout", true, func(v int64) {
			cfg.IdleTimeout = time.Duration(v) * time.Second
			if v == 0 {
				cfg.IdleTimeout = -1
			}
		}},
	} {
		v, ok := cp[p.name]
		if !ok {
			continue
		}
		if v.Int < 0 || (v.Int == 0 && !p.zeroOK) {
			return fmt.Errorf("core_param(%q): must be positive, got %d", p.name, v.Int)
		}
		p.set(v.Int)
	}
	if cfg.MaxBatchBytes > 0 && cfg.MaxResponseBytes > cfg.MaxBatchBytes {
		return fmt.Errorf("core_param(\"rpc_max_batch_bytes\") %d is below rpc_max_response_bytes %d", cfg.MaxBatchBytes, cfg.MaxResponseBytes)
	}
	return nil
}

// listenRPC binds the RPC address and serves it in the background.
func (n *Node) listenRPC(ctx context.Context) error {
	ln, err := net.Listen("tcp", n.rpcAddr)
	if err != nil {
		return fmt.Errorf("rpc: %w", err)
	}
	scheme := "ws"
	if n.Opts.RPCTLSCert != "" || n.Engine.Program().Config.CoreParams["rpc_tls_certificate"].Str != "" {
		scheme = "wss"
	}
	n.Env.Log.Info("rpc listening on " + ln.Addr().String() + " (" + scheme + ")")
	go func() {
		if err := n.RPC.Serve(ln); err != nil && ctx.Err() == nil {
			n.Env.Log.Error("rpc server stopped", "err", err)
		}
	}()
	return nil
}

// AdaptRPC turns a table entry (a module's or kamd's own) into an rpc.Method.
func AdaptRPC(rm core.RPCMethod) rpc.Method {
	ps := make([]rpc.Param, len(rm.Params))
	for i, p := range rm.Params {
		ps[i] = rpc.Param{Name: p.Name, Type: p.Type, Doc: p.Doc, Optional: p.Optional, Variadic: p.Variadic}
	}
	h := rm.Handler
	var perr *rpc.Error
	if rm.ParamError != nil {
		perr = rpc.NewError(rm.ParamError.Code, rm.ParamError.Message)
	}
	return rpc.Method{Name: rm.Name, Doc: rm.Doc, Params: ps, Result: rm.Result, ReadOnly: rm.ReadOnly, ParamError: perr,
		Handler: func(ctx context.Context, p rpc.Params) (any, error) {
			// Modules cannot import rpc: the caller's role reaches them through core.
			ctx = core.WithRPCAdmin(ctx, rpc.RoleFromContext(ctx) == rpc.RoleAdmin)
			res, err := h(ctx, p)
			if e, ok := err.(*core.RPCError); ok {
				return nil, rpc.NewError(e.Code, e.Message)
			}
			return res, err
		}}
}

func rpcErr(code int, format string, a ...any) error {
	return &core.RPCError{Code: code, Message: fmt.Sprintf(format, a...)}
}

// strings returns params from..Len()-1 (a variadic param).
func argStrings(a core.RPCArgs, from int) ([]string, error) {
	var out []string
	for i := from; i < a.Len(); i++ {
		s, err := a.String(i)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// argBool reads an optional bool param (rpc.Params has Bool; core.RPCArgs
// only strings and ints).
func argBool(a core.RPCArgs, i int, def bool) (bool, error) {
	if i >= a.Len() {
		return def, nil
	}
	if b, ok := a.(interface{ Bool(int) (bool, error) }); ok {
		return b.Bool(i)
	}
	s, err := a.String(i)
	if err != nil {
		return false, err
	}
	switch strings.ToLower(s) {
	case "1", "true", "yes", "on":
		return true, nil
	case "0", "false", "no", "off":
		return false, nil
	}
	return false, rpcErr(-32602, "param %d: want a bool, got %q", i+1, s)
}

// CoreRPC is kamd's own table of RPC methods (core.*, stats.*,
// app_starlark.*), in the modules' shape: the registry, role checks,
// system.listMethods/methodHelp and `kamd apidoc` all read it. The rpc
// package adds system.* and events.* itself.
func (n *Node) CoreRPC() []core.RPCMethod {
	names := []core.RPCParam{{Name: "names", Type: "string", Optional: true, Variadic: true, Doc: "all, group: or statistic names"}}
	return []core.RPCMethod{
		{Name: "core.version", Doc: "kamd version", Result: `{"version": "kamd x.y.z (kamgo)", "go": "go1.x"}`, ReadOnly: true, Handler: n.rpcVersion},
		{Name: "core.uptime", Doc: "time since start", Result: `{"now": "...", "up_since": "...", "uptime": seconds}`, ReadOnly: true, Handler: n.rpcUptime},
		{Name: "core.info", Doc: "version, build and runtime details", Result: `{"version","go","os","arch","pid","cpus","script"}`, ReadOnly: true, Handler: n.rpcInfo},
		{Name: "core.ps", Doc: "what runs: a receiver or listener per SIP socket, stream connection readers, SIP workers, the rpc server", Result: `[{"idx": n, "pid": n, "dsc": "..."}]`, ReadOnly: true, Handler: n.rpcPs},
		{Name: "core.sockets_list", Doc: "listening SIP sockets, those of listen() and those opened at runtime (runtime: true)", Result: `{"socket": [{"proto","address","port","advertise","runtime"}]}`, ReadOnly: true, Handler: n.rpcSockets},
		{Name: "core.whoami", Doc: "the caller's RPC role (dashboards hide what the role may not call)", Result: `{"role": "admin" | "ro"}`, ReadOnly: true, Handler: rpcWhoami},
		{Name: "core.mem", Doc: "Go runtime memory (bytes)", Result: `{"heap_alloc","heap_sys","heap_objects","sys","num_gc","goroutines"}`, ReadOnly: true, Handler: rpcMem},
		{Name: "stats.get_statistics", Doc: "statistics: all, a group (\"tm:\" or \"tm\") or names", Result: `{"group:name": n, ...}`, ReadOnly: true, Params: names, Handler: n.rpcGetStats},
		{Name: "stats.history", Doc: "the statistics of the last 15 minutes, one sample every 5 s (dashboards' charts); names: all when none", Result: `{"interval": 5, "names": [...], "samples": [{"ts": "...", "values": [n|null, ...]}]}`, ReadOnly: true, Params: names, Handler: n.rpcHistory},
		{Name: "stats.reset_statistics", Doc: "zero statistics (all, a group or names)", Result: `{"reset": n}`,
			Params: []core.RPCParam{{Name: "names", Type: "string", Variadic: true, Doc: "all, group: or statistic names"}}, Handler: n.rpcResetStats},
		{Name: "app_starlark.reload", Doc: "compile, check and swap in the script file; the old version keeps serving on error",
			Result:  `{"old": n, "new": n, "sha256": "...", "not_applied": [...]}`,
			Params:  []core.RPCParam{{Name: "apply_live", Type: "bool", Optional: true, Doc: "apply what can change live and report the rest (listen sockets, static modparams, core params read at start)"}},
			Handler: n.rpcReload},
		{Name: "app_starlark.rollback", Doc: "go back to the previous script version", Result: `{"old": n, "new": n}`, Handler: n.rpcRollback},
		{Name: "app_starlark.status", Doc: "the running script version and the versions kept for rollback", Result: `{"version","path","sha256","loaded_at","previous":[...]}`, ReadOnly: true, Handler: n.rpcStatus},
		{Name: "app_starlark.api_list", Doc: "every KSR function with its signature (Kamailio's api_list shape)", Result: `{"msize": n, "methods": [{"func": {"ret","module","name","params","doc"}}], "pvs": [{"name","module","writable","doc"}]}`, ReadOnly: true, Handler: n.rpcAPIList},
	}
}

func (n *Node) rpcVersion(context.Context, core.RPCArgs) (any, error) {
	return map[string]any{"version": "kamd " + n.Opts.Version + " (kamgo)", "go": runtime.Version()}, nil
}

func (n *Node) rpcUptime(context.Context, core.RPCArgs) (any, error) {
	return map[string]any{"now": time.Now().UTC().Format(time.RFC3339), "up_since": n.started.UTC().Format(time.RFC3339),
		"uptime": int64(time.Since(n.started).Seconds())}, nil
}

func (n *Node) rpcInfo(context.Context, core.RPCArgs) (any, error) {
	p := n.Engine.Program()
	return map[string]any{"version": n.Opts.Version, "go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH,
		"pid": os.Getpid(), "cpus": runtime.NumCPU(), "gomaxprocs": runtime.GOMAXPROCS(0), "script": p.Path, "script_version": p.Version}, nil
}

func (n *Node) rpcPs(context.Context, core.RPCArgs) (any, error) { return n.Ps(), nil }

func (n *Node) rpcSockets(context.Context, core.RPCArgs) (any, error) {
	var out []map[string]any
	rt := n.runtimeSockets()
	for _, s := range n.Env.Sockets() {
		out = append(out, map[string]any{"proto": s.Proto, "address": s.IP, "port": s.Port, "advertise": s.Advertise, "runtime": rt[s.String()]})
	}
	return map[string]any{"socket": out}, nil
}

func rpcWhoami(ctx context.Context, _ core.RPCArgs) (any, error) {
	role := "ro"
	if core.RPCCallerIsAdmin(ctx) {
		role = "admin"
	}
	return map[string]any{"role": role}, nil
}

func rpcMem(context.Context, core.RPCArgs) (any, error) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return map[string]any{"heap_alloc": ms.HeapAlloc, "heap_inuse": ms.HeapInuse, "heap_sys": ms.HeapSys, "heap_objects": ms.HeapObjects,
		"stack_inuse": ms.StackInuse, "sys": ms.Sys, "num_gc": ms.NumGC, "goroutines": runtime.NumGoroutine()}, nil
}

func (n *Node) rpcGetStats(_ context.Context, a core.RPCArgs) (any, error) {
	sel, err := argStrings(a, 0)
	if err != nil {
		return nil, err
	}
	if len(sel) == 0 {
		sel = []string{"all"}
	}
	out := n.Env.Stats.Get(sel...)
	if len(out) == 0 {
		return nil, rpcErr(404, "Record not found")
	}
	return out, nil
}

func (n *Node) rpcResetStats(_ context.Context, a core.RPCArgs) (any, error) {
	sel, err := argStrings(a, 0)
	if err != nil {
		return nil, err
	}
	if len(sel) == 0 {
		return nil, rpcErr(-32602, "stats.reset_statistics: name what to reset (all, a group or names)")
	}
	return map[string]any{"reset": n.Env.Stats.Reset(sel...)}, nil
}

func (n *Node) rpcReload(_ context.Context, a core.RPCArgs) (any, error) {
	live, err := argBool(a, 0, false)
	if err != nil {
		return nil, err
	}
	return n.Reload(live)
}

func (n *Node) rpcRollback(context.Context, core.RPCArgs) (any, error) {
	n.reloadMu.Lock()
	defer n.reloadMu.Unlock()
	old := n.Engine.Program().Version
	p, err := n.Engine.Rollback()
	if err != nil {
		return nil, rpcErr(404, "%s", err.Error())
	}
	n.applyCoreParams(p)
	n.Env.Stats.Counter("script", "rollbacks").Inc()
	n.Env.Emit("script", map[string]any{"event": "rollback", "version": p.Version, "sha256": p.SHA256})
	return map[string]any{"old": old, "new": p.Version, "sha256": p.SHA256}, nil
}

func (n *Node) rpcStatus(context.Context, core.RPCArgs) (any, error) {
	cur := n.Engine.Program()
	prev := []map[string]any{}
	for _, v := range n.Engine.Versions() {
		if v != cur {
			prev = append(prev, progInfo(v))
		}
	}
	out := progInfo(cur)
	out["previous"] = prev
	return out, nil
}

func (n *Node) rpcAPIList(context.Context, core.RPCArgs) (any, error) {
	var ms []map[string]any
	for _, f := range n.Engine.Funcs() {
		ms = append(ms, map[string]any{"func": map[string]any{"ret": f.Func.Ret.String(), "module": f.Module,
			"name": f.Func.Name, "params": f.Func.ParamsString(), "doc": f.Func.Doc}})
	}
	var pvs []map[string]any // kamgo's addition: the PVs of the same tables
	for _, p := range n.Engine.PVs() {
		pvs = append(pvs, map[string]any{"name": p.Spec(), "module": p.Module, "writable": p.Def.Set != nil, "doc": p.Def.Doc})
	}
	return map[string]any{"msize": len(ms), "methods": ms, "pvs": pvs}, nil
}

func progInfo(p *starlark.Program) map[string]any {
	return map[string]any{"version": p.Version, "path": p.Path, "sha256": p.SHA256, "loaded_at": p.LoadedAt.UTC().Format(time.RFC3339Nano)}
}

// Ps is core.ps: the goroutines that serve, as Kamailio lists its processes.
// Timers (tm, usrloc, htable) are runtime timers (time.AfterFunc): they run
// no goroutine of their own until they fire, so they are not listed.
func (n *Node) Ps() []map[string]any {
	var out []map[string]any
	add := func(dsc string) { out = append(out, map[string]any{"idx": len(out), "pid": os.Getpid(), "dsc": dsc}) }
	add("main process")
	rt := n.runtimeSockets()
	for _, s := range n.Env.Sockets() {
		dsc := s.Proto + " listener " + s.String()
		if s.Proto == "udp" {
			dsc = "udp receiver " + s.String()
		}
		if rt[s.String()] {
			dsc += " (opened at runtime)"
		}
		add(dsc)
	}
	if n.tr != nil {
		if c := n.tr.Conns(); c > 0 {
			add(fmt.Sprintf("stream connection readers (%d)", c))
		}
	}
	for i := 0; i < n.workers; i++ {
		add(fmt.Sprintf("SIP worker %d", i))
	}
	if a := n.RPC.Addr(); a != "" {
		add("rpc server " + a)
	}
	return out
}

// runtimeSockets is the set of sockets opened at runtime, by String().
func (n *Node) runtimeSockets() map[string]bool {
	out := map[string]bool{}
	if n.tr != nil {
		for _, s := range n.tr.Opened() {
			out[s.String()] = true
		}
		return out
	}
	// Route tests: every socket beyond the configured ones.
	cfg := map[string]bool{}
	for _, s := range n.configured {
		cfg[s.String()] = true
	}
	for _, s := range n.Env.Sockets() {
		if !cfg[s.String()] {
			out[s.String()] = true
		}
	}
	return out
}

func socketSet(ss []core.Socket) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.String())
	}
	sort.Strings(out)
	return out
}

// startOnlyCoreParams are read once at start; a reload that changes one is
// refused (409) unless apply_live, like listen changes.
var startOnlyCoreParams = []string{"workers", "db_path", "rpc_listen", "rpc_tls_certificate", "rpc_tls_private_key", "tls_certificate", "tls_private_key", "dns_server"}

// The RPC limits are read at start too.
func init() {
	startOnlyCoreParams = append(startOnlyCoreParams, "rpc_max_response_bytes", "rpc_max_batch_bytes", "rpc_memory_budget",
		"rpc_max_conns", "rpc_max_conns_per_ip", "rpc_admin_reserve", "rpc_idle_timeout", "rpc_workers")
}

// Reload is app_starlark.reload and SIGHUP: compile and check, refuse what
// cannot change live (listen sockets, Static modparams, core params read at
// start) unless applyLive, then swap.
func (n *Node) Reload(applyLive bool) (any, error) {
	n.reloadMu.Lock()
	defer n.reloadMu.Unlock()
	eng := n.Engine
	cur := eng.Program()
	read := n.Opts.Reread
	if read == nil {
		read = func() ([]byte, error) { return starlark.ReadScript(n.Opts.Path) }
	}
	src, err := read()
	if err != nil {
		err = fmt.Errorf("%s: %v", n.Opts.Path, err)
		eng.Install(nil, err)
		return nil, rpcErr(500, "%s", err.Error())
	}
	p, err := eng.Compile(n.Opts.Path, src)
	if err != nil {
		eng.Install(nil, err)
		return nil, rpcErr(500, "%s", err.Error())
	}
	var fixed []string
	if len(n.Opts.Listen) == 0 && n.configured != nil {
		// A script without listen() would get the default sockets at the
		// next start: removing every listen() is a change too.
		listen := p.Config.Listen
		if len(listen) == 0 {
			listen = DefaultListen
		}
		want, have := socketSet(listen), socketSet(n.configured)
		if strings.Join(want, ",") != strings.Join(have, ",") {
			fixed = append(fixed, fmt.Sprintf("listen sockets changed (%s → %s); they need a restart", strings.Join(have, " "), strings.Join(want, " ")))
		}
	}
	for _, c := range eng.StaticChanges(p) {
		fixed = append(fixed, c+" cannot change live; it needs a restart")
	}
	for _, name := range startOnlyCoreParams {
		a, b := n.startCore[name], p.Config.CoreParams[name]
		if a != b {
			fixed = append(fixed, fmt.Sprintf("core_param(%q) %s → %s is read at start; it needs a restart", name, a, b))
		}
	}
	if len(fixed) > 0 && !applyLive {
		err := fmt.Errorf("reload refused: %s; call app_starlark.reload with apply_live=true to apply the rest", strings.Join(fixed, "; "))
		eng.Install(nil, err)
		return nil, rpcErr(409, "%s", err.Error())
	}
	if _, err := eng.Install(p, nil); err != nil {
		return nil, rpcErr(500, "%s", err.Error())
	}
	if fixed == nil {
		fixed = []string{}
	}
	n.Env.Log.Info("script reloaded", "version", p.Version, "sha256", p.SHA256[:12])
	return map[string]any{"old": cur.Version, "new": p.Version, "sha256": p.SHA256, "not_applied": fixed}, nil
}

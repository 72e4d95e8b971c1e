package main

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

var startedAt = time.Now()

// buildRPC builds the RPC server from the modules' export tables plus the
// methods kamd itself owns (core.*, stats.*, app_starlark.*), and wires the
// event hub. It runs before any socket or module starts, so nothing can
// publish an event while env.Publish is being set.
func (d *daemon) buildRPC() error {
	addr := d.o.rpcAddr
	if addr == "" {
		if v, ok := d.eng.Program().Config.CoreParams["rpc_listen"]; ok {
			addr = v.Str
		} else {
			addr = rpc.DefaultAddr
		}
	}
	tokens, err := rpc.LoadTokens(d.o.rpcTokens)
	if err != nil {
		return err
	}
	srv := rpc.NewServer(rpc.Config{Addr: addr, Tokens: tokens, Logger: d.env.Log})
	hub := srv.Hub()
	d.env.Publish = hub.Publish
	hub.SetStatsSource(func() any { return d.env.Stats.Get("all") })
	d.eng.OnLoad = func(p *starlark.Program, err error) {
		if err != nil {
			hub.Publish("script", map[string]any{"event": "reload_failed", "error": err.Error()})
			return
		}
		hub.Publish("script", map[string]any{"event": "loaded", "version": p.Version, "path": p.Path, "sha256": p.SHA256})
	}
	for _, m := range d.methods() {
		if err := srv.Register(m); err != nil {
			return err
		}
	}
	for _, mod := range d.eng.Modules {
		for _, rm := range mod.RPC {
			if err := srv.Register(adaptRPC(rm)); err != nil {
				return err
			}
		}
	}
	if !srv.Enabled() {
		return nil
	}
	if err := srv.Validate(); err != nil {
		return err
	}
	d.rpcSrv, d.rpcListen = srv, addr
	return nil
}

// listenRPC binds the RPC address and serves it in the background.
func (d *daemon) listenRPC(ctx context.Context) error {
	srv := d.rpcSrv
	if srv == nil {
		return nil
	}
	ln, err := net.Listen("tcp", d.rpcListen)
	if err != nil {
		return fmt.Errorf("rpc: %w", err)
	}
	d.env.Log.Info("rpc listening on " + ln.Addr().String())
	go func() {
		if err := srv.Serve(ln); err != nil && ctx.Err() == nil {
			d.env.Log.Error("rpc server stopped", "err", err)
		}
	}()
	return nil
}

func adaptRPC(rm core.RPCMethod) rpc.Method {
	ps := make([]rpc.Param, len(rm.Params))
	for i, p := range rm.Params {
		ps[i] = rpc.Param{Name: p.Name, Type: p.Type, Doc: p.Doc, Optional: p.Optional}
	}
	h := rm.Handler
	return rpc.Method{Name: rm.Name, Doc: rm.Doc, Params: ps, Result: rm.Result, ReadOnly: rm.ReadOnly,
		Handler: func(ctx context.Context, p rpc.Params) (any, error) {
			res, err := h(ctx, p)
			if e, ok := err.(*core.RPCError); ok {
				return nil, rpc.NewError(e.Code, e.Message)
			}
			return res, err
		}}
}

func (d *daemon) methods() []rpc.Method {
	ro := func(name, doc, result string, h func(ctx context.Context, p rpc.Params) (any, error), params ...rpc.Param) rpc.Method {
		return rpc.Method{Name: name, Doc: doc, Result: result, ReadOnly: true, Handler: h, Params: params}
	}
	admin := func(m rpc.Method) rpc.Method { m.ReadOnly = false; return m }
	return []rpc.Method{
		ro("core.version", "kamd version", `{"version": "kamd x.y.z (kamgo)", "go": "go1.x"}`, func(context.Context, rpc.Params) (any, error) {
			return map[string]any{"version": "kamd " + Version + " (kamgo)", "go": runtime.Version()}, nil
		}),
		ro("core.uptime", "time since start", `{"now": "...", "up_since": "...", "uptime": seconds}`, func(context.Context, rpc.Params) (any, error) {
			return map[string]any{"now": time.Now().UTC().Format(time.RFC3339), "up_since": startedAt.UTC().Format(time.RFC3339),
				"uptime": int64(time.Since(startedAt).Seconds())}, nil
		}),
		ro("core.info", "version, build and runtime details", `{"version","go","os","arch","pid","cpus","script"}`, func(context.Context, rpc.Params) (any, error) {
			p := d.eng.Program()
			return map[string]any{"version": Version, "go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH,
				"pid": os.Getpid(), "cpus": runtime.NumCPU(), "gomaxprocs": runtime.GOMAXPROCS(0), "script": p.Path, "script_version": p.Version}, nil
		}),
		ro("core.ps", "what runs: receivers, workers, timers, rpc", `[{"idx": n, "dsc": "..."}]`, func(context.Context, rpc.Params) (any, error) {
			return d.ps(), nil
		}),
		ro("core.sockets_list", "listening SIP sockets", `{"socket": [{"proto","address","port","advertise"}]}`, func(context.Context, rpc.Params) (any, error) {
			var out []map[string]any
			for _, s := range d.env.Sockets {
				out = append(out, map[string]any{"proto": s.Proto, "address": s.IP, "port": s.Port, "advertise": s.Advertise})
			}
			return map[string]any{"socket": out}, nil
		}),
		ro("core.mem", "Go runtime memory (bytes)", `{"heap_alloc","heap_sys","heap_objects","sys","num_gc","goroutines"}`, func(context.Context, rpc.Params) (any, error) {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			return map[string]any{"heap_alloc": ms.HeapAlloc, "heap_inuse": ms.HeapInuse, "heap_sys": ms.HeapSys, "heap_objects": ms.HeapObjects,
				"stack_inuse": ms.StackInuse, "sys": ms.Sys, "num_gc": ms.NumGC, "goroutines": runtime.NumGoroutine()}, nil
		}),
		ro("stats.get_statistics", "statistics: all, a group (\"tm:\" or \"tm\") or names", `{"group:name": n, ...}`,
			func(_ context.Context, p rpc.Params) (any, error) {
				sel, err := p.Strings(0)
				if err != nil {
					return nil, err
				}
				if len(sel) == 0 {
					sel = []string{"all"}
				}
				out := d.env.Stats.Get(sel...)
				if len(out) == 0 {
					return nil, rpc.NewError(404, "Record not found")
				}
				return out, nil
			}, rpc.Param{Name: "names", Type: rpc.TypeString, Optional: true, Variadic: true, Doc: "all, group: or statistic names"}),
		admin(ro("stats.reset_statistics", "zero statistics (all, a group or names)", `{"reset": n}`,
			func(_ context.Context, p rpc.Params) (any, error) {
				sel, err := p.Strings(0)
				if err != nil {
					return nil, err
				}
				if len(sel) == 0 {
					return nil, rpc.InvalidParamsf("stats.reset_statistics: name what to reset (all, a group or names)")
				}
				return map[string]any{"reset": d.env.Stats.Reset(sel...)}, nil
			}, rpc.Param{Name: "names", Type: rpc.TypeString, Variadic: true, Doc: "all, group: or statistic names"})),
		admin(rpc.Method{Name: "app_starlark.reload", Doc: "compile, check and swap in the script file; the old version keeps serving on error",
			Result: `{"old": n, "new": n, "sha256": "...", "not_applied": [...]}`,
			Params: []rpc.Param{{Name: "apply_live", Type: rpc.TypeBool, Optional: true, Doc: "apply what can change live and report the rest (listen sockets)"}},
			Handler: func(_ context.Context, p rpc.Params) (any, error) {
				live, err := p.BoolOr(0, false)
				if err != nil {
					return nil, err
				}
				return d.reloadRPC(live)
			}}),
		admin(rpc.Method{Name: "app_starlark.rollback", Doc: "go back to the previous script version", Result: `{"old": n, "new": n}`,
			Handler: func(context.Context, rpc.Params) (any, error) {
				d.reloadMu.Lock()
				defer d.reloadMu.Unlock()
				old := d.eng.Program().Version
				p, err := d.eng.Rollback()
				if err != nil {
					return nil, rpc.NewError(404, err.Error())
				}
				d.env.Emit("script", map[string]any{"event": "rollback", "version": p.Version, "sha256": p.SHA256})
				return map[string]any{"old": old, "new": p.Version, "sha256": p.SHA256}, nil
			}}),
		ro("app_starlark.status", "the running script version and the versions kept for rollback", `{"version","path","sha256","loaded_at","previous":[...]}`,
			func(context.Context, rpc.Params) (any, error) {
				cur := d.eng.Program()
				var prev []map[string]any
				for _, v := range d.eng.Versions() {
					if v != cur {
						prev = append(prev, progInfo(v))
					}
				}
				out := progInfo(cur)
				if prev == nil {
					prev = []map[string]any{}
				}
				out["previous"] = prev
				return out, nil
			}),
		ro("app_starlark.api_list", "every KSR function with its signature (Kamailio's api_list shape)", `{"msize": n, "methods": [{"func": {"ret","module","name","params","doc"}}], "pvs": [{"name","module","writable","doc"}]}`,
			func(context.Context, rpc.Params) (any, error) {
				var ms []map[string]any
				for _, f := range d.eng.Funcs() {
					ms = append(ms, map[string]any{"func": map[string]any{"ret": f.Func.Ret.String(), "module": f.Module,
						"name": f.Func.Name, "params": f.Func.ParamsString(), "doc": f.Func.Doc}})
				}
				var pvs []map[string]any // kamgo's addition: the PVs of the same tables
				for _, p := range d.eng.PVs() {
					pvs = append(pvs, map[string]any{"name": p.Spec(), "module": p.Module, "writable": p.Def.Set != nil, "doc": p.Def.Doc})
				}
				return map[string]any{"msize": len(ms), "methods": ms, "pvs": pvs}, nil
			}),
	}
}

func progInfo(p *starlark.Program) map[string]any {
	return map[string]any{"version": p.Version, "path": p.Path, "sha256": p.SHA256, "loaded_at": p.LoadedAt.UTC().Format(time.RFC3339Nano)}
}

func (d *daemon) ps() []map[string]any {
	var out []map[string]any
	add := func(dsc string) { out = append(out, map[string]any{"idx": len(out), "pid": os.Getpid(), "dsc": dsc}) }
	add("main process")
	for _, s := range d.env.Sockets {
		if s.Proto == "udp" {
			add("udp receiver " + s.String())
		} else {
			add(s.Proto + " listener " + s.String())
		}
	}
	for i := 0; i < d.workers; i++ {
		add(fmt.Sprintf("SIP worker %d", i))
	}
	add("timers (tm, shared clock)")
	if d.rpcSrv != nil {
		add("rpc server " + d.rpcSrv.Addr())
	}
	return out
}

// defaultListen is what kamd listens on when neither -l nor the script's
// listen() names a socket (the same as newDaemon's default in main.go).
var defaultListen = []core.Socket{{Proto: "udp", IP: "127.0.0.1", Port: 5060}, {Proto: "tcp", IP: "127.0.0.1", Port: 5060}}

func socketSet(ss []core.Socket) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.String())
	}
	sort.Strings(out)
	return out
}

// reloadRPC is app_starlark.reload: compile and check synchronously, then
// swap; listen sockets cannot change live.
func (d *daemon) reloadRPC(applyLive bool) (any, error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	old := d.eng.Program().Version
	var src []byte
	var err error
	if d.o.file == "" {
		src = defaultScript
	} else if src, err = os.ReadFile(d.path); err != nil {
		err = fmt.Errorf("%s: %v", d.path, err)
		d.eng.Install(nil, err)
		return nil, rpc.NewError(500, err.Error())
	}
	p, err := d.eng.Compile(d.path, src)
	if err != nil {
		d.eng.Install(nil, err)
		return nil, rpc.NewError(500, err.Error())
	}
	var notApplied []string
	if len(d.o.listen) == 0 {
		// A script without listen() would get the default sockets at the
		// next start: removing every listen() is a change too.
		listen := p.Config.Listen
		if len(listen) == 0 {
			listen = defaultListen
		}
		want, have := socketSet(listen), socketSet(d.configured)
		if strings.Join(want, ",") != strings.Join(have, ",") {
			msg := fmt.Sprintf("listen sockets changed (%s → %s); they need a restart", strings.Join(have, " "), strings.Join(want, " "))
			if !applyLive {
				err := fmt.Errorf("reload refused: %s; call app_starlark.reload with apply_live=true to apply the rest", msg)
				d.eng.Install(nil, err)
				return nil, rpc.NewError(409, err.Error())
			}
			notApplied = append(notApplied, msg)
		}
	}
	if _, err := d.eng.Install(p, nil); err != nil {
		return nil, rpc.NewError(500, err.Error())
	}
	if notApplied == nil {
		notApplied = []string{}
	}
	d.env.Log.Info("script reloaded", "version", p.Version, "sha256", p.SHA256[:12])
	return map[string]any{"old": old, "new": p.Version, "sha256": p.SHA256, "not_applied": notApplied}, nil
}

// Package node is kamd's one wiring: from options to a running kamd — Env,
// modules, engine, script, RPC registry and event hub, database, sockets —
// shared by the daemon, `kamd -c`, `kamd test` (through RouteTest) and any
// test that builds a kamd in process.
//
// A node goes through New (build and load the script: all `kamd -c`
// needs), Init (database, sockets, Sender, modules' Init in dependency
// order), Start (RPC listener, modules' Start, then traffic) and Stop
// (modules' Stop in reverse order, then RPC, sockets, database).
package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/kamgo/kamgo/kamd/transport"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/core/dnsres"
	"github.com/kamgo/kamgo/rpc"
	"github.com/kamgo/kamgo/starlark"
)

// DefaultDBPath is the SQLite file used when neither --db nor
// core_param("db_path") names one.
const DefaultDBPath = "kamgo.db"

// DefaultListen is what kamd listens on when neither -l nor the script's
// listen() names a socket.
var DefaultListen = []core.Socket{{Proto: "udp", IP: "127.0.0.1", Port: 5060}, {Proto: "tcp", IP: "127.0.0.1", Port: 5060}}

// Options are everything a kamd is built from: the command line's flags,
// the script, and for route tests what replaces the network and the clock.
// Flags win over the script's core_param settings.
type Options struct {
	Path string // the script's path (errors, status, reload)
	Src  []byte
	// Reread returns the script's source again for app_starlark.reload
	// and SIGHUP (nil: read Path).
	Reread func() ([]byte, error)

	Listen    []string // -l: replaces the script's listen()
	LogLevel  string   // --log-level; else -d, else core_param("log_level"), else info
	Debug     int      // -d count
	LogOutput io.Writer
	// Log, when set, is used as is (route tests capture every level).
	Log *slog.Logger

	DBPath   string // --db; else core_param("db_path"), else DefaultDBPath
	MaxSteps uint64 // --max-steps (starlark.DefaultMaxSteps if 0)
	Workers  int    // --workers; else core_param("workers"), else 4×GOMAXPROCS
	TLSCert  string // --tls-cert; else core_param("tls_certificate")
	TLSKey   string // --tls-key; else core_param("tls_private_key")

	// DBNoCheck (--db-no-check) skips the database check at start
	// (core_param("db_check", 0) too).
	DBNoCheck bool

	RPCAddr    string // --rpc; else core_param("rpc_listen"), else rpc.DefaultAddr; "off" disables
	RPCTokens  string // --rpc-tokens file
	RPCTLSCert string // --rpc-tls-cert; else core_param("rpc_tls_certificate")
	RPCTLSKey  string // --rpc-tls-key; else core_param("rpc_tls_private_key")

	Version string // for core.version and the start line

	// ScriptLimits: --script-mem-budget, --script-time-limit (the config
	// phase's limits, and the default of script_mem_budget and
	// script_time_limit_ms); nil: starlark's defaults.
	ScriptLimits *starlark.Limits

	// Sender, when set, replaces the transport (route tests' recorder):
	// sockets are the configured ones, unbound (port 0 reads as 5060), and
	// the RPC server never listens.
	Sender core.Sender
	// Clock replaces the wall clock (route tests' fixed clock).
	Clock core.Clock
	// OnEvent, when set, sees every event published, synchronously, before
	// the hub forwards it to subscribers (route tests' r.events).
	OnEvent func(topic string, data any)
}

// Node is one wired kamd.
type Node struct {
	stopProcs func() // the GOMAXPROCS controller (limits.go)
	Opts      Options
	Env       *core.Env
	Engine    *starlark.Engine
	// RPC is the method registry and event hub; it listens only if enabled
	// and not in a route test.
	RPC *rpc.Server
	// Modules are the engine's modules in dependency order (Init, Start);
	// Stop runs in reverse.
	Modules []*core.Module

	level      *slog.LevelVar
	levelFixed bool // --log-level or -d given: the script's log_level does not apply
	workers    int
	configured []core.Socket // listen sockets as configured (before port 0 is resolved)
	rpcAddr    string
	startCore  map[string]core.Val // the core params kamd started with (some are read only then)
	tr         *transport.Transport
	started    time.Time
	reloadMu   sync.Mutex
	inited     []*core.Module // modules whose Init ran, to stop on failure
	startedMod []*core.Module
	stopOnce   sync.Once
	hist       history // stats.history
}

// notReady is env.Sender until Init: a module that sends from its factory,
// or keeps the Sender it saw there, gets this error instead of a silent
// drop (core.Env documents the rule; TestFactoriesLeaveLateFieldsAlone).
type notReady struct{}

// ErrNotReady is what a Sender used before the modules' Init returns.
var ErrNotReady = errors.New("kamd: env.Sender used before module Init (read Env.Sender, Sockets and DB from Init on, not in the module's factory)")

func (notReady) Send(*core.Outgoing) error { return ErrNotReady }

// New builds the env, every registered module, the engine and the RPC
// registry, and loads the script. Nothing is opened or bound yet: this is
// all `kamd -c` does. A missing or circular module need is an error here.
func New(o Options) (*Node, error) {
	n := &Node{Opts: o, level: new(slog.LevelVar), started: time.Now()}
	env := core.NewEnv(notReady{})
	if o.Log != nil {
		env.Log = o.Log
		n.levelFixed = true
	} else {
		switch {
		case o.LogLevel != "":
			l, err := core.ParseLogLevel(o.LogLevel)
			if err != nil {
				return nil, err
			}
			n.level.Set(l)
			n.levelFixed = true
		case o.Debug > 0:
			n.level.Set(slog.LevelDebug)
			n.levelFixed = true
		}
		out := o.LogOutput
		if out == nil {
			out = os.Stderr
		}
		env.Log = slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: n.level}))
	}
	if o.Clock != nil {
		env.Clock = o.Clock
	}
	// Publish is set before any module is built, so no factory can keep a
	// nil one; the hub it forwards to exists from New's end on.
	env.Publish = n.publish
	n.Env = env
	if o.Sender == nil {
		// The daemon resolves next hops named by host (RFC 3263, tm's DNS
		// failover); route tests keep them as written.
		dnsres.Use(env, dnsres.New(""))
	}
	eng := starlark.New(env)
	if o.MaxSteps > 0 {
		eng.MaxSteps = o.MaxSteps
	}
	if o.ScriptLimits != nil {
		eng.Limits = *o.ScriptLimits
	}
	n.Engine = eng
	mods, err := core.OrderModules(eng.Modules)
	if err != nil {
		return nil, err
	}
	n.Modules = mods
	p, err := eng.Load(o.Path, o.Src)
	if err != nil {
		return nil, err
	}
	n.applyCoreParams(p)
	n.startCore = p.Config.CoreParams
	if v := p.Config.CoreParams["dns_server"].Str; v != "" && o.Sender == nil {
		dnsres.Use(env, dnsres.New(v)) // the script's server wins over $KAMGO_DNS_SERVER
	}
	n.workers = o.Workers
	if n.workers <= 0 {
		if v, ok := p.Config.CoreParams["workers"]; ok {
			n.workers = int(v.Int)
		} else {
			n.workers = 4 * runtime.GOMAXPROCS(0)
		}
	}
	env.DBPath = o.DBPath
	if env.DBPath == "" {
		env.DBPath = p.Config.CoreParams["db_path"].Str
	}
	if env.DBPath == "" {
		env.DBPath = DefaultDBPath
	}
	if err := n.buildRPC(p); err != nil {
		return nil, err
	}
	return n, nil
}

// applyCoreParams applies what a script's core_param settings change live:
// the log level (unless a flag set it) and the Server header.
func (n *Node) applyCoreParams(p *starlark.Program) {
	if !n.levelFixed {
		l := slog.LevelInfo
		if v, ok := p.Config.CoreParams["log_level"]; ok {
			l, _ = core.ParseLogLevel(v.Str) // checked at load
		}
		n.level.Set(l)
	}
	sh := core.DefaultServerHeader
	if v, ok := p.Config.CoreParams["server_header"]; ok {
		sh = v.Str
	}
	core.SetServerHeader(sh)
}

func (n *Node) publish(topic string, data any) {
	if n.Opts.OnEvent != nil {
		n.Opts.OnEvent(topic, data)
	}
	if n.RPC != nil {
		n.RPC.Hub().Publish(topic, data)
	}
}

// Workers is the number of SIP worker goroutines.
func (n *Node) Workers() int { return n.workers }

// sockets resolves the listen sockets: -l, else the script's listen(),
// else DefaultListen.
func (n *Node) sockets(p *starlark.Program) ([]core.Socket, error) {
	if len(n.Opts.Listen) > 0 {
		var socks []core.Socket
		for _, l := range n.Opts.Listen {
			s, err := core.ParseSocket(l)
			if err != nil {
				return nil, err
			}
			socks = append(socks, s)
		}
		return socks, nil
	}
	if len(p.Config.Listen) > 0 {
		return append([]core.Socket(nil), p.Config.Listen...), nil
	}
	return append([]core.Socket(nil), DefaultListen...), nil
}

// Init opens the database, binds the sockets (or, with Options.Sender,
// takes the configured ones as they are), sets env.Sender, Sockets,
// Aliases and DB, and runs the modules' Init in dependency order.
func (n *Node) Init() (err error) {
	env, eng := n.Env, n.Engine
	p := eng.Program()
	defer func() {
		if err != nil {
			n.Stop()
		}
	}()
	socks, err := n.sockets(p)
	if err != nil {
		return err
	}
	n.configured = socks
	if env.DB, err = core.OpenDB(env.DBPath); err != nil {
		return err
	}
	if err := n.checkDB(p); err != nil {
		return err
	}
	env.Aliases = p.Config.Aliases
	if n.Opts.Sender != nil {
		for i := range socks {
			if socks[i].Port == 0 { // the daemon would bind a free port
				socks[i].Port = 5060
			}
		}
		env.SetSockets(socks)
		env.Sender = eng.WrapSender(n.Opts.Sender)
		env.SocketManager = listedSockets{env}
	} else {
		tlsConf, err := n.sipTLS(p)
		if err != nil {
			return err
		}
		n.tr = transport.New(env, eng, n.transportConfig(p, transport.Config{Workers: n.workers, TLSConfig: tlsConf}))
		bound, err := n.tr.Listen(context.Background(), socks)
		if err != nil {
			return err
		}
		env.SetSockets(bound)
		env.Sender = eng.WrapSender(n.tr)
		env.SocketManager = n.tr
	}
	for _, m := range n.Modules {
		if m.Init != nil {
			if err := m.Init(); err != nil {
				return fmt.Errorf("module %s: %w", m.Name, err)
			}
		}
		n.inited = append(n.inited, m)
	}
	return nil
}

// listedSockets is the SocketManager of route tests (Options.Sender): a
// socket is only listed in Env.Sockets(), nothing is bound.
type listedSockets struct{ env *core.Env }

func (l listedSockets) OpenSocket(_ context.Context, s core.Socket) (core.Socket, error) {
	if s.Port <= 0 || s.Port > 65535 {
		return s, fmt.Errorf("open socket %s: a route test needs a port (1-65535)", s)
	}
	for _, x := range l.env.Sockets() {
		if x.Proto == s.Proto && x.Port == s.Port && x.IP == s.IP {
			return s, fmt.Errorf("open socket %s: already open", s)
		}
	}
	l.env.AddSocket(s)
	return s, nil
}

func (l listedSockets) CloseSocket(s core.Socket) error {
	if !l.env.RemoveSocket(s) {
		return fmt.Errorf("close socket %s: not open", s)
	}
	return nil
}

// Start serves RPC (unless disabled or in a route test), runs the modules'
// Start in dependency order and only then lets SIP traffic in.
func (n *Node) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			n.Stop()
		}
	}()
	if n.Opts.Sender == nil && n.RPC.Enabled() {
		if err := n.listenRPC(ctx); err != nil {
			return err
		}
		n.startHistory(ctx)
	}
	for _, m := range n.Modules {
		if m.Start != nil {
			if err := m.Start(ctx); err != nil {
				return fmt.Errorf("module %s: %w", m.Name, err)
			}
		}
		n.startedMod = append(n.startedMod, m)
	}
	if n.tr != nil {
		n.startProcs(ctx, n.Engine.Program())
		n.tr.Start()
		for _, s := range n.Env.Sockets() {
			n.Env.Log.Info("listening on " + s.String())
		}
	}
	return nil
}

// Stop stops the modules in reverse dependency order (a module still
// reaches what it needs while it stops), then the RPC server, the sockets
// and the database. It is safe to call more than once.
func (n *Node) Stop() {
	n.stopOnce.Do(func() {
		n.stopScripts() // shutdown.go: no new requests, running callbacks bounded
		n.stopHistory()
		// Modules that ran Init get Stop, newest first.
		for i := len(n.inited) - 1; i >= 0; i-- {
			if m := n.inited[i]; m.Stop != nil {
				m.Stop()
			}
		}
		if n.RPC != nil && n.Opts.Sender == nil {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = n.RPC.Shutdown(sctx)
			cancel()
		}
		if n.tr != nil {
			n.tr.Close()
		}
		if n.stopProcs != nil {
			n.stopProcs()
		}
		if n.Env.DB != nil {
			_ = n.Env.DB.Close()
		}
	})
}

// loadTLS reads a certificate pair; both empty means no TLS.
func loadTLS(what, cert, key string) (*tls.Config, error) {
	if cert == "" && key == "" {
		return nil, nil
	}
	if cert == "" || key == "" {
		return nil, fmt.Errorf("%s needs both a certificate and a private key", what)
	}
	c, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("%s certificate: %w", what, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12}, nil
}

// sipTLS is the certificate of tls and wss listeners: flags win over the
// script's core_param settings.
func (n *Node) sipTLS(p *starlark.Program) (*tls.Config, error) {
	cert, key := n.Opts.TLSCert, n.Opts.TLSKey
	if cert == "" {
		cert = p.Config.CoreParams["tls_certificate"].Str
	}
	if key == "" {
		key = p.Config.CoreParams["tls_private_key"].Str
	}
	return loadTLS("TLS", cert, key)
}

// Serve is the daemon's life: Init, Start, then run until ctx ends
// (SIGHUP reloads, through hup), then Stop.
func (n *Node) Serve(ctx context.Context, hup <-chan os.Signal) error {
	if err := n.Init(); err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		return err
	}
	p := n.Engine.Program()
	n.Env.Log.Info("kamd started", "version", n.Opts.Version, "script", n.Opts.Path, "script_version", p.Version, "sha256", p.SHA256[:12])
	for {
		select {
		case <-ctx.Done():
			n.Env.Log.Info("shutting down")
			n.Stop()
			return nil
		case <-hup:
			if _, err := n.Reload(false); err != nil {
				n.Env.Log.Error("SIGHUP reload failed; the previous version keeps serving", "err", err)
			}
		}
	}
}

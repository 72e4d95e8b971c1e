// Command kamd is kamgo's SIP proxy: routing in Starlark through
// Kamailio's KSR API.
package main

import (
	"context"
	"crypto/tls"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kamgo/kamgo/kamd/transport"
	_ "github.com/kamgo/kamgo/modules/all"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/rpc"
	"github.com/kamgo/kamgo/starlark"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "0.1.0-dev"

//go:embed default.star
var defaultScript []byte

// DefaultScriptName is how the embedded script shows up in errors and status.
const DefaultScriptName = "<embedded>/default.star"

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

type options struct {
	file      string
	check     bool
	version   bool
	listen    listFlag
	debug     int
	logLevel  string
	dbPath    string
	rpcAddr   string
	rpcTokens string
	maxSteps  uint64
	workers   int
	tlsCert   string
	tlsKey    string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "test" {
		os.Exit(runTests(os.Args[2:], os.Stdout, os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "apidoc" {
		apiDoc(os.Stdout)
		return
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("kamd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.file, "f", "", "routing script (Starlark); default: the embedded script")
	fs.BoolVar(&o.check, "c", false, "check the script and exit (0 ok, 1 with file:line:col: message)")
	fs.BoolVar(&o.version, "v", false, "print the version and exit")
	fs.Var(&o.listen, "l", "listen socket proto:addr:port (repeatable; overrides the script's listen())")
	fs.Func("d", "increase verbosity (repeatable)", func(string) error { o.debug++; return nil })
	fs.StringVar(&o.logLevel, "log-level", "", "debug, info, warn or error (default info)")
	fs.StringVar(&o.dbPath, "db", "kamgo.db", "SQLite file for modules' tables")
	fs.StringVar(&o.rpcAddr, "rpc", "", "JSON-RPC listen address (default 127.0.0.1:8060; \"off\" disables)")
	fs.StringVar(&o.rpcTokens, "rpc-tokens", "", "file of RPC tokens, one \"ROLE TOKEN\" per line (ROLE ro or admin); also $KAMD_RPC_TOKEN, $KAMD_RPC_TOKEN_RO")
	fs.Uint64Var(&o.maxSteps, "max-steps", starlark.DefaultMaxSteps, "Starlark step limit per callback")
	fs.IntVar(&o.workers, "workers", 0, "worker goroutines (default 4×CPUs)")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate for tls listeners (or core_param(\"tls_certificate\", ...))")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM private key for tls listeners (or core_param(\"tls_private_key\", ...))")
	// -d is a boolean-like flag repeated as -d -d; flag.Func needs a value, so rewrite.
	var norm []string
	for _, a := range args {
		if a == "-d" || a == "--d" {
			norm = append(norm, "-d=1")
			continue
		}
		if strings.HasPrefix(a, "-dd") && strings.Trim(a[1:], "d") == "" {
			for range a[1:] {
				norm = append(norm, "-d=1")
			}
			continue
		}
		norm = append(norm, a)
	}
	if err := fs.Parse(norm); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return o, nil
}

func logLevel(o *options) (slog.Level, error) {
	switch strings.ToLower(o.logLevel) {
	case "":
		if o.debug > 0 {
			return slog.LevelDebug, nil
		}
		return slog.LevelInfo, nil
	case "debug", "dbg":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error", "err":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q (debug, info, warn, error)", o.logLevel)
}

func readScript(o *options) (string, []byte, error) {
	if o.file == "" {
		return DefaultScriptName, defaultScript, nil
	}
	src, err := os.ReadFile(o.file)
	if err != nil {
		return o.file, nil, err
	}
	return o.file, src, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "kamd:", err)
		return 2
	}
	if o.version {
		fmt.Fprintf(stdout, "kamd %s (kamgo)\n", Version)
		return 0
	}
	lvl, err := logLevel(o)
	if err != nil {
		fmt.Fprintln(stderr, "kamd:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	env := core.NewEnv(nil)
	env.Log = log
	env.DBPath = o.dbPath
	eng := starlark.New(env)
	eng.MaxSteps = o.maxSteps
	path, src, err := readScript(o)
	if err != nil {
		fmt.Fprintln(stderr, "kamd:", err)
		return 1
	}
	if o.check {
		if _, err := eng.Check(path, src); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: OK\n", path)
		return 0
	}
	d, err := newDaemon(o, env, eng, path, src)
	if err != nil {
		fmt.Fprintln(stderr, "kamd:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := d.serve(ctx); err != nil {
		fmt.Fprintln(stderr, "kamd:", err)
		return 1
	}
	return 0
}

// daemon is a running kamd.
type daemon struct {
	o          *options
	env        *core.Env
	eng        *starlark.Engine
	tr         *transport.Transport
	path       string
	configured []core.Socket // listen sockets as configured (before port 0 is resolved)
	workers    int
	rpcSrv     *rpc.Server
	rpcListen  string
	reloadMu   sync.Mutex
}

func newDaemon(o *options, env *core.Env, eng *starlark.Engine, path string, src []byte) (*daemon, error) {
	p, err := eng.Load(path, src)
	if err != nil {
		return nil, err
	}
	d := &daemon{o: o, env: env, eng: eng, path: path}
	if dbPath := p.Config.CoreParams["db_path"].Str; dbPath != "" && o.dbPath == "kamgo.db" {
		env.DBPath = dbPath
	}
	db, err := core.OpenDB(env.DBPath)
	if err != nil {
		return nil, err
	}
	env.DB = db
	socks := p.Config.Listen
	if len(o.listen) > 0 {
		socks = nil
		for _, l := range o.listen {
			s, err := core.ParseSocket(l)
			if err != nil {
				return nil, err
			}
			socks = append(socks, s)
		}
	}
	if len(socks) == 0 {
		socks = defaultListen
	}
	env.Aliases = p.Config.Aliases
	d.configured = socks
	d.workers = o.workers
	if d.workers <= 0 {
		d.workers = 4 * runtime.GOMAXPROCS(0)
	}
	tlsConf, err := loadTLS(o, p)
	if err != nil {
		return nil, err
	}
	d.tr = transport.New(env, eng, transport.Config{Workers: d.workers, TLSConfig: tlsConf})
	bound, err := d.tr.Listen(context.Background(), socks)
	if err != nil {
		return nil, err
	}
	env.Sockets = bound
	env.Sender = eng.WrapSender(d.tr)
	if err := d.buildRPC(); err != nil {
		d.tr.Close()
		return nil, err
	}
	for _, m := range eng.Modules {
		if m.Init != nil {
			if err := m.Init(); err != nil {
				d.tr.Close()
				return nil, fmt.Errorf("module %s: %w", m.Name, err)
			}
		}
	}
	return d, nil
}

func (d *daemon) serve(ctx context.Context) error {
	if err := d.listenRPC(ctx); err != nil {
		d.tr.Close()
		return err
	}
	for _, m := range d.eng.Modules {
		if m.Start != nil {
			if err := m.Start(ctx); err != nil {
				d.tr.Close()
				return fmt.Errorf("module %s: %w", m.Name, err)
			}
		}
	}
	// Sockets are bound since newDaemon; messages flow only now that the
	// modules are initialised and started.
	d.tr.Start()
	for _, s := range d.env.Sockets {
		d.env.Log.Info("listening on " + s.String())
	}
	p := d.eng.Program()
	d.env.Log.Info("kamd started", "version", Version, "script", d.path, "script_version", p.Version, "sha256", p.SHA256[:12])
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			d.env.Log.Info("shutting down")
			for _, m := range d.eng.Modules {
				if m.Stop != nil {
					m.Stop()
				}
			}
			if d.rpcSrv != nil {
				sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_ = d.rpcSrv.Shutdown(sctx)
				cancel()
			}
			d.tr.Close()
			_ = d.env.DB.Close()
			return nil
		case <-hup:
			if _, err := d.reloadRPC(false); err != nil {
				d.env.Log.Error("SIGHUP reload failed; the previous version keeps serving", "err", err)
			}
		}
	}
}

// loadTLS reads the certificate for tls listeners: flags win over the
// script's core_param settings. No certificate means no TLS.
func loadTLS(o *options, p *starlark.Program) (*tls.Config, error) {
	cert, key := o.tlsCert, o.tlsKey
	if cert == "" {
		cert = p.Config.CoreParams["tls_certificate"].Str
	}
	if key == "" {
		key = p.Config.CoreParams["tls_private_key"].Str
	}
	if cert == "" && key == "" {
		return nil, nil
	}
	if cert == "" || key == "" {
		return nil, fmt.Errorf("TLS needs both a certificate and a private key")
	}
	c, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12}, nil
}

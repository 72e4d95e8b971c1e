// Command kamd is kamgo's SIP proxy: routing in Starlark through
// Kamailio's KSR API.
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/kamgo/kamgo/kamd/node"
	_ "github.com/kamgo/kamgo/modules/all"
	"github.com/kamgo/kamgo/modules/core"
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
	file       string
	check      bool
	version    bool
	listen     listFlag
	debug      int
	logLevel   string
	dbPath     string
	rpcAddr    string
	rpcTokens  string
	maxSteps   uint64
	memBudget  uint64 // MB
	timeLimit  uint64 // ms
	workers    int
	tlsCert    string
	tlsKey     string
	rpcTLSCert string
	rpcTLSKey  string
	cpuProfile string
	memProfile string
	dbNoCheck  bool
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
	fs.StringVar(&o.logLevel, "log-level", "", "dbg/debug, info, notice, warn, err/error, crit (or core_param(\"log_level\", ...); default info)")
	fs.StringVar(&o.dbPath, "db", "", "SQLite file for modules' tables (or core_param(\"db_path\", ...); default kamgo.db)")
	fs.BoolVar(&o.dbNoCheck, "db-no-check", false, "skip the database's PRAGMA quick_check at start (huge files; or core_param(\"db_check\", 0))")
	fs.StringVar(&o.rpcAddr, "rpc", "", "JSON-RPC listen address (default 127.0.0.1:8060; \"off\" disables)")
	fs.StringVar(&o.rpcTokens, "rpc-tokens", "", "file of RPC tokens, one \"ROLE TOKEN\" per line (ROLE ro or admin); also $KAMD_RPC_TOKEN, $KAMD_RPC_TOKEN_RO")
	fs.Uint64Var(&o.maxSteps, "max-steps", starlark.DefaultMaxSteps, "Starlark step limit per callback")
	fs.Uint64Var(&o.memBudget, "script-mem-budget", starlark.DefaultMemBudgetMB, "MB the heap may grow during one script run, 0 for no limit (or core_param(\"script_mem_budget\", ...))")
	fs.Uint64Var(&o.timeLimit, "script-time-limit", uint64(starlark.DefaultTimeLimit.Milliseconds()), "ms one script run may take, 0 for no limit (or core_param(\"script_time_limit_ms\", ...))")
	fs.IntVar(&o.workers, "workers", 0, "worker goroutines (or core_param(\"workers\", ...); default 4×CPUs)")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate for tls listeners (or core_param(\"tls_certificate\", ...))")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM private key for tls listeners (or core_param(\"tls_private_key\", ...))")
	fs.StringVar(&o.rpcTLSCert, "rpc-tls-cert", "", "PEM certificate: RPC over TLS (wss://, https://) (or core_param(\"rpc_tls_certificate\", ...))")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a Go CPU profile of the whole run to this file (go tool pprof; see docs/performance.md)")
	fs.StringVar(&o.memProfile, "memprofile", "", "write a Go heap profile to this file when kamd stops (what is live then: go tool pprof -sample_index=inuse_space)")
	fs.StringVar(&o.rpcTLSKey, "rpc-tls-key", "", "PEM private key for --rpc-tls-cert (or core_param(\"rpc_tls_private_key\", ...))")
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

func readScript(o *options) (string, []byte, error) {
	if o.file == "" {
		return DefaultScriptName, defaultScript, nil
	}
	src, err := starlark.ReadScript(o.file)
	if err != nil {
		return o.file, nil, err
	}
	return o.file, src, nil
}

// nodeOptions maps the command line onto the one wiring's options.
func nodeOptions(o *options, path string, src []byte, stderr io.Writer) node.Options {
	no := node.Options{Path: path, Src: src, Listen: o.listen, LogLevel: o.logLevel, Debug: o.debug, LogOutput: stderr,
		DBPath: o.dbPath, MaxSteps: o.maxSteps, Workers: o.workers, TLSCert: o.tlsCert, TLSKey: o.tlsKey,
		RPCAddr: o.rpcAddr, RPCTokens: o.rpcTokens, RPCTLSCert: o.rpcTLSCert, RPCTLSKey: o.rpcTLSKey, Version: Version}
	no.ScriptLimits = &starlark.Limits{MemBudget: o.memBudget << 20, TimeLimit: time.Duration(o.timeLimit) * time.Millisecond}
	no.DBNoCheck = o.dbNoCheck
	if o.file == "" {
		no.Reread = func() ([]byte, error) { return defaultScript, nil }
	}
	return no
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
	if o.logLevel != "" {
		if _, err := core.ParseLogLevel(o.logLevel); err != nil {
			fmt.Fprintln(stderr, "kamd:", err)
			return 2
		}
	}
	path, src, err := readScript(o)
	if err != nil {
		fmt.Fprintln(stderr, "kamd:", err)
		return 1
	}
	n, err := node.New(nodeOptions(o, path, src, stderr))
	if err != nil {
		if o.check {
			fmt.Fprintln(stderr, err)
		} else {
			fmt.Fprintln(stderr, "kamd:", err)
		}
		return 1
	}
	if o.check {
		fmt.Fprintf(stdout, "%s: OK\n", path)
		return 0
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "kamd:", err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "kamd: cpuprofile:", err)
			return 1
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	finished := make(chan struct{})
	defer close(finished) // before stop(): a clean return disarms the timer
	go func() {
		// exit_timeout bounds the shutdown even if a module's Stop or a
		// KSR function blocked in Go never returns.
		select {
		case <-ctx.Done():
		case <-finished:
			return
		}
		d := n.ExitTimeout()
		select {
		case <-time.After(d):
			fmt.Fprintf(stderr, "kamd: shutdown took longer than exit_timeout (%s); exiting now\n", d)
			os.Exit(1)
		case <-finished:
		}
	}()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	serveCtx := ctx
	if o.memProfile != "" {
		// Written as the signal arrives, before kamd stops: the heap as the
		// last requests left it (transactions in wait_timer included).
		var cancel context.CancelFunc
		serveCtx, cancel = context.WithCancel(context.Background())
		defer cancel()
		go func() {
			<-ctx.Done()
			writeHeapProfile(o.memProfile, stderr)
			cancel()
		}()
	}
	if err := n.Serve(serveCtx, hup); err != nil {
		fmt.Fprintln(stderr, "kamd:", err)
		return 1
	}
	return 0
}

func writeHeapProfile(path string, stderr io.Writer) {
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(stderr, "kamd: memprofile:", err)
		return
	}
	defer f.Close()
	runtime.GC() // the profile reports the heap as of the last collection
	if err := pprof.WriteHeapProfile(f); err != nil {
		fmt.Fprintln(stderr, "kamd: memprofile:", err)
	}
}

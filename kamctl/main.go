// Command kamctl talks to kamd's JSON-RPC interface (see docs/rpc.md).
//
//	kamctl [flags] METHOD [PARAMS...]   call a method (kamcmd-style typing)
//	kamctl ls                           list methods
//	kamctl help METHOD                  describe a method
//	kamctl watch [-i SECS] [TOPIC...]   print events until Ctrl-C
//	kamctl version                      print the version
//	kamctl                              interactive shell (when stdin is a terminal)
//
// Exit status: 0 success, 1 the server answered with an error, 2 usage,
// connection or transport error.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	neturl "net/url"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/kamgo/kamgo/rpc"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

const (
	defaultURL = "ws://127.0.0.1:8060/ws"
	exitOK     = 0
	exitRPC    = 1
	exitUsage  = 2
)

const usageText = `usage: kamctl [flags] METHOD [PARAMS...]
       kamctl [flags] ls | help METHOD | watch [-i SECS] [TOPIC...] | version
       kamctl [flags]            (interactive shell, when stdin is a terminal)

Params are typed like kamcmd: a number is sent as a number, anything else as a
string; prefixes force a type: s:STRING  i:INT  b:BOOL  j:JSON.

Flags:
`

type app struct {
	url       string
	token     string
	tls       *tls.Config
	json      bool
	timeout   time.Duration
	stdout    io.Writer
	stderr    io.Writer
	cl        *rpc.Client
	interrupt <-chan os.Signal
	events    bool // watch: needs a websocket
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kamctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("s", envOr("KAMCTL_URL", defaultURL), "server URL: ws://host:port/ws, http://host:port/RPC, or wss:// and https:// for kamd's RPC over TLS (env KAMCTL_URL)")
	tokenFile := fs.String("token-file", "", "read the bearer token from this file (else env KAMCTL_TOKEN)")
	asJSON := fs.Bool("json", false, "print results as indented JSON (events as one JSON object per line)")
	timeout := fs.Duration("timeout", 30*time.Second, "timeout of one call")
	caFile := fs.String("ca", "", "PEM CA certificate(s) to verify a wss:// or https:// server with (e.g. kamd's self-signed --rpc-tls-cert)")
	insecure := fs.Bool("k", false, "do not verify the wss:// or https:// server's certificate (testing only)")
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	a := &app{url: *url, json: *asJSON, timeout: *timeout, stdout: stdout, stderr: stderr}
	token, err := readToken(*tokenFile)
	if err != nil {
		fmt.Fprintf(stderr, "kamctl: %v\n", err)
		return exitUsage
	}
	a.token = token
	if a.tls, err = tlsConfig(*caFile, *insecure); err != nil {
		fmt.Fprintf(stderr, "kamctl: %v\n", err)
		return exitUsage
	}
	defer func() {
		if a.cl != nil {
			a.cl.Close()
		}
	}()
	rest := fs.Args()
	if len(rest) == 0 {
		if isTerminal(stdin) {
			return a.shell()
		}
		fs.Usage()
		return exitUsage
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	a.interrupt = sig
	return a.exec(rest)
}

// tlsConfig is the client's TLS for wss:// and https://: the system's roots
// plus --ca, or no verification with -k. nil means Go's defaults.
func tlsConfig(caFile string, insecure bool) (*tls.Config, error) {
	if caFile == "" && !insecure {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca %s: no PEM certificate in it", caFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// readToken reads the token from a file (the first non-comment line; if it
// has several fields, as in kamd's "ROLE TOKEN" files, the last one), else
// from $KAMCTL_TOKEN. A token is never taken from a flag.
func readToken(path string) (string, error) {
	if path == "" {
		return strings.TrimSpace(os.Getenv("KAMCTL_TOKEN")), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		return f[len(f)-1], nil
	}
	return "", fmt.Errorf("token file %s is empty", path)
}

func (a *app) client() (*rpc.Client, error) {
	if a.cl != nil {
		return a.cl, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	defer cancel()
	cl, err := rpc.DialTLS(ctx, a.url, a.token, a.tls)
	if errors.Is(err, rpc.ErrTooManyConns) && !a.events {
		// The websockets are at their cap (idle ones, say): calls work over
		// POST /RPC on the same port, which has its own bound.
		if hu, ok := httpURL(a.url); ok {
			fmt.Fprintf(a.stderr, "kamctl: websockets at their cap; using %s\n", hu)
			cl, err = rpc.DialTLS(ctx, hu, a.token, a.tls)
		}
	}
	if err != nil {
		return nil, err
	}
	a.cl = cl
	return cl, nil
}

// fail prints err and returns the exit status: 1 for an error answered by
// the server (as kamcmd prints it, but on stderr), 2 otherwise.
func (a *app) fail(err error) int {
	var e *rpc.Error
	if errors.As(err, &e) {
		fmt.Fprintf(a.stderr, "error: %d - %s\n", e.Code, e.Message)
		return exitRPC
	}
	fmt.Fprintf(a.stderr, "kamctl: %v\n", err)
	return exitUsage
}

func (a *app) call(method string, params any) (json.RawMessage, error) {
	if a.cl != nil && a.cl.Err() != nil {
		// The server closed the websocket since the last call (its idle
		// timeout, in the shell): reconnect. A call is never retried, so
		// one that may have run is not run twice.
		a.cl.Close()
		a.cl = nil
	}
	cl, err := a.client()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	defer cancel()
	return cl.Call(ctx, method, params)
}

// httpURL turns ws://host:port/ws into http://host:port/RPC (wss → https).
func httpURL(ws string) (string, bool) {
	u, err := neturl.Parse(ws)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") {
		return "", false
	}
	u.Scheme = strings.Replace(u.Scheme, "ws", "http", 1)
	u.Path, u.RawQuery = "/RPC", ""
	return u.String(), true
}

// exec runs one command line (already split into words).
func (a *app) exec(words []string) int {
	switch words[0] {
	case "version":
		fmt.Fprintln(a.stdout, versionString())
		return exitOK
	case "ls":
		return a.ls()
	case "help":
		if len(words) != 2 {
			fmt.Fprintln(a.stderr, "usage: kamctl help METHOD")
			return exitUsage
		}
		return a.help(words[1])
	case "watch":
		return a.watch(words[1:])
	}
	params, err := parseParams(words[1:])
	if err != nil {
		fmt.Fprintf(a.stderr, "kamctl: %v\n", err)
		return exitUsage
	}
	if code, ok := a.paged(words[0], params); ok {
		return code
	}
	res, err := a.call(words[0], params)
	if err != nil {
		return a.fail(err)
	}
	return a.print(res)
}

func (a *app) print(res json.RawMessage) int {
	var err error
	if a.json {
		err = printJSON(a.stdout, res)
	} else {
		err = printReadable(a.stdout, res)
	}
	if err != nil {
		fmt.Fprintf(a.stderr, "kamctl: bad result: %v\n", err)
		return exitUsage
	}
	return exitOK
}

func (a *app) listMethods() ([]string, error) {
	res, err := a.call("system.listMethods", nil)
	if err != nil {
		return nil, err
	}
	var names []string
	if err := json.Unmarshal(res, &names); err != nil {
		return nil, fmt.Errorf("system.listMethods: %v", err)
	}
	sort.Strings(names)
	return names, nil
}

func (a *app) ls() int {
	if a.json {
		res, err := a.call("system.listMethods", nil)
		if err != nil {
			return a.fail(err)
		}
		return a.print(res)
	}
	names, err := a.listMethods()
	if err != nil {
		return a.fail(err)
	}
	for _, n := range names {
		fmt.Fprintln(a.stdout, n)
	}
	return exitOK
}

func (a *app) help(method string) int {
	help, err := a.call("system.methodHelp", []any{method})
	if err != nil {
		return a.fail(err)
	}
	sig, err := a.call("system.methodSignature", []any{method})
	if err != nil {
		return a.fail(err)
	}
	if a.json {
		return a.print(json.RawMessage(fmt.Sprintf(`{"help":%s,"signature":%s}`, help, sig)))
	}
	var info rpc.MethodInfo
	if err := json.Unmarshal(help, &info); err != nil {
		// Not a kamgo server (Kamailio returns a string): show it as is.
		return a.print(help)
	}
	w := a.stdout
	fmt.Fprintf(w, "%s - %s\n", info.Name, info.Doc)
	if len(info.Params) == 0 {
		fmt.Fprintln(w, "params: none")
	} else {
		fmt.Fprintln(w, "params:")
		for _, p := range info.Params {
			name := p.Name
			if p.Variadic {
				name += "..."
			}
			if p.Optional {
				name = "[" + name + "]"
			}
			line := fmt.Sprintf("\t%s (%s)", name, p.Type)
			if p.Doc != "" {
				line += ": " + p.Doc
			}
			fmt.Fprintln(w, line)
		}
	}
	if info.Result != "" {
		fmt.Fprintf(w, "result: %s\n", info.Result)
	}
	role := "admin"
	if info.ReadOnly {
		role = "read-only"
	}
	fmt.Fprintf(w, "access: %s\n", role)
	var sigs [][]string
	if json.Unmarshal(sig, &sigs) == nil {
		for _, s := range sigs {
			if len(s) > 0 {
				fmt.Fprintf(w, "signature: %s(%s) -> %s\n", info.Name, strings.Join(s[1:], ", "), s[0])
			}
		}
	}
	return exitOK
}

func (a *app) watch(args []string) int {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	interval := fs.Int("i", 0, "stats period in seconds (topic \"stats\")")
	fs.Usage = func() {
		fmt.Fprintln(a.stderr, "usage: kamctl watch [-i SECS] [TOPIC...]   (no topic: every topic but stats)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	a.events = true
	cl, err := a.client()
	if err != nil {
		return a.fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	ch, err := cl.SubscribeInterval(ctx, time.Duration(*interval)*time.Second, fs.Args()...)
	cancel()
	if err != nil {
		return a.fail(err)
	}
	for {
		select {
		case <-a.interrupt:
			return exitOK
		case ev, ok := <-ch:
			if !ok {
				err := cl.Err()
				if err == nil {
					err = errors.New("closed")
				}
				fmt.Fprintf(a.stderr, "kamctl: connection closed: %v\n", err)
				return exitUsage
			}
			a.printEvent(ev)
		}
	}
}

func (a *app) printEvent(ev rpc.Event) {
	ts := ev.TS.UTC().Format("2006-01-02T15:04:05.000Z")
	if a.json {
		b, _ := json.Marshal(struct {
			Topic string          `json:"topic"`
			Data  json.RawMessage `json:"data"`
			TS    string          `json:"ts"`
		}{ev.Topic, ev.Data, ts})
		fmt.Fprintf(a.stdout, "%s\n", b)
		return
	}
	fmt.Fprintf(a.stdout, "%s %s %s\n", ts, ev.Topic, compactJSON(ev.Data))
}

func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if len(raw) == 0 {
		return "null"
	}
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}

func versionString() string {
	v := version
	if v == "" {
		v = "devel"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	return fmt.Sprintf("kamctl %s (%s %s/%s)", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

package node_test

import (
	"context"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/kamd/node"
	_ "github.com/kamgo/kamgo/modules/all"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/rpc"
	"github.com/kamgo/kamgo/starlark/routetest"
)

// Two test modules: lc_a needs lc_b (as uac needs tm). Registered for this
// test binary only.
var (
	lcMu    sync.Mutex
	lcLog   []string
	lcNeeds = []string{"lc_b"} // lc_a's needs; a test swaps it
	// lc_a's view of the Sender: the one its factory saw, the one Init saw.
	factorySender, initSender core.Sender
)

func lcNote(s string) {
	lcMu.Lock()
	lcLog = append(lcLog, s)
	lcMu.Unlock()
}

func lcModule(name string, needs func() []string) core.Factory {
	return func(env *core.Env) *core.Module {
		m := &core.Module{Name: name, Needs: needs(),
			Init:  func() error { lcNote("init " + name); return nil },
			Start: func(context.Context) error { lcNote("start " + name); return nil },
		}
		if name == "lc_a" {
			factorySender = env.Sender // the mistake the guard exposes
			m.Init = func() error { initSender = env.Sender; lcNote("init " + name); return nil }
			m.Stop = func() {
				// As uac unregistering through tm: what it needs still runs.
				lcNote("stop lc_a (lc_b stopped: " + env.Module("lc_b").Doc + ")")
			}
		}
		if name == "lc_b" {
			m.Doc = "no" // until it stops
			m.Stop = func() { m.Doc = "yes"; lcNote("stop lc_b") }
		}
		return m
	}
}

func init() {
	core.Register(lcModule("lc_a", func() []string { return lcNeeds }))
	core.Register(lcModule("lc_b", func() []string { return nil }))
}

const script = `
def ksr_request_route():
    KSR.sl.send_reply(200, "OK")
`

func newNode(t *testing.T) *node.Node {
	t.Helper()
	rec := routetest.NewFixedClock(routetest.RouteTestEpoch) // any core.Clock
	n, err := node.New(node.Options{Path: "n.star", Src: []byte(script), RPCAddr: "off", DBPath: t.TempDir() + "/k.db",
		Sender: sinkSender{}, Clock: rec, LogOutput: discard{}})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

type sinkSender struct{}

func (sinkSender) Send(*core.Outgoing) error { return nil }

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func TestLifecycleFollowsNeeds(t *testing.T) {
	lcLog = nil
	n := newNode(t)
	if err := n.Init(); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	n.Stop()
	want := "init lc_b, init lc_a, start lc_b, start lc_a, stop lc_a (lc_b stopped: no), stop lc_b"
	if got := strings.Join(lcLog, ", "); got != want {
		t.Errorf("lifecycle:\n got %s\nwant %s", got, want)
	}
	// registrar and auth_db declare what they need.
	pos := map[string]int{}
	for i, m := range n.Modules {
		pos[m.Name] = i
	}
	if pos["registrar"] < pos["usrloc"] || pos["auth_db"] < pos["auth"] {
		t.Errorf("module order ignores needs: %v", pos)
	}
}

func TestMissingOrCircularNeedIsAnError(t *testing.T) {
	defer func() { lcNeeds = []string{"lc_b"} }()
	for _, c := range []struct {
		needs []string
		want  string
	}{
		{[]string{"nope"}, "module lc_a needs module nope, which is not loaded"},
		{[]string{"lc_a"}, "modules need each other in a circle: lc_a → lc_a"},
	} {
		lcNeeds = c.needs
		_, err := node.New(node.Options{Path: "n.star", Src: []byte(script), RPCAddr: "off", Sender: sinkSender{}, LogOutput: discard{}})
		if err == nil || err.Error() != c.want {
			t.Errorf("needs %v: error %v, want %q", c.needs, err, c.want)
		}
	}
}

// Env.Sender, Sockets and DB are set by Init, after the modules are built:
// a module that keeps what its factory saw gets ErrNotReady, not a silent
// drop; what Init sees works.
func TestSenderIsReadyFromInitOn(t *testing.T) {
	n := newNode(t)
	defer n.Stop()
	if err := n.Init(); err != nil {
		t.Fatal(err)
	}
	if err := factorySender.Send(&core.Outgoing{}); !errors.Is(err, node.ErrNotReady) {
		t.Errorf("the Sender a factory saw: %v, want ErrNotReady", err)
	}
	if initSender == nil || errors.Is(initSender.Send(&core.Outgoing{}), node.ErrNotReady) {
		t.Errorf("the Sender Init saw is not the real one")
	}
	if len(n.Env.Sockets()) == 0 || n.Env.DB == nil {
		t.Errorf("Init left Sockets %v, DB %v", n.Env.Sockets(), n.Env.DB)
	}
}

// No module's factory sends, publishes or touches the database: they may
// only from Init on (core.Env's rule).
func TestFactoriesLeaveLateFieldsAlone(t *testing.T) {
	var used []string
	env := core.NewEnv(senderFunc(func(o *core.Outgoing) error { used = append(used, "Sender"); return nil }))
	env.Publish = func(topic string, _ any) { used = append(used, "Publish "+topic) }
	for _, f := range core.Factories() {
		func() {
			defer func() {
				if r := recover(); r != nil {
					used = append(used, "panic (nil DB or Sockets?)")
				}
			}()
			m := f(env)
			if len(used) > 0 {
				t.Errorf("module %s's factory used %v", m.Name, used)
				used = nil
			}
		}()
	}
}

type senderFunc func(*core.Outgoing) error

func (f senderFunc) Send(o *core.Outgoing) error { return f(o) }

// A reload puts a param the new script no longer sets back to its Default:
// every module's Set must accept its own Default (Check is for what a
// script writes; htable's empty default is no definition).
func TestEveryParamAcceptsItsDefault(t *testing.T) {
	n := newNode(t)
	for _, m := range n.Modules {
		for _, p := range m.Params {
			if p.Set != nil {
				if err := p.Set(p.Default); err != nil {
					t.Errorf("modparam(%q, %q): its default %s cannot be set: %v", m.Name, p.Name, p.Default, err)
				}
			}
		}
	}
}

// core_param's workers, server_header and log_level take effect; flags win.
func TestCoreParams(t *testing.T) {
	src := `core_param("workers", 3)
core_param("server_header", "Server: acme/1.0")
core_param("log_level", "err")
def ksr_request_route():
    KSR.warn("not shown at err")
    KSR.err("shown")
    KSR.sl.send_reply(200, "OK")
`
	var logs strings.Builder
	rec := &captureSender{}
	n, err := node.New(node.Options{Path: "c.star", Src: []byte(src), RPCAddr: "off", DBPath: t.TempDir() + "/k.db", Sender: rec, LogOutput: &logs})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { n.Stop(); core.SetServerHeader(core.DefaultServerHeader) }()
	if n.Workers() != 3 {
		t.Errorf("workers %d, want 3", n.Workers())
	}
	if err := n.Init(); err != nil {
		t.Fatal(err)
	}
	h, err := routetest.NewHarness(node.RouteTest, "c.star", []byte(src), routetest.HarnessOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	req, _ := routetest.ParseMessage("OPTIONS sip:a@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\nFrom: <sip:b@x>;tag=1\nTo: <sip:a@x>\nCall-ID: c1\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n")
	r, err := h.Request(req.(*sip.Request), "192.0.2.1:5060", "udp")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Sent) != 1 || !strings.Contains(r.Sent[0].Text, "\r\nServer: acme/1.0\r\n") {
		t.Errorf("reply without the script's Server header: %v", r.Sent)
	}
	// The daemon's own logger follows log_level.
	n.Env.Log.Warn("a warning")
	n.Env.Log.Error("an error")
	if out := logs.String(); strings.Contains(out, "a warning") || !strings.Contains(out, "an error") {
		t.Errorf("log_level err: log output\n%s", out)
	}
	// --workers and --log-level win over the script.
	logs.Reset()
	n2, err := node.New(node.Options{Path: "c.star", Src: []byte(src), RPCAddr: "off", Sender: rec, LogOutput: &logs, Workers: 5, LogLevel: "warn"})
	if err != nil {
		t.Fatal(err)
	}
	n2.Env.Log.Warn("a warning")
	if n2.Workers() != 5 || !strings.Contains(logs.String(), "a warning") {
		t.Errorf("flags do not win: workers %d, logs %q", n2.Workers(), logs.String())
	}
}

type captureSender struct{ sinkSender }

// kamd's own methods come from its table: the registry, help and role
// checks all read it.
func TestCoreRPCTable(t *testing.T) {
	n := newNode(t)
	for _, m := range n.CoreRPC() {
		got, ok := n.RPC.Method(m.Name)
		if !ok || got.ReadOnly != m.ReadOnly || got.Doc != m.Doc || len(got.Params) != len(m.Params) {
			t.Errorf("%s: registered as %+v (found %v)", m.Name, got, ok)
		}
	}
	if _, err := n.RPC.Call(context.Background(), rpc.RoleReadOnly, "app_starlark.reload"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("read-only caller reloading: %v, want 403", err)
	}
	raw, err := n.RPC.Call(context.Background(), rpc.RoleReadOnly, "system.methodHelp", "stats.get_statistics")
	if err != nil || !strings.Contains(string(raw), `"variadic":true`) {
		t.Errorf("methodHelp stats.get_statistics: %s %v", raw, err)
	}
}

// core.ps lists what runs: a receiver or listener per socket, a reader per
// stream connection, the workers; no timers process.
func TestPs(t *testing.T) {
	n, err := node.New(node.Options{Path: "p.star", Src: []byte(script), RPCAddr: "off", DBPath: t.TempDir() + "/k.db",
		Listen: []string{"udp:127.0.0.1:0", "tcp:127.0.0.1:0"}, Workers: 2, LogOutput: discard{}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	if err := n.Init(); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	tcp, _ := n.Env.SocketFor("tcp")
	c, err := net.Dial("tcp", net.JoinHostPort(tcp.IP, strconv.Itoa(tcp.Port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var dsc []string
	for i := 0; i < 100; i++ {
		dsc = dsc[:0]
		for _, p := range n.Ps() {
			dsc = append(dsc, p["dsc"].(string))
		}
		if strings.Contains(strings.Join(dsc, "|"), "stream connection readers (1)") {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	udp, _ := n.Env.SocketFor("udp")
	want := []string{"main process", "udp receiver " + udp.String(), "tcp listener " + tcp.String(), "stream connection readers (1)", "SIP worker 0", "SIP worker 1"}
	if strings.Join(dsc, "|") != strings.Join(want, "|") {
		t.Errorf("core.ps:\n got %q\nwant %q", dsc, want)
	}
}

// Modules depend on core and on what they declare: a module package that
// imports another module's package must list it in Needs.
func TestModuleImportsAreDeclared(t *testing.T) {
	n := newNode(t)
	byName := map[string]*core.Module{}
	for _, m := range n.Modules {
		byName[m.Name] = m
	}
	const prefix = "github.com/kamgo/kamgo/modules/"
	dirs, _ := filepath.Glob("../../modules/*")
	for _, dir := range dirs {
		m := byName[filepath.Base(dir)]
		if m == nil {
			continue // all, moduletest, core
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			pf, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range pf.Imports {
				dep, ok := strings.CutPrefix(strings.Trim(imp.Path.Value, `"`), prefix)
				if !ok || dep == "core" || strings.Contains(dep, "/") {
					continue
				}
				if !slices.Contains(m.Needs, dep) {
					t.Errorf("%s imports module %s but its table does not declare Needs: %q", f, dep, dep)
				}
			}
		}
	}
}

// Sockets opened at runtime (Env.SocketManager) show in core.ps and
// core.sockets_list while open, marked as such.
func TestRuntimeSocketsListed(t *testing.T) {
	n, err := node.New(node.Options{Path: "p.star", Src: []byte(script), RPCAddr: "off", DBPath: t.TempDir() + "/k.db",
		Listen: []string{"udp:127.0.0.1:0"}, Workers: 1, LogOutput: discard{}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	if err := n.Init(); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	fixed := n.Env.Sockets()[0]
	rt, err := n.Env.OpenSocket(context.Background(), core.Socket{Proto: "tcp", IP: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	var dsc []string
	for _, p := range n.Ps() {
		dsc = append(dsc, p["dsc"].(string))
	}
	want := []string{"main process", "udp receiver " + fixed.String(), "tcp listener " + rt.String() + " (opened at runtime)", "SIP worker 0"}
	if strings.Join(dsc, "|") != strings.Join(want, "|") {
		t.Errorf("core.ps:\n got %q\nwant %q", dsc, want)
	}
	list := func() string {
		raw, err := n.RPC.Call(context.Background(), rpc.RoleReadOnly, "core.sockets_list")
		if err != nil {
			t.Fatal(err)
		}
		return string(raw)
	}
	got := list()
	wantRT := fmt.Sprintf(`{"address":"127.0.0.1","advertise":"","port":%d,"proto":"tcp","runtime":true}`, rt.Port)
	wantFixed := fmt.Sprintf(`{"address":"127.0.0.1","advertise":"","port":%d,"proto":"udp","runtime":false}`, fixed.Port)
	if !strings.Contains(got, wantRT) || !strings.Contains(got, wantFixed) {
		t.Errorf("core.sockets_list = %s\nwant %s and %s", got, wantFixed, wantRT)
	}
	if err := n.Env.CloseSocket(rt); err != nil {
		t.Fatal(err)
	}
	if got := list(); strings.Contains(got, `"tcp"`) {
		t.Errorf("core.sockets_list after close = %s", got)
	}
}

// In a route test (Options.Sender) nothing binds: a socket opened is only
// listed, so module code that opens sockets runs unchanged there.
func TestRouteTestSocketsAreListed(t *testing.T) {
	n := newNode(t)
	defer n.Stop()
	if err := n.Init(); err != nil {
		t.Fatal(err)
	}
	s := core.Socket{Proto: "udp", IP: "192.0.2.1", Port: 6100}
	if _, err := n.Env.OpenSocket(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if !n.Env.IsMyself("192.0.2.1", 6100) {
		t.Errorf("an opened socket is not myself: %v", n.Env.Sockets())
	}
	if _, err := n.Env.OpenSocket(context.Background(), s); err == nil {
		t.Errorf("opening it twice worked")
	}
	if _, err := n.Env.OpenSocket(context.Background(), core.Socket{Proto: "udp", IP: "192.0.2.1"}); err == nil {
		t.Errorf("port 0 in a route test worked")
	}
	if err := n.Env.CloseSocket(s); err != nil || n.Env.IsMyself("192.0.2.1", 6100) {
		t.Errorf("close: %v, still myself %v", err, n.Env.IsMyself("192.0.2.1", 6100))
	}
	if err := n.Env.CloseSocket(s); err == nil {
		t.Errorf("closing twice worked")
	}
}

package starlark_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/kamd/node"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/starlark"
	"github.com/kamgo/kamgo/starlark/routetest"

	_ "github.com/kamgo/kamgo/modules/all"
)

const optionsReq = "OPTIONS sip:127.0.0.1 SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-%d\r\n" +
	"From: <sip:alice@example.com>;tag=f1\r\n" +
	"To: <sip:127.0.0.1>\r\n" +
	"Call-ID: o%d@192.0.2.10\r\n" +
	"CSeq: 1 OPTIONS\r\n" +
	"Max-Forwards: 70\r\n" +
	"Content-Length: 0\r\n\r\n"

func options(t testing.TB, n int) *sip.Request {
	t.Helper()
	msg, err := sip.NewParser().ParseSIP([]byte(fmt.Sprintf(optionsReq, n, n)))
	if err != nil {
		t.Fatal(err)
	}
	return msg.(*sip.Request)
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name, src, want string
	}{
		{"syntax", "def ksr_request_route(:\n    pass\n", "s.star:1:"},
		{"no request route", "x = 1\n", "defines no ksr_request_route"},
		{"undefined failure callback", "def ksr_request_route():\n    KSR.tm.t_on_failure(\"nope\")\n", "s.star:2:25: callback \"nope\""},
		{"undefined reply callback via alias", "tm = KSR.tm\ndef ksr_request_route():\n    tm.t_on_reply(\"gone\")\n", "s.star:3:19: callback \"gone\""},
		{"unknown PV literal", "def ksr_request_route():\n    KSR.pv.get(\"$nosuch\")\n", "s.star:2:16: unknown pseudo-variable"},
		{"KSR in the config phase", "KSR.info(\"x\")\ndef ksr_request_route():\n    pass\n", "s.star:1:9: KSR.info is callable only inside callbacks"},
		{"unknown module", "modparam(\"nosuch\", \"x\", 1)\ndef ksr_request_route():\n    pass\n", "s.star:1:9: modparam: unknown module \"nosuch\""},
		{"unknown param", "modparam(\"tm\", \"fr_timers\", 1)\ndef ksr_request_route():\n    pass\n", "has no parameter \"fr_timers\""},
		{"param type", "modparam(\"tm\", \"fr_timer\", \"soon\")\ndef ksr_request_route():\n    pass\n", "want int, got \"soon\""},
		{"param value", "modparam(\"tm\", \"fr_timer\", -5)\ndef ksr_request_route():\n    pass\n", "s.star:1:9: modparam(\"tm\", \"fr_timer\"): must be a positive"},
		{"htable definition", "modparam(\"htable\", \"htable\", \"t=>size=8;bogus=1\")\ndef ksr_request_route():\n    pass\n", "s.star:1:9: modparam(\"htable\", \"htable\")"},
		{"core_param", "core_param(\"nosuch\", 1)\ndef ksr_request_route():\n    pass\n", "unknown parameter \"nosuch\""},
		{"log_level", "core_param(\"log_level\", \"bogus\")\ndef ksr_request_route():\n    pass\n", "s.star:1:11: core_param(\"log_level\"): unknown log level \"bogus\""},
		{"workers", "core_param(\"workers\", 0)\ndef ksr_request_route():\n    pass\n", "core_param(\"workers\"): must be positive"},
		{"listen", "listen(\"udp:nowhere:5060\")\ndef ksr_request_route():\n    pass\n", "not an IP address"},
		{"load outside the directory", "load(\"../x.star\", \"y\")\ndef ksr_request_route():\n    pass\n", "only .star files in the script's directory"},
		{"two-parameter callback", "def ksr_request_route(a, b):\n    pass\n", "takes 2 parameters"},
		{"while is not allowed", "def ksr_request_route():\n    while True:\n        pass\n", "s.star:2:5"},
		{"runtime error at top level", "x = 1 // 0\ndef ksr_request_route():\n    pass\n", "s.star:1:7: floored division by zero"},
		{"mod_init fails", "def mod_init():\n    fail(\"no\")\ndef ksr_request_route():\n    pass\n", "no"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eng := starlark.New(core.NewEnv(nil))
			_, err := eng.Load("s.star", []byte(tc.src))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("load error %v, want it to contain %q", err, tc.want)
			}
			if eng.Program() != nil {
				t.Fatal("a failed load installed a program")
			}
		})
	}
}

func TestLoadFromScriptDirectory(t *testing.T) {
	dir := t.TempDir()
	lib := filepath.Join(dir, "lib.star")
	if err := os.WriteFile(lib, []byte("CODE = 202\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := "load(\"lib.star\", \"CODE\")\ndef ksr_request_route():\n    KSR.sl.send_reply(CODE, \"Accepted\")\n"
	h, err := routetest.NewHarness(node.RouteTest, filepath.Join(dir, "route.star"), []byte(src), routetest.HarnessOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	r, err := h.Request(options(t, 1), "192.0.2.10:5070", "udp")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Sent) != 1 || !strings.HasPrefix(r.Sent[0].Text, "SIP/2.0 202 Accepted") {
		t.Fatalf("sent %v", r.Sent)
	}
}

// A load()ed file goes through the same compile path and checks as the
// main script: a callback it names must exist, a PV literal must parse.
func TestLoadedFilesAreChecked(t *testing.T) {
	for _, tc := range []struct{ lib, want string }{
		{"def x():\n    KSR.tm.t_on_failure(\"nope\")\n", "lib.star:2:25: callback \"nope\" is named here"},
		{"def x():\n    return KSR.pv.get(\"$nosuch\")\n", "lib.star:2:23: unknown pseudo-variable"},
		{"def x(:\n", "lib.star:1:8"},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "lib.star"), []byte(tc.lib), 0o644); err != nil {
			t.Fatal(err)
		}
		src := "load(\"lib.star\", \"x\")\ndef ksr_request_route():\n    pass\n"
		_, err := starlark.New(core.NewEnv(nil)).Check(filepath.Join(dir, "route.star"), []byte(src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("lib %q: error %v, want %q", tc.lib, err, tc.want)
		}
	}
}

// A test module with a live param and a static one, for reload semantics.
var ptestLive, ptestStatic int64

func init() {
	core.Register(func(env *core.Env) *core.Module {
		return &core.Module{Name: "ptest", Params: []core.Param{
			{Name: "live", Type: core.ArgInt, Default: core.Int(7), Set: func(v core.Val) error { ptestLive = v.Int; return nil }},
			{Name: "size", Type: core.ArgInt, Default: core.Int(4), Static: true, Set: func(v core.Val) error { ptestStatic = v.Int; return nil }},
		}}
	})
}

func TestReloadParamSemantics(t *testing.T) {
	eng := starlark.New(core.NewEnv(nil))
	script := func(params string) []byte { return []byte(params + "\ndef ksr_request_route():\n    pass\n") }
	if _, err := eng.Load("p.star", script(`modparam("ptest", "live", 3)`+"\n"+`modparam("ptest", "size", 8)`)); err != nil {
		t.Fatal(err)
	}
	if ptestLive != 3 || ptestStatic != 8 {
		t.Fatalf("first load: live %d size %d, want 3 8", ptestLive, ptestStatic)
	}
	// The new version no longer sets live: it goes back to its Default.
	// size is the same: nothing to refuse.
	p, err := eng.Compile("p.star", script(`modparam("ptest", "size", 8)`))
	if err != nil {
		t.Fatal(err)
	}
	if ch := eng.StaticChanges(p); len(ch) != 0 {
		t.Errorf("static changes %v for an unchanged size", ch)
	}
	if _, err := eng.Install(p, nil); err != nil {
		t.Fatal(err)
	}
	if ptestLive != 7 {
		t.Errorf("live after its modparam was removed: %d, want the default 7", ptestLive)
	}
	// Dropping size changes it (back to its default 4): a static change,
	// which Install leaves alone if the caller installs anyway (apply_live).
	p, err = eng.Compile("p.star", script(""))
	if err != nil {
		t.Fatal(err)
	}
	if ch := eng.StaticChanges(p); len(ch) != 1 || ch[0] != `modparam("ptest", "size") 8 → 4` {
		t.Errorf("static changes %q", ch)
	}
	if _, err := eng.Install(p, nil); err != nil || ptestStatic != 8 {
		t.Errorf("static param changed live to %d (%v)", ptestStatic, err)
	}
	// What runs is still 8: a version saying 8 changes nothing, one
	// without it (4) still does.
	if p, _ := eng.Compile("p.star", script(`modparam("ptest", "size", 8)`)); len(eng.StaticChanges(p)) != 0 {
		t.Errorf("static changes %q against the running 8", eng.StaticChanges(p))
	}
	if p, _ := eng.Compile("p.star", script("")); len(eng.StaticChanges(p)) != 1 {
		t.Errorf("static changes %q for 8 → 4", eng.StaticChanges(p))
	}
	// Rollback restores the previous version's live values.
	if _, err := eng.Rollback(); err != nil {
		t.Fatal(err)
	}
	if ptestLive != 7 {
		t.Errorf("live after rollback %d", ptestLive)
	}
}

// Every failure in the request route answers 500 (Kamailio drops silently)
// and names the script position.
func TestRequestRouteErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body, wantErr string
		wantCode            int
	}{
		{"fail()", `fail("boom")`, "boom", 500},
		{"wrong argument type", `KSR.sl.send_reply("200", "OK")`, "argument 1: want int, got string", 500},
		{"missing argument", `KSR.sl.send_reply(*[200])`, "want 2 arguments (int, str), got 1", 500},
		{"extra argument", `KSR.is_method(*["INVITE", 1])`, "want 1 arguments", 500},
		{"read-only PV", `KSR.pv.sets("$si", "1.2.3.4")`, "read-only", 500},
		{"bad $du", `KSR.setdsturi("garbage")`, "invalid SIP URI", 500},
		{"step limit", `[x for x in range(10000000)]`, "step limit", 500},
		{"undefined dynamic callback", `KSR.tm.t_on_failure("no_" + "such")`, "defines no function", 500},
		{"modf unknown", `KSR.x.modf("no_such" + "_fn")`, "unknown function", 500},
		{"modf bad int", `KSR.x.modf("sl_send_reply", "two hundred", "OK")`, "not an integer", 500},
		{"reply already sent", "KSR.sl.send_reply(404, \"Nope\")\n    fail(\"later\")", "later", 404},
		{"exit stops quietly", "KSR.sl.send_reply(201, \"Done\")\n    KSR.x.exit()\n    fail(\"not reached\")", "", 201},
		{"modf native call", `KSR.x.modf("sl_send_reply", "299", "Native")`, "", 299},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "def ksr_request_route():\n    " + tc.body + "\n"
			h, err := routetest.NewHarness(node.RouteTest, "r.star", []byte(src), routetest.HarnessOptions{MaxSteps: 100000})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			r, err := h.Request(options(t, 1), "192.0.2.10:5070", "udp")
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Sent) != 1 || !strings.HasPrefix(r.Sent[0].Text, fmt.Sprintf("SIP/2.0 %d ", tc.wantCode)) {
				t.Fatalf("sent %d messages, want one %d reply: %v", len(r.Sent), tc.wantCode, r.Sent)
			}
			if tc.wantErr == "" {
				if r.Error() != "" {
					t.Fatalf("unexpected script error %q", r.Error())
				}
				return
			}
			if !strings.Contains(r.Error(), tc.wantErr) || !strings.Contains(r.Error(), "r.star:") {
				t.Fatalf("script error %q, want %q with its r.star position", r.Error(), tc.wantErr)
			}
		})
	}
}

func TestReloadAndRollback(t *testing.T) {
	env := core.NewEnv(nil)
	eng := starlark.New(env)
	var events []string
	eng.OnLoad = func(p *starlark.Program, err error) {
		if err != nil {
			events = append(events, "error")
			return
		}
		events = append(events, fmt.Sprint(p.Version))
	}
	v := func(n int) []byte { return []byte(fmt.Sprintf("V = %d\ndef ksr_request_route():\n    pass\n", n)) }
	if _, err := eng.Load("a.star", v(1)); err != nil {
		t.Fatal(err)
	}
	p2, err := eng.Load("a.star", v(2))
	if err != nil || p2.Version != 2 {
		t.Fatalf("second load: %v %v", p2, err)
	}
	if _, err := eng.Load("a.star", []byte("def ksr_request_route(:\n")); err == nil {
		t.Fatal("broken script loaded")
	}
	if eng.Program() != p2 {
		t.Fatal("a failed load replaced the running version")
	}
	back, err := eng.Rollback()
	if err != nil || back.Version != 1 || eng.Program().Version != 1 {
		t.Fatalf("rollback: %v %v", back, err)
	}
	if _, err := eng.Rollback(); err == nil {
		t.Fatal("rolled back past the first version")
	}
	if got := strings.Join(events, ","); got != "1,2,error" {
		t.Fatalf("load events %s", got)
	}
	if p2.SHA256 == back.SHA256 || len(p2.SHA256) != 64 {
		t.Fatalf("sha256 %q / %q", p2.SHA256, back.SHA256)
	}
}

// Frozen globals and pooled threads let callbacks run concurrently (run with -race).
func TestConcurrentCallbacks(t *testing.T) {
	src := `
TABLE = {"OPTIONS": 200}
def ksr_request_route(msg):
    code = TABLE[msg.method]
    KSR.pv.sets("$var(x)", msg.call_id)
    if KSR.pv.get("$var(x)") != msg.call_id:
        fail("per-message $var leaked")
    KSR.sl.send_reply(code, "OK")
`
	h, err := routetest.NewHarness(node.RouteTest, "c.star", []byte(src), routetest.HarnessOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				m := &core.Msg{Env: h.Env, Req: options(t, g*1000+i), Proto: "udp", SrcIP: "192.0.2.10", SrcPort: 5070, Local: h.Env.Sockets()[0]}
				h.Engine.HandleRequest(m)
				if !m.Replied || m.ReplyCode != 200 {
					t.Errorf("request %d/%d: replied %v code %d", g, i, m.Replied, m.ReplyCode)
					return
				}
			}
		}(g)
	}
	wg.Wait()
}

func TestAPIList(t *testing.T) {
	eng := starlark.New(core.NewEnv(nil))
	seen := map[string]string{}
	for _, f := range eng.Funcs() {
		seen[f.Path()] = f.Func.ParamsString() + " -> " + f.Func.Ret.String()
	}
	for path, want := range map[string]string{
		"KSR.is_method":             "str -> bool",
		"KSR.sl.send_reply":         "int, str -> int",
		"KSR.tm.t_relay":            "none -> int",
		"KSR.pv.get":                "str -> xval",
		"KSR.hdr.append":            "str -> int",
		"KSR.rr.record_route":       "none -> int",
		"KSR.x.exit":                "none -> none",
		"KSR.maxfwd.process_maxfwd": "int -> int",
	} {
		if seen[path] != want {
			t.Errorf("%s: %q, want %q", path, seen[path], want)
		}
	}
}

// A request routed to kamd's own socket would come straight back: both
// forward() and t_relay() refuse it (-1) instead of looping.
func TestNoLoopToSelf(t *testing.T) {
	for _, body := range []string{
		`rc = KSR.forward_uri("sip:127.0.0.1:5060")`,
		"KSR.setdsturi(\"sip:127.0.0.1:5060\")\n    rc = KSR.tm.t_relay()",
	} {
		src := "def ksr_request_route():\n    " + body + "\n    if rc < 0:\n        KSR.sl.send_reply(482, \"Loop Detected\")\n"
		h, err := routetest.NewHarness(node.RouteTest, "l.star", []byte(src), routetest.HarnessOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r, err := h.Request(options(t, 1), "192.0.2.10:5070", "udp")
		h.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Sent) != 1 || !strings.HasPrefix(r.Sent[0].Text, "SIP/2.0 482 Loop Detected") {
			t.Fatalf("%s: sent %v", body, r.Sent)
		}
	}
}

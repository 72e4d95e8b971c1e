package starlark_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/starlark"
)

func TestKSRNameChecks(t *testing.T) {
	for _, tc := range []struct {
		name, src, want string
	}{
		{"unknown module", "def ksr_request_route():\n    if KSR.pikee.pike_check_req() < 0:\n        return\n", "s.star:2:12: KSR has no module pikee"},
		{"unknown module suggestion", "def ksr_request_route():\n    KSR.sll.sl_send_reply(200, \"OK\")\n", "(did you mean KSR.sl"},
		{"unknown function", "def ksr_request_route():\n    KSR.sl.sl_send_replyy(200, \"OK\")\n", "s.star:2:12: KSR.sl has no function sl_send_replyy (did you mean KSR.sl.sl_send_reply"},
		{"function in another module", "def ksr_request_route():\n    KSR.tm.sl_send_reply(200, \"OK\")\n", "KSR.tm has no function sl_send_reply (did you mean KSR.sl.sl_send_reply?)"},
		{"unknown core function", "def ksr_request_route():\n    KSR.infoo(\"x\")\n", "s.star:2:9: KSR has no function infoo (did you mean KSR.info"},
		{"module function at top", "def ksr_request_route():\n    KSR.t_relay()\n", "KSR has no function t_relay (did you mean KSR.tm.t_relay?)"},
		{"function used as module", "def ksr_request_route():\n    KSR.info.x(\"a\")\n", "KSR.info is a function, not a module"},
		{"x function", "def ksr_request_route():\n    KSR.x.exitt()\n", "KSR.x has no function exitt (did you mean KSR.x.exit"},
		{"modf native name", "def ksr_request_route():\n    KSR.x.modf(\"sl_send_replyy\", \"200\", \"OK\")\n", "s.star:2:16: KSR.x.modf: no module function \"sl_send_replyy\""},
		{"in a branch never taken", "def ksr_request_route():\n    if False:\n        KSR.pikee.pike_check_req()\n", "KSR has no module pikee"},
		{"in a helper not called", "def helper():\n    return KSR.nosuch.f()\ndef ksr_request_route():\n    pass\n", "s.star:2:16: KSR has no module nosuch"},
		{"alias of a module", "sl = KSR.sl\ndef ksr_request_route():\n    sl.sl_send_replyy(200, \"OK\")\n", "s.star:3:8: sl (KSR.sl) has no function sl_send_replyy (did you mean KSR.sl.sl_send_reply"},
		{"too few arguments", "def ksr_request_route():\n    KSR.sl.sl_send_reply(200)\n", "s.star:2:25: KSR.sl.sl_send_reply takes 2 arguments (int, str), got 1"},
		{"too many arguments via alias", "tm = KSR.tm\ndef ksr_request_route():\n    tm.t_relay(1)\n", "KSR.tm.t_relay takes 0 arguments (), got 1"},
		{"core function arguments", "def ksr_request_route():\n    KSR.info()\n", "KSR.info takes 1 arguments (str), got 0"},
		{"dns_server", "core_param(\"dns_server\", \"ns.example.com\")\ndef ksr_request_route():\n    pass\n", "core_param(\"dns_server\"): \"ns.example.com\": want an IP address"},
		{"mod_init needs a message", "def mod_init():\n    KSR.sl.sl_send_reply(200, \"OK\")\ndef ksr_request_route():\n    pass\n", "s.star:2:25: KSR.sl.sl_send_reply needs a SIP message: mod_init runs once per load"},
		{"mod_init PV of a message", "def mod_init():\n    KSR.pv.get(\"$ru\")\ndef ksr_request_route():\n    pass\n", "KSR.pv.get needs a SIP message"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eng := starlark.New(core.NewEnv(nil))
			_, err := eng.Load("s.star", []byte(tc.src))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("load error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestKSRNameChecksAccept(t *testing.T) {
	src := `
sl = KSR.sl
def helper(KSR):
    return KSR.anything.goes  # a parameter shadows the predeclared KSR
def ksr_request_route():
    KSR.info("x")
    KSR.x.modf("sl_send_reply", "200", "OK")
    sl.sl_send_reply(200, "OK")
    KSR.pv.sets("$var(a)", "b")
    KSR.hdr.append("X: y\r\n")
    KSR.x.exit()
    args = ("x",)
    KSR.info(*args)  # a count known only at run time is left to the call
`
	eng := starlark.New(core.NewEnv(nil))
	if _, err := eng.Load("s.star", []byte(src)); err != nil {
		t.Fatal(err)
	}
}

func TestKSRNameChecksLoadedFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "lib.star"), []byte("def f():\n    KSR.pikee.pike_check_req()\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	main := filepath.Join(dir, "main.star")
	if err := os.WriteFile(main, []byte("load(\"lib.star\", \"f\")\ndef ksr_request_route():\n    f()\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	eng := starlark.New(core.NewEnv(nil))
	_, err := eng.LoadFile(main)
	if err == nil || !strings.Contains(err.Error(), "lib.star:2:9: KSR has no module pikee") {
		t.Fatalf("got %v", err)
	}
}

func TestModInitLogs(t *testing.T) {
	var buf bytes.Buffer
	env := core.NewEnv(nil)
	env.Log = slog.New(slog.NewTextHandler(&buf, nil))
	eng := starlark.New(env)
	src := "def mod_init():\n    KSR.info(\"starting\")\n    KSR.xlog.xlog(\"L_INFO\", \"shv $shv(x)\")\n    KSR.pv.seti(\"$shv(x)\", 3)\ndef ksr_request_route():\n    pass\n"
	if _, err := eng.Load("s.star", []byte(src)); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "msg=starting") || !strings.Contains(out, "s.star:2:13") || !strings.Contains(out, `msg="shv 0"`) {
		t.Fatalf("log: %s", out)
	}
}

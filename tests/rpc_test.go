package tests

// End-to-end tests of kamd's JSON-RPC interface and kamctl (issue 3):
// kamctl against a running kamd for every group of methods, auth and roles,
// origins, malformed input over HTTP and websocket. Reload, rollback and
// events are in reload_test.go.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/kamgo/kamgo/rpc"
)

// rpcKamd is a kamd started with its RPC server on 127.0.0.1:RPCPort.
type rpcKamd struct {
	*Kamd
	RPCPort int
}

// WS is the websocket endpoint, HTTP the POST endpoint.
func (k *rpcKamd) WS() string   { return fmt.Sprintf("ws://127.0.0.1:%d/ws", k.RPCPort) }
func (k *rpcKamd) HTTP() string { return fmt.Sprintf("http://127.0.0.1:%d/RPC", k.RPCPort) }

// rpcKamdOpts configures startRPCKamd.
type rpcKamdOpts struct {
	// script returns the script text for the SIP port kamd gets.
	script func(sipPort int) string
	// noListen starts kamd without -l: the script's listen() calls decide.
	noListen bool
	// tokens, when set, is written to a token file passed with --rpc-tokens.
	tokens string
	// scriptDir, when set, is the script's directory relative to kamd's.
	scriptDir string
	args      []string
}

// cleanEnv is the environment without RPC tokens or kamctl settings, so
// that what a test configures is all kamd and kamctl see.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case rpc.EnvToken, rpc.EnvTokenRO, "KAMCTL_URL", "KAMCTL_TOKEN":
			continue
		}
		out = append(out, kv)
	}
	return out
}

// startRPCKamd starts kamd like startKamd does, but with --rpc on a free
// loopback port instead of --rpc off, and waits until both the SIP sockets
// and the RPC server listen.
func startRPCKamd(t testing.TB, o rpcKamdOpts) *rpcKamd {
	t.Helper()
	if kamctlBin == "" {
		t.Fatal("kamctl was not built (no main package in ./kamctl)")
	}
	dir := t.TempDir()
	return retryStart(t, func() (*rpcKamd, error) { return tryStartRPCKamd(t, dir, o) })
}

func tryStartRPCKamd(t testing.TB, dir string, o rpcKamdOpts) (*rpcKamd, error) {
	port := freePort(t)
	rport := freePort(t)
	for rport == port {
		rport = freePort(t)
	}
	k := &Kamd{t: t, Port: port, Dir: dir, log: &logBuffer{}, done: make(chan struct{})}
	k.Script = filepath.Join(dir, o.scriptDir, "route.star")
	if err := os.MkdirAll(filepath.Dir(k.Script), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(k.Script, []byte(o.script(port)), 0o644); err != nil {
		return nil, err
	}
	p, rp := strconv.Itoa(port), strconv.Itoa(rport)
	args := []string{"-f", k.Script, "--rpc", "127.0.0.1:" + rp, "--db", filepath.Join(dir, "kamgo.db")}
	if !o.noListen {
		args = append(args, "-l", "udp:127.0.0.1:"+p, "-l", "tcp:127.0.0.1:"+p)
	}
	if o.tokens != "" {
		tf := filepath.Join(dir, "rpc.tokens")
		if err := os.WriteFile(tf, []byte(o.tokens), 0o600); err != nil {
			return nil, err
		}
		args = append(args, "--rpc-tokens", tf)
	}
	args = append(args, o.args...)
	want := []string{"listening on udp:127.0.0.1:" + p, "listening on tcp:127.0.0.1:" + p, "rpc listening on 127.0.0.1:" + rp}
	if err := k.launch(args, cleanEnv(), want); err != nil {
		return nil, err
	}
	return &rpcKamd{Kamd: k, RPCPort: rport}, nil
}

// ctlResult is one kamctl run.
type ctlResult struct {
	Args           []string
	Stdout, Stderr string
	Code           int
}

func (r ctlResult) String() string {
	return fmt.Sprintf("kamctl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.Args, " "), r.Code, r.Stdout, r.Stderr)
}

// runKamctl runs kamctl with the clean environment plus env.
func runKamctl(t testing.TB, env []string, args ...string) ctlResult {
	t.Helper()
	cmd := exec.Command(kamctlBin, args...)
	cmd.Env = append(cleanEnv(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("kamctl %v did not exit within 60s", args)
	}
	r := ctlResult{Args: args, Stdout: o.String(), Stderr: e.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.Code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

// ctl runs kamctl against k's websocket endpoint.
func (k *rpcKamd) ctl(t testing.TB, args ...string) ctlResult {
	t.Helper()
	return runKamctl(t, nil, append([]string{"-s", k.WS()}, args...)...)
}

// ctlOK runs kamctl and fails the test unless it exits 0.
func (k *rpcKamd) ctlOK(t testing.TB, args ...string) string {
	t.Helper()
	r := k.ctl(t, args...)
	if r.Code != 0 {
		t.Fatalf("want exit 0: %s", r)
	}
	return r.Stdout
}

// ctlJSON runs kamctl --json, requires exit 0 and valid JSON, and returns it decoded
// (numbers as json.Number).
func (k *rpcKamd) ctlJSON(t testing.TB, args ...string) any {
	t.Helper()
	out := k.ctlOK(t, append([]string{"--json"}, args...)...)
	return decodeJSON(t, out)
}

func decodeJSON(t testing.TB, s string) any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("not valid JSON (%v):\n%s", err, s)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("trailing data after the JSON value:\n%s", s)
	}
	return v
}

func asObject(t testing.TB, v any, what string) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s: want a JSON object, got %T: %v", what, v, v)
	}
	return m
}

func asInt(t testing.TB, v any, what string) int64 {
	t.Helper()
	n, ok := v.(json.Number)
	if !ok {
		t.Fatalf("%s: want a number, got %T: %v", what, v, v)
	}
	i, err := n.Int64()
	if err != nil {
		t.Fatalf("%s: want an integer, got %s", what, n)
	}
	return i
}

// wantRPCError requires a kamctl failure: exit 1 and "error: CODE - " on stderr.
func wantRPCError(t testing.TB, r ctlResult, code int) {
	t.Helper()
	if r.Code != 1 {
		t.Errorf("want exit 1 (error answered by kamd): %s", r)
		return
	}
	if !strings.Contains(r.Stderr, fmt.Sprintf("error: %d - ", code)) {
		t.Errorf("stderr does not report error %d: %s", code, r)
	}
}

// replyScript answers OPTIONS and REGISTER with 200 and a marker, and relays
// MESSAGE statefully to uasPort (when not 0).
func replyScript(marker string, uasPort int) string {
	return fmt.Sprintf(`
def ksr_request_route():
    if KSR.is_method("MESSAGE"):
        KSR.setdsturi("sip:127.0.0.1:%d")
        if KSR.tm.t_relay() < 0:
            KSR.sl.sl_reply_error()
        return
    KSR.hdr.append_to_reply("X-Version: %s\r\n")
    KSR.sl.send_reply(200, "OK")
`, uasPort, marker)
}

// sipDo sends one request from u and waits for its final response without
// touching testing.T (safe in goroutines).
func sipDo(u *UAC, to *net.UDPAddr, s reqSpec, d time.Duration) (received, error) {
	if s.CallID == "" {
		s.CallID = randToken() + "@kamgo.test"
	}
	if _, err := u.conn.WriteToUDP(buildRequest(u.Local(), s), to); err != nil {
		return received{}, err
	}
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return received{}, fmt.Errorf("%s %s: no final response within %v", s.Method, s.CallID, d)
		}
		r, ok := u.Recv(left)
		if !ok {
			return received{}, fmt.Errorf("%s %s: no final response within %v", s.Method, s.CallID, d)
		}
		res := r.Res()
		if res == nil || res.CallID() == nil || string(*res.CallID()) != s.CallID || res.StatusCode < 200 {
			continue
		}
		return r, nil
	}
}

// marker sends an OPTIONS and returns the X-Version of its 200.
func marker(t testing.TB, u *UAC, k *Kamd) string {
	t.Helper()
	r := u.Do(k, reqSpec{Method: "OPTIONS", RURI: "sip:" + k.Addr()})
	if res := r.Res(); res.StatusCode != 200 {
		t.Fatalf("OPTIONS: got %d %s, want 200", res.StatusCode, res.Reason)
	}
	return strings.Join(headerLines(r.Raw, "X-Version"), ",")
}

// statsAll is stats.get_statistics all as numbers; every value must be one.
func statsAll(t testing.TB, k *rpcKamd, sel ...string) map[string]int64 {
	t.Helper()
	if len(sel) == 0 {
		sel = []string{"all"}
	}
	m := asObject(t, k.ctlJSON(t, append([]string{"stats.get_statistics"}, sel...)...), "stats.get_statistics")
	out := map[string]int64{}
	for name, v := range m {
		out[name] = asInt(t, v, "statistic "+name)
	}
	return out
}

// TestRPCKamctlMethods runs kamctl against a running kamd for every group
// of kamd's methods, readable and --json, and checks the error exits.
func TestRPCKamctlMethods(t *testing.T) {
	uas := newUAS(t)
	k := startRPCKamd(t, rpcKamdOpts{script: func(int) string { return replyScript("1", uas.Port()) }})
	uac := newUAC(t)

	t.Run("core.version", func(t *testing.T) {
		out := k.ctlOK(t, "core.version")
		if !regexp.MustCompile(`(?m)^\tversion: kamd \S+ \(kamgo\)$`).MatchString(out) || !strings.Contains(out, "\tgo: go") {
			t.Errorf("readable core.version lacks \"version: kamd X (kamgo)\" or go:\n%s", out)
		}
		m := asObject(t, k.ctlJSON(t, "core.version"), "core.version")
		if v, _ := m["version"].(string); !strings.HasPrefix(v, "kamd ") {
			t.Errorf("core.version version = %v", m["version"])
		}
	})
	t.Run("core.uptime", func(t *testing.T) {
		if out := k.ctlOK(t, "core.uptime"); !strings.Contains(out, "\tuptime: ") {
			t.Errorf("readable core.uptime:\n%s", out)
		}
		m := asObject(t, k.ctlJSON(t, "core.uptime"), "core.uptime")
		if up := asInt(t, m["uptime"], "uptime"); up < 0 {
			t.Errorf("uptime %d < 0", up)
		}
		for _, f := range []string{"now", "up_since"} {
			s, _ := m[f].(string)
			if _, err := time.Parse(time.RFC3339, s); err != nil {
				t.Errorf("core.uptime %s = %v: not RFC 3339", f, m[f])
			}
		}
	})
	t.Run("core.info", func(t *testing.T) {
		if out := k.ctlOK(t, "core.info"); !strings.Contains(out, "\tscript: "+k.Script) {
			t.Errorf("readable core.info does not name the script %s:\n%s", k.Script, out)
		}
		m := asObject(t, k.ctlJSON(t, "core.info"), "core.info")
		if pid := asInt(t, m["pid"], "pid"); pid != int64(k.cmd.Process.Pid) {
			t.Errorf("core.info pid %d, kamd's pid is %d", pid, k.cmd.Process.Pid)
		}
		if m["script"] != k.Script || asInt(t, m["script_version"], "script_version") != 1 {
			t.Errorf("core.info script %v version %v, want %s version 1", m["script"], m["script_version"], k.Script)
		}
	})
	t.Run("core.ps", func(t *testing.T) {
		out := k.ctlOK(t, "core.ps")
		for _, want := range []string{"udp receiver udp:127.0.0.1:" + strconv.Itoa(k.Port), "tcp listener tcp:127.0.0.1:" + strconv.Itoa(k.Port),
			"SIP worker 0", "rpc server 127.0.0.1:" + strconv.Itoa(k.RPCPort)} {
			if !strings.Contains(out, want) {
				t.Errorf("core.ps does not show %q:\n%s", want, out)
			}
		}
		// Timers are runtime timers, not a goroutine of their own: core.ps
		// lists only what runs.
		if strings.Contains(out, "timer") {
			t.Errorf("core.ps lists a timers process that does not exist:\n%s", out)
		}
		if _, ok := k.ctlJSON(t, "core.ps").([]any); !ok {
			t.Errorf("core.ps --json is not an array")
		}
	})
	t.Run("core.sockets_list", func(t *testing.T) {
		out := k.ctlOK(t, "core.sockets_list")
		if !strings.Contains(out, "port: "+strconv.Itoa(k.Port)) || !strings.Contains(out, "proto: udp") || !strings.Contains(out, "proto: tcp") {
			t.Errorf("readable core.sockets_list does not show the SIP sockets on port %d:\n%s", k.Port, out)
		}
		m := asObject(t, k.ctlJSON(t, "core.sockets_list"), "core.sockets_list")
		socks, _ := m["socket"].([]any)
		got := map[string]bool{}
		for _, s := range socks {
			so := asObject(t, s, "socket")
			got[fmt.Sprintf("%v:%v:%d", so["proto"], so["address"], asInt(t, so["port"], "port"))] = true
		}
		for _, want := range []string{"udp:127.0.0.1:" + strconv.Itoa(k.Port), "tcp:127.0.0.1:" + strconv.Itoa(k.Port)} {
			if !got[want] {
				t.Errorf("core.sockets_list lacks %s: %v", want, got)
			}
		}
	})
	t.Run("core.mem", func(t *testing.T) {
		k.ctlOK(t, "core.mem")
		m := asObject(t, k.ctlJSON(t, "core.mem"), "core.mem")
		for _, f := range []string{"heap_alloc", "heap_sys", "heap_objects", "sys", "goroutines"} {
			if asInt(t, m[f], f) <= 0 {
				t.Errorf("core.mem %s = %v, want > 0", f, m[f])
			}
		}
		asInt(t, m["num_gc"], "num_gc")
	})
	t.Run("stats", func(t *testing.T) {
		before := statsAll(t, k)
		if len(before) == 0 {
			t.Fatal("stats.get_statistics all is empty")
		}
		if res := uac.Do(k.Kamd, reqSpec{Method: "REGISTER", RURI: "sip:" + k.Addr()}).Res(); res.StatusCode != 200 {
			t.Fatalf("REGISTER: %d %s", res.StatusCode, res.Reason)
		}
		if res := uac.Do(k.Kamd, reqSpec{Method: "MESSAGE", RURI: "sip:bob@kamgo.test"}).Res(); res.StatusCode != 200 {
			t.Fatalf("MESSAGE relayed to the UAS: %d %s", res.StatusCode, res.Reason)
		}
		after := statsAll(t, k)
		if after["core:rcv_requests"] < before["core:rcv_requests"]+2 {
			t.Errorf("core:rcv_requests %d before, %d after a REGISTER and a MESSAGE", before["core:rcv_requests"], after["core:rcv_requests"])
		}
		if out := k.ctlOK(t, "stats.get_statistics", "all"); !regexp.MustCompile(`(?m)^\tcore:rcv_requests: \d+$`).MatchString(out) {
			t.Errorf("readable stats.get_statistics all lacks core:rcv_requests:\n%s", out)
		}
		sl := statsAll(t, k, "sl:")
		if len(sl) == 0 {
			t.Fatal("stats.get_statistics sl: is empty")
		}
		for name := range sl {
			if !strings.HasPrefix(name, "sl:") {
				t.Errorf("stats.get_statistics sl: returned %s", name)
			}
		}
		if sl["sl:200_replies"] < 1 {
			t.Errorf("sl:200_replies = %d after a 200 to REGISTER", sl["sl:200_replies"])
		}
		wantRPCError(t, k.ctl(t, "stats.get_statistics", "nosuchgroup:"), 404)

		tm := asObject(t, k.ctlJSON(t, "tm.stats"), "tm.stats")
		if asInt(t, tm["total"], "tm total") < 1 || asInt(t, tm["2xx"], "tm 2xx") < 1 {
			t.Errorf("tm.stats after one relayed MESSAGE answered 200: %v", tm)
		}
		if out := k.ctlOK(t, "tm.stats"); !strings.Contains(out, "\ttotal: ") {
			t.Errorf("readable tm.stats:\n%s", out)
		}
		sls := asObject(t, k.ctlJSON(t, "sl.stats"), "sl.stats")
		if asInt(t, sls["200"], "sl.stats 200") < 1 {
			t.Errorf("sl.stats: %v", sls)
		}
		k.ctlOK(t, "sl.stats")

		res := asObject(t, k.ctlJSON(t, "stats.reset_statistics", "all"), "stats.reset_statistics")
		if asInt(t, res["reset"], "reset") < 1 {
			t.Errorf("stats.reset_statistics all: %v", res)
		}
		for name, v := range statsAll(t, k) {
			if v != 0 && name != "tm:current" {
				t.Errorf("after stats.reset_statistics all, %s = %d", name, v)
			}
		}
		wantRPCError(t, k.ctl(t, "stats.reset_statistics"), -32602)
	})
	t.Run("app_starlark", func(t *testing.T) {
		src, err := os.ReadFile(k.Script)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(src)
		st := asObject(t, k.ctlJSON(t, "app_starlark.status"), "app_starlark.status")
		if asInt(t, st["version"], "version") != 1 || st["path"] != k.Script || st["sha256"] != hex.EncodeToString(sum[:]) {
			t.Errorf("app_starlark.status = %v; want version 1, path %s, sha256 %x", st, k.Script, sum)
		}
		if s, _ := st["loaded_at"].(string); s == "" {
			t.Errorf("app_starlark.status has no loaded_at")
		} else if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			t.Errorf("loaded_at %q: %v", s, err)
		}
		if prev, ok := st["previous"].([]any); !ok || len(prev) != 0 {
			t.Errorf("app_starlark.status previous = %v, want [] before any reload", st["previous"])
		}
		if out := k.ctlOK(t, "app_starlark.status"); !strings.Contains(out, "\tversion: 1") || !strings.Contains(out, "\tpath: "+k.Script) {
			t.Errorf("readable app_starlark.status:\n%s", out)
		}

		al := asObject(t, k.ctlJSON(t, "app_starlark.api_list"), "app_starlark.api_list")
		ms, _ := al["methods"].([]any)
		if int64(len(ms)) != asInt(t, al["msize"], "msize") || len(ms) < 50 {
			t.Errorf("api_list: msize %v, %d methods", al["msize"], len(ms))
		}
		params := map[string]string{}
		for _, e := range ms {
			f := asObject(t, asObject(t, e, "api_list entry")["func"], "func")
			params[fmt.Sprintf("%v.%v", f["module"], f["name"])] = fmt.Sprint(f["params"])
		}
		for fn, want := range map[string]string{"tm.t_relay": "none", "sl.send_reply": "int, str", "hdr.append_to_reply": "str"} {
			if got, ok := params[fn]; !ok || got != want {
				t.Errorf("api_list %s params = %q (listed: %v), want %q", fn, got, ok, want)
			}
		}
		// The PVs come from the same module tables, each with its module.
		pvs := map[string]string{}
		pvList, _ := al["pvs"].([]any)
		for _, e := range pvList {
			p := asObject(t, e, "api_list pv")
			pvs[fmt.Sprint(p["name"])] = fmt.Sprint(p["module"])
		}
		for pv, mod := range map[string]string{"$ru": "", "$sht(name)": "htable", "$ulc(name)": "registrar", "$au": "auth"} {
			if got, ok := pvs[pv]; !ok || got != mod {
				t.Errorf("api_list pvs %s: module %q (listed: %v), want %q", pv, got, ok, mod)
			}
		}
		if out := k.ctlOK(t, "app_starlark.api_list"); !strings.Contains(out, "name: t_relay") {
			t.Errorf("readable api_list lacks t_relay")
		}
	})
	t.Run("ls and help", func(t *testing.T) {
		out := k.ctlOK(t, "ls")
		lines := map[string]bool{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			lines[l] = true
		}
		want := []string{"core.version", "core.uptime", "core.info", "core.ps", "core.sockets_list", "core.mem",
			"stats.get_statistics", "stats.reset_statistics", "tm.stats", "sl.stats",
			"app_starlark.reload", "app_starlark.rollback", "app_starlark.status", "app_starlark.api_list",
			"system.listMethods", "system.methodHelp", "system.methodSignature", "events.subscribe", "events.unsubscribe"}
		for _, m := range want {
			if !lines[m] {
				t.Errorf("kamctl ls does not list %s:\n%s", m, out)
			}
		}
		arr, ok := k.ctlJSON(t, "system.listMethods").([]any)
		if !ok || len(arr) != len(lines) {
			t.Errorf("system.listMethods --json: %d names, kamctl ls printed %d", len(arr), len(lines))
		}
		if arr2, ok := k.ctlJSON(t, "ls").([]any); !ok || len(arr2) != len(arr) {
			t.Errorf("kamctl --json ls is not the method array")
		}
		h := k.ctlOK(t, "help", "app_starlark.reload")
		for _, w := range []string{"app_starlark.reload - ", "apply_live", "(bool)", "access: admin", "signature: app_starlark.reload(bool)"} {
			if !strings.Contains(h, w) {
				t.Errorf("kamctl help app_starlark.reload lacks %q:\n%s", w, h)
			}
		}
		hj := asObject(t, k.ctlJSON(t, "help", "stats.get_statistics"), "help --json")
		if asObject(t, hj["help"], "help")["read_only"] != true {
			t.Errorf("help stats.get_statistics: not read-only: %v", hj)
		}
		wantRPCError(t, k.ctl(t, "help", "no.such_method"), 404) // Kamailio: "command X not found"
	})
	t.Run("errors", func(t *testing.T) {
		wantRPCError(t, k.ctl(t, "no.such_method"), -32601)
		wantRPCError(t, k.ctl(t, "--json", "no.such_method"), -32601)
		r := k.ctl(t, "app_starlark.reload", "s:maybe")
		wantRPCError(t, r, -32602)
		if !strings.Contains(r.Stderr, "apply_live") {
			t.Errorf("wrong param type error does not name the param: %s", r)
		}
		wantRPCError(t, k.ctl(t, "core.version", "1"), -32602)
		wantRPCError(t, k.ctl(t, "stats.get_statistics", `j:{"a":1}`), -32602)
		// A transport error (nothing listens there) is exit 2.
		if r := runKamctl(t, nil, "-s", fmt.Sprintf("ws://127.0.0.1:%d/ws", freePort(t)), "core.version"); r.Code != 2 {
			t.Errorf("kamctl against a closed port: want exit 2: %s", r)
		}
		// The same method over HTTP POST.
		r = runKamctl(t, nil, "-s", k.HTTP(), "--json", "core.version")
		if r.Code != 0 {
			t.Fatalf("kamctl over HTTP: %s", r)
		}
		decodeJSON(t, r.Stdout)
		wantRPCError(t, runKamctl(t, nil, "-s", k.HTTP(), "no.such_method"), -32601)
		if st := asObject(t, k.ctlJSON(t, "app_starlark.status"), "status"); asInt(t, st["version"], "version") != 1 {
			t.Errorf("a refused reload changed the script version: %v", st)
		}
	})
	k.Alive(t)
}

// postRPC POSTs body to /RPC and returns the HTTP status and the decoded body.
func postRPC(t testing.TB, url, token string, body []byte, hdr ...string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if len(bytes.TrimSpace(b)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("POST %s: HTTP %d with a body that is not a JSON object: %q", url, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, m
}

// rpcErrCode returns error.code of a JSON-RPC response, or 0.
func rpcErrCode(t testing.TB, m map[string]any) int64 {
	t.Helper()
	e, ok := m["error"].(map[string]any)
	if !ok {
		return 0
	}
	return asInt(t, e["code"], "error.code")
}

func call(method string, params ...any) []byte {
	if params == nil {
		params = []any{}
	}
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": method, "params": params, "id": 7})
	return b
}

// TestRPCAuth: with a token file, no token is refused, a read-only token
// reads statistics but cannot reload, an admin token can.
func TestRPCAuth(t *testing.T) {
	const ro, admin = "ro-5b4a39281706f5e4d3c2b1a0f9e8d7c6", "admin-9c1f0e7e3a3b4a5f8e2d1c0b9a8f7e6d"
	k := startRPCKamd(t, rpcKamdOpts{
		script: func(int) string { return markerScript("1") },
		tokens: "# test tokens\nro " + ro + "\nadmin " + admin + "\n",
	})
	if strings.Contains(strings.Join(k.cmd.Args, " "), ro) {
		t.Fatal("a token is on kamd's command line")
	}
	dir := t.TempDir()
	roFile, adminFile := filepath.Join(dir, "ro.token"), filepath.Join(dir, "admin.token")
	if err := os.WriteFile(roFile, []byte(ro+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// kamd's "ROLE TOKEN" line format works for kamctl too.
	if err := os.WriteFile(adminFile, []byte("admin "+admin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("kamctl", func(t *testing.T) {
		for _, url := range []string{k.WS(), k.HTTP()} {
			wantRPCError(t, runKamctl(t, nil, "-s", url, "stats.get_statistics", "all"), 401)
			wantRPCError(t, runKamctl(t, []string{"KAMCTL_TOKEN=wrong-token"}, "-s", url, "core.version"), 401)
			if r := runKamctl(t, nil, "-s", url, "--token-file", roFile, "--json", "stats.get_statistics", "all"); r.Code != 0 {
				t.Errorf("read-only token, stats.get_statistics: %s", r)
			} else {
				asObject(t, decodeJSON(t, r.Stdout), "stats")
			}
			wantRPCError(t, runKamctl(t, nil, "-s", url, "--token-file", roFile, "app_starlark.reload"), 403)
			wantRPCError(t, runKamctl(t, []string{"KAMCTL_TOKEN=" + ro}, "-s", url, "stats.reset_statistics", "all"), 403)
			if r := runKamctl(t, nil, "-s", url, "--token-file", adminFile, "--json", "app_starlark.reload"); r.Code != 0 {
				t.Errorf("admin token, app_starlark.reload: %s", r)
			}
			if r := runKamctl(t, []string{"KAMCTL_TOKEN=" + admin}, "-s", url, "stats.reset_statistics", "all"); r.Code != 0 {
				t.Errorf("admin token from $KAMCTL_TOKEN, stats.reset_statistics: %s", r)
			}
		}
	})
	t.Run("http", func(t *testing.T) {
		if code, m := postRPC(t, k.HTTP(), "", call("core.version")); code != http.StatusUnauthorized || rpcErrCode(t, m) != 401 {
			t.Errorf("no token: HTTP %d %v, want 401 with error 401", code, m)
		}
		if code, m := postRPC(t, k.HTTP(), "nope", call("core.version")); code != http.StatusUnauthorized || rpcErrCode(t, m) != 401 {
			t.Errorf("wrong token: HTTP %d %v, want 401", code, m)
		}
		if code, m := postRPC(t, k.HTTP(), ro, call("stats.get_statistics", "all")); code != 200 || m["result"] == nil {
			t.Errorf("ro token, stats.get_statistics: HTTP %d %v", code, m)
		}
		if code, m := postRPC(t, k.HTTP(), ro, call("app_starlark.reload")); code != http.StatusForbidden || rpcErrCode(t, m) != 403 {
			t.Errorf("ro token, app_starlark.reload: HTTP %d %v, want 403", code, m)
		}
		if code, m := postRPC(t, k.HTTP(), admin, call("app_starlark.reload")); code != 200 || m["result"] == nil {
			t.Errorf("admin token, app_starlark.reload: HTTP %d %v", code, m)
		}
	})
	t.Run("websocket", func(t *testing.T) {
		_, err := rpc.Dial(k.WS(), "")
		var e *rpc.Error
		if !errors.As(err, &e) || e.Code != 401 {
			t.Errorf("websocket without token: %v, want 401", err)
		}
		c, err := rpc.Dial(k.WS(), ro)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := c.Call(ctx, "stats.get_statistics", []any{"all"}); err != nil {
			t.Errorf("ro over websocket, stats: %v", err)
		}
		if _, err := c.Call(ctx, "app_starlark.reload", nil); !errors.As(err, &e) || e.Code != 403 {
			t.Errorf("ro over websocket, reload: %v, want 403", err)
		}
	})
	st := asObject(t, decodeJSON(t, runKamctl(t, []string{"KAMCTL_TOKEN=" + ro}, "-s", k.WS(), "--json", "app_starlark.status").Stdout), "status")
	if v := asInt(t, st["version"], "version"); v != 4 {
		t.Errorf("after three admin reloads (kamctl over ws and http, a POST) the version is %d, want 4 (read-only reloads must not count)", v)
	}
	k.Alive(t)
}

// TestRPCRefusesNonLoopbackWithoutToken: --rpc 0.0.0.0:P without any token
// makes kamd refuse to start with a clear message.
func TestRPCRefusesNonLoopbackWithoutToken(t *testing.T) {
	dir := t.TempDir()
	p := strconv.Itoa(freePort(t))
	script := filepath.Join(dir, "route.star")
	if err := os.WriteFile(script, []byte(markerScript("1")), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(kamdBin, "-f", script, "-l", "udp:127.0.0.1:"+p, "-l", "tcp:127.0.0.1:"+p,
		"--rpc", "0.0.0.0:"+strconv.Itoa(freePort(t)), "--db", filepath.Join(dir, "kamgo.db"))
	cmd.Env = cleanEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Fatalf("kamd --rpc 0.0.0.0:P without tokens: %v, want a non-zero exit\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("kamd --rpc 0.0.0.0:P without tokens kept running:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "non-loopback") || !strings.Contains(out.String(), "token") {
		t.Errorf("kamd's refusal does not say why (non-loopback address without a token):\n%s", out.String())
	}
}

// TestRPCWebsocketOrigin: a browser websocket from another origin is
// refused with 403; from the same origin it works.
func TestRPCWebsocketOrigin(t *testing.T) {
	k := startRPCKamd(t, rpcKamdOpts{script: func(int) string { return markerScript("1") }})
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.Dial(k.WS(), http.Header{"Origin": {"http://evil.example"}})
	if err == nil {
		ws.Close()
		t.Fatal("cross-origin websocket handshake succeeded")
	}
	if resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin handshake: %v (response %v), want HTTP 403", err, resp)
	}
	if code, _ := postRPC(t, k.HTTP(), "", call("core.version"), "Origin", "http://evil.example"); code != http.StatusForbidden {
		t.Errorf("cross-origin POST: HTTP %d, want 403", code)
	}
	ws, _, err = d.Dial(k.WS(), http.Header{"Origin": {fmt.Sprintf("http://127.0.0.1:%d", k.RPCPort)}})
	if err != nil {
		t.Fatalf("same-origin websocket refused: %v", err)
	}
	defer ws.Close()
	m := wsCall(t, ws, call("core.version"))
	if m["result"] == nil {
		t.Errorf("core.version over a same-origin websocket: %v", m)
	}
	k.Alive(t)
}

// wsCall writes one text frame and reads one response.
func wsCall(t testing.TB, ws *websocket.Conn, frame []byte) map[string]any {
	t.Helper()
	ws.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, frame); err != nil {
		t.Fatalf("websocket write: %v", err)
	}
	ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("websocket read after %q: %v", truncateStr(string(frame), 80), err)
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("websocket response is not a JSON object: %q", data)
		}
		// Event notifications (no id, method "event") may come first on a
		// subscribed connection: the response is the next message with an id.
		if _, isEvent := m["method"]; isEvent && m["id"] == nil {
			continue
		}
		return m
	}
}

func truncateStr(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// TestRPCMalformedInput: malformed JSON, invalid requests, unknown methods,
// wrong param types and oversized frames over HTTP POST and websocket each
// get their JSON-RPC error, and kamd keeps serving.
func TestRPCMalformedInput(t *testing.T) {
	k := startRPCKamd(t, rpcKamdOpts{script: func(int) string { return markerScript("1") }})
	cases := []struct {
		name   string
		body   []byte
		code   int64
		status int
	}{
		{"malformed JSON", []byte(`{"jsonrpc":"2.0","method":`), -32700, 400},
		{"not JSON at all", []byte("\x00\xffhello"), -32700, 400},
		{"invalid request", []byte(`{"jsonrpc":"1.0","method":"core.version","id":1}`), -32600, 400},
		{"method not a string", []byte(`{"jsonrpc":"2.0","method":5,"id":1}`), -32600, 400},
		{"unknown method", call("no.such_method"), -32601, 404},
		{"wrong param type", call("app_starlark.reload", "maybe"), -32602, 400},
		{"wrong param type (object)", call("stats.get_statistics", map[string]any{"a": 1}), -32602, 400},
		{"too many params", call("core.version", 1), -32602, 400},
		{"unknown named param", []byte(`{"jsonrpc":"2.0","method":"app_starlark.reload","params":{"nosuch":true},"id":1}`), -32602, 400},
	}
	t.Run("http", func(t *testing.T) {
		for _, c := range cases {
			status, m := postRPC(t, k.HTTP(), "", c.body)
			if got := rpcErrCode(t, m); got != c.code || status != c.status {
				t.Errorf("%s: HTTP %d error %d (%v), want HTTP %d error %d", c.name, status, got, m, c.status, c.code)
			}
		}
		big := append([]byte(`{"jsonrpc":"2.0","method":"core.version","params":["`), bytes.Repeat([]byte("x"), 1<<20+16)...)
		big = append(big, `"],"id":1}`...)
		if status, _ := postRPC(t, k.HTTP(), "", big); status != http.StatusRequestEntityTooLarge {
			t.Errorf("POST of %d bytes: HTTP %d, want 413", len(big), status)
		}
		if status, m := postRPC(t, k.HTTP(), "", call("core.version")); status != 200 || m["result"] == nil {
			t.Errorf("after the bad POSTs: HTTP %d %v", status, m)
		}
	})
	t.Run("websocket", func(t *testing.T) {
		ws, _, err := websocket.DefaultDialer.Dial(k.WS(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		for _, c := range cases {
			if !utf8.Valid(c.body) {
				continue // a text frame must be UTF-8: checked below (1007)
			}
			m := wsCall(t, ws, c.body)
			if got := rpcErrCode(t, m); got != c.code {
				t.Errorf("%s over websocket: error %d (%v), want %d", c.name, got, m, c.code)
			}
		}
		// RFC 6455 8.1: a text frame that is not UTF-8 closes with 1007.
		if bad, _, err := websocket.DefaultDialer.Dial(k.WS(), nil); err == nil {
			bad.WriteMessage(websocket.TextMessage, []byte("\x00\xffhello"))
			bad.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, data, err := bad.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseInvalidFramePayloadData) {
				t.Errorf("invalid UTF-8 text frame: read %q, %v; want close 1007", data, err)
			}
			bad.Close()
		}
		// The connection survived all of them.
		if m := wsCall(t, ws, call("core.version")); m["result"] == nil {
			t.Errorf("core.version after the bad frames: %v", m)
		}
		big := append([]byte(`{"jsonrpc":"2.0","method":"core.version","params":["`), bytes.Repeat([]byte("x"), 1<<20+16)...)
		big = append(big, `"],"id":1}`...)
		ws.SetWriteDeadline(time.Now().Add(30 * time.Second))
		_ = ws.WriteMessage(websocket.TextMessage, big) // the server may close before reading it all
		ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, data, err := ws.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
			t.Errorf("frame of %d bytes: read %q, %v; want close 1009", len(big), data, err)
		}
		// kamd still serves new connections.
		ws2, _, err := websocket.DefaultDialer.Dial(k.WS(), nil)
		if err != nil {
			t.Fatalf("new websocket after an oversized frame: %v", err)
		}
		defer ws2.Close()
		if m := wsCall(t, ws2, call("core.version")); m["result"] == nil {
			t.Errorf("core.version on a new connection: %v", m)
		}
	})
	uac := newUAC(t)
	if v := marker(t, uac, k.Kamd); v != "1" {
		t.Errorf("SIP after malformed RPC input: X-Version %q", v)
	}
	k.Alive(t)
}

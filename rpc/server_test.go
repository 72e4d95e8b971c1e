package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// want describes one expected response: a result (JSON) or an error code, with the id echoed.
type want struct {
	id     string // raw JSON id expected
	result string // JSON, compared semantically
	code   int    // error code when result == ""
	msg    string // substring of the error message (optional)
}

var protocolCases = []struct {
	name string
	in   string
	out  []want // nil: no response at all; len>1 or batch: batch response
	bat  bool   // response is a batch
}{
	{"positional", `{"jsonrpc":"2.0","method":"test.echo","params":["x",2],"id":1}`, []want{{id: "1", result: `{"a":"x","b":2}`}}, false},
	{"named", `{"jsonrpc":"2.0","method":"test.echo","params":{"b":3,"a":"y"},"id":2}`, []want{{id: "2", result: `{"a":"y","b":3}`}}, false},
	{"optional omitted", `{"jsonrpc":"2.0","method":"test.echo","params":["x"],"id":3}`, []want{{id: "3", result: `{"a":"x","b":0}`}}, false},
	{"named optional null", `{"jsonrpc":"2.0","method":"test.echo","params":{"a":"z","b":null},"id":3}`, []want{{id: "3", result: `{"a":"z","b":0}`}}, false},
	{"number as string param", `{"jsonrpc":"2.0","method":"test.echo","params":[1001,"7"],"id":4}`, []want{{id: "4", result: `{"a":"1001","b":7}`}}, false},
	{"variadic", `{"jsonrpc":"2.0","method":"test.sum","params":[1,2,3],"id":5}`, []want{{id: "5", result: `{"sum":6}`}}, false},
	{"variadic named", `{"jsonrpc":"2.0","method":"test.sum","params":{"n":[4,5]},"id":5}`, []want{{id: "5", result: `{"sum":9}`}}, false},
	{"bool lenient", `{"jsonrpc":"2.0","method":"test.flag","params":["yes"],"id":6}`, []want{{id: "6", result: `{"on":true}`}}, false},
	{"void result", `{"jsonrpc":"2.0","method":"test.void","id":7}`, []want{{id: "7", result: `{}`}}, false},
	{"nil slice result", `{"jsonrpc":"2.0","method":"test.empty","id":7}`, []want{{id: "7", result: `[]`}}, false},
	{"builtin listMethods", `{"jsonrpc":"2.0","method":"system.listMethods","id":8}`, []want{{id: "8", result: `["events.subscribe","events.unsubscribe","system.listMethods","system.methodHelp","system.methodSignature","test.admin","test.echo","test.empty","test.flag","test.notfound","test.panic","test.plainerr","test.scalar","test.sum","test.void"]`}}, false},
	{"builtin methodSignature", `{"jsonrpc":"2.0","method":"system.methodSignature","params":["test.echo"],"id":8}`, []want{{id: "8", result: `[["{a, b}","string"],["{a, b}","string","int"]]`}}, false},

	// ids
	{"id string", `{"jsonrpc":"2.0","method":"test.void","id":"abc"}`, []want{{id: `"abc"`, result: `{}`}}, false},
	{"id float", `{"jsonrpc":"2.0","method":"test.void","id":1.5}`, []want{{id: `1.5`, result: `{}`}}, false},
	{"id big int raw", `{"jsonrpc":"2.0","method":"test.void","id":12345678901234567890}`, []want{{id: `12345678901234567890`, result: `{}`}}, false},
	{"id null", `{"jsonrpc":"2.0","method":"test.void","id":null}`, []want{{id: `null`, result: `{}`}}, false},
	{"id object", `{"jsonrpc":"2.0","method":"test.void","id":{"k":[1]}}`, []want{{id: `{"k":[1]}`, result: `{}`}}, false},

	// notifications
	{"notification", `{"jsonrpc":"2.0","method":"test.echo","params":["x"]}`, nil, false},
	{"notification unknown method", `{"jsonrpc":"2.0","method":"nope"}`, nil, false},
	{"notification bad params", `{"jsonrpc":"2.0","method":"test.echo","params":[{}]}`, nil, false},

	// batches
	{"batch", `[{"jsonrpc":"2.0","method":"test.echo","params":["a"],"id":1},{"jsonrpc":"2.0","method":"test.void"},{"jsonrpc":"2.0","method":"nope","id":"x"},1]`,
		[]want{{id: "1", result: `{"a":"a","b":0}`}, {id: `"x"`, code: CodeMethodNotFound}, {id: "null", code: CodeInvalidRequest}}, true},
	{"batch of notifications", `[{"jsonrpc":"2.0","method":"test.void"},{"jsonrpc":"2.0","method":"test.void"}]`, nil, false},
	{"empty batch", `[]`, []want{{id: "null", code: CodeInvalidRequest}}, false},
	{"batch of junk", `[1,"a"]`, []want{{id: "null", code: CodeInvalidRequest}, {id: "null", code: CodeInvalidRequest}}, true},

	// standard errors
	{"parse error", `{"jsonrpc":"2.0","method":`, []want{{id: "null", code: CodeParseError}}, false},
	{"parse error garbage", `hello`, []want{{id: "null", code: CodeParseError}}, false},
	{"parse error batch", `[{"jsonrpc":"2.0","method":"test.void","id":1},`, []want{{id: "null", code: CodeParseError}}, false},
	{"empty body", ``, []want{{id: "null", code: CodeParseError}}, false},
	{"scalar request", `42`, []want{{id: "null", code: CodeInvalidRequest}}, false},
	{"wrong version", `{"jsonrpc":"1.0","method":"test.void","id":9}`, []want{{id: "9", code: CodeInvalidRequest}}, false},
	{"no version", `{"method":"test.void","id":9}`, []want{{id: "9", code: CodeInvalidRequest}}, false},
	{"method not string", `{"jsonrpc":"2.0","method":1,"params":"bar"}`, []want{{id: "null", code: CodeInvalidRequest}}, false},
	{"params scalar", `{"jsonrpc":"2.0","method":"test.void","params":"bar","id":10}`, []want{{id: "10", code: CodeInvalidRequest}}, false},
	{"unknown method", `{"jsonrpc":"2.0","method":"no.such","id":11}`, []want{{id: "11", code: CodeMethodNotFound, msg: "Method not found"}}, false},
	{"wrong type int", `{"jsonrpc":"2.0","method":"test.echo","params":["x","seven"],"id":12}`, []want{{id: "12", code: CodeInvalidParams, msg: "b: expected int"}}, false},
	{"wrong type object", `{"jsonrpc":"2.0","method":"test.echo","params":[{"o":1}],"id":12}`, []want{{id: "12", code: CodeInvalidParams}}, false},
	{"wrong type float for int", `{"jsonrpc":"2.0","method":"test.echo","params":["x",1.5],"id":12}`, []want{{id: "12", code: CodeInvalidParams}}, false},
	{"wrong type bool", `{"jsonrpc":"2.0","method":"test.flag","params":["maybe"],"id":12}`, []want{{id: "12", code: CodeInvalidParams}}, false},
	{"missing param", `{"jsonrpc":"2.0","method":"test.echo","params":[],"id":13}`, []want{{id: "13", code: CodeInvalidParams, msg: "a: missing"}}, false},
	{"too many params", `{"jsonrpc":"2.0","method":"test.echo","params":["a",1,2],"id":14}`, []want{{id: "14", code: CodeInvalidParams}}, false},
	{"unknown named param", `{"jsonrpc":"2.0","method":"test.echo","params":{"a":"x","zz":1},"id":15}`, []want{{id: "15", code: CodeInvalidParams}}, false},
	{"variadic needs one", `{"jsonrpc":"2.0","method":"test.sum","params":[],"id":16}`, []want{{id: "16", code: CodeInvalidParams}}, false},
	{"panic", `{"jsonrpc":"2.0","method":"test.panic","id":17}`, []want{{id: "17", code: CodeInternalError}}, false},
	{"scalar result refused", `{"jsonrpc":"2.0","method":"test.scalar","id":18}`, []want{{id: "18", code: CodeInternalError}}, false},
	{"application 404", `{"jsonrpc":"2.0","method":"test.notfound","id":19}`, []want{{id: "19", code: 404, msg: "Record not found"}}, false},
	{"plain error is 500", `{"jsonrpc":"2.0","method":"test.plainerr","id":20}`, []want{{id: "20", code: 500, msg: "boom"}}, false},
	{"methodHelp unknown", `{"jsonrpc":"2.0","method":"system.methodHelp","params":["x.y"],"id":21}`, []want{{id: "21", code: 404}}, false},
}

func checkWant(t *testing.T, raw json.RawMessage, w want) {
	t.Helper()
	m := checkResponse(t, raw)
	if !jsonEqual(string(m["id"]), w.id) {
		t.Errorf("id = %s, want %s", m["id"], w.id)
	}
	if w.result != "" {
		if !jsonEqual(string(m["result"]), w.result) {
			t.Errorf("result = %s (error %s), want %s", m["result"], m["error"], w.result)
		}
		return
	}
	var e Error
	if err := json.Unmarshal(m["error"], &e); err != nil {
		t.Fatalf("error member %s: %v (result %s)", m["error"], err, m["result"])
	}
	if e.Code != w.code {
		t.Errorf("error code = %d (%s), want %d", e.Code, e.Message, w.code)
	}
	if e.Message == "" || (w.msg != "" && !strings.Contains(e.Message, w.msg)) {
		t.Errorf("error message = %q, want it to contain %q", e.Message, w.msg)
	}
}

func checkOutput(t *testing.T, out string, ws []want, batch bool) {
	t.Helper()
	if ws == nil {
		if out != "" {
			t.Fatalf("expected no response, got %s", out)
		}
		return
	}
	if out == "" {
		t.Fatalf("expected a response, got none")
	}
	if batch {
		var items []json.RawMessage
		if err := json.Unmarshal([]byte(out), &items); err != nil {
			t.Fatalf("batch response %s: %v", out, err)
		}
		if len(items) != len(ws) {
			t.Fatalf("batch response has %d items, want %d: %s", len(items), len(ws), out)
		}
		for i := range items {
			checkWant(t, items[i], ws[i])
		}
		return
	}
	if len(ws) != 1 {
		t.Fatalf("bad test case")
	}
	checkWant(t, json.RawMessage(out), ws[0])
}

func TestProtocolHTTP(t *testing.T) {
	ts := startServer(t, Config{})
	for _, tc := range protocolCases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := post(t, ts.httpURL(), "", tc.in)
			if tc.out == nil {
				if status != http.StatusNoContent || len(body) != 0 {
					t.Fatalf("status %d body %q, want 204 and no body", status, body)
				}
				return
			}
			checkOutput(t, string(body), tc.out, tc.bat)
			wantStatus := http.StatusOK
			if !tc.bat && tc.out[0].result == "" {
				wantStatus = httpStatus(tc.out[0].code)
			}
			if status != wantStatus {
				t.Errorf("HTTP status %d, want %d", status, wantStatus)
			}
		})
	}
}

func TestProtocolWebsocket(t *testing.T) {
	ts := startServer(t, Config{})
	c := wsDial(t, ts.wsURL(), nil)
	for _, tc := range protocolCases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.in == "" {
				t.Skip("an empty websocket message is sent as is; covered by the parse error cases")
			}
			// A read timeout breaks a gorilla connection, so "no response" is
			// checked by sending a marker request right after: its answer must come first.
			if tc.out == nil {
				if err := c.WriteMessage(websocket.TextMessage, []byte(tc.in)); err != nil {
					t.Fatal(err)
				}
				got := wsRoundTrip(t, c, `{"jsonrpc":"2.0","method":"test.void","id":"marker"}`, 5*time.Second)
				if compact(got) != `{"jsonrpc":"2.0","result":{},"id":"marker"}` {
					t.Fatalf("expected no response before the marker's, got %s", got)
				}
				return
			}
			checkOutput(t, wsRoundTrip(t, c, tc.in, 5*time.Second), tc.out, tc.bat)
		})
	}
	// The connection survived all of it, including the panic.
	if got := wsRoundTrip(t, c, `{"jsonrpc":"2.0","method":"test.echo","params":["ok"],"id":"last"}`, 2*time.Second); !strings.Contains(got, `"a":"ok"`) {
		t.Fatalf("after the table: %s", got)
	}
}

func TestHTTPMisc(t *testing.T) {
	ts := startServer(t, Config{})
	resp, err := http.Get(ts.httpURL())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /RPC: %d, want 405", resp.StatusCode)
	}
	status, body := post(t, ts.httpURL(), "", `{"jsonrpc":"2.0","method":"test.void","id":1}`)
	if status != 200 || compact(string(body)) != `{"jsonrpc":"2.0","result":{},"id":1}` {
		t.Errorf("void: %d %s", status, body)
	}
}

func TestPanicKeepsServerAlive(t *testing.T) {
	ts := startServer(t, Config{})
	cl, err := Dial(ts.wsURL(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := 0; i < 3; i++ {
		_, err := cl.Call(context.Background(), "test.panic", nil)
		var e *Error
		if !errors.As(err, &e) || e.Code != CodeInternalError {
			t.Fatalf("panic call: %v", err)
		}
	}
	res, err := cl.Call(context.Background(), "test.echo", []any{"alive"})
	if err != nil || !jsonEqual(string(res), `{"a":"alive","b":0}`) {
		t.Fatalf("after panics: %s %v", res, err)
	}
	if status, _ := post(t, ts.httpURL(), "", `{"jsonrpc":"2.0","method":"test.panic","id":1}`); status != 500 {
		t.Fatalf("HTTP panic status %d", status)
	}
}

func TestOversizedFrame(t *testing.T) {
	ts := startServer(t, Config{MaxFrameBytes: 1024})
	big := `{"jsonrpc":"2.0","method":"test.echo","params":["` + strings.Repeat("x", 2048) + `"],"id":1}`

	c := wsDial(t, ts.wsURL(), nil)
	if err := c.WriteMessage(1, []byte(big)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := c.ReadMessage()
	var ce interface{ Error() string }
	if err == nil {
		t.Fatal("oversized frame: connection still open")
	}
	ce = err
	if !strings.Contains(ce.Error(), "1009") {
		t.Errorf("oversized frame: got %v, want close 1009", err)
	}

	status, body := post(t, ts.httpURL(), "", big)
	if status != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized HTTP body: %d %s", status, body)
	}
	// A normal-sized request still works.
	if status, _ := post(t, ts.httpURL(), "", `{"jsonrpc":"2.0","method":"test.void","id":1}`); status != 200 {
		t.Errorf("after oversize: %d", status)
	}
}

func TestRegister(t *testing.T) {
	h := func(context.Context, Params) (any, error) { return nil, nil }
	s := NewServer(Config{})
	cases := []struct {
		name string
		m    Method
		ok   bool
	}{
		{"ok", Method{Name: "a.b", Handler: h}, true},
		{"duplicate", Method{Name: "a.b", Handler: h}, false},
		{"duplicate builtin", Method{Name: "system.listMethods", Handler: h}, false},
		{"no name", Method{Handler: h}, false},
		{"space in name", Method{Name: "a b", Handler: h}, false},
		{"no handler", Method{Name: "a.c"}, false},
		{"bad type", Method{Name: "a.d", Handler: h, Params: []Param{{Name: "x", Type: "uint"}}}, false},
		{"required after optional", Method{Name: "a.e", Handler: h, Params: []Param{{Name: "x", Optional: true}, {Name: "y"}}}, false},
		{"variadic not last", Method{Name: "a.f", Handler: h, Params: []Param{{Name: "x", Variadic: true}, {Name: "y"}}}, false},
		{"dup param", Method{Name: "a.g", Handler: h, Params: []Param{{Name: "x"}, {Name: "x"}}}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Register(tc.m)
			if (err == nil) != tc.ok {
				t.Fatalf("Register: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestBuiltinResultsAreObjects enforces the rule that results are objects or arrays.
func TestBuiltinResultsAreObjects(t *testing.T) {
	ts := startServer(t, Config{})
	cl, err := Dial(ts.httpURL(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range ts.s.Methods() {
		if !strings.HasPrefix(name, "system.") {
			continue
		}
		var params any
		if name != "system.listMethods" {
			params = []string{"test.echo"}
		}
		res, err := cl.Call(context.Background(), name, params)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if k := jsonKind(res); k != "object" && k != "array" {
			t.Errorf("%s returned a %s: %s", name, k, res)
		}
	}
	res, _ := cl.Call(context.Background(), "system.methodHelp", map[string]string{"name": "test.echo"})
	var info MethodInfo
	if err := json.Unmarshal(res, &info); err != nil || info.Doc != "Echo a and b." || len(info.Params) != 2 || !info.ReadOnly || info.Params[1].Type != "int" || !info.Params[1].Optional {
		t.Errorf("methodHelp: %s %v", res, err)
	}
	if _, err := marshalResult("x"); err == nil {
		t.Error("marshalResult accepted a string")
	}
}

func TestClientCalls(t *testing.T) {
	ts := startServer(t, Config{})
	for _, url := range []string{ts.wsURL(), ts.httpURL(), "ws://" + ts.addr, "http://" + ts.addr} {
		t.Run(url, func(t *testing.T) {
			cl, err := Dial(url, "")
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ctx := context.Background()
			res, err := cl.Call(ctx, "test.echo", map[string]any{"a": "n", "b": 5})
			if err != nil || !jsonEqual(string(res), `{"a":"n","b":5}`) {
				t.Fatalf("named: %s %v", res, err)
			}
			_, err = cl.Call(ctx, "test.notfound", nil)
			var e *Error
			if !errors.As(err, &e) || e.Code != 404 || e.Message != "Record not found" || e.Error() != "404 - Record not found" {
				t.Fatalf("404: %#v", err)
			}
			if err := cl.Notify(ctx, "test.void", nil); err != nil {
				t.Fatalf("notify: %v", err)
			}
			// Concurrent calls are matched to their responses.
			errs := make(chan error, 20)
			for i := 0; i < 20; i++ {
				go func(i int) {
					res, err := cl.Call(ctx, "test.sum", []int{i, 1})
					if err == nil && !jsonEqual(string(res), fmt.Sprintf(`{"sum":%d}`, i+1)) {
						err = fmt.Errorf("call %d got %s", i, res)
					}
					errs <- err
				}(i)
			}
			for i := 0; i < 20; i++ {
				if err := <-errs; err != nil {
					t.Error(err)
				}
			}
		})
	}
	if _, err := Dial("ftp://x", ""); err == nil {
		t.Error("ftp URL accepted")
	}
}

func TestLoadTokens(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Setenv(EnvToken, "")
	t.Setenv(EnvTokenRO, "")
	cases := []struct {
		name, text string
		env, envRO string
		want       map[string]Role
		bad        bool
	}{
		{name: "file", text: "# comment\nadmin s3cret\n\nro  watcher\n", want: map[string]Role{"s3cret": RoleAdmin, "watcher": RoleReadOnly}},
		{name: "env", text: "", env: "e1", envRO: "e2", want: map[string]Role{"e1": RoleAdmin, "e2": RoleReadOnly}},
		{name: "file+env", text: "ro a\n", env: "b", want: map[string]Role{"a": RoleReadOnly, "b": RoleAdmin}},
		{name: "bad role", text: "root x\n", bad: true},
		{name: "bad line", text: "admin\n", bad: true},
		{name: "two roles", text: "admin x\nro x\n", bad: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvToken, tc.env)
			t.Setenv(EnvTokenRO, tc.envRO)
			got, err := LoadTokens(write(tc.name, tc.text))
			if tc.bad {
				if err == nil {
					t.Fatalf("want error, got %v", got)
				}
				return
			}
			if err != nil || fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %v %v, want %v", got, err, tc.want)
			}
		})
	}
	if _, err := LoadTokens(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestListenAndServeShutdown(t *testing.T) {
	s := NewServer(Config{Addr: "127.0.0.1:0"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ListenAndServe(ctx) }()
	var addr string
	for i := 0; i < 200 && addr == ""; i++ {
		time.Sleep(10 * time.Millisecond)
		addr = s.Addr()
	}
	if addr == "" {
		t.Fatal("server did not start")
	}
	cl, err := Dial("ws://"+addr+"/ws", "")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ListenAndServe: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ListenAndServe did not return")
	}
	select {
	case <-cl.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("websocket client not disconnected at shutdown")
	}
	// "off" waits for the context and returns nil.
	off := NewServer(Config{Addr: "off"})
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if err := off.ListenAndServe(ctx2); err != nil || off.Enabled() {
		t.Fatalf("off: %v", err)
	}
}

// A method's ParamError replaces -32602 for missing or wrongly typed
// params (Kamailio-compatible faults); without it the param is named.
func TestParamError(t *testing.T) {
	s := NewServer(Config{})
	h := func(ctx context.Context, p Params) (any, error) { return map[string]int{"ok": 1}, nil }
	ps := []Param{{Name: "attr", Type: TypeString}, {Name: "n", Type: TypeInt}}
	if err := s.Register(Method{Name: "k.m", Params: ps, Handler: h, ParamError: NewError(400, "Invalid Parameters")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Register(Method{Name: "g.m", Params: ps, Handler: h}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method string
		params []any
		code   int
		msg    string
	}{
		{"k.m", []any{"a"}, 400, "Invalid Parameters"},
		{"k.m", []any{"a", "x"}, 400, "Invalid Parameters"},
		{"k.m", []any{"a", 1, 2}, 400, "Invalid Parameters"},
		{"g.m", []any{"a"}, CodeInvalidParams, "Invalid params: n: missing"},
		{"k.m", []any{"a", 1}, 0, ""},
	} {
		_, err := s.Call(context.Background(), RoleAdmin, tc.method, tc.params...)
		var e *Error
		if tc.code == 0 {
			if err != nil {
				t.Errorf("%s %v: %v", tc.method, tc.params, err)
			}
			continue
		}
		if !errors.As(err, &e) || e.Code != tc.code || e.Message != tc.msg {
			t.Errorf("%s %v: %v, want %d %s", tc.method, tc.params, err, tc.code, tc.msg)
		}
	}
}

package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// testMethods is the method set used by most tests.
func testMethods() []Method {
	return []Method{
		{
			Name: "test.echo", Doc: "Echo a and b.", ReadOnly: true, Result: "{a, b}",
			Params: []Param{{Name: "a", Type: TypeString}, {Name: "b", Type: TypeInt, Optional: true}},
			Handler: func(ctx context.Context, p Params) (any, error) {
				a, err := p.String(0)
				if err != nil {
					return nil, err
				}
				b, err := p.IntOr(1, 0)
				if err != nil {
					return nil, err
				}
				return map[string]any{"a": a, "b": b}, nil
			},
		},
		{
			Name: "test.sum", ReadOnly: true, Result: "{sum}",
			Params: []Param{{Name: "n", Type: TypeInt, Variadic: true}},
			Handler: func(ctx context.Context, p Params) (any, error) {
				sum := 0
				for i := 0; i < p.Len(); i++ {
					n, err := p.Int(i)
					if err != nil {
						return nil, err
					}
					sum += n
				}
				return map[string]int{"sum": sum}, nil
			},
		},
		{
			Name: "test.flag", ReadOnly: true,
			Params: []Param{{Name: "on", Type: TypeBool}},
			Handler: func(ctx context.Context, p Params) (any, error) {
				b, err := p.Bool(0)
				return map[string]bool{"on": b}, err
			},
		},
		{
			Name: "test.admin", Doc: "Admin only.",
			Handler: func(ctx context.Context, p Params) (any, error) {
				return map[string]any{"ok": true, "role": RoleFromContext(ctx)}, nil
			},
		},
		{Name: "test.panic", ReadOnly: true, Handler: func(ctx context.Context, p Params) (any, error) { panic("boom") }},
		{Name: "test.scalar", ReadOnly: true, Handler: func(ctx context.Context, p Params) (any, error) { return 42, nil }},
		{Name: "test.void", ReadOnly: true, Handler: func(ctx context.Context, p Params) (any, error) { return nil, nil }},
		{Name: "test.empty", ReadOnly: true, Handler: func(ctx context.Context, p Params) (any, error) { return []string(nil), nil }},
		{Name: "test.notfound", ReadOnly: true, Handler: func(ctx context.Context, p Params) (any, error) { return nil, ErrNotFound() }},
		{Name: "test.plainerr", ReadOnly: true, Handler: func(ctx context.Context, p Params) (any, error) { return nil, errors.New("boom") }},
	}
}

type testServer struct {
	s    *Server
	addr string // host:port
}

func (ts *testServer) httpURL() string { return "http://" + ts.addr + "/RPC" }
func (ts *testServer) wsURL() string   { return "ws://" + ts.addr + "/ws" }

func startServer(t testing.TB, cfg Config, tweak ...func(*Server)) *testServer {
	t.Helper()
	s := NewServer(cfg)
	for _, m := range testMethods() {
		if err := s.Register(m); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range tweak {
		f(s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testServer{s: s, addr: ln.Addr().String()}
}

// post sends body to /RPC and returns the status and the response body.
func post(t testing.TB, url, token, body string, hdr ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// wsDial opens a raw websocket.
func wsDial(t testing.TB, url string, hdr http.Header) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(url, hdr)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", url, err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// wsRoundTrip sends msg and waits for one reply (a timeout fails the test).
func wsRoundTrip(t testing.TB, c *websocket.Conn, msg string, wait time.Duration) string {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	defer c.SetReadDeadline(time.Time{})
	_, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

// jsonEqual compares two JSON texts semantically.
func jsonEqual(a, b string) bool {
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// checkResponse validates one JSON-RPC response object and returns it decoded.
func checkResponse(t testing.TB, raw json.RawMessage) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("response %s is not an object: %v", raw, err)
	}
	if string(m["jsonrpc"]) != `"2.0"` {
		t.Fatalf("response %s: bad jsonrpc member", raw)
	}
	if _, ok := m["id"]; !ok {
		t.Fatalf("response %s: no id", raw)
	}
	_, hasRes := m["result"]
	_, hasErr := m["error"]
	if hasRes == hasErr {
		t.Fatalf("response %s: needs exactly one of result and error", raw)
	}
	return m
}

func compact(s string) string {
	var b bytes.Buffer
	if json.Compact(&b, []byte(s)) != nil {
		return s
	}
	return b.String()
}

func sleepMS(n int) { time.Sleep(time.Duration(n) * time.Millisecond) }

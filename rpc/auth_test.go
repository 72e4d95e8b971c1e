package rpc

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"testing"

	"github.com/gorilla/websocket"
)

func TestAuthHTTP(t *testing.T) {
	ts := startServer(t, Config{Tokens: map[string]Role{"adm-token": RoleAdmin, "ro-token": RoleReadOnly}})
	cases := []struct {
		name, token, method string
		status              int
		code                int // 0 = success
	}{
		{"no token", "", "test.echo", 401, CodeUnauthorized},
		{"wrong token", "nope", "test.echo", 401, CodeUnauthorized},
		{"ro reads", "ro-token", "test.echo", 200, 0},
		{"ro lists", "ro-token", "system.listMethods", 200, 0},
		{"ro cannot admin", "ro-token", "test.admin", 403, CodeForbidden},
		{"admin reads", "adm-token", "test.echo", 200, 0},
		{"admin admins", "adm-token", "test.admin", 200, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			params := `[]`
			if tc.method == "test.echo" {
				params = `["x"]`
			}
			status, body := post(t, ts.httpURL(), tc.token, `{"jsonrpc":"2.0","method":"`+tc.method+`","params":`+params+`,"id":1}`)
			if status != tc.status {
				t.Fatalf("status %d, want %d (%s)", status, tc.status, body)
			}
			m := checkResponse(t, body)
			if tc.code == 0 {
				if _, ok := m["result"]; !ok {
					t.Fatalf("no result: %s", body)
				}
				return
			}
			if !jsonEqual(string(m["error"]), `{"code":`+strconv.Itoa(tc.code)+`,"message":"`+stdError(tc.code).Message+`"}`) {
				t.Fatalf("error %s, want code %d", m["error"], tc.code)
			}
		})
	}
}

func TestAuthWebsocket(t *testing.T) {
	ts := startServer(t, Config{Tokens: map[string]Role{"adm-token": RoleAdmin, "ro-token": RoleReadOnly}})
	ctx := context.Background()

	// Refused handshakes.
	for _, tc := range []struct{ name, url, token string }{
		{"no token", ts.wsURL(), ""},
		{"wrong token", ts.wsURL(), "bad"},
		{"wrong query token", ts.wsURL() + "?token=bad", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Dial(tc.url, tc.token)
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeUnauthorized {
				t.Fatalf("Dial: %v, want 401", err)
			}
		})
	}

	call := func(t *testing.T, cl *Client, method string) error {
		_, err := cl.Call(ctx, method, nil)
		return err
	}
	t.Run("ro header", func(t *testing.T) {
		cl, err := Dial(ts.wsURL(), "ro-token")
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if err := call(t, cl, "system.listMethods"); err != nil {
			t.Fatal(err)
		}
		var e *Error
		if err := call(t, cl, "test.admin"); !errors.As(err, &e) || e.Code != CodeForbidden {
			t.Fatalf("ro calling admin method: %v", err)
		}
	})
	t.Run("admin query token", func(t *testing.T) {
		cl, err := Dial(ts.wsURL()+"?token=adm-token", "")
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		res, err := cl.Call(ctx, "test.admin", nil)
		if err != nil || !jsonEqual(string(res), `{"ok":true,"role":"admin"}`) {
			t.Fatalf("%s %v", res, err)
		}
	})
	t.Run("subprotocol token", func(t *testing.T) {
		d := websocket.Dialer{Subprotocols: []string{"jsonrpc", "bearer.adm-token"}}
		c, resp, err := d.Dial(ts.wsURL(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := resp.Header.Get("Sec-Websocket-Protocol"); got != "jsonrpc" {
			t.Errorf("selected subprotocol %q, want jsonrpc", got)
		}
		if got := wsRoundTrip(t, c, `{"jsonrpc":"2.0","method":"test.admin","id":1}`, 5e9); !jsonEqual(got, `{"jsonrpc":"2.0","result":{"ok":true,"role":"admin"},"id":1}`) {
			t.Fatalf("got %s", got)
		}
		// Only the bearer subprotocol offered: it is echoed, as browsers require.
		d = websocket.Dialer{Subprotocols: []string{"bearer.ro-token"}}
		c2, resp, err := d.Dial(ts.wsURL(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		if got := resp.Header.Get("Sec-Websocket-Protocol"); got != "bearer.ro-token" {
			t.Errorf("selected subprotocol %q", got)
		}
		if got := wsRoundTrip(t, c2, `{"jsonrpc":"2.0","method":"test.admin","id":1}`, 5e9); !jsonEqual(got, `{"jsonrpc":"2.0","error":{"code":403,"message":"Forbidden"},"id":1}`) {
			t.Fatalf("got %s", got)
		}
	})
}

func TestNonLoopbackNeedsToken(t *testing.T) {
	cases := []struct {
		addr   string
		tokens map[string]Role
		ok     bool
	}{
		{"0.0.0.0:0", nil, false},
		{":8060", nil, false},
		{"192.0.2.1:8060", nil, false},
		{"[::]:0", nil, false},
		{"127.0.0.1:0", nil, true},
		{"localhost:0", nil, true},
		{"[::1]:0", nil, true},
		{"0.0.0.0:0", map[string]Role{"t": RoleAdmin}, true},
		{"off", nil, true},
		{"127.0.0.1:0", map[string]Role{"t": "root"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.addr, func(t *testing.T) {
			err := NewServer(Config{Addr: tc.addr, Tokens: tc.tokens}).Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate: %v, want ok=%v", err, tc.ok)
			}
		})
	}
	// ListenAndServe refuses before listening.
	if err := NewServer(Config{Addr: "0.0.0.0:0"}).ListenAndServe(context.Background()); err == nil {
		t.Fatal("ListenAndServe on 0.0.0.0 without token succeeded")
	}
	// Serve refuses a non-loopback listener.
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Skip("cannot listen on 0.0.0.0:", err)
	}
	if err := NewServer(Config{}).Serve(ln); err == nil {
		t.Fatal("Serve on 0.0.0.0 without token succeeded")
	}
}

func TestOrigin(t *testing.T) {
	ts := startServer(t, Config{AllowedOrigins: []string{"https://dash.example.com"}})
	cases := []struct {
		name, origin string
		ok           bool
	}{
		{"no origin", "", true},
		{"same origin", "http://" + ts.addr, true},
		{"allowed origin", "https://dash.example.com", true},
		{"cross origin", "http://evil.example.com", false},
		{"null origin", "null", false},
		{"same host other port", "http://127.0.0.1:1", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hdr := http.Header{}
			if tc.origin != "" {
				hdr.Set("Origin", tc.origin)
			}
			c, resp, err := websocket.DefaultDialer.Dial(ts.wsURL(), hdr)
			if tc.ok {
				if err != nil {
					t.Fatalf("ws refused: %v", err)
				}
				c.Close()
			} else {
				if err == nil {
					c.Close()
					t.Fatal("ws accepted")
				}
				if resp == nil || resp.StatusCode != http.StatusForbidden {
					t.Fatalf("ws: %v, want HTTP 403", err)
				}
			}
			var h []string
			if tc.origin != "" {
				h = []string{"Origin", tc.origin}
			}
			status, _ := post(t, ts.httpURL(), "", `{"jsonrpc":"2.0","method":"test.void","id":1}`, h...)
			if (status == 200) != tc.ok {
				t.Fatalf("POST status %d, want ok=%v", status, tc.ok)
			}
		})
	}
	// Without tokens, a foreign Host name (DNS rebinding) is refused.
	status, _ := post(t, ts.httpURL(), "", `{"jsonrpc":"2.0","method":"test.void","id":1}`, "Host", "rebind.example.com:8060")
	if status != http.StatusForbidden {
		t.Fatalf("foreign Host: status %d, want 403", status)
	}
}

func TestMaxConns(t *testing.T) {
	ts := startServer(t, Config{MaxConns: 2})
	c1, err := Dial(ts.wsURL(), "")
	if err != nil {
		t.Fatal(err)
	}
	c2, err := Dial(ts.wsURL(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_, resp, err := websocket.DefaultDialer.Dial(ts.wsURL(), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third ws: %v, want 503", err)
	}
	// HTTP POSTs have their own bound: /RPC keeps working at the websocket cap.
	if status, _ := post(t, ts.httpURL(), "", `{"jsonrpc":"2.0","method":"test.void","id":1}`); status != http.StatusOK {
		t.Fatalf("POST while websockets are full: %d, want 200", status)
	}
	c1.Close()
	var c3 *Client
	for i := 0; i < 100; i++ {
		if c3, err = Dial(ts.wsURL(), ""); err == nil {
			break
		}
		sleepMS(20)
	}
	if err != nil {
		t.Fatalf("after a close: %v", err)
	}
	c3.Close()
}

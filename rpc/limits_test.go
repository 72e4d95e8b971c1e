package rpc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// endless is a StreamResult that never stops writing on its own: only the
// reply's bound ends it.
type endless struct{}

func (endless) WriteJSON(w io.Writer) error {
	if _, err := io.WriteString(w, "["); err != nil {
		return err
	}
	for i := 0; ; i++ {
		if _, err := io.WriteString(w, `"0123456789abcdef0123456789abcdef",`); err != nil {
			return err
		}
	}
}

// bigMethods return a result of about n bytes (test.big n), or an endless one.
func bigMethods(s *Server) {
	s.MustRegister(Method{Name: "test.big", ReadOnly: true, Params: []Param{{Name: "n", Type: TypeInt}},
		Handler: func(ctx context.Context, p Params) (any, error) {
			n, err := p.Int(0)
			return []string{strings.Repeat("x", n)}, err
		}})
	s.MustRegister(Method{Name: "test.endless", ReadOnly: true,
		Handler: func(ctx context.Context, p Params) (any, error) { return endless{}, nil }})
}

type wireResp struct {
	Result json.RawMessage `json:"result"`
	Error  *Error          `json:"error"`
	ID     json.RawMessage `json:"id"`
}

func TestReplyBounds(t *testing.T) {
	ts := startServer(t, Config{MaxResponseBytes: 4 << 10, MaxBatchBytes: 10 << 10}, bigMethods)
	call := func(n int, id int) string {
		return fmt.Sprintf(`{"jsonrpc":"2.0","method":"test.big","params":[%d],"id":%d}`, n, id)
	}
	for _, c := range []struct {
		name   string
		body   string
		status int
		codes  []int // per response: 0 result, else the error code
	}{
		{"small", call(100, 1), 200, []int{0}},
		{"one over its bound", call(5000, 1), 507, []int{507}},
		{"endless stream", `{"jsonrpc":"2.0","method":"test.endless","id":1}`, 507, []int{507}},
		{"batch: one over, the rest fine", "[" + call(100, 1) + "," + call(5000, 2) + "," + call(100, 3) + "]", 200, []int{0, 507, 0}},
		{"batch of calls each over its bound: work bounded, later calls not executed", "[" + call(5000, 1) + "," + call(5000, 2) + "," + call(5000, 3) + "," + call(5000, 4) + "," + call(5000, 5) + "]", 200, []int{507, 507, 507, 507, 507}},
		{"batch over its bound: later calls not executed", "[" + call(3000, 1) + "," + call(3000, 2) + "," + call(3000, 3) + "," + call(3000, 4) + "," + call(10, 5) + "]", 200, []int{0, 0, 0, 507, 507}},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, body := post(t, ts.httpURL(), "", c.body)
			if status != c.status {
				t.Errorf("HTTP %d, want %d", status, c.status)
			}
			var rs []wireResp
			if strings.HasPrefix(c.body, "[") {
				if err := json.Unmarshal(body, &rs); err != nil {
					t.Fatalf("%.300s: %v", body, err)
				}
			} else {
				var r wireResp
				if err := json.Unmarshal(body, &r); err != nil {
					t.Fatalf("%.300s: %v", body, err)
				}
				rs = []wireResp{r}
			}
			if len(rs) != len(c.codes) {
				t.Fatalf("%d responses, want %d", len(rs), len(c.codes))
			}
			for i, r := range rs {
				got := 0
				if r.Error != nil {
					got = r.Error.Code
					if r.Result != nil {
						t.Errorf("#%d: a result and an error", i)
					}
				}
				if got != c.codes[i] {
					t.Errorf("#%d: code %d (%v), want %d", i, got, r.Error, c.codes[i])
				}
				if string(r.ID) != fmt.Sprint(i+1) {
					t.Errorf("#%d: id %s", i, r.ID)
				}
			}
			if strings.Contains(c.name, "not executed") && !strings.Contains(rs[4].Error.Message, "Not executed") {
				t.Errorf("after the bound: %v", rs[4].Error)
			}
			if len(body) > 10<<10+2048 {
				t.Errorf("reply of %d bytes", len(body))
			}
		})
	}
	// In process (route tests' state.rpc) the same bound holds.
	if _, err := ts.s.Call(context.Background(), RoleAdmin, "test.endless"); err == nil || err.(*Error).Code != CodeTooLarge {
		t.Errorf("Call: %v", err)
	}
	// The server releases a reply just after writing it out.
	for i := 0; i < 100 && ts.s.MemoryInUse() != 0; i++ {
		sleepMS(10)
	}
	if n := ts.s.MemoryInUse(); n != 0 {
		t.Errorf("budget still holds %d bytes", n)
	}
}

func TestMemoryBudget(t *testing.T) {
	ts := startServer(t, Config{MemoryBudget: 256 << 10, MaxResponseBytes: 128 << 10}, bigMethods)
	// Someone holds most of the budget: a large reply is refused, a small one still fits.
	if !ts.s.budget.take(200 << 10) {
		t.Fatal("take")
	}
	status, body := post(t, ts.httpURL(), "", `{"jsonrpc":"2.0","method":"test.big","params":[100000],"id":7}`)
	var r wireResp
	json.Unmarshal(body, &r)
	if status != 503 || r.Error == nil || r.Error.Code != CodeBusy || string(r.ID) != "7" {
		t.Fatalf("HTTP %d %s", status, body)
	}
	if status, _ := post(t, ts.httpURL(), "", `{"jsonrpc":"2.0","method":"test.big","params":[100],"id":1}`); status != 200 {
		t.Fatalf("small reply under a busy budget: %d", status)
	}
	ts.s.budget.give(200 << 10)
	if status, _ := post(t, ts.httpURL(), "", `{"jsonrpc":"2.0","method":"test.big","params":[100000],"id":1}`); status != 200 {
		t.Fatalf("after release: %d", status)
	}
	// Many large replies at once over websockets: each is answered (a result
	// or 503), and the budget is back to zero afterwards.
	var conns []*websocket.Conn
	for i := 0; i < 4; i++ {
		conns = append(conns, wsDial(t, ts.wsURL(), nil))
	}
	for _, c := range conns {
		for j := 0; j < 8; j++ {
			c.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"jsonrpc":"2.0","method":"test.big","params":[100000],"id":%d}`, j)))
		}
	}
	ok, busy := 0, 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for j := 0; j < 8; j++ {
			_, b, err := c.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			var r wireResp
			json.Unmarshal(b, &r)
			switch {
			case r.Error == nil:
				ok++
			case r.Error.Code == CodeBusy:
				busy++
			default:
				t.Fatalf("unexpected %s", b)
			}
		}
	}
	if ok == 0 {
		t.Errorf("no reply fit (busy %d)", busy)
	}
	for i := 0; i < 100 && ts.s.MemoryInUse() != 0; i++ {
		sleepMS(10)
	}
	if n := ts.s.MemoryInUse(); n != 0 {
		t.Errorf("budget still holds %d bytes", n)
	}
}

func TestInvalidUTF8(t *testing.T) {
	ts := startServer(t, Config{})
	bad := "{\"jsonrpc\":\"2.0\",\"method\":\"test.void\",\"id\":\"\xff\xfe\"}"
	status, body := post(t, ts.httpURL(), "", bad)
	var r wireResp
	if err := json.Unmarshal(body, &r); err != nil || status != 400 || r.Error == nil || r.Error.Code != CodeParseError || string(r.ID) != "null" {
		t.Fatalf("HTTP %d %q", status, body)
	}
	if strings.Contains(string(body), "\xff") {
		t.Fatal("invalid bytes echoed")
	}
	// A binary frame is not text: it gets the parse error and the connection stays.
	c := wsDial(t, ts.wsURL(), nil)
	c.WriteMessage(websocket.BinaryMessage, []byte(bad))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, b, err := c.ReadMessage(); err != nil || !strings.Contains(string(b), "-32700") || strings.Contains(string(b), "\xff") {
		t.Fatalf("binary frame: %q %v", b, err)
	}
	// RFC 6455 8.1: a text frame with invalid UTF-8 closes with 1007.
	c.WriteMessage(websocket.TextMessage, []byte(bad))
	_, b, err := c.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseInvalidFramePayloadData) {
		t.Fatalf("text frame: %q %v, want close 1007", b, err)
	}
}

func TestWebsocketCaps(t *testing.T) {
	tokens := map[string]Role{"adm": RoleAdmin, "ro": RoleReadOnly}
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	dial := func(url, tok string) (*websocket.Conn, int) {
		c, resp, err := websocket.DefaultDialer.Dial(url, bearer(tok))
		if err != nil {
			if resp == nil {
				t.Fatal(err)
			}
			return nil, resp.StatusCode
		}
		t.Cleanup(func() { c.Close() })
		return c, 101
	}
	t.Run("per IP", func(t *testing.T) {
		ts := startServer(t, Config{Tokens: tokens, MaxConnsPerIP: 2, IdleGrace: time.Hour})
		dial(ts.wsURL(), "ro")
		dial(ts.wsURL(), "ro")
		if _, st := dial(ts.wsURL(), "ro"); st != 503 {
			t.Fatalf("third from one IP: %d", st)
		}
		if st, _ := post(t, ts.httpURL(), "ro", `{"jsonrpc":"2.0","method":"test.void","id":1}`); st != 200 {
			t.Fatalf("POST at the cap: %d", st)
		}
	})
	t.Run("admin reserve", func(t *testing.T) {
		ts := startServer(t, Config{Tokens: tokens, MaxConns: 8, AdminReserve: 2, MaxConnsPerIP: 100, IdleGrace: time.Hour})
		for i := 0; i < 6; i++ {
			if _, st := dial(ts.wsURL(), "ro"); st != 101 {
				t.Fatalf("ro #%d: %d", i, st)
			}
		}
		if _, st := dial(ts.wsURL(), "ro"); st != 503 {
			t.Fatalf("ro into the reserve: %d", st)
		}
		c, st := dial(ts.wsURL(), "adm")
		if st != 101 {
			t.Fatalf("admin: %d", st)
		}
		if r := wsRoundTrip(t, c, `{"jsonrpc":"2.0","method":"test.admin","id":1}`, 5*time.Second); !strings.Contains(r, `"ok":true`) {
			t.Fatal(r)
		}
	})
	t.Run("idle evicted at the cap", func(t *testing.T) {
		ts := startServer(t, Config{MaxConns: 4, MaxConnsPerIP: 3, IdleGrace: 100 * time.Millisecond})
		var idle []*websocket.Conn
		for i := 0; i < 3; i++ {
			c, _ := dial(ts.wsURL(), "")
			idle = append(idle, c)
		}
		// A subscriber is not idle: never evicted.
		sub := idle[0]
		if r := wsRoundTrip(t, sub, `{"jsonrpc":"2.0","method":"events.subscribe","params":[["usrloc"]],"id":1}`, 5*time.Second); !strings.Contains(r, "usrloc") {
			t.Fatal(r)
		}
		if _, st := dial(ts.wsURL(), ""); st != 503 {
			t.Fatalf("within the grace: %d", st)
		}
		sleepMS(250)
		for i := 0; i < 4; i++ {
			c, st := dial(ts.wsURL(), "")
			if st != 101 {
				t.Fatalf("newcomer #%d: %d", i, st)
			}
			if r := wsRoundTrip(t, c, `{"jsonrpc":"2.0","method":"test.void","id":1}`, 5*time.Second); !strings.Contains(r, "result") {
				t.Fatal(r)
			}
			sleepMS(150)
		}
		for _, c := range idle[1:] {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
				t.Errorf("idle one: %v, want close 1008", err)
			}
		}
		if r := wsRoundTrip(t, sub, `{"jsonrpc":"2.0","method":"test.void","id":2}`, 5*time.Second); !strings.Contains(r, "result") {
			t.Errorf("subscriber: %s", r)
		}
	})
}

func TestIdleTimeout(t *testing.T) {
	ts := startServer(t, Config{IdleTimeout: 300 * time.Millisecond})
	idle := wsDial(t, ts.wsURL(), nil)
	busy := wsDial(t, ts.wsURL(), nil)
	sub := wsDial(t, ts.wsURL(), nil)
	wsRoundTrip(t, sub, `{"jsonrpc":"2.0","method":"events.subscribe","params":[["usrloc"]],"id":1}`, 5*time.Second)
	start := time.Now()
	closed := make(chan error, 1)
	var after time.Duration
	go func() {
		idle.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err := idle.ReadMessage()
		after = time.Since(start)
		closed <- err
	}()
	// Meanwhile one connection keeps calling: it stays open past the timeout.
	for i := 0; i < 8; i++ {
		wsRoundTrip(t, busy, `{"jsonrpc":"2.0","method":"test.void","id":1}`, 5*time.Second)
		sleepMS(100)
	}
	err := <-closed
	if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("idle: %v, want close 1000", err)
	}
	if after < 200*time.Millisecond {
		t.Errorf("closed after %v", after)
	}
	// And the subscribed one too.
	wsRoundTrip(t, sub, `{"jsonrpc":"2.0","method":"test.void","id":2}`, 5*time.Second)
}

// TestBudgetReleaseAfterQuiet: after a burst the heap is released once the
// budget has been unused for quietSpell, not while replies keep coming.
func TestBudgetReleaseAfterQuiet(t *testing.T) {
	defer func(d time.Duration) { quietSpell = d }(quietSpell)
	quietSpell = 150 * time.Millisecond
	b := &budget{max: 100}
	b.take(50)
	b.give(50) // a burst over a quarter: the wait starts
	if !b.pending.Load() {
		t.Fatal("no release pending after a burst")
	}
	for i := 0; i < 4; i++ { // replies keep coming: no release yet
		sleepMS(60)
		b.take(10)
		b.give(10)
	}
	if b.peak.Load() == 0 {
		t.Fatal("released during the burst")
	}
	for i := 0; i < 100 && b.pending.Load(); i++ {
		sleepMS(20)
	}
	if b.pending.Load() || b.peak.Load() != 0 {
		t.Fatalf("not released after a quiet spell (peak %d)", b.peak.Load())
	}
	// A small use afterwards does not start another wait.
	b.take(10)
	b.give(10)
	if b.pending.Load() {
		t.Error("release pending after a small reply")
	}
}

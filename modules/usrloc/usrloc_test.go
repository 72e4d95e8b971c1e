package usrloc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/kamgo/kamgo/starlark/routetest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/moduletest"
	"github.com/kamgo/kamgo/modules/usrloc"
)

type node struct {
	env    *core.Env
	mod    *core.Module
	ul     *usrloc.UL
	clock  *routetest.FixedClock
	mu     sync.Mutex
	events []map[string]any
}

// start builds a usrloc on the SQLite file path (a "kamd start").
func start(t *testing.T, path string, clock *routetest.FixedClock, params map[string]int) *node {
	t.Helper()
	env, _ := moduletest.NewEnv()
	env.Clock = clock
	db, err := core.OpenDB(path)
	if err != nil {
		t.Fatal(err)
	}
	env.DB = db
	n := &node{env: env, clock: clock}
	env.Publish = func(topic string, data any) {
		n.mu.Lock()
		n.events = append(n.events, data.(map[string]any))
		n.mu.Unlock()
	}
	n.mod = usrloc.New(env)
	for k, v := range params {
		moduletest.SetParam(t, n.mod, k, core.Int(v))
	}
	if err := n.mod.Init(); err != nil {
		t.Fatal(err)
	}
	n.ul = usrloc.Of(env)
	t.Cleanup(n.stop)
	return n
}

func (n *node) stop() {
	if n.mod == nil {
		return
	}
	n.mod.Stop()
	n.env.DB.Close()
	n.mod = nil
}

func (n *node) add(t *testing.T, aor, uri string, expires int) {
	t.Helper()
	d, err := n.ul.Domain("location")
	if err != nil {
		t.Fatal(err)
	}
	now := n.clock.Now()
	_, err = d.Update(aor, func(cs []usrloc.Contact) ([]usrloc.Contact, error) {
		return append(cs, usrloc.Contact{Contact: uri, Expires: now.Add(time.Duration(expires) * time.Second), Q: 500,
			CallID: "c1", CSeq: 1, Methods: usrloc.MethodsAll, Socket: "udp:127.0.0.1:5060", Path: "<sip:p1.example.com;lr>"}), nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func rows(t *testing.T, path string) int {
	t.Helper()
	db, err := core.OpenDB(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM location`).Scan(&n); err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return 0 // db_mode 0 never creates it
		}
		t.Fatal(err)
	}
	return n
}

func rpc(t *testing.T, mod *core.Module, method string, args ...any) (any, error) {
	t.Helper()
	for _, r := range mod.RPC {
		if r.Name == method {
			return r.Handler(context.Background(), rpcArgs(args))
		}
	}
	t.Fatalf("no RPC %s", method)
	return nil, nil
}

type rpcArgs []any

func (a rpcArgs) Len() int                     { return len(a) }
func (a rpcArgs) String(i int) (string, error) { return fmt.Sprint(a[i]), nil }
func (a rpcArgs) Int(i int) (int, error)       { return a[i].(int), nil }

func TestDBModes(t *testing.T) {
	for _, c := range []struct {
		mode        int
		rowsAtOnce  int // rows right after the add
		rowsAtTimer int // after the first timer tick
		survives    bool
	}{
		{mode: 0, rowsAtOnce: 0, rowsAtTimer: 0, survives: false},
		{mode: 1, rowsAtOnce: 1, rowsAtTimer: 1, survives: true},
		{mode: 2, rowsAtOnce: 0, rowsAtTimer: 1, survives: true},
	} {
		t.Run(map[int]string{0: "memory", 1: "write-through", 2: "write-back"}[c.mode], func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kamgo.db")
			clock := routetest.NewFixedClock(routetest.RouteTestEpoch)
			params := map[string]int{"db_mode": c.mode, "timer_interval": 10}
			n := start(t, path, clock, params)
			n.add(t, "alice", "sip:alice@192.0.2.10", 3600)
			if got := rows(t, path); got != c.rowsAtOnce {
				t.Errorf("rows after add: %d, want %d", got, c.rowsAtOnce)
			}
			clock.Advance(10 * time.Second)
			if got := rows(t, path); got != c.rowsAtTimer {
				t.Errorf("rows after the timer: %d, want %d", got, c.rowsAtTimer)
			}
			n.stop()
			clock.Advance(100 * time.Second)
			n2 := start(t, path, clock, params)
			d, _ := n2.ul.Domain("location")
			got := d.Lookup("alice")
			if !c.survives {
				if len(got) != 0 {
					t.Fatalf("memory mode kept %v", got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("after restart: %v", got)
			}
			g := got[0]
			if g.Contact != "sip:alice@192.0.2.10" || g.Q != 500 || g.ExpiresIn(clock.Now()) != 3600-110 ||
				g.Path != "<sip:p1.example.com;lr>" || g.Socket != "udp:127.0.0.1:5060" || g.State != usrloc.StateSync || g.CallID != "c1" {
				t.Errorf("after restart: %+v", g)
			}
		})
	}
}

func TestVersionRowAndSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kamgo.db")
	start(t, path, routetest.NewFixedClock(routetest.RouteTestEpoch), map[string]int{"db_mode": 1}).stop()
	db, err := core.OpenDB(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v int
	if err := db.QueryRow(`SELECT table_version FROM version WHERE table_name = 'location'`).Scan(&v); err != nil || v != 9 {
		t.Fatalf("version row: %d %v", v, err)
	}
	r, err := db.Query(`SELECT id, ruid, username, domain, contact, received, path, expires, q, callid, cseq, last_modified, flags, cflags, user_agent, socket, methods, instance, reg_id, server_id, connection_id, keepalive, partition FROM location`)
	if err != nil {
		t.Fatalf("Kamailio's columns: %v", err)
	}
	r.Close()
	// A table with another version is refused.
	if _, err := db.Exec(`UPDATE version SET table_version = 8 WHERE table_name = 'location'`); err != nil {
		t.Fatal(err)
	}
	env, _ := moduletest.NewEnv()
	env.DB = db
	mod := usrloc.New(env)
	moduletest.SetParam(t, mod, "db_mode", core.Int(1))
	if err := mod.Init(); err == nil || !strings.Contains(err.Error(), "version 8") {
		t.Fatalf("Init with version 8: %v", err)
	}
}

func TestSweepEmitsAndDeletes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kamgo.db")
	clock := routetest.NewFixedClock(routetest.RouteTestEpoch)
	n := start(t, path, clock, map[string]int{"db_mode": 1, "timer_interval": 30})
	n.add(t, "alice", "sip:alice@192.0.2.10", 45)
	n.add(t, "bob", "sip:bob@192.0.2.11", 3600)
	clock.Advance(30 * time.Second)
	if len(n.events) != 0 {
		t.Fatalf("early events: %v", n.events)
	}
	clock.Advance(30 * time.Second)
	if len(n.events) != 1 || n.events[0]["event"] != "contact-expired" || n.events[0]["aor"] != "alice" || n.events[0]["contact"] != "sip:alice@192.0.2.10" {
		t.Fatalf("events: %v", n.events)
	}
	if got := rows(t, path); got != 1 {
		t.Errorf("rows: %d, want 1 (bob)", got)
	}
	if n.env.Stats.Counter("usrloc", "expired_contacts").Value() != 1 {
		t.Error("expired_contacts counter")
	}
}

func TestRPC(t *testing.T) {
	clock := routetest.NewFixedClock(routetest.RouteTestEpoch)
	n := start(t, filepath.Join(t.TempDir(), "kamgo.db"), clock, map[string]int{"db_mode": 1})
	for _, c := range []struct {
		method string
		args   []any
		code   int
	}{
		{"ul.add", []any{"location", "alice@example.com", "sip:alice@192.0.2.10", 60, "0.5", "0", 0, 0, 0}, 0},
		{"ul.add", []any{"location", "alice", "sip:alice@192.0.2.12", 0, "1", "0", 0, 0, 0}, 0},
		{"ul.add", []any{"location", "alice"}, 500},
		{"ul.add", []any{"nosuch", "alice", "sip:a@b", 0, "1", "0", 0, 0, 0}, 500},
		{"ul.lookup", []any{"location", "bob"}, 404},
		{"ul.rm_contact", []any{"location", "alice", "sip:nobody@x"}, 404},
		{"ul.rm_contact", []any{"location", "bob", "sip:nobody@x"}, 404},
		{"ul.rm", []any{"location", "bob"}, 404},
		{"ul.flush", nil, 0},
	} {
		_, err := rpc(t, n.mod, c.method, c.args...)
		code := 0
		if e, ok := err.(*core.RPCError); ok {
			code = e.Code
		} else if err != nil {
			t.Fatalf("%s %v: %v", c.method, c.args, err)
		}
		if code != c.code {
			t.Errorf("%s %v: code %d (%v), want %d", c.method, c.args, code, err, c.code)
		}
	}
	out, err := rpc(t, n.mod, "ul.lookup", "location", "sip:alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	cs := out.(map[string]any)["Contacts"].([]any)
	if len(cs) != 2 {
		t.Fatalf("contacts: %v", cs)
	}
	first := cs[0].(map[string]any)["Contact"].(map[string]any)
	if first["Address"] != "sip:alice@192.0.2.10" || first["Expires"] != 60 || first["Q"] != 0.5 || first["Path"] != "[not set]" || first["State"] != "CS_SYNC" {
		t.Errorf("first contact: %v", first)
	}
	if exp := cs[1].(map[string]any)["Contact"].(map[string]any)["Expires"]; exp != "permanent" {
		t.Errorf("expires 0: %v", exp)
	}
	dump := viaJSON(t)(rpc(t, n.mod, "ul.dump"))
	dom := dump.(map[string]any)["Domains"].([]any)[0].(map[string]any)["Domain"].(map[string]any)
	if dom["Domain"] != "location" || dom["Size"] != float64(1024) || len(dom["AoRs"].([]any)) != 1 {
		t.Errorf("dump: %v", dom)
	}
	brief := viaJSON(t)(rpc(t, n.mod, "ul.dump", "brief"))
	if a := brief.(map[string]any)["Domains"].([]any)[0].(map[string]any)["Domain"].(map[string]any)["AoRs"].([]any); len(a) != 1 || a[0].(map[string]any)["AoR"] != "alice" {
		t.Errorf("brief: %v", a)
	}
	if _, err := rpc(t, n.mod, "ul.rm_contact", "location", "alice", "sip:alice@192.0.2.10"); err != nil {
		t.Fatal(err)
	}
	if _, err := rpc(t, n.mod, "ul.rm", "location", "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := rpc(t, n.mod, "ul.lookup", "location", "alice"); err == nil {
		t.Fatal("alice still there")
	}
}

func TestUseDomain(t *testing.T) {
	env, _ := moduletest.NewEnv()
	mod := usrloc.New(env)
	moduletest.SetParam(t, mod, "use_domain", core.Int(1))
	if err := mod.Init(); err != nil {
		t.Fatal(err)
	}
	defer mod.Stop()
	u := usrloc.Of(env)
	for _, c := range []struct{ in, want, err string }{
		{"alice@Example.COM", "alice@example.com", ""},
		{"sip:alice@example.com", "alice@example.com", ""},
		{"alice", "", "Domain missing"},
	} {
		got, err := u.FixAoR(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: %v", c.in, err)
			}
			continue
		}
		if got != c.want || err != nil {
			t.Errorf("%q: %q %v", c.in, got, err)
		}
	}
	if got := u.AoR("bob", "EXAMPLE.com"); got != "bob@example.com" {
		t.Errorf("AoR: %q", got)
	}
	if _, err := u.Domain("bad name"); err == nil {
		t.Error("a bad table name was accepted")
	}
}

func TestConcurrentUpdates(t *testing.T) {
	clock := routetest.NewFixedClock(routetest.RouteTestEpoch)
	path := filepath.Join(t.TempDir(), "kamgo.db")
	n := start(t, path, clock, map[string]int{"db_mode": 1})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				n.add(t, "u"+string(rune('a'+g)), "sip:x@192.0.2."+string(rune('0'+i%10)), 60)
			}
		}(g)
	}
	wg.Wait()
	if got := rows(t, path); got != 8*20 {
		t.Errorf("rows: %d", got)
	}
}

// Issue 16: usrloc itself never stores a binding that could not be
// written back into a header (defence in depth behind registrar).
func TestCheckContactRefused(t *testing.T) {
	for _, c := range []usrloc.Contact{
		{Contact: "sip:alice@192.0.2.10;x=\"\nX-Injected: yes\""},
		{Contact: "sip:alice@192.0.2.10", Received: "sip:192.0.2.10\r\nX: y"},
		{Contact: "sip:alice@192.0.2.10", Path: "<sip:p@192.0.2.1;lr>\x00"},
		{Contact: "sip:alice@192.0.2.10", Instance: "<urn:uuid:1>"},
		{Contact: "not a uri"},
	} {
		if err := usrloc.CheckContact(&c); err == nil {
			t.Errorf("CheckContact(%+v) accepted", c)
		}
	}
	ok := usrloc.Contact{Contact: "sip:alice@192.0.2.10:5060;transport=tcp", Instance: `"<urn:uuid:1>"`, Received: "sip:192.0.2.10:5060"}
	if err := usrloc.CheckContact(&ok); err != nil {
		t.Fatal(err)
	}
}

func TestUpdateRefusesBadContact(t *testing.T) {
	n := start(t, filepath.Join(t.TempDir(), "ul.db"), routetest.NewFixedClock(time.Unix(1700000000, 0)), nil)
	d, err := n.ul.Domain("location")
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Update("alice", func(cs []usrloc.Contact) ([]usrloc.Contact, error) {
		return append(cs, usrloc.Contact{Contact: "sip:alice@192.0.2.10;x=\"\nX-Injected: yes\"", Q: -1}), nil
	})
	if err == nil {
		t.Fatal("Update stored a contact with a bare LF")
	}
	if got := d.Lookup("alice"); len(got) != 0 {
		t.Fatalf("stored %+v", got)
	}
}

// viaJSON decodes a result as an RPC client sees it (ul.dump encodes itself).
func viaJSON(t *testing.T) func(v any, err error) any {
	return func(v any, err error) any {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var out any
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		return out
	}
}

// TestDumpPaging: ul.dump with a limit returns that many AoRs and a Next
// cursor; following the cursors visits every AoR once, whatever the limit.
func TestDumpPaging(t *testing.T) {
	n := start(t, filepath.Join(t.TempDir(), "kamgo.db"), routetest.NewFixedClock(routetest.RouteTestEpoch), map[string]int{"db_mode": 0})
	const total = 250
	for i := 0; i < total; i++ {
		n.add(t, fmt.Sprintf("user%03d", i), fmt.Sprintf("sip:user%03d@192.0.2.1", i), 3600)
	}
	whole := viaJSON(t)(rpc(t, n.mod, "ul.dump", "brief"))
	if _, ok := whole.(map[string]any)["Next"]; ok {
		t.Fatal("no limit: no Next expected")
	}
	for _, c := range []struct {
		mode  string
		limit int
	}{{"brief", 1}, {"brief", 100}, {"full", 7}, {"full", 250}, {"brief", 1000}} {
		seen := map[string]bool{}
		pages := 0
		args := []any{c.mode, c.limit}
		for {
			page := viaJSON(t)(rpc(t, n.mod, "ul.dump", args...)).(map[string]any)
			pages++
			dom := page["Domains"].([]any)[0].(map[string]any)["Domain"].(map[string]any)
			aors := dom["AoRs"].([]any)
			if len(aors) > c.limit {
				t.Fatalf("limit %d: page of %d", c.limit, len(aors))
			}
			if st := dom["Stats"].(map[string]any); st["Records"] != float64(total) {
				t.Fatalf("Stats cover the table: %v", st)
			}
			for _, a := range aors {
				m := a.(map[string]any)
				aor, _ := m["AoR"].(string)
				if c.mode == "full" {
					aor = m["Info"].(map[string]any)["AoR"].(string)
				}
				if seen[aor] {
					t.Fatalf("limit %d: %s twice", c.limit, aor)
				}
				seen[aor] = true
			}
			next, ok := page["Next"].(string)
			if !ok {
				break
			}
			args = []any{c.mode, c.limit, next}
		}
		if len(seen) != total || pages != (total+c.limit-1)/c.limit {
			t.Errorf("%s limit %d: %d AoRs in %d pages", c.mode, c.limit, len(seen), pages)
		}
	}
	for _, args := range [][]any{{"brief", 0}, {"brief", -3}, {"brief", 10, "%%%"}, {"brief", 10, "bm90IGEgY3Vyc29y"}} {
		if _, err := rpc(t, n.mod, "ul.dump", args...); err == nil || err.(*core.RPCError).Code != 400 {
			t.Errorf("%v: %v, want 400", args, err)
		}
	}
}

// TestContactCounts: the counts /metrics exports (no dump) follow adds,
// a second contact of one AoR and a removal.
func TestContactCounts(t *testing.T) {
	clock := routetest.NewFixedClock(time.Unix(1_700_000_000, 0))
	n := start(t, filepath.Join(t.TempDir(), "ul.db"), clock, nil)
	d, _ := n.ul.Domain("location")
	for _, tc := range []struct {
		do             func()
		aors, contacts int
	}{
		{func() {}, 0, 0},
		{func() { n.add(t, "alice", "sip:a1@192.0.2.1", 60) }, 1, 1},
		{func() { n.add(t, "alice", "sip:a2@192.0.2.2", 60) }, 1, 2},
		{func() { n.add(t, "bob", "sip:b@192.0.2.3", 60) }, 2, 3},
		{func() { d.DeleteAoR("alice") }, 1, 1},
	} {
		tc.do()
		if a, c := d.ContactCounts(); a != tc.aors || c != tc.contacts {
			t.Errorf("ContactCounts() = %d, %d, want %d, %d", a, c, tc.aors, tc.contacts)
		}
	}
}

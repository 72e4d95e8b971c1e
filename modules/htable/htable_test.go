package htable_test

import (
	"context"
	"fmt"
	"github.com/kamgo/kamgo/kamd/node"
	"github.com/kamgo/kamgo/starlark/routetest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/htable"

	_ "github.com/kamgo/kamgo/modules/all"
)

const defs = `
modparam("htable", "htable", "t=>size=4")
modparam("htable", "htable", "iv=>initval=0")
modparam("htable", "htable", "ex=>autoexpire=10;updateexpire=1")
modparam("htable", "htable", "nx=>autoexpire=10;updateexpire=0")
modparam("htable", "timer_interval", 5)

def ksr_request_route():
    KSR.sl.sl_send_reply(200, "OK")
`

func TestParseTableDef(t *testing.T) {
	for _, c := range []struct {
		spec string
		want htable.TableDef
		err  string
	}{
		{spec: "a", want: htable.TableDef{Name: "a", Size: 4, UpdateExpire: true}},
		{spec: "a=>", want: htable.TableDef{Name: "a", Size: 4, UpdateExpire: true}},
		{spec: "ipban=>size=8;autoexpire=300;initval=0;updateexpire=0", want: htable.TableDef{Name: "ipban", Size: 8, AutoExpire: 300, HasInitVal: true, UpdateExpire: false}},
		{spec: " b => size = 2 ; initval=-5; ", want: htable.TableDef{Name: "b", Size: 2, HasInitVal: true, InitVal: -5, UpdateExpire: true}},
		{spec: "a=>dmqreplicate=0;dbmode=0", want: htable.TableDef{Name: "a", Size: 4, UpdateExpire: true}},
		{spec: "=>size=4", err: "missing table name"},
		{spec: "a b=>size=4", err: "invalid table name"},
		{spec: "a=>size=40", err: "size"},
		{spec: "a=>size=x", err: "want an integer"},
		{spec: "a=>autoexpire=-1", err: "autoexpire"},
		{spec: "a=>updateexpire=2", err: "updateexpire"},
		{spec: "a=>colour=red", err: `unknown attribute "colour"`},
		{spec: "a=>size", err: "has no value"},
		{spec: "a=>size=4;size=5", err: "given twice"},
		{spec: "a=>dbtable=htable", err: "not supported yet"},
		{spec: "a=>dmqreplicate=1", err: "DMQ"},
	} {
		d, err := htable.ParseTableDef(c.spec)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: err %v, want %q", c.spec, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.spec, err)
			continue
		}
		if *d != c.want {
			t.Errorf("%q: got %+v, want %+v", c.spec, *d, c.want)
		}
	}
}

type step struct {
	advance time.Duration
	expr    string // a Starlark expression run in a callback; its repr is logged
	want    string // repr of the result, or the error text with err
	err     bool
}

// TestFunctions runs each expression in its own callback, in order, on one
// kamd: state carries over from step to step.
func TestFunctions(t *testing.T) {
	steps := []step{
		{expr: `KSR.htable.sht_get("t", "a")`, want: "None"},
		{expr: `KSR.htable.sht_gete("t", "a")`, want: `""`},
		{expr: `KSR.htable.sht_is_null("t", "a")`, want: "1"},
		{expr: `KSR.htable.sht_sets("t", "a", "x")`, want: "1"},
		{expr: `KSR.htable.sht_get("t", "a")`, want: `"x"`},
		{expr: `KSR.htable.sht_is_null("t", "a")`, want: "-1"},
		{expr: `KSR.htable.sht_seti("t", "n", 41)`, want: "1"},
		{expr: `KSR.htable.sht_inc("t", "n")`, want: "42"},
		{expr: `KSR.htable.sht_dec("t", "n")`, want: "41"},
		{expr: `KSR.htable.sht_inc("t", "a")`, want: "-255"},
		{expr: `KSR.htable.sht_inc("t", "new")`, want: "1"},
		{expr: `KSR.htable.sht_get("iv", "zz")`, want: "0"},
		{expr: `KSR.htable.sht_gete("iv", "zz")`, want: "0"},
		{expr: `KSR.htable.sht_is_null("iv", "zz")`, want: "-2"},
		{expr: `KSR.htable.sht_dec("iv", "c")`, want: "-1"},
		{expr: `KSR.pv.get("$sht(t=>a)")`, want: `"x"`},
		{expr: `KSR.pv.sets("$sht(t=>b)", "y")`, want: "True"},
		{expr: `KSR.htable.sht_get("t", "b")`, want: `"y"`},
		{expr: `KSR.pv.unset("$sht(t=>b)")`, want: "True"},
		{expr: `KSR.htable.sht_is_null("t", "b")`, want: "1"},
		{expr: `KSR.htable.sht_sets("t", "192.0.2.10", "ip")`, want: "1"},
		{expr: `KSR.pv.get("$sht(t=>$si)")`, want: `"ip"`},
		{expr: `KSR.pv.get("$shtinc(t=>n)")`, want: "42"},
		{expr: `KSR.pv.get("$shtdec(t=>n)")`, want: "41"},
		{expr: `KSR.htable.sht_match_name("t", "sw", "192.")`, want: "1"},
		{expr: `KSR.htable.sht_has_name("t", "eq", "nope")`, want: "-1"},
		{expr: `KSR.htable.sht_has_name("t", "ne", "nope")`, want: "1"},
		{expr: `KSR.htable.sht_match_str_value("t", "re", "^i")`, want: "1"},
		{expr: `KSR.htable.sht_has_str_value("t", "eq", "41")`, want: "-1"}, // ints are not str values
		{expr: `KSR.htable.sht_rm_name_re("t", "^192")`, want: "1"},
		{expr: `KSR.htable.sht_get("t", "192.0.2.10")`, want: "None"},
		{expr: `KSR.htable.sht_rm_value_re("t", "^x$")`, want: "1"},
		{expr: `KSR.htable.sht_get("t", "a")`, want: "None"},
		{expr: `KSR.htable.sht_get("t", "n")`, want: "41"},
		{expr: `KSR.htable.sht_sets("t", "p1", "v")`, want: "1"},
		{expr: `KSR.htable.sht_rm_name("t", "sw", "p")`, want: "1"},
		{expr: `KSR.htable.sht_is_null("t", "p1")`, want: "1"},
		{expr: `KSR.htable.sht_rm("t", "p1")`, want: "1"},
		// per-item expiry
		{expr: `KSR.htable.sht_setxs("t", "tmp", "v", 5)`, want: "1"},
		{expr: `KSR.pv.get("$shtex(t=>tmp)")`, want: "5"},
		{expr: `KSR.pv.get("$shtex(t=>n)")`, want: "0"},
		{advance: 4 * time.Second, expr: `KSR.htable.sht_get("t", "tmp")`, want: `"v"`},
		{advance: time.Second, expr: `KSR.htable.sht_get("t", "tmp")`, want: "None"},
		{expr: `KSR.htable.sht_setxi("t", "ti", 7, 0)`, want: "1"},
		{expr: `KSR.htable.sht_setex("t", "n", 3)`, want: "1"},
		{expr: `KSR.htable.sht_setex("t", "missing", 3)`, want: "-1"},
		{advance: 3 * time.Second, expr: `KSR.htable.sht_get("t", "n")`, want: "None"},
		{expr: `KSR.htable.sht_get("t", "ti")`, want: "7"},
		{expr: `KSR.pv.seti("$shtex(t=>ti)", 2)`, want: "True"},
		{advance: 2 * time.Second, expr: `KSR.htable.sht_get("t", "ti")`, want: "None"},
		// autoexpire with and without updateexpire
		{expr: `KSR.htable.sht_seti("ex", "k", 1)`, want: "1"},
		{expr: `KSR.htable.sht_seti("nx", "k", 1)`, want: "1"},
		{advance: 6 * time.Second, expr: `KSR.htable.sht_inc("ex", "k")`, want: "2"},
		{expr: `KSR.htable.sht_inc("nx", "k")`, want: "2"},
		{advance: 4 * time.Second, expr: `KSR.htable.sht_get("nx", "k")`, want: "None"},
		{expr: `KSR.htable.sht_get("ex", "k")`, want: "2"},
		{advance: 6 * time.Second, expr: `KSR.htable.sht_get("ex", "k")`, want: "None"},
		{expr: `KSR.htable.sht_reset("t")`, want: "1"},
		{expr: `KSR.htable.sht_get("t", "new")`, want: "None"},
		// errors
		{expr: `KSR.htable.sht_get("nope", "a")`, want: `htable: no table "nope" (defined: ex, iv, nx, t)`, err: true},
		{expr: `KSR.htable.sht_inc("nope", "a")`, want: `no table "nope"`, err: true},
		{expr: `KSR.htable.sht_is_null("nope", "a")`, want: `no table "nope"`, err: true},
		{expr: `KSR.htable.sht_match_name("t", "xx", "a")`, want: `unsupported match operator "xx"`, err: true},
		{expr: `KSR.htable.sht_rm_name("t", "eq", "a")`, want: `unsupported match operator "eq"`, err: true},
		{expr: `KSR.htable.sht_rm_name_re("t", "(")`, want: "invalid regular expression", err: true},
		{expr: `KSR.htable.sht_setxi("t", "k", 1, -1)`, want: "negative expire", err: true},
		{expr: `KSR.pv.sets("$sht(nope=>a)", "x")`, want: `no table "nope"`, err: true},
		{expr: `KSR.pv.sets("$sht(t)", "x")`, want: "want table=>key", err: true},
	}
	src := defs
	for i, s := range steps {
		src += fmt.Sprintf("\ndef c%d():\n    KSR.info(repr(%s))\n", i, s.expr)
	}
	h, err := routetest.NewHarness(node.RouteTest, "htable.star", []byte(src), routetest.HarnessOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var events []map[string]any
	var evMu sync.Mutex
	h.Env.Publish = func(topic string, data any) {
		evMu.Lock()
		defer evMu.Unlock()
		if topic == "htable" {
			events = append(events, data.(map[string]any))
		}
	}
	for i, s := range steps {
		if s.advance > 0 {
			h.Advance(s.advance)
		}
		r, err := h.Event(fmt.Sprintf("c%d", i), core.RouteRequest, nil, "192.0.2.10:5060", "udp")
		if err != nil {
			t.Fatal(err)
		}
		if s.err {
			if !strings.Contains(r.Error(), s.want) {
				t.Errorf("step %d %s: error %q, want %q", i, s.expr, r.Error(), s.want)
			}
			continue
		}
		if r.Error() != "" {
			t.Errorf("step %d %s: %s", i, s.expr, r.Error())
			continue
		}
		got := ""
		for _, l := range r.Logs {
			if l.Level == 0 && l.At != "" {
				got = l.Message
			}
		}
		if got != s.want {
			t.Errorf("step %d %s: got %s, want %s (logs %+v)", i, s.expr, got, s.want, r.Logs)
		}
		if s.want == "-255" {
			found := false
			for _, l := range r.Logs {
				found = found || (l.Level >= 8 && strings.Contains(l.Message, "cannot add to a str item"))
			}
			if !found {
				t.Errorf("step %d: sht_inc on a str item logged no ERR: %+v", i, r.Logs)
			}
		}
	}
	evMu.Lock()
	defer evMu.Unlock()
	var expired []string
	for _, e := range events {
		expired = append(expired, fmt.Sprintf("%v/%v=%v", e["table"], e["key"], e["value"]))
	}
	want := "t/tmp=v t/n=41 t/ti=7 nx/k=2 ex/k=2"
	if strings.Join(expired, " ") != want {
		t.Errorf("expired events %v, want %s", expired, want)
	}
}

type args []any

func (a args) Len() int { return len(a) }
func (a args) String(i int) (string, error) {
	if i >= len(a) {
		return "", fmt.Errorf("missing")
	}
	return fmt.Sprint(a[i]), nil
}
func (a args) Int(i int) (int, error) {
	if i >= len(a) {
		return 0, fmt.Errorf("missing")
	}
	n, ok := a[i].(int)
	if !ok {
		return 0, fmt.Errorf("not an int")
	}
	return n, nil
}

func rpcCall(t *testing.T, h *routetest.Harness, method string, a ...any) (any, error) {
	t.Helper()
	for _, m := range h.Engine.Modules {
		for _, r := range m.RPC {
			if r.Name == method {
				return r.Handler(context.Background(), args(a))
			}
		}
	}
	t.Fatalf("no RPC %s", method)
	return nil, nil
}

func TestRPC(t *testing.T) {
	h, err := routetest.NewHarness(node.RouteTest, "htable.star", []byte(defs), routetest.HarnessOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	mustOK := func(method string, a ...any) any {
		t.Helper()
		res, err := rpcCall(t, h, method, a...)
		if err != nil {
			t.Fatalf("%s %v: %v", method, a, err)
		}
		return res
	}
	mustOK("htable.sets", "t", "k1", "v1")
	mustOK("htable.seti", "t", "k2", 7)
	mustOK("htable.seti", "ex", "k3", 1)
	got := fmt.Sprint(mustOK("htable.get", "t", "k1"))
	if got != "map[item:map[expire:NEVER flags:2 name:k1 type:str value:v1]]" {
		t.Errorf("htable.get: %s", got)
	}
	got = fmt.Sprint(mustOK("htable.get", "ex", "k3"))
	if got != "map[item:map[expire:2026-01-01 00:00:10 flags:0 name:k3 type:int value:1]]" {
		t.Errorf("htable.get: %s", got)
	}
	for _, c := range []struct {
		method string
		args   []any
		code   int
		msg    string
	}{
		{"htable.get", []any{"t", "missing"}, 404, "Key name doesn't exist in htable."},
		{"htable.get", []any{"nope", "k"}, 500, `No such htable: "nope"`},
		{"htable.get", []any{"t"}, 500, "Not enough parameters"},
		{"htable.dump", []any{}, 500, "No htable name given"},
		{"htable.seti", []any{"t", "k", "x"}, 500, "integer value"},
		{"htable.delete", []any{"nope", "k"}, 500, "No such htable"},
		{"htable.reset", []any{"nope"}, 500, "No such htable"},
	} {
		_, err := rpcCall(t, h, c.method, c.args...)
		re, ok := err.(*core.RPCError)
		if !ok || re.Code != c.code || !strings.Contains(re.Message, c.msg) {
			t.Errorf("%s %v: %v, want %d %s", c.method, c.args, err, c.code, c.msg)
		}
	}
	dump := mustOK("htable.dump", "t").([]any)
	n := 0
	for _, e := range dump {
		m := e.(map[string]any)
		n += m["size"].(int)
		for _, it := range m["slot"].([]any) {
			it := it.(map[string]any)
			if it["name"] == "k2" && (it["value"] != int64(7) || it["type"] != "int") {
				t.Errorf("dump k2: %v", it)
			}
		}
	}
	if n != 2 {
		t.Errorf("dump: %d items, want 2: %v", n, dump)
	}
	stats := fmt.Sprint(mustOK("htable.stats"))
	if !strings.Contains(stats, "all:2") || !strings.Contains(stats, "name:t slots:16") {
		t.Errorf("stats: %s", stats)
	}
	list := fmt.Sprint(mustOK("htable.listTables"))
	want := "[map[dbmode:0 dbtable: dmqreplicate:0 expire:0 name:t size:16 updateexpire:1] map[dbmode:0 dbtable: dmqreplicate:0 expire:0 initval:0 name:iv size:16 updateexpire:1] map[dbmode:0 dbtable: dmqreplicate:0 expire:10 name:ex size:16 updateexpire:1] map[dbmode:0 dbtable: dmqreplicate:0 expire:10 name:nx size:16 updateexpire:0]]"
	if list != want {
		t.Errorf("listTables:\n got %s\nwant %s", list, want)
	}
	mustOK("htable.delete", "t", "k1")
	if _, err := rpcCall(t, h, "htable.get", "t", "k1"); err == nil {
		t.Error("k1 still there after htable.delete")
	}
	mustOK("htable.reset", "t")
	if d := mustOK("htable.dump", "t").([]any); len(d) != 0 {
		t.Errorf("dump after reset: %v", d)
	}
	for _, m := range h.Engine.Modules {
		for _, r := range m.RPC {
			ro := r.Name == "htable.get" || r.Name == "htable.dump" || r.Name == "htable.listTables" || r.Name == "htable.stats"
			if strings.HasPrefix(r.Name, "htable.") && r.ReadOnly != ro {
				t.Errorf("%s: ReadOnly %v", r.Name, r.ReadOnly)
			}
		}
	}
}

func TestDefinitionErrorsFailStartup(t *testing.T) {
	_, err := routetest.NewHarness(node.RouteTest, "bad.star", []byte(`
modparam("htable", "htable", "a=>size=8;colour=red")
def ksr_request_route():
    pass
`), routetest.HarnessOptions{})
	if err == nil || !strings.Contains(err.Error(), `bad.star:2:9: modparam("htable", "htable"): htable a: unknown attribute "colour"`) {
		t.Fatalf("err %v", err)
	}
}

// A reload applies the modparams again: an unchanged table keeps its
// items, a changed autoexpire applies, and a reload with a bad definition
// fails (file:line) and changes nothing.
func TestReload(t *testing.T) {
	h, err := routetest.NewHarness(node.RouteTest, "htable.star", []byte(defs), routetest.HarnessOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ht := htable.Of(h.Env)
	if err := ht.Set("t", "k", core.Str("v"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Engine.Load("htable.star", []byte(defs)); err != nil {
		t.Fatal(err)
	}
	if v, _ := ht.Get("t", "k"); v != core.Str("v") {
		t.Fatalf("after an identical reload: %v", v)
	}
	bad := strings.Replace(defs, `"iv=>initval=0"`, `"iv=>initval=0;colour=red"`, 1)
	if _, err := h.Engine.Load("htable.star", []byte(bad)); err == nil || !strings.Contains(err.Error(), `unknown attribute "colour"`) {
		t.Fatalf("a reload with a bad definition: %v", err)
	}
	changed := strings.Replace(defs, `"t=>size=4"`, `"t=>size=4;autoexpire=30"`, 1)
	if _, err := h.Engine.Load("htable.star", []byte(changed)); err != nil {
		t.Fatal(err)
	}
	if v, _ := ht.Get("t", "k"); v != core.Str("v") {
		t.Fatalf("after a changed reload: %v", v)
	}
	if d := ht.Table("t").Def(); d.AutoExpire != 30 {
		t.Errorf("autoexpire %d after reload", d.AutoExpire)
	}
	if d := ht.Table("iv").Def(); !d.HasInitVal {
		t.Errorf("a bad definition replaced iv: %+v", d)
	}
	_ = ht.Set("t", "k2", core.Int(1), nil)
	h.Advance(30 * time.Second)
	if v, _ := ht.Get("t", "k2"); !v.IsNull() {
		t.Errorf("k2 did not expire with the new autoexpire: %v", v)
	}
	if v, _ := ht.Get("t", "k"); v != core.Str("v") {
		t.Errorf("k (set before autoexpire) expired: %v", v)
	}
}

func TestConcurrentInc(t *testing.T) {
	h, err := routetest.NewHarness(node.RouteTest, "htable.star", []byte(defs), routetest.HarnessOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ht := htable.Of(h.Env)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				if _, err := ht.Add(nil, "ex", fmt.Sprint("k", i%7), 1); err != nil {
					t.Error(err)
					return
				}
				_, _ = ht.Get("ex", "k1")
			}
		}()
	}
	wg.Wait()
	total := int64(0)
	for i := 0; i < 7; i++ {
		v, _ := ht.Get("ex", fmt.Sprint("k", i))
		total += v.Int
	}
	if total != 4000 {
		t.Errorf("total %d, want 4000", total)
	}
	if h.Clock.Pending() != 1 {
		t.Errorf("%d sweep timers, want 1", h.Clock.Pending())
	}
}

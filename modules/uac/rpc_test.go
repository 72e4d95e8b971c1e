package uac

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kamgo/kamgo/modules/core"
)

// args is a core.RPCArgs over literal values.
type args []any

func (a args) Len() int { return len(a) }
func (a args) String(i int) (string, error) {
	if s, ok := a[i].(string); ok {
		return s, nil
	}
	return "", errors.New("not a string")
}

// Has is what the RPC layer's params offer: null is "not supplied".
func (a args) Has(i int) bool { return i < len(a) && a[i] != nil }

func (a args) Int(i int) (int, error) {
	if n, ok := a[i].(int); ok {
		return n, nil
	}
	return 0, errors.New("not an int")
}

func (h *harness) rpc(admin bool, method string, a ...any) (any, error) {
	h.t.Helper()
	for _, m := range h.mod.RPC {
		if m.Name == method {
			return m.Handler(core.WithRPCAdmin(context.Background(), admin), args(a))
		}
	}
	h.t.Fatalf("no method %s", method)
	return nil, nil
}

func rpcCode(err error) int {
	var e *core.RPCError
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func (h *harness) registerAll() {
	h.t.Helper()
	h.clock.Advance(time.Second)
	for _, s := range h.take() {
		h.reply(s, 200, "OK", "Expires: 120")
	}
}

func TestDumpFieldsTypesAndRedaction(t *testing.T) {
	rw := row("acc")
	rw.Socket = ""
	h := newHarness(t, []Row{rw})
	h.registerAll()
	res, err := h.rpc(false, "uac.reg_dump")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(res)
	var recs []map[string]any
	json.Unmarshal(raw, &recs)
	if len(recs) != 1 {
		t.Fatalf("%s", raw)
	}
	// Kamailio 5.6's 18 fields, in order, then the status fields.
	kam := []string{"l_uuid", "l_username", "l_domain", "r_username", "r_domain", "realm", "auth_username", "auth_password", "auth_ha1",
		"auth_proxy", "expires", "flags", "diff_expires", "timer_expires", "reg_init", "reg_delay", "contact_addr", "socket"}
	s := string(raw)
	last := -1
	for _, k := range kam {
		i := strings.Index(s, `"`+k+`":`)
		if i <= last {
			t.Errorf("field %s missing or out of order", k)
		}
		last = i
	}
	r := recs[0]
	if r["realm"] != nil || r["socket"] != nil || r["auth_ha1"] != "none" || r["auth_password"] != "***" {
		t.Errorf("null/none/redaction conventions: %v", r)
	}
	if r["flags"].(float64) != 20 || r["state"] != "registered" || r["diff_expires"].(float64) != 119 {
		t.Errorf("status: %v", r)
	}
	for _, k := range []string{"state", "last_code", "last_reason", "last_attempt", "last_success", "next_refresh", "granted_expires", "failures", "call_id", "cseq"} {
		if _, ok := r[k]; !ok {
			t.Errorf("no %s", k)
		}
	}
	if _, err := h.rpc(false, "uac.reg_dump", "secrets"); rpcCode(err) != 403 {
		t.Errorf("secrets for read-only: %v", err)
	}
	res, err = h.rpc(true, "uac.reg_dump", "secrets")
	if err != nil || res.(*regDump).recs[0].AuthPassword != "secret" {
		t.Errorf("secrets for admin: %v %v", res, err)
	}
}

func TestInfoEnableDisableErrors(t *testing.T) {
	h := newHarness(t, []Row{row("acc")})
	h.registerAll()
	if st := h.env.Stats.Get("uac:"); st["uac:regtotal"] != 1 || st["uac:regactive"] != 1 {
		t.Errorf("counters: %v", st)
	}
	for _, tc := range []struct {
		method string
		a      []any
		code   int
	}{
		{"uac.reg_info", []any{"l_uuid"}, 400},
		{"uac.reg_info", []any{"bogus", "x"}, 400},
		{"uac.reg_info", []any{"l_uuid", "nope"}, 404},
		{"uac.reg_enable", []any{"l_uuid", "nope"}, 404},
		{"uac.reg_refresh", []any{"nope"}, 404},
		{"uac.reg_remove", []any{"nope"}, 404},
		{"uac.reg_active", []any{}, 500},
	} {
		if _, err := h.rpc(true, tc.method, tc.a...); rpcCode(err) != tc.code {
			t.Errorf("%s %v: %v, want %d", tc.method, tc.a, err, tc.code)
		}
	}
	for _, attr := range []string{"l_uuid", "l_username", "r_username", "auth_username"} {
		val := map[string]string{"l_uuid": "acc", "l_username": "alice", "r_username": "acc_r", "auth_username": "acc_a"}[attr]
		res, err := h.rpc(false, "uac.reg_info", attr, val)
		if err != nil || res.(Rec).LUUID != "acc" {
			t.Errorf("reg_info %s: %v %v", attr, res, err)
		}
	}
	// disable unregisters a registered record.
	if _, err := h.rpc(true, "uac.reg_disable", "l_uuid", "acc"); err != nil {
		t.Fatal(err)
	}
	s := h.one()
	if hdr(s.req, "Expires") != "0" || h.info("acc").State != StateUnregistering {
		t.Fatalf("disable: Expires %s state %s", hdr(s.req, "Expires"), h.info("acc").State)
	}
	h.reply(s, 200, "OK")
	if got := h.info("acc"); got.State != StateDisabled || got.Flags&flagDisabled == 0 || got.Flags&flagOnline != 0 {
		t.Errorf("after disable: %+v", got)
	}
	if st := h.env.Stats.Get("uac:"); st["uac:regtotal"] != 1 || st["uac:regactive"] != 0 || st["uac:regdisabled"] != 1 {
		t.Errorf("counters after disable: %v", st)
	}
	h.clock.Advance(time.Hour)
	h.none()
	if _, err := h.rpc(true, "uac.reg_enable", "l_uuid", "acc"); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(0)
	h.reply(h.one(), 200, "OK", "Expires: 60")
	if got := h.info("acc"); got.State != StateRegistered {
		t.Errorf("after enable: %+v", got)
	}
	// unregister: Expires 0, expires 0 and disabled afterwards (flags 17 as Kamailio).
	h.rpc(true, "uac.reg_unregister", "l_uuid", "acc")
	s = h.one()
	if hdr(s.req, "Expires") != "0" || hdr(s.req, "Contact") != "<sip:acc@127.0.0.1:5060>" {
		t.Errorf("unregister: %s", s.req)
	}
	h.reply(s, 200, "OK")
	if got := h.info("acc"); got.Flags != 17 || got.Expires != 0 || got.State != StateDisabled {
		t.Errorf("after unregister: %+v", got)
	}
	// reg_register brings it back at once.
	h.rpc(true, "uac.reg_register", "l_uuid", "acc")
	s = h.one()
	if hdr(s.req, "Expires") != "120" {
		t.Errorf("reg_register: Expires %s", hdr(s.req, "Expires"))
	}
	// reg_active 0 stops sending; 1 resumes.
	res, err := h.rpc(true, "uac.reg_active", 0)
	if err != nil || res.(map[string]int)["omode"] != 1 {
		t.Errorf("reg_active: %v %v", res, err)
	}
}

func TestAddRemove(t *testing.T) {
	h := newHarness(t, nil)
	add := []any{"new", "bob", "local.test", "bob_r", "127.0.0.1:25070", ".", "bob_a", "pw", ".", "sip:127.0.0.1:25070", 60, 0, 0, ".", "."}
	if _, err := h.rpc(true, "uac.reg_add", add...); err != nil {
		t.Fatal(err)
	}
	if _, err := h.rpc(true, "uac.reg_add", add...); rpcCode(err) != 409 {
		t.Errorf("second add: %v, want 409", err)
	}
	bad := append([]any{}, add...)
	bad[0], bad[7] = "bad", "."
	if _, err := h.rpc(true, "uac.reg_add", bad...); err == nil || !strings.Contains(err.Error(), "invalid password or ha1") {
		t.Errorf("add without password: %v", err)
	}
	if got := h.info("new"); got.Realm != nil || got.Socket != nil || got.ContactAddr != "127.0.0.1:5060" {
		t.Errorf("\".\" means empty: %+v", got)
	}
	h.clock.Advance(0)
	s := h.one()
	h.reply(s, 200, "OK", "Expires: 60")
	if _, err := h.rpc(true, "uac.reg_remove", "new"); err != nil {
		t.Fatal(err)
	}
	if hdr(h.one().req, "Expires") != "0" {
		t.Error("remove did not unregister")
	}
	if len(h.u.Dump(false)) != 0 {
		t.Error("still dumped")
	}
}

// reg_reload applies the table as a diff.
func TestReloadDiff(t *testing.T) {
	h := newHarness(t, []Row{row("same"), row("changed"), row("moved"), row("gone"), row("off")})
	h.registerAll()
	before := h.info("same")
	db := h.env.DB
	db.Exec(`UPDATE uacreg SET expires = 300 WHERE l_uuid = 'changed'`)
	db.Exec(`UPDATE uacreg SET r_domain = '127.0.0.1:25071' WHERE l_uuid = 'moved'`)
	db.Exec(`UPDATE uacreg SET flags = 1 WHERE l_uuid = 'off'`)
	db.Exec(`DELETE FROM uacreg WHERE l_uuid = 'gone'`)
	nr := row("added")
	insertRow(db, "uacreg", &nr)
	res, err := h.rpc(true, "uac.reg_reload")
	if err != nil {
		t.Fatal(err)
	}
	if m := res.(map[string]int); m["added"] != 1 || m["changed"] != 3 || m["removed"] != 1 {
		t.Errorf("diff %v", m)
	}
	if st := h.env.Stats.Get("uac:"); st["uac:regtotal"] != 5 || st["uac:regactive"] != 2 || st["uac:regdisabled"] != 1 {
		t.Errorf("counters after reload: %v", st)
	}
	if got := h.info("changed"); got.State != StateRegistered || got.Expires != 300 {
		t.Errorf("changed (same binding, still valid): %+v", got)
	}
	after := h.info("same")
	if after.State != StateRegistered || after.CallID != before.CallID || after.NextRefresh != before.NextRefresh {
		t.Errorf("unchanged row touched: %+v -> %+v", before, after)
	}
	h.clock.Advance(10 * time.Millisecond)
	var got []string
	for _, s := range h.take() {
		c := hdr(s.req, "Contact")
		got = append(got, c[5:strings.Index(c, "@")]+"="+hdr(s.req, "Expires"))
	}
	// changed (same binding): registered again, no un-REGISTER racing it;
	// moved (another AoR): the old binding unregistered, the new one
	// registered; off (disabled in the table): unregistered; gone:
	// unregistered; added: registered; same: nothing.
	sort.Strings(got)
	if want := []string{"added=120", "changed=300", "gone=0", "moved=0", "moved=120", "off=0"}; !slices.Equal(got, want) {
		t.Errorf("sent %v, want %v", got, want)
	}
	if got := h.info("off"); got.State != StateDisabled || got.Flags != flagDisabled {
		t.Errorf("off: %+v", got)
	}
	if len(h.u.Dump(false)) != 5 {
		t.Errorf("%d records", len(h.u.Dump(false)))
	}
	// StateCounts (what /metrics exports) agrees with the dump.
	want := map[string]int{}
	for _, r := range h.u.Dump(false) {
		want[r.State]++
	}
	if got := h.u.StateCounts(); !maps.Equal(got, want) || got[StateDisabled] != 1 {
		t.Errorf("StateCounts() = %v, want %v (one disabled)", got, want)
	}
	// Reloads are never refused for coming too fast.
	for range 3 {
		if _, err := h.rpc(true, "uac.reg_reload"); err != nil {
			t.Fatal(err)
		}
	}
}

func TestScriptFunctions(t *testing.T) {
	h := newHarness(t, []Row{row("acc")})
	f := map[string]core.Func{}
	for _, fn := range h.mod.Funcs {
		f[fn.Name] = fn
	}
	call := func(name string, a ...string) int64 {
		var vals []core.Val
		for _, s := range a {
			vals = append(vals, core.Str(s))
		}
		v, err := f[name].Fn(&core.Msg{Env: h.env}, vals)
		if err != nil {
			t.Fatal(err)
		}
		return v.Int
	}
	if call("uac_reg_status", "nope") != -1 || call("uac_reg_status", "acc") != -99 {
		t.Error("status before start")
	}
	h.clock.Advance(0)
	s := h.one()
	if call("uac_reg_status", "acc") != -2 {
		t.Error("status ongoing")
	}
	h.reply(s, 200, "OK", "Expires: 60")
	if call("uac_reg_status", "acc") != 1 {
		t.Error("status registered")
	}
	if call("uac_reg_disable", "l_uuid", "acc") != 1 {
		t.Error("disable")
	}
	h.reply(h.one(), 200, "OK")
	if call("uac_reg_status", "acc") != -3 {
		t.Error("status disabled")
	}
	if call("uac_reg_enable", "l_uuid", "nope") != -1 || call("uac_reg_enable", "l_uuid", "acc") != 1 {
		t.Error("enable")
	}
	if call("uac_reg_refresh", "acc") != 1 || call("uac_reg_refresh", "nope") != -1 {
		t.Error("refresh")
	}
	if call("uac_reg_lookup", "nope", "$var(x)") != -1 {
		t.Error("lookup of a missing uuid")
	}
	m := &core.Msg{Env: h.env}
	v, _ := f["uac_reg_lookup"].Fn(m, []core.Val{core.Str("acc"), core.Str("$var(x)")})
	pv, err := h.env.ParsePV("$var(x)")
	if err != nil || v.Int != 1 || pv.Get(m).String() != "sip:alice@local.test" {
		t.Errorf("lookup: %v %v %v", v, err, pv.Get(m))
	}
	if call("uac_reg_lookup_uri", "sip:alice@elsewhere.test", "$var(y)") != 1 || call("uac_reg_lookup_uri", "sip:bob@local.test", "$var(y)") != -1 {
		t.Error("lookup_uri")
	}
	h.set("reg_use_domain=1")
	if call("uac_reg_lookup_uri", "sip:alice@elsewhere.test", "$var(y)") != -1 || call("uac_reg_lookup_uri", "sip:alice@local.test", "$var(y)") != 1 {
		t.Error("lookup_uri with reg_use_domain")
	}
}

// TestDumpPaging: uac.reg_dump with a limit pages through the records with
// a cursor that survives a removal between pages; without one it stays
// Kamailio's array.
func TestDumpPaging(t *testing.T) {
	var rows []Row
	for i := 0; i < 25; i++ {
		rows = append(rows, row(fmt.Sprintf("acc%02d", i)))
	}
	h := newHarness(t, rows)
	whole, err := h.rpc(false, "uac.reg_dump")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(whole)
	var all []map[string]any
	if err := json.Unmarshal(raw, &all); err != nil || len(all) != 25 {
		t.Fatalf("unpaged: %d records, %v", len(all), err)
	}
	seen := map[string]bool{}
	args := []any{nil, 10}
	for pages := 1; ; pages++ {
		res, err := h.rpc(false, "uac.reg_dump", args...)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(res)
		var page struct {
			Records []map[string]any `json:"records"`
			Next    *string          `json:"next"`
		}
		if err := json.Unmarshal(raw, &page); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		if len(page.Records) > 10 {
			t.Fatalf("page of %d", len(page.Records))
		}
		for _, r := range page.Records {
			id := r["l_uuid"].(string)
			if seen[id] {
				t.Fatalf("%s twice", id)
			}
			seen[id] = true
		}
		if pages == 1 {
			// A record already shown goes away: the next page still starts right.
			if _, err := h.rpc(true, "uac.reg_remove", "acc00"); err != nil {
				t.Fatal(err)
			}
		}
		if page.Next == nil {
			if pages != 3 {
				t.Errorf("%d pages", pages)
			}
			break
		}
		args = []any{nil, 10, *page.Next}
	}
	if len(seen) != 25 {
		t.Errorf("saw %d records", len(seen))
	}
	for _, a := range [][]any{{nil, 0}, {nil, 5, "!!"}} {
		if _, err := h.rpc(false, "uac.reg_dump", a...); rpcCode(err) != 400 {
			t.Errorf("%v: %v, want 400", a, err)
		}
	}
}

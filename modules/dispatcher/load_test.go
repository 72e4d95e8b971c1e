package dispatcher

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/core/dnsres"
	"github.com/kamgo/kamgo/modules/core/dnsres/dnstest"
)

func TestParseList(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"1 sip:10.0.0.1\n", ""},
		{"# c\n\n1 sip:10.0.0.1 0 0 weight=5 the gateway\n", ""},
		{"x sip:10.0.0.1\n", "l:1: setid \"x\" is not a number"},
		{"1\n", "l:1: want"},
		{"1 sip:a b\n", "l:1: flags \"b\""},
		{"1 sip:a 0 z\n", "l:1: priority \"z\""},
		{"1 http://x\n", "l:1: invalid SIP URI"},
		{"1 sip:a 0 0 weight=101\n", "weight and rweight must be 0..100"},
	} {
		_, err := parseList("l", bufio.NewScanner(strings.NewReader(tc.src)))
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%q: got %v, want %q", tc.src, err, tc.want)
		}
	}
}

func TestLoadTable(t *testing.T) {
	db, err := core.OpenDB(filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := loadTable(db, "dispatcher"); err != nil { // creates it with its version row
		t.Fatal(err)
	}
	var v int
	if err := db.QueryRow(`SELECT table_version FROM version WHERE table_name='dispatcher'`).Scan(&v); err != nil || v != 4 {
		t.Fatalf("version %d %v", v, err)
	}
	_, err = db.Exec(`INSERT INTO dispatcher (setid, destination, flags, priority, attrs, description) VALUES
		(1, 'sip:10.0.0.1:5060', 0, 1, 'duid=a;weight=30', 'gw a'), (1, 'sip:10.0.0.2:5060', 4, 9, '', ''), (7, 'sip:gw.invalid', 8, 0, '', '')`)
	if err != nil {
		t.Fatal(err)
	}
	sets, err := loadTable(db, "dispatcher")
	if err != nil {
		t.Fatal(err)
	}
	s := sets[1]
	if len(sets) != 2 || len(s.Dests) != 2 || s.Dests[0].URI != "sip:10.0.0.2:5060" || s.Dests[0].Flags != FlagDisabled ||
		s.Dests[1].Weight != 30 || s.Dests[1].DUID != "a" || s.Dests[1].Description != "gw a" || sets[7].Dests[0].Flags != FlagProbing {
		t.Fatalf("sets %+v %+v", s.Dests[0], s.Dests[1])
	}
	if _, err := db.Exec(`INSERT INTO dispatcher (setid, destination) VALUES (2, 'nonsense')`); err != nil {
		t.Fatal(err)
	}
	if _, err := loadTable(db, "dispatcher"); err == nil || !strings.Contains(err.Error(), "row id 4") {
		t.Fatalf("got %v", err)
	}
}

func TestStateStrings(t *testing.T) {
	for f, want := range map[int]string{0: "AX", FlagProbing: "AP", FlagInactive | FlagProbing: "IP", FlagTrying: "TX", FlagDisabled: "DX"} {
		if got := stateString(f); got != want {
			t.Errorf("%d: %s want %s", f, got, want)
		}
	}
	for s, want := range map[string]int{"a": 0, "ip": FlagInactive | FlagProbing, "T": FlagTrying, "dp": FlagDisabled | FlagProbing} {
		if got, err := parseState(s); err != nil || got != want {
			t.Errorf("%q: %d %v", s, got, err)
		}
	}
	for _, s := range []string{"", "p", "x"} {
		if _, err := parseState(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestWeightSlots(t *testing.T) {
	ds := []*Dest{{Weight: 1}, {Weight: 1}, {Weight: 2}}
	sl := weightSlots(ds, func(x *Dest) int { return x.Weight })
	n := map[int]int{}
	for _, i := range sl[:4] {
		n[i]++
	}
	if len(sl) != 100 || n[2] != 2 || n[0] != 1 {
		t.Fatalf("first four %v", sl[:4])
	}
}

func TestIsFromListResolvesNames(t *testing.T) {
	s, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Set("gw.example.com", dnsres.TypeA, dnstest.Record{TTL: 60, IP: "192.0.2.44"})
	list := filepath.Join(t.TempDir(), "l")
	if err := os.WriteFile(list, []byte("3 sip:gw.example.com:5070\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := core.NewEnv(nil)
	dnsres.Use(env, dnsres.New(s.Addr()))
	mod := New(env)
	for _, p := range mod.Params {
		if p.Name == "list_file" {
			p.Set(core.Str(list))
		}
	}
	if err := mod.Init(); err != nil {
		t.Fatal(err)
	}
	d := Of(env)
	for _, tc := range []struct {
		ip   string
		port int
		want int64
	}{{"192.0.2.44", 5070, 1}, {"192.0.2.44", 5060, -1}, {"192.0.2.45", 5070, -1}} {
		if got := d.isFromList(&core.Msg{Env: env, SrcIP: tc.ip, SrcPort: tc.port}, 3, 0).Int; got != tc.want {
			t.Errorf("%s:%d: %d, want %d", tc.ip, tc.port, got, tc.want)
		}
	}
}

func TestReplyCodes(t *testing.T) {
	d := &DS{}
	s := "class=4;code=501"
	d.replyCodes.Store(&s)
	for code, want := range map[int]bool{200: true, 204: true, 404: true, 488: true, 501: true, 500: false, 503: false, 408: true, 302: false} {
		if got := d.probeOK(code); got != want {
			t.Errorf("%d: %v", code, got)
		}
	}
	for _, bad := range []string{"class=9", "code=99", "cls=4", "code=abc"} {
		if _, _, err := parseReplyCodes(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

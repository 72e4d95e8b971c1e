package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/kamgo/kamgo/rpc"
)

// pagedServer serves a ul.dump and a uac.reg_dump that page like kamd's
// (limit and cursor; Next/next while more remain) over fixed tables.
func pagedServer(t *testing.T, aors map[string]int, order []string, recs int) string {
	t.Helper()
	s := rpc.NewServer(rpc.Config{})
	type item struct {
		dom string
		aor string
	}
	var items []item
	for _, d := range order {
		for i := 0; i < aors[d]; i++ {
			items = append(items, item{d, fmt.Sprintf("user%04d@%s", i, d)})
		}
	}
	window := func(p rpc.Params, n int) (int, int, string, error) {
		limit, err := p.IntOr(1, n)
		if err != nil {
			return 0, 0, "", err
		}
		c, err := p.StringOr(2, "0")
		if err != nil {
			return 0, 0, "", err
		}
		from, _ := strconv.Atoi(c)
		to := min(from+limit, n)
		next := ""
		if to < n {
			next = strconv.Itoa(to)
		}
		return from, to, next, nil
	}
	params := []rpc.Param{{Name: "mode", Type: rpc.TypeString, Optional: true}, {Name: "limit", Type: rpc.TypeInt, Optional: true}, {Name: "cursor", Type: rpc.TypeString, Optional: true}}
	s.MustRegister(rpc.Method{Name: "ul.dump", ReadOnly: true, Params: params, Handler: func(ctx context.Context, p rpc.Params) (any, error) {
		from, to, next, err := window(p, len(items))
		if err != nil {
			return nil, err
		}
		// kamd's member order: Domain, Size, AoRs, Stats.
		type dom struct {
			Domain string         `json:"Domain"`
			Size   int            `json:"Size"`
			AoRs   []any          `json:"AoRs"`
			Stats  map[string]any `json:"Stats"`
		}
		doms := []map[string]*dom{}
		var cur *dom
		for _, it := range items[from:to] {
			if cur == nil || cur.Domain != it.dom {
				cur = &dom{Domain: it.dom, Size: 1024, AoRs: []any{}, Stats: map[string]any{"Records": aors[it.dom], "Max-Slots": 1}}
				doms = append(doms, map[string]*dom{"Domain": cur})
			}
			cur.AoRs = append(cur.AoRs, map[string]any{"Info": map[string]any{"AoR": it.aor, "Contacts": []any{map[string]any{"Contact": map[string]any{"Address": "sip:" + it.aor}}}}})
		}
		out := map[string]any{"Domains": doms}
		if next != "" {
			out["Next"] = next
		}
		return out, nil
	}})
	s.MustRegister(rpc.Method{Name: "uac.reg_dump", ReadOnly: true, Params: params, Handler: func(ctx context.Context, p rpc.Params) (any, error) {
		from, to, next, err := window(p, recs)
		if err != nil {
			return nil, err
		}
		list := []any{}
		for i := from; i < to; i++ {
			list = append(list, map[string]any{"l_uuid": strconv.Itoa(i), "flags": i})
		}
		if !p.Has(1) {
			return list, nil
		}
		out := map[string]any{"records": list}
		if next != "" {
			out["next"] = next
		}
		return out, nil
	}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return ln.Addr().String()
}

// TestPagedDumps: kamctl follows the cursors of ul.dump and uac.reg_dump and
// prints what one unpaged reply prints, readable and --json.
func TestPagedDumps(t *testing.T) {
	for _, c := range []struct {
		name  string
		aors  map[string]int
		order []string
		recs  int
	}{
		{"empty", map[string]int{}, nil, 0},
		{"one page", map[string]int{"location": 3}, []string{"location"}, 5},
		{"many pages, two tables", map[string]int{"location": 1234, "extra": 501}, []string{"location", "extra"}, 2345},
	} {
		t.Run(c.name, func(t *testing.T) {
			url := "ws://" + pagedServer(t, c.aors, c.order, c.recs) + "/ws"
			for _, m := range []string{"ul.dump", "uac.reg_dump"} {
				// The whole table in one reply: explicit params are sent as typed.
				whole := []string{"-s", url, m, "full", "100000"}
				if m == "uac.reg_dump" {
					whole = []string{"-s", url, m}
				}
				for _, js := range []bool{false, true} {
					args := []string{"-s", url, m}
					w := whole
					if js {
						args = append([]string{"--json"}, args...)
						w = append([]string{"--json"}, w...)
					}
					got, want := kamctl(t, nil, args...), kamctl(t, nil, w...)
					if got.code != 0 || want.code != 0 {
						t.Fatalf("%s json=%v: exit %d %q / %d %q", m, js, got.code, got.stderr, want.code, want.stderr)
					}
					if !js {
						if got.stdout != want.stdout {
							t.Errorf("%s: paged output differs:\n%.600s\nwant:\n%.600s", m, got.stdout, want.stdout)
						}
						continue
					}
					var g, w2 any
					if err := json.Unmarshal([]byte(got.stdout), &g); err != nil {
						t.Fatalf("%s --json: not one JSON document: %v\n%.400s", m, err, got.stdout)
					}
					json.Unmarshal([]byte(want.stdout), &w2)
					if !reflect.DeepEqual(g, w2) {
						t.Errorf("%s --json differs:\n%.600s\nwant:\n%.600s", m, got.stdout, want.stdout)
					}
				}
			}
			if n := c.aors["location"]; n > 0 {
				out := kamctl(t, nil, "-s", url, "ul.dump").stdout
				if k := strings.Count(out, "AoR: user"); k != n+c.aors["extra"] {
					t.Errorf("%d AoRs printed, want %d", k, n+c.aors["extra"])
				}
			}
		})
	}
}

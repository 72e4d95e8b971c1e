package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/kamgo/kamgo/modules/core"
	dto "github.com/prometheus/client_model/go"
)

func TestStatName(t *testing.T) {
	for _, tc := range []struct {
		group, name string
		gauge       bool
		want        string
	}{
		{"core", "rcv_requests", false, "kamd_core_rcv_requests_total"},
		{"sl", "200_replies", false, "kamd_sl_200_replies_total"},
		{"tm", "current", true, "kamd_tm_current"},
		{"my-mod", "a.b", false, "kamd_my_mod_a_b_total"},
	} {
		if got := StatName(tc.group, tc.name, tc.gauge); got != tc.want {
			t.Errorf("StatName(%q, %q, %v) = %q, want %q", tc.group, tc.name, tc.gauge, got, tc.want)
		}
	}
}

// fakeRPC answers the module methods the collector calls, in their RPC shapes.
var fakeRPC = map[string]string{
	"ul.dump":      `"a scrape must not dump"`,
	"uac.reg_dump": `"a scrape must not dump"`,
	"ipsec.stats":  `{"enabled":true,"sets":{"temporary":1,"established":2,"deleting":0},"pairs_used":3,"pairs_total":100,"plaintext_dropped":4,"xfrm_stat":{"XfrmInNoStates":5}}`,
	"ipsec.list":   `[{"ue":"u1","sas":[{"name":"A","spi":1000,"dir":"in","in_kernel":true,"packets":7,"bytes":700,"integrity_failed":1,"replay":0},{"name":"B","spi":1001,"dir":"out","in_kernel":false}]}]`,
}

func TestCollector(t *testing.T) {
	st := core.NewStats()
	st.Counter("core", "rcv_requests").Add(5)
	cur := st.Counter("tm", "current")
	cur.NoReset = true
	cur.Set(2)
	st.Counter("uac", "reg_403_replies").Add(3)
	st.Counter("uac", "reg_200_replies").Add(1)
	m := New(Source{
		Stats: st,
		Call: func(ctx context.Context, method string, params ...any) (json.RawMessage, error) {
			if method == "ul.dump" || method == "uac.reg_dump" {
				t.Errorf("the collector called %s", method)
			}
			if s, ok := fakeRPC[method]; ok {
				return json.RawMessage(s), nil
			}
			return nil, errors.New("no such method")
		},
		Has:         func(method string) bool { _, ok := fakeRPC[method]; return ok || method == "core.version" },
		Script:      func() (int64, string, string) { return 3, "abc", "route.star" },
		Subscribers: func() int { return 1 },
		Usrloc:      func() []TableCount { return []TableCount{{Table: "location", AoRs: 2, Contacts: 3}} },
		UACStates:   func() map[string]int { return map[string]int{"registered": 1, "failed": 2} },
		Version:     "1.2.3",
	})
	m.ObserveRPC("core.version", 0)
	m.ObserveRPC("core.version", 403)
	m.ObserveRPC("made.up", -32601)
	fams, err := m.RegistrySA().Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	val := func(name string, labels ...string) (float64, dto.MetricType, bool) {
		f := byName[name]
		if f == nil {
			return 0, 0, false
		}
	next:
		for _, mm := range f.Metric {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range mm.Label {
					found = found || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
				}
				if !found {
					continue next
				}
			}
			if mm.Counter != nil {
				return mm.Counter.GetValue(), f.GetType(), true
			}
			return mm.Gauge.GetValue(), f.GetType(), true
		}
		return 0, 0, false
	}
	C, G := dto.MetricType_COUNTER, dto.MetricType_GAUGE
	for _, tc := range []struct {
		name   string
		labels []string
		v      float64
		typ    dto.MetricType
	}{
		{"kamd_core_rcv_requests_total", nil, 5, C},
		{"kamd_tm_current", nil, 2, G},
		{"kamd_uac_reg_replies_total", []string{"code", "403"}, 3, C},
		{"kamd_uac_reg_replies_total", []string{"code", "200"}, 1, C},
		{"kamd_uac_records", []string{"state", "failed"}, 2, G},
		{"kamd_uac_records", []string{"state", "idle"}, 0, G},
		{"kamd_usrloc_contacts", []string{"table", "location"}, 3, G},
		{"kamd_usrloc_aors", []string{"table", "location"}, 2, G},
		{"kamd_ipsec_sets", []string{"state", "established"}, 2, G},
		{"kamd_ipsec_spi_pairs_used", nil, 3, G},
		{"kamd_ipsec_plaintext_dropped_total", nil, 4, C},
		{"kamd_ipsec_xfrm_stat_total", []string{"name", "XfrmInNoStates"}, 5, C},
		{"kamd_ipsec_sa_packets_total", []string{"ue", "u1", "sa", "A", "spi", "1000"}, 7, C},
		{"kamd_ipsec_sa_integrity_failed_total", []string{"sa", "A"}, 1, C},
		{"kamd_script_version", nil, 3, G},
		{"kamd_rpc_event_subscribers", nil, 1, G},
		{"kamd_rpc_requests_total", []string{"method", "core.version", "result", "ok"}, 1, C},
		{"kamd_rpc_requests_total", []string{"method", "core.version", "result", "403"}, 1, C},
		{"kamd_rpc_requests_total", []string{"method", "unknown", "result", "-32601"}, 1, C},
	} {
		v, typ, ok := val(tc.name, tc.labels...)
		if !ok {
			t.Errorf("%s %v: missing", tc.name, tc.labels)
			continue
		}
		if v != tc.v || typ != tc.typ {
			t.Errorf("%s %v = %v (%v), want %v (%v)", tc.name, tc.labels, v, typ, tc.v, tc.typ)
		}
	}
	if _, _, ok := val("kamd_ipsec_sa_packets_total", "sa", "B"); ok {
		t.Errorf("an SA not in the kernel is exported")
	}
	if byName["kamd_uac_reg_403_replies_total"] != nil {
		t.Errorf("uac's per-code statistics are exported twice")
	}
	if byName["go_goroutines"] == nil {
		t.Errorf("no Go runtime metrics")
	}
}

// TestCollectorNoSA: the per-SA IPsec series are opt-in (?ipsec_sa=1).
func TestCollectorNoSA(t *testing.T) {
	listed := false
	m := New(Source{
		Stats: core.NewStats(),
		Call: func(ctx context.Context, method string, params ...any) (json.RawMessage, error) {
			listed = listed || method == "ipsec.list"
			return json.RawMessage(fakeRPC[method]), nil
		},
		Has: func(method string) bool { _, ok := fakeRPC[method]; return ok },
	})
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	if listed {
		t.Errorf("ipsec.list called without ipsec_sa=1")
	}
	var sets bool
	for _, f := range fams {
		if strings.HasPrefix(f.GetName(), "kamd_ipsec_sa_") {
			t.Errorf("%s exported without ipsec_sa=1", f.GetName())
		}
		sets = sets || f.GetName() == "kamd_ipsec_sets"
	}
	if !sets {
		t.Errorf("kamd_ipsec_sets missing")
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics?ipsec_sa=1", nil))
	if !strings.Contains(rec.Body.String(), `kamd_ipsec_sa_packets_total{dir="in",sa="A",spi="1000",ue="u1"} 7`) {
		t.Errorf("?ipsec_sa=1 has no per-SA series:\n%s", rec.Body.String())
	}
}

// TestCollectorInvalidUTF8: label values from data (a script path, an AoR's
// table, a UE) that are not UTF-8 must not panic inside Gather (kamd would
// die at the next scrape); they are exported with U+FFFD instead.
func TestCollectorInvalidUTF8(t *testing.T) {
	bad := "/etc/kam\xff\xfe.star"
	m := New(Source{
		Stats:   core.NewStats(),
		Script:  func() (int64, string, string) { return 1, "abc", bad },
		Usrloc:  func() []TableCount { return []TableCount{{Table: "loc\xc3", AoRs: 1, Contacts: 1}} },
		Version: "v\x80",
		Call: func(ctx context.Context, method string, params ...any) (json.RawMessage, error) {
			return json.RawMessage(`[{"ue":"u\\udcff","sas":[{"name":"A","spi":1,"dir":"in","in_kernel":true}]}]`), nil
		},
		Has: func(method string) bool { return method == "ul.dump" },
	})
	st := m.src.Stats
	st.Counter("scr\xffipt", "n").Inc()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	want := map[string]string{"kamd_script_info": "/etc/kam\uFFFD.star", "kamd_usrloc_contacts": "loc\uFFFD", "kamd_build_info": "v\uFFFD"}
	for _, f := range fams {
		w, ok := want[f.GetName()]
		if !ok {
			continue
		}
		delete(want, f.GetName())
		found := false
		for _, lp := range f.Metric[0].Label {
			found = found || lp.GetValue() == w
		}
		if !found {
			t.Errorf("%s labels %v, want a value %q", f.GetName(), f.Metric[0].Label, w)
		}
	}
	for n := range want {
		t.Errorf("%s missing", n)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 || !utf8.Valid(rec.Body.Bytes()) {
		t.Errorf("scrape: %d, valid UTF-8 %v", rec.Code, utf8.Valid(rec.Body.Bytes()))
	}
}

// Package metrics is kamd's Prometheus endpoint (GET /metrics on the RPC
// listener). Everything is read at scrape time: the statistics registry
// (core, sl, tm, registrar, usrloc, uac, script groups), usrloc's and uac's
// counts through their Go APIs (never a dump: a scrape must not encode the
// location table, nor fail with 507 on a large one), and, through the RPC
// methods a dashboard calls (in process, not counted as RPC requests),
// IPsec's SA sets (per-SA series only when asked: ?ipsec_sa=1). Nothing
// is counted twice on the SIP path; the only counter kept here is the RPC
// requests one, fed by rpc.Config.Observe.
//
// Names follow one scheme, documented in docs/metrics.md:
// kamd_<group>_<name>, counters ending in _total, plus Go's own go_* and
// process_* metrics.
package metrics

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kamgo/kamgo/modules/core"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Source is what the collector reads at scrape time.
type Source struct {
	Stats *core.Stats
	// Call runs an RPC method in process with the admin role (rpc.Server.Call).
	Call func(ctx context.Context, method string, params ...any) (json.RawMessage, error)
	// Has reports whether a method is registered (its module is loaded).
	Has func(method string) bool
	// Script returns the running script's version, sha256 and path.
	Script func() (version int64, sha256, path string)
	// Subscribers is the number of websocket event subscribers.
	Subscribers func() int
	// Usrloc returns the AoRs and contacts per location table (nil when
	// usrloc is not loaded); read at scrape time, no RPC, no dump.
	Usrloc func() []TableCount
	// UACStates returns uac's records per state (nil when uac is not loaded).
	UACStates func() map[string]int
	Version   string
	Log       *slog.Logger
}

// TableCount is one location table's size.
type TableCount struct {
	Table          string
	AoRs, Contacts int
}

// Metrics owns the Prometheus registry.
type Metrics struct {
	src Source
	reg *prometheus.Registry
	// regSA is reg plus the per-SA IPsec series (GET /metrics?ipsec_sa=1):
	// opt-in, since they grow with the UEs (ue and spi labels).
	regSA *prometheus.Registry
	rpcs  *prometheus.CounterVec
}

// UAC record states, always exported (0 included) so that dashboards have
// every series from the start.
var uacStates = []string{"disabled", "idle", "registering", "authenticating", "registered", "failed", "unregistering", "invalid"}

// IPsec set states.
var ipsecStates = []string{"temporary", "established", "deleting"}

// New builds the registry: the kamd collector, RPC requests, Go runtime and process metrics.
func New(src Source) *Metrics {
	if src.Log == nil {
		src.Log = slog.New(slog.DiscardHandler)
	}
	m := &Metrics{src: src, reg: prometheus.NewRegistry()}
	m.rpcs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kamd_rpc_requests_total",
		Help: "JSON-RPC requests received over /ws and /RPC, by method and result (ok or the error code).",
	}, []string{"method", "result"})
	goc, proc := collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})
	m.reg.MustRegister(m.rpcs, &collector{m: m}, goc, proc)
	m.regSA = prometheus.NewRegistry()
	m.regSA.MustRegister(m.rpcs, &collector{m: m, sa: true}, goc, proc)
	return m
}

// ObserveRPC counts one RPC request (rpc.Config.Observe). Unknown method
// names are counted as "unknown" so a client cannot grow the label set.
func (m *Metrics) ObserveRPC(method string, code int) {
	if code == -32601 || m.src.Has != nil && !m.src.Has(method) {
		method = "unknown"
	}
	result := "ok"
	if code != 0 {
		result = strconv.Itoa(code)
	}
	m.rpcs.WithLabelValues(method, result).Inc()
}

// Handler serves the registry in the Prometheus text format;
// ?ipsec_sa=1 adds the per-SA IPsec series.
func (m *Metrics) Handler() http.Handler {
	opts := promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(m.src.Log.Handler(), slog.LevelWarn)}
	plain, sa := promhttp.HandlerFor(m.reg, opts), promhttp.HandlerFor(m.regSA, opts)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("ipsec_sa") == "1" {
			sa.ServeHTTP(w, r)
			return
		}
		plain.ServeHTTP(w, r)
	})
}

// Registry is the registry (tests gather it directly).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// RegistrySA is the registry with the per-SA IPsec series.
func (m *Metrics) RegistrySA() *prometheus.Registry { return m.regSA }

type collector struct {
	m  *Metrics
	sa bool // export the per-SA IPsec series
}

// Describe sends nothing: the statistics set grows at runtime (sl's per-code
// counters, a module loaded by a reload), so this is an unchecked collector.
func (c *collector) Describe(chan<- *prometheus.Desc) {}

var (
	nameRe     = regexp.MustCompile(`[^a-zA-Z0-9_]`)
	uacReplyRe = regexp.MustCompile(`^reg_(\d{3})_replies$`)
)

// StatName is the metric name of statistic group:name (counters get _total).
func StatName(group, name string, gauge bool) string {
	n := "kamd_" + nameRe.ReplaceAllString(group, "_") + "_" + nameRe.ReplaceAllString(name, "_")
	if !gauge {
		n += "_total"
	}
	return n
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.stats(ch)
	if m.src.Version != "" {
		ch <- constGauge("kamd_build_info", "kamd's version (value 1).", 1, []string{"version"}, m.src.Version)
	}
	if m.src.Script != nil {
		v, sha, path := m.src.Script()
		ch <- constGauge("kamd_script_version", "Version number of the running script (1 at start, +1 per reload; a rollback goes back to the previous number).", float64(v), nil)
		ch <- constGauge("kamd_script_info", "The running script (value 1).", 1, []string{"sha256", "path"}, sha, path)
	}
	if m.src.Subscribers != nil {
		ch <- constGauge("kamd_rpc_event_subscribers", "Websocket connections subscribed to events (dashboards, kamctl monitor).", float64(m.src.Subscribers()), nil)
	}
	has := func(name string) bool { return m.src.Has != nil && m.src.Has(name) && m.src.Call != nil }
	loaded := func(name string) bool { return m.src.Has == nil || m.src.Has(name) }
	if m.src.Usrloc != nil && loaded("ul.dump") {
		c.usrloc(ch)
	}
	if m.src.UACStates != nil && loaded("uac.reg_dump") {
		c.uac(ch)
	}
	if has("ipsec.stats") {
		c.ipsec(ctx, ch)
	}
}

// stats exports the statistics registry: a counter per statistic, a gauge
// for those stats.reset_statistics leaves alone (tm:current, uac:regactive...).
func (c *collector) stats(ch chan<- prometheus.Metric) {
	st := c.m.src.Stats
	if st == nil {
		return
	}
	all := st.Get("all")
	keys := make([]string, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	uacCodes := map[string]float64{}
	for _, key := range keys {
		group, name, _ := strings.Cut(key, ":")
		key := strings.ToValidUTF8(key, "?") // the help text, from a script's name
		ctr := st.Counter(group, name)
		v := float64(ctr.Value())
		if group == "uac" {
			if sm := uacReplyRe.FindStringSubmatch(name); sm != nil {
				uacCodes[sm[1]] = v
				continue
			}
		}
		if ctr.NoReset {
			ch <- constGauge(StatName(group, name, true), "Statistic "+key+" (gauge).", v, nil)
		} else {
			ch <- constMetric(prometheus.NewDesc(StatName(group, name, false), "Statistic "+key+".", nil, nil), prometheus.CounterValue, v)
		}
	}
	if len(uacCodes) > 0 {
		d := prometheus.NewDesc("kamd_uac_reg_replies_total", "Final replies to uac's REGISTERs (registration attempts), by status code.", []string{"code"}, nil)
		for code, v := range uacCodes {
			ch <- constMetric(d, prometheus.CounterValue, v, code)
		}
	}
}

func constGauge(name, help string, v float64, labels []string, values ...string) prometheus.Metric {
	return constMetric(prometheus.NewDesc(name, help, labels, nil), prometheus.GaugeValue, v, values...)
}

// constMetric is prometheus.MustNewConstMetric with the label values made
// valid UTF-8 first: they come from data (a script path, an AoR, a UE
// address, a statistic's name) and an invalid one would make Must panic
// inside Gather, killing kamd. A metric that still fails is dropped
// (prometheus.NewInvalidMetric reports it in the scrape) instead.
func constMetric(d *prometheus.Desc, t prometheus.ValueType, v float64, values ...string) prometheus.Metric {
	for i, s := range values {
		if !utf8.ValidString(s) {
			values[i] = strings.ToValidUTF8(s, "\uFFFD")
		}
	}
	m, err := prometheus.NewConstMetric(d, t, v, values...)
	if err != nil {
		return prometheus.NewInvalidMetric(d, err)
	}
	return m
}

func (c *collector) call(ctx context.Context, out any, method string, params ...any) bool {
	raw, err := c.m.src.Call(ctx, method, params...)
	if err != nil {
		c.m.src.Log.Debug("metrics: rpc call failed", "method", method, "err", err)
		return false
	}
	if err := json.Unmarshal(raw, out); err != nil {
		c.m.src.Log.Warn("metrics: unexpected rpc result", "method", method, "err", err)
		return false
	}
	return true
}

func (c *collector) usrloc(ch chan<- prometheus.Metric) {
	tables := c.m.src.Usrloc()
	if tables == nil {
		return
	}
	contacts := prometheus.NewDesc("kamd_usrloc_contacts", "Contacts in memory per location table (expired ones not yet swept included).", []string{"table"}, nil)
	aors := prometheus.NewDesc("kamd_usrloc_aors", "AoRs with at least one contact per location table.", []string{"table"}, nil)
	for _, t := range tables {
		ch <- constMetric(contacts, prometheus.GaugeValue, float64(t.Contacts), t.Table)
		ch <- constMetric(aors, prometheus.GaugeValue, float64(t.AoRs), t.Table)
	}
}

func (c *collector) uac(ch chan<- prometheus.Metric) {
	got := c.m.src.UACStates()
	if got == nil {
		return
	}
	by := map[string]int{}
	for _, s := range uacStates {
		by[s] = 0
	}
	for s, n := range got {
		by[s] += n
	}
	d := prometheus.NewDesc("kamd_uac_records", "uacreg records by registration state.", []string{"state"}, nil)
	for s, n := range by {
		ch <- constMetric(d, prometheus.GaugeValue, float64(n), s)
	}
}

func (c *collector) ipsec(ctx context.Context, ch chan<- prometheus.Metric) {
	var st struct {
		Enabled          bool             `json:"enabled"`
		Sets             map[string]int   `json:"sets"`
		PairsUsed        *int             `json:"pairs_used"`
		PairsTotal       *int             `json:"pairs_total"`
		PlaintextDropped int64            `json:"plaintext_dropped"`
		KernelStates     *int             `json:"kernel_states"`
		KernelPolicies   *int             `json:"kernel_policies"`
		XfrmStat         map[string]int64 `json:"xfrm_stat"`
	}
	if !c.call(ctx, &st, "ipsec.stats") {
		return
	}
	sets := prometheus.NewDesc("kamd_ipsec_sets", "IPsec SA sets (one per UE registration) by state.", []string{"state"}, nil)
	for _, s := range ipsecStates {
		ch <- constMetric(sets, prometheus.GaugeValue, float64(st.Sets[s]), s)
	}
	ch <- constMetric(prometheus.NewDesc("kamd_ipsec_plaintext_dropped_total", "Plaintext requests dropped on protected ports.", nil, nil), prometheus.CounterValue, float64(st.PlaintextDropped))
	opt := func(name, help string, v *int) {
		if v != nil {
			ch <- constGauge(name, help, float64(*v), nil)
		}
	}
	opt("kamd_ipsec_spi_pairs_used", "SPI pairs in use.", st.PairsUsed)
	opt("kamd_ipsec_spi_pairs", "SPI pairs in the pool.", st.PairsTotal)
	opt("kamd_ipsec_kernel_states", "Kernel XFRM states in kamd's SPI range.", st.KernelStates)
	opt("kamd_ipsec_kernel_policies", "Kernel XFRM policies kamd installed.", st.KernelPolicies)
	if len(st.XfrmStat) > 0 {
		d := prometheus.NewDesc("kamd_ipsec_xfrm_stat_total", "The kernel's /proc/net/xfrm_stat counters (host-wide), by name.", []string{"name"}, nil)
		for n, v := range st.XfrmStat {
			ch <- constMetric(d, prometheus.CounterValue, float64(v), n)
		}
	}
	if !c.sa {
		return
	}
	var list []struct {
		UE  string `json:"ue"`
		SAs []struct {
			Name            string `json:"name"`
			SPI             uint32 `json:"spi"`
			Dir             string `json:"dir"`
			InKernel        bool   `json:"in_kernel"`
			Packets         uint64 `json:"packets"`
			Bytes           uint64 `json:"bytes"`
			IntegrityFailed uint64 `json:"integrity_failed"`
			Replay          uint64 `json:"replay"`
		} `json:"sas"`
	}
	if !c.call(ctx, &list, "ipsec.list") {
		return
	}
	labels := []string{"ue", "sa", "dir", "spi"}
	pk := prometheus.NewDesc("kamd_ipsec_sa_packets_total", "Packets through one kernel SA.", labels, nil)
	by := prometheus.NewDesc("kamd_ipsec_sa_bytes_total", "Bytes through one kernel SA.", labels, nil)
	ifl := prometheus.NewDesc("kamd_ipsec_sa_integrity_failed_total", "Packets of one kernel SA that failed the integrity check.", labels, nil)
	rp := prometheus.NewDesc("kamd_ipsec_sa_replay_total", "Packets of one kernel SA dropped by the replay window.", labels, nil)
	for _, s := range list {
		for _, sa := range s.SAs {
			if !sa.InKernel {
				continue
			}
			lv := []string{s.UE, sa.Name, sa.Dir, strconv.FormatUint(uint64(sa.SPI), 10)}
			ch <- constMetric(pk, prometheus.CounterValue, float64(sa.Packets), lv...)
			ch <- constMetric(by, prometheus.CounterValue, float64(sa.Bytes), lv...)
			ch <- constMetric(ifl, prometheus.CounterValue, float64(sa.IntegrityFailed), lv...)
			ch <- constMetric(rp, prometheus.CounterValue, float64(sa.Replay), lv...)
		}
	}
}

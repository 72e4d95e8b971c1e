package ims_ipsec_pcscf

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"sort"
	"time"

	"github.com/kamgo/kamgo/modules/core"
)

const setShape = `{"ue", "aor", "contact", "domain", "ue_ip", "pcscf_ip", "alg", "ealg", "state": "temporary|established|deleting", "created", "expires" (RFC 3339), "port_uc", "port_us", "port_pc", "port_ps", "spi_uc", "spi_us", "spi_pc", "spi_ps", "sas": [{"name": "A".."D", "spi", "dir": "in|out", "src", "sport", "dst", "dport", "in_kernel", "packets", "bytes", "integrity_failed", "replay"}] (+ "ck", "ik" with ipsec_rpc_show_keys=1)}`

func (m *mod) rpcMethods() []core.RPCMethod {
	key := core.RPCParam{Name: "ue", Type: "string", Doc: "AoR, UE IP, or UE IP:port_uc"}
	return []core.RPCMethod{
		{Name: "ipsec.list", Doc: "every UE's SA set with the kernel's counters per SA (page it with limit and cursor)", ReadOnly: true,
			Params: []core.RPCParam{
				{Name: "limit", Type: "int", Optional: true, Doc: "at most this many sets in this page; the result becomes {\"records\": [...], \"next\": cursor}"},
				{Name: "cursor", Type: "string", Optional: true, Doc: "the next value of the previous page"}},
			Result: "[" + setShape + `]; paged (limit or cursor given): {"records": [the same sets], "next": cursor (only when more remain)}; 400 "Invalid limit", 400 "Invalid cursor"`, Handler: m.rpcList},
		{Name: "ipsec.get", Doc: "the SA sets of one UE", ReadOnly: true, Params: []core.RPCParam{key},
			Result: "[" + setShape + `]; 404 "not found"`, Handler: m.rpcGet},
		{Name: "ipsec.destroy", Doc: "remove the SA sets of one UE from the kernel and release their SPIs", Params: []core.RPCParam{key},
			Result: `{"removed": n}; 404 "not found"`, Handler: m.rpcDestroy},
		{Name: "ipsec.stats", Doc: "SPI pool usage, sets by state, kamgo's kernel states/policies, /proc/net/xfrm_stat", ReadOnly: true,
			Result: `{"enabled", "pairs_used", "pairs_total", "sets": {"temporary", "established", "deleting"}, "plaintext_dropped", "kernel_states", "kernel_policies", "xfrm_stat": {name: n}}`, Handler: m.rpcStats},
		{Name: "ipsec.audit", Doc: "kernel vs kamd: states in kamgo's range no set owns (leaked) and SAs of known sets the kernel lacks (missing)", ReadOnly: true,
			Result: `{"ok": bool, "leaked": [{"spi", "src", "sport", "dst", "dport"}], "missing": [{"ue", "name", "spi"}]}`, Handler: m.rpcAudit},
	}
}

func (m *mod) snapshot(sets []*ueSet) ([]map[string]any, error) {
	m.mu.Lock()
	rng := m.rng
	m.mu.Unlock()
	var states []StateInfo
	var kerr error
	if m.enabled() && rng.Local != nil {
		states, kerr = m.kernel.List(rng)
	}
	byKey := map[string]StateInfo{}
	for _, st := range states {
		byKey[fmt.Sprintf("%s/%d", st.Dst, st.SPI)] = st
	}
	show := m.showKeys.Load() == 1
	out := make([]map[string]any, 0, len(sets))
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range sets {
		var sas []map[string]any
		for _, sa := range s.set.SAs {
			st, ok := byKey[fmt.Sprintf("%s/%d", sa.Dst, sa.SPI)]
			sas = append(sas, map[string]any{"name": sa.Name, "spi": sa.SPI, "dir": sa.Dir.String(),
				"src": sa.Src.String(), "sport": sa.SrcPort, "dst": sa.Dst.String(), "dport": sa.DstPort,
				"in_kernel": ok, "packets": st.Packets, "bytes": st.Bytes, "integrity_failed": st.IntegrityFailed, "replay": st.Replay})
		}
		e := map[string]any{"ue": s.id, "aor": s.aor, "contact": s.contact, "domain": s.domain,
			"ue_ip": s.ue.IP.String(), "pcscf_ip": s.p.IP.String(), "alg": s.alg, "ealg": s.ealg, "state": s.state,
			"created": s.created.UTC().Format(time.RFC3339), "expires": s.expires.UTC().Format(time.RFC3339),
			"port_uc": s.ue.PortC, "port_us": s.ue.PortS, "port_pc": s.p.PortC, "port_ps": s.p.PortS,
			"spi_uc": s.ue.SpiC, "spi_us": s.ue.SpiS, "spi_pc": s.p.SpiC, "spi_ps": s.p.SpiS, "sas": sas}
		if show {
			e["ck"], e["ik"] = hex.EncodeToString(s.ck), hex.EncodeToString(s.ik)
		}
		out = append(out, e)
	}
	if kerr != nil {
		return out, &core.RPCError{Code: 500, Message: "kernel: " + kerr.Error()}
	}
	return out, nil
}

func (m *mod) all() []*ueSet {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*ueSet, 0, len(m.sets))
	for _, s := range m.sets {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

func hasArg(a core.RPCArgs, i int) bool {
	if h, ok := a.(interface{ Has(int) bool }); ok {
		return h.Has(i)
	}
	return i < a.Len()
}

// rpcList is ipsec.list: the whole list, or with limit/cursor one page
// in UE order (docs/rpc.md "Paging"). The cursor is the base64url of the
// first set not yet shown, so sets added or removed between pages do not
// shift the others.
func (m *mod) rpcList(ctx context.Context, a core.RPCArgs) (any, error) {
	if !hasArg(a, 0) && !hasArg(a, 1) {
		return m.snapshot(m.all())
	}
	limit := 0
	if hasArg(a, 0) {
		n, err := a.Int(0)
		if err != nil || n <= 0 {
			return nil, &core.RPCError{Code: 400, Message: "Invalid limit: want a number of sets above 0"}
		}
		limit = n
	}
	from := ""
	if hasArg(a, 1) {
		c, err := a.String(1)
		b, derr := base64.RawURLEncoding.DecodeString(c)
		if err != nil || derr != nil || len(b) == 0 {
			return nil, &core.RPCError{Code: 400, Message: "Invalid cursor: pass the next value of the previous page"}
		}
		from = string(b)
	}
	all := m.all()
	i := sort.Search(len(all), func(i int) bool { return all[i].id >= from })
	page := all[i:]
	next := ""
	if limit > 0 && len(page) > limit {
		next = base64.RawURLEncoding.EncodeToString([]byte(page[limit].id))
		page = page[:limit]
	}
	recs, err := m.snapshot(page)
	out := map[string]any{"records": recs}
	if next != "" {
		out["next"] = next
	}
	return out, err
}

func (m *mod) rpcGet(ctx context.Context, a core.RPCArgs) (any, error) {
	k, err := a.String(0)
	if err != nil {
		return nil, err
	}
	sets := m.match(k)
	if len(sets) == 0 {
		return nil, &core.RPCError{Code: 404, Message: "not found"}
	}
	sort.Slice(sets, func(i, j int) bool { return sets[i].id < sets[j].id })
	return m.snapshot(sets)
}

func (m *mod) rpcDestroy(ctx context.Context, a core.RPCArgs) (any, error) {
	k, err := a.String(0)
	if err != nil {
		return nil, err
	}
	if len(m.match(k)) == 0 {
		return nil, &core.RPCError{Code: 404, Message: "not found"}
	}
	return map[string]any{"removed": m.destroyMatching(k, "rpc")}, nil
}

func (m *mod) rpcStats(ctx context.Context, _ core.RPCArgs) (any, error) {
	m.mu.Lock()
	pool, rng := m.pool, m.rng
	by := map[string]int{StateTemporary: 0, StateEstablished: 0, StateDeleting: 0}
	for _, s := range m.sets {
		by[s.state]++
	}
	m.mu.Unlock()
	out := map[string]any{"enabled": m.enabled(), "sets": by, "plaintext_dropped": m.plainDropped.Load()}
	if pool == nil {
		return out, nil
	}
	out["pairs_used"], out["pairs_total"] = pool.Usage()
	if sts, err := m.kernel.List(rng); err == nil {
		out["kernel_states"] = len(sts)
	} else {
		out["kernel_error"] = err.Error()
	}
	if n, err := m.kernel.PolicyCount(rng); err == nil {
		out["kernel_policies"] = n
	}
	if xs, err := m.kernel.XfrmStat(); err == nil {
		out["xfrm_stat"] = xs
	}
	return out, nil
}

func (m *mod) rpcAudit(ctx context.Context, _ core.RPCArgs) (any, error) {
	m.mu.Lock()
	rng := m.rng
	m.mu.Unlock()
	if !m.enabled() || rng.Local == nil {
		return nil, &core.RPCError{Code: 503, Message: "ims_ipsec_pcscf not enabled (ipsec_listen_addr)"}
	}
	states, err := m.kernel.List(rng)
	if err != nil {
		return nil, &core.RPCError{Code: 500, Message: "kernel: " + err.Error()}
	}
	known := map[string]bool{}
	missing := []map[string]any{}
	inKernel := map[string]bool{}
	for _, st := range states {
		inKernel[fmt.Sprintf("%s/%d", st.Dst, st.SPI)] = true
	}
	for _, s := range m.all() {
		for _, sa := range s.set.SAs {
			k := fmt.Sprintf("%s/%d", sa.Dst, sa.SPI)
			known[k] = true
			if !inKernel[k] {
				missing = append(missing, map[string]any{"ue": s.id, "name": sa.Name, "spi": sa.SPI})
			}
		}
	}
	leaked := []map[string]any{}
	for _, st := range states {
		if !known[fmt.Sprintf("%s/%d", st.Dst, st.SPI)] {
			leaked = append(leaked, map[string]any{"spi": st.SPI, "src": st.Src, "sport": st.SrcPort, "dst": st.Dst, "dport": st.DstPort})
		}
	}
	return map[string]any{"ok": len(leaked) == 0 && len(missing) == 0, "leaked": leaked, "missing": missing}, nil
}

// Package rr is Kamailio's rr module: Record-Route insertion and Route
// processing (RFC 3261 16.4, 16.6 step 4, 16.12).
package rr

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

func init() { core.Register(New) }

// Kamailio's loose_route return codes.
const (
	rrDriven    = 1
	rrNotDriven = -1
	rrError     = -1
	rrPreloaded = -3
)

// state is what rr remembers about one message (m.Ext["rr"]).
type state struct {
	pending sip.HeaderParams         // add_rr_param before record_route
	added   []*sip.RecordRouteHeader // our RRs in this message
	routed  bool                     // loose_route consumed a Route of ours
	params  sip.HeaderParams         // the params of that Route URI (or of the R-URI after a strict router)
	req     *sip.Request             // the request added points into
}

// PerMessage tells tm not to keep the state with a transaction's module
// data (ReplyOut.Data): it is about this message only and points into its
// request, which it would keep alive.
func (*state) PerMessage() {}

func stateOf(m *core.Msg) *state {
	if s, ok := m.Ext["rr"].(*state); ok {
		if m.RouteType == core.RouteBranch && m.Req != nil && s.req != m.Req {
			// A branch route starts with the relaying message's state but
			// works on its own copy of the request: add_rr_param there
			// changes this branch's Record-Route (Kamailio's semantics).
			s = s.forBranch(m.Req)
			m.SetExt("rr", s)
		}
		return s
	}
	s := &state{req: m.Req}
	m.SetExt("rr", s)
	return s
}

// forBranch is a copy of s for a branch's request req: the Record-Route
// headers record_route added are the top ones of req (it clones them).
func (s *state) forBranch(req *sip.Request) *state {
	c := &state{req: req, routed: s.routed, params: s.params.Clone(),
		pending: append(sip.HeaderParams(nil), s.pending...)}
	if s.added == nil {
		return c
	}
	c.added = []*sip.RecordRouteHeader{}
	for _, h := range core.Headers(req) {
		if len(c.added) == len(s.added) {
			break
		}
		if rr, ok := h.(*sip.RecordRouteHeader); ok {
			c.added = append(c.added, rr)
		}
	}
	return c
}

// parseParams parses ";a=b;c" (the leading ';' is optional).
func parseParams(s string) (sip.HeaderParams, error) {
	if err := core.CheckText("rr params", s); err != nil {
		return nil, err
	}
	if s == "" {
		return nil, nil // record_route(): nothing to parse, nothing to allocate
	}
	out := sip.NewParams()
	for _, p := range strings.Split(strings.TrimPrefix(strings.TrimSpace(s), ";"), ";") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		k, v, _ := strings.Cut(p, "=")
		k = strings.TrimSpace(k)
		// Script text may carry request bytes ($fU, $hdr(...)): the same
		// rule as every value kamd writes into a URI.
		if err := core.CheckURIParam(k, v); err != nil {
			return nil, fmt.Errorf("invalid URI parameter %q in %q: %w", p, s, err)
		}
		out = append(out, sip.HeaderKV{K: k, V: v})
	}
	return out, nil
}

func hasParam(p sip.HeaderParams, name string) bool {
	for _, kv := range p {
		if strings.EqualFold(kv.K, name) {
			return true
		}
	}
	return false
}

func paramValue(p sip.HeaderParams, name string) (string, bool) {
	for _, kv := range p {
		if strings.EqualFold(kv.K, name) {
			return kv.V, true
		}
	}
	return "", false
}

func isStrict(u *sip.Uri) bool { return !hasParam(u.UriParams, "lr") }

func is2rr(u *sip.Uri) bool { return hasParam(u.UriParams, "r2") }

// headerIs is core.HeaderIs without its allocation: core lower-cases the
// name of every header whose length differs from the one asked for (a
// string per header and call, on every in-dialog request). Only a compact
// (one-letter) name needs core's table.
func headerIs(h sip.Header, canonical string) bool {
	n := strings.TrimSpace(h.Name())
	if len(n) == 1 {
		return core.HeaderIs(h, canonical)
	}
	return strings.EqualFold(n, canonical)
}

// routes returns the Route headers in order, turning untyped ones (added
// as generic text) into typed ones so they can be edited.
func routes(msg sip.Message) ([]*sip.RouteHeader, error) {
	// The usual case, every Route parsed already (or none): no copy.
	var out []*sip.RouteHeader
	typed := true
	for _, h := range core.Headers(msg) {
		if !headerIs(h, "route") {
			continue
		}
		rh, ok := h.(*sip.RouteHeader)
		if !ok {
			typed = false
			break
		}
		out = append(out, rh)
	}
	if typed {
		return out, nil
	}
	out = nil
	changed := false
	hs := append([]sip.Header(nil), core.Headers(msg)...)
	for i, h := range hs {
		if !headerIs(h, "route") {
			continue
		}
		if rh, ok := h.(*sip.RouteHeader); ok {
			out = append(out, rh)
			continue
		}
		parsed, err := core.ParseHeaderText("Route: " + h.Value())
		if err != nil {
			return nil, err
		}
		var typed []sip.Header
		for _, p := range parsed {
			rh, ok := p.(*sip.RouteHeader)
			if !ok {
				return nil, fmt.Errorf("unparsable Route header %q", h.Value())
			}
			out = append(out, rh)
			typed = append(typed, rh)
		}
		hs = append(hs[:i], append(typed, hs[i+1:]...)...)
		changed = true
	}
	if changed {
		core.SetHeaders(msg, hs)
	}
	return out, nil
}

func removeHeaders(msg sip.Message, drop ...sip.Header) {
	if removeFirst(msg, drop) {
		return
	}
	hs := core.Headers(msg)
	out := make([]sip.Header, 0, len(hs))
outer:
	for _, h := range hs {
		for _, d := range drop {
			if h == d {
				continue outer
			}
		}
		out = append(out, h)
	}
	core.SetHeaders(msg, out)
}

// headerEditor is what sipgo's messages offer to edit the header list in
// place (core.SetHeaders rebuilds it: a removal per header, then appends).
type headerEditor interface {
	RemoveHeader(name string) bool
	AppendHeaderAfter(h sip.Header, name string)
}

// removeFirst removes drop in place when each is, in turn, the first
// header of its name (our Route at the top of the Route set, as
// loose_route finds it), and reports whether it did; otherwise it leaves
// msg alone for the general path.
func removeFirst(msg sip.Message, drop []sip.Header) bool {
	ed, ok := msg.(headerEditor)
	if !ok {
		return false
	}
	hs := core.Headers(msg)
	for i, d := range drop {
		// Once drop[:i] are gone, d must be the first header of its name.
		found := false
		for _, h := range hs {
			if h.Name() != d.Name() || slices.Contains(drop[:i], h) {
				continue
			}
			if h != d {
				return false
			}
			found = true
			break
		}
		if !found {
			return false
		}
	}
	for _, d := range drop {
		ed.RemoveHeader(d.Name())
	}
	return true
}

// insertBefore puts hs before the first header named name, or after the
// last Via when there is none.
func insertBefore(msg sip.Message, name string, add []sip.Header) {
	if ed, ok := msg.(headerEditor); ok && name == "record-route" && afterViasOnly(msg) {
		// The usual initial request, no Record-Route yet: after the last
		// Via, in place. Each goes right after the Vias, so the last
		// inserted is the first.
		for i := len(add) - 1; i >= 0; i-- {
			ed.AppendHeaderAfter(add[i], "Via")
		}
		return
	}
	old := core.Headers(msg)
	at, lastVia := -1, 0
	c := core.CanonicalHeader(name)
	for i, h := range old {
		if at < 0 && headerIs(h, c) {
			at = i
		}
		if headerIs(h, "via") {
			lastVia = i + 1
		}
	}
	if at < 0 {
		at = lastVia
	}
	out := make([]sip.Header, 0, len(old)+len(add))
	out = append(out, old[:at]...)
	out = append(out, add...)
	out = append(out, old[at:]...)
	core.SetHeaders(msg, out)
}

// afterViasOnly reports whether msg has no Record-Route and has Via
// headers, all named "Via" (what sipgo's AppendHeaderAfter matches).
func afterViasOnly(msg sip.Message) bool {
	vias := 0
	for _, h := range core.Headers(msg) {
		if headerIs(h, "record-route") || (headerIs(h, "via") && h.Name() != "Via") {
			return false
		}
		if h.Name() == "Via" {
			vias++
		}
	}
	return vias > 0 // none: the general path puts it first
}

// maddrURI is Kamailio's get_maddr_uri: a maddr param turns the hop into sip:maddr[:port].
func maddrURI(u *sip.Uri) string {
	if ma, ok := paramValue(u.UriParams, "maddr"); ok && ma != "" {
		s := "sip:" + ma
		if u.Port > 0 {
			s += fmt.Sprintf(":%d", u.Port)
		}
		return s
	}
	return u.String()
}

type module struct {
	env      *core.Env
	fromTag  atomic.Bool
	doubleRR atomic.Bool
	fullLR   atomic.Bool
}

func (r *module) myself(u *sip.Uri) bool { return r.env.IsMyself(u.Host, u.Port) }

func (r *module) rrURI(sock core.Socket, ftag string, double bool, extra sip.HeaderParams) sip.Uri {
	u := sip.Uri{Scheme: "sip", Host: sock.Host(), Port: sock.Port, UriParams: sip.NewParams()}
	if sock.Proto != "" && sock.Proto != "udp" {
		u.UriParams = append(u.UriParams, sip.HeaderKV{K: "transport", V: sock.Proto})
	}
	if double {
		u.UriParams = append(u.UriParams, sip.HeaderKV{K: "r2", V: "on"})
	}
	lr := ""
	if r.fullLR.Load() {
		lr = "on"
	}
	u.UriParams = append(u.UriParams, sip.HeaderKV{K: "lr", V: lr})
	if ftag != "" && r.fromTag.Load() {
		// recordRoute made it a token and a URI param value
		// (EscapeURIParam), so this cannot fail.
		_ = core.SetURIParam(&u.UriParams, "ftag", ftag)
	}
	u.UriParams = append(u.UriParams, extra...)
	return u
}

func (r *module) recordRoute(m *core.Msg, params string) (core.Val, error) {
	if m.Req == nil {
		return core.Null, core.ErrNoRequest
	}
	extra, err := parseParams(params)
	if err != nil {
		return core.Null, err
	}
	st := stateOf(m)
	if st.added != nil {
		r.env.Log.Warn("rr: double attempt to record-route", "at", m.Pos())
		return core.Int(-1), nil
	}
	in := m.Local
	if in.Port == 0 || in.IP == "" {
		s, ok := r.env.SocketFor(m.Proto)
		if !ok {
			r.env.Log.Warn("rr: no socket for record_route", "proto", m.Proto, "at", m.Pos())
			return core.Int(-1), nil
		}
		in = s
	}
	ftag := ""
	if f := m.Req.From(); f != nil {
		ftag, _ = f.Params.Get("tag")
	}
	if ftag != "" && r.fromTag.Load() {
		// The tag is copied into our Record-Route URI: one that is not a
		// token could add hops to the route set (issue 16). Kamailio would
		// copy it; we answer 400 and end the script.
		if !core.IsToken(ftag) {
			return r.refuse(m, "Bad From tag", fmt.Errorf("%w: From tag %q is not a token", core.ErrBadValue, ftag))
		}
		ftag = core.EscapeURIParam(ftag)
	}
	extra = append(extra, st.pending...)
	st.pending = nil
	var out core.Socket
	double := false
	if r.doubleRR.Load() {
		if dst, err := m.NextHop(); err == nil {
			if s, ok := r.env.SocketFor(dst.Proto); ok && (s.Proto != in.Proto || s.IP != in.IP || s.Port != in.Port) {
				out, double = s, true
			}
		}
	}
	var add []sip.Header
	if double {
		// The RR nearest to the callee names the socket facing it.
		h := &sip.RecordRouteHeader{Address: r.rrURI(out, ftag, true, extra.Clone())}
		st.added = append(st.added, h)
		add = append(add, h)
	}
	h := &sip.RecordRouteHeader{Address: r.rrURI(in, ftag, double, extra.Clone())}
	st.added = append(st.added, h)
	add = append(add, h)
	insertBefore(m.Req, "record-route", add)
	return core.Int(1), nil
}

// refuse answers the request 400 with reason and ends the script: what
// record_route was asked to write cannot be written safely.
func (r *module) refuse(m *core.Msg, reason string, why error) (core.Val, error) {
	r.env.Log.Info("rr: request refused", "reason", reason, "err", why, "src", m.SrcIP, "at", m.Pos())
	if m.Req.IsAck() || m.Replied {
		return core.Null, core.ErrExit
	}
	if err := m.Reply(400, reason); err != nil {
		r.env.Log.Warn("rr: cannot send 400", "err", err, "at", m.Pos())
	}
	return core.Null, core.ErrExit
}

func (r *module) addRRParam(m *core.Msg, params string) (core.Val, error) {
	if m.Req == nil {
		return core.Null, core.ErrNoRequest
	}
	ps, err := parseParams(params)
	if err != nil {
		return core.Null, err
	}
	st := stateOf(m)
	if st.added == nil {
		st.pending = append(st.pending, ps...)
		return core.Int(1), nil
	}
	for _, h := range st.added {
		h.Address.UriParams = append(h.Address.UriParams, ps...)
	}
	return core.Int(1), nil
}

func (r *module) setRURI(m *core.Msg, u string) error {
	if err := m.SetRURI(u); err != nil {
		return fmt.Errorf("rr: cannot use Route %q as R-URI: %w", u, err)
	}
	return nil
}

// looseRoute implements loose_route; looseOnly is Kamailio's mode 1.
func (r *module) looseRoute(m *core.Msg, looseOnly bool) (int, error) {
	if m.Req == nil {
		return 0, core.ErrNoRequest
	}
	// The state records what this call routes; a message without one has
	// routed nothing yet (no allocation for the initial requests).
	if _, ok := m.Ext["rr"].(*state); ok {
		st := stateOf(m)
		st.routed, st.params = false, nil
	}
	rts, err := routes(m.Req)
	if err != nil {
		r.env.Log.Warn("rr: bad Route header", "err", err, "at", m.Pos())
		return rrError, nil
	}
	if len(rts) == 0 {
		return rrNotDriven, nil
	}
	to := m.Req.To()
	if to == nil {
		return rrError, nil
	}
	preloaded := !to.Params.Has("tag")
	st := stateOf(m)
	if !preloaded && !looseOnly && r.myself(&m.Req.Recipient) {
		return r.afterStrict(m, st, rts)
	}
	return r.afterLoose(m, st, rts, preloaded)
}

func (r *module) afterStrict(m *core.Msg, st *state, rts []*sip.RouteHeader) (int, error) {
	i := 0
	if r.doubleRR.Load() && is2rr(&rts[0].Address) && r.myself(&rts[0].Address) {
		removeHeaders(m.Req, rts[0])
		i = 1
		if len(rts) < 2 {
			return rrNotDriven, nil
		}
	}
	st.routed, st.params = true, m.Req.Recipient.UriParams.Clone()
	next := rts[i]
	if isStrict(&next.Address) {
		// Strict router next, too: behave like one.
		if err := r.setRURI(m, maddrURI(&next.Address)); err != nil {
			return rrError, err
		}
		removeHeaders(m.Req, next)
		return rrDriven, nil
	}
	if err := m.SetDstURI(maddrURI(&next.Address)); err != nil {
		return rrError, err
	}
	// Recover from the previous strict router: the last Route is the real R-URI.
	last := rts[len(rts)-1]
	if err := r.setRURI(m, last.Address.String()); err != nil {
		return rrError, err
	}
	removeHeaders(m.Req, last)
	return rrDriven, nil
}

func (r *module) afterLoose(m *core.Msg, st *state, rts []*sip.RouteHeader, preloaded bool) (int, error) {
	next := rts[0]
	if r.myself(&next.Address) {
		st.routed, st.params = true, next.Address.UriParams.Clone()
		drop := []sip.Header{next}
		i := 1
		if r.doubleRR.Load() && is2rr(&next.Address) && len(rts) > 1 {
			drop = append(drop, rts[1])
			i = 2
		}
		removeHeaders(m.Req, drop...)
		if i >= len(rts) {
			if preloaded {
				return rrPreloaded, nil
			}
			return rrDriven, nil
		}
		next = rts[i]
	}
	if isStrict(&next.Address) {
		// handle_sr: the R-URI goes to the end of the Route set, the
		// strict router into the R-URI.
		ruri := &sip.RouteHeader{Address: *m.Req.Recipient.Clone()}
		if err := r.setRURI(m, maddrURI(&next.Address)); err != nil {
			return rrError, err
		}
		hs := core.Headers(m.Req)
		lastRoute := -1
		for i, h := range hs {
			if headerIs(h, "route") {
				lastRoute = i
			}
		}
		out := make([]sip.Header, 0, len(hs)+1)
		for i, h := range hs {
			if h != next {
				out = append(out, h)
			}
			if i == lastRoute {
				out = append(out, ruri)
			}
		}
		core.SetHeaders(m.Req, out)
		return rrDriven, nil
	}
	if err := m.SetDstURI(maddrURI(&next.Address)); err != nil {
		return rrError, err
	}
	return rrDriven, nil
}

// routedParams are the params of our Route URI consumed by loose_route in
// this message, or those of a top Route that names us.
func (r *module) routedParams(m *core.Msg) (sip.HeaderParams, bool) {
	if m.Req == nil {
		return nil, false
	}
	st := stateOf(m)
	if st.routed {
		return st.params, true
	}
	if rt, _ := routes(m.Req); len(rt) > 0 && r.myself(&rt[0].Address) {
		return rt[0].Address.UriParams, true
	}
	return nil, false
}

// New builds the rr module.
func New(env *core.Env) *core.Module {
	r := &module{env: env}
	boolParam := func(name, doc string, def bool, b *atomic.Bool) core.Param {
		d := 0
		if def {
			d = 1
		}
		return core.Param{Name: name, Type: core.ArgInt, Default: core.Int(d), Doc: doc,
			Set: func(v core.Val) error {
				if v.Int != 0 && v.Int != 1 {
					return fmt.Errorf("%s must be 0 or 1, got %d", name, v.Int)
				}
				b.Store(v.Int == 1)
				return nil
			},
			Get: func() core.Val { return core.Int01(b.Load()) }}
	}
	lr := func(m *core.Msg, loose bool) (core.Val, error) {
		ret, err := r.looseRoute(m, loose)
		if err != nil {
			return core.Null, err
		}
		return core.Int(ret), nil
	}
	routesReq := core.RouteRequest | core.RouteFailure | core.RouteBranch
	return core.ApplyDefaults(&core.Module{
		Name: "rr",
		Doc:  "Record-Route and Route processing",
		Params: []core.Param{
			boolParam("append_fromtag", "add ;ftag=<From-tag> to Record-Route (needed by is_direction)", true, &r.fromTag),
			boolParam("enable_double_rr", "two Record-Routes (with ;r2=on) when the request leaves on another socket", true, &r.doubleRR),
			boolParam("enable_full_lr", "write ;lr=on instead of ;lr", false, &r.fullLR),
		},
		Funcs: []core.Func{
			{Name: "record_route", Ret: core.RetInt, Routes: routesReq,
				Doc: "add Record-Route for the receiving socket (two when the next hop uses another socket); 1 ok, -1 error or already done; a From tag that is not a token: 400 Bad From tag and the script ends",
				Fn:  func(m *core.Msg, _ []core.Val) (core.Val, error) { return r.recordRoute(m, "") }},
			{Name: "record_route_params", Args: []core.ArgType{core.ArgStr}, Ret: core.RetInt, Routes: routesReq,
				Doc: "(\";p=v\") record_route with extra URI params",
				Fn:  func(m *core.Msg, a []core.Val) (core.Val, error) { return r.recordRoute(m, a[0].Str) }},
			{Name: "add_rr_param", Args: []core.ArgType{core.ArgStr}, Ret: core.RetInt, Routes: routesReq,
				Doc: "(\";p=v\") add params to this message's Record-Route, before or after record_route",
				Fn:  func(m *core.Msg, a []core.Val) (core.Val, error) { return r.addRRParam(m, a[0].Str) }},
			{Name: "loose_route", Ret: core.RetInt, Routes: routesReq,
				Doc: "process the Route set: 1 routed (our Routes removed, $du or R-URI set), -1 no Route/error, -3 preloaded Route of ours only",
				Fn:  func(m *core.Msg, _ []core.Val) (core.Val, error) { return lr(m, false) }},
			{Name: "loose_route_preloaded", Ret: core.RetInt, Routes: routesReq,
				Doc: "loose routing only (no strict-router recovery); 1 if the request carried a preloaded Route to us and nothing else, else -1",
				Fn: func(m *core.Msg, _ []core.Val) (core.Val, error) {
					ret, err := r.looseRoute(m, true)
					if err != nil {
						return core.Null, err
					}
					return core.IntRet(ret == rrPreloaded), nil
				}},
			{Name: "check_route_param", Args: []core.ArgType{core.ArgStr}, Ret: core.RetInt, Routes: routesReq,
				Doc: "(regex, case-insensitive, Go RE2) 1 if the params of our Route URI (\";a=b;c\") match, after loose_route; -1 otherwise",
				Fn: func(m *core.Msg, a []core.Val) (core.Val, error) {
					if _, err := core.CompileRegex(a[0].Str); err != nil {
						return core.Null, err
					}
					// Kamailio compiles with REG_ICASE|REG_NEWLINE.
					re, err := core.CompileRegex("(?im)" + a[0].Str)
					if err != nil {
						return core.Null, err
					}
					ps, ok := r.routedParams(m)
					if !ok || len(ps) == 0 {
						return core.Int(-1), nil
					}
					return core.IntRet(re.MatchString(";" + ps.ToString(';'))), nil
				}},
			{Name: "is_direction", Args: []core.ArgType{core.ArgStr}, Ret: core.RetInt, Routes: routesReq,
				Doc: "(\"downstream\"|\"upstream\") compare the From tag with our Route's ftag, after loose_route; 1 match, -1 not",
				Fn: func(m *core.Msg, a []core.Val) (core.Val, error) {
					want := strings.ToLower(a[0].Str)
					if want != "downstream" && want != "upstream" {
						return core.Null, fmt.Errorf("is_direction: want \"downstream\" or \"upstream\", got %q", a[0].Str)
					}
					dir := "downstream"
					if ps, ok := r.routedParams(m); ok {
						if ftag, _ := paramValue(ps, "ftag"); ftag != "" {
							if f := m.Req.From(); f != nil {
								// ftag holds the tag as record_route wrote it: escaped.
								if tag, _ := f.Params.Get("tag"); tag != "" && core.EscapeURIParam(tag) != ftag {
									dir = "upstream"
								}
							}
						}
					}
					return core.IntRet(dir == want), nil
				}},
		},
	})
}

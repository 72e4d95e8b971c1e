// Package rtpengine is Kamailio's rtpengine module: it asks rtpengine
// (Sipwise's media relay) over the ng control protocol (bencode over UDP)
// to anchor a call's media, and replaces the SDP of the message with the
// engine's. Several engines in sets, weights, retries and failover as in
// Kamailio.
package rtpengine

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

func init() { core.Register(New) }

// RTPE is the rtpengine instance of one Env.
type RTPE struct {
	env *core.Env
	cl  *client

	sock           atomic.Pointer[string]
	toutMS         atomic.Int64
	retr           atomic.Int64
	disableTout    atomic.Int64
	setidDefault   atomic.Int64
	queriedLimit   atomic.Int64
	hashTableTout  atomic.Int64
	nodesFromParam []*node

	mu    sync.Mutex
	nodes []*node
	calls map[string]callEntry // Call-ID → engine (Kamailio's hash table)
	// offers remembers INVITEs offered with an SDP (Call-ID + CSeq), so
	// rtpengine_manage on their 1xx/2xx with an SDP knows it is the
	// answer (late offer: no SDP in the INVITE, the reply's is an offer).
	offers map[string]offered // by Call-ID
	lastGC time.Time

	sent, failed, failovers *core.Counter
}

// offered is the CSeq numbers of a call's INVITEs offered with an SDP.
type offered struct {
	cseqs []uint32
	at    time.Time
}

type callEntry struct {
	n  *node
	at time.Time
}

// New builds the rtpengine module.
func New(env *core.Env) *core.Module {
	r := &RTPE{env: env, cl: newClient(), calls: map[string]callEntry{}, offers: map[string]offered{}}
	r.sent = env.Stats.Counter("rtpengine", "ng_requests")
	r.failed = env.Stats.Counter("rtpengine", "ng_failures")
	r.failovers = env.Stats.Counter("rtpengine", "failovers")
	return r.module()
}

func (r *RTPE) setSock(s string) error {
	ns, err := parseSock(s, int(r.setidDefault.Load()))
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.nodes = ns
	r.mu.Unlock()
	return nil
}

// msgInfo is what an ng command needs from the message.
type msgInfo struct {
	callID, fromTag, toTag string
}

func info(m *core.Msg) (msgInfo, error) {
	msg := m.Message()
	var i msgInfo
	if msg == nil {
		return i, core.ErrNoRequest
	}
	if c := msg.CallID(); c != nil {
		i.callID = string(*c)
	}
	if f := msg.From(); f != nil {
		i.fromTag, _ = f.Params.Get("tag")
	}
	if t := msg.To(); t != nil {
		i.toTag, _ = t.Params.Get("tag")
	}
	if i.callID == "" {
		return i, fmt.Errorf("rtpengine: no Call-ID")
	}
	if i.fromTag == "" {
		return i, fmt.Errorf("rtpengine: no From tag")
	}
	return i, nil
}

func viaBranch(m *core.Msg, n int) string {
	msg := m.Message()
	vias := core.FindHeaders(msg, "Via")
	if n > len(vias) {
		return ""
	}
	if v, ok := vias[n-1].(*sip.ViaHeader); ok {
		b, _ := v.Params.Get("branch")
		return b
	}
	return ""
}

// call builds and sends one command (Kamailio's rtpp_function_call) and
// returns the engine's dictionary with result "ok" (or pong for ping).
func (r *RTPE) call(m *core.Msg, op, flags string) (map[string]any, error) {
	mi, err := info(m)
	if err != nil {
		return nil, err
	}
	f, err := parseFlags(flags, &op)
	if err != nil {
		return nil, err
	}
	d := f.dict
	if op == "offer" || op == "answer" {
		body := m.Message().Body()
		if len(body) == 0 {
			return nil, fmt.Errorf("rtpengine: %s: the message has no SDP body", op)
		}
		d["sdp"] = string(body)
	}
	if f.callIDSet {
		mi.callID = f.callID
	}
	if f.fromTagSet {
		mi.fromTag = f.fromTag
	}
	if f.toTag != "" {
		mi.toTag = f.toTag
	}
	d["call-id"] = mi.callID
	if f.via != 0 {
		b := viaBranch(m, f.via)
		if b == "" {
			return nil, fmt.Errorf("rtpengine: no Via branch %d", f.via)
		}
		d["via-branch"] = b
	}
	fam := "IP4"
	if strings.Contains(m.SrcIP, ":") {
		fam = "IP6"
	}
	d["received-from"] = []string{fam, m.SrcIP}
	isReq := m.Req != nil
	if (isReq && op != "answer") || (!isReq && (op == "delete" || op == "answer")) {
		d["from-tag"] = mi.fromTag
		if f.to && mi.toTag != "" {
			d["to-tag"] = mi.toTag
		}
	} else {
		if mi.toTag == "" {
			return nil, fmt.Errorf("rtpengine: %s: no To tag", op)
		}
		d["from-tag"] = mi.toTag
		d["to-tag"] = mi.fromTag
	}
	d["command"] = op
	// As Kamailio 5.6: it understands rtpengine's "load limit" error.
	d["supports"] = []string{"load limit"}
	setID := int(r.setidDefault.Load())
	if v, ok := m.Ext[extSet].(int); ok {
		setID = v
	}
	return r.dispatch(setID, mi.callID, op, d)
}

const extSet = "rtpengine:set"

// dispatch picks an engine for the call and fails over to the others of
// the set while they do not answer; an engine that does not answer is
// disabled for rtpengine_disable_tout seconds.
func (r *RTPE) dispatch(setID int, callID, op string, d map[string]any) (map[string]any, error) {
	var tried []*node
	for len(tried) < int(r.queriedLimit.Load()) {
		n := r.selectNode(setID, callID, tried)
		if n == nil {
			break
		}
		r.sent.Inc()
		res, err := r.cl.send(n, d, r.tout(), int(r.retr.Load()))
		if err != nil {
			r.failed.Inc()
			r.env.Log.Error("rtpengine: no answer, engine disabled", "engine", n.url, "command", op, "err", err)
			r.disable(n, false)
			tried = append(tried, n)
			r.mu.Lock()
			if e, ok := r.calls[callID]; ok && e.n == n {
				delete(r.calls, callID)
			}
			r.mu.Unlock()
			r.failovers.Inc()
			continue
		}
		if res["result"] == "error" {
			reason, _ := res["error-reason"].(string)
			if reason == "Parallel session limit reached" {
				tried = append(tried, n)
				continue
			}
			return nil, fmt.Errorf("rtpengine %s: %s: %s", n.url, op, reason)
		}
		if res["result"] != "ok" {
			return nil, fmt.Errorf("rtpengine %s: %s: result %v", n.url, op, res["result"])
		}
		r.mu.Lock()
		if op == "delete" {
			delete(r.calls, callID)
			delete(r.offers, callID)
		} else {
			r.calls[callID] = callEntry{n: n, at: time.Now()}
			r.gcLocked()
		}
		r.mu.Unlock()
		return res, nil
	}
	return nil, fmt.Errorf("rtpengine: no available engine in set %d", setID)
}

func (r *RTPE) tout() time.Duration { return time.Duration(r.toutMS.Load()) * time.Millisecond }

// gcLocked drops, once a minute, call entries older than hash_table_tout
// (calls whose delete never came).
func (r *RTPE) gcLocked() {
	now := time.Now()
	if now.Sub(r.lastGC) < time.Minute {
		return
	}
	r.lastGC = now
	cut := now.Add(-time.Duration(r.hashTableTout.Load()) * time.Second)
	for k, e := range r.calls {
		if e.at.Before(cut) {
			delete(r.calls, k)
		}
	}
	for k, o := range r.offers {
		if o.at.Before(cut) {
			delete(r.offers, k)
		}
	}
}

func (r *RTPE) disable(n *node, permanent bool) {
	r.mu.Lock()
	n.disabled, n.permanent = true, permanent
	n.recheck = time.Now().Add(time.Duration(r.disableTout.Load()) * time.Second)
	r.mu.Unlock()
}

func tried(n *node, list []*node) bool {
	for _, x := range list {
		if x == n {
			return true
		}
	}
	return false
}

// selectNode is Kamailio's select_rtpp_node: the engine already handling
// the call, else a weighted choice among the enabled engines of the set
// by a hash of the Call-ID; disabled engines whose recheck time has come
// are pinged first.
func (r *RTPE) selectNode(setID int, callID string, skip []*node) *node {
	r.mu.Lock()
	if e, ok := r.calls[callID]; ok && !tried(e.n, skip) && !e.n.disabled {
		r.mu.Unlock()
		return e.n
	}
	var set []*node
	for _, n := range r.nodes {
		if n.set == setID {
			set = append(set, n)
		}
	}
	r.mu.Unlock()
	sum := 0
	for i := 0; i < len(callID); i++ {
		sum += int(callID[i])
	}
	sum &= 0xff
	forced := false
	for {
		total := 0
		for _, n := range set {
			r.mu.Lock()
			recheck := n.disabled && !n.permanent && !time.Now().Before(n.recheck)
			r.mu.Unlock()
			if recheck {
				r.test(n)
			}
			r.mu.Lock()
			if !n.disabled && !tried(n, skip) {
				total += n.weight
			}
			r.mu.Unlock()
		}
		if total == 0 {
			if forced {
				return nil
			}
			forced = true
			// Nothing enabled: test them all once more (Kamailio's was_forced).
			for _, n := range set {
				r.mu.Lock()
				perm := n.permanent
				r.mu.Unlock()
				if !perm && !tried(n, skip) {
					r.test(n)
				}
			}
			continue
		}
		cut := sum % total
		r.mu.Lock()
		for _, n := range set {
			if n.disabled || tried(n, skip) {
				continue
			}
			if cut < n.weight {
				r.mu.Unlock()
				return n
			}
			cut -= n.weight
		}
		r.mu.Unlock()
		return nil
	}
}

// test pings n and enables or disables it accordingly.
func (r *RTPE) test(n *node) bool {
	ok := r.ping(n)
	r.mu.Lock()
	defer r.mu.Unlock()
	if ok {
		n.disabled, n.permanent = false, false
	} else {
		n.disabled = true
		n.recheck = time.Now().Add(time.Duration(r.disableTout.Load()) * time.Second)
	}
	return ok
}

func (r *RTPE) ping(n *node) bool {
	res, err := r.cl.send(n, map[string]any{"command": "ping"}, r.tout(), int(r.retr.Load()))
	return err == nil && res["result"] == "pong"
}

func cseqNo(m *core.Msg) uint32 {
	if c := m.Message().CSeq(); c != nil {
		return c.SeqNo
	}
	return 0
}

// offerAnswer runs offer or answer and puts the engine's SDP in the message.
func (r *RTPE) offerAnswer(m *core.Msg, op, flags string) core.Val {
	res, err := r.call(m, op, flags)
	if err != nil {
		r.env.Log.Error("rtpengine: "+op+" failed", "err", err, "at", m.Pos())
		return core.Int(-1)
	}
	sdp, ok := res["sdp"].(string)
	if !ok {
		r.env.Log.Error("rtpengine: "+op+": no sdp in the engine's answer", "at", m.Pos())
		return core.Int(-1)
	}
	m.Message().SetBody([]byte(sdp)) // sipgo fixes Content-Length
	if m.Req != nil && m.Req.Method == sip.INVITE && op == "offer" {
		if mi, err := info(m); err == nil {
			r.mu.Lock()
			o := r.offers[mi.callID]
			o.cseqs, o.at = append(o.cseqs, cseqNo(m)), time.Now()
			r.offers[mi.callID] = o
			r.mu.Unlock()
		}
	}
	return core.Int(1)
}

func (r *RTPE) simple(m *core.Msg, op, flags string) core.Val {
	if _, err := r.call(m, op, flags); err != nil {
		r.env.Log.Error("rtpengine: "+op+" failed", "err", err, "at", m.Pos())
		return core.Int(-1)
	}
	return core.Int(1)
}

func hasSDP(msg sip.Message) bool {
	if len(msg.Body()) == 0 {
		return false
	}
	ct := core.FirstHeader(msg, "Content-Type")
	return ct == nil || strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct.Value())), "application/sdp")
}

// manage is rtpengine_manage: the operation follows from the message.
func (r *RTPE) manage(m *core.Msg, flags string) core.Val {
	msg := m.Message()
	if msg == nil || msg.CSeq() == nil {
		return core.Int(-1)
	}
	meth := msg.CSeq().MethodName
	switch meth {
	case sip.INVITE, sip.ACK, sip.CANCEL, sip.BYE, sip.UPDATE:
	default:
		return core.Int(-1)
	}
	if meth == sip.CANCEL || meth == sip.BYE {
		return r.simple(m, "delete", flags)
	}
	sdp := hasSDP(msg)
	if m.Req != nil {
		switch {
		case meth == sip.ACK && sdp:
			return r.offerAnswer(m, "answer", flags)
		case meth == sip.UPDATE && sdp:
			return r.offerAnswer(m, "offer", flags)
		case meth == sip.INVITE && sdp:
			if m.RouteType == core.RouteFailure {
				return r.simple(m, "delete", flags)
			}
			return r.offerAnswer(m, "offer", flags)
		}
		return core.Int(-1)
	}
	if m.Res.StatusCode >= 300 {
		return r.simple(m, "delete", flags)
	}
	if !sdp {
		return core.Int(-1)
	}
	if meth == sip.UPDATE {
		return r.offerAnswer(m, "answer", flags)
	}
	mi, err := info(m)
	if err != nil {
		return core.Int(-1)
	}
	r.mu.Lock()
	wasOffered := false
	for _, n := range r.offers[mi.callID].cseqs {
		wasOffered = wasOffered || n == cseqNo(m)
	}
	r.mu.Unlock()
	if wasOffered {
		return r.offerAnswer(m, "answer", flags)
	}
	return r.offerAnswer(m, "offer", flags)
}

// query runs the ng query and keeps the result for $rtpstat.
func (r *RTPE) query(m *core.Msg, flags string) core.Val {
	res, err := r.call(m, "query", flags)
	if err != nil {
		r.env.Log.Error("rtpengine: query failed", "err", err, "at", m.Pos())
		return core.Int(-1)
	}
	m.SetExt(extQuery, res)
	return core.Int(1)
}

const extQuery = "rtpengine:query"

func dictInt(d map[string]any, path ...string) int64 {
	var cur any = d
	for _, p := range path {
		dm, ok := cur.(map[string]any)
		if !ok {
			return -1
		}
		cur = dm[p]
	}
	n, ok := cur.(int64)
	if !ok {
		return -1
	}
	return n
}

// rtpstat is Kamailio's $rtpstat text.
func rtpstat(d map[string]any) string {
	return fmt.Sprintf("RTP: %d bytes, %d packets, %d errors; RTCP: %d bytes, %d packets, %d errors",
		dictInt(d, "totals", "RTP", "bytes"), dictInt(d, "totals", "RTP", "packets"), dictInt(d, "totals", "RTP", "errors"),
		dictInt(d, "totals", "RTCP", "bytes"), dictInt(d, "totals", "RTCP", "packets"), dictInt(d, "totals", "RTCP", "errors"))
}

// RPC: Kamailio's rtpengine.show / enable / ping / reload.

func (r *RTPE) match(url string) ([]*node, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.nodes) == 0 {
		return nil, &core.RPCError{Code: 404, Message: "Instance not found (no sets loaded)"}
	}
	var out []*node
	for _, n := range r.nodes {
		if strings.HasPrefix(url, "all") || n.url == url {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return nil, &core.RPCError{Code: 404, Message: "Instance not found"}
	}
	return out, nil
}

func (r *RTPE) nodeInfo(n *node) map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := map[string]any{"url": n.url, "set": n.set, "index": n.index, "weight": n.weight}
	switch {
	case n.disabled && n.permanent:
		m["disabled"] = "1(permanent)"
	case n.disabled:
		m["disabled"] = 1
	default:
		m["disabled"] = 0
	}
	if n.permanent {
		m["recheck_ticks"] = "N/A"
	} else {
		t := int(time.Until(n.recheck).Seconds())
		if t < 0 || !n.disabled {
			t = 0
		}
		m["recheck_ticks"] = t
	}
	return m
}

func (r *RTPE) rpcShow(_ context.Context, a core.RPCArgs) (any, error) {
	url, err := a.String(0)
	if err != nil {
		return nil, &core.RPCError{Code: 500, Message: "Not enough parameters"}
	}
	ns, err := r.match(url)
	if err != nil {
		return nil, err
	}
	out := []any{}
	for _, n := range ns {
		out = append(out, r.nodeInfo(n))
	}
	return out, nil
}

func (r *RTPE) rpcEnable(_ context.Context, a core.RPCArgs) (any, error) {
	url, err1 := a.String(0)
	flag, err2 := a.Int(1)
	if err1 != nil || err2 != nil {
		return nil, &core.RPCError{Code: 500, Message: "Not enough parameters"}
	}
	ns, err := r.match(url)
	if err != nil {
		return nil, err
	}
	status := "disable"
	if flag != 0 {
		status = "enable"
		for _, n := range ns {
			if !r.test(n) {
				status = "fail"
			}
		}
	} else {
		for _, n := range ns {
			r.disable(n, true)
		}
	}
	return map[string]any{"url": url, "status": status}, nil
}

func (r *RTPE) rpcPing(_ context.Context, a core.RPCArgs) (any, error) {
	url, err := a.String(0)
	if err != nil {
		return nil, &core.RPCError{Code: 500, Message: "Not enough parameters"}
	}
	ns, err := r.match(url)
	if err != nil {
		return nil, err
	}
	status := "success"
	for _, n := range ns {
		if !r.ping(n) {
			r.disable(n, false)
			status = "fail"
		}
	}
	return map[string]any{"url": url, "status": status}, nil
}

// rpcReload rebuilds the engines from rtpengine_sock (kamd keeps no
// rtpengine table in a database): every engine starts enabled again.
func (r *RTPE) rpcReload(_ context.Context, _ core.RPCArgs) (any, error) {
	if err := r.setSock(*r.sock.Load()); err != nil {
		return nil, &core.RPCError{Code: 500, Message: "Failed reloading: " + err.Error()}
	}
	return nil, nil
}

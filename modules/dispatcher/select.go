package dispatcher

import (
	"hash/fnv"
	"math/rand/v2"
	"net"
	"strconv"
	"time"

	"github.com/kamgo/kamgo/modules/core"
)

// Algorithms (Kamailio's numbers).
const (
	AlgHashCallID  = 0
	AlgHashFrom    = 1
	AlgHashTo      = 2
	AlgHashRURI    = 3
	AlgRoundRobin  = 4
	AlgRandom      = 6
	AlgPriority    = 8
	AlgWeight      = 9
	AlgCallLoad    = 10
	AlgRelWeight   = 11
	pendingMaxLife = 3 * time.Minute // tm's max_inv_lifetime
	loadMaxLife    = 2 * time.Hour   // Kamailio's ds_hash_expire
)

func hashStr(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}

// txKey names the request's transaction: the failure route sees the same
// Call-ID, CSeq and From tag.
func txKey(m *core.Msg) string {
	r := m.Req
	k := ""
	if cid := r.CallID(); cid != nil {
		k = string(*cid)
	}
	if cs := r.CSeq(); cs != nil {
		k += "|" + strconv.FormatUint(uint64(cs.SeqNo), 10)
	}
	if f := r.From(); f != nil {
		t, _ := f.Params.Get("tag")
		k += "|" + t
	}
	return k
}

func callID(m *core.Msg) string {
	if cid := m.Req.CallID(); cid != nil {
		return string(*cid)
	}
	return ""
}

func (d *DS) fSelectDst(m *core.Msg, a []core.Val) (core.Val, error) {
	return d.selectDst(m, int(a[0].Int), int(a[1].Int), 0, false)
}
func (d *DS) fSelectDstLimit(m *core.Msg, a []core.Val) (core.Val, error) {
	return d.selectDst(m, int(a[0].Int), int(a[1].Int), int(a[2].Int), false)
}
func (d *DS) fSelectDomain(m *core.Msg, a []core.Val) (core.Val, error) {
	return d.selectDst(m, int(a[0].Int), int(a[1].Int), 0, true)
}
func (d *DS) fSelectDomainLimit(m *core.Msg, a []core.Val) (core.Val, error) {
	return d.selectDst(m, int(a[0].Int), int(a[1].Int), int(a[2].Int), true)
}

// selectDst is ds_select_dst/ds_select_domain: the first destination goes
// into $du (or the R-URI), the rest into the transaction's failover list.
func (d *DS) selectDst(m *core.Msg, setid, alg, limit int, domain bool) (core.Val, error) {
	if m.Req == nil {
		return core.Null, core.ErrNoRequest
	}
	list, err := d.choose(m, setid, alg)
	if err != nil {
		d.env.Log.Warn("dispatcher: "+err.Error(), "at", m.Pos())
		return core.Int(-1), nil
	}
	if len(list) == 0 {
		return core.Int(-1), nil
	}
	if limit > 0 && len(list) > limit {
		list = list[:limit]
	}
	first := list[0]
	if err := apply(m, first, domain); err != nil {
		return core.Null, err
	}
	if alg == AlgCallLoad {
		d.loadSet(m, first)
	}
	now := d.env.Clock.Now()
	d.pmu.Lock()
	if now.Sub(d.rotated) > pendingMaxLife {
		d.pendingOld, d.pending, d.rotated = d.pending, make(map[string]*pending, len(d.pending)), now
	}
	d.pending[txKey(m)] = &pending{set: setid, alg: alg, list: list[1:], used: first, created: now}
	d.pmu.Unlock()
	return core.Int(1), nil
}

// lookupPending finds a request's failover list (d.pmu held).
func (d *DS) lookupPending(key string) *pending {
	if p := d.pending[key]; p != nil {
		return p
	}
	return d.pendingOld[key]
}

func apply(m *core.Msg, x *Dest, domain bool) error {
	if !domain {
		return m.SetDstURI(x.URI)
	}
	if err := m.SetRURIHost(core.BareHost(x.uri.Host)); err != nil {
		return err
	}
	return m.SetRURIPort(x.uri.Port)
}

type selErr string

func (e selErr) Error() string { return string(e) }

// choose orders the usable destinations of a set for alg: the first is
// the pick, the rest the failover order.
func (d *DS) choose(m *core.Msg, setid, alg int) ([]*Dest, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.sets[setid]
	if s == nil {
		return nil, selErr("no destination set " + strconv.Itoa(setid))
	}
	n := len(s.Dests)
	if n == 0 {
		return nil, nil
	}
	idx := 0
	switch alg {
	case AlgHashCallID:
		idx = int(hashStr(callID(m)) % uint32(n))
	case AlgHashFrom:
		if f := m.Req.From(); f != nil {
			idx = int(hashStr(f.Address.Host+"|"+f.Address.User) % uint32(n))
		}
	case AlgHashTo:
		if t := m.Req.To(); t != nil {
			idx = int(hashStr(t.Address.Host+"|"+t.Address.User) % uint32(n))
		}
	case AlgHashRURI:
		idx = int(hashStr(m.Req.Recipient.Host+"|"+m.Req.Recipient.User) % uint32(n))
	case AlgRoundRobin:
		idx = int(s.rr % uint64(n))
		s.rr++
	case AlgRandom:
		idx = rand.IntN(n)
	case AlgPriority:
		idx = 0
	case AlgWeight:
		if len(s.wlist) == 0 {
			idx = 0
		} else {
			idx = s.wlist[s.wpos%100]
			s.wpos++
		}
	case AlgCallLoad:
		best := -1
		for i, x := range s.Dests {
			if !usable(x) || (x.MaxLoad > 0 && x.load >= x.MaxLoad) {
				continue
			}
			if best < 0 || x.load < s.Dests[best].load {
				best = i
			}
		}
		if best < 0 {
			return nil, nil
		}
		idx = best
	case AlgRelWeight:
		// Weights over the usable destinations only, so a down one's share
		// goes to the others in proportion.
		// The slots are rebuilt only when the usable subset changes.
		var mask uint64
		var act []*Dest
		for i, x := range s.Dests {
			if usable(x) && x.RWeight > 0 {
				act = append(act, x)
				mask |= 1 << (uint(i) % 64)
			}
		}
		if len(act) == 0 {
			return nil, nil
		}
		if s.rwSlots == nil || mask != s.rwMask || len(s.Dests) > 64 {
			s.rwSlots, s.rwMask = weightSlots(act, func(x *Dest) int { return x.RWeight }), mask
		}
		pick := act[s.rwSlots[s.rwpos%100]]
		s.rwpos++
		for i, x := range s.Dests {
			if x == pick {
				idx = i
			}
		}
	default:
		return nil, selErr("algorithm " + strconv.Itoa(alg) + " is not supported (0, 1, 2, 3, 4, 6, 8, 9, 10, 11)")
	}
	// The pick, or the next usable after it; then the others in order.
	out := make([]*Dest, 0, n)
	for i := 0; i < n; i++ {
		x := s.Dests[(idx+i)%n]
		if usable(x) && (alg != AlgCallLoad || x.MaxLoad == 0 || x.load < x.MaxLoad || i == 0) {
			out = append(out, x)
		}
	}
	return out, nil
}

func (d *DS) nextDst(m *core.Msg, domain bool) (core.Val, error) {
	if m.Req == nil {
		return core.Null, core.ErrNoRequest
	}
	key := txKey(m)
	d.pmu.Lock()
	p := d.lookupPending(key)
	var next *Dest
	var prev *Dest
	if p != nil {
		prev = p.used
		for len(p.list) > 0 {
			x := p.list[0]
			p.list = p.list[1:]
			d.mu.Lock()
			ok := usable(x)
			d.mu.Unlock()
			if ok {
				next = x
				p.used = x
				break
			}
		}
	}
	d.pmu.Unlock()
	if next == nil {
		return core.Int(-1), nil
	}
	if err := apply(m, next, domain); err != nil {
		return core.Null, err
	}
	if p.alg == AlgCallLoad {
		d.loadRelease(callID(m), prev)
		d.loadSet(m, next)
	}
	return core.Int(1), nil
}

func (d *DS) fNextDst(m *core.Msg, _ []core.Val) (core.Val, error)    { return d.nextDst(m, false) }
func (d *DS) fNextDomain(m *core.Msg, _ []core.Val) (core.Val, error) { return d.nextDst(m, true) }

func (d *DS) fMarkDst(m *core.Msg, _ []core.Val) (core.Val, error) {
	return d.markDst(m, FlagInactive)
}

func (d *DS) fMarkDstState(m *core.Msg, a []core.Val) (core.Val, error) {
	st, err := parseState(a[0].Str)
	if err != nil {
		return core.Null, err
	}
	return d.markDst(m, st)
}

// markDst marks the destination last used for this request ($du, else the
// one ds_select_* picked).
func (d *DS) markDst(m *core.Msg, st int) (core.Val, error) {
	uri := m.DstURI
	setid := -1
	if m.Req != nil {
		d.pmu.Lock()
		if p := d.lookupPending(txKey(m)); p != nil {
			setid = p.set
			if uri == "" && p.used != nil {
				uri = p.used.URI
			}
		}
		d.pmu.Unlock()
	}
	if uri == "" {
		return core.Int(-1), nil
	}
	if d.setState(setid, uri, st, "script") == 0 {
		return core.Int(-1), nil
	}
	return core.Int(1), nil
}

// setState changes the state of uri in set (-1: every set holding it);
// "t" counts towards ds_probing_threshold as a failed probe does. It
// returns how many destinations matched.
func (d *DS) setState(setid int, uri string, st int, why string) int {
	type change struct {
		set      int
		uri      string
		old, new int
	}
	var changes []change
	n := 0
	d.mu.Lock()
	for _, id := range d.ids {
		if setid >= 0 && id != setid {
			continue
		}
		for _, x := range d.sets[id].Dests {
			if uri != "all" && x.URI != uri {
				continue
			}
			n++
			old := x.Flags
			nf := st
			if st&FlagTrying != 0 {
				x.failCount++
				if x.failCount >= int(d.probingThreshold.Load()) {
					nf = (st &^ FlagTrying) | FlagInactive
				}
			} else if st&(FlagInactive|FlagDisabled) == 0 {
				x.failCount, x.okCount = 0, 0
			}
			x.Flags = nf
			if old != nf {
				changes = append(changes, change{id, x.URI, old, nf})
			}
		}
	}
	d.mu.Unlock()
	for _, c := range changes {
		d.notify(c.set, c.uri, c.old, c.new, why)
	}
	return n
}

// notify publishes a state change and runs the event callback when a
// destination goes down or comes up.
func (d *DS) notify(set int, uri string, old, nw int, why string) {
	// Topic rule (rpc.md): Kamailio's event route names when there is one
	// (dispatcher:dst-down, dispatcher:dst-up), dst_state for other changes
	// (trying, the probing flag).
	wasUp, isUp := old&(FlagInactive|FlagDisabled) == 0, nw&(FlagInactive|FlagDisabled) == 0
	event := "dst_state"
	switch {
	case wasUp && !isUp:
		event = "dst-down"
	case !wasUp && isUp:
		event = "dst-up"
	}
	d.env.Emit("dispatcher", map[string]any{"event": event, "setid": set, "uri": uri,
		"state": stateString(nw), "old_state": stateString(old), "reason": why})
	if wasUp == isUp {
		return
	}
	ev := "dispatcher:" + event
	d.env.Log.Info("dispatcher: destination state changed", "setid", set, "uri", uri, "state", stateString(nw), "reason", why)
	cb := strp(&d.eventCB)
	if cb == "" || d.env.Router == nil {
		return
	}
	m := &core.Msg{Env: d.env, Event: ev, Arrived: d.env.Clock.Now(), DstURI: uri}
	if err := d.env.Router.Run(nil, cb, core.RouteEvent, m); err != nil {
		d.env.Log.Error("script error in "+cb, "err", err, "event", ev)
	}
}

func (d *DS) isFromList(m *core.Msg, setid, mode int) core.Val {
	ip := net.ParseIP(m.SrcIP)
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, id := range d.ids {
		if setid >= 0 && id != setid {
			continue
		}
		for _, x := range d.sets[id].Dests {
			if mode&1 == 0 && x.Target.Port != m.SrcPort {
				continue
			}
			for _, a := range x.ips {
				if ai := net.ParseIP(a); ai != nil && ai.Equal(ip) {
					return core.Int(1)
				}
			}
		}
	}
	return core.Int(-1)
}

func (d *DS) fIsFromLists(m *core.Msg, _ []core.Val) (core.Val, error) {
	return d.isFromList(m, -1, 0), nil
}
func (d *DS) fIsFromList(m *core.Msg, a []core.Val) (core.Val, error) {
	return d.isFromList(m, int(a[0].Int), 0), nil
}
func (d *DS) fIsFromListMode(m *core.Msg, a []core.Val) (core.Val, error) {
	return d.isFromList(m, int(a[0].Int), int(a[1].Int)), nil
}

func (d *DS) fListExists(m *core.Msg, a []core.Val) (core.Val, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sets[int(a[0].Int)] != nil {
		return core.Int(1), nil
	}
	return core.Int(-1), nil
}

func (d *DS) fIsActive(m *core.Msg, a []core.Val) (core.Val, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.sets[int(a[0].Int)]; s != nil {
		for _, x := range s.Dests {
			if usable(x) {
				return core.Int(1), nil
			}
		}
	}
	return core.Int(-1), nil
}

func (d *DS) fReload(m *core.Msg, _ []core.Val) (core.Val, error) {
	if err := d.init(); err != nil {
		d.env.Log.Error("dispatcher: reload failed", "err", err)
		return core.Int(-1), nil
	}
	return core.Int(1), nil
}

// Call load (algorithm 10). Kamailio counts calls through the dialog
// module; kamgo counts them here, per Call-ID: released on BYE or CANCEL
// (onRequest, or ds_load_update), ds_load_unset, or ds_next_dst moving on.

func (d *DS) loadSet(m *core.Msg, x *Dest) {
	cid := callID(m)
	d.pmu.Lock()
	defer d.pmu.Unlock()
	if old := d.loads[cid]; old != nil {
		if old.d == x {
			return
		}
		d.mu.Lock()
		old.d.load--
		d.mu.Unlock()
	}
	now := d.env.Clock.Now()
	if now.Sub(d.loadSwept) > time.Minute {
		// A call whose BYE never came is forgotten after loadMaxLife.
		d.loadSwept = now
		for k, r := range d.loads {
			if now.Sub(r.created) > loadMaxLife {
				delete(d.loads, k)
				d.mu.Lock()
				if r.d.load > 0 {
					r.d.load--
				}
				d.mu.Unlock()
			}
		}
	}
	d.loads[cid] = &loadRec{d: x, created: now}
	d.mu.Lock()
	x.load++
	d.mu.Unlock()
}

// loadRelease releases cid's call (if it is counted on want, or want is nil).
func (d *DS) loadRelease(cid string, want *Dest) bool {
	d.pmu.Lock()
	defer d.pmu.Unlock()
	r := d.loads[cid]
	if r == nil || (want != nil && r.d != want) {
		return false
	}
	delete(d.loads, cid)
	d.mu.Lock()
	if r.d.load > 0 {
		r.d.load--
	}
	d.mu.Unlock()
	return true
}

func (d *DS) fLoadUnset(m *core.Msg, _ []core.Val) (core.Val, error) {
	if m.Req == nil {
		return core.Null, core.ErrNoRequest
	}
	if d.loadRelease(callID(m), nil) {
		return core.Int(1), nil
	}
	return core.Int(-1), nil
}

func (d *DS) fLoadUpdate(m *core.Msg, _ []core.Val) (core.Val, error) {
	if m.Req == nil {
		return core.Null, core.ErrNoRequest
	}
	if m.Req.IsCancel() || m.Req.Method == "BYE" {
		d.loadRelease(callID(m), nil)
	}
	return core.Int(1), nil
}

// onRequest releases a counted call when its BYE or CANCEL arrives, so
// algorithm 10 works without dialog; the request goes on to the script.
func (d *DS) onRequest(m *core.Msg) bool {
	if m.Req != nil && (m.Req.Method == "BYE" || m.Req.IsCancel()) {
		d.pmu.Lock()
		n := len(d.loads)
		d.pmu.Unlock()
		if n > 0 {
			d.loadRelease(callID(m), nil)
		}
	}
	return false
}

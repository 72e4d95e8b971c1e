// Package dispatcher is Kamailio's dispatcher module: sets of destinations
// (the dispatcher table or a list file), selection by algorithm into $du,
// failover in a failure route, OPTIONS probing with state changes, and
// the dispatcher.* RPCs.
package dispatcher

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/core/dnsres"
)

func init() { core.Register(New) }

// Destination flags, Kamailio's DS_*_DST bits (the flags column).
const (
	FlagInactive = 1
	FlagTrying   = 2
	FlagDisabled = 4
	FlagProbing  = 8
	stateMask    = FlagInactive | FlagTrying | FlagDisabled | FlagProbing
)

// Dest is one destination of a set.
type Dest struct {
	URI         string
	uri         sip.Uri
	Target      core.Target
	Flags       int
	Priority    int
	Attrs       string
	Description string
	// From attrs (Kamailio's names): duid, weight, rweight, maxload, socket.
	DUID    string
	Weight  int
	RWeight int
	MaxLoad int
	Socket  string

	ips        []string // resolved at load for ds_is_from_list
	failCount  int      // consecutive failed probes
	okCount    int      // consecutive answered probes while down
	load       int      // active calls (algorithm 10)
	probing    bool     // an OPTIONS is outstanding
	lastProbed time.Time
}

// Set is a group of destinations, sorted by priority (highest first).
type Set struct {
	ID    int
	Dests []*Dest
	rr    uint64 // round robin position
	wpos  uint64 // position in the weight slots
	wlist []int  // 100 slots of destination indexes by weight (algorithm 9)
	rwpos uint64
	// rwSlots: algorithm 11's slots for the usable subset rwMask.
	rwSlots []int
	rwMask  uint64
}

// DS is one dispatcher instance.
type DS struct {
	env *core.Env

	listFile, dbURL, tableName, pingFrom, pingMethod, eventCB atomic.Pointer[string]
	replyCodes                                                atomic.Pointer[string]
	pingInterval, probingThreshold, inactiveThreshold         atomic.Int64
	probingMode, flagsParam                                   atomic.Int64
	pingActive                                                atomic.Int64

	emu  sync.Mutex // serialises reloads and RPC edits of the sets
	mu   sync.Mutex
	sets map[int]*Set
	ids  []int // set ids, sorted

	// pending keeps each request's failover list, keyed by the
	// transaction (Call-ID, CSeq, From tag): Kamailio keeps it in AVPs.
	pmu sync.Mutex
	// Two generations, swapped every pendingMaxLife: an entry lives one to
	// two of them (a transaction's lifetime) at O(1) cost per request.
	pending, pendingOld map[string]*pending
	rotated             time.Time
	loadSwept           time.Time
	// loads maps a Call-ID to the destination counted for it (algorithm 10).
	loads map[string]*loadRec

	tmu     sync.Mutex
	timer   core.Timer
	stopped bool
}

type pending struct {
	set     int
	alg     int
	list    []*Dest // remaining failover destinations, in order
	used    *Dest
	created time.Time
}

type loadRec struct {
	d       *Dest
	created time.Time
}

var instances core.PerEnv[*DS]

// Of returns the dispatcher built for env (nil if none).
func Of(env *core.Env) *DS { return instances.Of(env) }

func strp(p *atomic.Pointer[string]) string {
	if s := p.Load(); s != nil {
		return *s
	}
	return ""
}

// New builds the dispatcher module.
func New(env *core.Env) *core.Module {
	d := &DS{env: env, sets: map[int]*Set{}, pending: map[string]*pending{}, pendingOld: map[string]*pending{}, loads: map[string]*loadRec{}}
	d.pingActive.Store(1)
	instances.Set(env, d)
	return core.ApplyDefaults(d.module())
}

func strParam(name, def, doc string, p *atomic.Pointer[string]) core.Param {
	return core.Param{Name: name, Type: core.ArgStr, Default: core.Str(def), Doc: doc,
		Set: func(v core.Val) error { s := v.Str; p.Store(&s); return nil },
		Get: func() core.Val { return core.Str(strp(p)) }}
}

func intParam(name string, def int64, doc string, p *atomic.Int64, check func(core.Val) error) core.Param {
	return core.Param{Name: name, Type: core.ArgInt, Default: core.Int(int(def)), Doc: doc, Check: check,
		Set: func(v core.Val) error { p.Store(v.Int); return nil },
		Get: func() core.Val { return core.Int(int(p.Load())) }}
}

func (d *DS) module() *core.Module {
	set := []core.ArgType{core.ArgInt, core.ArgInt}
	return &core.Module{
		Name:   "dispatcher",
		Doc:    "load balancing and failover over sets of destinations, with OPTIONS probing",
		Needs:  []string{"tm"},
		Events: []string{"dispatcher"},
		Params: []core.Param{
			strParam("list_file", "", "Kamailio's list file (setid destination [flags [priority [attrs]]]); empty: the dispatcher table", &d.listFile),
			strParam("db_url", "", "sqlite:///path.db holding the dispatcher table; empty: kamd's database (--db) when list_file is empty", &d.dbURL),
			strParam("table_name", "dispatcher", "the destinations table", &d.tableName),
			intParam("flags", 0, "bit 1 (2): failover support; kamgo always keeps the failover list", &d.flagsParam, core.CheckNonNegative("flags")),
			staticParam(intParam("ds_ping_interval", 0, "seconds between OPTIONS probes; 0 disables probing (fixed at start, as in Kamailio)", &d.pingInterval, core.CheckNonNegative("ds_ping_interval"))),
			intParam("ds_probing_mode", 0, "0: probe destinations with the probing flag (cleared once they answer); 1: all; 2: inactive ones with the probing flag; 3: those with the probing flag, kept", &d.probingMode,
				func(v core.Val) error {
					if v.Int < 0 || v.Int > 3 {
						return fmt.Errorf("ds_probing_mode %d: want 0..3", v.Int)
					}
					return nil
				}),
			intParam("ds_probing_threshold", 1, "failed probes (or ds_mark_dst(\"t\")) before a destination becomes inactive", &d.probingThreshold, positive("ds_probing_threshold")),
			intParam("ds_inactive_threshold", 1, "answered probes before an inactive destination becomes active", &d.inactiveThreshold, positive("ds_inactive_threshold")),
			checked(strParam("ds_ping_reply_codes", "", "more probe replies that count as up, besides 2xx: \"class=4;code=501\" (Kamailio's syntax)", &d.replyCodes), func(v core.Val) error {
				_, _, err := parseReplyCodes(v.Str)
				return err
			}),
			checked(strParam("ds_ping_from", "sip:dispatcher@localhost", "From URI of the probes", &d.pingFrom), func(v core.Val) error {
				_, err := core.ParseURI(v.Str)
				return err
			}),
			checked(strParam("ds_ping_method", "OPTIONS", "method of the probes", &d.pingMethod), func(v core.Val) error {
				if v.Str == "" || strings.ToUpper(v.Str) != v.Str || strings.ContainsFunc(v.Str, func(r rune) bool { return r < 'A' || r > 'Z' }) {
					return fmt.Errorf("ds_ping_method %q: want an upper-case SIP method", v.Str)
				}
				switch v.Str {
				case "ACK", "CANCEL", "INVITE":
					return fmt.Errorf("ds_ping_method %s: probes must be non-INVITE requests with their own transaction", v.Str)
				}
				return nil
			}),
			{Name: "event_callback", Type: core.ArgStr, Default: core.Str(""), Callback: true,
				Doc: "callback run as function(evname) on dispatcher:dst-down and dispatcher:dst-up (Kamailio's KEMI event routes)",
				Set: func(v core.Val) error { s := v.Str; d.eventCB.Store(&s); return nil },
				Get: func() core.Val { return core.Str(strp(&d.eventCB)) }},
		},
		Funcs: []core.Func{
			{Name: "ds_select_dst", Args: set, Ret: core.RetInt, Routes: core.RouteRequest | core.RouteFailure | core.RouteBranch,
				Doc: "(set, alg) pick a destination into $du and keep the others for ds_next_dst; 1, -1 none active / no such set", Fn: d.fSelectDst},
			{Name: "ds_select_dst_limit", Args: []core.ArgType{core.ArgInt, core.ArgInt, core.ArgInt}, Ret: core.RetInt, Routes: core.RouteRequest | core.RouteFailure | core.RouteBranch,
				Doc: "(set, alg, limit) as ds_select_dst with at most limit destinations (0: all)", Fn: d.fSelectDstLimit},
			{Name: "ds_select_domain", Args: set, Ret: core.RetInt, Routes: core.RouteRequest | core.RouteFailure | core.RouteBranch,
				Doc: "(set, alg) as ds_select_dst but rewrite the R-URI host and port", Fn: d.fSelectDomain},
			{Name: "ds_select_domain_limit", Args: []core.ArgType{core.ArgInt, core.ArgInt, core.ArgInt}, Ret: core.RetInt, Routes: core.RouteRequest | core.RouteFailure | core.RouteBranch,
				Doc: "(set, alg, limit) as ds_select_domain with at most limit destinations", Fn: d.fSelectDomainLimit},
			{Name: "ds_next_dst", Ret: core.RetInt, Routes: core.RouteRequest | core.RouteFailure | core.RouteBranch,
				Doc: "the next active destination of the failover list into $du; -1 none left", Fn: d.fNextDst},
			{Name: "ds_next_domain", Ret: core.RetInt, Routes: core.RouteRequest | core.RouteFailure | core.RouteBranch,
				Doc: "the next destination of the failover list into the R-URI host and port; -1 none left", Fn: d.fNextDomain},
			{Name: "ds_mark_dst", Ret: core.RetInt, Routes: core.RouteFailure | core.RouteRequest | core.RouteTmReply,
				Doc: "mark the destination in $du inactive (\"i\"); 1, -1 not a dispatcher destination", Fn: d.fMarkDst},
			{Name: "ds_mark_dst_state", Args: []core.ArgType{core.ArgStr}, Ret: core.RetInt, Routes: core.RouteFailure | core.RouteRequest | core.RouteTmReply,
				Doc: "(state) mark the destination in $du: a active, i inactive, t trying, d disabled, with p probing (\"ip\"); 1, -1", Fn: d.fMarkDstState},
			{Name: "ds_is_from_lists", Ret: core.RetInt, Doc: "source IP and port are a destination of any set; 1, -1", Fn: d.fIsFromLists},
			{Name: "ds_is_from_list", Args: []core.ArgType{core.ArgInt}, Ret: core.RetInt, Doc: "(set) source IP and port are a destination of the set (-1: any set); 1, -1", Fn: d.fIsFromList},
			{Name: "ds_is_from_list_mode", Args: []core.ArgType{core.ArgInt, core.ArgInt}, Ret: core.RetInt, Doc: "(set, mode) mode bit 1: ignore the port; 1, -1", Fn: d.fIsFromListMode},
			{Name: "ds_list_exists", Args: []core.ArgType{core.ArgInt}, Ret: core.RetInt, Doc: "(set) 1 the set exists, -1 not", Fn: d.fListExists},
			{Name: "ds_is_active", Args: []core.ArgType{core.ArgInt}, Ret: core.RetInt, Doc: "(set) 1 the set has an active destination, -1 not", Fn: d.fIsActive},
			{Name: "ds_load_unset", Ret: core.RetInt, Doc: "release the call counted for this Call-ID (algorithm 10); 1, -1 none", Fn: d.fLoadUnset},
			{Name: "ds_load_update", Ret: core.RetInt, Doc: "on BYE or CANCEL release the call counted for this Call-ID (algorithm 10); 1", Fn: d.fLoadUpdate},
			{Name: "ds_reload", Ret: core.RetInt, Doc: "reload the destinations; 1, -1 failed (logged)", Fn: d.fReload},
		},
		RPC:       d.rpcMethods(),
		Init:      d.init,
		Start:     d.start,
		Stop:      d.stop,
		OnRequest: d.onRequest,
	}
}

func staticParam(p core.Param) core.Param { p.Static = true; return p }

func checked(p core.Param, check func(core.Val) error) core.Param { p.Check = check; return p }

func positive(name string) func(core.Val) error {
	return func(v core.Val) error {
		if v.Int < 1 {
			return fmt.Errorf("%s %d: must be at least 1", name, v.Int)
		}
		return nil
	}
}

func (d *DS) init() error {
	d.emu.Lock()
	defer d.emu.Unlock()
	sets, err := d.load()
	if err != nil {
		return err
	}
	// Names are resolved for ds_is_from_list with kamd's resolver (none
	// in route tests: a name then matches no source).
	if r := dnsres.For(d.env); r != nil {
		for _, s := range sets {
			for _, x := range s.Dests {
				if x.ips != nil {
					continue
				}
				ts, err := r.Resolve(x.Target.Host, x.uri.Port, "")
				if err != nil {
					d.env.Log.Warn("dispatcher: cannot resolve destination", "uri", x.URI, "err", err)
				}
				for _, t := range ts {
					x.ips = append(x.ips, core.BareHost(t.Host))
				}
			}
		}
	}
	if d.probingMode.Load() == 1 {
		// Kamailio: probing all sets every destination's probing flag.
		for _, s := range sets {
			for _, x := range s.Dests {
				x.Flags |= FlagProbing
			}
		}
	}
	d.install(sets)
	return nil
}

// install replaces the sets, keeping the state of destinations present
// before and after (a reload does not forget that a gateway is down).
func (d *DS) install(sets map[int]*Set) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, s := range sets {
		old := d.sets[id]
		if old == nil {
			continue
		}
		for _, nd := range s.Dests {
			for _, od := range old.Dests {
				if od.URI == nd.URI {
					nd.Flags = (nd.Flags &^ (FlagInactive | FlagTrying)) | (od.Flags & (FlagInactive | FlagTrying))
					nd.failCount, nd.okCount, nd.load = od.failCount, od.okCount, od.load
				}
			}
		}
	}
	d.sets = sets
	d.ids = d.ids[:0]
	for id := range sets {
		d.ids = append(d.ids, id)
	}
	sort.Ints(d.ids)
}

// newDest parses one destination (list file line or table row).
func newDest(uri string, flags, priority int, attrs, desc string) (*Dest, error) {
	u, err := core.ParseURI(uri)
	if err != nil {
		return nil, err
	}
	ds := &Dest{URI: uri, uri: u, Target: core.TargetOf(&u), Flags: flags & stateMask, Priority: priority, Attrs: attrs, Description: desc}
	for _, kv := range strings.Split(attrs, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		n, _ := strconv.Atoi(v)
		switch strings.ToLower(k) {
		case "duid":
			ds.DUID = v
		case "weight":
			ds.Weight = n
		case "rweight":
			ds.RWeight = n
		case "maxload":
			ds.MaxLoad = n
		case "socket":
			ds.Socket = v
		}
	}
	if ds.Weight < 0 || ds.Weight > 100 || ds.RWeight < 0 || ds.RWeight > 100 {
		return nil, fmt.Errorf("%s: weight and rweight must be 0..100", uri)
	}
	if host := core.BareHost(ds.Target.Host); net.ParseIP(host) != nil {
		ds.ips = []string{host}
	}
	return ds, nil
}

// finish sorts each set by priority and builds its weight slots.
func finish(sets map[int]*Set) {
	for _, s := range sets {
		sort.SliceStable(s.Dests, func(i, j int) bool { return s.Dests[i].Priority > s.Dests[j].Priority })
		s.wlist = weightSlots(s.Dests, func(x *Dest) int { return x.Weight })
	}
}

// weightSlots spreads 100 slots over the destinations by weight, as
// Kamailio's ds_set_dst_weights: what is left goes to the last one; the
// order is interleaved so consecutive calls spread out.
func weightSlots(ds []*Dest, w func(*Dest) int) []int {
	total := 0
	for _, x := range ds {
		total += w(x)
	}
	if total == 0 || len(ds) == 0 {
		return nil
	}
	counts := make([]int, len(ds))
	n := 0
	for i, x := range ds {
		counts[i] = w(x) * 100 / total
		n += counts[i]
	}
	counts[len(ds)-1] += 100 - n
	// Smooth weighted round robin over the counts: deterministic and spread.
	slots := make([]int, 0, 100)
	cur := make([]int, len(ds))
	for len(slots) < 100 {
		best := -1
		for i := range ds {
			cur[i] += counts[i]
			if best < 0 || cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= 100
		slots = append(slots, best)
	}
	return slots
}

// stateString is dispatcher.list's FLAGS: A/I/D/T then P or X.
func stateString(f int) string {
	c := "A"
	switch {
	case f&FlagInactive != 0:
		c = "I"
	case f&FlagDisabled != 0:
		c = "D"
	case f&FlagTrying != 0:
		c = "T"
	}
	if f&FlagProbing != 0 {
		return c + "P"
	}
	return c + "X"
}

// parseState reads ds_mark_dst's and dispatcher.set_state's state.
func parseState(s string) (int, error) {
	st := 0
	seen := false
	for _, c := range strings.ToLower(s) {
		switch c {
		case 'a':
			seen = true
		case 'i':
			st |= FlagInactive
			seen = true
		case 't':
			st |= FlagTrying
			seen = true
		case 'd':
			st |= FlagDisabled
			seen = true
		case 'p':
			st |= FlagProbing
		default:
			return 0, fmt.Errorf("invalid state %q: want a, i, t or d, optionally with p", s)
		}
	}
	if !seen {
		return 0, fmt.Errorf("invalid state %q: want a, i, t or d, optionally with p", s)
	}
	return st, nil
}

// parseReplyCodes reads ds_ping_reply_codes: "class=N" and "code=NNN"
// entries separated by ";".
func parseReplyCodes(s string) (classes, codes []int, err error) {
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		n, nerr := strconv.Atoi(strings.TrimSpace(v))
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "class":
			if nerr != nil || n < 1 || n > 6 {
				return nil, nil, fmt.Errorf("ds_ping_reply_codes: bad class %q (1..6)", v)
			}
			classes = append(classes, n)
		case "code":
			if nerr != nil || n < 100 || n > 699 {
				return nil, nil, fmt.Errorf("ds_ping_reply_codes: bad code %q (100..699)", v)
			}
			codes = append(codes, n)
		default:
			return nil, nil, fmt.Errorf("ds_ping_reply_codes: %q: want class=N or code=NNN", part)
		}
	}
	return classes, codes, nil
}

// probeOK is whether a probe's final reply counts as up.
func (d *DS) probeOK(code int) bool {
	if code >= 200 && code < 300 {
		return true
	}
	classes, codes, _ := parseReplyCodes(strp(&d.replyCodes))
	for _, c := range classes {
		if code/100 == c {
			return true
		}
	}
	for _, c := range codes {
		if code == c {
			return true
		}
	}
	return false
}

func usable(x *Dest) bool { return x.Flags&(FlagInactive|FlagDisabled) == 0 }

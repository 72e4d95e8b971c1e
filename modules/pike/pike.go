// Package pike is Kamailio's pike module: it counts requests per source IP
// over sampling_time_unit and reports an IP that sends more than
// reqs_density_per_unit as a flood source; what to do about it is the
// script's choice.
package pike

import (
	"context"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kamgo/kamgo/modules/core"
)

func init() { core.Register(New) }

type node struct {
	unit       int64 // the sampling unit curr counts
	prev, curr int
	red        bool // reported as a flood source
	last       time.Time
}

// Pike is one pike instance.
type Pike struct {
	env                              *core.Env
	unit, density, latency, logLevel atomic.Int64

	mu        sync.Mutex
	ips       map[string]*node
	lastSweep time.Time
}

var instances core.PerEnv[*Pike]

// Of returns the pike built for env.
func Of(env *core.Env) *Pike { return instances.Of(env) }

// New builds the pike module.
func New(env *core.Env) *core.Module {
	p := &Pike{env: env, ips: map[string]*node{}}
	instances.Set(env, p)
	ip := func(name string, def int, doc string, v *atomic.Int64, check func(core.Val) error) core.Param {
		return core.Param{Name: name, Type: core.ArgInt, Default: core.Int(def), Doc: doc, Check: check,
			Set: func(x core.Val) error { v.Store(x.Int); return nil }, Get: func() core.Val { return core.Int(int(v.Load())) }}
	}
	pos := func(name string) func(core.Val) error {
		return func(v core.Val) error {
			if v.Int < 1 {
				return fmt.Errorf("%s %d: must be at least 1", name, v.Int)
			}
			return nil
		}
	}
	return core.ApplyDefaults(&core.Module{
		Name: "pike",
		Doc:  "flood detection per source IP",
		Params: []core.Param{
			ip("sampling_time_unit", 2, "seconds of one sampling unit", &p.unit, pos("sampling_time_unit")),
			ip("reqs_density_per_unit", 30, "requests an IP may send per unit before it is reported", &p.density, pos("reqs_density_per_unit")),
			ip("remove_latency", 120, "seconds an IP is remembered after its last request", &p.latency, pos("remove_latency")),
			ip("pike_log_level", 1, "log level of the first detection and of the unblocking (1 warn, 2 notice, 3 info, 4 dbg, -1 err; < -1 none)", &p.logLevel, nil),
		},
		Funcs: []core.Func{
			{Name: "pike_check_req", Ret: core.RetInt, Routes: core.RouteRequest | core.RouteTmReply | core.RouteReply,
				Doc: "count the source IP: 1 ok, -1 a known flood source, -2 a flood source detected now", Fn: p.checkReq},
			{Name: "pike_check_ip", Args: []core.ArgType{core.ArgStr}, Ret: core.RetInt, Routes: core.RouteRequest | core.RouteTmReply | core.RouteReply,
				Doc: "(ip) as pike_check_req for the given IP address (1 for what is not an IP, as Kamailio on an internal error)", Fn: p.checkIP},
		},
		RPC: []core.RPCMethod{{Name: "pike.top", Doc: "List the tracked source IPs, most hits first: HOT (flooding, the default), WARM (seen, not flooding) or ALL.",
			ReadOnly: true, Params: []core.RPCParam{{Name: "filter", Type: "string", Optional: true, Doc: "HOT, WARM or ALL"}},
			Result: `{"list": [{"ip_addr", "leaf_hits_prev", "leaf_hits_curr", "expires", "status": "HOT"|"WARM"}], "max_hits": reqs_density_per_unit, "number_of_rows": n}; 400 "Invalid filter"`, Handler: p.rpcTop}},
	})
}

func (p *Pike) checkReq(m *core.Msg, _ []core.Val) (core.Val, error) {
	return core.Int(p.Check(m.SrcIP)), nil
}

func (p *Pike) checkIP(m *core.Msg, a []core.Val) (core.Val, error) {
	if net.ParseIP(a[0].Str) == nil {
		return core.Int(1), nil
	}
	return core.Int(p.Check(a[0].Str)), nil
}

// Check counts one request from ip and returns Kamailio's code.
func (p *Pike) Check(ip string) int {
	if ip == "" {
		return 1
	}
	if a := net.ParseIP(ip); a != nil {
		ip = a.String() // one node per address, however it is written
	}
	now := p.env.Clock.Now()
	unitDur := time.Duration(p.unit.Load()) * time.Second
	u := now.UnixNano() / int64(unitDur)
	limit := int(p.density.Load())
	p.mu.Lock()
	p.sweep(now)
	n := p.ips[ip]
	if n == nil {
		n = &node{unit: u}
		p.ips[ip] = n
	}
	p.roll(n, u)
	n.curr++
	n.last = now
	hot := n.curr > limit || n.prev > limit
	code := 1
	switch {
	case hot && n.red:
		code = -1
	case hot:
		n.red = true
		code = -2
	case n.red:
		n.red = false
		p.mu.Unlock()
		p.log("pike: IP no longer flooding", ip)
		return 1
	}
	p.mu.Unlock()
	if code == -2 {
		p.log("pike: IP detected as a flood source", ip)
	}
	return code
}

// roll moves n to sampling unit u: the finished unit becomes prev.
func (p *Pike) roll(n *node, u int64) {
	switch {
	case u == n.unit:
	case u == n.unit+1:
		n.prev, n.curr, n.unit = n.curr, 0, u
	default:
		n.prev, n.curr, n.unit = 0, 0, u
	}
}

func (p *Pike) log(msg, ip string) {
	lv := p.logLevel.Load()
	if lv < -1 {
		return
	}
	l := p.env.Log.Warn
	switch lv {
	case -1:
		l = p.env.Log.Error
	case 2, 3:
		l = p.env.Log.Info
	case 4:
		l = p.env.Log.Debug
	}
	l(msg, "ip", ip)
}

// sweep forgets IPs idle for remove_latency (at most once a second).
func (p *Pike) sweep(now time.Time) {
	if now.Sub(p.lastSweep) < time.Second {
		return
	}
	p.lastSweep = now
	lat := time.Duration(p.latency.Load()) * time.Second
	for ip, n := range p.ips {
		if now.Sub(n.last) > lat {
			delete(p.ips, ip)
		}
	}
}

// TopEntry is one pike.top row (Kamailio's field names).
type TopEntry struct {
	IP     string `json:"ip_addr"`
	Prev   int    `json:"leaf_hits_prev"`
	Curr   int    `json:"leaf_hits_curr"`
	Expire int64  `json:"expires"`
	Status string `json:"status"`
}

func (p *Pike) rpcTop(ctx context.Context, args core.RPCArgs) (any, error) {
	filter := "HOT"
	if args.Len() > 0 {
		f, err := args.String(0)
		if err != nil || (f != "HOT" && f != "WARM" && f != "ALL") {
			return nil, &core.RPCError{Code: 400, Message: "Invalid filter"}
		}
		filter = f
	}
	now := p.env.Clock.Now()
	u := now.UnixNano() / int64(time.Duration(p.unit.Load())*time.Second)
	lat := time.Duration(p.latency.Load()) * time.Second
	rows := []TopEntry{}
	p.mu.Lock()
	for ip, n := range p.ips {
		p.roll(n, u)
		st := "WARM"
		if n.red {
			st = "HOT"
		}
		if filter != "ALL" && filter != st {
			continue
		}
		rows = append(rows, TopEntry{IP: ip, Prev: n.prev, Curr: n.curr, Expire: int64(n.last.Add(lat).Sub(now) / time.Second), Status: st})
	}
	p.mu.Unlock()
	sort.Slice(rows, func(i, j int) bool {
		a, b := rows[i].Prev+rows[i].Curr, rows[j].Prev+rows[j].Curr
		if a != b {
			return a > b
		}
		return rows[i].IP < rows[j].IP
	})
	// Kamailio's shape; max_hits is the density limit.
	return map[string]any{"list": rows, "max_hits": p.density.Load(), "number_of_rows": len(rows)}, nil
}

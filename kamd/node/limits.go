package node

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"

	"github.com/kamgo/kamgo/kamd/procs"
	"github.com/kamgo/kamgo/kamd/transport"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/starlark"
)

// DefaultMemSoftLimitMB is core_param("mem_soft_limit") when unset: the Go
// runtime's soft memory limit (GOMEMLIMIT), in MB. The garbage collector
// works harder as the heap nears it, so a burst does not leave kamd far
// above what it holds; it is soft: kamd never fails for crossing it.
const DefaultMemSoftLimitMB = 384

// transportConfig adds the script's stream-connection limits (core_param
// tcp_*) to c; unset ones keep the transport's defaults.
func (n *Node) transportConfig(p *starlark.Program, c transport.Config) transport.Config {
	cp := p.Config.CoreParams
	sec := func(name string) time.Duration {
		if v, ok := cp[name]; ok {
			return time.Duration(v.Int) * time.Second
		}
		return 0
	}
	if v, ok := cp["tcp_max_connections"]; ok {
		c.MaxConns = int(v.Int)
	}
	if v, ok := cp["tcp_accept_iplimit"]; ok {
		c.MaxConnsPerIP = int(v.Int)
		if v.Int == 0 {
			c.MaxConnsPerIP = -1 // Kamailio's 0: no limit
		}
	}
	c.IdleTimeout = sec("tcp_connection_lifetime")
	c.MsgReadTimeout = sec("tcp_msg_read_timeout")
	c.MsgDataTimeout = sec("tcp_msg_data_timeout")
	n.applyMemLimit(p)
	return c
}

// applyMemLimit sets the soft memory limit: an explicit GOMEMLIMIT in the
// environment wins (the runtime has applied it), else
// core_param("mem_soft_limit") MB, else DefaultMemSoftLimitMB; 0 sets none.
// It also starts the reclaimer that gives memory back after a burst.
func (n *Node) applyMemLimit(p *starlark.Program) {
	if os.Getenv("GOMEMLIMIT") == "" {
		mb := int64(DefaultMemSoftLimitMB)
		if v, ok := p.Config.CoreParams["mem_soft_limit"]; ok {
			mb = v.Int
		}
		if mb > 0 {
			debug.SetMemoryLimit(mb << 20)
		}
	}
	reclaimOnce.Do(func() { go reclaim(n.Env) })
}

var reclaimOnce sync.Once

// reclaimEvery and reclaimMin: after a burst (a flood of transactions or
// connections) the heap shrinks, but the Go runtime collects only when
// something allocates and returns freed pages to the OS only slowly, so an
// idle kamd kept what the burst took. Every reclaimEvery, when more than
// reclaimMin is free and not returned and exceeds what is in use, or when
// the heap holds more than reclaimMin and no collection ran since the last
// look (kamd is quiet: the extra collection costs idle CPU only), kamd
// collects and returns the free memory at once.
const (
	reclaimEvery = 10 * time.Second
	reclaimMin   = 64 << 20
)

func reclaim(env *core.Env) {
	samples := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}, {Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/cycles/total:gc-cycles"}}
	var lastCycles uint64
	for range time.Tick(reclaimEvery) {
		metrics.Read(samples)
		free, used, cycles := samples[0].Value.Uint64(), samples[1].Value.Uint64(), samples[2].Value.Uint64()
		if (free > reclaimMin && free > used) || (cycles == lastCycles && used > reclaimMin) {
			debug.FreeOSMemory()
			metrics.Read(samples)
			after := samples[1].Value.Uint64()
			lvl := slog.LevelDebug
			if free+used-after > reclaimMin {
				lvl = slog.LevelInfo // after a burst: worth a line
			}
			env.Log.Log(context.Background(), lvl, "memory returned to the OS", "free_mb", free>>20, "heap_mb", used>>20, "heap_after_mb", after>>20)
			cycles = samples[2].Value.Uint64()
		}
		lastCycles = cycles
	}
}

// checkDB is the database check at start (core.CheckDB) unless skipped.
func (n *Node) checkDB(p *starlark.Program) error {
	if n.Opts.DBNoCheck {
		return nil
	}
	if v, ok := p.Config.CoreParams["db_check"]; ok && v.Int == 0 {
		return nil
	}
	return core.CheckDB(n.Env.DB, n.Env.DBPath)
}

func init() {
	// Read once, when the transport and database open: a reload that
	// changes one is refused like a listen change.
	startOnlyCoreParams = append(startOnlyCoreParams, "tcp_max_connections", "tcp_accept_iplimit", "tcp_connection_lifetime",
		"tcp_msg_read_timeout", "tcp_msg_data_timeout", "mem_soft_limit", "db_check", "procs_adaptive")
}

// startProcs starts the GOMAXPROCS controller (kamd/procs) unless
// core_param("procs_adaptive", 0) or GOMAXPROCS in the environment says
// otherwise. Only a kamd with real sockets adapts (route tests do not).
func (n *Node) startProcs(ctx context.Context, p *starlark.Program) {
	if v, ok := p.Config.CoreParams["procs_adaptive"]; ok && v.Int == 0 {
		return
	}
	if !procs.Enabled() {
		return
	}
	n.stopProcs = procs.Start(ctx, procs.Config{Log: n.Env.Log})
}

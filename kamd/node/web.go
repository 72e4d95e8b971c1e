package node

import (
	"context"
	"encoding/json"

	"github.com/kamgo/kamgo/kamd/dashboard"
	"github.com/kamgo/kamgo/kamd/metrics"
	"github.com/kamgo/kamgo/modules/uac"
	"github.com/kamgo/kamgo/modules/usrloc"
	"github.com/kamgo/kamgo/rpc"
)

// mountWeb adds the dashboard (/) and Prometheus (/metrics) to the RPC
// listener. /metrics follows the RPC auth rule (loopback without tokens, a
// token of either role otherwise); the page itself is public, since it
// only holds code: its data comes over /ws, which asks for the token.
func (n *Node) mountWeb(srv *rpc.Server, met *metrics.Metrics) {
	srv.Handle("/metrics", srv.Protect(met.Handler()))
	srv.Handle("/", dashboard.Handler())
}

// newMetrics builds the collector over this node's statistics and, through
// *srv (set once the server exists), the modules' RPC methods.
func (n *Node) newMetrics(srv **rpc.Server) *metrics.Metrics {
	return metrics.New(metrics.Source{
		Stats: n.Env.Stats,
		Call: func(ctx context.Context, method string, params ...any) (json.RawMessage, error) {
			return (*srv).Call(ctx, rpc.RoleAdmin, method, params...)
		},
		Has: func(method string) bool { _, ok := (*srv).Method(method); return ok },
		Script: func() (int64, string, string) {
			p := n.Engine.Program()
			return int64(p.Version), p.SHA256, p.Path
		},
		Subscribers: func() int { return (*srv).Hub().Subscribers() },
		// Counts through the modules' Go APIs: a scrape never dumps.
		Usrloc: func() []metrics.TableCount {
			u := usrloc.Of(n.Env)
			if u == nil {
				return nil
			}
			var out []metrics.TableCount
			for _, d := range u.Domains() {
				a, c := d.ContactCounts()
				out = append(out, metrics.TableCount{Table: d.Name(), AoRs: a, Contacts: c})
			}
			return out
		},
		UACStates: func() map[string]int {
			if u := uac.Of(n.Env); u != nil {
				return u.StateCounts()
			}
			return nil
		},
		Version: n.Opts.Version,
		Log:     n.Env.Log,
	})
}

package node

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/kamgo/kamgo/modules/core"
)

// History keeps the statistics of the last 15 minutes, one sample every 5
// seconds (stats.history), so that a dashboard opened now draws the last
// 15 minutes at once instead of starting empty. 180 samples of ~80
// counters: about 120 KB; one Stats.Get per 5 s.
type history struct {
	mu      sync.Mutex
	keys    []string       // sorted key names, in the order of values
	index   map[string]int // key -> position in keys
	samples []histSample   // ring, oldest first once full
	next    int
	stop    context.CancelFunc
}

type histSample struct {
	ts     time.Time
	values []int64 // by key index; a key created later reads as absent (-1 length)
}

const (
	historyEvery = 5 * time.Second
	historyLen   = int(15 * time.Minute / historyEvery)
)

func (h *history) sample(st *core.Stats, now time.Time) {
	all := st.Get("all")
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.index == nil {
		h.index = map[string]int{}
	}
	for k := range all {
		if _, ok := h.index[k]; !ok {
			h.index[k] = len(h.keys)
			h.keys = append(h.keys, k)
		}
	}
	vals := make([]int64, len(h.keys))
	for k, v := range all {
		vals[h.index[k]] = v
	}
	s := histSample{ts: now, values: vals}
	if len(h.samples) < historyLen {
		h.samples = append(h.samples, s)
		return
	}
	h.samples[h.next] = s
	h.next = (h.next + 1) % historyLen
}

// result renders the samples of the selected names (all when none):
// {"interval": 5, "names": [...], "samples": [{"ts", "values": [...]}]},
// oldest first; a value is null when the statistic did not exist yet.
func (h *history) result(names []string) map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(names) == 0 {
		names = append([]string(nil), h.keys...)
		sort.Strings(names)
	}
	idx := make([]int, len(names))
	for i, n := range names {
		j, ok := h.index[n]
		if !ok {
			j = -1
		}
		idx[i] = j
	}
	out := make([]map[string]any, 0, len(h.samples))
	for i := range h.samples {
		s := h.samples[(h.next+i)%len(h.samples)]
		vals := make([]any, len(names))
		for k, j := range idx {
			if j >= 0 && j < len(s.values) {
				vals[k] = s.values[j]
			}
		}
		out = append(out, map[string]any{"ts": s.ts.UTC().Format("2006-01-02T15:04:05.000Z07:00"), "values": vals})
	}
	return map[string]any{"interval": int(historyEvery / time.Second), "names": names, "samples": out}
}

// startHistory samples now and every historyEvery until Stop.
func (n *Node) startHistory(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	n.hist.stop = cancel
	n.hist.sample(n.Env.Stats, time.Now())
	go func() {
		t := time.NewTicker(historyEvery)
		defer t.Stop()
		for {
			select {
			case now := <-t.C:
				n.hist.sample(n.Env.Stats, now)
			case <-ctx.Done():
				return
			}
		}
	}()
}

func (n *Node) stopHistory() {
	if n.hist.stop != nil {
		n.hist.stop()
	}
}

func (n *Node) rpcHistory(_ context.Context, a core.RPCArgs) (any, error) {
	names, err := argStrings(a, 0)
	if err != nil {
		return nil, err
	}
	return n.hist.result(names), nil
}

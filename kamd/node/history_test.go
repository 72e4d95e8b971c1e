package node

import (
	"testing"
	"time"

	"github.com/kamgo/kamgo/modules/core"
)

func TestHistoryRing(t *testing.T) {
	st := core.NewStats()
	reqs := st.Counter("core", "rcv_requests")
	var h history
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < historyLen+20; i++ {
		reqs.Add(10)
		if i == historyLen+10 {
			st.Counter("tm", "current") // appears late
		}
		h.sample(st, t0.Add(time.Duration(i)*historyEvery))
	}
	r := h.result([]string{"core:rcv_requests", "tm:current", "no:such"})
	samples := r["samples"].([]map[string]any)
	if len(samples) != historyLen {
		t.Fatalf("%d samples, want %d", len(samples), historyLen)
	}
	first, last := samples[0], samples[len(samples)-1]
	if got, want := first["ts"], t0.Add(20*historyEvery).Format("2006-01-02T15:04:05.000Z07:00"); got != want {
		t.Errorf("oldest sample at %v, want %v", got, want)
	}
	if v := first["values"].([]any); v[0] != int64(210) || v[1] != nil || v[2] != nil {
		t.Errorf("oldest values %v, want [210 <nil> <nil>]", v)
	}
	if v := last["values"].([]any); v[0] != int64(10*(historyLen+20)) || v[1] != int64(0) {
		t.Errorf("newest values %v", v)
	}
	if r["interval"] != 5 {
		t.Errorf("interval %v", r["interval"])
	}
	if all := h.result(nil); len(all["names"].([]string)) != 2 {
		t.Errorf("all names: %v", all["names"])
	}
}

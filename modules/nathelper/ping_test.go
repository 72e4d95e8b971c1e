package nathelper_test

import (
	"testing"
	"time"

	"github.com/kamgo/kamgo/modules/core"
	mt "github.com/kamgo/kamgo/modules/moduletest"
	"github.com/kamgo/kamgo/modules/nathelper"
	kstar "github.com/kamgo/kamgo/starlark"
	"github.com/kamgo/kamgo/starlark/routetest"
)

// The keepalive replies remembered per contact (by ruid) are forgotten once
// a contact is gone, not only when keepalive_timeout expires it: entries
// older than keepalive_timeout + natping_interval go at the next interval.
func TestKeepaliveSeenIsPruned(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout int // keepalive_timeout
		ages    map[string]time.Duration
		tick    int64
		kept    []string
	}{
		{"older than timeout+interval go", 60, map[string]time.Duration{"gone": 200 * time.Second, "live": 5 * time.Second, "edge": 69 * time.Second}, 10, []string{"live", "edge"}},
		{"no keepalive_timeout: older than an interval go", 0, map[string]time.Duration{"gone": 11 * time.Second, "live": 9 * time.Second}, 20, []string{"live"}},
		{"only once per interval", 60, map[string]time.Duration{"gone": 200 * time.Second}, 11, []string{"gone"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, _ := mt.NewEnv()
			clk := routetest.NewFixedClock(routetest.RouteTestEpoch)
			env.Clock = clk
			env.DBPath = t.TempDir() + "/kamgo.db"
			eng := kstar.New(env)
			src := `modparam("nathelper", "natping_interval", 10)
modparam("nathelper", "keepalive_timeout", ` + itoa(tc.timeout) + `)
def ksr_request_route():
    pass
`
			if _, err := eng.Load("t.star", []byte(src)); err != nil {
				t.Fatal(err)
			}
			now := clk.Now()
			for ruid, age := range tc.ages {
				nathelper.SetSeenForTest(env, ruid, now.Add(-age))
			}
			nathelper.RoundForTest(env, tc.tick)
			got := nathelper.SeenForTest(env)
			if len(got) != len(tc.kept) {
				t.Errorf("kept %v, want %v", got, tc.kept)
			}
			for _, k := range tc.kept {
				if _, ok := got[k]; !ok {
					t.Errorf("%s was dropped, want kept (%v)", k, got)
				}
			}
		})
	}
}

func itoa(i int) string { return core.Int(i).String() }

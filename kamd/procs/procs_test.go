package procs

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func TestWant(t *testing.T) {
	c := Config{Interval: 100 * time.Millisecond, Up: 0.6, Down: 0.35, DownAfter: 300 * time.Millisecond, Max: 8}
	tests := []struct {
		name  string
		cur   int
		cores []float64 // one interval each
		want  int       // after the last
		wait  bool      // every interval had slow wakeups
	}{
		{"idle stays on one P", 1, []float64{0, 0.01, 0.2}, 1, false},
		{"busy one P doubles", 1, []float64{0.7}, 2, false},
		{"a flood jumps to what it needs", 1, []float64{0.9}, 2, false},
		{"busy two Ps go to what the load needs", 2, []float64{1.9}, 4, false},
		{"never above Max", 4, []float64{8}, 8, false},
		{"a dip shorter than DownAfter keeps the Ps", 4, []float64{0.1, 0.1}, 4, false},
		{"low for DownAfter lowers to the fit", 4, []float64{0.5, 0.5, 0.5}, 2, false},
		{"a busy interval restarts the count", 4, []float64{0.1, 0.1, 1.5, 0.1, 0.1}, 4, false},
		{"quiet for DownAfter ends on one P", 2, []float64{0.05, 0.05, 0.05}, 1, false},
		{"slow wakeups add Ps at low CPU", 1, []float64{0.2}, 2, true},
		{"slow wakeups keep the Ps", 2, []float64{0.05, 0.05, 0.05, 0.05}, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cur, low := tt.cur, 0
			for _, x := range tt.cores {
				cur = Want(c, cur, x, tt.wait, &low)
			}
			if cur != tt.want {
				t.Fatalf("Ps = %d, want %d", cur, tt.want)
			}
		})
	}
}

// TestControllerFollowsLoad runs the real controller: one P when idle, more
// while two goroutines burn CPU, back to one after, the default at stop.
func TestControllerFollowsLoad(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("one CPU: nothing to adapt") // not a CI machine (2 vCPUs)
	}
	def := runtime.GOMAXPROCS(0)
	stop := Start(context.Background(), Config{Interval: 20 * time.Millisecond, DownAfter: 100 * time.Millisecond, Max: 2})
	defer stop()
	waitProcs := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for runtime.GOMAXPROCS(0) != want {
			if time.Now().After(deadline) {
				t.Fatalf("GOMAXPROCS = %d, want %d", runtime.GOMAXPROCS(0), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitProcs(1)
	if again := Start(context.Background(), Config{}); again == nil {
		t.Fatal("second Start returned nil")
	}
	var burn atomic.Bool
	burn.Store(true)
	for range 2 {
		go func() {
			x := 0
			for burn.Load() {
				x++
			}
			_ = x
		}()
	}
	waitProcs(2)
	burn.Store(false)
	waitProcs(1)
	stop()
	if got := runtime.GOMAXPROCS(0); got != def {
		t.Fatalf("after stop GOMAXPROCS = %d, want the default %d", got, def)
	}
}

package starlark_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kamgo/kamgo/kamd/node"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/starlark"
	"github.com/kamgo/kamgo/starlark/routetest"
)

// Script bombs, scaled down: 64 MB string repeats against a 16 MB budget,
// s.find over a 16 MB string against a 300 ms limit. Without the watchdog
// the bombs run for tens of seconds (the step limit counts operations, not
// bytes or seconds) and the tests fail on a missing error.

// spin: 100k finds over 16 MB take minutes, in well under the step limit.
const spin = "BIG = \"a\" * (1 << 24)\n"

func TestConfigPhaseAndModInitLimits(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		lim       starlark.Limits
		want      string
		cause     error
	}{
		{"string bomb at top level", "X = []\nfor i in range(1000):\n    X.append(\"a\" * (1 << 26))\ndef ksr_request_route():\n    pass\n",
			starlark.Limits{MemBudget: 16 << 20}, "s.star:3:", starlark.ErrMemBudget},
		{"repeated bomb at top level, nothing kept", "for i in range(1000):\n    x = \"a\" * (1 << 26)\ndef ksr_request_route():\n    pass\n",
			starlark.Limits{MemBudget: 16 << 20}, "s.star:2:", starlark.ErrMemBudget},
		{"find spinner at top level", spin + "for i in range(100000):\n    BIG.find(\"b\")\ndef ksr_request_route():\n    pass\n",
			starlark.Limits{TimeLimit: 30 * time.Millisecond}, "config phase: time limit of 300 ms (10 × script_time_limit_ms) exceeded", starlark.ErrTimeLimit},
		{"string bomb in mod_init", "core_param(\"script_mem_budget\", 16)\ndef mod_init():\n    x = [\"a\" * (1 << 26) for i in range(1000)]\ndef ksr_request_route():\n    pass\n",
			starlark.Limits{}, "mod_init: script_mem_budget of 16 MB exceeded", starlark.ErrMemBudget},
		{"find spinner in mod_init", spin + "core_param(\"script_time_limit_ms\", 30)\ndef mod_init():\n    for i in range(100000):\n        BIG.find(\"b\")\ndef ksr_request_route():\n    pass\n",
			starlark.Limits{}, "s.star:5:", starlark.ErrTimeLimit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eng := starlark.New(core.NewEnv(nil))
			eng.Limits = tc.lim
			start := time.Now()
			_, err := eng.Load("s.star", []byte(tc.src))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, tc.cause) {
				t.Fatalf("load error %v (after %s), want %q (%v)", err, time.Since(start), tc.want, tc.cause)
			}
			if eng.Program() != nil {
				t.Fatal("a cancelled load installed a program")
			}
		})
	}
}

func TestCallbackLimits(t *testing.T) {
	for _, tc := range []struct {
		name, params, body, want string
	}{
		{"string bomb", "core_param(\"script_mem_budget\", 16)\ncore_param(\"script_time_limit_ms\", 0)\n",
			"for i in range(1000):\n        x = \"a\" * (1 << 26)", "ksr_request_route: script_mem_budget of 16 MB exceeded"},
		{"list bomb", "core_param(\"script_mem_budget\", 16)\ncore_param(\"script_time_limit_ms\", 0)\n",
			"x = [[0] * (1 << 22) for i in range(1000)]", "script_mem_budget of 16 MB exceeded"},
		{"find spinner", spin + "core_param(\"script_time_limit_ms\", 300)\n",
			"for i in range(100000):\n        BIG.find(\"b\")", "ksr_request_route: time limit of 300 ms (script_time_limit_ms) exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.params + "def ksr_request_route():\n    " + tc.body + "\n    KSR.sl.send_reply(200, \"OK\")\n"
			h, err := routetest.NewHarness(node.RouteTest, "r.star", []byte(src), routetest.HarnessOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			r, err := h.Request(options(t, 1), "192.0.2.10:5070", "udp")
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Sent) != 1 || !strings.HasPrefix(r.Sent[0].Text, "SIP/2.0 500 ") {
				t.Fatalf("sent %v, want one 500", r.Sent)
			}
			if !strings.Contains(r.Error(), tc.want) || !strings.Contains(r.Error(), "r.star:") {
				t.Fatalf("script error %q, want %q at its r.star position", r.Error(), tc.want)
			}
			// The pooled thread serves the next request normally.
			h2, err := routetest.NewHarness(node.RouteTest, "r.star", []byte(tc.params+"def ksr_request_route():\n    KSR.sl.send_reply(200, \"OK\")\n"), routetest.HarnessOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer h2.Close()
			if r, _ := h2.Request(options(t, 2), "192.0.2.10:5070", "udp"); len(r.Sent) != 1 || !strings.HasPrefix(r.Sent[0].Text, "SIP/2.0 200 ") {
				t.Fatalf("after a cancelled run: sent %v, want a 200", r.Sent)
			}
		})
	}
}

func TestLimitParams(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`core_param("script_mem_budget", -1)`, `core_param("script_mem_budget"): must be 0 (no limit) or positive`},
		{`core_param("script_time_limit_ms", "1s")`, `core_param("script_time_limit_ms"): want int value`},
		{`core_param("shutdown_grace_ms", -5)`, `core_param("shutdown_grace_ms"): must be 0`},
		{`core_param("exit_timeout", 0)`, `core_param("exit_timeout"): must be positive`},
	} {
		eng := starlark.New(core.NewEnv(nil))
		_, err := eng.Load("s.star", []byte(tc.src+"\ndef ksr_request_route():\n    pass\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "s.star:1:") {
			t.Errorf("%s: load error %v, want %q", tc.src, err, tc.want)
		}
	}
	eng := starlark.New(core.NewEnv(nil))
	p, err := eng.Load("s.star", []byte("core_param(\"script_mem_budget\", 0)\ncore_param(\"script_time_limit_ms\", 250)\ndef ksr_request_route():\n    pass\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Limits != (starlark.Limits{TimeLimit: 250 * time.Millisecond}) {
		t.Fatalf("limits %+v, want no budget and 250 ms", p.Limits)
	}
}

func TestLoadOnlyRegularFilesInside(t *testing.T) {
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret.star")
	if err := os.WriteFile(secret, []byte("X = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		setup func(dir, real string) error
		want  string // "" loads
	}{
		{"link to /dev/zero", func(dir, _ string) error { return os.Symlink("/dev/zero", filepath.Join(dir, "lib.star")) },
			"s.star:1:1: cannot load lib.star: lib.star is a link to /dev/zero, outside the script's directory"},
		{"link to /etc/passwd", func(dir, _ string) error { return os.Symlink("/etc/passwd", filepath.Join(dir, "lib.star")) },
			"is a link to /etc/passwd, outside"},
		{"link to a file in another directory", func(dir, _ string) error { return os.Symlink(secret, filepath.Join(dir, "lib.star")) },
			"outside the script's directory"},
		{"relative link climbing out", func(dir, real string) error {
			rel, err := filepath.Rel(real, secret)
			if err != nil {
				return err
			}
			return os.Symlink(rel, filepath.Join(dir, "lib.star"))
		}, "outside the script's directory"},
		{"fifo", func(dir, _ string) error { return syscall.Mkfifo(filepath.Join(dir, "lib.star"), 0o644) },
			"not a regular file"},
		{"directory", func(dir, _ string) error { return os.Mkdir(filepath.Join(dir, "lib.star"), 0o755) },
			"not a regular file"},
		{"oversize file", func(dir, _ string) error {
			return os.WriteFile(filepath.Join(dir, "lib.star"), []byte("X = 1\n"+strings.Repeat("#", starlark.MaxScriptSize)), 0o644)
		}, "over the 1048576-byte limit"},
		{"link inside the directory loads", func(dir, _ string) error {
			if err := os.WriteFile(filepath.Join(dir, "real.star"), []byte("X = 1\n"), 0o644); err != nil {
				return err
			}
			return os.Symlink("real.star", filepath.Join(dir, "lib.star"))
		}, ""},
		{"file of exactly the cap loads", func(dir, _ string) error {
			return os.WriteFile(filepath.Join(dir, "lib.star"), []byte("X = 1\n"+strings.Repeat("#", starlark.MaxScriptSize-6)), 0o644)
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			real := t.TempDir()
			// The script's directory reached through a link is still its directory.
			dir := filepath.Join(t.TempDir(), "scripts")
			if err := os.Symlink(real, dir); err != nil {
				t.Fatal(err)
			}
			if err := tc.setup(dir, real); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "s.star")
			src := "load(\"lib.star\", \"X\")\ndef ksr_request_route():\n    pass\n"
			if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			eng := starlark.New(core.NewEnv(nil))
			done := make(chan error, 1)
			go func() { _, err := eng.LoadFile(path); done <- err }()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("load() hangs")
			}
			if tc.want == "" {
				if err != nil {
					t.Fatalf("load: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "s.star:1:1: cannot load lib.star") {
				t.Fatalf("load error %v, want %q at s.star:1:1", err, tc.want)
			}
		})
	}
}

func TestScriptFileIsCapped(t *testing.T) {
	eng := starlark.New(core.NewEnv(nil))
	_, err := eng.LoadFile("/dev/zero")
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("LoadFile(/dev/zero): %v, want not a regular file", err)
	}
}

func TestShutdownCancelsRunningCallbacks(t *testing.T) {
	src := spin + "core_param(\"script_time_limit_ms\", 0)\ndef ksr_request_route():\n    for i in range(100000):\n        BIG.find(\"b\")\n"
	h, err := routetest.NewHarness(node.RouteTest, "r.star", []byte(src), routetest.HarnessOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	type res struct {
		r   *routetest.Result
		err error
	}
	done := make(chan res, 1)
	go func() { r, err := h.Request(options(t, 1), "192.0.2.10:5070", "udp"); done <- res{r, err} }()
	for h.Engine.Running() == 0 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	cancelled, left := h.Engine.Shutdown(100*time.Millisecond, 5*time.Second)
	if cancelled != 1 || left != 0 {
		t.Fatalf("Shutdown cancelled %d, left %d running; want 1, 0", cancelled, left)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Shutdown took %s", d) // a spinner runs for minutes otherwise
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !strings.Contains(r.r.Error(), "r.star:5:") || !strings.Contains(r.r.Error(), "cancelled: kamd is shutting down") {
		t.Fatalf("script error %q, want the shutdown cancellation at r.star:5", r.r.Error())
	}
	// Later runs are refused.
	if err := h.Engine.Run(nil, starlark.RequestRoute, core.RouteRequest, &core.Msg{Env: h.Env}); !errors.Is(err, starlark.ErrShuttingDown) {
		t.Fatalf("Run after shutdown: %v, want ErrShuttingDown", err)
	}
}

func TestDrainAnswers503(t *testing.T) {
	h, err := routetest.NewHarness(node.RouteTest, "r.star", []byte("def ksr_request_route():\n    KSR.sl.send_reply(200, \"OK\")\n"), routetest.HarnessOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	h.Engine.Drain()
	r, err := h.Request(options(t, 1), "192.0.2.10:5070", "udp")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Sent) != 1 || !strings.HasPrefix(r.Sent[0].Text, "SIP/2.0 503 ") {
		t.Fatalf("sent %v while draining, want a 503", r.Sent)
	}
}

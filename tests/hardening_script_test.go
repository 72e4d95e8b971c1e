package tests

// Issue 14, the Starlark sandbox: script bombs are cancelled by the memory
// budget and the time limit (a 500, kamd alive and serving), kamd -c fails
// cleanly on a bomb, load() refuses links out of the script's directory,
// and SIGTERM ends spinning callbacks within the shutdown bound. Scaled
// down: 64 MB repeats against a 32 MB budget, s.find over 16 MB.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// bombScript answers 200 unless X-Bomb asks for a memory bomb (64 MB
// strings, kept) or a spinner (100k s.find over 16 MB: minutes, within the
// step limit). limits are core_param lines.
func bombScript(limits string) string {
	return limits + `
BIG = "a" * (1 << 24)

def ksr_request_route():
    what = KSR.hdr.get("X-Bomb")
    if what == "mem":
        x = []
        for i in range(1000):
            x.append("a" * (1 << 26))
    elif what == "spin":
        for i in range(100000):
            BIG.find("b")
    KSR.hdr.append_to_reply("X-Version: ` + "1" + `\r\n")
    KSR.sl.send_reply(200, "OK")
`
}

func TestScriptBombsAnswer500(t *testing.T) {
	k := startKamd(t, bombScript("core_param(\"script_mem_budget\", 32)\ncore_param(\"script_time_limit_ms\", 500)\n"))
	uac, other := newUAC(t), newUAC(t)
	for _, tc := range []struct{ bomb, log string }{
		{"mem", "ksr_request_route: script_mem_budget of 32 MB exceeded"},
		{"spin", "ksr_request_route: time limit of 500 ms (script_time_limit_ms) exceeded"},
	} {
		t.Run(tc.bomb, func(t *testing.T) {
			uac.t, other.t = t, t
			before := len(k.Log())
			// The bomb and, while it runs, an innocent request from another peer.
			bomb := reqSpec{Method: "OPTIONS", RURI: "sip:" + k.Addr(), CallID: randToken() + "@kamgo.test", Extra: []string{"X-Bomb: " + tc.bomb}}
			uac.Send(k.UDPAddr(), buildRequest(uac.Local(), bomb))
			if r := other.Do(k, reqSpec{Method: "OPTIONS", RURI: "sip:" + k.Addr()}); r.Res().StatusCode != 200 {
				t.Fatalf("innocent request while a bomb runs: got %d, want 200", r.Res().StatusCode)
			}
			r := uac.Final(bomb.CallID, 10*time.Second)
			if res := r.Res(); res.StatusCode != 500 {
				t.Fatalf("bomb %s: got %d, want 500:\n%s", tc.bomb, res.StatusCode, r.Raw)
			}
			deadline := time.Now().Add(5 * time.Second)
			for !strings.Contains(k.Log()[before:], tc.log) || !strings.Contains(k.Log()[before:], "route.star:") {
				if time.Now().After(deadline) {
					t.Fatalf("kamd's log lacks %q at its route.star position:\n%s", tc.log, k.Log()[before:])
				}
				time.Sleep(20 * time.Millisecond)
			}
			if r := uac.Do(k, reqSpec{Method: "OPTIONS", RURI: "sip:" + k.Addr()}); r.Res().StatusCode != 200 {
				t.Fatalf("after the bomb: got %d, want 200", r.Res().StatusCode)
			}
			k.Alive(t)
		})
	}
}

func TestCheckBombScriptFailsCleanly(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		flags     []string
		want      string
	}{
		{"string bomb", "X = []\nfor i in range(1000):\n    X.append(\"a\" * (1 << 26))\ndef ksr_request_route():\n    pass\n",
			[]string{"--script-mem-budget", "32"}, "bomb.star:3:"},
		{"string bomb, the message", "X = []\nfor i in range(1000):\n    X.append(\"a\" * (1 << 26))\ndef ksr_request_route():\n    pass\n",
			[]string{"--script-mem-budget", "32"}, "config phase: script_mem_budget of 32 MB exceeded"},
		{"find spinner", "S = \"a\" * (1 << 24)\nfor i in range(100000):\n    S.find(\"b\")\ndef ksr_request_route():\n    pass\n",
			[]string{"--script-time-limit", "30"}, "config phase: time limit of 300 ms (10 × script_time_limit_ms) exceeded"},
		{"spinner in mod_init", "core_param(\"script_time_limit_ms\", 30)\nS = \"a\" * (1 << 24)\ndef mod_init():\n    for i in range(100000):\n        S.find(\"b\")\ndef ksr_request_route():\n    pass\n",
			nil, "bomb.star:5:15: mod_init: time limit of 300 ms (10 × script_time_limit_ms) exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeScript(t, "bomb.star", tc.src)
			out, errOut, code := runKamd(t, append([]string{"-c", "-f", p}, tc.flags...)...)
			if code != 1 || !strings.Contains(errOut, tc.want) || strings.Contains(errOut, "goroutine ") || strings.Contains(out, "OK") {
				t.Fatalf("kamd -c on a bomb: exit %d, want 1 and %q\nstdout: %s\nstderr: %s", code, tc.want, out, errOut)
			}
		})
	}
}

func TestReloadRefusesLinksOut(t *testing.T) {
	k := startKamd(t, markerScript("one"))
	uac := newUAC(t)
	for _, tc := range []struct{ target, want string }{
		{"/dev/zero", "cannot load zero.star: zero.star is a link to /dev/zero, outside the script's directory"},
		{"/etc/passwd", "cannot load zero.star: zero.star is a link to /etc/passwd, outside the script's directory"},
	} {
		link := filepath.Join(k.Dir, "zero.star")
		_ = os.Remove(link)
		if err := os.Symlink(tc.target, link); err != nil {
			t.Fatal(err)
		}
		before := len(k.Log())
		k.Reload(t, "load(\"zero.star\", \"X\")\n"+markerScript("two"))
		l := k.Log()[before:]
		if !strings.Contains(l, "reload failed") || !strings.Contains(l, "route.star:1:1: "+tc.want) {
			t.Fatalf("reload of a script loading a link to %s: log lacks the refusal %q at route.star:1:1:\n%s", tc.target, tc.want, l)
		}
		r := uac.Do(k, reqSpec{Method: "OPTIONS", RURI: "sip:" + k.Addr()})
		if v := strings.Join(headerLines(r.Raw, "X-Version"), ","); r.Res().StatusCode != 200 || v != "one" {
			t.Fatalf("after the refused reload: %d X-Version %q, want 200 from version one", r.Res().StatusCode, v)
		}
	}
	k.Alive(t)
}

// SIGTERM while 8 callbacks spin with no time limit: kamd answers new
// requests 503, cancels the spinners after shutdown_grace_ms and exits 0
// (each would run for minutes otherwise).
func TestSIGTERMEndsSpinningCallbacks(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "route.star")
	writeFile(t, script, bombScript("core_param(\"script_time_limit_ms\", 0)\ncore_param(\"shutdown_grace_ms\", 300)\ncore_param(\"workers\", 10)\n"))
	port := freePort(t)
	p := strconv.Itoa(port)
	cmd := exec.Command(kamdBin, "-f", script, "-l", "udp:127.0.0.1:"+p, "--rpc", "off", "--db", filepath.Join(dir, "kamgo.db"))
	log := &logBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("kamd log:\n%s", log.String())
		}
	}()
	for !strings.Contains(log.String(), "listening on udp:127.0.0.1:"+p) {
		select {
		case err := <-done:
			t.Fatalf("kamd exited: %v\n%s", err, log.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	k := &Kamd{Port: port}
	var wg sync.WaitGroup
	codes := make(chan int, 8)
	var exited atomic.Int64
	for i := 0; i < 8; i++ {
		u := newUAC(t)
		s := reqSpec{Method: "OPTIONS", RURI: "sip:" + k.Addr(), CallID: fmt.Sprintf("spin%d-%s@kamgo.test", i, randToken()), Extra: []string{"X-Bomb: spin"}}
		u.Send(k.UDPAddr(), buildRequest(u.Local(), s))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				r, ok := u.Recv(200 * time.Millisecond)
				if !ok {
					if e := exited.Load(); e != 0 && time.Since(time.Unix(0, e)) > 2*time.Second {
						codes <- 0 // kamd is gone: no answer will come
						return
					}
					continue
				}
				if res := r.Res(); res != nil && res.StatusCode >= 200 {
					codes <- res.StatusCode
					return
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // the spinners are running
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("kamd did not exit within 20 s of SIGTERM while 8 callbacks spun")
	}
	took := time.Since(start)
	exited.Store(time.Now().UnixNano())
	if err != nil {
		t.Fatalf("kamd exited with %v after SIGTERM (took %s), want 0", err, took)
	}
	if !strings.Contains(log.String(), "shutdown: cancelled callbacks still running after the grace period") {
		t.Fatalf("kamd's log does not report the cancelled callbacks")
	}
	wg.Wait()
	close(codes)
	// Spinners cancelled get 500; one still queued behind another on its
	// worker (peers are spread by hash) is refused with 503, or, still in
	// the socket when it closes, not answered (0).
	n500 := 0
	for c := range codes {
		switch c {
		case 500:
			n500++
		case 503, 0:
		default:
			t.Errorf("a spinner at shutdown got %d, want 500 (cancelled) or 503 (refused)", c)
		}
	}
	if n500 == 0 || !strings.Contains(log.String(), fmt.Sprintf("cancelled=%d", n500)) {
		t.Errorf("%d spinners answered 500; the log does not report as many cancelled", n500)
	}
	t.Logf("exit %s after SIGTERM (shutdown_grace_ms 300)", took)
}

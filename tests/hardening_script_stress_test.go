package tests

// Manual stress of the Starlark sandbox (issue 14's figures), not run by CI:
//
//	KAMGO_STRESS=1 KAMGO_E2E_NORACE=1 go test -count=1 -v -run TestScriptBombStress -timeout 10m ./tests/
//
// KAMGO_STRESS_WORKERS=N sets core_param("workers", N) (default 4×CPUs);
// KAMGO_STRESS_CONFIG prepends config lines (core_param(...)) to the script.
//
// kamd runs with the default limits (script_mem_budget 128 MB,
// script_time_limit_ms 1000) and a 64 MB global string. For 30 s a client
// sends requests whose callback loops over "a" * (1 << 29) (512 MB each);
// then for 30 s eight clients send requests whose callback runs s.find on
// the 64 MB string 200k times. Meanwhile a well-behaved client sends a
// REGISTER over UDP every 100 ms. Reported: kamd's RSS (sampled every
// 20 ms, and VmHWM), the probes' latency, and RSS 60 s after the attack.

import (
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

const stressScript = `
BIG = "a" * (1 << 26)

def ksr_request_route():
    if KSR.is_method("REGISTER"):
        KSR.sl.send_reply(200, "OK")
        return
    what = KSR.hdr.get("X-Bomb")
    if what == "mem":
        for i in range(100):
            x = "a" * (1 << 29)
    elif what == "spin":
        for i in range(200000):
            BIG.find("b")
    KSR.sl.send_reply(200, "OK")
`

// procStatus reads a field (kB) of /proc/pid/status.
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field+":") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				return n
			}
		}
	}
	return -1
}

// exchange sends one request from c and waits for its final reply.
func exchange(c *net.UDPConn, to *net.UDPAddr, s reqSpec, timeout time.Duration) (code int, took time.Duration) {
	if s.CallID == "" {
		s.CallID = randToken() + "@kamgo.test"
	}
	start := time.Now()
	if _, err := c.WriteToUDP(buildRequest(c.LocalAddr().String(), s), to); err != nil {
		return -1, 0
	}
	buf := make([]byte, 65535)
	deadline := start.Add(timeout)
	for {
		_ = c.SetReadDeadline(deadline)
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			return 0, time.Since(start) // lost
		}
		msg, err := sip.NewParser().ParseSIP(buf[:n])
		if err != nil {
			continue
		}
		res, ok := msg.(*sip.Response)
		if !ok || res.CallID() == nil || string(*res.CallID()) != s.CallID || res.StatusCode < 200 {
			continue
		}
		return res.StatusCode, time.Since(start)
	}
}

type scriptProbeStats struct {
	mu    sync.Mutex
	lat   []time.Duration
	lost  int
	other int
}

func (p *scriptProbeStats) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := append([]time.Duration(nil), p.lat...)
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	over := 0
	for _, d := range l {
		if d > time.Second {
			over++
		}
	}
	q := func(f float64) time.Duration {
		if len(l) == 0 {
			return 0
		}
		return l[int(f*float64(len(l)-1))].Round(10 * time.Microsecond)
	}
	return fmt.Sprintf("%d probes answered: p50 %v, p99 %v, max %v, %d over 1 s; %d lost (no answer in 2 s); %d non-200",
		len(l), q(0.5), q(0.99), q(1), over, p.lost, p.other)
}

func TestScriptBombStress(t *testing.T) {
	if os.Getenv("KAMGO_STRESS") != "1" {
		t.Skip("manual stress: KAMGO_STRESS=1")
	}
	script := stressScript
	if w := os.Getenv("KAMGO_STRESS_WORKERS"); w != "" {
		script = "core_param(\"workers\", " + w + ")\n" + script // more workers than spinners
	}
	if pre := os.Getenv("KAMGO_STRESS_CONFIG"); pre != "" {
		script = pre + "\n" + script // e.g. core_param("mem_soft_limit", 0)
	}
	k := startKamd(t, script)
	pid := k.cmd.Process.Pid
	to := k.UDPAddr()
	udp := func() *net.UDPConn {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	time.Sleep(time.Second)
	baseRSS := procStatus(pid, "VmRSS")

	var rssMax atomic.Int64
	stopRSS := make(chan struct{})
	go func() {
		for {
			select {
			case <-stopRSS:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if r := procStatus(pid, "VmRSS"); r > rssMax.Load() {
				rssMax.Store(r)
			}
		}
	}()

	probe := func(stop <-chan struct{}, st *scriptProbeStats) {
		c := udp()
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			code, took := exchange(c, to, reqSpec{Method: "REGISTER", RURI: "sip:kamgo.test"}, 2*time.Second)
			st.mu.Lock()
			switch code {
			case 200:
				st.lat = append(st.lat, took)
			case 0:
				st.lost++
			default:
				st.other++
			}
			st.mu.Unlock()
		}
	}
	attack := func(name string, clients int, bomb string) {
		rssMax.Store(0)
		st := &scriptProbeStats{}
		stop := make(chan struct{})
		var pw, aw sync.WaitGroup
		pw.Add(1)
		go func() { defer pw.Done(); probe(stop, st) }()
		var mu sync.Mutex
		codes := map[int]int{}
		var took []time.Duration
		end := time.Now().Add(30 * time.Second)
		for i := 0; i < clients; i++ {
			aw.Add(1)
			go func() {
				defer aw.Done()
				c := udp()
				for time.Now().Before(end) {
					code, d := exchange(c, to, reqSpec{Method: "OPTIONS", RURI: "sip:" + k.Addr(), Extra: []string{"X-Bomb: " + bomb}}, 30*time.Second)
					mu.Lock()
					codes[code]++
					took = append(took, d)
					mu.Unlock()
				}
			}()
		}
		aw.Wait()
		close(stop)
		pw.Wait()
		sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
		med := time.Duration(0)
		if len(took) > 0 {
			med = took[len(took)/2].Round(time.Millisecond)
		}
		t.Logf("%s (%d clients, 30 s): answers %v (median %v); RSS max %d MB (sampled every 20 ms); %s",
			name, clients, codes, med, rssMax.Load()>>10, st)
		k.Alive(t)
		// Requests still running in kamd end before the next phase: three
		// probes in a row answered within 100 ms (RSS alone does not tell:
		// a bomb's fresh allocation is not resident until it is filled).
		calm := time.Now()
		pc := udp()
		for quick := 0; quick < 3 && time.Since(calm) < 2*time.Minute; {
			if code, d := exchange(pc, to, reqSpec{Method: "REGISTER", RURI: "sip:kamgo.test"}, 2*time.Second); code == 200 && d < 100*time.Millisecond {
				quick++
			} else {
				quick = 0
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("  kamd calm again %v after the attack stopped; RSS %d MB", time.Since(calm).Round(100*time.Millisecond), procStatus(pid, "VmRSS")>>10)
	}

	t.Logf("baseline RSS %d MB (the script holds a 64 MB string)", baseRSS>>10)
	attack("string bombs, \"a\" * (1 << 29) in a loop", 1, "mem")
	attack("string bombs, concurrent", 4, "mem")
	attack("s.find spinners on 64 MB", 8, "spin")
	if w := os.Getenv("KAMGO_STRESS_WORKERS"); w != "" {
		t.Logf("(workers %s)", w)
	}
	hwm := procStatus(pid, "VmHWM")
	after := time.Now()
	for _, d := range []time.Duration{5 * time.Second, 30 * time.Second, 60 * time.Second} {
		time.Sleep(time.Until(after.Add(d)))
		t.Logf("RSS %d MB %v after the attacks", procStatus(pid, "VmRSS")>>10, d)
	}
	close(stopRSS)
	t.Logf("VmHWM (peak RSS over the run) %d MB; budget %d MB + one operation up to %d MB per running callback",
		hwm>>10, 128, 1024)
	c := udp()
	if code, _ := exchange(c, to, reqSpec{Method: "REGISTER", RURI: "sip:kamgo.test"}, 2*time.Second); code != 200 {
		t.Fatalf("kamd after the stress: REGISTER got %d", code)
	}
}

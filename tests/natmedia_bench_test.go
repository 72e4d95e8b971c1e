package tests

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"net"
)

// TestNATMediaBenchmark is a manual benchmark (KAMGO_BENCH_NAT=calls, e.g.
// 500): the same NATed calls (INVITE with SDP, 200 with SDP, ACK, BYE,
// 200; rtpengine_manage offer/answer/delete on each) through kamd and
// through Kamailio 5.6 with the same script logic and the same rtpengine,
// in alternating rounds. It reports the CPU time (user+sys, from /proc) each
// proxy and the engine spent per call. Not a pass/fail test.
//
//	KAMGO_BENCH_NAT=500 KAMGO_SHARED=/work/shared go test -run TestNATMediaBenchmark -v ./tests/
func TestNATMediaBenchmark(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("KAMGO_BENCH_NAT"))
	if n <= 0 {
		t.Skip("manual benchmark: set KAMGO_BENCH_NAT to the number of calls per round")
	}
	e := startRtpengine(t)
	kam := startKamailioNAT(t, e.NG)
	k := startRPCKamd(t, rpcKamdOpts{script: func(int) string {
		return natScript("udp:127.0.0.1:"+strconv.Itoa(e.NG), `modparam("rtpengine", "rtpengine_tout_ms", 300)`)
	}})
	type proxy struct {
		name string
		addr *net.UDPAddr
		pid  int
	}
	proxies := []proxy{
		{"Kamailio", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: kam.Port}, kam.cmd.Process.Pid},
		{"kamd", k.UDPAddr(), k.cmd.Process.Pid},
	}
	enginePID := e.cmd.Process.Pid
	cpu := map[string]time.Duration{}
	engineCPU := map[string]time.Duration{}
	calls := map[string]int{}
	for round := 0; round < 2; round++ {
		for _, p := range proxies {
			alice := newPhone(t, "alice", "10.0.0.1", p.addr)
			bob := newPhone(t, "bob", "192.168.1.2", p.addr)
			bob.register(t)
			alice.register(t)
			alice.call(t, "bob") // warm up
			c0, e0 := procTreeCPU(p.pid), procTreeCPU(enginePID)
			for i := 0; i < n; i++ {
				d := alice.call(t, "bob")
				if res := alice.bye(t, d); res.StatusCode != 200 {
					t.Fatalf("%s: BYE %d", p.name, res.StatusCode)
				}
				alice.forget()
				bob.forget()
			}
			cpu[p.name] += procTreeCPU(p.pid) - c0
			engineCPU[p.name] += procTreeCPU(enginePID) - e0
			calls[p.name] += n
		}
	}
	per := map[string]float64{}
	for _, p := range proxies {
		per[p.name] = float64(cpu[p.name].Microseconds()) / float64(calls[p.name])
		t.Logf("%-8s %d calls: proxy CPU %v (%.0f µs/call), rtpengine CPU %.0f µs/call",
			p.name, calls[p.name], cpu[p.name], per[p.name], float64(engineCPU[p.name].Microseconds())/float64(calls[p.name]))
	}
	if per["Kamailio"] > 0 {
		t.Logf("kamd/Kamailio CPU per call: %.2f", per["kamd"]/per["Kamailio"])
	}
}

// forget drops what the phone received so far (long benchmark runs).
func (p *phone) forget() {
	p.mu.Lock()
	p.got = nil
	p.mu.Unlock()
}

// procTreeCPU is user+sys time of a process and its descendants (/proc).
func procTreeCPU(pid int) time.Duration {
	const hz = 100 // USER_HZ on Linux
	var ticks int64
	var walk func(p int)
	walk = func(p int) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/stat")
		if err == nil {
			s := string(b)
			if i := strings.LastIndexByte(s, ')'); i > 0 {
				f := strings.Fields(s[i+2:])
				if len(f) > 12 {
					u, _ := strconv.ParseInt(f[11], 10, 64)
					st, _ := strconv.ParseInt(f[12], 10, 64)
					ticks += u + st
				}
			}
		}
		tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(p) + "/task/*/children")
		for _, tf := range tasks {
			cb, _ := os.ReadFile(tf)
			for _, c := range strings.Fields(string(cb)) {
				if cp, err := strconv.Atoi(c); err == nil {
					walk(cp)
				}
			}
		}
	}
	walk(pid)
	return time.Duration(ticks) * time.Second / hz
}

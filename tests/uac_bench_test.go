package tests

// The uac performance figures of issue 9 (docs/performance.md, "uac"):
// 10,000 uacreg rows registered by kamd with the in-process test registrar.
// Not run by CI (benchmarks only compile there); run it alone:
//
//	KAMGO_E2E_NORACE=1 go test -run '^$' -bench UACReg10k -benchtime 1x -timeout 30m ./tests/
//
// KAMGO_UACBENCH_ROWS and KAMGO_UACBENCH_WINDOW (seconds of steady state)
// change the size for a quick look; KAMGO_UACBENCH_EXPIRES (default 60) the
// rows' expires (with a long one, the refresh schedule that reg_dump's
// next_refresh shows is the interesting figure).

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// procCPU is the user+system CPU time of pid so far.
func procCPU(b testing.TB, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the ")" of the command name: state is field 3, utime 14, stime 15.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// procRSS is pid's resident set in MiB.
func procRSS(b testing.TB, pid int) float64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			kb, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func BenchmarkUACReg10k(b *testing.B) {
	rows := envInt("KAMGO_UACBENCH_ROWS", 10000)
	window := time.Duration(envInt("KAMGO_UACBENCH_WINDOW", 150)) * time.Second
	expires := envInt("KAMGO_UACBENCH_EXPIRES", 60)
	reg := newTestRegistrar(b, &regUser{})
	k := newUACKamdRows(b, "", rows, func(i int) uacRow {
		r := toRow(fmt.Sprintf("b%05d", i), reg.Addr())
		r.Expires = expires
		return r
	})
	start := time.Now()
	pid := k.Kamd.cmd.Process.Pid

	// 1. Until every row is registered (the registrar has a binding each).
	for {
		if distinctUsers(reg) >= rows {
			break
		}
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("only %d of %d rows registered after 5 minutes", distinctUsers(reg), rows)
		}
		time.Sleep(100 * time.Millisecond)
	}
	allRegistered := time.Since(start)
	b.ReportMetric(allRegistered.Seconds(), "s-to-all-registered")

	// 2. Steady state: refreshes only. CPU and RSS over the window, and
	// REGISTERs per second once the first refresh round is under way.
	// The schedule kamd has made: refreshes due per second (next_refresh).
	due := map[int64]int{}
	var first, last int64
	for _, r := range k.dump(b) {
		n := recInt(b, r, "next_refresh")
		due[n]++
		if first == 0 || n < first {
			first = n
		}
		last = max(last, n)
	}
	duePeak := 0
	for _, n := range due {
		duePeak = max(duePeak, n)
	}
	dueAvg := float64(rows) / (float64(expires) * 0.7) // one round per ~70% of expires
	b.ReportMetric(float64(duePeak)/dueAvg, "sched-peak/avg")
	b.Logf("first refresh round as scheduled: %d rows due between +%ds and +%ds, at most %d in one second (steady average %.1f/s, %.1fx)",
		rows, first-time.Now().Unix(), last-time.Now().Unix(), duePeak, dueAvg, float64(duePeak)/dueAvg)
	time.Sleep(min(time.Duration(expires/2)*time.Second, 30*time.Second))
	cpu0, t0 := procCPU(b, pid), time.Now()
	var rssMax float64
	for time.Since(t0) < window {
		time.Sleep(time.Second)
		if r := procRSS(b, pid); r > rssMax {
			rssMax = r
		}
	}
	cpu := procCPU(b, pid) - cpu0
	elapsed := time.Since(t0)
	perSec := map[int64]int{}
	for _, rec := range reg.Records("") {
		if rec.At.After(t0) && rec.At.Before(t0.Add(elapsed)) {
			perSec[rec.At.Unix()]++
		}
	}
	total, peak := 0, 0
	for _, n := range perSec {
		total += n
		peak = max(peak, n)
	}
	avg := float64(total) / elapsed.Seconds()
	// The peak second of each 30s slice shows whether bursts die down.
	var slices []string
	for s0 := t0.Unix(); s0 < t0.Add(elapsed).Unix(); s0 += 30 {
		p := 0
		for s := s0; s < s0+30; s++ {
			p = max(p, perSec[s])
		}
		slices = append(slices, strconv.Itoa(p))
	}
	b.Logf("peak REGISTERs/s per 30s slice of the window: %s", strings.Join(slices, " "))
	b.ReportMetric(100*cpu.Seconds()/elapsed.Seconds(), "%cpu-steady")
	b.ReportMetric(rssMax, "MiB-rss")
	b.ReportMetric(avg, "reg/s-avg")
	b.ReportMetric(float64(peak), "reg/s-peak")
	b.ReportMetric(float64(peak)/avg, "peak/avg")

	// 3. uac.reg_dump of every record, through kamctl (process start,
	// websocket, JSON) and the RPC itself.
	var lat []time.Duration
	for i := 0; i < 5; i++ {
		t1 := time.Now()
		if n := len(k.dump(b)); n != rows {
			b.Fatalf("reg_dump has %d records, want %d", n, rows)
		}
		lat = append(lat, time.Since(t1))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "ms-reg_dump")
	// The RPC alone: one HTTP POST, the whole answer read, not decoded.
	var rawLat []time.Duration
	size := 0
	for i := 0; i < 5; i++ {
		t1 := time.Now()
		res, err := http.Post(k.HTTP(), "application/json", strings.NewReader(`{"jsonrpc":"2.0","method":"uac.reg_dump","id":1}`))
		if err != nil {
			b.Fatal(err)
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != 200 {
			b.Fatalf("reg_dump over HTTP: %d %v", res.StatusCode, err)
		}
		rawLat = append(rawLat, time.Since(t1))
		size = len(body)
	}
	sort.Slice(rawLat, func(i, j int) bool { return rawLat[i] < rawLat[j] })
	b.ReportMetric(float64(rawLat[len(rawLat)/2].Milliseconds()), "ms-reg_dump-http")
	b.Logf("uac.reg_dump over HTTP: %v median, %d KiB", rawLat[len(rawLat)/2].Round(time.Millisecond), size/1024)

	// 4. A reload that changes one row: that row re-registers (with its
	// new expires), the others keep their reg_init and registration.
	before := k.dump(b)
	k.exec(b, `UPDATE uacreg SET expires = ? WHERE l_uuid = 'b00042'`, expires+1)
	t2 := time.Now()
	k.ctlOK(b, "uac.reg_reload")
	b.ReportMetric(float64(time.Since(t2).Milliseconds()), "ms-reload")
	time.Sleep(3 * time.Second)
	after := k.dump(b)
	changedInit, changedUsers := 0, map[string]bool{}
	for id, r := range after {
		if fmt.Sprint(r["reg_init"]) != fmt.Sprint(before[id]["reg_init"]) && id != "b00042" {
			changedInit++
		}
	}
	for _, rec := range reg.Records("") {
		if rec.At.After(t2) && rec.Expires == expires+1 {
			changedUsers[rec.User] = true
		}
	}
	if len(changedUsers) != 1 || !changedUsers["b00042"] || changedInit != 0 {
		b.Errorf("reload of 1 changed row: REGISTERs with the new expires from %v; %d other rows were reloaded", changedUsers, changedInit)
	}
	b.Logf("rows %d: all registered in %v; steady state over %v: CPU %.1f%% of one core, RSS max %.0f MiB, REGISTERs/s avg %.1f peak %d (%.2fx); reg_dump %v (median of 5, via kamctl); reload of 1 changed row: %d other rows touched",
		rows, allRegistered.Round(time.Millisecond), elapsed.Round(time.Second), 100*cpu.Seconds()/elapsed.Seconds(), rssMax, avg, peak, float64(peak)/avg, lat[len(lat)/2].Round(time.Millisecond), changedInit)
}

// distinctUsers is how many users have a current binding.
func distinctUsers(r *testRegistrar) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	now := time.Now()
	for _, b := range r.bindings {
		for _, exp := range b {
			if exp.After(now) {
				n++
				break
			}
		}
	}
	return n
}

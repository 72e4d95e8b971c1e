package tests

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// benchScript is the Starlark twin of ../shared/bench/kamailio/route.lua.
func benchScript(uasPort int) string {
	return fmt.Sprintf(`
def ksr_request_route():
    if KSR.is_method("REGISTER"):
        KSR.sl.send_reply(200, "OK")
    elif KSR.is_method_in("IABC"):
        KSR.hdr.append("X-KEMI: I came from KEMI at 127.0.0.1\r\n")
        KSR.sethost("127.0.0.1")
        KSR.pv.seti("$rp", %d)
        KSR.forward()
    else:
        KSR.sl.send_reply(500, "Got no idea...")
    return 1

def ksr_reply_route():
    return 1
`, uasPort)
}

// sippStats reads the last line of a sipp -stf statistics file.
func sippStats(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("sipp statistics: %v", err)
	}
	r := csv.NewReader(bytes.NewReader(b))
	r.Comma = ';'
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil || len(recs) < 2 {
		t.Fatalf("sipp statistics file %s unreadable (%v):\n%s", path, err, b)
	}
	head, last := recs[0], recs[len(recs)-1]
	out := map[string]string{}
	for i, h := range head {
		if i < len(last) {
			out[h] = last[i]
		}
	}
	return out
}

// runSipp runs one sipp client to completion and checks that all n calls
// succeeded and none failed.
func runSipp(t *testing.T, dir string, n int, args ...string) {
	t.Helper()
	stf := filepath.Join(dir, fmt.Sprintf("client-%d.csv", time.Now().UnixNano()))
	args = append(args, "-i", "127.0.0.1", "-m", strconv.Itoa(n), "-nostdin",
		"-timeout", "90s", "-timeout_error", "-trace_stat", "-stf", stf, "-fd", "1")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sipp", args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	st := sippStats(t, stf)
	ok, _ := strconv.Atoi(st["SuccessfulCall(C)"])
	failed, _ := strconv.Atoi(st["FailedCall(C)"])
	t.Logf("sipp %s: %d successful, %d failed calls", strings.Join(args[:2], " "), ok, failed)
	if err != nil || ok != n || failed != 0 {
		tail := out.String()
		if len(tail) > 4000 {
			tail = tail[len(tail)-4000:]
		}
		errLogs, _ := filepath.Glob(filepath.Join(dir, "*_errors.log"))
		for _, f := range errLogs {
			b, _ := os.ReadFile(f)
			if len(b) > 4000 {
				b = b[:4000]
			}
			tail += "\n--- " + filepath.Base(f) + ":\n" + string(b)
		}
		t.Fatalf("sipp %v: exit %v, %d successful and %d failed calls, want %d and 0\n%s", args, err, ok, failed, n, tail)
	}
}

func TestSipp(t *testing.T) {
	needTool(t, "sipp", "sip-tester")
	uasXML := needShared(t, "bench/sipp/uas.xml")
	regXML := needShared(t, "bench/sipp/register.xml")
	dir := t.TempDir()

	uasPort := freePort(t)
	uas := exec.Command("sipp", "-sf", uasXML, "-i", "127.0.0.1", "-p", strconv.Itoa(uasPort),
		"-mp", strconv.Itoa(freePort(t)), "-cp", strconv.Itoa(freePort(t)), "-nostdin")
	uas.Dir = dir
	var uasOut bytes.Buffer
	uas.Stdout, uas.Stderr = &uasOut, &uasOut
	if err := uas.Start(); err != nil {
		t.Fatalf("start sipp UAS: %v", err)
	}
	uasDone := make(chan error, 1)
	go func() { uasDone <- uas.Wait() }()
	t.Cleanup(func() {
		_ = uas.Process.Kill()
		<-uasDone
	})

	k := startKamd(t, benchScript(uasPort))

	t.Run("calls", func(t *testing.T) {
		select {
		case err := <-uasDone:
			uasDone <- err
			t.Fatalf("sipp UAS exited early: %v\n%s", err, uasOut.String())
		default:
		}
		runSipp(t, dir, 500, "-sn", "uac", k.Addr(), "-p", strconv.Itoa(freePort(t)),
			"-mp", strconv.Itoa(freePort(t)), "-cp", strconv.Itoa(freePort(t)), "-r", "200", "-rp", "1000", "-l", "3000")
	})
	t.Run("register", func(t *testing.T) {
		runSipp(t, dir, 500, "-sf", regXML, k.Addr(), "-p", strconv.Itoa(freePort(t)),
			"-cp", strconv.Itoa(freePort(t)), "-r", "200", "-rp", "1000", "-l", "3000")
	})
	k.Alive(t)
}

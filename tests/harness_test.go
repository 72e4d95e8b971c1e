// Package tests holds kamgo's end-to-end tests: kamd runs as a real
// process on 127.0.0.1 with free ports, and test UAs (built on sipgo's sip
// package over plain sockets) or sipp talk to it.
//
// No test sends traffic anywhere but 127.0.0.1.
package tests

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	kamdBin   string // built once by TestMain
	kamctlBin string // "" when kamctl has no main package yet
	repoRoot  string
)

// inCI is true when CI=true: tools CI installs must be there.
func inCI() bool { return os.Getenv("CI") == "true" }

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tests:", err)
		return 1
	}
	repoRoot = filepath.Dir(wd)
	dir, err := os.MkdirTemp("", "kamgo-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "tests:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	kamdBin = filepath.Join(dir, "kamd")
	if err := goBuild(kamdBin, "./kamd"); err != nil {
		fmt.Fprintln(os.Stderr, "tests: building kamd:", err)
		return 1
	}
	if hasMainPackage(filepath.Join(repoRoot, "kamctl")) {
		kamctlBin = filepath.Join(dir, "kamctl")
		if err := goBuild(kamctlBin, "./kamctl"); err != nil {
			fmt.Fprintln(os.Stderr, "tests: building kamctl:", err)
			return 1
		}
	}
	code := m.Run()
	stopSharedKamailio() // uacreg_kamailio_test.go: one Kamailio for the whole binary
	stopSharedBrowser()  // browser_test.go: one chromium for the whole binary
	return code
}

// goBuild builds pkg (relative to the repo root) into out. When the tests
// themselves run under -race, so does kamd: a data race in the daemon then
// makes it exit non-zero, which the stop check reports.
func goBuild(out, pkg string) error {
	args := []string{"build", "-o", out}
	if raceEnabled && os.Getenv("KAMGO_E2E_NORACE") == "" {
		args = append(args, "-race")
	}
	args = append(args, pkg)
	cmd := exec.Command("go", args...)
	cmd.Dir = repoRoot
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, buf.String())
	}
	return nil
}

func hasMainPackage(dir string) bool {
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	re := regexp.MustCompile(`(?m)^package main\b`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		if b, err := os.ReadFile(f); err == nil && re.Match(b) {
			return true
		}
	}
	return false
}

// sharedDir is ../shared relative to the repo root, or $KAMGO_SHARED.
func sharedDir() string {
	if d := os.Getenv("KAMGO_SHARED"); d != "" {
		return d
	}
	return filepath.Join(repoRoot, "..", "shared")
}

// needShared returns the path of a file under the shared directory; it
// fails the test in CI when it is missing and skips it elsewhere.
func needShared(t *testing.T, rel string) string {
	t.Helper()
	p := filepath.Join(sharedDir(), rel)
	if _, err := os.Stat(p); err != nil {
		msg := fmt.Sprintf("%s not found (set KAMGO_SHARED to the shared directory; default ../shared next to the repo): %v", p, err)
		if inCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// needTool finds an executable; missing is fatal in CI, a skip elsewhere.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		msg := fmt.Sprintf("%s not found in PATH (apt-get install -y %s)", name, pkg)
		if inCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// avoidPorts are the loopback ports the torture runner listens on for
// Via-routed responses; kamd and test UAs never take them.
var avoidPorts = map[int]bool{5050: true, 5060: true, 5070: true, 6050: true, 19823: true}

// freePort returns a port that was free on 127.0.0.1 for both UDP and TCP.
// It picks from 20000-32767, below Linux's ephemeral range (32768-60999),
// so that sockets other programs bind to port 0 between this check and
// the test's own bind cannot take it.
func freePort(t testing.TB) int {
	t.Helper()
	for i := 0; i < 200; i++ {
		p := 20000 + rand.IntN(12768)
		if avoidPorts[p] || !portFree(p) {
			continue
		}
		return p
	}
	t.Fatal("no port free for both UDP and TCP on 127.0.0.1")
	return 0
}

func portFree(p int) bool {
	u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
	if err != nil {
		return false
	}
	defer u.Close()
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// logBuffer collects a process's stderr; safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Kamd is a running kamd process.
type Kamd struct {
	t      testing.TB
	Port   int
	Script string // path of the script file (rewrite it and Reload)
	Dir    string
	cmd    *exec.Cmd
	log    *logBuffer
	done   chan struct{}
	err    error // Wait's result, valid after done is closed
}

// Addr is kamd's SIP address, 127.0.0.1:port (UDP and TCP).
func (k *Kamd) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(k.Port)) }

// UDPAddr is kamd's UDP socket.
func (k *Kamd) UDPAddr() *net.UDPAddr { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: k.Port} }

// Log is kamd's stderr so far.
func (k *Kamd) Log() string { return k.log.String() }

// kamdOpts configures startKamd.
type kamdOpts struct {
	script string   // script text; "" runs the embedded default script
	args   []string // extra flags
}

// startKamd writes the script, starts kamd on a free port (udp and tcp on
// 127.0.0.1) and waits until it listens. At cleanup it sends SIGTERM and
// checks that kamd exits 0; when the test failed, kamd's log is dumped.
func startKamd(t testing.TB, script string, args ...string) *Kamd {
	t.Helper()
	return startKamdOpts(t, kamdOpts{script: script, args: args})
}

func startKamdOpts(t testing.TB, o kamdOpts) *Kamd {
	t.Helper()
	dir := t.TempDir()
	return retryStart(t, func() (*Kamd, error) { return tryStartKamd(t, dir, o) })
}

// retryStart runs try again when a free port was taken meanwhile.
func retryStart[K any](t testing.TB, try func() (K, error)) K {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		k, err := try()
		if err == nil {
			return k
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	t.Fatalf("kamd did not start: %v", lastErr)
	var zero K
	return zero
}

func tryStartKamd(t testing.TB, dir string, o kamdOpts) (*Kamd, error) {
	port := freePort(t)
	k := &Kamd{t: t, Port: port, Dir: dir, log: &logBuffer{}, done: make(chan struct{})}
	args := []string{}
	if o.script != "" {
		k.Script = filepath.Join(dir, "route.star")
		if err := os.WriteFile(k.Script, []byte(o.script), 0o644); err != nil {
			return nil, err
		}
		args = append(args, "-f", k.Script)
	}
	p := strconv.Itoa(port)
	args = append(args, "-l", "udp:127.0.0.1:"+p, "-l", "tcp:127.0.0.1:"+p,
		"--rpc", "off", "--db", filepath.Join(dir, "kamgo.db"))
	args = append(args, o.args...)
	want := []string{"listening on udp:127.0.0.1:" + p, "listening on tcp:127.0.0.1:" + p}
	if err := k.launch(args, nil, want); err != nil {
		return nil, err
	}
	return k, nil
}

// launch runs kamd with args (and env, nil for the test's own) in k.Dir,
// waits until its log has every line in want, and registers the clean
// stop at cleanup.
func (k *Kamd) launch(args, env []string, want []string) error {
	k.cmd = exec.Command(kamdBin, args...)
	k.cmd.Dir = k.Dir
	k.cmd.Env = env
	k.cmd.Stdout = k.log
	k.cmd.Stderr = k.log
	if err := k.cmd.Start(); err != nil {
		return err
	}
	go func() {
		k.err = k.cmd.Wait()
		close(k.done)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		l := k.Log()
		all := true
		for _, w := range want {
			all = all && strings.Contains(l, w)
		}
		if all {
			break
		}
		select {
		case <-k.done:
			return fmt.Errorf("kamd %s exited before listening (%v); log:\n%s", strings.Join(args, " "), k.err, l)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = k.cmd.Process.Kill()
			<-k.done
			return fmt.Errorf("kamd did not log %q within 20s; log:\n%s", want, k.Log())
		}
	}
	k.t.Cleanup(func() { k.stop() })
	return nil
}

// stop sends SIGTERM and requires a clean exit 0.
func (k *Kamd) stop() {
	t := k.t
	select {
	case <-k.done:
		t.Errorf("kamd exited while the test ran: %v", k.err)
	default:
		_ = k.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-k.done:
			if k.err != nil {
				why := ""
				if strings.Contains(k.Log(), "WARNING: DATA RACE") {
					why = " (kamd is built with -race and reported a DATA RACE: see its log below; KAMGO_E2E_NORACE=1 builds it without)"
				}
				t.Errorf("kamd did not exit cleanly on SIGTERM: %v%s", k.err, why)
			}
		case <-time.After(15 * time.Second):
			_ = k.cmd.Process.Kill()
			<-k.done
			t.Errorf("kamd did not exit within 15s of SIGTERM")
		}
	}
	if t.Failed() || testing.Verbose() && os.Getenv("KAMGO_E2E_LOG") != "" {
		t.Logf("kamd log (port %d):\n%s", k.Port, k.Log())
	}
}

// Alive fails the test if kamd has exited.
func (k *Kamd) Alive(t testing.TB) {
	t.Helper()
	select {
	case <-k.done:
		t.Fatalf("kamd died: %v", k.err)
	default:
	}
}

// WaitLog waits until kamd's log contains s.
func (k *Kamd) WaitLog(t testing.TB, s string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(k.Log(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("kamd log does not contain %q after %v", s, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countLog counts occurrences of s in kamd's log.
func (k *Kamd) countLog(s string) int { return strings.Count(k.Log(), s) }

// Reload writes a new script and sends SIGHUP; it waits for the reload's
// outcome in the log (reloaded or failed).
func (k *Kamd) Reload(t testing.TB, script string) {
	t.Helper()
	ok, bad := k.countLog("script reloaded"), k.countLog("reload failed")
	if err := os.WriteFile(k.Script, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := k.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for k.countLog("script reloaded") == ok && k.countLog("reload failed") == bad {
		if time.Now().After(deadline) {
			t.Fatalf("kamd logged no reload outcome within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runKamd runs kamd to completion (for -c, -v) and returns its output and exit code.
func runKamd(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(kamdBin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("kamd %v did not exit within 60s", args)
	}
	code = 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

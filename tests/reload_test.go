package tests

// End-to-end tests of live script reload through kamd's RPC (issue 3):
// reload under load, transactions pinned to their version, broken scripts,
// rollback, listen-socket changes, SIGHUP, and the "script" events.

import (
	"context"
	"encoding/json"
	"fmt"
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

	"github.com/emiago/sipgo/sip"
	"github.com/gorilla/websocket"
	"github.com/kamgo/kamgo/rpc"
)

// versionScript answers OPTIONS (and anything but MESSAGE/INVITE/ACK)
// statelessly with X-Version: v; relays MESSAGE and INVITE statefully to
// uasPort with a failure route that answers 503 with X-Failure-Version: v.
// The failure route has a different name in every version, so a
// transaction can only run the one of the version it started with.
func versionScript(v, uasPort int) string {
	return fmt.Sprintf(`
def ksr_request_route():
    if KSR.is_ACK():
        if KSR.tm.t_check_trans() > 0:
            KSR.tm.t_relay()
        return
    if KSR.is_method("MESSAGE|INVITE"):
        KSR.setdsturi("sip:127.0.0.1:%[2]d")
        KSR.tm.t_on_failure("failed_v%[1]d")
        if KSR.tm.t_relay() < 0:
            KSR.sl.sl_reply_error()
        return
    KSR.hdr.append_to_reply("X-Version: %[1]d\r\n")
    KSR.sl.send_reply(200, "OK")

def failed_v%[1]d():
    KSR.hdr.append_to_reply("X-Failure-Version: %[1]d\r\n")
    KSR.tm.t_reply(503, "Failed in v%[1]d")
`, v, uasPort)
}

func writeFile(t testing.TB, path, src string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
}

// reload rewrites the script and runs kamctl --json app_starlark.reload;
// it requires success and returns the result's new version.
func (k *rpcKamd) reload(t testing.TB, src string, params ...string) map[string]any {
	t.Helper()
	writeFile(t, k.Script, src)
	return asObject(t, k.ctlJSON(t, append([]string{"app_starlark.reload"}, params...)...), "app_starlark.reload")
}

func (k *rpcKamd) statusVersion(t testing.TB) int64 {
	t.Helper()
	return asInt(t, asObject(t, k.ctlJSON(t, "app_starlark.status"), "status")["version"], "status version")
}

// TestReloadUnderLoad: while two clients keep sending requests (OPTIONS
// answered by the script with its marker; MESSAGE relayed statefully to a
// UAS), the script is reloaded 20 times with kamctl. No request fails, every
// marker is a valid version and sequential requests never see an older one.
func TestReloadUnderLoad(t *testing.T) {
	uas := newUAS(t)
	k := startRPCKamd(t, rpcKamdOpts{script: func(int) string { return versionScript(1, uas.Port()) }})
	const reloads = 20

	var mu sync.Mutex
	var markers []int
	var failures []string
	var messages int
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	optUAC, msgUAC := newUAC(t), newUAC(t)
	wg.Add(2)
	go func() { // sequential OPTIONS, answered by the script
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			r, err := sipDo(optUAC, k.UDPAddr(), reqSpec{Method: "OPTIONS", RURI: "sip:" + k.Addr()}, 15*time.Second)
			if err != nil {
				fail("OPTIONS: %v", err)
				return
			}
			res := r.Res()
			vs := headerLines(r.Raw, "X-Version")
			v := -1
			if len(vs) == 1 {
				v, _ = strconv.Atoi(vs[0])
			}
			if res.StatusCode != 200 || v < 1 || v > reloads+1 {
				fail("OPTIONS answered %d %s with X-Version %q, want 200 and a version 1..%d", res.StatusCode, res.Reason, vs, reloads+1)
				return
			}
			mu.Lock()
			markers = append(markers, v)
			mu.Unlock()
		}
	}()
	go func() { // sequential MESSAGEs, relayed statefully to the UAS
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			r, err := sipDo(msgUAC, k.UDPAddr(), reqSpec{Method: "MESSAGE", RURI: "sip:bob@kamgo.test", Body: "hi"}, 15*time.Second)
			if err != nil {
				fail("MESSAGE: %v", err)
				return
			}
			if res := r.Res(); res.StatusCode != 200 {
				fail("MESSAGE relayed with t_relay answered %d %s, want the UAS's 200", res.StatusCode, res.Reason)
				return
			}
			mu.Lock()
			messages++
			mu.Unlock()
		}
	}()
	seen := func(v int) bool {
		mu.Lock()
		defer mu.Unlock()
		return len(markers) > 0 && markers[len(markers)-1] >= v || len(failures) > 0
	}
	for v := 2; v <= reloads+1; v++ {
		res := k.reload(t, versionScript(v, uas.Port()))
		if got := asInt(t, res["new"], "new"); got != int64(v) {
			t.Fatalf("reload %d: new version %d", v-1, got)
		}
		if got := asInt(t, res["old"], "old"); got != int64(v-1) {
			t.Fatalf("reload %d: old version %d, want %d", v-1, got, v-1)
		}
		// Let the client see this version before the next reload (bounded).
		deadline := time.Now().Add(20 * time.Second)
		for !seen(v) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if !seen(v) {
			t.Fatalf("after reload to version %d, no OPTIONS answered by it within 20s", v)
		}
	}
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for _, f := range failures {
		t.Error(f)
	}
	prev := 0
	for i, v := range markers {
		if v < prev {
			t.Errorf("request %d got X-Version %d after an earlier one got %d: went backwards", i, v, prev)
		}
		prev = v
	}
	if len(markers) == 0 || markers[len(markers)-1] != reloads+1 {
		t.Errorf("last marker %v, want %d", markers[max(0, len(markers)-1):], reloads+1)
	}
	if messages == 0 {
		t.Error("no MESSAGE was relayed during the reloads")
	}
	t.Logf("%d OPTIONS and %d MESSAGEs across %d reloads", len(markers), messages, reloads)
	st := asObject(t, k.ctlJSON(t, "app_starlark.status"), "status")
	if asInt(t, st["version"], "version") != reloads+1 {
		t.Errorf("status after %d reloads: %v", reloads, st)
	}
	prevs, _ := st["previous"].([]any)
	if len(prevs) == 0 {
		t.Errorf("status keeps no previous versions: %v", st)
	}
	for _, p := range prevs {
		if pv := asInt(t, asObject(t, p, "previous")["version"], "previous version"); pv >= reloads+1 || pv < 1 {
			t.Errorf("previous version %d is not older than the current %d", pv, reloads+1)
		}
	}
	k.Alive(t)
}

// heldUAS receives INVITEs and answers each only when the test says so.
type heldUAS struct {
	uas     *UAS
	invites chan *sip.Request
}

func newHeldUAS(t testing.TB) *heldUAS {
	t.Helper()
	port := freePort(t)
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	h := &heldUAS{uas: &UAS{t: t, conn: c}, invites: make(chan *sip.Request, 16)}
	h.uas.bg.init()
	go func() {
		defer close(h.uas.bg.done)
		seen := map[string]bool{}
		buf := make([]byte, 65535)
		for {
			n, _, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			msg, err := sip.NewParser().ParseSIP(append([]byte(nil), buf[:n]...))
			if err != nil {
				h.uas.bg.errorf("held UAS: unparsable datagram: %v", err)
				continue
			}
			req, ok := msg.(*sip.Request)
			if !ok || req.Method != sip.INVITE || req.CallID() == nil || seen[string(*req.CallID())] {
				continue // ACKs and INVITE retransmissions
			}
			seen[string(*req.CallID())] = true
			select {
			case h.invites <- req:
			case <-h.uas.bg.stop:
				return
			}
		}
	}()
	t.Cleanup(func() { h.uas.bg.shutdown(t, c) })
	return h
}

func (h *heldUAS) Port() int { return h.uas.Port() }

func (h *heldUAS) next(t testing.TB) *sip.Request {
	t.Helper()
	select {
	case r := <-h.invites:
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("the UAS got no INVITE within 15s")
		return nil
	}
}

// ackFor builds the ACK to a negative final response (same branch, To tag).
func ackFor(r received, local string) []byte {
	res := r.Res()
	var b strings.Builder
	fmt.Fprintf(&b, "ACK sip:bob@kamgo.test SIP/2.0\r\n")
	fmt.Fprintf(&b, "Via: %s\r\n", headerLines(r.Raw, "Via")[0])
	b.WriteString("Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nCall-ID: %s\r\n", res.From().Value(), res.To().Value(), res.CallID().Value())
	fmt.Fprintf(&b, "CSeq: %d ACK\r\nContent-Length: 0\r\n\r\n", res.CSeq().SeqNo)
	return []byte(b.String())
}

// TestReloadPinsTransactions: an INVITE transaction started under version 1
// runs version 1's failure route even though version 2 (which does not
// define that function) was loaded while it was pending.
func TestReloadPinsTransactions(t *testing.T) {
	uas := newHeldUAS(t)
	k := startRPCKamd(t, rpcKamdOpts{script: func(int) string { return versionScript(1, uas.Port()) }})
	uac := newUAC(t)

	invite := func() string {
		callID := randToken() + "@kamgo.test"
		uac.Send(k.UDPAddr(), buildRequest(uac.Local(), reqSpec{Method: "INVITE", RURI: "sip:bob@kamgo.test", CallID: callID}))
		return callID
	}
	finish := func(callID string) received {
		t.Helper()
		r := uac.Final(callID, 15*time.Second)
		uac.Send(k.UDPAddr(), ackFor(r, uac.Local()))
		return r
	}
	callID := invite()
	req := uas.next(t) // the transaction is pending at the UAS
	if got := k.reload(t, versionScript(2, uas.Port())); asInt(t, got["new"], "new") != 2 {
		t.Fatalf("reload: %v", got)
	}
	if v := marker(t, uac, k.Kamd); v != "2" {
		t.Fatalf("new requests after the reload get X-Version %q, want 2", v)
	}
	uas.uas.reply(req, 486, "Busy Here", "", nil)
	r := finish(callID)
	if res := r.Res(); res.StatusCode != 503 || !strings.Contains(res.Reason, "v1") {
		t.Errorf("INVITE started under v1: final %d %s, want 503 from v1's failure route", res.StatusCode, res.Reason)
	}
	if fv := headerLines(r.Raw, "X-Failure-Version"); len(fv) != 1 || fv[0] != "1" {
		t.Errorf("INVITE started under v1, failed after the reload to v2: X-Failure-Version %q, want [1] (the version it started with)\n%s", fv, r.Raw)
	}

	// A transaction started under v2 runs v2's failure route.
	callID = invite()
	uas.uas.reply(uas.next(t), 486, "Busy Here", "", nil)
	r = finish(callID)
	if fv := headerLines(r.Raw, "X-Failure-Version"); len(fv) != 1 || fv[0] != "2" {
		t.Errorf("INVITE started under v2: X-Failure-Version %q, want [2]\n%s", fv, r.Raw)
	}
	k.Alive(t)
}

var posRe = regexp.MustCompile(`route\.star:(\d+):(\d+): \S`)

// TestReloadBrokenScript: a broken script fails the reload with
// file:line:col: message, the old version keeps serving, ten times in a
// row; then a fixed script loads. An undefined t_on_failure function fails
// the reload with its file:line too.
func TestReloadBrokenScript(t *testing.T) {
	k := startRPCKamd(t, rpcKamdOpts{script: func(int) string { return markerScript("1") }})
	uac := newUAC(t)
	for i := 0; i < 10; i++ {
		// The error moves down one line each time: line 3+i.
		src := strings.Repeat("\n", i) + "def ksr_request_route():\n    KSR.sl.send_reply(200, \"OK\"\n"
		writeFile(t, k.Script, src)
		r := k.ctl(t, "app_starlark.reload")
		if r.Code == 0 {
			t.Fatalf("broken script #%d reloaded: %s", i+1, r)
		}
		wantRPCError(t, r, 500)
		m := posRe.FindStringSubmatch(r.Stderr)
		if m == nil || !strings.Contains(r.Stderr, k.Script+":") {
			t.Fatalf("broken script #%d: stderr lacks %s:line:col: message: %s", i+1, k.Script, r)
		}
		if m[1] != strconv.Itoa(3+i) {
			t.Errorf("broken script #%d: error at line %s, want %d: %s", i+1, m[1], 3+i, r.Stderr)
		}
		if v := marker(t, uac, k.Kamd); v != "1" {
			t.Fatalf("after broken reload #%d the served marker is %q, want the old version's 1", i+1, v)
		}
		k.Alive(t)
	}
	if v := k.statusVersion(t); v != 1 {
		t.Errorf("status version %d after 10 failed reloads, want 1", v)
	}
	if res := k.reload(t, markerScript("2")); asInt(t, res["new"], "new") != 2 {
		t.Errorf("fixed script: %v", res)
	}
	if v := marker(t, uac, k.Kamd); v != "2" {
		t.Errorf("after the fixed script loaded: X-Version %q, want 2", v)
	}

	writeFile(t, k.Script, "def ksr_request_route():\n    KSR.hdr.append_to_reply(\"X-Version: 3\\r\\n\")\n    KSR.tm.t_on_failure(\"nosuch\")\n    KSR.sl.send_reply(200, \"OK\")\n")
	r := k.ctl(t, "app_starlark.reload")
	wantRPCError(t, r, 500)
	if m := posRe.FindStringSubmatch(r.Stderr); m == nil || m[1] != "3" || !strings.Contains(r.Stderr, "nosuch") {
		t.Errorf("undefined failure callback: want route.star:3:col naming nosuch: %s", r)
	}
	if v := marker(t, uac, k.Kamd); v != "2" {
		t.Errorf("after the undefined-callback reload: X-Version %q, want 2", v)
	}
	if v := k.statusVersion(t); v != 2 {
		t.Errorf("status version %d, want 2", v)
	}
	k.Alive(t)
}

// TestReloadRollback: after two reloads, rollback goes back one version at
// a time (status and served marker), and fails when there is nothing left.
func TestReloadRollback(t *testing.T) {
	k := startRPCKamd(t, rpcKamdOpts{script: func(int) string { return markerScript("1") }})
	uac := newUAC(t)
	k.reload(t, markerScript("2"))
	k.reload(t, markerScript("3"))
	if v := marker(t, uac, k.Kamd); v != "3" || k.statusVersion(t) != 3 {
		t.Fatalf("after two reloads: marker %q, status %d; want 3", v, k.statusVersion(t))
	}
	for want := 2; want >= 1; want-- {
		res := asObject(t, k.ctlJSON(t, "app_starlark.rollback"), "rollback")
		if asInt(t, res["old"], "old") != int64(want+1) || asInt(t, res["new"], "new") != int64(want) {
			t.Errorf("rollback: %v, want old %d new %d", res, want+1, want)
		}
		if v := k.statusVersion(t); v != int64(want) {
			t.Errorf("status version %d after rollback, want %d", v, want)
		}
		if v := marker(t, uac, k.Kamd); v != strconv.Itoa(want) {
			t.Errorf("after rollback the served marker is %q, want %d", v, want)
		}
	}
	wantRPCError(t, k.ctl(t, "app_starlark.rollback"), 404)
	if v := marker(t, uac, k.Kamd); v != "1" {
		t.Errorf("after a refused rollback: X-Version %q, want 1", v)
	}
	// A reload after rollbacks gets a fresh version number.
	if res := k.reload(t, markerScript("4")); asInt(t, res["new"], "new") <= 3 {
		t.Errorf("reload after rollback reused a version number: %v", res)
	}
	if v := marker(t, uac, k.Kamd); v != "4" {
		t.Errorf("X-Version %q, want 4", v)
	}
	k.Alive(t)
}

func listenScript(marker string, port int) string {
	return fmt.Sprintf("listen(\"udp:127.0.0.1:%[1]d\")\nlisten(\"tcp:127.0.0.1:%[1]d\")\n", port) + markerScript(marker)
}

// TestReloadListenChange: kamd runs the script's listen() sockets; a reload
// that changes them is refused (409) unless apply_live=true, which loads
// the rest and reports the sockets as not applied.
func TestReloadListenChange(t *testing.T) {
	k := startRPCKamd(t, rpcKamdOpts{noListen: true, script: func(p int) string { return listenScript("1", p) }})
	uac := newUAC(t)
	if v := marker(t, uac, k.Kamd); v != "1" {
		t.Fatalf("X-Version %q, want 1", v)
	}
	// Same sockets: a plain reload works.
	if res := k.reload(t, listenScript("2", k.Port)); asInt(t, res["new"], "new") != 2 {
		t.Fatalf("reload with unchanged listen(): %v", res)
	}
	other := freePort(t)
	writeFile(t, k.Script, listenScript("3", other))
	r := k.ctl(t, "app_starlark.reload")
	wantRPCError(t, r, 409)
	for _, w := range []string{"listen", strconv.Itoa(other), "apply_live"} {
		if !strings.Contains(r.Stderr, w) {
			t.Errorf("409 message does not mention %q: %s", w, r)
		}
	}
	if v := marker(t, uac, k.Kamd); v != "2" {
		t.Errorf("after the refused reload: X-Version %q, want 2", v)
	}
	if v := k.statusVersion(t); v != 2 {
		t.Errorf("status version %d after the refused reload, want 2", v)
	}
	// Removing every listen() is a change too: kamd would listen on its
	// default sockets at the next start.
	writeFile(t, k.Script, markerScript("9"))
	r = k.ctl(t, "app_starlark.reload")
	wantRPCError(t, r, 409)
	if !strings.Contains(r.Stderr, "5060") {
		t.Errorf("reload of a script without listen(): 409 message does not name the default sockets: %s", r)
	}
	if v := marker(t, uac, k.Kamd); v != "2" {
		t.Errorf("after the refused reload: X-Version %q, want 2", v)
	}
	writeFile(t, k.Script, listenScript("3", other))
	res := asObject(t, k.ctlJSON(t, "app_starlark.reload", "b:true"), "reload apply_live")
	na, _ := res["not_applied"].([]any)
	if asInt(t, res["new"], "new") != 3 || len(na) == 0 || !strings.Contains(fmt.Sprint(na), strconv.Itoa(other)) {
		t.Errorf("reload with apply_live=true: %v; want version 3 and the listen change in not_applied", res)
	}
	// Still serving on the original socket, with the new routing.
	if v := marker(t, uac, k.Kamd); v != "3" {
		t.Errorf("after the apply_live reload: X-Version %q, want 3", v)
	}
	k.Alive(t)
}

// subscribe opens a websocket client subscribed to topics.
func subscribe(t testing.TB, k *rpcKamd, topics ...string) (*rpc.Client, <-chan rpc.Event) {
	t.Helper()
	c, err := rpc.Dial(k.WS(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ch, err := c.Subscribe(ctx, topics...)
	if err != nil {
		t.Fatal(err)
	}
	return c, ch
}

// scriptEvent is the data of a "script" event.
type scriptEvent struct {
	Event   string `json:"event"`
	Version int    `json:"version"`
	Error   string `json:"error"`
	SHA256  string `json:"sha256"`
}

func nextScriptEvent(t testing.TB, ch <-chan rpc.Event) scriptEvent {
	t.Helper()
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatal("event connection closed")
			}
			if ev.Topic != "script" {
				continue
			}
			var se scriptEvent
			if err := json.Unmarshal(ev.Data, &se); err != nil {
				t.Fatalf("script event data %s: %v", ev.Data, err)
			}
			return se
		case <-time.After(30 * time.Second):
			t.Fatal("no script event within 30s")
			return scriptEvent{}
		}
	}
}

// TestReloadEvents: a subscriber gets a "script" event for a successful
// reload (with the new version), a failed one (with the error), a rollback
// and a SIGHUP reload; kamctl watch script prints them.
func TestReloadEvents(t *testing.T) {
	k := startRPCKamd(t, rpcKamdOpts{script: func(int) string { return markerScript("1") }})
	_, ch := subscribe(t, k, "script")
	uac := newUAC(t)

	res := k.reload(t, markerScript("2"))
	if ev := nextScriptEvent(t, ch); ev.Event != "loaded" || ev.Version != 2 || ev.SHA256 != res["sha256"] {
		t.Errorf("reload event %+v, want loaded version 2 sha256 %v", ev, res["sha256"])
	}
	writeFile(t, k.Script, "def ksr_request_route(:\n")
	wantRPCError(t, k.ctl(t, "app_starlark.reload"), 500)
	if ev := nextScriptEvent(t, ch); ev.Event != "reload_failed" || !posRe.MatchString(ev.Error) {
		t.Errorf("failed reload event %+v, want reload_failed with route.star:line:col: message", ev)
	}
	k.ctlOK(t, "app_starlark.rollback")
	if ev := nextScriptEvent(t, ch); ev.Event != "rollback" || ev.Version != 1 {
		t.Errorf("rollback event %+v, want rollback to version 1", ev)
	}

	// SIGHUP reloads the file and publishes the same event.
	writeFile(t, k.Script, markerScript("3"))
	if err := k.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if ev := nextScriptEvent(t, ch); ev.Event != "loaded" || ev.Version != 3 {
		t.Errorf("SIGHUP reload event %+v, want loaded version 3", ev)
	}
	if v := marker(t, uac, k.Kamd); v != "3" {
		t.Errorf("after SIGHUP: X-Version %q, want 3", v)
	}
	writeFile(t, k.Script, "def ksr_request_route():\n    KSR.tm.t_on_failure(\"nosuch\")\n")
	if err := k.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if ev := nextScriptEvent(t, ch); ev.Event != "reload_failed" || !strings.Contains(ev.Error, "route.star:2:") {
		t.Errorf("failed SIGHUP reload event %+v, want reload_failed naming route.star:2", ev)
	}
	if v := marker(t, uac, k.Kamd); v != "3" {
		t.Errorf("after a failed SIGHUP reload: X-Version %q, want 3", v)
	}

	t.Run("kamctl watch", func(t *testing.T) {
		out := &logBuffer{}
		var errOut logBuffer
		cmd := exec.Command(kamctlBin, "-s", k.WS(), "--json", "watch", "script")
		cmd.Env = cleanEnv()
		cmd.Stdout, cmd.Stderr = out, &errOut
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		var waitErr error
		go func() { waitErr = cmd.Wait(); close(exited) }()
		defer func() {
			select {
			case <-exited:
			default:
				_ = cmd.Process.Kill()
				<-exited
			}
		}()
		type line struct {
			Topic string      `json:"topic"`
			Data  scriptEvent `json:"data"`
			TS    string      `json:"ts"`
		}
		lines := func() []line {
			var ls []line
			for _, s := range strings.Split(strings.TrimSpace(out.String()), "\n") {
				if s == "" {
					continue
				}
				var l line
				if err := json.Unmarshal([]byte(s), &l); err != nil {
					t.Fatalf("kamctl --json watch printed a line that is not JSON: %q", s)
				}
				ls = append(ls, l)
			}
			return ls
		}
		waitFor := func(what string, ok func(line) bool) line {
			t.Helper()
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				for _, l := range lines() {
					if ok(l) {
						return l
					}
				}
				select {
				case <-exited:
					t.Fatalf("kamctl watch exited (%v) before printing %s; stderr: %s", waitErr, what, errOut.String())
				case <-time.After(20 * time.Millisecond):
				}
			}
			t.Fatalf("kamctl watch did not print %s within 30s; stdout:\n%s\nstderr: %s", what, out.String(), errOut.String())
			return line{}
		}
		// The watcher subscribes asynchronously: reload until it shows one.
		writeFile(t, k.Script, markerScript("5"))
		deadline := time.Now().Add(30 * time.Second)
		for len(lines()) == 0 && time.Now().Before(deadline) {
			k.ctlOK(t, "app_starlark.reload")
			time.Sleep(50 * time.Millisecond)
		}
		v := asInt(t, k.reload(t, markerScript("6"))["new"], "new")
		l := waitFor(fmt.Sprintf("the loaded event of version %d", v), func(l line) bool { return l.Data.Event == "loaded" && int64(l.Data.Version) == v })
		if l.Topic != "script" || l.TS == "" {
			t.Errorf("watch line %+v: want topic script and a ts", l)
		}
		writeFile(t, k.Script, "def ksr_request_route(:\n")
		wantRPCError(t, k.ctl(t, "app_starlark.reload"), 500)
		waitFor("the reload_failed event", func(l line) bool { return l.Data.Event == "reload_failed" && posRe.MatchString(l.Data.Error) })
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
			if waitErr != nil {
				t.Errorf("kamctl watch on SIGINT: %v, want exit 0; stderr: %s", waitErr, errOut.String())
			}
		case <-time.After(30 * time.Second):
			t.Error("kamctl watch did not exit on SIGINT")
		}
	})
	k.Alive(t)
}

// TestReloadSlowSubscriber: a subscriber that never reads does not stall
// kamd: while it is connected and many reload events are published, SIP
// requests keep being answered and reloads keep completing; kamd drops it.
func TestReloadSlowSubscriber(t *testing.T) {
	// Events carry the script's path: a long one makes each about 3 KiB,
	// so that the socket buffers fill after a few thousand events.
	long := make([]string, 13)
	for i := range long {
		long[i] = strings.Repeat(string(rune('a'+i)), 250)
	}
	k := startRPCKamd(t, rpcKamdOpts{scriptDir: filepath.Join(long...), script: func(int) string { return markerScript("1") }})
	// A small receive buffer so that kamd's writes to it back up soon.
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 1024,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetReadBuffer(2048)
			}
			return c, err
		}}
	slow, _, err := d.Dial(k.WS(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if m := wsCall(t, slow, []byte(`{"jsonrpc":"2.0","method":"events.subscribe","params":[["script","stats"],1],"id":1}`)); m["result"] == nil {
		t.Fatalf("events.subscribe: %v", m)
	}
	// From here on the slow subscriber never reads.

	c, err := rpc.Dial(k.WS(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var failures []string
	var mu sync.Mutex
	answered := 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	uac := newUAC(t)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			r, err := sipDo(uac, k.UDPAddr(), reqSpec{Method: "OPTIONS", RURI: "sip:" + k.Addr()}, 15*time.Second)
			mu.Lock()
			if err != nil {
				failures = append(failures, err.Error())
			} else if r.Res().StatusCode != 200 {
				failures = append(failures, fmt.Sprintf("OPTIONS: %d", r.Res().StatusCode))
			} else {
				answered++
			}
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	// Publish reload events until kamd reports it dropped the subscriber
	// (bounded): every reload must complete meanwhile.
	const maxReloads = 5000
	n := 0
	deadline := time.Now().Add(3 * time.Minute)
	for ; n < maxReloads && time.Now().Before(deadline) && !strings.Contains(k.Log(), "dropping event subscriber"); n++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := c.Call(ctx, "app_starlark.reload", nil)
		cancel()
		if err != nil {
			t.Fatalf("reload %d while a subscriber does not read: %v", n+1, err)
		}
	}
	close(stop)
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	if answered == 0 {
		t.Error("no SIP request was answered during the reloads")
	}
	if !strings.Contains(k.Log(), "dropping event subscriber") {
		t.Errorf("after %d reload events the subscriber that never reads was not dropped as a slow consumer", n)
	}
	// The dropped subscriber finds its connection closed once it reads
	// what was buffered.
	if tc, ok := slow.NetConn().(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(8 << 20) // read the backlog at loopback speed
	}
	var rerr error
	for rerr == nil {
		slow.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, _, rerr = slow.ReadMessage()
	}
	if ne, ok := rerr.(net.Error); ok && ne.Timeout() {
		t.Errorf("the dropped subscriber's connection is still open: %v", rerr)
	}
	t.Logf("%d reloads, %d OPTIONS answered", n, answered)
	// kamd still serves RPC and SIP.
	if v := marker(t, newUAC(t), k.Kamd); v != "1" {
		t.Errorf("X-Version %q, want 1", v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Call(ctx, "core.version", nil); err != nil {
		t.Errorf("core.version after the slow subscriber: %v", err)
	}
	k.Alive(t)
}

// TestReloadStaticParams: a modparam that cannot change live (usrloc's
// db_mode sizes and opens things at start) is refused with 409 like a
// listen change, unless apply_live, which leaves it and reports it; a live
// modparam the new script drops goes back to its default; the core params
// read at start (workers) are refused the same way.
func TestReloadStaticParams(t *testing.T) {
	script := func(marker, params string) string { return params + "\n" + markerScript(marker) }
	k := startRPCKamd(t, rpcKamdOpts{script: func(int) string { return script("1", `modparam("usrloc", "db_mode", 1)`) }})
	uac := newUAC(t)
	writeFile(t, k.Script, script("2", `modparam("usrloc", "db_mode", 2)`))
	r := k.ctl(t, "app_starlark.reload")
	wantRPCError(t, r, 409)
	for _, w := range []string{`modparam("usrloc", "db_mode") 1 → 2`, "restart", "apply_live"} {
		if !strings.Contains(r.Stderr, w) {
			t.Errorf("409 message does not mention %q: %s", w, r)
		}
	}
	// Dropping it means its default, 0: a change too.
	writeFile(t, k.Script, script("2", ""))
	wantRPCError(t, k.ctl(t, "app_starlark.reload"), 409)
	if v := marker(t, uac, k.Kamd); v != "1" {
		t.Errorf("after refused reloads: X-Version %q, want 1", v)
	}
	writeFile(t, k.Script, script("2", `modparam("usrloc", "db_mode", 1)`+"\n"+`core_param("workers", 3)`))
	r = k.ctl(t, "app_starlark.reload")
	wantRPCError(t, r, 409)
	if !strings.Contains(r.Stderr, `core_param("workers")`) {
		t.Errorf("409 message does not mention workers: %s", r)
	}
	writeFile(t, k.Script, script("3", ""))
	res := asObject(t, k.ctlJSON(t, "app_starlark.reload", "b:true"), "reload apply_live")
	if na := fmt.Sprint(res["not_applied"]); asInt(t, res["new"], "new") != 2 || !strings.Contains(na, "db_mode") {
		t.Errorf("reload with apply_live=true: %v; want version 2 and db_mode in not_applied", res)
	}
	if v := marker(t, uac, k.Kamd); v != "3" {
		t.Errorf("after the apply_live reload: X-Version %q, want 3", v)
	}
	k.Alive(t)
}

package tests

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// dsUAS is a gateway behind dispatcher: it answers OPTIONS with 200 and
// INVITEs with 200 (no ACK needed for the test), unless it is dead, when
// it answers nothing at all (as a crashed host whose port still drops).
type dsUAS struct {
	conn    *net.UDPConn
	dead    atomic.Bool
	mu      sync.Mutex
	invites []string // Call-IDs
	dropped []string // Call-IDs of INVITEs it got while dead
	options int
}

func newDSUAS(t *testing.T) *dsUAS {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	u := &dsUAS{conn: c}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			msg, err := sip.NewParser().ParseSIP(append([]byte(nil), buf[:n]...))
			req, ok := msg.(*sip.Request)
			if err != nil || !ok || req.IsAck() {
				continue
			}
			if u.dead.Load() {
				if req.IsInvite() {
					u.mu.Lock()
					u.dropped = append(u.dropped, string(*req.CallID()))
					u.mu.Unlock()
				}
				continue
			}
			u.mu.Lock()
			if req.IsInvite() {
				u.invites = append(u.invites, string(*req.CallID()))
			} else if req.Method == sip.OPTIONS {
				u.options++
			}
			u.mu.Unlock()
			res := sip.NewResponseFromRequest(req, 200, "OK", nil)
			if res.To() != nil {
				if _, ok := res.To().Params.Get("tag"); !ok {
					res.To().Params.Add("tag", "gw"+randToken())
				}
			}
			_, _ = c.WriteToUDP([]byte(res.String()), from)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return u
}

func (u *dsUAS) Port() int { return u.conn.LocalAddr().(*net.UDPAddr).Port }
func (u *dsUAS) URI() string {
	return fmt.Sprintf("sip:127.0.0.1:%d", u.Port())
}
func (u *dsUAS) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.invites)
}

func (u *dsUAS) got(callID string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, c := range u.invites {
		if c == callID {
			return true
		}
	}
	return false
}

const dsE2EScript = `
modparam("dispatcher", "list_file", "LIST")
modparam("dispatcher", "ds_ping_interval", 1)
modparam("dispatcher", "ds_probing_mode", 1)
modparam("dispatcher", "ds_probing_threshold", 1)
modparam("dispatcher", "ds_inactive_threshold", 1)
modparam("tm", "fr_timer", 1000)
modparam("tm", "fr_inv_timer", 1500)

def ksr_request_route():
    if KSR.is_ACK():
        KSR.tm.t_relay()
        return
    if KSR.dispatcher.ds_select_dst(1, 4) < 0:
        KSR.sl.send_reply(503, "No gateway")
        return
    KSR.tm.t_on_failure("ds_failover")
    KSR.tm.t_relay()

def ds_failover():
    if KSR.tm.t_is_canceled() > 0:
        return
    if KSR.tm.t_branch_timeout() > 0 or KSR.tm.t_check_status("503") > 0:
        KSR.dispatcher.ds_mark_dst_state("ip")
        if KSR.dispatcher.ds_next_dst() > 0:
            KSR.tm.t_on_failure("ds_failover")
            KSR.tm.t_relay()
`

// TestDispatcherE2E: three UASes behind round robin; one dies: the call
// that reaches it times out and fails over to another in the failure
// route; probing marks it inactive (no more calls to it); it comes back
// and probing makes it active again.
func TestDispatcherE2E(t *testing.T) {
	gws := []*dsUAS{newDSUAS(t), newDSUAS(t), newDSUAS(t)}
	dir := t.TempDir()
	list := filepath.Join(dir, "dispatcher.list")
	var b strings.Builder
	for _, g := range gws {
		fmt.Fprintf(&b, "1 %s 0 0\n", g.URI())
	}
	if err := os.WriteFile(list, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	k := startRPCKamd(t, rpcKamdOpts{script: func(int) string { return strings.Replace(dsE2EScript, "LIST", list, 1) }})
	flags := func() map[string]string {
		m := asObject(t, k.ctlJSON(t, "dispatcher.list"), "dispatcher.list")
		out := map[string]string{}
		for _, r := range m["RECORDS"].([]any) {
			for _, tg := range r.(map[string]any)["SET"].(map[string]any)["TARGETS"].([]any) {
				d := tg.(map[string]any)["DEST"].(map[string]any)
				out[d["URI"].(string)] = d["FLAGS"].(string)
			}
		}
		return out
	}
	waitFlags := func(uri, want string) {
		t.Helper()
		deadline := time.Now().Add(8 * time.Second)
		for flags()[uri] != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: flags %v, want %s", uri, flags(), want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for _, g := range gws {
		waitFlags(g.URI(), "AP")
	}
	ua := newUAC(t)
	call := func() (string, int) {
		cid := randToken() + "@kamgo.test"
		r := ua.Do(k.Kamd, reqSpec{Method: "INVITE", RURI: "sip:bob@example.com", CallID: cid})
		return cid, r.Res().StatusCode
	}
	// All up: round robin reaches each gateway once.
	for i := 0; i < 3; i++ {
		if cid, code := call(); code != 200 {
			t.Fatalf("call %d (%s): %d", i, cid, code)
		}
	}
	for i, g := range gws {
		if g.count() != 1 {
			t.Fatalf("gateway %d got %d INVITEs, want 1", i, g.count())
		}
	}
	// Gateway 0 dies. Round robin's next pick is gateway 0 again (unless a
	// probe already marked it): the call times out there (fr_timer, no
	// provisional) and the failure route moves it on.
	gws[0].dead.Store(true)
	cid, code := call()
	if code != 200 {
		t.Fatalf("failover call: %d", code)
	}
	if !gws[0].got(cid) && !gws[1].got(cid) && !gws[2].got(cid) {
		t.Fatalf("no gateway got %s", cid)
	}
	gws[0].mu.Lock()
	wentThere := len(gws[0].dropped) > 0 && gws[0].dropped[0] == cid
	gws[0].mu.Unlock()
	if !wentThere {
		t.Fatalf("the failover call %s did not try the dead gateway first", cid)
	}
	waitFlags(gws[0].URI(), "IP")
	// While it is inactive, no call goes there.
	before := gws[0].count()
	for i := 0; i < 4; i++ {
		if _, code := call(); code != 200 {
			t.Fatalf("call while gateway 0 is down: %d", code)
		}
	}
	if gws[0].count() != before {
		t.Fatal("a call was sent to the inactive gateway")
	}
	// It comes back: the next probe answered makes it active.
	gws[0].dead.Store(false)
	waitFlags(gws[0].URI(), "AP")
	got := false
	for i := 0; i < 3; i++ {
		cid, code := call()
		if code != 200 {
			t.Fatalf("call after recovery: %d", code)
		}
		got = got || gws[0].got(cid)
	}
	if !got {
		t.Fatal("the recovered gateway got no call in a round robin of three")
	}
	if !strings.Contains(k.Log(), "dispatcher: destination state changed") {
		t.Fatal("no state change logged")
	}
}

package tests

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// statefulScript is the usual Kamailio stateful proxy: in-dialog requests
// follow the route set, CANCELs go to their transaction, initial requests
// are record-routed and relayed to uas1, with a failure route that retries
// uas2 after a 486 or a timeout.
func statefulScript(uas1, uas2 int) string {
	return fmt.Sprintf(`
modparam("tm", "fr_timer", 1000)

def ksr_request_route():
    if KSR.siputils.has_totag() > 0:
        if KSR.rr.loose_route() > 0:
            KSR.tm.t_relay()
            return
        if KSR.is_ACK():
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return
        KSR.sl.sl_send_reply(404, "Not here")
        return
    if KSR.is_CANCEL():
        if KSR.tm.t_check_trans() > 0:
            KSR.tm.t_relay()
        return
    KSR.rr.record_route()
    KSR.setdsturi("sip:127.0.0.1:%d")
    KSR.tm.t_on_failure("failover")
    KSR.tm.t_on_reply("on_reply")
    if KSR.tm.t_relay() < 0:
        KSR.sl.sl_reply_error()

def on_reply(msg):
    KSR.info("reply " + str(msg.status) + " for " + msg.method)

def failover():
    if KSR.tm.t_is_canceled() > 0:
        return
    code = KSR.pv.get("$T_reply_code")
    if code == 486 or KSR.tm.t_branch_timeout() > 0:
        KSR.info("failover after " + str(code))
        KSR.setdsturi("sip:127.0.0.1:%d")
        KSR.tm.t_relay()
`, uas1, uas2)
}

// sipUAS is a sipgo user agent server with scripted answers.
type sipUAS struct {
	t      testing.TB
	port   int
	mu     sync.Mutex
	seen   []*sip.Request
	events chan string
	// answer decides what an INVITE gets: codes sent in order; 0 means
	// hold the call until it is cancelled.
	answer []int
}

func startSipUAS(t testing.TB, answer ...int) *sipUAS {
	t.Helper()
	u := &sipUAS{t: t, port: freePort(t), events: make(chan string, 64), answer: answer}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("uas-" + strconv.Itoa(u.port)))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := sipgo.NewClient(ua, sipgo.WithClientConnectionAddr("127.0.0.1:"+strconv.Itoa(u.port)))
	if err != nil {
		t.Fatal(err)
	}
	contact := sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "uas", Host: "127.0.0.1", Port: u.port}}
	dialogs := sipgo.NewDialogServerCache(cli, contact)
	record := func(req *sip.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, req)
		u.mu.Unlock()
		select {
		case u.events <- string(req.Method):
		default:
		}
	}
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		record(req)
		if st, ok := tx.(*sip.ServerTx); ok {
			st.OnCancel(func(*sip.Request) { u.events <- "canceled" })
		}
		dlg, err := dialogs.ReadInvite(req, tx)
		if err != nil {
			t.Errorf("uas: %v", err)
			return
		}
		for _, code := range u.answer {
			if code == 0 {
				<-tx.Done() // held until CANCEL (OnCancel above records it)
				return
			}
			if err := dlg.Respond(code, reasonOf(code), nil); err != nil {
				t.Errorf("uas respond %d: %v", code, err)
				return
			}
			if code < 200 {
				// Ring a moment, as a phone does: sipgo's UAC handles each
				// response on its own goroutine, so a 200 sent in the same
				// instant could be handled before the 180 and end the
				// transaction, dropping the 180 before the test sees it.
				time.Sleep(100 * time.Millisecond)
			}
			if code >= 300 {
				// sipgo consumes the ACK to a negative reply inside Respond,
				// which returns early only when that ACK came.
				select {
				case <-tx.Done():
				default:
					u.events <- "ACK"
				}
			}
		}
		<-tx.Done()
	})
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) {
		// Record after the dialog saw it: sipgo handles each message on its
		// own goroutine, so a BYE sent right after could overtake the ACK.
		_ = dialogs.ReadAck(req, tx)
		record(req)
	})
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		record(req)
		if err := dialogs.ReadBye(req, tx); err != nil {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "No such call", nil))
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	go func() {
		_ = srv.ListenAndServe(context.WithValue(ctx, sipgo.ListenReadyCtxKey, sipgo.ListenReadyCtxValue(ready)), "udp", "127.0.0.1:"+strconv.Itoa(u.port))
	}()
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		t.Fatal("uas did not start")
	}
	t.Cleanup(func() { cancel(); ua.Close() })
	return u
}

func reasonOf(code int) string {
	switch code {
	case 180:
		return "Ringing"
	case 183:
		return "Session Progress"
	case 200:
		return "OK"
	case 486:
		return "Busy Here"
	}
	return "Reason"
}

// waitEvent waits for the UAS to see a method (or "canceled").
func (u *sipUAS) waitEvent(t testing.TB, want string, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case ev := <-u.events:
			if ev == want {
				return
			}
		case <-deadline:
			t.Fatalf("uas on %d: no %s within %v (saw %v)", u.port, want, d, u.methods())
		}
	}
}

func (u *sipUAS) methods() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []string
	for _, r := range u.seen {
		out = append(out, string(r.Method))
	}
	return out
}

func (u *sipUAS) first(method string) *sip.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, r := range u.seen {
		if string(r.Method) == method {
			return r
		}
	}
	return nil
}

// sipUAC is a sipgo caller.
type sipUAC struct {
	ua      *sipgo.UserAgent
	dialogs *sipgo.DialogClientCache
}

func startSipUAC(t testing.TB) *sipUAC {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("uac"))
	if err != nil {
		t.Fatal(err)
	}
	// The client sends from an ephemeral port and reads its responses there;
	// the callers in these tests never receive in-dialog requests.
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	contact := sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "uac", Host: "127.0.0.1"}}
	c := &sipUAC{ua: ua, dialogs: sipgo.NewDialogClientCache(cli, contact)}
	t.Cleanup(func() { ua.Close() })
	return c
}

func kamdURI(k *Kamd) sip.Uri {
	return sip.Uri{Scheme: "sip", User: "bob", Host: "127.0.0.1", Port: k.Port}
}

// call sends an INVITE to bob via kamd and waits for the answer, returning
// the dialog and every response code the caller saw.
func (c *sipUAC) call(t *testing.T, ctx context.Context, k *Kamd) (*sipgo.DialogClientSession, []int) {
	t.Helper()
	dlg, err := c.dialogs.Invite(ctx, kamdURI(k), nil)
	if err != nil {
		t.Fatalf("INVITE: %v", err)
	}
	var codes []int
	if err := dlg.WaitAnswer(ctx, sipgo.AnswerOptions{OnResponse: func(res *sip.Response) error {
		codes = append(codes, res.StatusCode)
		return nil
	}}); err != nil {
		t.Fatalf("waiting for the answer: %v (responses %v)\n%s", err, codes, k.Log())
	}
	return dlg, codes
}

func TestStatefulCallWithRecordRoute(t *testing.T) {
	uas := startSipUAS(t, 180, 200)
	k := startKamd(t, statefulScript(uas.port, uas.port))
	uac := startSipUAC(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	dlg, codes := uac.call(t, ctx, k)
	if got := fmt.Sprint(codes); !strings.HasPrefix(got, "[100 180 200") {
		t.Errorf("responses at the caller: %v, want 100 (kamd's) 180 200", codes)
	}
	ok := dlg.InviteResponse
	rr := ok.GetHeaders("Record-Route")
	if len(rr) == 0 || !strings.Contains(rr[0].Value(), "127.0.0.1:"+strconv.Itoa(k.Port)) || !strings.Contains(rr[0].Value(), ";lr") {
		t.Errorf("200 OK lacks kamd's Record-Route: %v", rr)
	}
	if n := len(ok.GetHeaders("Via")); n != 1 {
		t.Errorf("200 OK reached the caller with %d Vias, want 1 (kamd's popped)", n)
	}
	inv := uas.first("INVITE")
	if inv == nil {
		t.Fatal("the UAS never saw the INVITE")
	}
	if v := inv.Via(); v == nil || v.Port != k.Port {
		t.Errorf("INVITE at the UAS: top Via %v, want kamd's", v)
	}
	if err := dlg.Ack(ctx); err != nil {
		t.Fatalf("ACK: %v", err)
	}
	uas.waitEvent(t, "ACK", 5*time.Second)
	if ack := uas.first("ACK"); ack != nil && (ack.Via() == nil || ack.Via().Port != k.Port) {
		t.Errorf("ACK did not come through kamd (loose_route): Via %v", ack.Via())
	}
	if err := dlg.Bye(ctx); err != nil {
		t.Fatalf("BYE: %v\n%s", err, k.Log())
	}
	uas.waitEvent(t, "BYE", 5*time.Second)
	if bye := uas.first("BYE"); bye.Via() == nil || bye.Via().Port != k.Port {
		t.Errorf("BYE did not come through kamd: Via %v", bye.Via())
	}
	k.WaitLog(t, "reply 180 for INVITE", 5*time.Second)
	if strings.Contains(k.Log(), "reply 100 for INVITE") {
		// The UAS's own 100 is hop-by-hop; onreply still sees it, which is fine.
		t.Log("onreply saw the UAS's 100")
	}
}

func TestStatefulCancelRingingCall(t *testing.T) {
	uas := startSipUAS(t, 180, 0)
	k := startKamd(t, statefulScript(uas.port, uas.port))
	uac := startSipUAC(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	dlg, err := uac.dialogs.Invite(ctx, kamdURI(k), nil)
	if err != nil {
		t.Fatalf("INVITE: %v", err)
	}
	ringing := make(chan struct{})
	waitCtx, hangup := context.WithCancel(ctx)
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		done <- dlg.WaitAnswer(waitCtx, sipgo.AnswerOptions{OnResponse: func(res *sip.Response) error {
			if res.StatusCode == 180 {
				once.Do(func() { close(ringing) })
			}
			return nil
		}})
	}()
	select {
	case <-ringing:
	case <-time.After(5 * time.Second):
		t.Fatalf("no 180 at the caller\n%s", k.Log())
	}
	hangup() // sipgo sends CANCEL once a provisional came
	select {
	case <-done:
	case <-time.After(8 * time.Second):
		t.Fatal("the caller's INVITE transaction never ended after CANCEL")
	}
	uas.waitEvent(t, "canceled", 5*time.Second)
	if res := dlg.InviteResponse; res == nil || res.StatusCode != 487 {
		t.Errorf("caller's final response: %v, want 487", res)
	}
}

func TestStatefulFailureRouteRetriesSecondUAS(t *testing.T) {
	busy := startSipUAS(t, 486)
	other := startSipUAS(t, 180, 200)
	k := startKamd(t, statefulScript(busy.port, other.port))
	uac := startSipUAC(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	dlg, codes := uac.call(t, ctx, k)
	for _, c := range codes {
		if c == 486 {
			t.Errorf("the 486 reached the caller: %v", codes)
		}
	}
	if dlg.InviteResponse.StatusCode != 200 {
		t.Fatalf("final %d, want 200 from the second UAS", dlg.InviteResponse.StatusCode)
	}
	busy.waitEvent(t, "ACK", 5*time.Second) // kamd's hop-by-hop ACK for the 486
	other.waitEvent(t, "INVITE", time.Second)
	k.WaitLog(t, "failover after 486", 5*time.Second)
	if err := dlg.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	other.waitEvent(t, "ACK", 5*time.Second)
	if err := dlg.Bye(ctx); err != nil {
		t.Fatalf("BYE: %v", err)
	}
	other.waitEvent(t, "BYE", 5*time.Second)
}

func TestStatefulFailureRouteOnTimeout(t *testing.T) {
	// A destination that never answers: fr_timer (1 s here) fails the branch.
	dead, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	other := startSipUAS(t, 200)
	k := startKamd(t, statefulScript(dead.LocalAddr().(*net.UDPAddr).Port, other.port))
	uac := startSipUAC(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	dlg, _ := uac.call(t, ctx, k)
	if dlg.InviteResponse.StatusCode != 200 {
		t.Fatalf("final %d, want 200 after failover", dlg.InviteResponse.StatusCode)
	}
	k.WaitLog(t, "failover after 408", 5*time.Second)
	if err := dlg.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	other.waitEvent(t, "ACK", 5*time.Second)
	if err := dlg.Bye(ctx); err != nil {
		t.Fatalf("BYE: %v", err)
	}
	other.waitEvent(t, "BYE", 5*time.Second)
}

package tests

import (
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// TestUACEmergencyExample runs examples/uac_emergency end to end: a sipgo
// caller dials 112 through kamd and is answered 200, and a real sipgo
// phone on loopback UDP receives kamd's SIP MESSAGE (uac_req_send) and
// answers it, which the script's event callback reports.
func TestUACEmergencyExample(t *testing.T) {
	src, err := os.ReadFile("../examples/uac_emergency/route.star")
	if err != nil {
		t.Fatal(err)
	}
	const phone = `EMERGENCY_PHONE = "sip:desk@127.0.0.1:5090"`
	if !strings.Contains(string(src), phone) {
		t.Fatalf("the example no longer has the line %s", phone)
	}

	// The desk phone: a sipgo UAS answering MESSAGE with 200.
	deskPort := freePort(t)
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("desk"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *sip.Request, 4)
	srv.OnMessage(func(req *sip.Request, tx sip.ServerTransaction) {
		got <- req
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ready := make(chan struct{})
	go func() {
		_ = srv.ListenAndServe(context.WithValue(ctx, sipgo.ListenReadyCtxKey, sipgo.ListenReadyCtxValue(ready)), "udp", "127.0.0.1:"+strconv.Itoa(deskPort))
	}()
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		t.Fatal("the desk phone did not start")
	}
	t.Cleanup(func() { ua.Close() })

	script := strings.Replace(string(src), phone, `EMERGENCY_PHONE = "sip:desk@127.0.0.1:`+strconv.Itoa(deskPort)+`"`, 1)
	k := startKamd(t, script)

	// The caller: alice dials 112 through kamd.
	cua, err := sipgo.NewUA(sipgo.WithUserAgent("caller"))
	if err != nil {
		t.Fatal(err)
	}
	defer cua.Close()
	cli, err := sipgo.NewClient(cua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	contact := sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: "127.0.0.1"}}
	dialogs := sipgo.NewDialogClientCache(cli, contact)
	dlg, err := dialogs.Invite(ctx, sip.Uri{Scheme: "sip", User: "112", Host: "127.0.0.1", Port: k.Port}, nil)
	if err != nil {
		t.Fatalf("INVITE: %v", err)
	}
	if err := dlg.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatalf("the emergency call was not answered: %v\n%s", err, k.Log())
	}
	if dlg.InviteResponse.StatusCode != 200 {
		t.Errorf("caller got %d, want 200", dlg.InviteResponse.StatusCode)
	}
	_ = dlg.Ack(ctx)

	var msg *sip.Request
	select {
	case msg = <-got:
	case <-time.After(5 * time.Second):
		t.Fatalf("the desk phone got no MESSAGE\n%s", k.Log())
	}
	from := dlg.InviteRequest.From().Address.User
	want := "Emergency call from " + from + " to 112"
	if string(msg.Body()) != want {
		t.Errorf("MESSAGE body %q, want %q", msg.Body(), want)
	}
	if ct := msg.GetHeader("Content-Type"); ct == nil || ct.Value() != "text/plain" {
		t.Errorf("Content-Type %v", ct)
	}
	if v := msg.Via(); v == nil || v.Port != k.Port || v.Transport != "UDP" {
		t.Errorf("MESSAGE Via %v, want kamd's UDP socket", v)
	}
	if f := msg.From(); f == nil || f.Address.String() != "sip:emergency@127.0.0.1" {
		t.Errorf("MESSAGE From %v", f)
	}
	k.WaitLog(t, want, 5*time.Second)
	k.WaitLog(t, "Emergency notice for 112 delivered", 5*time.Second)

	// A regular call is logged as such (and relayed: here to nobody).
	c, err := net.DialUDP("udp", nil, k.UDPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	inv := buildRequest(c.LocalAddr().String(), reqSpec{Method: "INVITE", RURI: "sip:bob@127.0.0.1:" + strconv.Itoa(freePort(t))})
	if _, err := c.Write(inv); err != nil {
		t.Fatal(err)
	}
	k.WaitLog(t, "Just a regular call", 5*time.Second)
	select {
	case m := <-got:
		t.Errorf("a regular call sent a MESSAGE: %s", m.StartLine())
	default:
	}
}

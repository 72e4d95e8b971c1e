package tests

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

// authorized answers a 401/407 the way a phone does.
func authorized(t *testing.T, res *sip.Response, user, pw, method, uri string) string {
	t.Helper()
	h := res.GetHeader("WWW-Authenticate")
	name := "Authorization"
	if res.StatusCode == 407 {
		h, name = res.GetHeader("Proxy-Authenticate"), "Proxy-Authorization"
	}
	if h == nil {
		t.Fatalf("%d without a challenge", res.StatusCode)
	}
	ch, err := core.ParseDigestChallenge(h.Value())
	if err != nil {
		t.Fatal(err)
	}
	v, err := ch.Authorize(core.DigestCredentials{Username: user, Password: pw}, method, uri, 1, "0a4f113b", nil)
	if err != nil {
		t.Fatal(err)
	}
	return name + ": " + v
}

// The KEMI example port end to end: bob behind NAT registers with digest
// authentication, alice (not behind NAT) calls him through kamd and a real
// rtpengine, bob gets the INVITE with the branch route's ;nat=yes in the
// Record-Route and rtpengine's media address, and alice's BYE (no NAT on
// her side) finds the NAT flag in the Route and deletes the call in the
// engine.
func TestKemiBasicCallThroughNAT(t *testing.T) {
	e := startRtpengine(t)
	src, err := os.ReadFile(kemiBasicStar)
	if err != nil {
		t.Fatal(err)
	}
	k := startRPCKamd(t, rpcKamdOpts{script: func(int) string {
		s := strings.Replace(string(src), `"udp:127.0.0.1:2223"`, `"udp:127.0.0.1:`+strconv.Itoa(e.NG)+`"`, 1)
		s = strings.Replace(s, `replace-session-connection"`, `replace-session-connection delete-delay=0"`, 1)
		return s + "\nalias(\"kamgo.test\")\nmodparam(\"rtpengine\", \"rtpengine_tout_ms\", 300)\n"
	}})
	k.ctlOK(t, "auth_db.subscriber_add", "bob", "kamgo.test", "builder")
	k.ctlOK(t, "auth_db.subscriber_add", "alice", "kamgo.test", "wonderland")
	proxy := k.UDPAddr()
	bob := newPhone(t, "bob", "192.168.1.2", proxy)
	alice := newPhone(t, "alice", "127.0.0.1", proxy)
	// alice's Via and Contact are her real address: not behind NAT.
	aliceAddr := "127.0.0.1:" + strconv.Itoa(alice.sip.LocalAddr().(*net.UDPAddr).Port)
	aliceReq := func(method, ruri, callID, fromTag, to string, cseq int, extra []string, body string) string {
		return strings.ReplaceAll(alice.request(method, ruri, callID, fromTag, to, cseq, extra, body), "127.0.0.1:5060", aliceAddr)
	}

	cid := "reg-" + randToken()
	bob.send(proxy, bob.request("REGISTER", "sip:kamgo.test", cid, "r1", "<sip:bob@kamgo.test>", 1, []string{"Expires: 3600"}, ""))
	res := bob.final(cid, "REGISTER", 5*time.Second)
	if res.StatusCode != 401 {
		t.Fatalf("REGISTER without credentials: %d", res.StatusCode)
	}
	bob.send(proxy, bob.request("REGISTER", "sip:kamgo.test", cid, "r1", "<sip:bob@kamgo.test>", 2,
		[]string{"Expires: 3600", authorized(t, res, "bob", "builder", "REGISTER", "sip:kamgo.test")}, ""))
	if res = bob.wait("REGISTER 200", 5*time.Second, func(r received) bool {
		x := r.Res()
		return x != nil && x.CSeq().SeqNo == 2 && x.StatusCode >= 200
	}).Res(); res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d %s", res.StatusCode, res.Reason)
	}

	callID, tag := "call-"+randToken(), randToken()
	sdp := fmt.Sprintf("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n", alice.rtpPort())
	alice.send(proxy, aliceReq("INVITE", "sip:bob@kamgo.test", callID, tag, "<sip:bob@kamgo.test>", 1, nil, sdp))
	res = alice.final(callID, "INVITE", 5*time.Second)
	if res.StatusCode != 407 {
		t.Fatalf("INVITE without credentials: %d", res.StatusCode)
	}
	alice.send(proxy, aliceReq("INVITE", "sip:bob@kamgo.test", callID, tag, "<sip:bob@kamgo.test>", 2,
		[]string{authorized(t, res, "alice", "wonderland", "INVITE", "sip:bob@kamgo.test")}, sdp))
	inv := bob.wait("INVITE", 5*time.Second, func(r received) bool {
		return r.Req() != nil && r.Req().Method == sip.INVITE && string(*r.Req().CallID()) == callID
	}).Req()
	if rr := inv.GetHeader("Record-Route"); rr == nil || !strings.Contains(rr.Value(), ";nat=yes") {
		t.Errorf("INVITE at bob: Record-Route %v, want ;nat=yes from the branch route", rr)
	}
	if ip, port := media(string(inv.Body())); ip != "127.0.0.1" || port == alice.rtpPort() || port == 0 {
		t.Errorf("INVITE SDP at bob: %s:%d, want rtpengine's address", ip, port)
	}
	ok := alice.wait("INVITE 200", 10*time.Second, func(r received) bool {
		x := r.Res()
		return x != nil && string(*x.CallID()) == callID && x.CSeq().MethodName == sip.INVITE && x.CSeq().SeqNo == 2 && x.StatusCode >= 200
	}).Res()
	if ok.StatusCode != 200 {
		t.Fatalf("INVITE: %d %s", ok.StatusCode, ok.Reason)
	}
	if c := ok.Contact().Value(); !strings.Contains(c, ";alias=127.0.0.1~") {
		t.Errorf("200 Contact at alice %s: want bob's ;alias (onreply route with the branch's NAT flag)", c)
	}
	var routes []string
	rrs := ok.GetHeaders("Record-Route")
	for i := len(rrs) - 1; i >= 0; i-- {
		routes = append(routes, "Route: "+rrs[i].Value())
	}
	to, target := ok.To().Value(), ok.Contact().Address.String()
	alice.send(proxy, aliceReq("ACK", target, callID, tag, to, 2, routes, ""))
	if q, err := ngCall(e.NG, map[string]any{"command": "query", "call-id": callID, "from-tag": tag}); err != nil || q["result"] != "ok" {
		t.Fatalf("the engine has no call before the BYE: %v %v", q, err)
	}
	alice.send(proxy, aliceReq("BYE", target, callID, tag, to, 3, routes, ""))
	bob.wait("BYE", 5*time.Second, func(r received) bool {
		return r.Req() != nil && r.Req().Method == sip.BYE && string(*r.Req().CallID()) == callID
	})
	if res := alice.final(callID, "BYE", 5*time.Second); res.StatusCode != 200 {
		t.Errorf("BYE: %d", res.StatusCode)
	}
	if q, err := ngCall(e.NG, map[string]any{"command": "query", "call-id": callID, "from-tag": tag}); err != nil || q["result"] != "error" {
		t.Errorf("the call is still in the engine after the BYE (nat flag not seen?): result %v, err %v", q["result"], err)
	}
}

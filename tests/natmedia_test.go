package tests

import (
	"encoding/binary"
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
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/rtpengine"
)

// NAT and media end to end (issue 12): two phones "behind NAT" (their Via,
// Contact and SDP carry 10.0.0.x while they send from 127.0.0.1) register
// and call each other through kamd running the NAT and media parts of
// Kamailio's KEMI example with rtpengine_manage, against the real
// rtpengine (userspace mode, loopback, its own ports). Nothing is ever sent
// to a private address: the phones send only to the proxy and to
// rtpengine's loopback ports, and rtpengine gets SIP-source-address.

// rtpEngine is one rtpengine process started by a test.
type rtpEngine struct {
	NG   int // ng control port on 127.0.0.1
	cmd  *exec.Cmd
	log  *logBuffer
	done chan struct{}
}

func startRtpengine(t testing.TB) *rtpEngine {
	t.Helper()
	bin := "/usr/bin/rtpengine"
	if _, err := os.Stat(bin); err != nil {
		if p, err := exec.LookPath("rtpengine"); err == nil {
			bin = p
		} else if inCI() {
			t.Fatal("rtpengine not found (apt-get install -y rtpengine-daemon)")
		} else {
			t.Skip("rtpengine not found (apt-get install -y rtpengine-daemon)")
		}
	}
	for attempt := 0; attempt < 3; attempt++ {
		e := &rtpEngine{NG: freePort(t), log: &logBuffer{}, done: make(chan struct{})}
		base := freePort(t) &^ 1
		e.cmd = exec.Command(bin, "--config-file=none", "--interface=127.0.0.1",
			"--listen-ng=127.0.0.1:"+strconv.Itoa(e.NG), "--foreground", "--log-stderr", "--table=-1",
			"--port-min="+strconv.Itoa(base), "--port-max="+strconv.Itoa(base+40), "--no-fallback", "--log-level=6")
		e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
		e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := e.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { _ = e.cmd.Wait(); close(e.done) }()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-e.done:
				deadline = time.Time{}
				continue
			default:
			}
			if r, err := ngCall(e.NG, map[string]any{"command": "ping"}); err == nil && r["result"] == "pong" {
				t.Cleanup(func() {
					_ = e.cmd.Process.Signal(syscall.SIGTERM) // by PID
					select {
					case <-e.done:
					case <-time.After(5 * time.Second):
						_ = e.cmd.Process.Kill()
						<-e.done
					}
					if t.Failed() {
						t.Logf("rtpengine log:\n%s", e.log.String())
					}
				})
				return e
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = e.cmd.Process.Kill()
		<-e.done
		t.Logf("rtpengine did not start (attempt %d):\n%s", attempt+1, e.log.String())
	}
	t.Fatal("rtpengine did not answer ng pings")
	return nil
}

// ngCall sends one ng command from the test itself (the test's own view
// of the engine: its counters, whether a call exists).
func ngCall(port int, cmd map[string]any) (map[string]any, error) {
	c, err := net.Dial("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	pkt, err := rtpengine.Encode([]byte("t"+randToken()+" "), cmd)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(pkt); err != nil {
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	_, body, _ := strings.Cut(string(buf[:n]), " ")
	v, err := rtpengine.Decode([]byte(body))
	if err != nil {
		return nil, err
	}
	d, _ := v.(map[string]any)
	return d, nil
}

// phone is a SIP UA "behind NAT" on raw UDP: it advertises priv in Via,
// Contact and SDP, but sends from 127.0.0.1, and only to the proxy or
// to the address a message came from (loopback, checked).
type phone struct {
	t     testing.TB
	user  string
	priv  string
	proxy *net.UDPAddr
	sip   *net.UDPConn
	rtp   *net.UDPConn
	rtpIn atomic.Int64
	mu    sync.Mutex
	got   []received
	note  chan struct{}
	bg    background
	rtpBg background
}

func newPhone(t testing.TB, user, priv string, proxy *net.UDPAddr) *phone {
	t.Helper()
	p := &phone{t: t, user: user, priv: priv, proxy: proxy, note: make(chan struct{}, 1)}
	var err error
	if p.sip, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		t.Fatal(err)
	}
	if p.rtp, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		t.Fatal(err)
	}
	p.bg.init()
	p.rtpBg.init()
	go p.readLoop()
	go func() {
		defer close(p.rtpBg.done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := p.rtp.ReadFromUDP(buf); err != nil {
				return
			}
			p.rtpIn.Add(1)
		}
	}()
	t.Cleanup(func() { p.bg.shutdown(t, p.sip); p.rtpBg.shutdown(t, p.rtp) })
	return p
}

func (p *phone) rtpPort() int { return p.rtp.LocalAddr().(*net.UDPAddr).Port }

func (p *phone) sdp() string {
	return fmt.Sprintf("v=0\r\no=- 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n", p.priv, p.priv, p.rtpPort())
}

func (p *phone) send(to *net.UDPAddr, b string) {
	if !to.IP.IsLoopback() {
		p.bg.errorf("phone %s: refusing to send to %v (not loopback)", p.user, to)
		return
	}
	if _, err := p.sip.WriteToUDP([]byte(b), to); err != nil {
		select {
		case <-p.bg.stop:
			// Shut down while answering (a keepalive read just before
			// the socket closed): nothing is lost.
			return
		default:
		}
		p.bg.errorf("phone %s: %v", p.user, err)
	}
}

func (p *phone) readLoop() {
	defer close(p.bg.done)
	buf := make([]byte, 65535)
	for {
		n, from, err := p.sip.ReadFromUDP(buf)
		if err != nil {
			return
		}
		raw := append([]byte(nil), buf[:n]...)
		msg, err := sip.NewParser().ParseSIP(raw)
		if err != nil {
			p.bg.errorf("phone %s: unparsable: %v\n%s", p.user, err, raw)
			continue
		}
		p.mu.Lock()
		p.got = append(p.got, received{Raw: raw, Msg: msg, From: from})
		p.mu.Unlock()
		select {
		case p.note <- struct{}{}:
		default:
		}
		if req, ok := msg.(*sip.Request); ok && !req.IsAck() {
			body := ""
			if req.Method == sip.INVITE {
				body = p.sdp()
			}
			p.send(from, p.reply(req, 200, "OK", body))
		}
	}
}

// reply answers a request: its Vias, From, To with a tag, our private Contact.
func (p *phone) reply(req *sip.Request, code int, reason, body string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "SIP/2.0 %d %s\r\n", code, reason)
	for _, h := range req.GetHeaders("Via") {
		fmt.Fprintf(&b, "Via: %s\r\n", h.Value())
	}
	for _, h := range req.GetHeaders("Record-Route") {
		fmt.Fprintf(&b, "Record-Route: %s\r\n", h.Value())
	}
	fmt.Fprintf(&b, "From: %s\r\n", req.From().Value())
	to := req.To().Value()
	if !strings.Contains(to, "tag=") {
		to += ";tag=" + p.user + "tag"
	}
	fmt.Fprintf(&b, "To: %s\r\nCall-ID: %s\r\nCSeq: %s\r\n", to, req.CallID().Value(), req.CSeq().Value())
	fmt.Fprintf(&b, "Contact: <sip:%s@%s:5060>\r\n", p.user, p.priv)
	if body != "" {
		b.WriteString("Content-Type: application/sdp\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	return b.String()
}

// request builds a request leaving the phone (private Via with rport).
func (p *phone) request(method, ruri, callID, fromTag, to string, cseq int, extra []string, body string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s SIP/2.0\r\nVia: SIP/2.0/UDP %s:5060;branch=z9hG4bK%s;rport\r\nMax-Forwards: 70\r\n", method, ruri, p.priv, randToken())
	fmt.Fprintf(&b, "From: <sip:%s@kamgo.test>;tag=%s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d %s\r\n", p.user, fromTag, to, callID, cseq, method)
	fmt.Fprintf(&b, "Contact: <sip:%s@%s:5060>\r\n", p.user, p.priv)
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	if body != "" {
		b.WriteString("Content-Type: application/sdp\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	return b.String()
}

// wait returns the first message matching f, failing after d.
func (p *phone) wait(what string, d time.Duration, f func(r received) bool) received {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for {
		p.mu.Lock()
		for _, r := range p.got {
			if f(r) {
				p.mu.Unlock()
				return r
			}
		}
		p.mu.Unlock()
		if time.Now().After(deadline) {
			p.t.Fatalf("phone %s: no %s within %v", p.user, what, d)
		}
		select {
		case <-p.note:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (p *phone) final(callID, method string, d time.Duration) *sip.Response {
	p.t.Helper()
	return p.wait("final "+method+" reply", d, func(r received) bool {
		res := r.Res()
		return res != nil && res.StatusCode >= 200 && string(*res.CallID()) == callID && res.CSeq().MethodName == sip.RequestMethod(method)
	}).Res()
}

func (p *phone) register(t testing.TB) *sip.Response {
	t.Helper()
	cid := "reg-" + randToken()
	p.send(p.proxy, p.request("REGISTER", "sip:kamgo.test", cid, randToken(), "<sip:"+p.user+"@kamgo.test>", 1, []string{"Expires: 3600"}, ""))
	res := p.final(cid, "REGISTER", 5*time.Second)
	if res.StatusCode != 200 {
		t.Fatalf("REGISTER %s: %d %s", p.user, res.StatusCode, res.Reason)
	}
	return res
}

// dialog is an established call as the caller sees it.
type dialog struct {
	callID, fromTag, to, target string
	routes                      []string
	ok                          *sip.Response
}

func (p *phone) call(t testing.TB, callee string) *dialog {
	t.Helper()
	d := &dialog{callID: "call-" + randToken(), fromTag: randToken()}
	p.send(p.proxy, p.request("INVITE", "sip:"+callee+"@kamgo.test", d.callID, d.fromTag, "<sip:"+callee+"@kamgo.test>", 1, nil, p.sdp()))
	d.ok = p.final(d.callID, "INVITE", 10*time.Second)
	if d.ok.StatusCode != 200 {
		t.Fatalf("INVITE: %d %s", d.ok.StatusCode, d.ok.Reason)
	}
	d.to = d.ok.To().Value()
	d.target = d.ok.Contact().Address.String()
	rr := d.ok.GetHeaders("Record-Route")
	for i := len(rr) - 1; i >= 0; i-- {
		d.routes = append(d.routes, "Route: "+rr[i].Value())
	}
	p.send(p.proxy, p.request("ACK", d.target, d.callID, d.fromTag, d.to, 1, d.routes, ""))
	return d
}

func (p *phone) bye(t testing.TB, d *dialog) *sip.Response {
	t.Helper()
	p.send(p.proxy, p.request("BYE", d.target, d.callID, d.fromTag, d.to, 2, d.routes, ""))
	return p.final(d.callID, "BYE", 10*time.Second)
}

// media is the connection address and port of an SDP body.
func media(body string) (string, int) {
	ip, port := "", 0
	for _, l := range strings.Split(body, "\r\n") {
		if strings.HasPrefix(l, "c=IN IP4 ") {
			ip = strings.TrimPrefix(l, "c=IN IP4 ")
		}
		if strings.HasPrefix(l, "m=audio ") {
			port, _ = strconv.Atoi(strings.Fields(l)[1])
		}
	}
	return ip, port
}

// sendRTP sends n PCMU packets (20 ms each) to ip:port from the phone's RTP socket.
func (p *phone) sendRTP(t testing.TB, ip string, port, n int) {
	t.Helper()
	dst := &net.UDPAddr{IP: net.ParseIP(ip), Port: port}
	if dst.IP == nil || !dst.IP.IsLoopback() {
		t.Fatalf("media address %s:%d is not loopback (not rewritten by rtpengine?)", ip, port)
	}
	pkt := make([]byte, 12+160)
	pkt[0], pkt[1] = 0x80, 0
	binary.BigEndian.PutUint32(pkt[8:], uint32(len(p.user))*7919)
	for i := 0; i < n; i++ {
		binary.BigEndian.PutUint16(pkt[2:], uint16(i))
		binary.BigEndian.PutUint32(pkt[4:], uint32(i*160))
		if _, err := p.rtp.WriteToUDP(pkt, dst); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// natScript is examples/nat/route.star (the NAT and media part of
// Kamailio's KEMI example in Starlark) with the test's engines.
func natScript(engines string, extra string) string {
	src, err := os.ReadFile(filepath.Join(repoRoot, "examples", "nat", "route.star"))
	if err != nil {
		panic(err)
	}
	s := strings.Replace(string(src), `"udp:127.0.0.1:2223"`, `"`+engines+`"`, 1)
	// Deleted at once (rtpengine's default keeps a deleted call 30 s), so
	// the test sees the delete in the engine's own query.
	s = strings.Replace(s, `replace-session-connection"`, `replace-session-connection delete-delay=0"`, 1)
	return s + "\n" + extra + "\n"
}

// natFacts runs register + call + media + BYE against a proxy and returns
// what a VoIP engineer would compare, with ports normalised.
func natFacts(t *testing.T, proxy *net.UDPAddr, ng int) map[string]string {
	t.Helper()
	alice := newPhone(t, "alice", "10.0.0.1", proxy)
	bob := newPhone(t, "bob", "192.168.1.2", proxy)
	facts := map[string]string{}
	norm := func(s string) string {
		s = strings.ReplaceAll(s, strconv.Itoa(proxy.Port), "PROXY")
		s = strings.ReplaceAll(s, strconv.Itoa(alice.sip.LocalAddr().(*net.UDPAddr).Port), "ALICE")
		s = strings.ReplaceAll(s, strconv.Itoa(bob.sip.LocalAddr().(*net.UDPAddr).Port), "BOB")
		return s
	}
	reg := bob.register(t)
	alice.register(t)
	facts["register 200 Contact"] = norm(reg.Contact().Value())

	d := alice.call(t, "bob")
	inv := bob.wait("INVITE", 5*time.Second, func(r received) bool {
		return r.Req() != nil && r.Req().Method == sip.INVITE && string(*r.Req().CallID()) == d.callID
	}).Req()
	facts["INVITE R-URI at callee"] = norm(inv.Recipient.String())
	facts["INVITE Contact at callee"] = norm(inv.Contact().Value())
	ip, bobDst := media(string(inv.Body()))
	facts["INVITE SDP c= at callee"] = ip
	facts["INVITE SDP o= rewritten"] = strconv.FormatBool(!strings.Contains(string(inv.Body()), "10.0.0.1"))
	facts["INVITE SDP port is the engine's"] = strconv.FormatBool(bobDst != alice.rtpPort() && bobDst != 0)
	okIP, aliceDst := media(string(d.ok.Body()))
	facts["200 SDP c= at caller"] = okIP
	facts["200 SDP private address gone"] = strconv.FormatBool(!strings.Contains(string(d.ok.Body()), "192.168.1.2"))
	facts["200 Contact at caller"] = norm(d.ok.Contact().Value())
	if cl := d.ok.ContentLength(); cl == nil || int(*cl) != len(d.ok.Body()) {
		t.Errorf("200 OK Content-Length %v for a %d-byte body", cl, len(d.ok.Body()))
	}
	ack := bob.wait("ACK", 5*time.Second, func(r received) bool {
		return r.Req() != nil && r.Req().IsAck() && string(*r.Req().CallID()) == d.callID
	})
	facts["ACK reaches callee at"] = norm(ack.Req().Recipient.String())

	// Media both ways through the engine.
	alice.sendRTP(t, okIP, aliceDst, 20)
	bob.sendRTP(t, ip, bobDst, 20)
	deadline := time.Now().Add(3 * time.Second)
	for (alice.rtpIn.Load() < 10 || bob.rtpIn.Load() < 10) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	facts["RTP reached callee"] = strconv.FormatBool(bob.rtpIn.Load() >= 10)
	facts["RTP reached caller"] = strconv.FormatBool(alice.rtpIn.Load() >= 10)
	q, err := ngCall(ng, map[string]any{"command": "query", "call-id": d.callID, "from-tag": d.fromTag})
	if err != nil {
		t.Fatalf("ng query: %v", err)
	}
	pk := int64(-1)
	if tot, ok := q["totals"].(map[string]any); ok {
		if rtp, ok := tot["RTP"].(map[string]any); ok {
			pk, _ = rtp["packets"].(int64)
		}
	}
	facts["engine counted RTP packets >= 40"] = strconv.FormatBool(pk >= 40)
	if pk < 40 {
		t.Logf("ng query: %v", q)
	}

	if res := alice.bye(t, d); res.StatusCode != 200 {
		t.Errorf("BYE: %d", res.StatusCode)
	}
	q, err = ngCall(ng, map[string]any{"command": "query", "call-id": d.callID, "from-tag": d.fromTag})
	facts["call deleted on BYE"] = strconv.FormatBool(err == nil && q["result"] == "error")
	return facts
}

func wantNATFacts(t *testing.T, who string, f map[string]string) {
	t.Helper()
	want := map[string]string{
		"INVITE SDP c= at callee":          "127.0.0.1",
		"200 SDP c= at caller":             "127.0.0.1",
		"INVITE SDP o= rewritten":          "true",
		"INVITE SDP port is the engine's":  "true",
		"200 SDP private address gone":     "true",
		"RTP reached callee":               "true",
		"RTP reached caller":               "true",
		"engine counted RTP packets >= 40": "true",
		"call deleted on BYE":              "true",
		"INVITE R-URI at callee":           "sip:bob@192.168.1.2:5060",
		"ACK reaches callee at":            "sip:bob@192.168.1.2:5060",
		"INVITE Contact at callee":         "<sip:alice@10.0.0.1:5060;alias=127.0.0.1~ALICE~1>",
		"200 Contact at caller":            "<sip:bob@192.168.1.2:5060;alias=127.0.0.1~BOB~1>",
	}
	for k, v := range want {
		if f[k] != v {
			t.Errorf("%s: %s = %q, want %q", who, k, f[k], v)
		}
	}
	if !regexp.MustCompile(`received="sip:127\.0\.0\.1:BOB"`).MatchString(f["register 200 Contact"]) {
		t.Errorf("%s: REGISTER 200 Contact %q has no received of the source", who, f["register 200 Contact"])
	}
}

func TestNATMediaKamd(t *testing.T) {
	e := startRtpengine(t)
	k := startRPCKamd(t, rpcKamdOpts{script: func(int) string {
		s := natScript("udp:127.0.0.1:"+strconv.Itoa(e.NG), `modparam("rtpengine", "rtpengine_tout_ms", 300)`)
		// Keepalives every second here, to see them within the test.
		return strings.Replace(s, `"natping_interval", 30`, `"natping_interval", 1`, 1)
	}})
	f := natFacts(t, k.UDPAddr(), e.NG)
	wantNATFacts(t, "kamd", f)

	// SIP keepalives reach a NATed phone at its public (here loopback)
	// address, and its answers are absorbed and counted.
	carol := newPhone(t, "carol", "10.0.0.3", k.UDPAddr())
	carol.register(t)
	keep := carol.wait("keepalive OPTIONS", 5*time.Second, func(r received) bool {
		return r.Req() != nil && r.Req().Method == sip.OPTIONS
	}).Req()
	if keep.Recipient.String() != "sip:carol@10.0.0.3:5060" || !strings.Contains(keep.From().Value(), "sip:pinger@kamailio.org") {
		t.Errorf("keepalive: %s From %s", keep.Recipient.String(), keep.From().Value())
	}
	deadline := time.Now().Add(3 * time.Second)
	for statsAll(t, k, "nathelper:")["nathelper:natping_replies"] < 1 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if st := statsAll(t, k, "nathelper:"); st["nathelper:natping_replies"] < 1 || st["nathelper:natping_sent"] < 1 {
		t.Errorf("nathelper stats: %v", st)
	}

	// The registered contacts keep received and the NAT branch flags.
	dump := k.ctlOK(t, "ul.dump")
	for _, w := range []string{"sip:127.0.0.1:", "192.168.1.2"} {
		if !strings.Contains(dump, w) {
			t.Errorf("ul.dump has no %q:\n%s", w, dump)
		}
	}
	show := k.ctlJSON(t, "rtpengine.show", "all")
	list, ok := show.([]any)
	if !ok || len(list) != 1 {
		t.Fatalf("rtpengine.show all: %v", show)
	}
	n := asObject(t, list[0], "engine")
	if n["url"] != "udp:127.0.0.1:"+strconv.Itoa(e.NG) || fmt.Sprint(n["disabled"]) != "0" || fmt.Sprint(n["weight"]) != "1" {
		t.Errorf("rtpengine.show: %v", n)
	}
	ping := asObject(t, k.ctlJSON(t, "rtpengine.ping", "all"), "ping")
	if ping["status"] != "success" {
		t.Errorf("rtpengine.ping: %v", ping)
	}
	wantRPCError(t, k.ctl(t, "rtpengine.show", "udp:127.0.0.1:1"), 404)
}

// An engine that does not answer is disabled and the call goes through
// the other one; rtpengine.show says so, rtpengine.enable brings it back
// only if it answers.
func TestNATMediaFailover(t *testing.T) {
	e := startRtpengine(t)
	dead := freePort(t) // nothing listens there
	// The dead engine's weight makes it the first choice for every Call-ID.
	socks := fmt.Sprintf("udp:127.0.0.1:%d=1000 udp:127.0.0.1:%d=1", dead, e.NG)
	k := startRPCKamd(t, rpcKamdOpts{script: func(int) string {
		return natScript(socks, `modparam("rtpengine", "rtpengine_tout_ms", 100)
modparam("rtpengine", "rtpengine_retr", 2)
modparam("rtpengine", "rtpengine_disable_tout", 300)`)
	}})
	f := natFacts(t, k.UDPAddr(), e.NG)
	wantNATFacts(t, "kamd with a dead engine", f)
	list, _ := k.ctlJSON(t, "rtpengine.show", "all").([]any)
	if len(list) != 2 {
		t.Fatalf("rtpengine.show: %v", list)
	}
	d0, d1 := asObject(t, list[0], "dead"), asObject(t, list[1], "live")
	if fmt.Sprint(d0["disabled"]) != "1" || fmt.Sprint(d1["disabled"]) != "0" {
		t.Errorf("after failover: dead %v, live %v", d0, d1)
	}
	if r := asInt(t, d0["recheck_ticks"], "recheck_ticks"); r <= 0 || r > 300 {
		t.Errorf("recheck_ticks %d", r)
	}
	st := statsAll(t, k, "rtpengine:")
	if st["rtpengine:failovers"] < 1 {
		t.Errorf("stats: %v", st)
	}
	en := asObject(t, k.ctlJSON(t, "rtpengine.enable", fmt.Sprintf("udp:127.0.0.1:%d", dead), "1"), "enable")
	if en["status"] != "fail" {
		t.Errorf("enable a dead engine: %v", en)
	}
	dis := asObject(t, k.ctlJSON(t, "rtpengine.enable", "udp:127.0.0.1:"+strconv.Itoa(e.NG), "0"), "disable")
	if dis["status"] != "disable" {
		t.Errorf("disable: %v", dis)
	}
	list, _ = k.ctlJSON(t, "rtpengine.show", "all").([]any)
	if l := asObject(t, list[1], "live"); l["disabled"] != "1(permanent)" || l["recheck_ticks"] != "N/A" {
		t.Errorf("permanently disabled: %v", l)
	}
	k.ctlOK(t, "rtpengine.reload")
	list, _ = k.ctlJSON(t, "rtpengine.show", "all").([]any)
	if l := asObject(t, list[1], "live"); fmt.Sprint(l["disabled"]) != "0" {
		t.Errorf("after reload: %v", l)
	}
}

// kamailioNATCfg is natScript's logic in Kamailio's native language, for
// Kamailio 5.6 from Debian with its nathelper and rtpengine modules.
func kamailioNATCfg(port, rpcPort, ng int, modDir string) string {
	return `#!KAMAILIO
debug=2
log_stderror=yes
children=2
auto_aliases=no
listen=udp:127.0.0.1:` + strconv.Itoa(port) + `
mpath="` + modDir + `/"
loadmodule "jsonrpcs.so"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "nathelper.so"
loadmodule "rtpengine.so"
modparam("jsonrpcs", "transport", 4)
modparam("jsonrpcs", "dgram_socket", "udp:127.0.0.1:` + strconv.Itoa(rpcPort) + `")
modparam("usrloc", "db_mode", 0)
modparam("usrloc", "nat_bflag", 6)
modparam("registrar", "received_avp", "$avp(RECEIVED)")
modparam("nathelper", "received_avp", "$avp(RECEIVED)")
modparam("nathelper", "natping_interval", 30)
modparam("nathelper", "ping_nated_only", 1)
modparam("nathelper", "sipping_bflag", 7)
modparam("nathelper", "sipping_from", "sip:pinger@kamailio.org")
modparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:` + strconv.Itoa(ng) + `")
modparam("rtpengine", "rtpengine_tout_ms", 300)

request_route {
	if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
	route(NATDETECT);
	if (is_method("CANCEL")) { if (t_check_trans()) route(RELAY); exit; }
	route(WITHINDLG);
	t_check_trans();
	if (is_method("INVITE|SUBSCRIBE")) record_route();
	if (is_method("REGISTER")) { route(REGISTRAR); exit; }
	route(LOCATION);
}
route[RELAY] {
	if (is_method("INVITE|BYE|SUBSCRIBE|UPDATE")) t_on_branch("MANAGE_BRANCH");
	if (is_method("INVITE|SUBSCRIBE|UPDATE")) t_on_reply("MANAGE_REPLY");
	if (is_method("INVITE")) t_on_failure("MANAGE_FAILURE");
	if (!has_totag() && (isflagset(5) || isbflagset(6))) add_rr_param(";nat=yes");
	if (!t_relay()) sl_send_reply("500", "Server Error");
	exit;
}
route[WITHINDLG] {
	if (!has_totag()) return;
	if (loose_route()) {
		route(DLGURI);
		if (is_method("ACK")) route(NATMANAGE);
		route(RELAY);
		exit;
	}
	if (is_method("ACK")) { if (t_check_trans()) route(RELAY); exit; }
	sl_send_reply("404", "Not here");
	exit;
}
route[REGISTRAR] {
	if (isflagset(5)) { setbflag(6); setbflag(7); }
	if (!save("location")) sl_send_reply("500", "Server Error");
	exit;
}
route[LOCATION] {
	if (!lookup("location")) { sl_send_reply("404", "Not Found"); exit; }
	route(RELAY);
	exit;
}
route[NATDETECT] {
	force_rport();
	if (nat_uac_test("19")) {
		if (is_method("REGISTER")) fix_nated_register();
		else if (is_first_hop()) set_contact_alias();
		setflag(5);
	}
	return;
}
route[NATMANAGE] {
	if (is_request()) { if (has_totag()) { if (check_route_param("nat=yes")) setbflag(6); } }
	if (!(isflagset(5) || isbflagset(6))) return;
	rtpengine_manage("SIP-source-address replace-origin replace-session-connection delete-delay=0");
	if (is_reply()) { if (isbflagset(6)) set_contact_alias(); }
	return;
}
route[DLGURI] { if (!isdsturiset()) handle_ruri_alias(); return; }
branch_route[MANAGE_BRANCH] { route(NATMANAGE); }
onreply_route[MANAGE_REPLY] { if ($rs > 100 && $rs < 299) route(NATMANAGE); }
failure_route[MANAGE_FAILURE] { route(NATMANAGE); }
`
}

// startKamailioNAT runs Kamailio with kamailioNATCfg; stopped at cleanup.
func startKamailioNAT(t *testing.T, ng int, edit ...func(string) string) *kamailioRegistrar {
	t.Helper()
	bin, modDir, _, missing := findKamailio()
	if missing == "" {
		for _, m := range []string{"nathelper.so", "rtpengine.so"} {
			if _, err := os.Stat(modDir + "/" + m); err != nil {
				missing = "Kamailio module " + m + " not installed"
			}
		}
	}
	if missing != "" {
		if inCI() {
			t.Fatal(missing)
		}
		t.Skip(missing)
	}
	var lastLog string
	for attempt := 0; attempt < 3; attempt++ {
		k := &kamailioRegistrar{Dir: t.TempDir(), Port: freePort(t), RPCPort: freePort(t), log: &logBuffer{}, done: make(chan struct{})}
		cfg := k.Dir + "/kamailio.cfg"
		text := kamailioNATCfg(k.Port, k.RPCPort, ng, modDir)
		for _, f := range edit {
			text = f(text)
		}
		if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		k.cmd = exec.Command(bin, "-DD", "-E", "-f", cfg, "-Y", k.Dir, "-m", "64", "-M", "8")
		k.cmd.Dir = k.Dir
		k.cmd.Stdout, k.cmd.Stderr = k.log, k.log
		k.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := k.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { k.err = k.cmd.Wait(); close(k.done) }()
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-k.done:
				deadline = time.Time{}
				continue
			default:
			}
			if k.probe() {
				t.Cleanup(func() {
					k.stop()
					if t.Failed() {
						t.Logf("Kamailio log:\n%s", k.log.String())
					}
				})
				return k
			}
		}
		k.stop()
		lastLog = k.log.String()
	}
	t.Fatalf("Kamailio did not start:\n%s", lastLog)
	return nil
}

// The same calls through kamd and through Kamailio 5.6 with the same
// script logic and the same rtpengine: what the phones see (Contact
// aliases, received, SDP rewritten by the engine, media, delete on BYE)
// must be the same, and so must the shape of rtpengine.show.
func TestNATMediaKamailioSideBySide(t *testing.T) {
	e := startRtpengine(t)
	kam := startKamailioNAT(t, e.NG)
	k := startRPCKamd(t, rpcKamdOpts{script: func(int) string {
		return natScript("udp:127.0.0.1:"+strconv.Itoa(e.NG), `modparam("rtpengine", "rtpengine_tout_ms", 300)`)
	}})
	kamUDP := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: kam.Port}
	fk := natFacts(t, kamUDP, e.NG)
	fd := natFacts(t, k.UDPAddr(), e.NG)
	wantNATFacts(t, "Kamailio", fk)
	for key, v := range fk {
		if fd[key] != v {
			t.Errorf("%s:\n  Kamailio %q\n  kamd     %q", key, v, fd[key])
		}
	}
	for key := range fd {
		if _, ok := fk[key]; !ok {
			t.Errorf("fact %q only for kamd", key)
		}
	}
	t.Logf("side by side: %d facts equal", len(fk))

	// rtpengine.show: the same fields and values.
	var kr struct {
		Result []map[string]any `json:"result"`
	}
	if err := json.Unmarshal(kam.RPC(t, "rtpengine.show", "all"), &kr); err != nil || len(kr.Result) != 1 {
		t.Fatalf("Kamailio rtpengine.show: %v %v", kr, err)
	}
	list, _ := k.ctlJSON(t, "rtpengine.show", "all").([]any)
	if len(list) != 1 {
		t.Fatalf("kamd rtpengine.show: %v", list)
	}
	dm := asObject(t, list[0], "kamd engine")
	for key, v := range kr.Result[0] {
		if fmt.Sprint(dm[key]) != fmt.Sprint(v) {
			t.Errorf("rtpengine.show %s: Kamailio %v, kamd %v", key, v, dm[key])
		}
	}
	if len(dm) != len(kr.Result[0]) {
		t.Errorf("rtpengine.show fields: Kamailio %v, kamd %v", kr.Result[0], dm)
	}
	var kp struct {
		Result map[string]any `json:"result"`
	}
	if err := json.Unmarshal(kam.RPC(t, "rtpengine.ping", "all"), &kp); err != nil {
		t.Fatal(err)
	}
	dp := asObject(t, k.ctlJSON(t, "rtpengine.ping", "all"), "kamd ping")
	if fmt.Sprint(kp.Result) != fmt.Sprint(dp) {
		t.Errorf("rtpengine.ping: Kamailio %v, kamd %v", kp.Result, dp)
	}
	// Disable (permanently), show, enable again (after a ping): the same
	// results and states.
	url := "udp:127.0.0.1:" + strconv.Itoa(e.NG)
	for _, flag := range []int{0, 1} {
		var ke struct {
			Result map[string]any `json:"result"`
		}
		if err := json.Unmarshal(kam.RPC(t, "rtpengine.enable", url, flag), &ke); err != nil {
			t.Fatal(err)
		}
		de := asObject(t, k.ctlJSON(t, "rtpengine.enable", url, strconv.Itoa(flag)), "kamd enable")
		if fmt.Sprint(ke.Result) != fmt.Sprint(de) {
			t.Errorf("rtpengine.enable %d: Kamailio %v, kamd %v", flag, ke.Result, de)
		}
		var ks struct {
			Result []map[string]any `json:"result"`
		}
		if err := json.Unmarshal(kam.RPC(t, "rtpengine.show", url), &ks); err != nil || len(ks.Result) != 1 {
			t.Fatalf("Kamailio rtpengine.show: %v %v", ks, err)
		}
		ds, _ := k.ctlJSON(t, "rtpengine.show", url).([]any)
		if len(ds) != 1 || fmt.Sprint(ks.Result[0]) != fmt.Sprint(ds[0]) {
			t.Errorf("rtpengine.show after enable %d: Kamailio %v, kamd %v", flag, ks.Result, ds)
		}
	}
}

// Route tests of every rtpengine function (kamd test) against a real
// rtpengine: examples/nat/functions.star with the engine configured.
func TestNATRouteTestsRtpengine(t *testing.T) {
	e := startRtpengine(t)
	dir := t.TempDir()
	src, err := os.ReadFile(filepath.Join(repoRoot, "examples", "nat", "functions.star"))
	if err != nil {
		t.Fatal(err)
	}
	script := strings.Replace(string(src), `modparam("rtpengine", "rtpengine_sock", "")`,
		`modparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:`+strconv.Itoa(e.NG)+`")`, 1)
	if script == string(src) {
		t.Fatal("functions.star has no empty rtpengine_sock to replace")
	}
	tests, err := os.ReadFile(filepath.Join(repoRoot, "tests", "testdata", "natmedia", "functions_test.star"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "functions.star"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "functions_test.star"), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	out, errs, code := runKamd(t, "test", "-v", filepath.Join(dir, "functions.star"))
	if code != 0 || !strings.Contains(out, "(5 tests)") {
		t.Fatalf("kamd test: exit %d\n%s%s", code, out, errs)
	}
}

// kamailioNHCfg answers each request with the return code of the
// nathelper function X-Fn names (X-Rc) and $du (X-Du): Kamailio's side of
// examples/nat/functions.star.
func kamailioNHCfg(port int, modDir string) string {
	return `#!KAMAILIO
debug=2
log_stderror=yes
children=1
auto_aliases=no
listen=udp:127.0.0.1:` + strconv.Itoa(port) + `
mpath="` + modDir + `/"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "textops.so"
loadmodule "nathelper.so"
modparam("nathelper", "received_avp", "$avp(RECEIVED)")
request_route {
	$var(rc) = 0;
	if ($hdr(X-Fn) == $null) { sl_send_reply("404", "Not here"); exit; }
	$var(arg) = $(hdr(X-Arg){s.int});
	if ($hdr(X-Fn) == "nat_uac_test") { nat_uac_test("$var(arg)"); $var(rc) = $rc; }
	else if ($hdr(X-Fn) == "is_rfc1918") { is_rfc1918("$hdr(X-Arg)"); $var(rc) = $rc; }
	else if ($hdr(X-Fn) == "add_contact_alias") { add_contact_alias(); $var(rc) = $rc; }
	else if ($hdr(X-Fn) == "set_contact_alias") { set_contact_alias(); $var(rc) = $rc; }
	else if ($hdr(X-Fn) == "handle_ruri_alias") { handle_ruri_alias(); $var(rc) = $rc; }
	else if ($hdr(X-Fn) == "fix_nated_sdp") { fix_nated_sdp("$var(arg)"); $var(rc) = $rc; }
	else if ($hdr(X-Fn) == "fix_nated_contact") { fix_nated_contact(); $var(rc) = $rc; }
	else if ($hdr(X-Fn) == "fix_nated_register") { fix_nated_register(); $var(rc) = $rc; }
	else if ($hdr(X-Fn) == "add_rcv_param") { add_rcv_param("$var(arg)"); $var(rc) = $rc; }
	if ($hdr(X-Fwd) != $null) { $du = $hdr(X-Fwd); forward(); exit; }
	append_to_reply("X-Rc: $var(rc)\r\n");
	if ($du != $null) append_to_reply("X-Du: $du\r\n");
	sl_send_reply("200", "OK");
	exit;
}
`
}

// The nathelper return codes on the same messages, from kamd
// (examples/nat/functions.star) and from Kamailio 5.6's nathelper.
func TestNATHelperKamailioSideBySide(t *testing.T) {
	bin, modDir, _, missing := findKamailio()
	if missing != "" {
		if inCI() {
			t.Fatal(missing)
		}
		t.Skip(missing)
	}
	kam := &kamailioRegistrar{Dir: t.TempDir(), Port: freePort(t), log: &logBuffer{}, done: make(chan struct{})}
	cfg := filepath.Join(kam.Dir, "kamailio.cfg")
	if err := os.WriteFile(cfg, []byte(kamailioNHCfg(kam.Port, modDir)), 0o644); err != nil {
		t.Fatal(err)
	}
	kam.cmd = exec.Command(bin, "-DD", "-E", "-f", cfg, "-Y", kam.Dir, "-m", "32", "-M", "8")
	kam.cmd.Stdout, kam.cmd.Stderr = kam.log, kam.log
	kam.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := kam.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { kam.err = kam.cmd.Wait(); close(kam.done) }()
	t.Cleanup(func() {
		kam.stop()
		if t.Failed() {
			t.Logf("Kamailio log:\n%s", kam.log.String())
		}
	})
	up := false
	for i := 0; i < 100 && !up; i++ {
		if up = kam.probe(); !up {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if !up {
		t.Fatal("Kamailio did not start")
	}
	src, err := os.ReadFile(filepath.Join(repoRoot, "examples", "nat", "functions.star"))
	if err != nil {
		t.Fatal(err)
	}
	k := startKamd(t, string(src))

	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	me := conn.LocalAddr().(*net.UDPAddr).Port
	var fwd string // X-Fwd of the next ask: the function's message comes back here
	var got *sip.Request
	ask := func(to int, fn, arg, ruri, via, contact, sdp string) (rc, du string) {
		t.Helper()
		var b strings.Builder
		// ;rport always: replies go to the socket, never to the Via host.
		fmt.Fprintf(&b, "INVITE %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK%s;rport\r\n", ruri, via, randToken())
		fmt.Fprintf(&b, "From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\nCall-ID: %s\r\nCSeq: 1 INVITE\r\n", randToken())
		fmt.Fprintf(&b, "Contact: <%s>\r\nMax-Forwards: 70\r\nX-Fn: %s\r\nX-Arg: %s\r\n", contact, fn, arg)
		if fwd != "" {
			fmt.Fprintf(&b, "X-Fwd: %s\r\n", fwd)
		}
		if sdp != "" {
			b.WriteString("Content-Type: application/sdp\r\n")
		}
		fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(sdp), sdp)
		if _, err := conn.WriteToUDP([]byte(b.String()), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: to}); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 65536)
		for {
			_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				t.Fatalf("%s(%s) to port %d: no answer: %v", fn, arg, to, err)
			}
			res, err := sip.NewParser().ParseSIP(buf[:n])
			if err != nil {
				t.Fatal(err)
			}
			if q, ok := res.(*sip.Request); ok && fwd != "" {
				got = q
				return "", ""
			}
			r, ok := res.(*sip.Response)
			if !ok || r.StatusCode < 200 {
				continue
			}
			if h := r.GetHeader("X-Rc"); h != nil {
				rc = h.Value()
			}
			if h := r.GetHeader("X-Du"); h != nil {
				du = h.Value()
			}
			return rc, du
		}
	}
	self := "127.0.0.1:" + strconv.Itoa(me)
	sdpAt := func(ip string) string {
		return "v=0\r\no=- 1 1 IN IP4 " + ip + "\r\ns=-\r\nc=IN IP4 " + ip + "\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
	}
	type msg struct{ name, via, contact, sdp string }
	msgs := []msg{
		{"clean", self, "sip:alice@" + self, sdpAt("127.0.0.1")},
		{"contact private", self, "sip:alice@10.0.0.5:" + strconv.Itoa(me), sdpAt("127.0.0.1")},
		{"contact 6598", self, "sip:alice@100.64.0.9:" + strconv.Itoa(me), sdpAt("127.0.0.1")},
		{"via public elsewhere", "198.51.100.7:" + strconv.Itoa(me), "sip:alice@" + self, sdpAt("127.0.0.1")},
		{"via private", "192.168.1.2:" + strconv.Itoa(me), "sip:alice@" + self, sdpAt("127.0.0.1")},
		{"via other port", "127.0.0.1:5999", "sip:alice@" + self, sdpAt("127.0.0.1")},
		{"via no port", "127.0.0.1", "sip:alice@" + self, sdpAt("127.0.0.1")},
		{"contact other port", self, "sip:alice@127.0.0.1:5999", sdpAt("127.0.0.1")},
		{"contact no port", self, "sip:alice@127.0.0.1", sdpAt("127.0.0.1")},
		{"sdp private", self, "sip:alice@" + self, sdpAt("10.0.0.5")},
		{"sdp public elsewhere", self, "sip:alice@" + self, sdpAt("198.51.100.7")},
		{"no sdp", self, "sip:alice@" + self, ""},
		{"behind nat", "10.0.0.5:5060", "sip:alice@10.0.0.5:5060", sdpAt("10.0.0.5")},
	}
	diff, same := 0, 0
	cmp := func(what string, kr, kd string, dr, dd string) {
		if kr != dr || kd != dd {
			diff++
			t.Errorf("%s: Kamailio rc %q du %q, kamd rc %q du %q", what, kr, kd, dr, dd)
		} else {
			same++
		}
	}
	for _, m := range msgs {
		for _, f := range []string{"1", "2", "4", "8", "16", "128", "256", "19"} {
			kr, kd := ask(kam.Port, "nat_uac_test", f, "sip:bob@example.com", m.via, m.contact, m.sdp)
			dr, dd := ask(k.Port, "nat_uac_test", f, "sip:bob@example.com", m.via, m.contact, m.sdp)
			cmp("nat_uac_test("+f+") "+m.name, kr, kd, dr, dd)
		}
		for _, fn := range []string{"add_contact_alias", "set_contact_alias", "fix_nated_contact"} {
			kr, kd := ask(kam.Port, fn, "", "sip:bob@example.com", m.via, m.contact, m.sdp)
			dr, dd := ask(k.Port, fn, "", "sip:bob@example.com", m.via, m.contact, m.sdp)
			cmp(fn+" "+m.name, kr, kd, dr, dd)
		}
	}
	for _, ip := range []string{"10.1.2.3", "172.16.0.1", "172.32.0.1", "192.168.5.5", "100.64.0.1", "100.128.0.1", "192.0.0.1", "8.8.8.8", "127.0.0.1"} {
		kr, _ := ask(kam.Port, "is_rfc1918", ip, "sip:bob@example.com", self, "sip:alice@"+self, "")
		dr, _ := ask(k.Port, "is_rfc1918", ip, "sip:bob@example.com", self, "sip:alice@"+self, "")
		cmp("is_rfc1918("+ip+")", kr, "", dr, "")
	}
	for _, ruri := range []string{"sip:bob@10.0.0.5:5060;alias=127.0.0.1~5070~1", "sip:bob@10.0.0.5;alias=127.0.0.1~5071~2", "sip:bob@example.com"} {
		kr, kd := ask(kam.Port, "handle_ruri_alias", "", ruri, self, "sip:alice@"+self, "")
		dr, dd := ask(k.Port, "handle_ruri_alias", "", ruri, self, "sip:alice@"+self, "")
		cmp("handle_ruri_alias "+ruri, kr, kd, dr, dd)
	}
	for _, m := range []msg{msgs[0], msgs[9], msgs[11]} {
		for _, f := range []string{"1", "2", "3", "4", "8", "10"} {
			kr, _ := ask(kam.Port, "fix_nated_sdp", f, "sip:bob@example.com", m.via, m.contact, m.sdp)
			dr, _ := ask(k.Port, "fix_nated_sdp", f, "sip:bob@example.com", m.via, m.contact, m.sdp)
			cmp("fix_nated_sdp("+f+") "+m.name, kr, "", dr, "")
		}
	}
	// The message as each function leaves it, forwarded back to the test.
	fwd = "sip:" + self
	norm := func(s string) string {
		s = strings.ReplaceAll(s, strconv.Itoa(k.Port), "PROXY")
		return strings.ReplaceAll(s, strconv.Itoa(kam.Port), "PROXY")
	}
	for _, m := range []msg{msgs[0], msgs[12], msgs[7]} {
		for _, c := range []struct{ fn, arg string }{{"fix_nated_contact", ""}, {"set_contact_alias", ""}, {"add_contact_alias", ""},
			{"add_rcv_param", "0"}, {"add_rcv_param", "1"}, {"fix_nated_sdp", "3"}, {"fix_nated_sdp", "10"}, {"fix_nated_sdp", "4"}} {
			ask(kam.Port, c.fn, c.arg, "sip:bob@example.com", m.via, m.contact, m.sdp)
			kc, kb := got.Contact().Value(), string(got.Body())
			ask(k.Port, c.fn, c.arg, "sip:bob@example.com", m.via, m.contact, m.sdp)
			dc, db := got.Contact().Value(), string(got.Body())
			cmp(c.fn+"("+c.arg+") "+m.name+" Contact", norm(kc), "", norm(dc), "")
			cmp(c.fn+"("+c.arg+") "+m.name+" body", kb, "", db, "")
		}
	}
	t.Logf("nathelper side by side: %d equal, %d different", same, diff)
}

// ngRecorder is an ng endpoint that records the commands it gets and
// answers them (pong; ok with the offered SDP back): it shows the exact
// dictionaries a proxy sends, to compare kamd's with Kamailio's.
type ngRecorder struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  []map[string]any
	bg   background
}

func newNGRecorder(t *testing.T) *ngRecorder {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &ngRecorder{conn: c}
	r.bg.init()
	go func() {
		defer close(r.bg.done)
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			cookie, body, _ := strings.Cut(string(buf[:n]), " ")
			v, err := rtpengine.Decode([]byte(body))
			d, _ := v.(map[string]any)
			if err != nil || d == nil {
				r.bg.errorf("ng recorder: bad command %q: %v", body, err)
				continue
			}
			ans := map[string]any{"result": "ok"}
			switch d["command"] {
			case "ping":
				ans["result"] = "pong"
			case "offer", "answer":
				ans["sdp"] = d["sdp"]
			}
			if d["command"] != "ping" {
				r.mu.Lock()
				r.got = append(r.got, d)
				r.mu.Unlock()
			}
			out, _ := rtpengine.Encode([]byte(cookie+" "), ans)
			_, _ = c.WriteToUDP(out, from)
		}
	}()
	t.Cleanup(func() { r.bg.shutdown(t, c) })
	return r
}

func (r *ngRecorder) Port() int { return r.conn.LocalAddr().(*net.UDPAddr).Port }

// next waits for the next recorded command.
func (r *ngRecorder) next(t *testing.T) map[string]any {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		if len(r.got) > 0 {
			d := r.got[0]
			r.got = r.got[1:]
			r.mu.Unlock()
			return d
		}
		r.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no ng command recorded")
	return nil
}

// The ng commands kamd and Kamailio 5.6 send for the same messages and the
// same flags strings must be the same dictionaries.
func TestRtpengineNGKamailioSideBySide(t *testing.T) {
	bin, modDir, _, missing := findKamailio()
	if missing != "" {
		if inCI() {
			t.Fatal(missing)
		}
		t.Skip(missing)
	}
	recK, recD := newNGRecorder(t), newNGRecorder(t)
	kam := &kamailioRegistrar{Dir: t.TempDir(), Port: freePort(t), log: &logBuffer{}, done: make(chan struct{})}
	cfg := filepath.Join(kam.Dir, "kamailio.cfg")
	text := strings.Replace(kamailioNHCfg(kam.Port, modDir), `loadmodule "nathelper.so"`, `loadmodule "nathelper.so"
loadmodule "rtpengine.so"
modparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:`+strconv.Itoa(recK.Port())+`")`, 1)
	text = strings.Replace(text, `	else if ($hdr(X-Fn) == "add_rcv_param")`, `	else if ($hdr(X-Fn) == "rtpengine_offer") { rtpengine_offer("$hdr(X-Arg)"); $var(rc) = $rc; }
	else if ($hdr(X-Fn) == "rtpengine_answer") { rtpengine_answer("$hdr(X-Arg)"); $var(rc) = $rc; }
	else if ($hdr(X-Fn) == "rtpengine_delete") { rtpengine_delete("$hdr(X-Arg)"); $var(rc) = $rc; }
	else if ($hdr(X-Fn) == "rtpengine_query") { rtpengine_query("$hdr(X-Arg)"); $var(rc) = $rc; }
	else if ($hdr(X-Fn) == "rtpengine_manage") { rtpengine_manage("$hdr(X-Arg)"); $var(rc) = $rc; }
	else if ($hdr(X-Fn) == "add_rcv_param")`, 1)
	text = strings.Replace(text, `$var(arg) = $(hdr(X-Arg){s.int});`, `if ($hdr(X-Fn) =~ "^rtpengine") { $var(arg) = 0; } else { $var(arg) = $(hdr(X-Arg){s.int}); }`, 1)
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	kam.cmd = exec.Command(bin, "-DD", "-E", "-f", cfg, "-Y", kam.Dir, "-m", "32", "-M", "8")
	kam.cmd.Stdout, kam.cmd.Stderr = kam.log, kam.log
	kam.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := kam.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { kam.err = kam.cmd.Wait(); close(kam.done) }()
	t.Cleanup(func() {
		kam.stop()
		if t.Failed() {
			t.Logf("Kamailio log:\n%s", kam.log.String())
		}
	})
	up := false
	for i := 0; i < 100 && !up; i++ {
		if up = kam.probe(); !up {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if !up {
		t.Fatal("Kamailio did not start")
	}
	src, err := os.ReadFile(filepath.Join(repoRoot, "examples", "nat", "functions.star"))
	if err != nil {
		t.Fatal(err)
	}
	k := startKamd(t, strings.Replace(string(src), `modparam("rtpengine", "rtpengine_sock", "")`,
		`modparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:`+strconv.Itoa(recD.Port())+`")`, 1))

	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	self := conn.LocalAddr().String()
	sdp := "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
	send := func(to int, method, fn, flags, toTag, body string) {
		var b strings.Builder
		fmt.Fprintf(&b, "%s sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKng1;rport\r\n", method, self)
		fmt.Fprintf(&b, "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKng2;rport\r\n")
		toHdr := "<sip:bob@example.com>"
		if toTag != "" {
			toHdr += ";tag=" + toTag
		}
		fmt.Fprintf(&b, "From: <sip:alice@example.com>;tag=a1\r\nTo: %s\r\nCall-ID: ng-call-1\r\nCSeq: 1 %s\r\n", toHdr, method)
		fmt.Fprintf(&b, "Contact: <sip:alice@%s>\r\nMax-Forwards: 70\r\nX-Fn: %s\r\nX-Arg: %s\r\n", self, fn, flags)
		if body != "" {
			b.WriteString("Content-Type: application/sdp\r\n")
		}
		fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
		if _, err := conn.WriteToUDP([]byte(b.String()), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: to}); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct{ method, fn, flags, toTag, body string }{
		{"INVITE", "rtpengine_offer", "", "", sdp},
		{"INVITE", "rtpengine_offer", "replace-origin replace-session-connection", "", sdp},
		{"INVITE", "rtpengine_offer", "trust-address ICE=remove RTP/AVP symmetric", "", sdp},
		{"INVITE", "rtpengine_offer", "SIP-source-address internal direction=external label=caller", "", sdp},
		{"INVITE", "rtpengine_offer", "SRTP AVPF rtcp-mux-demux TOS=184 DTLS=off", "", sdp},
		{"INVITE", "rtpengine_offer", "via-branch=1 to-tag repacketize=20", "b1", sdp},
		{"INVITE", "rtpengine_offer", "via-branch=2 call-id=other from-tag=ft", "", sdp},
		{"INVITE", "rtpengine_offer", "force-answer", "b1", sdp},
		{"INVITE", "rtpengine_manage", "replace-origin", "", sdp},
		{"ACK", "rtpengine_answer", "replace-origin", "b1", sdp},
		{"BYE", "rtpengine_delete", "", "b1", ""},
		{"BYE", "rtpengine_delete", "to-tag delete-delay=0", "b1", ""},
		{"BYE", "rtpengine_manage", "", "b1", ""},
		{"INFO", "rtpengine_query", "", "b1", ""},
	}
	for _, c := range cases {
		send(kam.Port, c.method, c.fn, c.flags, c.toTag, c.body)
		kd := recK.next(t)
		send(k.Port, c.method, c.fn, c.flags, c.toTag, c.body)
		dd := recD.next(t)
		ks, _ := rtpengine.Encode(nil, kd)
		ds, _ := rtpengine.Encode(nil, dd)
		if string(ks) != string(ds) {
			var d []string
			for key, v := range kd {
				if fmt.Sprint(dd[key]) != fmt.Sprint(v) {
					d = append(d, fmt.Sprintf("%s: Kamailio %v, kamd %v", key, v, dd[key]))
				}
			}
			for key, v := range dd {
				if _, ok := kd[key]; !ok {
					d = append(d, fmt.Sprintf("%s: only kamd %v", key, v))
				}
			}
			t.Errorf("%s %s(%q): %s", c.method, c.fn, c.flags, strings.Join(d, "; "))
		}
	}
}

// The SIP keepalives Kamailio's nathelper and kamd's send to a NATed phone
// registered with the sipping flag: the same request line and headers.
func TestNATKeepaliveKamailioSideBySide(t *testing.T) {
	e := startRtpengine(t)
	fast := func(s string) string { return strings.Replace(s, `"natping_interval", 30`, `"natping_interval", 1`, 1) }
	kam := startKamailioNAT(t, e.NG, fast)
	k := startKamd(t, fast(natScript("udp:127.0.0.1:"+strconv.Itoa(e.NG), "")))
	ping := func(proxy *net.UDPAddr) *sip.Request {
		carol := newPhone(t, "carol", "10.0.0.3", proxy)
		carol.register(t)
		return carol.wait("keepalive", 5*time.Second, func(r received) bool {
			return r.Req() != nil && r.Req().Method == sip.OPTIONS
		}).Req()
	}
	kp := ping(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: kam.Port})
	dp := ping(k.UDPAddr())
	shape := func(r *sip.Request) map[string]string {
		m := map[string]string{"request line": string(r.Method) + " " + r.Recipient.String()}
		for _, h := range reqHeaderNames(r) {
			m["has "+h] = "yes"
		}
		m["From URI"] = r.From().Address.String()
		m["To"] = r.To().Value()
		m["CSeq"] = r.CSeq().Value()
		_, tagged := r.From().Params.Get("tag")
		m["From tag"] = strconv.FormatBool(tagged)
		m["Via transport"] = r.Via().Transport
		m["Content-Length"] = strconv.Itoa(len(r.Body()))
		return m
	}
	ks, ds := shape(kp), shape(dp)
	for key, v := range ks {
		if ds[key] != v {
			t.Errorf("keepalive %s: Kamailio %q, kamd %q", key, v, ds[key])
		}
	}
	for key, v := range ds {
		if _, ok := ks[key]; !ok {
			t.Errorf("keepalive %s: only kamd %q", key, v)
		}
	}
	if t.Failed() {
		t.Logf("Kamailio:\n%s\nkamd:\n%s", kp.String(), dp.String())
	}
}

// reqHeaderNames lists a request's header names, lower-cased.
func reqHeaderNames(r *sip.Request) []string {
	var out []string
	for _, h := range r.Headers() {
		out = append(out, strings.ToLower(h.Name()))
	}
	return out
}

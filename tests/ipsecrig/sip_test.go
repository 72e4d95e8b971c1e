package ipsecrig

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/ims_ipsec_pcscf"
	"github.com/vishvananda/netlink"
)

// scscf is the stub I/S-CSCF: it challenges a REGISTER without a digest
// response with a 401 carrying ck/ik, accepts one with a response (200
// with the requested expiry), and answers other requests 200.
type scscf struct {
	t    *testing.T
	conn *net.UDPConn
	mu   sync.Mutex
	regs []*sip.Request // REGISTERs received
	reqs []*sip.Request // other requests
	// ck/ik of the next 401; omitIK drops ik; reauth makes the next
	// REGISTER with a response get a 401 too (with ck2/ik2).
	ck, ik   []byte
	omitIK   bool
	reauth   atomic.Bool
	replies  chan *sip.Response
	nonceSeq int
}

func startSCSCF(t *testing.T, l *lab) *scscf {
	s := &scscf{t: t, ck: testCK, ik: testIK, replies: make(chan *sip.Response, 16)}
	err := inNS(l.pNS, func() (err error) {
		s.conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(scscfIP), Port: 6060})
		return
	})
	if err != nil {
		t.Fatalf("stub S-CSCF: %v", err)
	}
	t.Cleanup(func() { s.conn.Close() })
	go s.loop()
	return s
}

func (s *scscf) loop() {
	buf := make([]byte, 65536)
	for {
		n, from, err := s.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		m, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
		if err != nil {
			continue
		}
		switch m := m.(type) {
		case *sip.Response:
			select {
			case s.replies <- m:
			default:
			}
		case *sip.Request:
			s.handle(m, from)
		}
	}
}

func (s *scscf) handle(req *sip.Request, from *net.UDPAddr) {
	if req.Method == sip.ACK {
		return
	}
	var out string
	if req.Method == sip.REGISTER {
		s.mu.Lock()
		s.regs = append(s.regs, req)
		s.nonceSeq++
		nonce := fmt.Sprintf("bm9uY2Ut%d", s.nonceSeq)
		ck, ik, omit := s.ck, s.ik, s.omitIK
		s.mu.Unlock()
		auth := ""
		if h := req.GetHeader("Authorization"); h != nil {
			auth = h.Value()
		}
		challenge := !strings.Contains(auth, `response="`) || strings.Contains(auth, `response=""`)
		if !challenge && s.reauth.CompareAndSwap(true, false) {
			challenge, ck, ik = true, testCK2, testIK2
			s.mu.Lock()
			s.ck, s.ik = ck, ik
			s.mu.Unlock()
		}
		if challenge {
			wa := fmt.Sprintf(`Digest realm="%s", nonce="%s", algorithm=AKAv1-MD5, ck="%s"`, domain, nonce, hex.EncodeToString(ck))
			if !omit {
				wa += fmt.Sprintf(`, ik="%s"`, hex.EncodeToString(ik))
			}
			wa += `, qop="auth"`
			out = replyText(req, 401, "Unauthorized", "WWW-Authenticate: "+wa)
		} else {
			exp := 600
			if h := req.GetHeader("Expires"); h != nil {
				exp, _ = strconv.Atoi(strings.TrimSpace(h.Value()))
			}
			c := ""
			if h := req.GetHeader("Contact"); h != nil {
				c = h.Value()
			}
			out = replyText(req, 200, "OK", "Contact: "+c+";expires="+strconv.Itoa(exp), "Expires: "+strconv.Itoa(exp),
				"P-Associated-URI: <sip:001010000000001@"+domain+">", "Service-Route: <sip:orig@scscf."+domain+";lr>")
		}
	} else {
		s.mu.Lock()
		s.reqs = append(s.reqs, req)
		s.mu.Unlock()
		out = replyText(req, 200, "OK")
	}
	_, _ = s.conn.WriteToUDP([]byte(out), from)
}

func (s *scscf) registers() []*sip.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*sip.Request(nil), s.regs...)
}

func (s *scscf) requests() []*sip.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*sip.Request(nil), s.reqs...)
}

// sendMT sends a request from the core to kamd and waits for its final
// reply (nil on timeout).
func (s *scscf) sendMT(t *testing.T, method, ruri string) *sip.Response {
	t.Helper()
	for len(s.replies) > 0 {
		<-s.replies
	}
	cid := fmt.Sprintf("mt-%d@%s", time.Now().UnixNano(), scscfIP)
	msg := fmt.Sprintf("%s %s SIP/2.0\r\nVia: SIP/2.0/UDP %s:6060;branch=z9hG4bK%s\r\nMax-Forwards: 70\r\n"+
		"From: <sip:as@%s>;tag=core1\r\nTo: <sip:001010000000001@%s>\r\nCall-ID: %s\r\nCSeq: 1 %s\r\nContent-Length: 0\r\n\r\n",
		method, ruri, scscfIP, strconv.FormatInt(time.Now().UnixNano(), 36), domain, domain, cid, method)
	if _, err := s.conn.WriteToUDP([]byte(msg), &net.UDPAddr{IP: net.ParseIP(pIP), Port: 5060}); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case r := <-s.replies:
			if r.StatusCode >= 200 {
				return r
			}
		case <-deadline:
			return nil
		}
	}
}

// replyText builds a reply to req as text.
func replyText(req *sip.Request, code int, reason string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "SIP/2.0 %d %s\r\n", code, reason)
	for _, h := range req.GetHeaders("Via") {
		b.WriteString("Via: " + h.Value() + "\r\n")
	}
	for _, n := range []string{"From", "To", "Call-ID", "CSeq"} {
		h := req.GetHeader(n)
		if h == nil {
			continue
		}
		v := h.Value()
		if n == "To" && !strings.Contains(v, "tag=") {
			v += ";tag=stub"
		}
		b.WriteString(n + ": " + v + "\r\n")
	}
	for _, e := range extra {
		b.WriteString(e + "\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.String()
}

// ue is a UE simulator at one address with its protected ports.
type ue struct {
	l             *lab
	t             *testing.T
	ip            string
	aor           string
	portC, portS  int
	spiC, spiS    uint32
	offer         string // Security-Client
	plain         *net.UDPConn
	uc, us        *net.UDPConn
	callID        string
	cseq          int
	server        ims_ipsec_pcscf.Mechanism // from the 401
	serverRaw     string
	lastChallenge *sip.Response
	installed     []netlink.XfrmState
	pols          []netlink.XfrmPolicy
}

func mech(alg, ealg string, spiC, spiS uint32, portC, portS int) string {
	s := fmt.Sprintf("ipsec-3gpp;prot=esp;mod=trans;spi-c=%d;spi-s=%d;port-c=%d;port-s=%d;alg=%s", spiC, spiS, portC, portS, alg)
	if ealg != "" {
		s += ";ealg=" + ealg
	}
	return s
}

// newUE binds the UE's plain port 5060 and its protected ports in the UE
// namespace. algs are "alg/ealg" offers.
func (l *lab) newUE(ip string, portC int, spiC uint32, algs ...string) *ue {
	t := l.t
	t.Helper()
	u := &ue{l: l, t: t, ip: ip, aor: "sip:001010000000001@" + domain, portC: portC, portS: portC + 1, spiC: spiC, spiS: spiC + 1,
		callID: fmt.Sprintf("reg-%s-%d@%s", ip, portC, ip)}
	if len(algs) == 0 {
		algs = []string{"hmac-sha-1-96/null"}
	}
	var offers []string
	for _, a := range algs {
		alg, ealg, _ := strings.Cut(a, "/")
		offers = append(offers, mech(alg, ealg, u.spiC, u.spiS, u.portC, u.portS))
	}
	u.offer = strings.Join(offers, ", ")
	err := inNS(l.uNS, func() (err error) {
		if u.plain, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip), Port: 5060}); err != nil {
			return
		}
		if u.uc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip), Port: u.portC}); err != nil {
			return
		}
		u.us, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip), Port: u.portS})
		return
	})
	if err != nil {
		t.Fatalf("UE sockets: %v", err)
	}
	t.Cleanup(func() { u.plain.Close(); u.uc.Close(); u.us.Close() })
	return u
}

// newPorts offers a new protected client port and new SPIs
// (re-authentication: TS 33.203 §7.4, port_us stays); it returns the old
// client socket, which the re-REGISTER still leaves from.
func (u *ue) newPorts(portC int, spiC uint32) *net.UDPConn {
	old := u.uc
	u.portC, u.spiC, u.spiS = portC, spiC, spiC+1
	u.offer = mech(u.server.Alg, u.server.Ealg, u.spiC, u.spiS, u.portC, u.portS)
	err := inNS(u.l.uNS, func() (err error) {
		u.uc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(u.ip), Port: u.portC})
		return
	})
	if err != nil {
		u.t.Fatal(err)
	}
	u.t.Cleanup(func() { u.uc.Close() })
	return old
}

func branch() string { return "z9hG4bK" + strconv.FormatInt(time.Now().UnixNano(), 36) }

// register builds a REGISTER; protected ones carry Via/Contact with
// port_us (no rport), Security-Verify and a digest response.
func (u *ue) register(protected bool, expires int, verify string) string {
	u.cseq++
	via := fmt.Sprintf("SIP/2.0/UDP %s:5060;branch=%s;rport", u.ip, branch())
	contact := fmt.Sprintf("<sip:001010000000001@%s:5060>", u.ip)
	auth := fmt.Sprintf(`Digest username="001010000000001@%s", realm="%s", nonce="", uri="sip:%s", response=""`, domain, domain, domain)
	sv := ""
	if protected {
		via = fmt.Sprintf("SIP/2.0/UDP %s:%d;branch=%s", u.ip, u.portS, branch())
		contact = fmt.Sprintf("<sip:001010000000001@%s:%d>", u.ip, u.portS)
		nonce := ""
		if u.lastChallenge != nil {
			if h := u.lastChallenge.GetHeader("WWW-Authenticate"); h != nil {
				if i := strings.Index(h.Value(), `nonce="`); i >= 0 {
					nonce = h.Value()[i+7:]
					nonce = nonce[:strings.IndexByte(nonce, '"')]
				}
			}
		}
		auth = fmt.Sprintf(`Digest username="001010000000001@%s", realm="%s", nonce="%s", uri="sip:%s", response="a54211d5e3ba50bf", algorithm=AKAv1-MD5, qop=auth, nc=00000001, cnonce="c1"`, domain, domain, nonce, domain)
		if verify == "" {
			verify = u.serverRaw
		}
		sv = "Security-Verify: " + verify + "\r\n"
	}
	return fmt.Sprintf("REGISTER sip:%s SIP/2.0\r\nVia: %s\r\nMax-Forwards: 70\r\nFrom: <%s>;tag=ue%d\r\nTo: <%s>\r\n"+
		"Call-ID: %s\r\nCSeq: %d REGISTER\r\nContact: %s\r\nExpires: %d\r\nAuthorization: %s\r\n"+
		"Security-Client: %s\r\n%sRequire: sec-agree\r\nProxy-Require: sec-agree\r\nSupported: path, sec-agree\r\nContent-Length: 0\r\n\r\n",
		domain, via, u.aor, u.portC, u.aor, u.callID, u.cseq, contact, expires, auth, u.offer, sv)
}

var errTimeout = errors.New("no reply")

// recvAny reads the next message from c, provisional replies included.
func recvAny(c *net.UDPConn, d time.Duration) (sip.Message, *net.UDPAddr, error) {
	buf := make([]byte, 65536)
	_ = c.SetReadDeadline(time.Now().Add(d))
	n, from, err := c.ReadFromUDP(buf)
	if err != nil {
		return nil, nil, err
	}
	m, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
	return m, from, err
}

// recv reads the next final reply (or request) from c.
func recv(c *net.UDPConn, d time.Duration) (sip.Message, *net.UDPAddr, error) {
	buf := make([]byte, 65536)
	deadline := time.Now().Add(d)
	for {
		_ = c.SetReadDeadline(deadline)
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return nil, nil, errTimeout
			}
			return nil, nil, err
		}
		m, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
		if err != nil {
			return nil, from, fmt.Errorf("unparsable from %s: %v: %q", from, err, buf[:n])
		}
		if r, ok := m.(*sip.Response); ok && r.StatusCode < 200 {
			continue
		}
		return m, from, nil
	}
}

func send(t *testing.T, c *net.UDPConn, to string, msg string) {
	t.Helper()
	a, _ := net.ResolveUDPAddr("udp4", to)
	if _, err := c.WriteToUDP([]byte(msg), a); err != nil {
		t.Fatal(err)
	}
}

// challenge sends the plain REGISTER and returns the reply.
func (u *ue) challenge() *sip.Response {
	u.t.Helper()
	// Retransmitted as RFC 3261's timer A does: the first SA of an
	// algorithm makes the VM's kernel set up its crypto, which takes
	// seconds on a loaded one-CPU VM.
	msg := u.register(false, 600, "")
	var m sip.Message
	var err error
	for _, wait := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
		send(u.t, u.plain, net.JoinHostPort(pIP, "5060"), msg)
		if m, _, err = recv(u.plain, wait); err != errTimeout {
			break
		}
	}
	if err != nil {
		u.t.Fatalf("UE %s: first REGISTER: %v", u.ip, err)
	}
	r, ok := m.(*sip.Response)
	if !ok {
		u.t.Fatalf("UE %s: got a request %v", u.ip, m)
	}
	u.took(r)
	return r
}

// took keeps a 401's nonce and Security-Server.
func (u *ue) took(r *sip.Response) {
	if r.StatusCode != 401 {
		return
	}
	u.lastChallenge = r
	if h := r.GetHeader("Security-Server"); h != nil {
		u.serverRaw = h.Value()
		ms, err := ims_ipsec_pcscf.ParseSecurity(h.Value())
		if err != nil || len(ms) != 1 {
			u.t.Fatalf("Security-Server %q: %v", h.Value(), err)
		}
		u.server = ms[0]
	}
}

// ueSA is one of the UE's four SAs, mirror of the P-CSCF's.
func (u *ue) sas(ik, ck []byte) []netlink.XfrmState {
	ue, p := net.ParseIP(u.ip).To4(), net.ParseIP(pIP).To4()
	s := u.server
	auth := &netlink.XfrmStateAlgo{Name: "hmac(sha1)", Key: ik, TruncateLen: 96} // the raw 128-bit IK: padding is cosmetic (§0.3)
	if s.Alg == "hmac-md5-96" {
		auth.Name = "hmac(md5)"
	}
	crypt := &netlink.XfrmStateAlgo{Name: "ecb(cipher_null)", Key: []byte{}}
	switch s.Ealg {
	case "aes-cbc":
		crypt = &netlink.XfrmStateAlgo{Name: "cbc(aes)", Key: ck}
	case "des-ede3-cbc": // TS 33.203 Annex I: CK1||CK2||CK1
		crypt = &netlink.XfrmStateAlgo{Name: "cbc(des3_ede)", Key: append(append([]byte(nil), ck...), ck[:8]...)}
	}
	mk := func(src net.IP, sport int, dst net.IP, dport int, spi uint32) netlink.XfrmState {
		return netlink.XfrmState{Src: src, Dst: dst, Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TRANSPORT,
			Spi: int(spi), Reqid: int(spi), ReplayWindow: 32, Auth: auth, Crypt: crypt,
			Selector: &netlink.XfrmPolicy{Src: host(src), Dst: host(dst), SrcPort: sport, DstPort: dport}}
	}
	return []netlink.XfrmState{
		mk(ue, u.portC, p, int(s.PortS), s.SpiS), // A out
		mk(p, int(s.PortS), ue, u.portC, u.spiC), // B in
		mk(p, int(s.PortC), ue, u.portS, u.spiS), // C in
		mk(ue, u.portS, p, int(s.PortC), s.SpiC), // D out
	}
}

func host(ip net.IP) *net.IPNet { return &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)} }

// install puts the UE's mirror SAs and policies into the UE namespace.
// spiDelta shifts the SPI of the UE's outbound SA A (unknown-SPI case).
func (u *ue) install(ik, ck []byte, spiDelta uint32) {
	u.t.Helper()
	h := u.l.uh
	sts := u.sas(ik, ck)
	sts[0].Spi += int(spiDelta)
	sts[0].Reqid = sts[0].Spi
	dirs := []netlink.Dir{netlink.XFRM_DIR_OUT, netlink.XFRM_DIR_IN, netlink.XFRM_DIR_IN, netlink.XFRM_DIR_OUT}
	for i := range sts {
		st := sts[i]
		if err := h.XfrmStateAdd(&st); err != nil {
			u.t.Fatalf("UE SA %d spi %d: %v", i, st.Spi, err)
		}
		sel := st.Selector
		pol := netlink.XfrmPolicy{Src: sel.Src, Dst: sel.Dst, SrcPort: sel.SrcPort, DstPort: sel.DstPort, Dir: dirs[i], Priority: 2080,
			Tmpls: []netlink.XfrmPolicyTmpl{{Src: st.Src, Dst: st.Dst, Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TRANSPORT, Reqid: st.Reqid}}}
		if err := h.XfrmPolicyAdd(&pol); err != nil {
			u.t.Fatalf("UE policy %d: %v", i, err)
		}
		u.installed = append(u.installed, st)
		u.pols = append(u.pols, pol)
	}
}

// uninstall removes the UE's SAs and policies.
func (u *ue) uninstall() {
	for i := range u.pols {
		_ = u.l.uh.XfrmPolicyDel(&u.pols[i])
	}
	for i := range u.installed {
		_ = u.l.uh.XfrmStateDel(&u.installed[i])
	}
	u.pols, u.installed = nil, nil
}

// protectedRegister sends a REGISTER over SA A (port_uc -> port_ps) and
// waits for the reply on port_us (UDP: P sends it port_pc -> port_us).
func (u *ue) protectedRegister(expires int, verify string) (*sip.Response, *net.UDPAddr) {
	return u.protectedRegisterWait(expires, verify, 8*time.Second)
}

func (u *ue) protectedRegisterWait(expires int, verify string, d time.Duration) (*sip.Response, *net.UDPAddr) {
	u.t.Helper()
	send(u.t, u.uc, fmt.Sprintf("%s:%d", pIP, u.server.PortS), u.register(true, expires, verify))
	m, from, err := recv(u.us, d)
	if err != nil {
		return nil, nil
	}
	r, _ := m.(*sip.Response)
	return r, from
}

// answer reads a request on port_us and answers 200 from port_uc to the
// P-CSCF's port_ps (TS 33.203 §7: over UDP client ports send, server
// ports receive); it returns the request and its source.
func (u *ue) answer(d time.Duration) (*sip.Request, *net.UDPAddr) {
	u.t.Helper()
	m, from, err := recv(u.us, d)
	if err != nil {
		u.t.Fatalf("UE %s: no request on port_us: %v", u.ip, err)
	}
	req, ok := m.(*sip.Request)
	if !ok {
		u.t.Fatalf("UE: want a request on port_us, got %v", m)
	}
	send(u.t, u.uc, fmt.Sprintf("%s:%d", pIP, u.server.PortS), replyText(req, 200, "OK"))
	return req, from
}

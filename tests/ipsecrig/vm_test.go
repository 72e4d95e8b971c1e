package ipsecrig

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/vishvananda/netlink"
)

// established runs the whole registration of u: the 401 (checked), the
// UE's mirror SAs, the protected REGISTER and its 200 over ESP.
func established(t *testing.T, l *lab, u *ue) {
	t.Helper()
	r := u.challenge()
	if r.StatusCode != 401 || u.server.SpiS == 0 {
		t.Fatalf("first REGISTER: %d %s, Security-Server %q", r.StatusCode, r.Reason, u.serverRaw)
	}
	u.install(testIK, testCK, 0)
	res, from := u.protectedRegister(600, "")
	if res == nil || res.StatusCode != 200 {
		t.Fatalf("protected REGISTER: no 200 on port_us (%v)", res)
	}
	if from.Port != int(u.server.PortC) {
		t.Errorf("200 came from port %d, want port_pc %d", from.Port, u.server.PortC)
	}
}

// checkChallenge asserts the 401 the UE saw: no ck/ik, one Security-Server
// with the chosen mechanism and kamd's ports.
func checkChallenge(t *testing.T, r *sip.Response, u *ue, alg, ealg string) {
	t.Helper()
	for _, h := range r.GetHeaders("WWW-Authenticate") {
		v := strings.ToLower(h.Value())
		if strings.Contains(v, "ck=") || strings.Contains(v, "ik=") {
			t.Errorf("ck/ik reached the UE: %s", h.Value())
		}
		if !strings.Contains(v, "nonce=") {
			t.Errorf("WWW-Authenticate lost its nonce: %s", h.Value())
		}
	}
	if n := len(r.GetHeaders("Security-Server")); n != 1 {
		t.Fatalf("%d Security-Server headers, want 1", n)
	}
	s := u.server
	want := fmt.Sprintf("ipsec-3gpp;q=0.1;prot=esp;mod=trans;spi-c=%d;spi-s=%d;port-c=%d;port-s=%d;alg=%s;ealg=%s",
		s.SpiC, s.SpiS, s.PortC, s.PortS, alg, ealg)
	if u.serverRaw != want {
		t.Errorf("Security-Server %q, want %q", u.serverRaw, want)
	}
	if s.SpiC < firstSPI || s.SpiS != s.SpiC+1 || s.PortC < 5100 || s.PortC > 5109 || s.PortS != s.PortC+1000 {
		t.Errorf("SPIs/ports %+v outside kamd's configured ranges", s)
	}
}

// checkKernel asserts exactly the 4 states and 4 policies of the UE in
// the P namespace, with the negotiated algorithms.
func checkKernel(t *testing.T, l *lab, u *ue, auth, enc string) map[uint32]kstate {
	t.Helper()
	st := states(t, l.ph)
	s := u.server
	want := map[uint32][4]any{
		s.SpiS: {u.ip, u.portC, pIP, int(s.PortS)}, // A
		u.spiC: {pIP, int(s.PortS), u.ip, u.portC}, // B
		u.spiS: {pIP, int(s.PortC), u.ip, u.portS}, // C
		s.SpiC: {u.ip, u.portS, pIP, int(s.PortC)}, // D
	}
	if len(st) != 4 {
		t.Errorf("%d states in kamd's namespace, want 4: %+v", len(st), st)
	}
	for spi, w := range want {
		k, ok := st[spi]
		if !ok {
			t.Errorf("no state spi %d", spi)
			continue
		}
		got := [4]any{k.src, k.sport, k.dst, k.dport}
		if got != w {
			t.Errorf("state spi %d: %v, want %v", spi, got, w)
		}
		if k.auth != auth || k.enc != enc {
			t.Errorf("state spi %d: %s/%s, want %s/%s", spi, k.auth, k.enc, auth, enc)
		}
	}
	ps := policies(t, l.ph)
	if len(ps) != 4 {
		t.Errorf("%d policies, want 4", len(ps))
	}
	in := 0
	for _, p := range ps {
		if p.Priority != 2080 || len(p.Tmpls) != 1 || p.Tmpls[0].Reqid == 0 {
			t.Errorf("policy %+v", p)
		}
		if p.Dir.String() == "dir in" {
			in++
		}
	}
	return st
}

// delta returns per-SPI packet count changes between two snapshots.
func delta(a, b map[uint32]kstate) map[uint32]uint64 {
	out := map[uint32]uint64{}
	for spi, s := range b {
		out[spi] = s.packets - a[spi].packets
	}
	return out
}

func TestVM(t *testing.T) {
	inVM(t)
	t.Run("happy_udp_sha1_null", testHappyUDP)
	t.Run("algorithms", testAlgorithms)
	t.Run("tcp", testTCP)
	t.Run("wrong_ik", testWrongIK)
	t.Run("unknown_spi", testUnknownSPI)
	t.Run("plaintext", testPlaintext)
	t.Run("verify_mismatch", testVerifyMismatch)
	t.Run("no_ck_ik", testNoCKIK)
	t.Run("spi_exhaustion", testExhaustion)
	t.Run("deregistration", testDeregistration)
	t.Run("expiry", testExpiry)
	t.Run("reauth_new_keys", testReauth)
	t.Run("restart_live_sas", testRestart)
}

func testHappyUDP(t *testing.T) {
	t.Parallel() // own namespaces, kamd and ports: the waits overlap
	l := newLab(t, labOpts{})
	u := l.newUE("10.99.0.2", 31000, 11111, "hmac-sha-1-96/null", "hmac-sha-1-96/aes-cbc")
	cap := startCapture(t, l.uNS, l.uh, "vu")
	r := u.challenge()
	if r.StatusCode != 401 {
		t.Fatalf("first REGISTER: %d", r.StatusCode)
	}
	checkChallenge(t, r, u, "hmac-sha-1-96", "null")
	regs := l.scscf.registers()
	if len(regs) != 1 {
		t.Fatalf("S-CSCF saw %d REGISTERs", len(regs))
	}
	for _, h := range []string{"Security-Client", "Security-Verify"} {
		if regs[0].GetHeader(h) != nil {
			t.Errorf("%s reached the S-CSCF", h)
		}
	}
	before := checkKernel(t, l, u, "hmac(sha1)", "ecb(cipher_null)")
	if sets := l.ipsecList(); len(sets) != 1 || sets[0]["state"] != "temporary" {
		t.Fatalf("ipsec.list after the 401: %v", sets)
	}
	u.install(testIK, testCK, 0)
	ub := states(t, l.uh)
	res, from := u.protectedRegister(600, "")
	if res == nil || res.StatusCode != 200 {
		t.Fatalf("protected REGISTER: %v", res)
	}
	if from.Port != int(u.server.PortC) {
		t.Errorf("200 from port %d, want port_pc %d", from.Port, u.server.PortC)
	}
	if regs := l.scscf.registers(); len(regs) != 2 || regs[1].GetHeader("Security-Verify") != nil {
		t.Errorf("protected REGISTER at the S-CSCF: %d, Security-Verify stripped?", len(regs))
	}
	after := states(t, l.ph)
	d := delta(before, after)
	s := u.server
	wantD := map[uint32]uint64{s.SpiS: 1, u.spiC: 0, u.spiS: 1, s.SpiC: 0}
	for spi, w := range wantD {
		if d[spi] != w {
			t.Errorf("P SA spi %d: +%d packets, want +%d (deltas %v)", spi, d[spi], w, d)
		}
		if after[spi].failed != 0 || after[spi].replay != 0 {
			t.Errorf("P SA spi %d: failed %d replay %d", spi, after[spi].failed, after[spi].replay)
		}
	}
	ud := delta(ub, states(t, l.uh))
	for spi, w := range wantD {
		if ud[spi] != w {
			t.Errorf("UE SA spi %d: +%d, want +%d (the mirror counts the same)", spi, ud[spi], w)
		}
	}
	t.Logf("REGISTER/200 over ESP: P-side packet deltas %v", d)

	// ipsec.list matches the kernel.
	sets := l.ipsecList()
	if len(sets) != 1 {
		t.Fatalf("ipsec.list: %v", sets)
	}
	e := sets[0]
	if e["state"] != "established" || num(e["spi_ps"]) != uint64(s.SpiS) || num(e["spi_pc"]) != uint64(s.SpiC) ||
		num(e["spi_uc"]) != uint64(u.spiC) || num(e["spi_us"]) != uint64(u.spiS) || num(e["port_uc"]) != uint64(u.portC) ||
		e["alg"] != "hmac-sha-1-96" || e["ealg"] != "null" {
		t.Errorf("ipsec.list entry %v", e)
	}
	for _, sa := range e["sas"].([]any) {
		m := sa.(map[string]any)
		k := after[uint32(num(m["spi"]))]
		if m["in_kernel"] != true || num(m["packets"]) != k.packets {
			t.Errorf("ipsec.list SA %v vs kernel %+v", m, k)
		}
	}
	writeFact(t, "ipsec_list", sets)

	// A request from the core reaches the UE through SA C; its 200 comes
	// back through SA A.
	b2 := states(t, l.ph)
	done := make(chan *sip.Request, 1)
	go func() {
		req, from := u.answer(5 * time.Second)
		if from.Port != int(s.PortC) {
			t.Errorf("MT request from port %d, want port_pc %d", from.Port, s.PortC)
		}
		done <- req
	}()
	fr := l.scscf.sendMT(t, "OPTIONS", fmt.Sprintf("sip:001010000000001@%s:%d", u.ip, u.portS))
	req := <-done
	if req == nil || fr == nil || fr.StatusCode != 200 {
		t.Fatalf("MT OPTIONS: UE got %v, core got %v", req, fr)
	}
	// Our Via names port_ps, where the answer comes over SA A.
	if v := req.Via(); v == nil || v.Port != int(s.PortS) {
		t.Errorf("MT OPTIONS Via %v, want sent-by port_ps %d", v, s.PortS)
	}
	d2 := delta(b2, states(t, l.ph))
	if d2[u.spiS] != 1 || d2[s.SpiS] != 1 {
		t.Errorf("MT OPTIONS: deltas %v, want +1 on spi_us %d and spi_ps %d", d2, u.spiS, s.SpiS)
	}
	// A UE INVITE over UDP: tm's 100 Trying and the relayed 200 both go
	// port_pc -> port_us through SA C (not from the arrival port_ps,
	// which no SA covers).
	b3 := states(t, l.ph)
	inv := fmt.Sprintf("INVITE sip:bob@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s:%d;branch=%s\r\nMax-Forwards: 70\r\n"+
		"From: <%s>;tag=inv1\r\nTo: <sip:bob@%s>\r\nCall-ID: inv-1@%s\r\nCSeq: 1 INVITE\r\n"+
		"Contact: <sip:001010000000001@%s:%d>\r\nContent-Length: 0\r\n\r\n",
		domain, u.ip, u.portS, branch(), u.aor, domain, u.ip, u.ip, u.portS)
	send(t, u.uc, net.JoinHostPort(pIP, fmt.Sprint(s.PortS)), inv)
	var codes []int
	for len(codes) < 2 {
		m, from, err := recvAny(u.us, 3*time.Second)
		if err != nil {
			t.Fatalf("INVITE: got %v so far: %v", codes, err)
		}
		r, ok := m.(*sip.Response)
		if !ok {
			continue
		}
		codes = append(codes, r.StatusCode)
		if from.Port != int(s.PortC) {
			t.Errorf("%d to the INVITE from port %d, want port_pc %d", r.StatusCode, from.Port, s.PortC)
		}
	}
	if codes[0] != 100 || codes[1] != 200 {
		t.Errorf("INVITE replies %v, want [100 200]", codes)
	}
	d3 := delta(b3, states(t, l.ph))
	if d3[u.spiS] != 2 || d3[s.SpiS] != 1 {
		t.Errorf("INVITE: deltas %v, want +1 on spi_ps %d and +2 on spi_us %d", d3, s.SpiS, u.spiS)
	}
	if x := xfrmStat(t, l.pNS); len(x) != 0 {
		t.Errorf("P xfrm_stat not all zero: %v", x)
	}
	if x := xfrmStat(t, l.uNS); len(x) != 0 {
		t.Errorf("UE xfrm_stat not all zero: %v", x)
	}
	p := cap.finish(t, "happy_udp")
	writeFact(t, "happy_udp", map[string]any{"pcap": p, "spi_ps": s.SpiS, "spi_pc": s.SpiC, "spi_uc": u.spiC, "spi_us": u.spiS,
		"port_ps": s.PortS, "port_pc": s.PortC, "port_uc": u.portC, "port_us": u.portS})
}

// testAlgorithms registers four UEs on one kamd, one per alg x ealg, and
// checks traffic passes both ways.
func testAlgorithms(t *testing.T) {
	t.Parallel() // own namespaces, kamd and ports: the waits overlap
	l := newLab(t, labOpts{ueAddrs: 5})
	combos := []struct{ alg, ealg, auth, enc string }{
		{"hmac-sha-1-96", "null", "hmac(sha1)", "ecb(cipher_null)"},
		{"hmac-sha-1-96", "aes-cbc", "hmac(sha1)", "cbc(aes)"},
		{"hmac-md5-96", "null", "hmac(md5)", "ecb(cipher_null)"},
		{"hmac-md5-96", "aes-cbc", "hmac(md5)", "cbc(aes)"},
		{"hmac-sha-1-96", "des-ede3-cbc", "hmac(sha1)", "cbc(des3_ede)"},
	}
	for i, c := range combos {
		u := l.newUE(fmt.Sprintf("10.99.0.%d", 2+i), 31000, uint32(20000+10*i), c.alg+"/"+c.ealg)
		before := states(t, l.ph)
		r := u.challenge()
		if r.StatusCode != 401 {
			t.Fatalf("%s/%s: %d", c.alg, c.ealg, r.StatusCode)
		}
		checkChallenge(t, r, u, c.alg, c.ealg)
		mid := states(t, l.ph)
		if len(mid)-len(before) != 4 {
			t.Errorf("%s/%s: %d new states", c.alg, c.ealg, len(mid)-len(before))
		}
		for spi, k := range mid {
			if _, old := before[spi]; !old && (k.auth != c.auth || k.enc != c.enc) {
				t.Errorf("%s/%s: state %d has %s/%s", c.alg, c.ealg, spi, k.auth, k.enc)
			}
		}
		u.install(testIK, testCK, 0)
		res, _ := u.protectedRegister(600, "")
		if res == nil || res.StatusCode != 200 {
			t.Fatalf("%s/%s: protected REGISTER got %v", c.alg, c.ealg, res)
		}
		d := delta(mid, states(t, l.ph))
		if d[u.server.SpiS] != 1 || d[u.spiS] != 1 {
			t.Errorf("%s/%s: deltas %v", c.alg, c.ealg, d)
		}
	}
	if x := xfrmStat(t, l.pNS); len(x) != 0 {
		t.Errorf("P xfrm_stat: %v", x)
	}
}

// testWrongIK: the UE's SAs use another IK. The P-CSCF's kernel drops the
// protected REGISTER (integrity failure on SA A, XfrmInStateProtoError)
// and kamd never sees it.
func testWrongIK(t *testing.T) {
	t.Parallel() // own namespaces, kamd and ports: the waits overlap
	l := newLab(t, labOpts{})
	u := l.newUE("10.99.0.2", 31000, 11111)
	if r := u.challenge(); r.StatusCode != 401 {
		t.Fatalf("first REGISTER: %d", r.StatusCode)
	}
	u.install(testIK2, testCK, 0)
	if res, _ := u.protectedRegisterWait(600, "", time.Second); res != nil {
		t.Errorf("a REGISTER with a wrong ICV got %d", res.StatusCode)
	}
	a := states(t, l.ph)[u.server.SpiS]
	if a.failed != 1 || a.packets != 0 {
		t.Errorf("SA A: failed %d packets %d, want 1 and 0", a.failed, a.packets)
	}
	if x := xfrmStat(t, l.pNS); x["XfrmInStateProtoError"] != 1 {
		t.Errorf("xfrm_stat %v, want XfrmInStateProtoError 1", x)
	}
	if n := len(l.scscf.registers()); n != 1 {
		t.Errorf("S-CSCF saw %d REGISTERs, want only the first", n)
	}
	if sets := l.ipsecList(); len(sets) != 1 || sets[0]["state"] != "temporary" {
		t.Errorf("ipsec.list: %v", sets)
	}
}

// testUnknownSPI: the UE sends with an SPI kamd never installed.
func testUnknownSPI(t *testing.T) {
	t.Parallel() // own namespaces, kamd and ports: the waits overlap
	l := newLab(t, labOpts{})
	u := l.newUE("10.99.0.2", 31000, 11111)
	u.challenge()
	u.install(testIK, testCK, 1000)
	if res, _ := u.protectedRegisterWait(600, "", time.Second); res != nil {
		t.Errorf("a REGISTER with an unknown SPI got %d", res.StatusCode)
	}
	if x := xfrmStat(t, l.pNS); x["XfrmInNoStates"] != 1 {
		t.Errorf("xfrm_stat %v, want XfrmInNoStates 1", x)
	}
	if a := states(t, l.ph)[u.server.SpiS]; a.packets != 0 {
		t.Errorf("SA A counted %d packets", a.packets)
	}
	if n := len(l.scscf.registers()); n != 1 {
		t.Errorf("S-CSCF saw %d REGISTERs", n)
	}
}

// testPlaintext: plaintext to a protected port. From another source port
// the kernel delivers it (no policy matches) and kamd drops it; on the
// protected 5-tuple itself the kernel drops it (XfrmInTmplMismatch).
func testPlaintext(t *testing.T) {
	t.Parallel() // own namespaces, kamd and ports: the waits overlap
	l := newLab(t, labOpts{})
	u := l.newUE("10.99.0.2", 31000, 11111)
	established(t, l, u)
	before := len(l.scscf.registers())
	var other *net.UDPConn
	if err := inNS(l.uNS, func() (err error) {
		other, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(u.ip), Port: 40000})
		return
	}); err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	send(t, other, fmt.Sprintf("%s:%d", pIP, u.server.PortS), u.register(true, 600, ""))
	if m, _, err := recv(other, time.Second); err == nil {
		t.Errorf("plaintext from port 40000 answered: %v", m)
	}
	st := l.ipsecStats()
	if num(st["plaintext_dropped"]) != 1 {
		t.Errorf("ipsec.stats plaintext_dropped %v, want 1", st["plaintext_dropped"])
	}
	if x := xfrmStat(t, l.pNS); len(x) != 0 {
		t.Errorf("xfrm_stat %v: the kernel should have let it through", x)
	}
	// The protected 5-tuple without ESP: remove the UE's policy for SA A.
	_ = l.uh.XfrmPolicyDel(&u.pols[0])
	send(t, u.uc, fmt.Sprintf("%s:%d", pIP, u.server.PortS), u.register(true, 600, ""))
	if m, _, err := recv(u.us, time.Second); err == nil {
		t.Errorf("plaintext on the protected 5-tuple answered: %v", m)
	}
	if x := xfrmStat(t, l.pNS); x["XfrmInTmplMismatch"] != 1 {
		t.Errorf("xfrm_stat %v, want XfrmInTmplMismatch 1", x)
	}
	if n := len(l.scscf.registers()); n != before {
		t.Errorf("S-CSCF saw %d more REGISTERs", n-before)
	}
}

// testVerifyMismatch: a Security-Verify that differs from the
// Security-Server sent gets 494 and the attempt's SAs are removed.
func testVerifyMismatch(t *testing.T) {
	t.Parallel() // own namespaces, kamd and ports: the waits overlap
	l := newLab(t, labOpts{})
	u := l.newUE("10.99.0.2", 31000, 11111)
	u.challenge()
	u.install(testIK, testCK, 0)
	if n := l.kamdStates(); n != 4 {
		t.Fatalf("%d states", n)
	}
	bad := strings.Replace(u.serverRaw, fmt.Sprintf("spi-s=%d", u.server.SpiS), fmt.Sprintf("spi-s=%d", u.server.SpiS+7), 1)
	res, from := u.protectedRegister(600, bad)
	if res == nil || res.StatusCode != 494 {
		t.Fatalf("mismatching Security-Verify: %v, want 494", res)
	}
	t.Logf("494 from %v", from)
	if n := l.kamdStates(); n != 0 {
		t.Errorf("%d states left after the mismatch", n)
	}
	if n := len(policies(t, l.ph)); n != 0 {
		t.Errorf("%d policies left", n)
	}
	if sets := l.ipsecList(); len(sets) != 0 {
		t.Errorf("ipsec.list: %v", sets)
	}
	if n := len(l.scscf.registers()); n != 1 {
		t.Errorf("the S-CSCF saw %d REGISTERs", n)
	}
}

// testNoCKIK: a 401 without ik gives the UE a 500, no keys, no SAs.
func testNoCKIK(t *testing.T) {
	t.Parallel() // own namespaces, kamd and ports: the waits overlap
	l := newLab(t, labOpts{})
	l.scscf.mu.Lock()
	l.scscf.omitIK = true
	l.scscf.mu.Unlock()
	u := l.newUE("10.99.0.2", 31000, 11111)
	r := u.challenge()
	if r.StatusCode != 500 || r.GetHeader("Security-Server") != nil {
		t.Errorf("401 without ik: the UE got %d, Security-Server %v", r.StatusCode, r.GetHeader("Security-Server"))
	}
	if strings.Contains(strings.ToLower(r.String()), "ck=") {
		t.Errorf("ck reached the UE:\n%s", r)
	}
	if n := l.kamdStates(); n != 0 {
		t.Errorf("%d states", n)
	}
	if sets := l.ipsecList(); len(sets) != 0 {
		t.Errorf("ipsec.list: %v", sets)
	}
}

// testExhaustion: 2 SPI pairs, 3 UEs: the third gets a 500, nothing of it
// is created.
func testExhaustion(t *testing.T) {
	t.Parallel() // own namespaces, kamd and ports: the waits overlap
	l := newLab(t, labOpts{ueAddrs: 3, params: map[string]string{"ipsec_spi_id_range": "4"}})
	for i := 0; i < 3; i++ {
		u := l.newUE(fmt.Sprintf("10.99.0.%d", 2+i), 31000, 11111)
		r := u.challenge()
		want := 401
		if i == 2 {
			want = 500
		}
		if r.StatusCode != want {
			t.Errorf("UE %d: %d, want %d", i, r.StatusCode, want)
		}
	}
	if n := l.kamdStates(); n != 8 {
		t.Errorf("%d states, want 8", n)
	}
	if n := len(policies(t, l.ph)); n != 8 {
		t.Errorf("%d policies, want 8", n)
	}
	st := l.ipsecStats()
	if num(st["pairs_used"]) != 2 || num(st["pairs_total"]) != 2 {
		t.Errorf("ipsec.stats %v", st)
	}
}

// testDeregistration: Expires 0; the 200 still leaves through SA C, then
// every SA goes.
func testDeregistration(t *testing.T) {
	t.Parallel() // own namespaces, kamd and ports: the waits overlap
	l := newLab(t, labOpts{})
	u := l.newUE("10.99.0.2", 31000, 11111)
	established(t, l, u)
	before := states(t, l.ph)
	res, _ := u.protectedRegister(0, "")
	if res == nil || res.StatusCode != 200 {
		t.Fatalf("de-REGISTER: %v", res)
	}
	d := delta(before, states(t, l.ph))
	if d[u.spiS] != 1 || d[u.server.SpiS] != 1 {
		t.Errorf("de-REGISTER/200 deltas %v, want +1 on SA A and C", d)
	}
	if sets := l.ipsecList(); len(sets) != 1 || sets[0]["state"] != "deleting" {
		t.Errorf("ipsec.list right after: %v", sets)
	}
	if !waitFor(10*time.Second, func() bool { return l.kamdStates() == 0 }) {
		t.Errorf("%d states left 10s after de-registration", l.kamdStates())
	}
	if n := len(policies(t, l.ph)); n != 0 {
		t.Errorf("%d policies left", n)
	}
	if sets := l.ipsecList(); len(sets) != 0 {
		t.Errorf("ipsec.list: %v", sets)
	}
}

// testExpiry: a set nobody completes expires (ipsec_temporary_lifetime)
// and its SPIs go back to the pool.
func testExpiry(t *testing.T) {
	t.Parallel() // own namespaces, kamd and ports: the waits overlap
	l := newLab(t, labOpts{params: map[string]string{"ipsec_temporary_lifetime": "2"}})
	u := l.newUE("10.99.0.2", 31000, 11111)
	u.challenge()
	if n := l.kamdStates(); n != 4 {
		t.Fatalf("%d states", n)
	}
	if !waitFor(8*time.Second, func() bool { return l.kamdStates() == 0 }) {
		t.Errorf("%d states 8s after a 2s temporary lifetime", l.kamdStates())
	}
	st := l.ipsecStats()
	if num(st["pairs_used"]) != 0 || len(policies(t, l.ph)) != 0 {
		t.Errorf("after expiry: ipsec.stats %v", st)
	}
}

// testReauth: the S-CSCF challenges a protected re-REGISTER with new
// CK/IK; the UE offers a new port_uc and SPIs; the new set carries the 200
// and the old set is removed: 4 states at the end, all new.
func testReauth(t *testing.T) {
	t.Parallel() // own namespaces, kamd and ports: the waits overlap
	l := newLab(t, labOpts{})
	u := l.newUE("10.99.0.2", 31000, 11111)
	established(t, l, u)
	old := u.server
	oldUC, oldUCport := u.spiC, u.portC
	l.scscf.reauth.Store(true)
	oldSock := u.newPorts(31010, 12000)
	send(t, oldSock, fmt.Sprintf("%s:%d", pIP, old.PortS), u.register(true, 600, ""))
	m, from, err := recv(u.us, 3*time.Second)
	if err != nil {
		t.Fatalf("re-REGISTER: %v", err)
	}
	r, _ := m.(*sip.Response)
	if r == nil || r.StatusCode != 401 {
		t.Fatalf("re-REGISTER: %v", m)
	}
	if from.Port != int(old.PortC) {
		t.Errorf("re-auth 401 from %v, want the old set's port_pc %d (SA C)", from, old.PortC)
	}
	u.took(r)
	if u.server.SpiS == old.SpiS || u.server.PortC == old.PortC {
		t.Errorf("new Security-Server %q reuses the old SPIs/port_pc", u.serverRaw)
	}
	if n := l.kamdStates(); n != 8 {
		t.Errorf("%d states during re-auth, want 8", n)
	}
	u.install(testIK2, testCK2, 0)
	res, _ := u.protectedRegister(600, "")
	if res == nil || res.StatusCode != 200 {
		t.Fatalf("REGISTER over the new set: %v", res)
	}
	st := states(t, l.ph)
	if len(st) != 4 {
		t.Errorf("%d states after the new set's 200, want 4", len(st))
	}
	for _, spi := range []uint32{old.SpiS, old.SpiC, oldUC} {
		if _, ok := st[spi]; ok {
			t.Errorf("old SPI %d still installed", spi)
		}
	}
	if st[u.server.SpiS].packets != 1 || st[u.spiS].packets != 1 {
		t.Errorf("new set counters %+v", st)
	}
	sets := l.ipsecList()
	if len(sets) != 1 || num(sets[0]["spi_ps"]) != uint64(u.server.SpiS) || num(sets[0]["port_uc"]) == uint64(oldUCport) {
		t.Errorf("ipsec.list: %v", sets)
	}
}

// testRestart: kill -9 with live SAs; the next kamd removes its own
// leftovers at start and leaves a foreign SA alone.
func testRestart(t *testing.T) {
	t.Parallel() // own namespaces, kamd and ports: the waits overlap
	l := newLab(t, labOpts{})
	u := l.newUE("10.99.0.2", 31000, 11111)
	established(t, l, u)
	foreign := &netlink.XfrmState{Src: net.ParseIP(pIP).To4(), Dst: net.ParseIP("10.99.0.9").To4(), Proto: netlink.XFRM_PROTO_ESP,
		Mode: netlink.XFRM_MODE_TRANSPORT, Spi: 300000, Reqid: 300000,
		Auth:     &netlink.XfrmStateAlgo{Name: "hmac(sha1)", Key: testIK, TruncateLen: 96},
		Crypt:    &netlink.XfrmStateAlgo{Name: "ecb(cipher_null)", Key: []byte{}},
		Selector: &netlink.XfrmPolicy{Src: host(net.ParseIP(pIP).To4()), Dst: host(net.ParseIP("10.99.0.9").To4()), SrcPort: 4000, DstPort: 7000}}
	if err := l.ph.XfrmStateAdd(foreign); err != nil {
		t.Fatal(err)
	}
	l.killKamd()
	if n := l.kamdStates(); n != 5 {
		t.Fatalf("%d states after kill -9, want 4 + the foreign one", n)
	}
	l.kamd = l.startKamd()
	st := states(t, l.ph)
	if _, ok := st[300000]; !ok || len(st) != 1 {
		t.Errorf("after restart: %+v, want only the foreign SA", st)
	}
	if n := len(policies(t, l.ph)); n != 0 {
		t.Errorf("%d policies left", n)
	}
	if !strings.Contains(l.kamd.log.String(), "removed SAs left by a previous run") {
		t.Errorf("kamd did not log the cleanup")
	}
	// The UE starts over (its old SAs are useless) and registers again.
	u.uninstall()
	established(t, l, u)
	if n := l.kamdStates(); n != 5 {
		t.Errorf("%d states after registering again, want 5", n)
	}
}

// readTCP reads one SIP message (headers and Content-Length body).
func readTCP(c net.Conn, d time.Duration) (sip.Message, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	br := bufio.NewReader(c)
	var b strings.Builder
	cl := 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		b.WriteString(line)
		if strings.HasPrefix(strings.ToLower(line), "content-length:") {
			fmt.Sscanf(strings.TrimSpace(line[15:]), "%d", &cl)
		}
		if line == "\r\n" {
			break
		}
	}
	body := make([]byte, cl)
	if _, err := io.ReadFull(br, body); err != nil {
		return nil, err
	}
	return sip.ParseMessage([]byte(b.String() + string(body)))
}

// testTCP: the protected REGISTER over a TCP connection port_uc ->
// port_ps (SAs A and B), then a request from the core over TCP, which kamd
// dials port_pc -> port_us (SAs C and D).
func testTCP(t *testing.T) {
	t.Parallel() // own namespaces, kamd and ports: the waits overlap
	l := newLab(t, labOpts{})
	u := l.newUE("10.99.0.2", 31000, 11111)
	if r := u.challenge(); r.StatusCode != 401 {
		t.Fatalf("first REGISTER: %d", r.StatusCode)
	}
	u.install(testIK, testCK, 0)
	var conn net.Conn
	var ln net.Listener
	err := inNS(l.uNS, func() (err error) {
		if ln, err = net.Listen("tcp4", fmt.Sprintf("%s:%d", u.ip, u.portS)); err != nil {
			return
		}
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(u.ip), Port: u.portC}, Timeout: 3 * time.Second}
		conn, err = d.Dial("tcp4", net.JoinHostPort(pIP, fmt.Sprint(u.server.PortS)))
		return
	})
	if err != nil {
		t.Fatalf("TCP to port_ps over ESP: %v", err)
	}
	defer conn.Close()
	defer ln.Close()
	before := states(t, l.ph)
	msg := strings.Replace(u.register(true, 600, ""), "SIP/2.0/UDP", "SIP/2.0/TCP", 1)
	if _, err := conn.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	var res *sip.Response
	for res == nil || res.StatusCode < 200 {
		m, err := readTCP(conn, 3*time.Second)
		if err != nil {
			t.Fatalf("protected REGISTER over TCP: %v", err)
		}
		res, _ = m.(*sip.Response)
	}
	if res.StatusCode != 200 {
		t.Fatalf("protected REGISTER over TCP: %d", res.StatusCode)
	}
	d := delta(before, states(t, l.ph))
	s := u.server
	if d[s.SpiS] == 0 || d[u.spiC] == 0 || d[u.spiS] != 0 || d[s.SpiC] != 0 {
		t.Errorf("REGISTER over TCP: deltas %v, want A (%d) and B (%d) only", d, s.SpiS, u.spiC)
	}
	t.Logf("TCP REGISTER/200: deltas %v", d)
	before = states(t, l.ph)
	got := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err
			return
		}
		defer c.Close()
		if ra := c.RemoteAddr().(*net.TCPAddr); ra.Port != int(s.PortC) {
			got <- fmt.Errorf("kamd dialled from port %d, want port_pc %d", ra.Port, s.PortC)
			return
		}
		m, err := readTCP(c, 5*time.Second)
		if err != nil {
			got <- err
			return
		}
		req, _ := m.(*sip.Request)
		if req == nil {
			got <- fmt.Errorf("got %v", m)
			return
		}
		_, err = c.Write([]byte(replyText(req, 200, "OK")))
		time.Sleep(300 * time.Millisecond)
		got <- err
	}()
	fr := l.scscf.sendMT(t, "OPTIONS", fmt.Sprintf("sip:001010000000001@%s:%d;transport=tcp", u.ip, u.portS))
	if err := <-got; err != nil {
		t.Errorf("MT over TCP at the UE: %v", err)
	}
	if fr == nil || fr.StatusCode != 200 {
		t.Fatalf("MT OPTIONS over TCP: core got %v", fr)
	}
	d = delta(before, states(t, l.ph))
	if d[u.spiS] == 0 || d[s.SpiC] == 0 {
		t.Errorf("MT over TCP: deltas %v, want C (%d) and D (%d)", d, u.spiS, s.SpiC)
	}
	t.Logf("TCP MT OPTIONS/200: deltas %v", d)
	if x := xfrmStat(t, l.pNS); len(x) != 0 {
		t.Errorf("P xfrm_stat: %v", x)
	}
}

package ipsecrig

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
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
}

func testHappyUDP(t *testing.T) {
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
	d2 := delta(b2, states(t, l.ph))
	if d2[u.spiS] != 1 || d2[s.SpiS] != 1 {
		t.Errorf("MT OPTIONS: deltas %v, want +1 on spi_us %d and spi_ps %d", d2, u.spiS, s.SpiS)
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
	l := newLab(t, labOpts{ueAddrs: 4})
	combos := []struct{ alg, ealg, auth, enc string }{
		{"hmac-sha-1-96", "null", "hmac(sha1)", "ecb(cipher_null)"},
		{"hmac-sha-1-96", "aes-cbc", "hmac(sha1)", "cbc(aes)"},
		{"hmac-md5-96", "null", "hmac(md5)", "ecb(cipher_null)"},
		{"hmac-md5-96", "aes-cbc", "hmac(md5)", "cbc(aes)"},
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
	_ = net.IPv4len
}

package ims_ipsec_pcscf

import (
	"fmt"
	"net"
	"strings"
	"testing"
)

// The rig's values (reference §13/§15).
var (
	rigUE = Endpoint{IP: net.ParseIP("10.99.0.2"), PortC: 31000, PortS: 31001, SpiC: 11111, SpiS: 22222}
	rigP  = Endpoint{IP: net.ParseIP("10.99.0.1"), PortC: 5100, PortS: 6100, SpiC: 4096, SpiS: 4097}
)

func rigKeys(t *testing.T) Keys {
	k, err := DeriveKeys("hmac-sha-1-96", "aes-cbc", unhex(t, "0123456789abcdef0123456789abcdef"), unhex(t, "fedcba9876543210fedcba9876543210"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestBuildSASetGolden(t *testing.T) {
	s, err := BuildSASet(rigUE, rigP, rigKeys(t))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, sa := range s.SAs {
		got = append(got, fmt.Sprintf("%s %s:%d>%s:%d spi=%d %s %s/%x %s/%x", sa.Name, sa.Src, sa.SrcPort, sa.Dst, sa.DstPort, sa.SPI, sa.Dir,
			sa.Keys.AuthName, sa.Keys.AuthKey, sa.Keys.EncName, sa.Keys.EncKey))
	}
	keys := "hmac(sha1)/0123456789abcdef0123456789abcdef00000000 cbc(aes)/fedcba9876543210fedcba9876543210"
	want := []string{
		"A 10.99.0.2:31000>10.99.0.1:6100 spi=4097 in " + keys,
		"B 10.99.0.1:6100>10.99.0.2:31000 spi=11111 out " + keys,
		"C 10.99.0.1:5100>10.99.0.2:31001 spi=22222 out " + keys,
		"D 10.99.0.2:31001>10.99.0.1:5100 spi=4096 in " + keys,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(s.SAs[0].Src) != 4 {
		t.Error("IPv4 addresses not normalised to 4 bytes")
	}
}

func TestBuildSASetErrors(t *testing.T) {
	v6 := rigUE
	v6.IP = net.ParseIP("2001:db8::2")
	if _, err := BuildSASet(v6, rigP, rigKeys(t)); err == nil {
		t.Error("mixed families accepted")
	}
	z := rigUE
	z.SpiC = 0
	if _, err := BuildSASet(z, rigP, rigKeys(t)); err == nil {
		t.Error("SPI 0 accepted")
	}
	p6 := rigP
	p6.IP = net.ParseIP("2001:db8::1")
	if s, err := BuildSASet(v6, p6, rigKeys(t)); err != nil || len(s.SAs[0].Src) != 16 {
		t.Errorf("IPv6 set: %v", err)
	}
}

func rigRange() SPIRange {
	return SPIRange{Start: 4096, Len: 1000, Local: net.ParseIP("10.99.0.1"), ClientPort: 5100, ServerPort: 6100, Ports: 10}
}

func TestFakeKernelAllOrNothing(t *testing.T) {
	for failAt := 1; failAt <= 4; failAt++ {
		k := NewFakeKernel()
		k.FailAt = failAt
		s, _ := BuildSASet(rigUE, rigP, rigKeys(t))
		if err := k.Install(s); err == nil {
			t.Fatalf("failAt %d: no error", failAt)
		}
		if l, _ := k.List(rigRange()); len(l) != 0 {
			t.Errorf("failAt %d: %d states left", failAt, len(l))
		}
		if n, _ := k.PolicyCount(rigRange()); n != 0 {
			t.Errorf("failAt %d: %d policies left", failAt, n)
		}
	}
	k := NewFakeKernel()
	s, _ := BuildSASet(rigUE, rigP, rigKeys(t))
	if err := k.Install(s); err != nil {
		t.Fatal(err)
	}
	if err := k.Install(s); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("duplicate: %v", err)
	}
	if l, _ := k.List(rigRange()); len(l) != 4 {
		t.Errorf("after duplicate %d states", len(l))
	}
	k.Remove(s)
	if l, _ := k.List(rigRange()); len(l) != 0 {
		t.Errorf("after remove %d", len(l))
	}
}

func TestOwnership(t *testing.T) {
	r := rigRange()
	k := NewFakeKernel()
	s, _ := BuildSASet(rigUE, rigP, rigKeys(t))
	k.Install(s)
	foreign := []StateInfo{
		{Src: "10.99.0.2", Dst: "10.99.0.1", SPI: 9999, SrcPort: 31000, DstPort: 7000}, // SPI outside range
		{Src: "10.99.0.1", Dst: "10.99.0.7", SPI: 11111, SrcPort: 4000, DstPort: 7000}, // out, not from a protected port
		{Src: "10.99.0.3", Dst: "10.99.0.9", SPI: 4100, SrcPort: 6100, DstPort: 7000},  // not our address
	}
	for _, f := range foreign {
		if r.Ours(f) {
			t.Errorf("%+v counted as ours", f)
		}
		k.AddForeign(f)
	}
	l, _ := k.List(r)
	if len(l) != 4 {
		t.Fatalf("listed %d: %+v", len(l), l)
	}
	n, _ := k.RemoveOwned(r)
	if n != 4 {
		t.Errorf("removed %d", n)
	}
	if c, _ := k.PolicyCount(r); c != 0 {
		t.Errorf("%d policies left", c)
	}
	k.mu.Lock()
	left := len(k.states)
	k.mu.Unlock()
	if left != 3 {
		t.Errorf("foreign states left %d, want 3", left)
	}
}

func TestParseXfrmStat(t *testing.T) {
	m := parseXfrmStat("XfrmInError             \t0\nXfrmInNoStates          \t3\nbad line here\n")
	if m["XfrmInNoStates"] != 3 || len(m) != 2 {
		t.Errorf("%v", m)
	}
}

var _ Kernel = (*FakeKernel)(nil)
var _ Kernel = (*NetlinkKernel)(nil)

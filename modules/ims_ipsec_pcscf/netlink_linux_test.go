package ims_ipsec_pcscf

import (
	"errors"
	"net"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// Kernel tests need CAP_NET_ADMIN and run in a private network namespace.
// They are off by default (the default run must not need root or ESP):
// KAMGO_IPSEC_KERNEL=1 runs them; on a kernel without ESP the SA test then
// skips unless PCSCF_REQUIRE_ESP=1 (set inside the UML rig), so it can
// never pass by skipping there.
func kernelInNewNS(t *testing.T) *NetlinkKernel {
	t.Helper()
	if os.Getenv("KAMGO_IPSEC_KERNEL") != "1" {
		t.Skip("set KAMGO_IPSEC_KERNEL=1 (root, private netns) to run the xfrm kernel tests")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New() // also switches this thread
	if err != nil {
		t.Skipf("cannot create a netns: %v", err)
	}
	k := NewNetlinkKernel()
	_, herr := k.handle() // the socket binds to ns
	if err := netns.Set(orig); err != nil {
		t.Fatal(err)
	}
	ns.Close()
	if herr != nil {
		t.Fatal(herr)
	}
	return k
}

func TestProbeNetlink(t *testing.T) {
	k := kernelInNewNS(t)
	err := k.Probe(SPIRange{Start: 4096, Len: 10, Local: net.ParseIP("127.0.0.1")})
	if os.Getenv("PCSCF_REQUIRE_ESP") == "1" {
		if err != nil {
			t.Fatalf("probe on an ESP kernel: %v", err)
		}
		return
	}
	if err == nil {
		t.Skip("this kernel has ESP: the no-ESP message cannot be checked here")
	}
	if !errors.Is(err, ErrNoESP) || err.Error()[:len(ErrNoESP.Error())] != "kernel has no ESP support (CONFIG_INET_ESP)" {
		t.Fatalf("probe error %q, want it to start with %q", err, ErrNoESP)
	}
	t.Logf("probe: %v", err)
}

func TestInstallListRemoveNetlink(t *testing.T) {
	k := kernelInNewNS(t)
	r := rigRange()
	s, _ := BuildSASet(rigUE, rigP, rigKeys(t))
	err := k.Install(s)
	if errors.Is(err, ErrNoESP) && os.Getenv("PCSCF_REQUIRE_ESP") != "1" {
		t.Skipf("no ESP here (set PCSCF_REQUIRE_ESP=1 to fail instead): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if l, err := k.List(r); err != nil || len(l) != 4 {
		t.Fatalf("list %d %v", len(l), err)
	}
	if n, err := k.PolicyCount(r); err != nil || n != 4 {
		t.Fatalf("policies %d %v", n, err)
	}
	if err := k.Install(s); err == nil {
		t.Error("duplicate install succeeded")
	}
	if l, _ := k.List(r); len(l) != 4 {
		t.Errorf("after a failed duplicate: %d states", len(l))
	}
	if err := k.Remove(s); err != nil {
		t.Fatal(err)
	}
	if l, _ := k.List(r); len(l) != 0 {
		t.Errorf("after remove: %d states", len(l))
	}
}

// Policies need no ESP, so this runs on the development kernel too (with
// KAMGO_IPSEC_KERNEL=1): the ownership rule keeps a foreign policy.
func TestPoliciesOwnedNetlink(t *testing.T) {
	k := kernelInNewNS(t)
	h, _ := k.handle()
	r := rigRange()
	s, _ := BuildSASet(rigUE, rigP, rigKeys(t))
	for i := range s.SAs {
		if err := h.XfrmPolicyAdd(nlPolicy(&s.SAs[i])); err != nil {
			t.Fatalf("policy %s: %v", s.SAs[i].Name, err)
		}
	}
	foreign := SA{Src: net.ParseIP("10.99.0.1"), SrcPort: 4000, Dst: net.ParseIP("10.99.0.7"), DstPort: 7000, SPI: 300000, Dir: DirOut}
	if err := h.XfrmPolicyAdd(nlPolicy(&foreign)); err != nil {
		t.Fatal(err)
	}
	if n, err := k.PolicyCount(r); err != nil || n != 4 {
		t.Fatalf("owned policies %d %v, want 4", n, err)
	}
	if _, err := k.RemoveOwned(r); err != nil {
		t.Fatal(err)
	}
	if n, _ := k.PolicyCount(r); n != 0 {
		t.Errorf("%d owned policies left", n)
	}
	all, err := h.XfrmPolicyList(0)
	if err != nil || len(all) != 1 || all[0].DstPort != 7000 {
		t.Errorf("left %+v %v, want only the foreign policy", all, err)
	}
}

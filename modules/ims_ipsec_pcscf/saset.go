package ims_ipsec_pcscf

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
)

// Dir is a policy direction on the P-CSCF.
type Dir uint8

const (
	DirIn Dir = iota
	DirOut
)

func (d Dir) String() string {
	if d == DirIn {
		return "in"
	}
	return "out"
}

// PolicyPriority is the priority of kamgo's policies (as Kamailio's).
const PolicyPriority = 2080

// SA is one ESP transport-mode state plus the policy that uses it; the
// selector is (Src/32 or /128, Dst, SrcPort, DstPort, proto any) so one set
// serves UDP and TCP; Reqid = SPI ties the policy template to the state.
type SA struct {
	Name             string // A..D as in the reference's table
	Src, Dst         net.IP
	SrcPort, DstPort uint16
	SPI              uint32
	Dir              Dir
	Keys             Keys
}

// SASet is the 4 SAs and 4 policies of one UE (TS 33.203 §7.1):
//
//	A UE:uc -> P:ps spi_ps in    B P:ps -> UE:uc spi_uc out
//	C P:pc -> UE:us spi_us out   D UE:us -> P:pc spi_pc in
type SASet struct {
	SAs [4]SA
	// HardLifetime is a kernel safety net (seconds, 0 = none); the SIP
	// registration drives the real lifetime.
	HardLifetime uint64
}

// Endpoint is one side's address with its protected client/server ports
// and the SPIs it chose for its inbound SAs.
type Endpoint struct {
	IP           net.IP
	PortC, PortS uint16
	SpiC, SpiS   uint32
}

// BuildSASet builds the set from the UE's Security-Client values, the
// P-CSCF's pair and the derived keys. The UE and P addresses must be the
// same family.
func BuildSASet(ue, p Endpoint, keys Keys) (*SASet, error) {
	if (ue.IP.To4() == nil) != (p.IP.To4() == nil) || ue.IP == nil || p.IP == nil {
		return nil, fmt.Errorf("UE %v and P-CSCF %v are not both IPv4 or both IPv6", ue.IP, p.IP)
	}
	if ue.SpiC == 0 || ue.SpiS == 0 || p.SpiC == 0 || p.SpiS == 0 || ue.PortC == 0 || ue.PortS == 0 || p.PortC == 0 || p.PortS == 0 {
		return nil, errors.New("SPIs and ports must be non-zero")
	}
	norm := func(ip net.IP) net.IP {
		if v4 := ip.To4(); v4 != nil {
			return v4
		}
		return ip.To16()
	}
	u, pc := norm(ue.IP), norm(p.IP)
	return &SASet{SAs: [4]SA{
		{Name: "A", Src: u, SrcPort: ue.PortC, Dst: pc, DstPort: p.PortS, SPI: p.SpiS, Dir: DirIn, Keys: keys},
		{Name: "B", Src: pc, SrcPort: p.PortS, Dst: u, DstPort: ue.PortC, SPI: ue.SpiC, Dir: DirOut, Keys: keys},
		{Name: "C", Src: pc, SrcPort: p.PortC, Dst: u, DstPort: ue.PortS, SPI: ue.SpiS, Dir: DirOut, Keys: keys},
		{Name: "D", Src: u, SrcPort: ue.PortS, Dst: pc, DstPort: p.PortC, SPI: p.SpiC, Dir: DirIn, Keys: keys},
	}}, nil
}

// SPIRange is kamgo's ownership tag in the kernel (the netlink API cannot
// set Kamailio's sel.user): a state is ours when its local end is the
// listen address and either its SPI is in [Start, Start+Len) (the inbound
// SAs, whose SPIs kamgo chose) or it leaves from one of the protected ports
// (the outbound SAs, whose SPIs the UE chose). Reqid stays = SPI, as in the
// reference's verified recipe.
type SPIRange struct {
	Start, Len             uint32
	Local                  net.IP
	ClientPort, ServerPort uint16
	Ports                  int // ipsec_max_connections
}

func (r SPIRange) protectedPort(p uint16) bool {
	in := func(lo uint16) bool { return lo != 0 && p >= lo && int(p) < int(lo)+r.Ports }
	return in(r.ClientPort) || in(r.ServerPort)
}

func (r SPIRange) has(spi uint32) bool {
	return spi >= r.Start && uint64(spi) < uint64(r.Start)+uint64(r.Len)
}

// StateInfo is a kernel state as listed, with its counters.
type StateInfo struct {
	Src, Dst         string
	SrcPort, DstPort uint16
	SPI              uint32
	Reqid            uint32
	Packets, Bytes   uint64
	IntegrityFailed  uint32
	Replay           uint32
	AddTime, UseTime uint64
	HardLifetime     uint64 // seconds; the fake's record (netlink does not list it)
}

// Kernel is the seam to the kernel's xfrm tables. Install is all or
// nothing; Remove removes what exists of a set and succeeds when nothing of
// it is left. List returns kamgo's states only: the SPI is its own when the
// P-CSCF generated it; for the UE-chosen outbound SPIs, by the reqid the
// policy ties them to (see Install).
type Kernel interface {
	// Probe checks the kernel can hold an ESP state (at module start).
	Probe(r SPIRange) error
	Install(s *SASet) error
	Remove(s *SASet) error
	// SetLifetime changes the hard lifetime of the set's states (the
	// temporary one after the 401, registration expiry + 30 s after the 200).
	SetLifetime(s *SASet, hardSecs uint64) error
	List(r SPIRange) ([]StateInfo, error)
	// PolicyCount is the number of policies tied to the range (for audit).
	PolicyCount(r SPIRange) (int, error)
	// RemoveOwned removes every state and policy of the range (start and
	// shutdown), never anyone else's; it returns the states removed.
	RemoveOwned(r SPIRange) (int, error)
	// XfrmStat is /proc/net/xfrm_stat of the namespace, counters by name.
	XfrmStat() (map[string]uint64, error)
}

// ErrNoESP is the probe's error on a kernel without ESP.
var ErrNoESP = errors.New("kernel has no ESP support (CONFIG_INET_ESP)")

// FakeKernel is an in-memory Kernel for tests: it enforces what the
// kernel does (a duplicate (dst, SPI) fails, policies per selector+dir are
// unique) and can be told to fail the n-th state add.
type FakeKernel struct {
	mu       sync.Mutex
	states   map[string]StateInfo // key dst/spi
	policies map[string]uint32    // key selector/dir -> reqid
	FailAt   int                  // fail the FailAt-th state add (1-based); 0 never
	adds     int
	NoESP    bool
}

// NewFakeKernel returns an empty fake.
func NewFakeKernel() *FakeKernel {
	return &FakeKernel{states: map[string]StateInfo{}, policies: map[string]uint32{}}
}

func stateKey(dst net.IP, spi uint32) string { return fmt.Sprintf("%s/%d", dst, spi) }
func polKey(sa *SA) string {
	return fmt.Sprintf("%s:%d>%s:%d/%s", sa.Src, sa.SrcPort, sa.Dst, sa.DstPort, sa.Dir)
}

// Probe fails as the netlink one does when NoESP is set.
func (f *FakeKernel) Probe(SPIRange) error {
	if f.NoESP {
		return ErrNoESP
	}
	return nil
}

// Install adds the 4 states and policies or nothing.
func (f *FakeKernel) Install(s *SASet) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var done []int
	rollback := func() {
		for _, i := range done {
			delete(f.policies, polKey(&s.SAs[i]))
			delete(f.states, stateKey(s.SAs[i].Dst, s.SAs[i].SPI))
		}
	}
	for i := range s.SAs {
		sa := &s.SAs[i]
		f.adds++
		if f.NoESP {
			rollback()
			return ErrNoESP
		}
		if f.FailAt > 0 && f.adds == f.FailAt {
			rollback()
			return fmt.Errorf("state spi %d: injected failure", sa.SPI)
		}
		k := stateKey(sa.Dst, sa.SPI)
		if _, ok := f.states[k]; ok {
			rollback()
			return fmt.Errorf("state spi %d: file exists", sa.SPI)
		}
		if _, ok := f.policies[polKey(sa)]; ok {
			rollback()
			return fmt.Errorf("policy spi %d: file exists", sa.SPI)
		}
		f.states[k] = StateInfo{Src: sa.Src.String(), Dst: sa.Dst.String(), SrcPort: sa.SrcPort, DstPort: sa.DstPort, SPI: sa.SPI, Reqid: sa.SPI}
		f.policies[polKey(sa)] = sa.SPI
		done = append(done, i)
	}
	return nil
}

// SetLifetime records the lifetime; states must exist.
func (f *FakeKernel) SetLifetime(s *SASet, hard uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range s.SAs {
		k := stateKey(s.SAs[i].Dst, s.SAs[i].SPI)
		st, ok := f.states[k]
		if !ok {
			return fmt.Errorf("state spi %d: no such process", s.SAs[i].SPI)
		}
		st.HardLifetime = hard
		f.states[k] = st
	}
	return nil
}

// Remove deletes what exists of the set.
func (f *FakeKernel) Remove(s *SASet) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range s.SAs {
		delete(f.policies, polKey(&s.SAs[i]))
		delete(f.states, stateKey(s.SAs[i].Dst, s.SAs[i].SPI))
	}
	return nil
}

// AddCounters bumps a state's counters, as traffic would.
func (f *FakeKernel) AddCounters(dst string, spi uint32, packets, bytes uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := dst + "/" + fmt.Sprint(spi)
	st := f.states[k]
	st.Packets += packets
	st.Bytes += bytes
	f.states[k] = st
}

// AddForeign inserts a state kamgo did not create (audit tests).
func (f *FakeKernel) AddForeign(st StateInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.states[st.Dst+"/"+fmt.Sprint(st.SPI)] = st
}

// Ours applies the ownership rule to a listed state.
func (r SPIRange) Ours(st StateInfo) bool {
	if r.Local == nil {
		return false
	}
	l := r.Local.String()
	return st.Dst == l && r.has(st.SPI) || st.Src == l && r.protectedPort(st.SrcPort)
}

// List returns the states in the range, sorted by SPI.
func (f *FakeKernel) List(r SPIRange) ([]StateInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []StateInfo
	for _, st := range f.states {
		if r.Ours(st) {
			out = append(out, st)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].SPI < out[j].SPI })
	return out, nil
}

// PolicyCount counts all policies (the fake holds only kamgo's).
func (f *FakeKernel) PolicyCount(SPIRange) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.policies), nil
}

// RemoveOwned deletes the range's states and their policies.
func (f *FakeKernel) RemoveOwned(r SPIRange) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for k, st := range f.states {
		if r.Ours(st) {
			delete(f.states, k)
			n++
			for pk, reqid := range f.policies {
				if reqid == st.Reqid {
					delete(f.policies, pk)
				}
			}
		}
	}
	return n, nil
}

// XfrmStat returns nothing: the fake has no namespace counters.
func (f *FakeKernel) XfrmStat() (map[string]uint64, error) { return map[string]uint64{}, nil }

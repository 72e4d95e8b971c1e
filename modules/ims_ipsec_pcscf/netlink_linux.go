package ims_ipsec_pcscf

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NetlinkKernel programs xfrm through netlink in kamd's network namespace,
// following the reference's recipe (§9): canonical algorithm names,
// 96-bit truncation, replay window 32, reqid = SPI, policy after state,
// policies deleted before states.
type NetlinkKernel struct {
	once sync.Once
	h    *netlink.Handle
	err  error
}

// NewNetlinkKernel returns the kernel seam; the socket opens on first use.
func NewNetlinkKernel() *NetlinkKernel { return &NetlinkKernel{} }

func (k *NetlinkKernel) handle() (*netlink.Handle, error) {
	k.once.Do(func() {
		k.h, k.err = netlink.NewHandle(unix.NETLINK_XFRM)
		if k.err != nil {
			k.err = fmt.Errorf("xfrm netlink socket: %w", k.err)
		}
	})
	return k.h, k.err
}

func hostNet(ip net.IP) *net.IPNet {
	if v4 := ip.To4(); v4 != nil {
		return &net.IPNet{IP: v4, Mask: net.CIDRMask(32, 32)}
	}
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(128, 128)}
}

func nlState(sa *SA, hard uint64) *netlink.XfrmState {
	return &netlink.XfrmState{
		Src: sa.Src, Dst: sa.Dst, Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TRANSPORT,
		Spi: int(sa.SPI), Reqid: int(sa.SPI), ReplayWindow: 32,
		Auth:     &netlink.XfrmStateAlgo{Name: sa.Keys.AuthName, Key: sa.Keys.AuthKey, TruncateLen: 96},
		Crypt:    &netlink.XfrmStateAlgo{Name: sa.Keys.EncName, Key: sa.Keys.EncKey},
		Selector: &netlink.XfrmPolicy{Src: hostNet(sa.Src), Dst: hostNet(sa.Dst), SrcPort: int(sa.SrcPort), DstPort: int(sa.DstPort)},
		Limits:   netlink.XfrmStateLimits{TimeHard: hard},
	}
}

func nlPolicy(sa *SA) *netlink.XfrmPolicy {
	dir := netlink.XFRM_DIR_IN
	if sa.Dir == DirOut {
		dir = netlink.XFRM_DIR_OUT
	}
	return &netlink.XfrmPolicy{
		Src: hostNet(sa.Src), Dst: hostNet(sa.Dst), SrcPort: int(sa.SrcPort), DstPort: int(sa.DstPort),
		Dir: dir, Priority: PolicyPriority,
		Tmpls: []netlink.XfrmPolicyTmpl{{Src: sa.Src, Dst: sa.Dst, Proto: netlink.XFRM_PROTO_ESP,
			Mode: netlink.XFRM_MODE_TRANSPORT, Reqid: int(sa.SPI)}},
	}
}

func mapErr(err error) error {
	if errors.Is(err, unix.EPROTONOSUPPORT) {
		return fmt.Errorf("%w: %v", ErrNoESP, err)
	}
	return err
}

// Probe adds and deletes one ESP state with the first SPI of the range on
// the listen address: the only reliable test (xfrm_user answers even when
// esp4 is missing; the state add then fails with EPROTONOSUPPORT).
func (k *NetlinkKernel) Probe(r SPIRange) error {
	h, err := k.handle()
	if err != nil {
		return err
	}
	local := r.Local
	if local == nil {
		local = net.IPv4(127, 0, 0, 1)
	}
	keys, _ := DeriveKeys("hmac-sha-1-96", "null", make([]byte, 16), make([]byte, 16))
	sa := SA{Src: local, Dst: local, SrcPort: 1, DstPort: 1, SPI: r.Start, Keys: keys}
	st := nlState(&sa, 0)
	if err := h.XfrmStateAdd(st); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil // a state with that SPI exists: ESP works
		}
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("xfrm: %w (kamd needs CAP_NET_ADMIN)", err)
		}
		return mapErr(err)
	}
	return h.XfrmStateDel(&netlink.XfrmState{Src: local, Dst: local, Proto: netlink.XFRM_PROTO_ESP, Spi: int(r.Start)})
}

// Install adds the 4 states and policies; on any error it removes what it
// added, so nothing is half-created.
func (k *NetlinkKernel) Install(s *SASet) error {
	h, err := k.handle()
	if err != nil {
		return err
	}
	var added []*SA
	for i := range s.SAs {
		sa := &s.SAs[i]
		if err := h.XfrmStateAdd(nlState(sa, s.HardLifetime)); err != nil {
			k.remove(h, added, nil)
			return fmt.Errorf("SA %s state spi %d: %w", sa.Name, sa.SPI, mapErr(err))
		}
		if err := h.XfrmPolicyAdd(nlPolicy(sa)); err != nil {
			k.remove(h, added, sa)
			return fmt.Errorf("SA %s policy spi %d: %w", sa.Name, sa.SPI, err)
		}
		added = append(added, sa)
	}
	return nil
}

// remove deletes the policies then the states of sas, and the lone state
// of half (its policy failed).
func (k *NetlinkKernel) remove(h *netlink.Handle, sas []*SA, half *SA) error {
	var errs []error
	for _, sa := range sas {
		if err := h.XfrmPolicyDel(nlPolicy(sa)); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("policy spi %d: %w", sa.SPI, err))
		}
	}
	if half != nil {
		sas = append(sas, half)
	}
	for _, sa := range sas {
		if err := h.XfrmStateDel(&netlink.XfrmState{Src: sa.Src, Dst: sa.Dst, Proto: netlink.XFRM_PROTO_ESP, Spi: int(sa.SPI)}); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("state spi %d: %w", sa.SPI, err))
		}
	}
	return errors.Join(errs...)
}

// SetLifetime updates each state's hard lifetime in place (XfrmStateUpdate
// needs the full state, keys included).
func (k *NetlinkKernel) SetLifetime(s *SASet, hard uint64) error {
	h, err := k.handle()
	if err != nil {
		return err
	}
	var errs []error
	for i := range s.SAs {
		if err := h.XfrmStateUpdate(nlState(&s.SAs[i], hard)); err != nil {
			errs = append(errs, fmt.Errorf("SA %s spi %d: %w", s.SAs[i].Name, s.SAs[i].SPI, err))
		}
	}
	return errors.Join(errs...)
}

// Remove deletes the set; what is already gone is not an error.
func (k *NetlinkKernel) Remove(s *SASet) error {
	h, err := k.handle()
	if err != nil {
		return err
	}
	sas := make([]*SA, 4)
	for i := range s.SAs {
		sas[i] = &s.SAs[i]
	}
	return k.remove(h, sas, nil)
}

func info(st *netlink.XfrmState) StateInfo {
	si := StateInfo{Src: st.Src.String(), Dst: st.Dst.String(), SPI: uint32(st.Spi), Reqid: uint32(st.Reqid),
		Packets: st.Statistics.Packets, Bytes: st.Statistics.Bytes, IntegrityFailed: st.Statistics.Failed,
		Replay: st.Statistics.Replay, AddTime: st.Statistics.AddTime, UseTime: st.Statistics.UseTime}
	if st.Selector != nil {
		si.SrcPort, si.DstPort = uint16(st.Selector.SrcPort), uint16(st.Selector.DstPort)
	}
	return si
}

// List dumps the ESP states and keeps ours. A dump interrupted by a
// concurrent change is retried once.
func (k *NetlinkKernel) List(r SPIRange) ([]StateInfo, error) {
	h, err := k.handle()
	if err != nil {
		return nil, err
	}
	sts, err := h.XfrmStateList(netlink.FAMILY_ALL)
	if errors.Is(err, netlink.ErrDumpInterrupted) {
		sts, err = h.XfrmStateList(netlink.FAMILY_ALL)
	}
	if err != nil {
		return nil, err
	}
	var out []StateInfo
	for i := range sts {
		if sts[i].Proto != netlink.XFRM_PROTO_ESP {
			continue
		}
		if si := info(&sts[i]); r.Ours(si) {
			out = append(out, si)
		}
	}
	return out, nil
}

func (k *NetlinkKernel) ownedPolicies(h *netlink.Handle, r SPIRange) ([]netlink.XfrmPolicy, error) {
	ps, err := h.XfrmPolicyList(netlink.FAMILY_ALL)
	if errors.Is(err, netlink.ErrDumpInterrupted) {
		ps, err = h.XfrmPolicyList(netlink.FAMILY_ALL)
	}
	if err != nil {
		return nil, err
	}
	var out []netlink.XfrmPolicy
	for _, p := range ps {
		if len(p.Tmpls) != 1 || p.Tmpls[0].Proto != netlink.XFRM_PROTO_ESP || p.Src == nil || p.Dst == nil {
			continue
		}
		// The policy's selector is its state's: apply the same rule.
		si := StateInfo{Src: p.Src.IP.String(), Dst: p.Dst.IP.String(), SrcPort: uint16(p.SrcPort), SPI: uint32(p.Tmpls[0].Reqid)}
		if r.Ours(si) {
			out = append(out, p)
		}
	}
	return out, nil
}

// PolicyCount counts our policies.
func (k *NetlinkKernel) PolicyCount(r SPIRange) (int, error) {
	h, err := k.handle()
	if err != nil {
		return 0, err
	}
	ps, err := k.ownedPolicies(h, r)
	return len(ps), err
}

// RemoveOwned deletes our policies, then our states.
func (k *NetlinkKernel) RemoveOwned(r SPIRange) (int, error) {
	h, err := k.handle()
	if err != nil {
		return 0, err
	}
	ps, err := k.ownedPolicies(h, r)
	if err != nil {
		return 0, err
	}
	var errs []error
	for i := range ps {
		if err := h.XfrmPolicyDel(&ps[i]); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, err)
		}
	}
	sts, err := k.List(r)
	if err != nil {
		return 0, errors.Join(append(errs, err)...)
	}
	n := 0
	for _, st := range sts {
		err := h.XfrmStateDel(&netlink.XfrmState{Src: net.ParseIP(st.Src), Dst: net.ParseIP(st.Dst), Proto: netlink.XFRM_PROTO_ESP, Spi: int(st.SPI)})
		if err == nil {
			n++
		} else if !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}

// XfrmStat reads /proc/net/xfrm_stat (kamd's namespace).
func (k *NetlinkKernel) XfrmStat() (map[string]uint64, error) {
	b, err := os.ReadFile("/proc/net/xfrm_stat")
	if err != nil {
		return nil, err
	}
	return parseXfrmStat(string(b)), nil
}

func parseXfrmStat(s string) map[string]uint64 {
	out := map[string]uint64{}
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 {
			if v, err := strconv.ParseUint(f[1], 10, 64); err == nil {
				out[f[0]] = v
			}
		}
	}
	return out
}

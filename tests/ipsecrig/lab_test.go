// Package ipsecrig is the IMS P-CSCF IPsec suite that runs inside
// user-mode Linux (TestIPsecUML in uml_test.go boots it): the host kernel has
// no ESP, the UML kernel has. Each scenario builds two network namespaces
// joined by a veth pair: "p" with kamd as the P-CSCF (10.99.0.1) and a
// stub S-CSCF on 127.0.0.2:6060, "u" with UE simulators (10.99.0.2..)
// that install their mirror SAs through netlink and speak SIP over them.
//
// Outside the VM (KAMGO_IPSEC_VM unset) every test skips: run them with
// `go test ./tests/ipsecrig/ -run TestIPsecUML`, which boots the VM.
package ipsecrig

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const (
	pIP      = "10.99.0.1"
	scscfIP  = "127.0.0.2"
	rpcAddr  = "127.0.0.1:8060"
	domain   = "ims.mnc001.mcc001.3gppnetwork.org"
	firstSPI = 4096
)

// Milenage TS 35.208 test set 1 (the reference's §15): the stub S-CSCF
// hands these to the P-CSCF; the UE simulator "computes" the same.
var (
	testCK = mustHex("b40ba9a3c58b2a05bbf0d987b21bf8cb")
	testIK = mustHex("f769bcd751044604127672711c6d3441")
	// osmocom's fixture: the second vector for re-authentication.
	testCK2 = mustHex("0b389d08c833991734936bec55cac800")
	testIK2 = mustHex("17141862125bd30c81c4224391a0909a")
)

func mustHex(s string) []byte {
	b := make([]byte, len(s)/2)
	for i := range b {
		v, err := strconv.ParseUint(s[2*i:2*i+2], 16, 8)
		if err != nil {
			panic(err)
		}
		b[i] = byte(v)
	}
	return b
}

func inVM(t *testing.T) {
	if os.Getenv("KAMGO_IPSEC_VM") != "1" {
		t.Skip("runs inside user-mode Linux only: go test ./tests/ipsecrig/ -run TestIPsecUML boots it (KAMGO_IPSEC_UML=1 makes a missing UML a failure)")
	}
}

// inNS runs fn on a thread switched into ns (sockets created there
// belong to ns).
func inNS(ns netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		panic("cannot return to the original netns: " + err.Error()) // the thread must not be reused
	}
	runtime.UnlockOSThread()
	return ferr
}

var labSeq atomic.Int64

type labOpts struct {
	ueAddrs int               // UE addresses 10.99.0.2.. (default 1)
	params  map[string]string // modparam overrides (raw Starlark values)
}

// lab is one scenario's namespaces, kamd and stub S-CSCF.
type lab struct {
	t            *testing.T
	name         string
	pName, uName string
	pNS, uNS     netns.NsHandle
	ph, uh       *netlink.Handle
	dir          string
	script       string
	kamd         *kamd
	scscf        *scscf
	http         *http.Client
}

func newLab(t *testing.T, o labOpts) *lab {
	t.Helper()
	n := labSeq.Add(1)
	l := &lab{t: t, name: t.Name(), pName: fmt.Sprintf("p%d", n), uName: fmt.Sprintf("u%d", n)}
	l.dir = filepath.Join("/run/kamgo", strconv.FormatInt(n, 10))
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	l.pNS, err = netns.NewNamed(l.pName)
	if err == nil {
		l.uNS, err = netns.NewNamed(l.uName)
	}
	if serr := netns.Set(orig); serr != nil {
		panic(serr)
	}
	orig.Close()
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatalf("netns: %v", err)
	}
	t.Cleanup(func() {
		l.pNS.Close()
		l.uNS.Close()
		netns.DeleteNamed(l.pName)
		netns.DeleteNamed(l.uName)
	})
	if l.ph, err = netlink.NewHandleAt(l.pNS); err != nil {
		t.Fatal(err)
	}
	if l.uh, err = netlink.NewHandleAt(l.uNS); err != nil {
		t.Fatal(err)
	}
	if err := l.ph.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vp"}, PeerName: "vu", PeerNamespace: netlink.NsFd(l.uNS)}); err != nil {
		t.Fatalf("veth: %v", err)
	}
	up := func(h *netlink.Handle, name string, addrs ...string) {
		lk, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			ad, _ := netlink.ParseAddr(a)
			if err := h.AddrAdd(lk, ad); err != nil {
				t.Fatalf("addr %s: %v", a, err)
			}
		}
		if err := h.LinkSetUp(lk); err != nil {
			t.Fatal(err)
		}
	}
	up(l.ph, "lo")
	up(l.uh, "lo")
	up(l.ph, "vp", pIP+"/24")
	nue := o.ueAddrs
	if nue == 0 {
		nue = 1
	}
	var ues []string
	for i := 0; i < nue; i++ {
		ues = append(ues, fmt.Sprintf("10.99.0.%d/24", 2+i))
	}
	up(l.uh, "vu", ues...)
	l.scscf = startSCSCF(t, l)
	l.http = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(_ context.Context, network, addr string) (c net.Conn, err error) {
			err = inNS(l.pNS, func() error { c, err = net.DialTimeout(network, addr, 3*time.Second); return err })
			return
		},
	}}
	src, err := os.ReadFile(scriptPath())
	if err != nil {
		t.Fatal(err)
	}
	s := string(src)
	for k, v := range o.params {
		s = strings.Replace(s, "\ndef ksr_request_route", fmt.Sprintf("\nmodparam(\"ims_ipsec_pcscf\", %q, %s)\ndef ksr_request_route", k, v), 1)
	}
	l.script = filepath.Join(l.dir, "route.star")
	if err := os.WriteFile(l.script, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	l.kamd = l.startKamd()
	return l
}

func scriptPath() string {
	if p := os.Getenv("KAMGO_IPSEC_SCRIPT"); p != "" {
		return p
	}
	return "../../examples/ims_pcscf/route.star"
}

// kamd is the P-CSCF process (ip netns exec p<N> kamd ...).
type kamd struct {
	cmd  *exec.Cmd
	log  *syncBuf
	done chan struct{}
	err  error
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (l *lab) startKamd() *kamd {
	t := l.t
	t.Helper()
	bin := os.Getenv("KAMGO_KAMD_BIN")
	if bin == "" {
		t.Fatal("KAMGO_KAMD_BIN not set")
	}
	k := &kamd{log: &syncBuf{}, done: make(chan struct{})}
	k.cmd = exec.Command("ip", "netns", "exec", l.pName, bin, "-f", l.script,
		"-l", "udp:"+pIP+":5060", "-l", "tcp:"+pIP+":5060", "--rpc", rpcAddr, "--db", filepath.Join(l.dir, "kamgo.db"), "-workers", "4")
	k.cmd.Dir = l.dir
	k.cmd.Stdout, k.cmd.Stderr = k.log, k.log
	if err := k.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { k.err = k.cmd.Wait(); close(k.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(k.log.String(), "listening on tcp:"+pIP+":5060") {
		select {
		case <-k.done:
			t.Fatalf("kamd exited at start (%v):\n%s", k.err, k.log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("kamd did not start:\n%s", k.log)
		}
	}
	// The RPC listener comes up beside the SIP ones.
	for i := 0; ; i++ {
		if _, err := l.rpcRaw("core.version"); err == nil {
			break
		} else if i > 200 {
			t.Fatalf("kamd RPC: %v\n%s", err, k.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() {
		l.stopKamd(k)
		if t.Failed() {
			t.Logf("kamd log:\n%s", k.log)
		}
	})
	return k
}

// stopKamd sends SIGTERM and waits; a kamd already killed is fine.
func (l *lab) stopKamd(k *kamd) {
	select {
	case <-k.done:
		return
	default:
	}
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.done:
		if k.err != nil {
			l.t.Errorf("kamd exit on SIGTERM: %v", k.err)
		}
	case <-time.After(15 * time.Second):
		_ = k.cmd.Process.Kill()
		<-k.done
		l.t.Errorf("kamd did not stop within 15s")
	}
}

// killKamd is kill -9: nothing of kamd's shutdown runs.
func (l *lab) killKamd() {
	_ = l.kamd.cmd.Process.Kill()
	<-l.kamd.done
}

func (l *lab) rpcRaw(method string, params ...any) (map[string]any, error) {
	if params == nil {
		params = []any{}
	}
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": method, "params": params, "id": 1})
	res, err := l.http.Post("http://"+rpcAddr+"/RPC", "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %v: %s", method, err, b)
	}
	return m, nil
}

// rpc calls method and returns its result (fatal on an error reply).
func (l *lab) rpc(method string, params ...any) any {
	l.t.Helper()
	m, err := l.rpcRaw(method, params...)
	if err != nil {
		l.t.Fatal(err)
	}
	if e, ok := m["error"]; ok {
		l.t.Fatalf("%s: error %v", method, e)
	}
	return m["result"]
}

func (l *lab) ipsecList() []map[string]any {
	l.t.Helper()
	r, _ := l.rpc("ipsec.list").([]any)
	out := make([]map[string]any, 0, len(r))
	for _, e := range r {
		out = append(out, e.(map[string]any))
	}
	return out
}

func (l *lab) ipsecStats() map[string]any {
	l.t.Helper()
	return l.rpc("ipsec.stats").(map[string]any)
}

func num(v any) uint64 {
	f, _ := v.(float64)
	return uint64(f)
}

// kstate is one kernel ESP state with its counters.
type kstate struct {
	src, dst     string
	sport, dport int
	spi          uint32
	auth, enc    string
	packets      uint64
	failed       uint32
	replay       uint32
}

func states(t *testing.T, h *netlink.Handle) map[uint32]kstate {
	t.Helper()
	sts, err := h.XfrmStateList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint32]kstate{}
	for _, s := range sts {
		k := kstate{src: s.Src.String(), dst: s.Dst.String(), spi: uint32(s.Spi), packets: s.Statistics.Packets,
			failed: s.Statistics.Failed, replay: s.Statistics.Replay}
		if s.Selector != nil {
			k.sport, k.dport = s.Selector.SrcPort, s.Selector.DstPort
		}
		if s.Auth != nil {
			k.auth = s.Auth.Name
		}
		if s.Crypt != nil {
			k.enc = s.Crypt.Name
		}
		out[k.spi] = k
	}
	return out
}

func policies(t *testing.T, h *netlink.Handle) []netlink.XfrmPolicy {
	t.Helper()
	ps, err := h.XfrmPolicyList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// xfrmStat reads /proc/net/xfrm_stat of ns (through thread-self: /proc/net
// follows the process's main thread, not the calling one).
func xfrmStat(t *testing.T, ns netns.NsHandle) map[string]uint64 {
	t.Helper()
	var b []byte
	if err := inNS(ns, func() (err error) { b, err = os.ReadFile("/proc/thread-self/net/xfrm_stat"); return }); err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 {
			v, _ := strconv.ParseUint(f[1], 10, 64)
			if v != 0 {
				out[f[0]] = v
			}
		}
	}
	return out
}

// waitFor polls cond until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kamdStates is the number of ESP states in the P namespace.
func (l *lab) kamdStates() int {
	sts, err := l.ph.XfrmStateList(netlink.FAMILY_ALL)
	if err != nil {
		l.t.Fatal(err)
	}
	return len(sts)
}

// outDir is the writable host directory (hostfs) for pcaps and facts.
func outDir() string { return os.Getenv("KAMGO_IPSEC_OUT") }

// capture records every frame on an interface of a namespace (AF_PACKET)
// and writes a pcap for tshark on the host.
type capture struct {
	fd   int
	stop atomic.Bool
	done chan struct{}
	mu   sync.Mutex
	recs []pcapRec
}

type pcapRec struct {
	at   time.Time
	data []byte
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func startCapture(t *testing.T, ns netns.NsHandle, h *netlink.Handle, ifname string) *capture {
	t.Helper()
	lk, err := h.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	c := &capture{done: make(chan struct{})}
	err = inNS(ns, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		c.fd = fd
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: lk.Attrs().Index})
	})
	if err != nil {
		t.Fatalf("capture: %v", err)
	}
	_ = unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50000})
	go func() {
		defer close(c.done)
		buf := make([]byte, 65536)
		for !c.stop.Load() {
			n, _, err := unix.Recvfrom(c.fd, buf, 0)
			if err != nil || n <= 0 {
				continue
			}
			c.mu.Lock()
			c.recs = append(c.recs, pcapRec{at: time.Now(), data: append([]byte(nil), buf[:n]...)})
			c.mu.Unlock()
		}
	}()
	return c
}

// finish stops the capture and writes it as name.pcap in the out dir.
func (c *capture) finish(t *testing.T, name string) string {
	c.stop.Store(true)
	<-c.done
	unix.Close(c.fd)
	var b bytes.Buffer
	le := func(v uint32) { b.Write([]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}) }
	le(0xa1b2c3d4)
	b.Write([]byte{2, 0, 4, 0})
	le(0)
	le(0)
	le(65535)
	le(1) // Ethernet
	for _, r := range c.recs {
		le(uint32(r.at.Unix()))
		le(uint32(r.at.Nanosecond() / 1000))
		le(uint32(len(r.data)))
		le(uint32(len(r.data)))
		b.Write(r.data)
	}
	if outDir() == "" {
		return ""
	}
	p := filepath.Join(outDir(), name+".pcap")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Errorf("writing %s: %v", p, err)
	}
	return p
}

// writeFact stores a JSON fact for the host side (tshark expectations,
// the ipsec.list example).
func writeFact(t *testing.T, name string, v any) {
	if outDir() == "" {
		return
	}
	b, _ := json.MarshalIndent(v, "", "  ")
	if err := os.WriteFile(filepath.Join(outDir(), name+".json"), b, 0o644); err != nil {
		t.Errorf("fact %s: %v", name, err)
	}
}

// Package ims_ipsec_pcscf is Kamailio's ims_ipsec_pcscf: IMS sec-agree
// (RFC 3329, TS 33.203) with IPsec ESP SAs between the P-CSCF and each UE,
// programmed through netlink xfrm, plus RPC visibility Kamailio lacks.
package ims_ipsec_pcscf

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

func init() { core.Register(New) }

// Name is the module's name, its KSR namespace and its event topic.
const Name = "ims_ipsec_pcscf"

// Set states, as ipsec.list shows them.
const (
	StateTemporary   = "temporary"
	StateEstablished = "established"
	StateDeleting    = "deleting"
)

// ueSet is one UE's negotiated SA set and what ipsec.list shows of it.
type ueSet struct {
	id              string // ue_ip:port_uc
	domain, aor     string
	contact, callID string
	ue, p           Endpoint
	alg, ealg       string
	state           string
	created         time.Time
	expires         time.Time
	pair            Pair
	set             *SASet
	ck, ik          []byte
	server          Mechanism // the Security-Server sent in the 401
	seq             uint64    // creation order (times can tie)
	timer           core.Timer
}

// pending is what the module remembers of a REGISTER carrying
// Security-Client until its 401 comes back (keyed by Call-ID and CSeq).
type pending struct {
	client  []Mechanism
	srcIP   string
	srcPort int
	proto   string
	aor     string
	contact string
	at      time.Time
}

// pendingTTL bounds how long a REGISTER is remembered (tm's fr_timer is
// far shorter); pendingMax bounds the memory a flood can take.
const (
	pendingTTL = 64 * 500 * time.Millisecond
	pendingMax = 65536
)

type mod struct {
	env    *core.Env
	kernel Kernel

	// params
	listenAddr             atomic.Value // string
	clientPort, serverPort atomic.Int64
	spiStart, spiRange     atomic.Int64
	maxConn                atomic.Int64
	prefAlg, prefEalg      atomic.Value // string
	tempLifetime           atomic.Int64 // seconds
	showKeys               atomic.Int64

	mu      sync.Mutex
	pool    *Pool
	rng     SPIRange
	sets    map[string]*ueSet
	seq     uint64
	pending map[string]pending
	// socks counts the sets using each protected socket (pairs are
	// shared by UEs): opened with the first, closed with the last.
	socks map[core.Socket]int
	// plainDropped counts requests refused by the protected-port check.
	plainDropped atomic.Int64
}

func (m *mod) str(v *atomic.Value) string { s, _ := v.Load().(string); return s }

// enabled: the module is active when ipsec_listen_addr is set; without it
// every function returns -1 and nothing touches the kernel.
func (m *mod) enabled() bool { return m.str(&m.listenAddr) != "" }

// newKernel is the kernel New gives the module: netlink; route tests in
// this package put the in-memory one here.
var newKernel = func() Kernel { return NewNetlinkKernel() }

// New builds the module with the netlink kernel.
func New(env *core.Env) *core.Module {
	_, t := newModule(env, newKernel())
	return t
}

func newModule(env *core.Env, k Kernel) (*mod, *core.Module) {
	m := &mod{env: env, kernel: k, sets: map[string]*ueSet{}, pending: map[string]pending{}, socks: map[core.Socket]int{}}
	intParam := func(name string, def int, lo, hi int64, p *atomic.Int64, doc string, static bool) core.Param {
		return core.Param{Name: name, Type: core.ArgInt, Default: core.Int(def), Doc: doc, Static: static,
			Check: func(v core.Val) error {
				if v.Int < lo || v.Int > hi {
					return fmt.Errorf("%s %d out of range %d..%d", name, v.Int, lo, hi)
				}
				return nil
			},
			Set: func(v core.Val) error { p.Store(v.Int); return nil },
			Get: func() core.Val { return core.Int(int(p.Load())) }}
	}
	strParam := func(name string, p *atomic.Value, check func(string) error, doc string, static bool) core.Param {
		return core.Param{Name: name, Type: core.ArgStr, Default: core.Str(""), Doc: doc, Static: static,
			Check: func(v core.Val) error { return check(v.Str) },
			Set:   func(v core.Val) error { p.Store(v.Str); return nil },
			Get:   func() core.Val { return core.Str(m.str(p)) }}
	}
	algCheck := func(list []string, name string) func(string) error {
		return func(s string) error {
			if s != "" && !known(list, s) {
				return fmt.Errorf("%s %q: want one of %s", name, s, strings.Join(list, ", "))
			}
			return nil
		}
	}
	t := &core.Module{
		Name: Name,
		Doc:  "IMS P-CSCF sec-agree: IPsec ESP SAs per UE (TS 33.203), with RPC visibility",
		Params: []core.Param{
			strParam("ipsec_listen_addr", &m.listenAddr, func(s string) error {
				if s != "" && net.ParseIP(s) == nil {
					return fmt.Errorf("ipsec_listen_addr %q is not an IP address", s)
				}
				return nil
			}, "the P-CSCF's IPsec address (SA endpoint); empty disables the module (no kernel access, functions return -1)", true),
			intParam("ipsec_client_port", 5100, 1, 65535, &m.clientPort, "first protected client port (port_pc)", true),
			intParam("ipsec_server_port", 6100, 1, 65535, &m.serverPort, "first protected server port (port_ps)", true),
			intParam("ipsec_max_connections", 10, 1, 65535, &m.maxConn, "port pairs: port_pc/port_ps cycle through [port, port+n-1]; UEs share them (selectors carry the UE address)", true),
			intParam("ipsec_spi_id_start", 4096, 256, 1<<32-2, &m.spiStart, "first SPI of the P-CSCF's inbound SAs (>= 256: 1..255 are reserved)", true),
			intParam("ipsec_spi_id_range", 1000, 2, 1<<32-256, &m.spiRange, "SPIs in [start, start+range): range/2 UEs at once", true),
			strParam("ipsec_preferred_alg", &m.prefAlg, algCheck(knownAlgs, "ipsec_preferred_alg"), "alg to pick when offered (hmac-sha-1-96, hmac-md5-96); empty = the UE's first supported offer", false),
			strParam("ipsec_preferred_ealg", &m.prefEalg, algCheck(knownEalgs, "ipsec_preferred_ealg"), "ealg to pick when offered (null, aes-cbc, des-ede3-cbc); empty = the UE's first supported offer", false),
			intParam("ipsec_temporary_lifetime", 240, 1, 86400, &m.tempLifetime, "seconds a set created on a 401 lives without a 200 (reg-await-auth)", false),
			intParam("ipsec_rpc_show_keys", 0, 0, 1, &m.showKeys, "1 = ipsec.list/get also return CK and IK (lab debugging only)", false),
		},
		Funcs: []core.Func{
			{Name: "ipsec_create", Args: []core.ArgType{core.ArgStr, core.ArgInt}, Ret: core.RetInt, Routes: core.RouteTmReply | core.RouteReply,
				Doc: "(domain, flags) onreply route, on the 401 to a REGISTER: strip ck/ik from WWW-Authenticate, pick the mechanism from the REGISTER's Security-Client, allocate SPIs/ports, install 4 SAs + 4 policies, add Security-Server and Supported: sec-agree. flags 0x01: first remove expired sets. 1 ok, -1 error: nothing created, ck/ik still removed, no Security-Server added",
				Fn:  m.ipsecCreate},
			{Name: "ipsec_forward", Args: []core.ArgType{core.ArgStr, core.ArgInt}, Ret: core.RetInt, Routes: core.RouteRequest | core.RouteTmReply | core.RouteReply | core.RouteFailure | core.RouteBranch,
				Doc: "(domain, flags) send through the UE's protected ports (TS 33.203 §7): requests port_pc -> port_us ($du rewritten, ;transport=tcp for TCP), UDP replies port_pc -> port_us, TCP replies port_ps -> port_uc on the UE's connection; sets the forced send socket ($fs). A 200 to REGISTER moves the set to established (expires from the reply), Expires 0 marks it deleting. Kamailio's flags, all bits read: 0x04 look up by $du, 0x20 keep $du, 0x40 TCP requests port_ps -> port_uc, 0x100 UDP replies to the Via port when it is port_uc/port_us; 0x01/0x80/0x200 are always on, 0x02/0x08/0x10 no-ops. 1 ok, -1 no set for the UE",
				Fn:  m.ipsecForward},
			{Name: "ipsec_verify", Args: []core.ArgType{core.ArgStr}, Ret: core.RetInt, Routes: core.RouteRequest,
				Doc: "(domain) kamgo addition (Kamailio does not check): on the protected REGISTER, compare Security-Verify with the Security-Server sent to this UE (RFC 3329 §2.3.1); 1 match, -1 no SA set for the source, -2 Security-Verify missing or different: the set is removed (answer 494)",
				Fn:  m.ipsecVerify},
			{Name: "ipsec_destroy", Args: []core.ArgType{core.ArgStr, core.ArgStr}, MinArgs: 1, Ret: core.RetInt,
				Doc: "(domain[, aor]) as Kamailio's: without aor remove the SAs of the message's UE (request: source address; reply: the REGISTER's), with aor every SA set of that AoR or contact URI; releases the SPIs; 1 removed, -1 none",
				Fn:  m.ipsecDestroy},
			{Name: "ipsec_destroy_by_aor", Args: []core.ArgType{core.ArgStr, core.ArgStr}, Ret: core.RetInt,
				Doc: "(domain, aor) alias of ipsec_destroy(domain, aor); 1 removed, -1 none",
				Fn:  m.ipsecDestroyAoR},
			{Name: "ipsec_destroy_by_contact", Args: []core.ArgType{core.ArgStr, core.ArgStr, core.ArgStr, core.ArgStr}, Ret: core.RetInt,
				Doc: "(domain, aor, recv_host, recv_port) Kamailio 5.6+: remove the SA sets of the UE at recv_host whose AoR or contact URI is aor (URI params ignored; empty = any) and whose port_uc or port_us is recv_port (\"\" or \"0\" = any); strings as in Kamailio (e.g. from a failed NAT ping's $uac_req(ouri)); 1 removed, -1 none",
				Fn:  m.ipsecDestroyByContact},
		},
		RPC:    m.rpcMethods(),
		Events: []string{Name},
		Init:   m.init,
		Stop:   m.stop,
		OnRequest: func(msg *core.Msg) bool {
			if m.plaintext(msg) {
				return true
			}
			m.remember(msg)
			return false
		},
	}
	return m, core.ApplyDefaults(t)
}

func (m *mod) log() *slog.Logger {
	if m.env.Log != nil {
		return m.env.Log
	}
	return slog.Default()
}

// init builds the pool, probes the kernel and removes the SAs a previous
// run left in our range (never anyone else's).
func (m *mod) init() error {
	if !m.enabled() {
		return nil
	}
	cfg := PoolConfig{SPIStart: uint32(m.spiStart.Load()), SPIRange: uint32(m.spiRange.Load()),
		ClientPort: uint16(m.clientPort.Load()), ServerPort: uint16(m.serverPort.Load()), MaxConnections: int(m.maxConn.Load())}
	pool, err := NewPool(cfg)
	if err != nil {
		return err
	}
	rng := SPIRange{Start: cfg.SPIStart, Len: cfg.SPIRange, Local: net.ParseIP(m.str(&m.listenAddr)),
		ClientPort: cfg.ClientPort, ServerPort: cfg.ServerPort, Ports: cfg.MaxConnections}
	if err := m.kernel.Probe(rng); err != nil {
		return err
	}
	if n, err := m.kernel.RemoveOwned(rng); err != nil {
		return fmt.Errorf("removing stale SAs: %w", err)
	} else if n > 0 {
		m.log().Info("ims_ipsec_pcscf: removed SAs left by a previous run", "states", n)
	}
	m.mu.Lock()
	m.pool, m.rng = pool, rng
	m.mu.Unlock()
	return nil
}

// stop removes every set this run created.
func (m *mod) stop() {
	m.mu.Lock()
	sets := make([]*ueSet, 0, len(m.sets))
	for _, s := range m.sets {
		sets = append(sets, s)
	}
	m.mu.Unlock()
	for _, s := range sets {
		m.destroy(s, "shutdown")
	}
}

func pendingKey(msg sip.Message) string {
	cid, cseq := core.FirstHeader(msg, "Call-ID"), core.FirstHeader(msg, "CSeq")
	if cid == nil || cseq == nil {
		return ""
	}
	return cid.Value() + "\x00" + strings.TrimSpace(cseq.Value())
}

// uriOf returns the URI of a name-addr or addr-spec header value.
func uriOf(v string) string {
	if i := strings.IndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			return v[i+1 : i+j]
		}
	}
	if i := strings.IndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	return strings.TrimSpace(v)
}

// remember keeps a REGISTER's Security-Client and source for its 401.
func (m *mod) remember(msg *core.Msg) {
	if !m.enabled() || msg.Req == nil || msg.Req.Method != sip.REGISTER {
		return
	}
	var vals []string
	for _, h := range core.FindHeaders(msg.Req, "Security-Client") {
		vals = append(vals, h.Value())
	}
	if len(vals) == 0 {
		return
	}
	client, err := ParseSecurity(vals...)
	if err != nil {
		m.log().Info("ims_ipsec_pcscf: bad Security-Client", "err", err, "src", msg.SrcIP)
		return
	}
	key := pendingKey(msg.Req)
	if key == "" {
		return
	}
	p := pending{client: client, srcIP: msg.SrcIP, srcPort: msg.SrcPort, proto: msg.Proto, at: m.env.Clock.Now()}
	if h := core.FirstHeader(msg.Req, "To"); h != nil {
		p.aor = uriOf(h.Value())
	}
	if h := core.FirstHeader(msg.Req, "Contact"); h != nil {
		p.contact = uriOf(h.Value())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// REGISTERs answered without a 401 are never taken: sweep now and then.
	if n := len(m.pending); n >= pendingMax || n > 0 && n%1024 == 0 {
		m.gcPending(p.at)
		if len(m.pending) >= pendingMax {
			m.log().Warn("ims_ipsec_pcscf: too many REGISTERs awaiting a 401; dropping this one's Security-Client")
			return
		}
	}
	m.pending[key] = p
}

func (m *mod) gcPending(now time.Time) {
	for k, p := range m.pending {
		if now.Sub(p.at) > pendingTTL {
			delete(m.pending, k)
		}
	}
}

func (m *mod) takePending(msg sip.Message) (pending, bool) {
	key := pendingKey(msg)
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.pending[key]
	if ok {
		delete(m.pending, key)
	}
	return p, ok && m.env.Clock.Now().Sub(p.at) <= pendingTTL
}

// stripAuth removes ck/ik from every WWW-Authenticate and returns the
// keys of the first header that had them. A header that has ck or ik but
// cannot be parsed is dropped whole: the keys must never reach the UE.
func stripAuth(res *sip.Response) (ck, ik []byte, err error) {
	hs := core.Headers(res)
	out := make([]sip.Header, 0, len(hs))
	changed := false
	for _, h := range hs {
		if !core.HeaderIs(h, "www-authenticate") {
			out = append(out, h)
			continue
		}
		rest, c, i, e := StripCKIK(h.Value())
		switch {
		case e == nil:
			if ck == nil {
				ck, ik = c, i
			}
			out = append(out, sip.NewHeader("WWW-Authenticate", rest))
			changed = true
		case mentionsKey(h.Value()):
			changed = true
			if err == nil {
				err = e
			}
		default:
			out = append(out, h)
			if err == nil {
				err = e
			}
		}
	}
	if changed {
		core.SetHeaders(res, out)
	}
	if ck != nil {
		return ck, ik, nil
	}
	if err == nil {
		err = errors.New("no WWW-Authenticate")
	}
	return nil, nil, err
}

func mentionsKey(v string) bool {
	l := strings.ToLower(v)
	return strings.Contains(l, "ck=") || strings.Contains(l, "ik=")
}

func cseqMethod(msg sip.Message) string {
	h := core.FirstHeader(msg, "CSeq")
	if h == nil {
		return ""
	}
	f := strings.Fields(h.Value())
	if len(f) != 2 {
		return ""
	}
	return strings.ToUpper(f[1])
}

func (m *mod) ipsecCreate(msg *core.Msg, a []core.Val) (core.Val, error) {
	if msg.Res == nil {
		return core.Int(-1), errors.New("ipsec_create: not a reply")
	}
	// refuse: once the REGISTER offered sec-agree, a 401 without a
	// Security-Server is useless to the UE (it cannot protect its next
	// REGISTER): it gets a 500 instead (the 5xx Kamailio's sample script
	// answers), and tm relays that.
	refuse := false
	fail := func(why string, err error) (core.Val, error) {
		m.log().Warn("ims_ipsec_pcscf: ipsec_create failed", "why", why, "err", err, "refused", refuse, "at", msg.Pos())
		if refuse {
			msg.Res.StatusCode, msg.Res.Reason = 500, "Server Internal Error"
			msg.Res.RemoveHeader("WWW-Authenticate")
			msg.Res.AppendHeader(sip.NewHeader("Warning", `399 pcscf "IPsec security association could not be set up"`))
		}
		return core.Int(-1), nil
	}
	// The keys go first, whatever else fails: ck/ik never reach the UE.
	ck, ik, kerr := stripAuth(msg.Res)
	if !m.enabled() {
		return fail("module disabled (ipsec_listen_addr not set)", nil)
	}
	if msg.Res.StatusCode != 401 || cseqMethod(msg.Res) != "REGISTER" {
		return fail("not a 401 to a REGISTER", nil)
	}
	pend, ok := m.takePending(msg.Res)
	if !ok {
		return fail("no Security-Client seen for this REGISTER", nil)
	}
	refuse = true
	if kerr != nil {
		return fail("no usable ck/ik", kerr)
	}
	mech, err := Choose(pend.client, m.str(&m.prefAlg), m.str(&m.prefEalg))
	if err != nil {
		return fail("mechanism", err)
	}
	keys, err := DeriveKeys(mech.Alg, mech.Ealg, ik, ck)
	if err != nil {
		return fail("keys", err)
	}
	ueIP := net.ParseIP(pend.srcIP)
	if ueIP == nil {
		return fail("UE address", fmt.Errorf("bad source address %q", pend.srcIP))
	}
	if a[1].Int&1 != 0 {
		m.expireDue()
	}
	m.mu.Lock()
	pool, rng := m.pool, m.rng
	m.mu.Unlock()
	if pool == nil {
		return fail("not initialised", nil)
	}
	id := fmt.Sprintf("%s:%d", ueIP, mech.PortC)
	m.mu.Lock()
	old := m.sets[id]
	m.mu.Unlock()
	if old != nil {
		// Same UE address and client port: the UE started over; its old
		// set would clash with the new one's selectors.
		m.destroy(old, "replaced")
	}
	pair, err := m.acquireFor(pool, ueIP, mech.PortS)
	if err != nil {
		return fail("allocation", err)
	}
	ue := Endpoint{IP: ueIP, PortC: mech.PortC, PortS: mech.PortS, SpiC: mech.SpiC, SpiS: mech.SpiS}
	p := Endpoint{IP: rng.Local, PortC: pair.PortPC, PortS: pair.PortPS, SpiC: pair.SpiPC, SpiS: pair.SpiPS}
	set, err := BuildSASet(ue, p, keys)
	if err == nil {
		set.HardLifetime = uint64(m.tempLifetime.Load()) + 60
		err = m.kernel.Install(set)
	}
	if err != nil {
		pool.Release(pair)
		return fail("kernel", err)
	}
	if err := m.openSockets(pair); err != nil {
		if rerr := m.kernel.Remove(set); rerr != nil {
			m.log().Error("ims_ipsec_pcscf: removing SAs failed", "ue", id, "err", rerr)
		}
		pool.Release(pair)
		return fail("protected sockets", err)
	}
	server := Mechanism{Name: "ipsec-3gpp", Q: 100, Prot: "esp", Mod: "trans", SpiC: pair.SpiPC, SpiS: pair.SpiPS,
		PortC: pair.PortPC, PortS: pair.PortPS, Alg: mech.Alg, Ealg: mech.Ealg}
	now := m.env.Clock.Now()
	s := &ueSet{server: server, id: id, domain: a[0].Str, aor: pend.aor, contact: pend.contact,
		callID: strings.SplitN(pendingKey(msg.Res), "\x00", 2)[0], ue: ue, p: p, alg: mech.Alg, ealg: mech.Ealg,
		state: StateTemporary, created: now, pair: pair, set: set, ck: ck, ik: ik}
	m.mu.Lock()
	m.seq++
	s.seq = m.seq
	m.sets[s.id] = s
	m.armLocked(s, time.Duration(m.tempLifetime.Load())*time.Second)
	m.mu.Unlock()

	msg.Res.AppendHeader(sip.NewHeader("Security-Server", server.String()))
	addOptionTag(msg.Res, "Supported", "sec-agree")
	m.emit("created", s)
	return core.Int(1), nil
}

// acquireFor takes a pair whose port_pc no other set of this UE with the
// same port_us uses: ports repeat every ipsec_max_connections pairs, and
// during re-authentication the UE keeps port_us, so the same port_pc would
// give SAs C and D selectors the kernel already has. (port_uc differs, or
// the old set was replaced, so A and B cannot clash.) Skipped pairs go
// back to the pool.
func (m *mod) acquireFor(pool *Pool, ueIP net.IP, portUS uint16) (Pair, error) {
	var skipped []Pair
	defer func() {
		for _, p := range skipped {
			pool.Release(p)
		}
	}()
	for {
		pr, err := pool.Acquire()
		if err != nil {
			return Pair{}, err
		}
		clash := false
		m.mu.Lock()
		for _, s := range m.sets {
			if s.ue.IP.Equal(ueIP) && s.ue.PortS == portUS && s.p.PortC == pr.PortPC {
				clash = true
			}
		}
		m.mu.Unlock()
		if !clash {
			return pr, nil
		}
		skipped = append(skipped, pr)
	}
}

// armLocked (re)starts the set's expiry timer.
func (m *mod) armLocked(s *ueSet, d time.Duration) {
	if s.timer != nil {
		s.timer.Stop()
	}
	s.expires = m.env.Clock.Now().Add(d)
	s.timer = m.env.Clock.AfterFunc(d, func() { m.destroy(s, "expired") })
}

// expireDue removes sets past their expiry (ipsec_create flag 0x01).
func (m *mod) expireDue() {
	now := m.env.Clock.Now()
	var due []*ueSet
	m.mu.Lock()
	for _, s := range m.sets {
		if !now.Before(s.expires) {
			due = append(due, s)
		}
	}
	m.mu.Unlock()
	for _, s := range due {
		m.destroy(s, "expired")
	}
}

// destroy removes a set from the kernel and the registry and releases its
// pair. A kernel failure keeps the record (state deleting) so ipsec.audit
// and a retry can see it.
func (m *mod) destroy(s *ueSet, reason string) bool {
	m.mu.Lock()
	if m.sets[s.id] != s {
		m.mu.Unlock()
		return false
	}
	s.state = StateDeleting
	if s.timer != nil {
		s.timer.Stop()
	}
	pool := m.pool
	m.mu.Unlock()
	if err := m.kernel.Remove(s.set); err != nil {
		m.log().Error("ims_ipsec_pcscf: removing SAs failed", "ue", s.id, "err", err)
		return false
	}
	m.mu.Lock()
	if m.sets[s.id] == s {
		delete(m.sets, s.id)
	}
	m.mu.Unlock()
	if pool != nil {
		pool.Release(s.pair)
	}
	m.closeSockets(s.pair)
	m.emit("removed", s, "reason", reason)
	return true
}

func (m *mod) emit(event string, s *ueSet, kv ...string) {
	d := map[string]any{"event": event, "ue": s.id, "aor": s.aor, "spi_pc": s.p.SpiC, "spi_ps": s.p.SpiS,
		"spi_uc": s.ue.SpiC, "spi_us": s.ue.SpiS, "alg": s.alg, "ealg": s.ealg}
	for i := 0; i+1 < len(kv); i += 2 {
		d[kv[i]] = kv[i+1]
	}
	m.env.Emit(Name, d)
}

// findForMsg finds the set of the UE a message concerns: a request by its
// source (address and port_uc, else any set of that address), a reply by
// the Call-ID of the REGISTER that created it.
func (m *mod) findForMsg(msg *core.Msg) *ueSet {
	m.mu.Lock()
	defer m.mu.Unlock()
	if msg.Req != nil {
		if s := m.sets[fmt.Sprintf("%s:%d", msg.SrcIP, msg.SrcPort)]; s != nil {
			return s
		}
		for _, s := range m.sets {
			if s.ue.IP.String() == msg.SrcIP {
				return s
			}
		}
		return nil
	}
	cid := core.FirstHeader(msg.Res, "Call-ID")
	if cid == nil {
		return nil
	}
	var best *ueSet
	for _, s := range m.sets {
		if s.callID == cid.Value() && (best == nil || s.seq > best.seq) {
			best = s
		}
	}
	return best
}

// regExpiry reads the granted expiry of a 200 to REGISTER: the first
// Contact's expires param, else Expires, else 3600.
func regExpiry(res *sip.Response) int {
	if h := core.FirstHeader(res, "Contact"); h != nil {
		for _, p := range strings.Split(h.Value(), ";")[1:] {
			n, v, _ := strings.Cut(strings.TrimSpace(p), "=")
			if strings.EqualFold(n, "expires") {
				if e, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && e >= 0 {
					return e
				}
			}
		}
	}
	if h := core.FirstHeader(res, "Expires"); h != nil {
		if e, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil && e >= 0 {
			return e
		}
	}
	return 3600
}

func (m *mod) ipsecForward(msg *core.Msg, a []core.Val) (core.Val, error) {
	if !m.enabled() {
		return core.Int(-1), nil
	}
	flags := a[1].Int
	s := m.findForForward(msg, flags)
	if s == nil {
		return core.Int(-1), nil
	}
	if msg.Res != nil && msg.Res.StatusCode >= 200 && msg.Res.StatusCode < 300 && cseqMethod(msg.Res) == "REGISTER" {
		exp := regExpiry(msg.Res)
		m.mu.Lock()
		if exp == 0 {
			// De-registration: the 200 must still leave through the SAs,
			// so removal waits a moment (Kamailio's delete_delay).
			s.state = StateDeleting
			m.armLocked(s, 5*time.Second)
		} else {
			s.state = StateEstablished
			// SA lifetime = registration expiry + 30 s (TS 33.203 §7.4).
			m.armLocked(s, time.Duration(exp+30)*time.Second)
		}
		m.mu.Unlock()
		// The kernel's hard lifetime follows, with a margin so kamd's own
		// removal (which also frees the SPIs) normally comes first.
		if err := m.kernel.SetLifetime(s.set, uint64(exp)+30+60); err != nil {
			m.log().Warn("ims_ipsec_pcscf: cannot update the SA lifetime", "ue", s.id, "err", err)
		}
		if exp != 0 {
			m.dropOtherSets(s)
			m.emit("established", s)
		}
		// As Kamailio, both tags on the 200; once only, so a second
		// ipsec_forward on the same reply adds nothing.
		addOptionTag(msg.Res, "Supported", "sec-agree")
		addOptionTag(msg.Res, "Require", "sec-agree")
	}
	if err := m.route(msg, s, flags); err != nil {
		m.log().Warn("ims_ipsec_pcscf: ipsec_forward: "+err.Error(), "ue", s.id, "at", msg.Pos())
		return core.Int(-1), nil
	}
	return core.Int(1), nil
}

// addOptionTag adds "name: tag" unless a name header already lists tag.
func addOptionTag(res *sip.Response, name, tag string) {
	for _, h := range core.FindHeaders(res, name) {
		for _, t := range strings.Split(h.Value(), ",") {
			if strings.EqualFold(strings.TrimSpace(t), tag) {
				return
			}
		}
	}
	res.AppendHeader(sip.NewHeader(name, tag))
}

// dropOtherSets removes the UE's older sets once a new one is established
// (re-authentication with new keys).
func (m *mod) dropOtherSets(keep *ueSet) {
	var old []*ueSet
	m.mu.Lock()
	for _, s := range m.sets {
		if s != keep && s.ue.IP.Equal(keep.ue.IP) && s.aor == keep.aor {
			old = append(old, s)
		}
	}
	m.mu.Unlock()
	for _, s := range old {
		m.destroy(s, "replaced")
	}
}

func (m *mod) ipsecVerify(msg *core.Msg, a []core.Val) (core.Val, error) {
	if msg.Req == nil {
		return core.Null, core.ErrNoRequest
	}
	if !m.enabled() {
		return core.Int(-1), nil
	}
	m.mu.Lock()
	s := m.sets[fmt.Sprintf("%s:%d", msg.SrcIP, msg.SrcPort)]
	m.mu.Unlock()
	if s == nil {
		return core.Int(-1), nil
	}
	var vals []string
	for _, h := range core.FindHeaders(msg.Req, "Security-Verify") {
		vals = append(vals, h.Value())
	}
	var err error
	if len(vals) == 0 {
		err = errors.New("no Security-Verify")
	} else if ms, perr := ParseSecurity(vals...); perr != nil {
		err = perr
	} else {
		found := false
		for i := range ms {
			if ms[i].IsIPsec3GPP() && ms[i].SameSA(&s.server) {
				found = true
			}
		}
		if !found || len(ms) != 1 {
			err = fmt.Errorf("Security-Verify %q differs from the Security-Server sent %q", strings.Join(vals, ", "), s.server.String())
		}
	}
	if err != nil {
		m.log().Warn("ims_ipsec_pcscf: Security-Verify check failed; removing the SA set", "ue", s.id, "err", err, "at", msg.Pos())
		m.destroy(s, "verify-mismatch")
		return core.Int(-2), nil
	}
	return core.Int(1), nil
}

func (m *mod) ipsecDestroy(msg *core.Msg, a []core.Val) (core.Val, error) {
	if len(a) > 1 {
		return m.ipsecDestroyAoR(msg, a)
	}
	if s := m.findForMsg(msg); s != nil && m.destroy(s, "script") {
		return core.Int(1), nil
	}
	return core.Int(-1), nil
}

func (m *mod) ipsecDestroyAoR(msg *core.Msg, a []core.Val) (core.Val, error) {
	if n := m.destroyMatching(a[1].Str, "script"); n > 0 {
		return core.Int(1), nil
	}
	return core.Int(-1), nil
}

func (m *mod) ipsecDestroyByContact(msg *core.Msg, a []core.Val) (core.Val, error) {
	uri, host, port := uriOf(a[1].Str), strings.Trim(a[2].Str, "[]"), strings.TrimSpace(a[3].Str)
	want := 0
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 0 || n > 65535 {
			return core.Null, fmt.Errorf("ipsec_destroy_by_contact: recv_port %q is not a port", a[3].Str)
		}
		want = n
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return core.Null, fmt.Errorf("ipsec_destroy_by_contact: recv_host %q is not an IP address", a[2].Str)
	}
	m.mu.Lock()
	var hit []*ueSet
	for _, s := range m.sets {
		if !s.ue.IP.Equal(ip) || want != 0 && want != int(s.ue.PortC) && want != int(s.ue.PortS) {
			continue
		}
		if uri != "" && uri != s.aor && uri != uriOf(s.contact) {
			continue
		}
		hit = append(hit, s)
	}
	m.mu.Unlock()
	n := 0
	for _, s := range hit {
		if m.destroy(s, "script") {
			n++
		}
	}
	if n > 0 {
		return core.Int(1), nil
	}
	return core.Int(-1), nil
}

// match selects sets by AoR, UE address, or UE address:port_uc.
func (m *mod) match(key string) []*ueSet {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*ueSet
	for _, s := range m.sets {
		if s.aor == key || s.contact == key || s.id == key || s.ue.IP.String() == key {
			out = append(out, s)
		}
	}
	return out
}

func (m *mod) destroyMatching(key, reason string) int {
	n := 0
	for _, s := range m.match(key) {
		if m.destroy(s, reason) {
			n++
		}
	}
	return n
}

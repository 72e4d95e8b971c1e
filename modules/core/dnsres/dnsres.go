// Package dnsres resolves SIP next hops named by host as RFC 3263 says:
// NAPTR (when neither transport nor port is given), SRV (priority, then
// weight), then A (AAAA when there is no A). Answers are cached for their
// TTL. tm uses it for relayed requests and fails over to the next target
// on a 503 or a timeout within the transaction.
package dnsres

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kamgo/kamgo/modules/core"
)

// EnvServer names the environment variable that points kamd at a DNS
// server ("127.0.0.1:5353"); unset, the first nameserver of
// /etc/resolv.conf is used.
const EnvServer = "KAMGO_DNS_SERVER"

// Resolver is a caching stub resolver.
type Resolver struct {
	// Server is "ip:port" of the recursive server to ask.
	Server  string
	Timeout time.Duration
	// TryNAPTR: ask NAPTR first when neither transport nor port is given.
	TryNAPTR bool
	Now      func() time.Time

	mu    sync.Mutex
	cache map[string]cacheEntry
	// downUntil: the server did not answer; until then lookups fail at
	// once instead of stalling every request for the timeout again.
	downUntil time.Time
}

// DownFor is how long an unanswering server is not asked again.
const DownFor = 30 * time.Second

type cacheEntry struct {
	msg     *Msg
	expires time.Time
}

// New returns a resolver asking server ("" : $KAMGO_DNS_SERVER, else
// /etc/resolv.conf's first nameserver, else 127.0.0.1:53).
func New(server string) *Resolver {
	if server == "" {
		server = os.Getenv(EnvServer)
	}
	if server == "" {
		server = systemServer()
	}
	if _, _, err := net.SplitHostPort(server); err != nil {
		server = net.JoinHostPort(server, "53")
	}
	return &Resolver{Server: server, Timeout: time.Second, TryNAPTR: true, Now: time.Now, cache: map[string]cacheEntry{}}
}

func systemServer() string {
	f, err := os.Open("/etc/resolv.conf")
	if err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) >= 2 && fs[0] == "nameserver" {
				return fs[1]
			}
		}
	}
	return "127.0.0.1"
}

var resolvers core.PerEnv[*Resolver]

// Use makes r the resolver of env's next hops (kamd wires one; route
// tests do not, so their next hops stay as written).
func Use(env *core.Env, r *Resolver) { resolvers.Set(env, r) }

// For returns env's resolver, nil when none is wired.
func For(env *core.Env) *Resolver { return resolvers.Of(env) }

// ErrNoTargets is returned when a name has no usable address.
var ErrNoTargets = errors.New("dns: no targets")

// ErrServerDown is returned while an unanswering server is left alone.
var ErrServerDown = errors.New("dns: server down")

// Lookup asks for name/qtype, from the cache while its TTL lasts.
func (r *Resolver) Lookup(name string, qtype uint16) (*Msg, error) {
	key := strings.ToLower(strings.TrimSuffix(name, ".")) + "|" + strconv.Itoa(int(qtype))
	now := r.Now()
	r.mu.Lock()
	if e, ok := r.cache[key]; ok && now.Before(e.expires) {
		r.mu.Unlock()
		return e.msg, nil
	}
	if now.Before(r.downUntil) {
		r.mu.Unlock()
		return nil, fmt.Errorf("%w (%s did not answer; not asked again before %s)", ErrServerDown, r.Server, r.downUntil.Format(time.TimeOnly))
	}
	r.mu.Unlock()
	m, err := r.exchange(name, qtype)
	if err != nil {
		r.mu.Lock()
		r.downUntil = now.Add(DownFor)
		r.mu.Unlock()
		return nil, err
	}
	if m.Rcode != RcodeOK && m.Rcode != RcodeNXDomain {
		return nil, fmt.Errorf("dns: %s type %d: rcode %d", name, qtype, m.Rcode)
	}
	ttl := uint32(0)
	have := false
	for _, rr := range m.Answers {
		if !have || rr.TTL < ttl {
			ttl, have = rr.TTL, true
		}
	}
	if !have { // negative answer: the SOA minimum (RFC 2308), at most 5 min
		ttl = 60
		for _, rr := range m.Authority {
			if rr.Type == TypeSOA {
				ttl = min(rr.Minimum, rr.TTL)
			}
		}
		ttl = min(ttl, 300)
	}
	r.mu.Lock()
	if len(r.cache) > 10000 {
		for k, e := range r.cache {
			if now.After(e.expires) {
				delete(r.cache, k)
			}
		}
	}
	r.cache[key] = cacheEntry{msg: m, expires: now.Add(time.Duration(ttl) * time.Second)}
	r.mu.Unlock()
	return m, nil
}

// exchange sends one query over UDP (TCP when the answer is truncated).
func (r *Resolver) exchange(name string, qtype uint16) (*Msg, error) {
	id := uint16(rand.Uint32())
	q, err := Query(id, name, qtype)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 2; attempt++ {
		m, err := r.udp(q, id)
		if err == nil && m.Truncated {
			m, err = r.tcp(q, id)
		}
		if err == nil {
			return m, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("dns: %s type %d via %s: %w", name, qtype, r.Server, lastErr)
}

func (r *Resolver) udp(q []byte, id uint16) (*Msg, error) {
	c, err := net.Dial("udp", r.Server)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(r.Timeout))
	if _, err := c.Write(q); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		m, err := Parse(buf[:n])
		if err != nil || m.ID != id || !m.Response {
			continue // not our answer: keep waiting until the deadline
		}
		return m, nil
	}
}

func (r *Resolver) tcp(q []byte, id uint16) (*Msg, error) {
	c, err := net.DialTimeout("tcp", r.Server, r.Timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(r.Timeout))
	if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)); err != nil {
		return nil, err
	}
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return nil, err
	}
	buf := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(c, buf); err != nil {
		return nil, err
	}
	m, err := Parse(buf)
	if err != nil {
		return nil, err
	}
	if m.ID != id {
		return nil, errors.New("dns: answer id mismatch")
	}
	return m, nil
}

// naptrServices maps RFC 3263 NAPTR services to transports.
var naptrServices = map[string]string{"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls", "SIP+D2W": "ws", "SIPS+D2W": "wss"}

// srvPrefix is the SRV name of a transport (RFC 3263 4.2, RFC 7118).
func srvPrefix(proto string) string {
	switch proto {
	case "tcp":
		return "_sip._tcp."
	case "tls":
		return "_sips._tcp."
	case "ws":
		return "_sip._ws."
	case "wss":
		return "_sips._ws."
	}
	return "_sip._udp."
}

// Resolve turns host (with port 0 for "none given" and proto "" for "no
// transport parameter") into the ordered targets to try: an IP literal
// as is; with a port, its A records; else SRV (after NAPTR when no
// transport is given), ordered by priority and weight, each SRV target's
// A records in turn; else A records on the transport's default port.
func (r *Resolver) Resolve(host string, port int, proto string) ([]core.Target, error) {
	host = core.BareHost(host)
	if ip := net.ParseIP(host); ip != nil {
		return []core.Target{fill(proto, host, port)}, nil
	}
	if port != 0 {
		return r.addrs(proto, host, port)
	}
	if proto == "" && r.TryNAPTR {
		if ts := r.naptr(host); len(ts) > 0 {
			return ts, nil
		}
	}
	if r.down() {
		return nil, fmt.Errorf("%w: %s", ErrServerDown, r.Server)
	}
	protos := []string{proto}
	if proto == "" {
		protos = []string{"udp", "tcp", "tls"}
	}
	for _, p := range protos {
		if ts := r.srv(srvPrefix(p)+host, p); len(ts) > 0 {
			return ts, nil
		}
		if r.down() {
			return nil, fmt.Errorf("%w: %s", ErrServerDown, r.Server)
		}
	}
	return r.addrs(proto, host, 0)
}

func (r *Resolver) down() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.Now().Before(r.downUntil)
}

func fill(proto, host string, port int) core.Target {
	if proto == "" {
		proto = "udp"
	}
	if port == 0 {
		port = core.DefaultPort(proto)
	}
	return core.Target{Proto: proto, Host: host, Port: port}
}

// addrs is the A records of host (AAAA when there is none).
func (r *Resolver) addrs(proto, host string, port int) ([]core.Target, error) {
	var out []core.Target
	var firstErr error
	for _, t := range []uint16{TypeA, TypeAAAA} {
		m, err := r.Lookup(host, t)
		if err != nil {
			firstErr = cmpErr(firstErr, err)
			if errors.Is(err, ErrServerDown) || r.down() {
				break
			}
			continue
		}
		for _, rr := range m.Answers {
			if rr.Type == t && rr.IP != nil {
				out = append(out, fill(proto, rr.IP.String(), port))
			}
		}
		if len(out) > 0 {
			return out, nil
		}
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return nil, fmt.Errorf("%w for %s", ErrNoTargets, host)
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func (r *Resolver) naptr(host string) []core.Target {
	m, err := r.Lookup(host, TypeNAPTR)
	if err != nil {
		return nil
	}
	var recs []RR
	for _, rr := range m.Answers {
		if rr.Type == TypeNAPTR && strings.EqualFold(rr.Flags, "s") && naptrServices[strings.ToUpper(rr.Service)] != "" && rr.Replace != "" {
			recs = append(recs, rr)
		}
	}
	sort.SliceStable(recs, func(i, j int) bool {
		if recs[i].Order != recs[j].Order {
			return recs[i].Order < recs[j].Order
		}
		return recs[i].Preference < recs[j].Preference
	})
	for _, rr := range recs {
		if ts := r.srv(rr.Replace, naptrServices[strings.ToUpper(rr.Service)]); len(ts) > 0 {
			return ts
		}
	}
	return nil
}

// srv resolves an SRV name into targets: priority ascending, weighted
// random order within a priority (RFC 2782), each target's addresses.
func (r *Resolver) srv(name, proto string) []core.Target {
	m, err := r.Lookup(name, TypeSRV)
	if err != nil {
		return nil
	}
	var recs []RR
	for _, rr := range m.Answers {
		if rr.Type == TypeSRV && rr.Target != "" && rr.Target != "." {
			recs = append(recs, rr)
		}
	}
	var out []core.Target
	for _, rr := range OrderSRV(recs) {
		ts, err := r.addrs(proto, rr.Target, int(rr.Port))
		if err == nil {
			out = append(out, ts...)
		}
	}
	return out
}

// OrderSRV sorts SRV records by priority and, within one, by RFC 2782's
// weighted random selection.
func OrderSRV(recs []RR) []RR {
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].Priority < recs[j].Priority })
	out := make([]RR, 0, len(recs))
	for i := 0; i < len(recs); {
		j := i
		for j < len(recs) && recs[j].Priority == recs[i].Priority {
			j++
		}
		group := append([]RR(nil), recs[i:j]...)
		// Zero weights first, as RFC 2782 places them, so they get a small chance.
		sort.SliceStable(group, func(a, b int) bool { return group[a].Weight == 0 && group[b].Weight != 0 })
		for len(group) > 0 {
			total := 0
			for _, g := range group {
				total += int(g.Weight)
			}
			pick := 0
			if total > 0 {
				n := rand.IntN(total + 1)
				sum := 0
				for k, g := range group {
					sum += int(g.Weight)
					if sum >= n {
						pick = k
						break
					}
				}
			}
			out = append(out, group[pick])
			group = append(group[:pick], group[pick+1:]...)
		}
		i = j
	}
	return out
}

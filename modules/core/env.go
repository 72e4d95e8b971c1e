package core

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
)

// OutKind says why a message leaves kamd; route tests record it.
type OutKind uint8

const (
	OutReply        OutKind = iota // a locally generated reply (sl, tm)
	OutForward                     // a stateless forward of a request (forward())
	OutRelayedReply                // a received reply passed on (stateless or tm)
	OutBranch                      // a request sent by a tm transaction branch
	OutLocalRequest                // a request kamd originates (uac, tm CANCEL/ACK)
)

func (k OutKind) String() string {
	return [...]string{"reply", "forward", "relayed_reply", "branch", "local_request"}[k]
}

// Target is where a message goes: proto is udp, tcp, tls, ws or wss.
type Target struct {
	Proto string
	Host  string
	Port  int
}

// Host may be an IPv6 reference ("[::1]", from a URI) or bare ("::1"):
// both render as one bracketed address.
func (t Target) String() string {
	return t.Proto + ":" + net.JoinHostPort(BareHost(t.Host), strconv.Itoa(t.Port))
}

// URI renders the target as a SIP URI, as route tests show it.
func (t Target) URI() string {
	s := "sip:" + net.JoinHostPort(BareHost(t.Host), strconv.Itoa(t.Port))
	if t.Proto != "" && t.Proto != "udp" {
		s += ";transport=" + t.Proto
	}
	return s
}

// Outgoing is one message handed to the Sender.
type Outgoing struct {
	Kind OutKind
	Msg  sip.Message
	Dst  Target
	// ConnID names the connection a reply should use on reliable transports
	// (the one its request came on); empty means "open or reuse by Dst".
	ConnID string
	// Branch is the tm branch index for OutBranch.
	Branch int
	// LocalSocket, when set, is the local socket the message leaves from:
	// over UDP the datagram is sent on that socket, over TCP/TLS a
	// connection from that address and port is used or dialled (a ConnID
	// whose connection is on another local socket is then not used). It
	// must be one of Env.Sockets(). nil: the transport picks as always (the
	// first socket of the address family, any connection). A pointer keeps
	// Outgoing, allocated per message, in its size class.
	LocalSocket *Socket
	// Arrival is the socket a UDP reply's request arrived on: with no
	// LocalSocket the reply leaves from it while it is open (as Kamailio
	// answers from the receiving socket), else as always.
	Arrival *Socket
}

// Sender is the one door through which every effect leaves kamd. The
// transport implements it; route tests replace it with a recorder.
type Sender interface {
	Send(o *Outgoing) error
}

// Socket is a local listening socket.
type Socket struct {
	Proto string
	IP    string
	Port  int
	// Advertise overrides the host written into Via and Record-Route.
	Advertise string
}

// SocketManager opens and closes listening sockets while kamd runs (the
// transport implements it; route tests get one that only lists them).
// An opened socket is a listener like those of listen(): what arrives on
// it goes through the same door checks, script and workers, and it is in
// Env.Sockets() until it is closed.
type SocketManager interface {
	// OpenSocket binds s (udp, tcp or tls on IP and Port; Port 0 picks a
	// free port) and returns it as bound. TCP/TLS sockets are bound with
	// SO_REUSEADDR and SO_REUSEPORT, so a connection can also be dialled
	// from their port (Outgoing.LocalSocket), as a P-CSCF's protected
	// client port both listens and dials.
	OpenSocket(ctx context.Context, s Socket) (Socket, error)
	// CloseSocket closes a socket OpenSocket opened, and its TCP
	// connections (accepted on it or dialled from it). Its reader stops at
	// its next read; other sockets are not affected. Sockets of listen()
	// cannot be closed.
	CloseSocket(s Socket) error
}

func (s Socket) String() string {
	return s.Proto + ":" + net.JoinHostPort(s.IP, strconv.Itoa(s.Port))
}

// Host is the address written into our Via and Record-Route: an IPv6
// address in brackets (sipgo writes v4-mapped and zoned ones bare).
func (s Socket) Host() string {
	if s.Advertise != "" {
		return HostRef(s.Advertise)
	}
	return HostRef(s.IP)
}

// ParseSocket parses Kamailio's "proto:addr:port" listen syntax.
func ParseSocket(spec string) (Socket, error) {
	parts := strings.SplitN(spec, ":", 2)
	if len(parts) != 2 {
		return Socket{}, fmt.Errorf("listen %q: want proto:addr:port", spec)
	}
	proto := strings.ToLower(parts[0])
	switch proto {
	case "udp", "tcp", "tls", "ws", "wss":
	default:
		return Socket{}, fmt.Errorf("listen %q: unknown protocol %q (udp, tcp, tls, ws, wss)", spec, parts[0])
	}
	host, port, err := net.SplitHostPort(parts[1])
	if err != nil {
		// Kamailio allows "udp:1.2.3.4" with the default port.
		host, port = parts[1], strconv.Itoa(DefaultPort(proto))
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return Socket{}, fmt.Errorf("listen %q: bad port %q", spec, port)
	}
	if net.ParseIP(strings.Trim(host, "[]")) == nil {
		return Socket{}, fmt.Errorf("listen %q: %q is not an IP address", spec, host)
	}
	return Socket{Proto: proto, IP: strings.Trim(host, "[]"), Port: p}, nil
}

// Router runs script callbacks; the Starlark engine implements it. Prog is
// the script version a transaction is pinned to (opaque to modules).
type Router interface {
	Current() any
	Run(prog any, callback string, rt RouteType, m *Msg) error
	// HasCallback reports whether prog defines the named callback.
	HasCallback(prog any, callback string) bool
}

// Clock is injectable so route tests can fix time.
type Clock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is what Clock.AfterFunc returns.
type Timer interface{ Stop() bool }

type realClock struct{}

func (realClock) Now() time.Time                            { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// RealClock is the wall clock.
var RealClock Clock = realClock{}

// IsRealClock reports whether c is the wall clock (not a route test's
// fixed clock, whose timers fire synchronously inside Advance).
func IsRealClock(c Clock) bool {
	switch c.(type) {
	case realClock, *realClock:
		return true
	}
	return false
}

// Env is what modules are built against: services shared by all of them.
//
// When fields are ready (kamd/node wires them): Log, Clock, Stats, Shv and
// Publish are set before any module is built, so a factory may keep them.
// Sender, Sockets() (SetSockets), SocketManager, Aliases, DB and DBPath
// depend on the loaded script and are set after every module is built and
// before the first Init: read them from Init on (in Init, Start or per
// message), never in the factory — until then Sender answers every send
// with an error. SocketManager may open sockets from Init on; their
// readers start with the transport, after every module's Start.
type Env struct {
	Sender Sender
	Router Router
	Log    *slog.Logger
	Clock  Clock
	// SocketManager opens and closes sockets at runtime (see OpenSocket).
	SocketManager SocketManager
	Aliases       []string // extra names for is_myself
	Stats         *Stats
	Shv           *SharedVars
	// Publish emits an event to RPC subscribers (nil-safe via Emit).
	Publish func(topic string, data any)
	// DBPath is the SQLite file for modules that store state; DB is it
	// opened (nil in route tests unless a test opens one).
	DBPath string
	DB     *sql.DB

	// ShedInvites is set by tm while its transaction table has no room for
	// another INVITE (max_transactions, max_transactions_mem): the
	// transport then answers new INVITEs 503 as soon as they are parsed,
	// before queueing or routing them, so a flood cannot starve the
	// requests that are still served (docs/limits.md).
	ShedInvites atomic.Bool

	// socks is the immutable list Sockets returns; sockMu orders writers.
	socks  atomic.Pointer[[]Socket]
	sockMu sync.Mutex

	mu      sync.Mutex
	modules map[string]*Module
	pvs     pvTable     // core's PVs and those of the modules set
	topics  topicChecks // event topics the modules set declare
}

// Emit publishes an event if an event hub is attached. A topic no module
// table declares (Module.Events) is still published but logged once, so a
// topic missing from the docs shows up in the first run that emits it.
func (e *Env) Emit(topic string, data any) {
	if e.Publish != nil {
		e.topics.check(e.Log, topic)
		e.Publish(topic, data)
	}
}

// NewEnv returns an Env with defaults suitable for tests.
func NewEnv(sender Sender) *Env {
	return &Env{
		Sender: sender,
		Log:    slog.Default(),
		Clock:  RealClock,
		Stats:  NewStats(),
		Shv:    NewSharedVars(),
	}
}

// SetModule records a built module so others can find it by name, and
// makes the PVs and event topics its table declares known to this Env.
func (e *Env) SetModule(m *Module) {
	e.mu.Lock()
	if e.modules == nil {
		e.modules = map[string]*Module{}
	}
	e.modules[m.Name] = m
	e.mu.Unlock()
	e.pvs.addModule(m)
	e.topics.declare(m.Events)
}

// Module returns a built module by name.
func (e *Env) Module(name string) *Module {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.modules[name]
}

// Sockets lists kamd's listening sockets: those of listen() first, then
// those opened at runtime (SocketManager). It is safe to call while
// sockets open and close (one atomic load); the slice is shared and must
// not be modified.
func (e *Env) Sockets() []Socket {
	if p := e.socks.Load(); p != nil {
		return *p
	}
	return nil
}

// SetSockets replaces the socket list (a copy of ss is kept).
func (e *Env) SetSockets(ss []Socket) {
	e.sockMu.Lock()
	defer e.sockMu.Unlock()
	c := append([]Socket(nil), ss...)
	e.socks.Store(&c)
}

// AddSocket appends a socket to the list (the transport, when it opens
// one at runtime).
func (e *Env) AddSocket(s Socket) {
	e.sockMu.Lock()
	defer e.sockMu.Unlock()
	old := e.Sockets()
	c := make([]Socket, len(old), len(old)+1)
	copy(c, old)
	c = append(c, s)
	e.socks.Store(&c)
}

// RemoveSocket removes the socket with s's protocol, address and port; it
// reports whether one was listed.
func (e *Env) RemoveSocket(s Socket) bool {
	e.sockMu.Lock()
	defer e.sockMu.Unlock()
	old := e.Sockets()
	c := make([]Socket, 0, len(old))
	found := false
	for _, x := range old {
		if !found && x.Proto == s.Proto && x.Port == s.Port && normHost(x.IP) == normHost(s.IP) {
			found = true
			continue
		}
		c = append(c, x)
	}
	if found {
		e.socks.Store(&c)
	}
	return found
}

// OpenSocket opens a listening socket at runtime through SocketManager.
func (e *Env) OpenSocket(ctx context.Context, s Socket) (Socket, error) {
	if e.SocketManager == nil {
		return Socket{}, fmt.Errorf("open socket %s: no socket manager (sockets open from module Init on)", s)
	}
	return e.SocketManager.OpenSocket(ctx, s)
}

// CloseSocket closes a socket OpenSocket opened, through SocketManager.
func (e *Env) CloseSocket(s Socket) error {
	if e.SocketManager == nil {
		return fmt.Errorf("close socket %s: no socket manager", s)
	}
	return e.SocketManager.CloseSocket(s)
}

// SocketFor picks the local socket to send from for a protocol (first match).
func (e *Env) SocketFor(proto string) (Socket, bool) {
	for _, s := range e.Sockets() {
		if s.Proto == proto {
			return s, true
		}
	}
	return Socket{}, false
}

// IsMyself is true when host[:port] names one of our sockets or aliases.
// A missing port means 5060 (RFC 3261 default); aliases match any port.
func (e *Env) IsMyself(host string, port int) bool {
	h := normHost(host)
	for _, a := range e.Aliases {
		if normHost(a) == h {
			return true
		}
	}
	if port == 0 {
		port = 5060
	}
	for _, s := range e.Sockets() {
		if s.Port != port {
			continue
		}
		if normHost(s.IP) == h || (s.Advertise != "" && normHost(s.Advertise) == h) {
			return true
		}
	}
	return false
}

// IsLoop reports whether a request sent to t would reach one of kamd's own
// sockets (same protocol, address and port).
func (e *Env) IsLoop(t Target) bool {
	h := normHost(t.Host)
	for _, s := range e.Sockets() {
		if s.Port == t.Port && s.Proto == t.Proto && (normHost(s.IP) == h || (s.Advertise != "" && normHost(s.Advertise) == h)) {
			return true
		}
	}
	return false
}

func normHost(h string) string {
	h = strings.ToLower(strings.Trim(h, "[]"))
	if ip, err := netip.ParseAddr(h); err == nil && ip.Is4() {
		// Dotted IPv4 parses only in its canonical form (no leading
		// zeros, four parts), which is what net.IP.String would write:
		// h itself, without the two allocations.
		return h
	}
	if ip := net.ParseIP(h); ip != nil {
		return ip.String()
	}
	return h
}

// SharedVars backs $shv: values shared by every callback.
type SharedVars struct {
	mu sync.RWMutex
	m  map[string]Val
}

func NewSharedVars() *SharedVars { return &SharedVars{m: map[string]Val{}} }

func (s *SharedVars) Get(name string) Val {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.m[name]
	if !ok {
		return Int(0) // Kamailio: an unset $shv reads as 0
	}
	return v
}

func (s *SharedVars) Set(name string, v Val) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[name] = v
}

// Snapshot copies all values (for RPC and route tests).
func (s *SharedVars) Snapshot() map[string]Val {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]Val, len(s.m))
	for k, v := range s.m {
		out[k] = v
	}
	return out
}

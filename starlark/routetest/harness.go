// Package routetest runs a routing script on messages with no network. A
// Harness is the daemon's own wiring (kamd/node, handed in as a Wiring) with
// the transport replaced by a recorder and the wall clock by a FixedClock,
// so every effect a script asks for — messages, logs, events — is recorded
// in order. The Starlark test API (route, sip, assert, state) is in star.go,
// the test runner in run.go, SIP builders in sip.go.
package routetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/starlark"
)

// Sent is one recorded Outgoing, serialised when it was handed to the Sender
// (the caller may change the message as soon as Send returns).
type Sent struct {
	Kind   core.OutKind
	Dst    core.Target
	ConnID string
	Branch int
	// Local is the forced local socket (Outgoing.LocalSocket) as
	// proto:ip:port, "" when the transport picks.
	Local string
	Text  string      // the message as it would go on the wire
	Msg   sip.Message // parsed back from Text: a snapshot
}

// LogRecord is one log line written through env.Log while a route ran.
type LogRecord struct {
	Level   slog.Level
	Message string
	At      string            // script position ("route.star:12:5") when known
	Attrs   map[string]string // every other attribute, flattened
}

// Result is what one action (a request, a reply, an event, a clock advance)
// made kamd do.
type Result struct {
	Sent   []Sent
	Logs   []LogRecord
	Steps  uint64
	Errors []string // script errors logged while the action ran
	// Events are the events published while the action ran, in order.
	Events []Event
	// Msg is the message the action routed (nil for route.advance); after a
	// request route it holds the final R-URI, $du, flags and headers.
	Msg *core.Msg
}

// Error is the first script error or "".
func (r *Result) Error() string {
	if len(r.Errors) == 0 {
		return ""
	}
	return r.Errors[0]
}

// Of returns the records of the given kinds, in order.
func (r *Result) Of(kinds ...core.OutKind) []Sent {
	var out []Sent
	for _, s := range r.Sent {
		for _, k := range kinds {
			if s.Kind == k {
				out = append(out, s)
			}
		}
	}
	return out
}

// Event is one event published through env.Publish (the RPC event hub).
type Event struct {
	Topic string
	Data  any
}

// recorder is the route tests' core.Sender.
type recorder struct {
	mu   sync.Mutex
	sent []Sent
}

func (r *recorder) Send(o *core.Outgoing) error {
	var sb strings.Builder
	o.Msg.StringWrite(&sb)
	s := Sent{Kind: o.Kind, Dst: o.Dst, ConnID: o.ConnID, Branch: o.Branch, Text: sb.String()}
	if o.LocalSocket != nil {
		s.Local = o.LocalSocket.String()
	}
	msg, err := sip.NewParser().ParseSIP([]byte(s.Text))
	if err != nil {
		return fmt.Errorf("route test: kamd produced a message it cannot parse back (%v):\n%s", err, s.Text)
	}
	s.Msg = msg
	r.mu.Lock()
	r.sent = append(r.sent, s)
	r.mu.Unlock()
	return nil
}

func (r *recorder) since(i int) []Sent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Sent(nil), r.sent[i:]...)
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sent)
}

// logCapture is an slog.Handler recording every record at every level.
type logCapture struct {
	mu    *sync.Mutex
	recs  *[]LogRecord
	attrs []slog.Attr
	group string
}

func newLogCapture() *logCapture {
	return &logCapture{mu: &sync.Mutex{}, recs: &[]LogRecord{}}
}

func (h *logCapture) Enabled(context.Context, slog.Level) bool { return true }

func (h *logCapture) Handle(_ context.Context, r slog.Record) error {
	rec := LogRecord{Level: r.Level, Message: r.Message, Attrs: map[string]string{}}
	add := func(a slog.Attr) bool {
		key := a.Key
		if h.group != "" {
			key = h.group + "." + key
		}
		if key == "at" {
			rec.At = a.Value.String()
		} else {
			rec.Attrs[key] = a.Value.Resolve().String()
		}
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	h.mu.Lock()
	*h.recs = append(*h.recs, rec)
	h.mu.Unlock()
	return nil
}

func (h *logCapture) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}

func (h *logCapture) WithGroup(name string) slog.Handler {
	c := *h
	if c.group != "" {
		name = c.group + "." + name
	}
	c.group = name
	return &c
}

func (h *logCapture) since(i int) []LogRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]LogRecord(nil), (*h.recs)[i:]...)
}

func (h *logCapture) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(*h.recs)
}

// FixedClock is a core.Clock whose time moves only when a test advances it;
// AfterFunc timers fire then, in time order, on the advancing goroutine.
type FixedClock struct {
	mu     sync.Mutex
	now    time.Time
	seq    int
	timers []*fixedTimer
}

// RouteTestEpoch is the time route tests start at.
var RouteTestEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// NewFixedClock returns a clock standing at t.
func NewFixedClock(t time.Time) *FixedClock { return &FixedClock{now: t} }

type fixedTimer struct {
	c       *FixedClock
	when    time.Time
	seq     int
	f       func()
	stopped bool
	fired   bool
}

func (t *fixedTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.stopped || t.fired {
		return false
	}
	t.stopped = true
	return true
}

// Now implements core.Clock.
func (c *FixedClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc implements core.Clock.
func (c *FixedClock) AfterFunc(d time.Duration, f func()) core.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &fixedTimer{c: c, when: c.now.Add(d), seq: c.seq, f: f}
	c.timers = append(c.timers, t)
	return t
}

// Pending is the number of timers not yet fired or stopped.
func (c *FixedClock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.stopped && !t.fired {
			n++
		}
	}
	return n
}

// Advance moves the clock by d, firing every timer that falls due (timers
// scheduled by those callbacks included) at its own time, in order.
func (c *FixedClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		live := c.timers[:0]
		for _, t := range c.timers {
			if !t.stopped && !t.fired {
				live = append(live, t)
			}
		}
		c.timers = live
		sort.SliceStable(c.timers, func(i, j int) bool {
			if !c.timers[i].when.Equal(c.timers[j].when) {
				return c.timers[i].when.Before(c.timers[j].when)
			}
			return c.timers[i].seq < c.timers[j].seq
		})
		if len(c.timers) == 0 || c.timers[0].when.After(end) {
			c.now = end
			c.mu.Unlock()
			return
		}
		t := c.timers[0]
		t.fired = true
		if t.when.After(c.now) {
			c.now = t.when
		}
		c.mu.Unlock()
		t.f()
	}
}

// HarnessOptions configure a Harness.
type HarnessOptions struct {
	// MaxSteps is the engine's default step limit (DefaultMaxSteps if 0).
	MaxSteps uint64
	// Start is the clock's start time (RouteTestEpoch if zero).
	Start time.Time
}

// NodeConfig is what the harness asks of the wiring: the script, and what
// replaces the network (a recorder), the wall clock, the log and the
// database file.
type NodeConfig struct {
	Path     string
	Src      []byte
	Sender   core.Sender
	Clock    core.Clock
	Log      *slog.Logger
	DBPath   string
	MaxSteps uint64
	// OnEvent must see every published event synchronously.
	OnEvent func(topic string, data any)
}

// Node is a wired, started kamd as the harness drives it.
type Node struct {
	Env    *core.Env
	Engine *starlark.Engine
	// Call invokes an RPC method in process, as an admin (kamd's own
	// methods and the modules'), and returns its JSON result.
	Call func(ctx context.Context, method string, params ...any) (json.RawMessage, error)
	// Stop stops the modules and closes what the node opened.
	Stop func()
}

// Wiring builds, initialises and starts a Node from a NodeConfig. kamd's is
// kamd/node.RouteTest, the daemon's own wiring; this package cannot import
// it (kamd imports this package), so callers hand it in.
type Wiring func(NodeConfig) (*Node, error)

// Harness is one fresh kamd — env, modules, engine, script, RPC registry —
// with a recorder for a transport.
type Harness struct {
	Env    *core.Env
	Engine *starlark.Engine
	Clock  *FixedClock
	Prog   *starlark.Program
	node   *Node

	rec      *recorder
	logs     *logCapture
	dir      string
	stopObs  func()
	stepsMu  sync.Mutex
	steps    uint64
	closed   bool
	connSeq  int
	actionMu sync.Mutex
	eventsMu sync.Mutex
	events   []Event
}

// NewHarness wires a fresh kamd with wire (kamd/node.RouteTest) and loads
// the script into it. A load error is returned as is (file:line:col: msg).
func NewHarness(wire Wiring, path string, src []byte, opts HarnessOptions) (*Harness, error) {
	if wire == nil {
		return nil, errors.New("route test: no wiring (pass kamd/node.RouteTest)")
	}
	h := &Harness{rec: &recorder{}, logs: newLogCapture()}
	start := opts.Start
	if start.IsZero() {
		start = RouteTestEpoch
	}
	h.Clock = NewFixedClock(start)
	dir, err := os.MkdirTemp("", "kamd-routetest-")
	if err != nil {
		return nil, err
	}
	h.dir = dir
	n, err := wire(NodeConfig{Path: path, Src: src, Sender: h.rec, Clock: h.Clock, Log: slog.New(h.logs),
		DBPath: filepath.Join(dir, "kamgo.db"), MaxSteps: opts.MaxSteps, OnEvent: h.onEvent})
	if err != nil {
		h.Close()
		return nil, err
	}
	h.node, h.Env, h.Engine, h.Prog = n, n.Env, n.Engine, n.Engine.Program()
	h.stopObs = h.Engine.ObserveSteps(func(_ string, n uint64) {
		h.stepsMu.Lock()
		h.steps += n
		h.stepsMu.Unlock()
	})
	return h, nil
}

func (h *Harness) onEvent(topic string, data any) {
	h.eventsMu.Lock()
	h.events = append(h.events, Event{topic, data})
	h.eventsMu.Unlock()
}

func (h *Harness) eventsSince(i int) []Event {
	h.eventsMu.Lock()
	defer h.eventsMu.Unlock()
	return append([]Event(nil), h.events[i:]...)
}

func (h *Harness) eventsLen() int {
	h.eventsMu.Lock()
	defer h.eventsMu.Unlock()
	return len(h.events)
}

// Call invokes an RPC method as an admin would (state.rpc).
func (h *Harness) Call(method string, params ...any) (json.RawMessage, error) {
	return h.node.Call(context.Background(), method, params...)
}

// Close stops the modules and removes the harness's files.
func (h *Harness) Close() {
	if h.closed {
		return
	}
	h.closed = true
	if h.node != nil {
		h.node.Stop()
	}
	if h.stopObs != nil {
		h.stopObs()
	}
	if h.dir != "" {
		os.RemoveAll(h.dir)
	}
}

// AllSent is everything recorded since the harness started.
func (h *Harness) AllSent() []Sent { return h.rec.since(0) }

// AllLogs is every log record since the harness started.
func (h *Harness) AllLogs() []LogRecord { return h.logs.since(0) }

// action runs f and returns what it made kamd do.
func (h *Harness) action(m *core.Msg, f func()) *Result {
	h.actionMu.Lock()
	defer h.actionMu.Unlock()
	s0, l0, e0 := h.rec.len(), h.logs.len(), h.eventsLen()
	h.stepsMu.Lock()
	h.steps = 0
	h.stepsMu.Unlock()
	f()
	r := &Result{Sent: h.rec.since(s0), Logs: h.logs.since(l0), Events: h.eventsSince(e0), Msg: m}
	h.stepsMu.Lock()
	r.Steps = h.steps
	h.stepsMu.Unlock()
	for _, l := range r.Logs {
		if strings.HasPrefix(l.Message, "script error in ") {
			e := l.Attrs["err"]
			if e == "" {
				e = l.Message
			}
			r.Errors = append(r.Errors, e)
		}
	}
	return r
}

// ParseMessage parses SIP text as a test gives it: "\n" line endings are
// normalised to CRLF (see NormalizeSIP).
func ParseMessage(raw string) (sip.Message, error) {
	data := []byte(NormalizeSIP(raw))
	msg, err := sip.NewParser().ParseSIP(data)
	if err != nil {
		return nil, fmt.Errorf("cannot parse SIP message: %v", err)
	}
	// As the transport does: the method as written, and the wire check.
	if code, why := core.WireProblem(msg, data, true); code != 0 {
		return nil, fmt.Errorf("the transport answers this message %q before routing", strconv.Itoa(code)+" "+why)
	}
	return msg, nil
}

// newMsg builds the message context as the transport does for a received message.
func (h *Harness) newMsg(src, proto string) (*core.Msg, error) {
	if proto == "" {
		proto = "udp"
	}
	proto = strings.ToLower(proto)
	ip, port, err := splitSrc(src)
	if err != nil {
		return nil, err
	}
	local, ok := h.Env.SocketFor(proto)
	if !ok {
		return nil, fmt.Errorf("the script listens on no %s socket (listen(...) or the default udp and tcp 127.0.0.1:5060)", proto)
	}
	m := &core.Msg{Env: h.Env, Proto: proto, SrcIP: ip, SrcPort: port, Local: local, Arrived: h.Clock.Now()}
	if proto != "udp" {
		m.ConnID = proto + ":" + src
	}
	return m, nil
}

func splitSrc(src string) (string, int, error) {
	ip, port := core.HostPort(src)
	if port == 0 {
		if strings.Contains(src, ":") && !strings.HasPrefix(src, "[") && strings.Count(src, ":") == 1 {
			return "", 0, fmt.Errorf("bad source address %q: want ip:port", src)
		}
		port = 5060
	}
	if ip == "" {
		return "", 0, fmt.Errorf("bad source address %q: want ip:port", src)
	}
	return strings.Trim(ip, "[]"), port, nil
}

// Request routes a request received from src over proto, as the transport
// hands it to the engine (HandleRequest: module hooks, request route, 500 on
// a script error).
func (h *Harness) Request(req *sip.Request, src, proto string) (*Result, error) {
	if code, why := core.RequestRefusal(req); code != 0 {
		return nil, fmt.Errorf("the transport answers this request %q before routing", strconv.Itoa(code)+" "+why)
	}
	m, err := h.newMsg(src, proto)
	if err != nil {
		return nil, err
	}
	m.Req = req
	if m.Proto != "udp" {
		m.ForceRport() // as the transport does for stream connections
	}
	return h.action(m, func() { h.Engine.HandleRequest(m) }), nil
}

// Reply routes a reply received from src: the core reply route, module
// hooks (tm matching its branches), then stateless forwarding.
func (h *Harness) Reply(res *sip.Response, src, proto string) (*Result, error) {
	if res.Via() == nil || res.CSeq() == nil {
		return nil, errors.New("the reply has no Via or CSeq header (the transport drops it)")
	}
	m, err := h.newMsg(src, proto)
	if err != nil {
		return nil, err
	}
	m.Res = res
	return h.action(m, func() { h.Engine.HandleReply(m) }), nil
}

// Event runs a named callback with msg bound (a synthetic OPTIONS when nil).
// A callback the script does not define is an error.
func (h *Harness) Event(name string, rt core.RouteType, msg sip.Message, src, proto string) (*Result, error) {
	if !h.Engine.HasCallback(h.Prog, name) {
		return nil, fmt.Errorf("the script defines no callback %s", name)
	}
	if msg == nil {
		var err error
		if msg, err = ParseMessage(syntheticMsg); err != nil {
			return nil, err
		}
	}
	m, err := h.newMsg(src, proto)
	if err != nil {
		return nil, err
	}
	switch x := msg.(type) {
	case *sip.Request:
		m.Req = x
	case *sip.Response:
		m.Res = x
	}
	return h.action(m, func() {
		if err := h.Engine.Run(h.Prog, name, rt, m); err != nil {
			h.Engine.LogScriptError(name, m, err)
		}
	}), nil
}

// syntheticMsg is the message event routes run with, like Kamailio's faked one.
const syntheticMsg = "OPTIONS sip:you@kamailio.org SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKevent\r\n" +
	"From: <sip:you@kamailio.org>;tag=notag\r\nTo: <sip:you@kamailio.org>\r\nCall-ID: event-route\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"

// Advance moves the clock, firing due timers (tm retransmissions and
// timeouts, refreshes...), and returns what they made kamd do.
func (h *Harness) Advance(d time.Duration) *Result {
	return h.action(nil, func() { h.Clock.Advance(d) })
}

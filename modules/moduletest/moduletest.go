// Package moduletest has the helpers module unit tests share: an Env with
// a recording Sender, messages parsed from text, and calls through a
// module's export table. Only tests import it.
package moduletest

import (
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	kstar "github.com/kamgo/kamgo/starlark"

	_ "github.com/kamgo/kamgo/modules/all" // the engine in RunScript sees every module
)

// Sent is one recorded message, serialised when it was sent.
type Sent struct {
	Kind core.OutKind
	Dst  core.Target
	Text string
}

// Recorder is a core.Sender that serialises each message at Send time
// (callers may change the message as soon as Send returns).
type Recorder struct {
	mu  sync.Mutex
	out []Sent
}

func (r *Recorder) Send(o *core.Outgoing) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.out = append(r.out, Sent{Kind: o.Kind, Dst: o.Dst, Text: core.MessageString(o.Msg)})
	return nil
}

// All returns what was sent so far.
func (r *Recorder) All() []Sent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Sent(nil), r.out...)
}

// NewEnv is an Env with udp and tcp sockets on 127.0.0.1:5060 and a Recorder.
func NewEnv() (*core.Env, *Recorder) {
	rec := &Recorder{}
	env := core.NewEnv(rec)
	env.SetSockets([]core.Socket{
		{Proto: "udp", IP: "127.0.0.1", Port: 5060},
		{Proto: "tcp", IP: "127.0.0.1", Port: 5060},
	})
	return env, rec
}

// Parse builds a message from header lines separated by "\n"; a body gets
// a matching Content-Length.
func Parse(t testing.TB, hdrs, body string) sip.Message {
	t.Helper()
	text := strings.ReplaceAll(strings.TrimSpace(hdrs), "\n", "\r\n") + "\r\n"
	if body != "" {
		text += "Content-Length: " + strconv.Itoa(len(body)) + "\r\n"
	}
	text += "\r\n" + body
	msg, err := sip.NewParser().ParseSIP([]byte(text))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, text)
	}
	return msg
}

// NewMsg wraps a parsed message as received over UDP from 192.0.2.10:5070.
func NewMsg(t testing.TB, env *core.Env, hdrs, body string) *core.Msg {
	t.Helper()
	m := &core.Msg{Env: env, Proto: "udp", SrcIP: "192.0.2.10", SrcPort: 5070, Local: env.Sockets()[0], RouteType: core.RouteRequest}
	switch x := Parse(t, hdrs, body).(type) {
	case *sip.Request:
		m.Req = x
	case *sip.Response:
		m.Res = x
	}
	return m
}

// Fn finds a function in a module's export table.
func Fn(t testing.TB, mod *core.Module, name string) *core.Func {
	t.Helper()
	for i := range mod.Funcs {
		if mod.Funcs[i].Name == name {
			return &mod.Funcs[i]
		}
	}
	t.Fatalf("module %s has no function %s", mod.Name, name)
	return nil
}

// Call calls a module function through its export table.
func Call(t testing.TB, mod *core.Module, m *core.Msg, name string, args ...core.Val) (core.Val, error) {
	t.Helper()
	f := Fn(t, mod, name)
	if !f.ArityOK(len(args)) {
		t.Fatalf("%s: want %s args, got %d", name, f.ArityString(), len(args))
	}
	return f.Fn(m, args)
}

// MustInt calls a function that must not fail and returns its int result.
func MustInt(t testing.TB, mod *core.Module, m *core.Msg, name string, args ...core.Val) int64 {
	t.Helper()
	v, err := Call(t, mod, m, name, args...)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v.Int
}

// SetParam sets a modparam as the config phase would.
func SetParam(t testing.TB, mod *core.Module, name string, v core.Val) {
	t.Helper()
	for _, p := range mod.Params {
		if p.Name == name {
			if err := p.Set(v); err != nil {
				t.Fatalf("modparam %s: %v", name, err)
			}
			return
		}
	}
	t.Fatalf("no param %s", name)
}

// RunScript loads src through the real engine and routes m.
func RunScript(t testing.TB, env *core.Env, src string, m *core.Msg) {
	t.Helper()
	eng := kstar.New(env)
	if _, err := eng.Load("t.star", []byte(src)); err != nil {
		t.Fatalf("load: %v", err)
	}
	eng.HandleRequest(m)
}

// S and I make KEMI values for calls through the export table.
func S(s string) core.Val { return core.Str(s) }
func I(i int) core.Val    { return core.Int(i) }

// Invite is a plain INVITE (headers only) that module tests start from.
const Invite = `INVITE sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-1;rport
From: "Alice" <sip:alice@example.com>;tag=ftag1
To: <sip:bob@example.com>
Call-ID: call-1@192.0.2.10
CSeq: 1 INVITE
Contact: <sip:alice@192.0.2.10:5070>
Max-Forwards: 70`

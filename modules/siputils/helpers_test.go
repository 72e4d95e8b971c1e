package siputils_test

import (
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	kstar "github.com/kamgo/kamgo/starlark"

	_ "github.com/kamgo/kamgo/modules/all"
)

type sent struct {
	kind core.OutKind
	dst  core.Target
	text string
}

// recorder is a core.Sender that serialises each message at Send time.
type recorder struct {
	mu  sync.Mutex
	out []sent
}

func (r *recorder) Send(o *core.Outgoing) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.out = append(r.out, sent{kind: o.Kind, dst: o.Dst, text: core.MessageString(o.Msg)})
	return nil
}

func (r *recorder) all() []sent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sent(nil), r.out...)
}

func newEnv() (*core.Env, *recorder) {
	rec := &recorder{}
	env := core.NewEnv(rec)
	env.Sockets = []core.Socket{
		{Proto: "udp", IP: "127.0.0.1", Port: 5060},
		{Proto: "tcp", IP: "127.0.0.1", Port: 5060},
	}
	return env, rec
}

// parse builds a message from header lines separated by "\n"; a body gets
// a matching Content-Length.
func parse(t *testing.T, hdrs, body string) sip.Message {
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

func newMsg(t *testing.T, env *core.Env, hdrs, body string) *core.Msg {
	t.Helper()
	m := &core.Msg{Env: env, Proto: "udp", SrcIP: "192.0.2.10", SrcPort: 5070, Local: env.Sockets[0], RouteType: core.RouteRequest}
	switch x := parse(t, hdrs, body).(type) {
	case *sip.Request:
		m.Req = x
	case *sip.Response:
		m.Res = x
	}
	return m
}

func fn(t *testing.T, mod *core.Module, name string) *core.Func {
	t.Helper()
	for i := range mod.Funcs {
		if mod.Funcs[i].Name == name {
			return &mod.Funcs[i]
		}
	}
	t.Fatalf("module %s has no function %s", mod.Name, name)
	return nil
}

func call(t *testing.T, mod *core.Module, m *core.Msg, name string, args ...core.Val) (core.Val, error) {
	t.Helper()
	f := fn(t, mod, name)
	if len(args) != len(f.Args) {
		t.Fatalf("%s: want %d args, got %d", name, len(f.Args), len(args))
	}
	return f.Fn(m, args)
}

func mustInt(t *testing.T, mod *core.Module, m *core.Msg, name string, args ...core.Val) int64 {
	t.Helper()
	v, err := call(t, mod, m, name, args...)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v.I
}

func setParam(t *testing.T, mod *core.Module, name string, v core.Val) {
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

// runScript loads src through the real engine and routes m.
func runScript(t *testing.T, env *core.Env, src string, m *core.Msg) {
	t.Helper()
	eng := kstar.New(env)
	if _, err := eng.Load("t.star", []byte(src)); err != nil {
		t.Fatalf("load: %v", err)
	}
	eng.HandleRequest(m)
}

func S(s string) core.Val { return core.Str(s) }
func I(i int) core.Val    { return core.Int(i) }

const invite = `INVITE sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-1;rport
From: "Alice" <sip:alice@example.com>;tag=ftag1
To: <sip:bob@example.com>
Call-ID: call-1@192.0.2.10
CSeq: 1 INVITE
Contact: <sip:alice@192.0.2.10:5070>
Max-Forwards: 70`

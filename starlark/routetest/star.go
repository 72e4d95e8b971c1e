package routetest

// The Starlark API of route tests: the route, sip, state and assert
// modules predeclared in *_test.star files, the message object and the
// result object.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/starlark"
	sk "go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
	"go.starlark.net/syntax"
)

const testCtxKey = "kamd.routetest"

// testCtx is bound to the thread running one test function.
type testCtx struct {
	h    *Harness // nil in the test file's top level
	seq  int      // for Call-IDs, tags and branches of the builders
	last *Result
	out  strings.Builder // print() output
}

func ctxOf(th *sk.Thread) *testCtx {
	c, _ := th.Local(testCtxKey).(*testCtx)
	if c == nil {
		c = &testCtx{}
		th.SetLocal(testCtxKey, c)
	}
	return c
}

func harnessOf(th *sk.Thread, b *sk.Builtin) (*testCtx, error) {
	c := ctxOf(th)
	if c.h == nil {
		return nil, fmt.Errorf("only inside a test function (test_* or setup), where a fresh kamd runs the script")
	}
	return c, nil
}

// testPredeclared is what *_test.star files see.
func testPredeclared() sk.StringDict {
	mod := func(name string, fns map[string]func(*sk.Thread, *sk.Builtin, sk.Tuple, []sk.Tuple) (sk.Value, error)) *starlarkstruct.Module {
		d := sk.StringDict{}
		for n, f := range fns {
			d[n] = sk.NewBuiltin(name+"."+n, f)
		}
		m := &starlarkstruct.Module{Name: name, Members: d}
		m.Freeze()
		return m
	}
	return sk.StringDict{
		"route": mod("route", map[string]func(*sk.Thread, *sk.Builtin, sk.Tuple, []sk.Tuple) (sk.Value, error){
			"request": routeRequest, "reply": routeReply, "event": routeEvent, "advance": routeAdvance,
			"now": routeNow, "pending_timers": routePending, "stats": routeStats,
		}),
		"sip": mod("sip", map[string]func(*sk.Thread, *sk.Builtin, sk.Tuple, []sk.Tuple) (sk.Value, error){
			"request":  sipRequest(""),
			"invite":   sipRequest("INVITE"),
			"register": sipRequest("REGISTER"),
			"options":  sipRequest("OPTIONS"),
			"message":  sipRequest("MESSAGE"),
			"reply":    sipReply,
			"cancel":   sipCancel,
			"ack":      sipAck,
			"parse":    sipParse,
			"digest":   sipDigest,
		}),
		"state": mod("state", map[string]func(*sk.Thread, *sk.Builtin, sk.Tuple, []sk.Tuple) (sk.Value, error){
			"shv": stateShv, "rpc": stateRPC,
		}),
		"assert": mod("assert", map[string]func(*sk.Thread, *sk.Builtin, sk.Tuple, []sk.Tuple) (sk.Value, error){
			"eq": assertEq, "ne": assertNe, "true": assertTrue, "false": assertFalse,
			"contains": assertContains, "fails": assertFails,
		}),
		"struct": sk.NewBuiltin("struct", starlarkstruct.Make),
	}
}

// ---- the message object ----

// msgObj is a SIP message in a test: built, parsed or recorded.
type msgObj struct {
	text  string
	msg   sip.Message
	src   string // where it comes from when routed
	proto string
}

var msgObjAttrs = []string{"body", "call_id", "code", "cseq", "first_line", "from_tag", "from_uri", "hdr", "hdrs",
	"is_request", "method", "proto", "reason", "reply", "ruri", "src", "text", "to_tag", "to_uri"}

func newMsgObj(text, src, proto string) (*msgObj, error) {
	msg, err := ParseMessage(text)
	if err != nil {
		return nil, err
	}
	return &msgObj{text: NormalizeSIP(text), msg: msg, src: src, proto: proto}, nil
}

func (v *msgObj) firstLine() string { l, _, _ := strings.Cut(v.text, "\r\n"); return l }
func (v *msgObj) String() string    { return "<msg " + v.firstLine() + ">" }
func (v *msgObj) Type() string      { return "sip_msg" }
func (v *msgObj) Freeze()           {}
func (v *msgObj) Truth() sk.Bool    { return true }
func (v *msgObj) Hash() (uint32, error) {
	return sk.String(v.text).Hash()
}
func (v *msgObj) AttrNames() []string { return msgObjAttrs }

func (v *msgObj) CompareSameType(op syntax.Token, y sk.Value, depth int) (bool, error) {
	w := y.(*msgObj)
	switch op {
	case syntax.EQL:
		return v.text == w.text, nil
	case syntax.NEQ:
		return v.text != w.text, nil
	}
	return false, fmt.Errorf("%s %s %s not supported", v.Type(), op, w.Type())
}

func strOrNone(s string, ok bool) sk.Value {
	if !ok {
		return sk.None
	}
	return sk.String(s)
}

func (v *msgObj) Attr(name string) (sk.Value, error) {
	req, isReq := v.msg.(*sip.Request)
	res, _ := v.msg.(*sip.Response)
	switch name {
	case "text":
		return sk.String(v.text), nil
	case "first_line":
		return sk.String(v.firstLine()), nil
	case "is_request":
		return sk.Bool(isReq), nil
	case "method":
		if isReq {
			return sk.String(string(req.Method)), nil
		}
		if cs := res.CSeq(); cs != nil {
			return sk.String(string(cs.MethodName)), nil
		}
		return sk.None, nil
	case "ruri":
		if isReq {
			return sk.String(req.Recipient.String()), nil
		}
		return sk.None, nil
	case "code":
		if !isReq {
			return sk.MakeInt(res.StatusCode), nil
		}
		return sk.None, nil
	case "reason":
		if !isReq {
			return sk.String(res.Reason), nil
		}
		return sk.None, nil
	case "body":
		return sk.String(string(v.msg.Body())), nil
	case "call_id":
		c := v.msg.CallID()
		if c == nil {
			return sk.None, nil
		}
		return sk.String(string(*c)), nil
	case "cseq":
		if cs := v.msg.CSeq(); cs != nil {
			return sk.MakeInt64(int64(cs.SeqNo)), nil
		}
		return sk.None, nil
	case "from_uri":
		if f := v.msg.From(); f != nil {
			return sk.String(f.Address.String()), nil
		}
		return sk.None, nil
	case "to_uri":
		if t := v.msg.To(); t != nil {
			return sk.String(t.Address.String()), nil
		}
		return sk.None, nil
	case "from_tag":
		if f := v.msg.From(); f != nil {
			return strOrNone(f.Params.Get("tag")), nil
		}
		return sk.None, nil
	case "to_tag":
		if t := v.msg.To(); t != nil {
			return strOrNone(t.Params.Get("tag")), nil
		}
		return sk.None, nil
	case "src":
		return sk.String(v.src), nil
	case "proto":
		return sk.String(v.proto), nil
	case "hdr":
		return sk.NewBuiltin("msg.hdr", func(_ *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
			var n string
			if err := sk.UnpackPositionalArgs(b.Name(), args, kw, 1, &n); err != nil {
				return nil, err
			}
			if h := core.FirstHeader(v.msg, n); h != nil {
				return sk.String(h.Value()), nil
			}
			return sk.None, nil
		}), nil
	case "hdrs":
		return sk.NewBuiltin("msg.hdrs", func(_ *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
			var n string
			if err := sk.UnpackPositionalArgs(b.Name(), args, kw, 1, &n); err != nil {
				return nil, err
			}
			var out []sk.Value
			for _, h := range core.FindHeaders(v.msg, n) {
				out = append(out, sk.String(h.Value()))
			}
			return sk.NewList(out), nil
		}), nil
	case "reply":
		return sk.NewBuiltin("msg.reply", func(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
			return sipReply(th, b, append(sk.Tuple{v}, args...), kw)
		}), nil
	}
	return nil, nil
}

// toMsgObj accepts raw SIP text or a message object.
func toMsgObj(v sk.Value) (*msgObj, error) {
	switch x := v.(type) {
	case *msgObj:
		return x, nil
	case sk.String:
		return newMsgObj(string(x), "", "")
	}
	return nil, fmt.Errorf("got %s, want SIP text (str) or a message (sip.*, r.forwards[i].msg ...)", v.Type())
}

// fresh parses the text again: routing changes the message it is given.
func (v *msgObj) fresh() (sip.Message, error) { return ParseMessage(v.text) }

// ---- records and results ----

func sentValue(s Sent) sk.Value {
	src := net2(s.Dst)
	m := &msgObj{text: s.Text, msg: s.Msg, src: src, proto: s.Dst.Proto}
	d := sk.StringDict{
		"kind":    sk.String(s.Kind.String()),
		"dst":     sk.String(s.Dst.URI()),
		"msg":     m,
		"branch":  sk.MakeInt(s.Branch),
		"conn_id": sk.String(s.ConnID),
		"local":   sk.String(s.Local),
	}
	switch x := s.Msg.(type) {
	case *sip.Response:
		d["code"] = sk.MakeInt(x.StatusCode)
		d["reason"] = sk.String(x.Reason)
		if cs := x.CSeq(); cs != nil {
			d["method"] = sk.String(string(cs.MethodName))
		}
	case *sip.Request:
		d["method"] = sk.String(string(x.Method))
		d["ruri"] = sk.String(x.Recipient.String())
	}
	return starlarkstruct.FromStringDict(sk.String("sent"), d)
}

func net2(t core.Target) string {
	if strings.Contains(t.Host, ":") {
		return "[" + t.Host + "]:" + strconv.Itoa(t.Port)
	}
	return t.Host + ":" + strconv.Itoa(t.Port)
}

func logValue(l LogRecord) sk.Value {
	attrs := sk.NewDict(len(l.Attrs))
	keys := make([]string, 0, len(l.Attrs))
	for k := range l.Attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		attrs.SetKey(sk.String(k), sk.String(l.Attrs[k]))
	}
	return starlarkstruct.FromStringDict(sk.String("log"), sk.StringDict{
		"level": sk.String(core.LevelName(l.Level)), "message": sk.String(l.Message), "at": sk.String(l.At), "attrs": attrs,
	})
}

// eventValue is one of r.events: a struct with the topic and the data as
// an RPC subscriber would see it (through JSON).
func eventValue(e Event) (sk.Value, error) {
	data, err := toStarlark(e.Data)
	if err != nil {
		return nil, fmt.Errorf("event %s: %v", e.Topic, err)
	}
	return starlarkstruct.FromStringDict(sk.String("event"), sk.StringDict{"topic": sk.String(e.Topic), "data": data}), nil
}

// resultValue is what route.request and friends return.
type resultValue struct {
	r     *Result
	cache map[string]sk.Value
}

var resultAttrs = []string{"du", "dropped", "error", "errors", "events", "flags", "forwarded", "forwards", "isflagset", "logs",
	"msg", "pv", "relayed_replies", "relays", "replied", "replies", "requests", "ruri", "sent", "steps"}

func (v *resultValue) String() string {
	return "<route result: " + summarize(v.r) + ">"
}
func (v *resultValue) Type() string          { return "route_result" }
func (v *resultValue) Freeze()               {}
func (v *resultValue) Truth() sk.Bool        { return true }
func (v *resultValue) Hash() (uint32, error) { return 0, fmt.Errorf("unhashable: route_result") }
func (v *resultValue) AttrNames() []string   { return resultAttrs }

func (v *resultValue) list(kinds ...core.OutKind) sk.Value {
	var out []sk.Value
	for _, s := range v.r.Of(kinds...) {
		out = append(out, sentValue(s))
	}
	l := sk.NewList(out)
	l.Freeze()
	return l
}

func (v *resultValue) Attr(name string) (sk.Value, error) {
	if x, ok := v.cache[name]; ok {
		return x, nil
	}
	x, err := v.attr(name)
	if err == nil && x != nil {
		if v.cache == nil {
			v.cache = map[string]sk.Value{}
		}
		v.cache[name] = x
	}
	return x, err
}

func (v *resultValue) attr(name string) (sk.Value, error) {
	r, m := v.r, v.r.Msg
	switch name {
	case "replies":
		return v.list(core.OutReply), nil
	case "relayed_replies":
		return v.list(core.OutRelayedReply), nil
	case "forwards":
		return v.list(core.OutForward), nil
	case "relays":
		return v.list(core.OutBranch), nil
	case "requests":
		return v.list(core.OutLocalRequest), nil
	case "sent":
		var out []sk.Value
		for _, s := range r.Sent {
			out = append(out, sentValue(s))
		}
		return sk.NewList(out), nil
	case "logs":
		var out []sk.Value
		for _, l := range r.Logs {
			out = append(out, logValue(l))
		}
		return sk.NewList(out), nil
	case "events":
		var out []sk.Value
		for _, e := range r.Events {
			ev, err := eventValue(e)
			if err != nil {
				return nil, err
			}
			out = append(out, ev)
		}
		return sk.NewList(out), nil
	case "errors":
		var out []sk.Value
		for _, e := range r.Errors {
			out = append(out, sk.String(e))
		}
		return sk.NewList(out), nil
	case "error":
		if e := r.Error(); e != "" {
			return sk.String(e), nil
		}
		return sk.None, nil
	case "steps":
		return sk.MakeUint64(r.Steps), nil
	}
	if m == nil {
		switch name {
		case "flags":
			return sk.MakeInt(0), nil
		case "dropped", "replied", "forwarded":
			return sk.False, nil
		case "ruri", "du", "msg":
			return sk.None, nil
		}
	} else {
		switch name {
		case "flags":
			return sk.MakeUint64(m.Flags), nil
		case "dropped":
			return sk.Bool(m.Dropped), nil
		case "replied":
			return sk.Bool(m.Replied), nil
		case "forwarded":
			return sk.Bool(m.Forwarded), nil
		case "ruri":
			if m.Req != nil {
				return sk.String(m.Req.Recipient.String()), nil
			}
			return sk.None, nil
		case "du":
			if m.DstURI == "" {
				return sk.None, nil
			}
			return sk.String(m.DstURI), nil
		case "msg":
			msg := m.Message()
			if msg == nil {
				return sk.None, nil
			}
			text := msg.String()
			parsed, err := sip.NewParser().ParseSIP([]byte(text))
			if err != nil {
				return nil, fmt.Errorf("r.msg: cannot parse the routed message back: %v", err)
			}
			return &msgObj{text: text, msg: parsed, src: net2(core.Target{Host: m.SrcIP, Port: m.SrcPort}), proto: m.Proto}, nil
		}
	}
	switch name {
	case "pv":
		return sk.NewBuiltin("result.pv", func(_ *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
			var spec string
			if err := sk.UnpackPositionalArgs(b.Name(), args, kw, 1, &spec); err != nil {
				return nil, err
			}
			if m == nil {
				return nil, fmt.Errorf("this result routed no message")
			}
			pv, err := m.Env.ParsePV(spec)
			if err != nil {
				return nil, err
			}
			return starlark.FromVal(pv.Get(m)), nil
		}), nil
	case "isflagset":
		return sk.NewBuiltin("result.isflagset", func(_ *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
			var n int
			if err := sk.UnpackPositionalArgs(b.Name(), args, kw, 1, &n); err != nil {
				return nil, err
			}
			if n < 0 || n > 63 {
				return nil, fmt.Errorf("flag %d out of range 0..63", n)
			}
			return sk.Bool(m != nil && m.Flags&(1<<uint(n)) != 0), nil
		}), nil
	}
	return nil, nil
}

// summarize describes a result in one line, for failures.
func summarize(r *Result) string {
	if r == nil {
		return "nothing routed"
	}
	var parts []string
	for _, s := range r.Sent {
		parts = append(parts, fmt.Sprintf("%s %s → %s", s.Kind, firstLine(s.Text), s.Dst.URI()))
	}
	if len(parts) == 0 {
		parts = append(parts, "nothing sent")
	}
	if e := r.Error(); e != "" {
		parts = append(parts, "script error: "+e)
	}
	return strings.Join(parts, "; ")
}

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\r\n"); return l }

// ---- route ----

func routeArgs(b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (*msgObj, string, string, error) {
	var mv sk.Value
	var src, proto string
	if err := sk.UnpackArgs(b.Name(), args, kw, "msg", &mv, "src?", &src, "proto?", &proto); err != nil {
		return nil, "", "", err
	}
	mo, err := toMsgObj(mv)
	if err != nil {
		return nil, "", "", err
	}
	if src == "" {
		src = mo.src
	}
	if proto == "" {
		proto = mo.proto
	}
	if proto == "" {
		proto = "udp"
	}
	return mo, src, proto, nil
}

func done(c *testCtx, r *Result) (sk.Value, error) {
	c.last = r
	return &resultValue{r: r}, nil
}

func routeRequest(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
	return routeMessage(th, b, args, kw, true)
}

func routeReply(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
	return routeMessage(th, b, args, kw, false)
}

// routeMessage is route.request (request true) and route.reply.
func routeMessage(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple, request bool) (sk.Value, error) {
	c, err := harnessOf(th, b)
	if err != nil {
		return nil, err
	}
	mo, src, proto, err := routeArgs(b, args, kw)
	if err != nil {
		return nil, err
	}
	if src == "" {
		src = "192.0.2.20:5060" // replies come from the callee side
		if request {
			src = "192.0.2.10:5060"
		}
	}
	msg, err := mo.fresh()
	if err != nil {
		return nil, err
	}
	var r *Result
	switch x := msg.(type) {
	case *sip.Request:
		if !request {
			return nil, fmt.Errorf("%q is a request: use route.request", mo.firstLine())
		}
		r, err = c.h.Request(x, src, proto)
	case *sip.Response:
		if request {
			return nil, fmt.Errorf("%q is a reply: use route.reply", mo.firstLine())
		}
		r, err = c.h.Reply(x, src, proto)
	}
	if err != nil {
		return nil, err
	}
	return done(c, r)
}

var routeTypes = map[string]core.RouteType{
	"request": core.RouteRequest, "failure": core.RouteFailure, "onreply": core.RouteTmReply, "branch": core.RouteBranch,
	"onsend": core.RouteOnsend, "reply": core.RouteReply, "event": core.RouteEvent,
}

func routeEvent(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
	c, err := harnessOf(th, b)
	if err != nil {
		return nil, err
	}
	var name, src, proto string
	typ := "event"
	var mv sk.Value = sk.None
	if err := sk.UnpackArgs(b.Name(), args, kw, "name", &name, "msg?", &mv, "src?", &src, "proto?", &proto, "type?", &typ); err != nil {
		return nil, err
	}
	rt, ok := routeTypes[typ]
	if !ok {
		return nil, fmt.Errorf("unknown route type %q (request, failure, onreply, branch, onsend, reply, event)", typ)
	}
	var msg sip.Message
	if mv != sk.None {
		mo, err := toMsgObj(mv)
		if err != nil {
			return nil, err
		}
		if msg, err = mo.fresh(); err != nil {
			return nil, err
		}
		if src == "" {
			src = mo.src
		}
		if proto == "" {
			proto = mo.proto
		}
	}
	if src == "" {
		src = "127.0.0.1:5060"
	}
	if proto == "" {
		proto = "udp"
	}
	r, err := c.h.Event(name, rt, msg, src, proto)
	if err != nil {
		return nil, err
	}
	return done(c, r)
}

func seconds(v sk.Value) (time.Duration, error) {
	switch x := v.(type) {
	case sk.Int:
		n, ok := x.Int64()
		if !ok {
			return 0, fmt.Errorf("seconds out of range")
		}
		return time.Duration(n) * time.Second, nil
	case sk.Float:
		return time.Duration(float64(x) * float64(time.Second)), nil
	}
	return 0, fmt.Errorf("got %s, want seconds (int or float)", v.Type())
}

func routeAdvance(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
	c, err := harnessOf(th, b)
	if err != nil {
		return nil, err
	}
	var v sk.Value
	if err := sk.UnpackPositionalArgs(b.Name(), args, kw, 1, &v); err != nil {
		return nil, err
	}
	d, err := seconds(v)
	if err != nil {
		return nil, err
	}
	if d < 0 {
		return nil, fmt.Errorf("time only moves forward")
	}
	return done(c, c.h.Advance(d))
}

func routeNow(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
	c, err := harnessOf(th, b)
	if err != nil {
		return nil, err
	}
	if err := sk.UnpackPositionalArgs(b.Name(), args, kw, 0); err != nil {
		return nil, err
	}
	return sk.Float(float64(c.h.Clock.Now().UnixNano()) / 1e9), nil
}

func routePending(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
	c, err := harnessOf(th, b)
	if err != nil {
		return nil, err
	}
	if err := sk.UnpackPositionalArgs(b.Name(), args, kw, 0); err != nil {
		return nil, err
	}
	return sk.MakeInt(c.h.Clock.Pending()), nil
}

func routeStats(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
	c, err := harnessOf(th, b)
	if err != nil {
		return nil, err
	}
	var sel string
	if err := sk.UnpackPositionalArgs(b.Name(), args, kw, 0, &sel); err != nil {
		return nil, err
	}
	var got map[string]int64
	if sel == "" {
		got = c.h.Env.Stats.Get()
	} else {
		got = c.h.Env.Stats.Get(sel)
	}
	keys := make([]string, 0, len(got))
	for k := range got {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	d := sk.NewDict(len(got))
	for _, k := range keys {
		d.SetKey(sk.String(k), sk.MakeInt64(got[k]))
	}
	return d, nil
}

// ---- sip ----

const (
	defaultClient = "192.0.2.10:5060"
	defaultServer = "192.0.2.20:5060"
)

func headerList(v sk.Value) ([]header, error) {
	var out []header
	str := func(x sk.Value) string {
		if s, ok := sk.AsString(x); ok {
			return s
		}
		return x.String()
	}
	switch x := v.(type) {
	case sk.NoneType:
		return nil, nil
	case *sk.Dict:
		for _, it := range x.Items() {
			out = append(out, header{str(it[0]), str(it[1])})
		}
	case *sk.List, sk.Tuple:
		it := sk.Iterate(x)
		defer it.Done()
		var e sk.Value
		for it.Next(&e) {
			p, ok := e.(sk.Tuple)
			if !ok || len(p) != 2 {
				return nil, fmt.Errorf("headers: want (name, value) pairs, got %s", e.Type())
			}
			out = append(out, header{str(p[0]), str(p[1])})
		}
	default:
		return nil, fmt.Errorf("headers: got %s, want a dict or a list of (name, value) pairs", v.Type())
	}
	return out, nil
}

func sipRequest(fixed string) func(*sk.Thread, *sk.Builtin, sk.Tuple, []sk.Tuple) (sk.Value, error) {
	return func(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
		s := reqSpec{method: fixed, src: defaultClient, proto: "udp", cseq: 1, maxForwards: 70, expires: -1}
		var headers sk.Value = sk.None
		contact, expires := "", sk.Value(sk.None)
		var ruri, fromURI, toURI string
		params := []any{}
		if fixed == "" {
			params = append(params, "method", &s.method)
		}
		params = append(params, "ruri?", &ruri, "src?", &s.src, "proto?", &s.proto, "from_uri?", &fromURI, "to_uri?", &toURI,
			"from_tag?", &s.fromTag, "to_tag?", &s.toTag, "call_id?", &s.callID, "cseq?", &s.cseq, "branch?", &s.branch,
			"max_forwards?", &s.maxForwards, "contact?", &contact, "expires?", &expires, "rport?", &s.rport,
			"headers?", &headers, "body?", &s.body, "content_type?", &s.contentType)
		if err := sk.UnpackArgs(b.Name(), args, kw, params...); err != nil {
			return nil, err
		}
		s.method = strings.ToUpper(s.method)
		if s.method == "" || strings.ContainsAny(s.method, " \t\r\n") {
			return nil, fmt.Errorf("bad method %q", s.method)
		}
		c := ctxOf(th)
		c.seq++
		n := strconv.Itoa(c.seq)
		host, _ := core.HostPort(s.src)
		if ruri == "" {
			ruri = "sip:bob@example.com"
			if s.method == "REGISTER" {
				ruri = "sip:example.com"
			}
		}
		if fromURI == "" {
			fromURI = "sip:alice@example.com"
		}
		if toURI == "" {
			toURI = ruri
			if s.method == "REGISTER" {
				toURI = fromURI
			}
		}
		s.ruri, s.fromURI, s.toURI = ruri, fromURI, toURI
		if s.fromTag == "" {
			s.fromTag = "tag" + n
		}
		if s.callID == "" {
			s.callID = "call" + n + "@" + strings.Trim(host, "[]")
		}
		if s.branch == "" {
			s.branch = "z9hG4bK-rt" + n
		}
		if contact == "" {
			switch s.method {
			case "INVITE", "REGISTER", "SUBSCRIBE", "REFER":
				u := uriUser(fromURI)
				if u != "" {
					u += "@"
				}
				contact = "<sip:" + u + s.src + ">"
			}
		}
		s.contact = contact
		if expires != sk.None {
			e, err := sk.AsInt32(expires)
			if err != nil {
				return nil, fmt.Errorf("expires: %v", err)
			}
			s.expires = e
		} else if s.method == "REGISTER" {
			s.expires = 3600
		}
		hs, err := headerList(headers)
		if err != nil {
			return nil, err
		}
		s.headers = hs
		if s.contentType == "" {
			s.contentType = "text/plain"
			if s.method == "INVITE" || s.method == "UPDATE" || s.method == "PRACK" || s.method == "ACK" {
				s.contentType = "application/sdp"
			}
		}
		text, err := s.build()
		if err != nil {
			return nil, err
		}
		mo, err := newMsgObj(text, s.src, strings.ToLower(s.proto))
		if err != nil {
			return nil, fmt.Errorf("built an unparsable message (%v):\n%s", err, text)
		}
		return mo, nil
	}
}

func sipReply(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
	var rv, headers sk.Value = nil, sk.None
	s := replySpec{ctype: "application/sdp"}
	var src string
	if err := sk.UnpackArgs(b.Name(), args, kw, "request", &rv, "code", &s.code, "reason?", &s.reason, "to_tag?", &s.toTag,
		"contact?", &s.contact, "headers?", &headers, "body?", &s.body, "content_type?", &s.ctype, "src?", &src); err != nil {
		return nil, err
	}
	mo, err := toMsgObj(rv)
	if err != nil {
		return nil, err
	}
	req, ok := mo.msg.(*sip.Request)
	if !ok {
		return nil, fmt.Errorf("%q is not a request", mo.firstLine())
	}
	hs, err := headerList(headers)
	if err != nil {
		return nil, err
	}
	s.headers = hs
	text, err := buildReply(req, mo.text, s)
	if err != nil {
		return nil, err
	}
	if src == "" {
		// A reply to a recorded message comes from where it was sent.
		src = mo.src
	}
	if src == "" {
		src = defaultServer
	}
	out, err := newMsgObj(text, src, mo.proto)
	if err != nil {
		return nil, fmt.Errorf("built an unparsable reply (%v):\n%s", err, text)
	}
	return out, nil
}

func inDialog(method string) func(*sk.Thread, *sk.Builtin, sk.Tuple, []sk.Tuple) (sk.Value, error) {
	return func(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
		var iv, rv sk.Value = nil, sk.None
		if method == "ACK" {
			if err := sk.UnpackArgs(b.Name(), args, kw, "invite", &iv, "reply?", &rv); err != nil {
				return nil, err
			}
		} else if err := sk.UnpackArgs(b.Name(), args, kw, "invite", &iv); err != nil {
			return nil, err
		}
		mo, err := toMsgObj(iv)
		if err != nil {
			return nil, err
		}
		inv, ok := mo.msg.(*sip.Request)
		if !ok || inv.Method != sip.INVITE {
			return nil, fmt.Errorf("%q is not an INVITE", mo.firstLine())
		}
		var reply sip.Message
		if rv != sk.None {
			ro, err := toMsgObj(rv)
			if err != nil {
				return nil, err
			}
			reply = ro.msg
		}
		text, err := buildInDialog(method, inv, mo.text, reply)
		if err != nil {
			return nil, err
		}
		return newMsgObj(text, mo.src, mo.proto)
	}
}

var (
	sipCancel = inDialog("CANCEL")
	sipAck    = inDialog("ACK")
)

func sipParse(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
	var text, src, proto string
	if err := sk.UnpackArgs(b.Name(), args, kw, "text", &text, "src?", &src, "proto?", &proto); err != nil {
		return nil, err
	}
	return newMsgObj(text, src, proto)
}

// ---- state ----

func stateShv(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
	c, err := harnessOf(th, b)
	if err != nil {
		return nil, err
	}
	var name string
	var v sk.Value
	if err := sk.UnpackPositionalArgs(b.Name(), args, kw, 1, &name, &v); err != nil {
		return nil, err
	}
	if v == nil {
		return starlark.FromVal(c.h.Env.Shv.Get(name)), nil
	}
	val, err := starlark.ToVal(v)
	if err != nil {
		return nil, err
	}
	c.h.Env.Shv.Set(name, val)
	return sk.None, nil
}

// stateRPC calls an RPC method in process, as an admin, through the same
// registry the daemon serves (kamd's own methods and the modules'): the way
// to set up or inspect module state — registrations, htables, statistics —
// through the code an operator would use.
func stateRPC(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
	c, err := harnessOf(th, b)
	if err != nil {
		return nil, err
	}
	if len(kw) > 0 {
		return nil, fmt.Errorf("RPC parameters are positional")
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("missing method name")
	}
	method, ok := sk.AsString(args[0])
	if !ok {
		return nil, fmt.Errorf("method: got %s, want str", args[0].Type())
	}
	params := make([]any, 0, len(args)-1)
	for i, a := range args[1:] {
		v, err := fromStarlark(a)
		if err != nil {
			return nil, fmt.Errorf("%s: param %d: %v", method, i+1, err)
		}
		params = append(params, v)
	}
	raw, err := c.h.Call(method, params...)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", method, err)
	}
	var x any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&x); err != nil {
		return nil, err
	}
	return jsonToStarlark(x), nil
}

// fromStarlark converts an RPC param: str, int, float, bool, None, lists
// and dicts with str keys.
func fromStarlark(v sk.Value) (any, error) {
	switch x := v.(type) {
	case sk.NoneType:
		return nil, nil
	case sk.String:
		return string(x), nil
	case sk.Bool:
		return bool(x), nil
	case sk.Int:
		if i, ok := x.Int64(); ok {
			return i, nil
		}
		return nil, fmt.Errorf("integer %s out of range", x)
	case sk.Float:
		return float64(x), nil
	case sk.Indexable:
		out := make([]any, x.Len())
		for i := range out {
			e, err := fromStarlark(x.Index(i))
			if err != nil {
				return nil, err
			}
			out[i] = e
		}
		return out, nil
	case *sk.Dict:
		out := map[string]any{}
		for _, it := range x.Items() {
			k, ok := sk.AsString(it[0])
			if !ok {
				return nil, fmt.Errorf("dict keys must be str, got %s", it[0].Type())
			}
			e, err := fromStarlark(it[1])
			if err != nil {
				return nil, err
			}
			out[k] = e
		}
		return out, nil
	}
	return nil, fmt.Errorf("cannot pass a %s", v.Type())
}

// toStarlark converts an RPC result through JSON.
func toStarlark(v any) (sk.Value, error) {
	if v == nil {
		return sk.None, nil
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var x any
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&x); err != nil {
		return nil, err
	}
	return jsonToStarlark(x), nil
}

func jsonToStarlark(x any) sk.Value {
	switch y := x.(type) {
	case nil:
		return sk.None
	case bool:
		return sk.Bool(y)
	case string:
		return sk.String(y)
	case json.Number:
		if i, err := y.Int64(); err == nil {
			return sk.MakeInt64(i)
		}
		f, _ := y.Float64()
		return sk.Float(f)
	case []any:
		out := make([]sk.Value, len(y))
		for i, e := range y {
			out[i] = jsonToStarlark(e)
		}
		return sk.NewList(out)
	case map[string]any:
		keys := make([]string, 0, len(y))
		for k := range y {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		d := sk.NewDict(len(y))
		for _, k := range keys {
			d.SetKey(sk.String(k), jsonToStarlark(y[k]))
		}
		return d
	}
	return sk.String(fmt.Sprint(x))
}

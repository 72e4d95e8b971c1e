package transport

// Fuzz targets for issue 16 (message integrity): attacker bytes go through
// the real receive path (Transport.process: parse, RequestProblem, FixVia,
// the starlark engine and its modules, the onsend wrapper, Transport.Send's
// serialisation) for the stateless, stateful and default scripts, and
// every message kamd would put on the wire is checked:
//
//   - no panic (process recovers and logs one: the log handler fails the input);
//   - no input takes more than a second;
//   - every message kamd sends re-parses with sipgo's parser (the one kamd
//     uses) and no header in it holds a CR, LF or NUL (no bare CR/LF, no
//     folding, no NUL anywhere in the header section);
//   - every ftag (in the Record-Routes kamd added), received/rport (in
//     the Via of the sender) and branch (in kamd's own Via) kamd wrote is a
//     token (received: an IP address).
//
// Seeds: testdata/fuzz/<FuzzName>/ holds the RFC 4475/5118 torture corpus
// (../shared/torture/corpus) and the exact messages of issue 16, so a
// plain `go test` replays them. Fuzz a target with
//
//	go test -run XXX -fuzz FuzzStateful -fuzztime 3m -parallel 1 ./kamd/transport/

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/starlark"

	_ "github.com/kamgo/kamgo/modules/all"
)

func FuzzStateless(f *testing.F) { fuzzScript(f, "../../examples/kemi/route.star") }
func FuzzStateful(f *testing.F)  { fuzzScript(f, "../../examples/stateful/route.star") }
func FuzzDefault(f *testing.F)   { fuzzScript(f, "../default.star") }

// fuzzSrc is where fuzzed messages come from.
var fuzzSrc = struct {
	ip   string
	port int
}{"192.0.2.10", 5070}

func fuzzScript(f *testing.F, script string) {
	k := newFuzzKamd(f, script)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, proto := range []string{"udp", "tcp"} {
			k.run(t, proto, data)
		}
	})
}

// fuzzKamd is one kamd (env, engine, modules, transport) whose sends are
// checked instead of sent.
type fuzzKamd struct {
	tr     *Transport
	parser *sip.Parser
	socks  map[string]core.Socket

	mu   sync.Mutex
	in   *sip.Request // the request being handled, for the oracles
	raw  []byte       // its bytes
	errs []string     // oracle failures since the last check
}

// newFuzzKamd wires a kamd as the daemon does (modules Init/Start, engine,
// transport as the Sender behind the onsend wrapper), with the transport's
// sendHook checking every outgoing message. The one place that builds it.
func newFuzzKamd(tb testing.TB, script string) *fuzzKamd {
	src, err := os.ReadFile(script)
	if err != nil {
		tb.Fatal(err)
	}
	k := &fuzzKamd{parser: sip.NewParser(), socks: map[string]core.Socket{}}
	env := core.NewEnv(nil)
	env.Log = slog.New(&fuzzLog{k: k})
	dir := tb.TempDir()
	env.DBPath = filepath.Join(dir, "kamgo.db")
	if env.DB, err = core.OpenDB(env.DBPath); err != nil {
		tb.Fatal(err)
	}
	eng := starlark.New(env)
	if _, err := eng.Load(filepath.Base(script), src); err != nil {
		tb.Fatal(err)
	}
	env.SetSockets([]core.Socket{{Proto: "udp", IP: "127.0.0.1", Port: 5060}, {Proto: "tcp", IP: "127.0.0.1", Port: 5060}})
	for _, s := range env.Sockets() {
		k.socks[s.Proto] = s
	}
	k.tr = New(env, eng, Config{Workers: 1})
	k.tr.sendHook = k.check
	env.Sender = eng.WrapSender(k.tr)
	ctx, cancel := context.WithCancel(context.Background())
	for _, m := range eng.Modules {
		if m.Init != nil {
			if err := m.Init(); err != nil {
				tb.Fatalf("module %s: %v", m.Name, err)
			}
		}
	}
	for _, m := range eng.Modules {
		if m.Start != nil {
			if err := m.Start(ctx); err != nil {
				tb.Fatalf("module %s: %v", m.Name, err)
			}
		}
	}
	tb.Cleanup(func() {
		cancel()
		for i := len(eng.Modules) - 1; i >= 0; i-- {
			if m := eng.Modules[i]; m.Stop != nil {
				m.Stop()
			}
		}
		_ = env.DB.Close()
	})
	return k
}

// run hands data to the transport as the UDP reader (inline) or a stream
// worker would, and reports the oracles' failures.
func (k *fuzzKamd) run(t *testing.T, proto string, data []byte) {
	if len(data) < 4 || isKeepalive(data) {
		return // the UDP reader drops them before parsing
	}
	j := job{data: data, sock: k.socks[proto], proto: proto, srcIP: fuzzSrc.ip, srcPort: fuzzSrc.port, at: time.Now()}
	if proto != "udp" {
		j.connID = "fuzz"
	}
	in, _ := sip.NewParser().ParseSIP(bytes.Clone(data))
	req, _ := in.(*sip.Request)
	k.mu.Lock()
	k.in, k.raw, k.errs = req, data, nil
	k.mu.Unlock()
	start := time.Now()
	k.tr.process(k.parser, j)
	if d := time.Since(start); d > time.Second {
		t.Errorf("%s: handling took %v", proto, d)
	}
	k.mu.Lock()
	errs := k.errs
	k.in, k.raw, k.errs = nil, nil, nil
	k.mu.Unlock()
	for _, e := range errs {
		t.Errorf("%s: %s\ninput: %q", proto, e, data)
	}
}

// report records an oracle failure. A failure caused by request bytes
// kamd passed on verbatim (forwarded or echoed in a reply) is marked as
// such: refusing them is the request checks' job (RequestProblem, the
// door's 400s), while a bad value kamd built itself is an escaping bug.
// KAMGO_FUZZ_BUILT_ONLY=1 ignores the first kind, to fuzz the second.
func (k *fuzzKamd) report(verbatim bool, format string, a ...any) {
	if verbatim {
		if os.Getenv("KAMGO_FUZZ_BUILT_ONLY") == "1" {
			return
		}
		format = "[request bytes passed on] " + format
	}
	k.failf(format, a...)
}

// passedOn: the header line carries request bytes kamd forwards or
// echoes (possibly re-serialised by sipgo) rather than a header kamd
// builds: a reply's Via/From/To/Call-ID/CSeq, or any header of a
// forwarded request but the Record-Routes and the Via kamd adds.
func passedOn(line string, reply bool, raw []byte) bool {
	if line == "" {
		return false
	}
	if bytes.Contains(raw, []byte(line)) {
		return true
	}
	name, _, _ := strings.Cut(line, ":")
	switch c := core.CanonicalHeader(name); {
	case reply:
		return c == "via" || c == "from" || c == "to" || c == "call-id" || c == "cseq" || c == "timestamp"
	case c == "record-route":
		return false
	case c == "via":
		return !strings.Contains(line, "127.0.0.1:5060;branch=")
	default:
		return true
	}
}

// unparsablePassedOn: every header line of data that does not parse on
// its own is passed on (or the start line of a forwarded request does not
// parse); when no single line fails
// (a CSeq number out of range), the message did not parse in context: the
// request's own bytes.
func unparsablePassedOn(data []byte, reply bool, raw []byte) bool {
	head, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	lines := strings.Split(string(head), "\r\n")
	if _, err := sip.NewParser().ParseSIP([]byte(lines[0] + "\r\nContent-Length: 0\r\n\r\n")); err != nil {
		// A reply's start line is kamd's; a forwarded request's method,
		// R-URI and version are the request's (re-serialised).
		return !reply || bytes.Contains(raw, []byte(lines[0]))
	}
	for _, l := range lines[1:] {
		if _, err := core.ParseHeaderText(l); err != nil && !passedOn(l, reply, raw) {
			return false
		}
	}
	return true
}

func (k *fuzzKamd) failf(format string, a ...any) {
	k.mu.Lock()
	k.errs = append(k.errs, fmt.Sprintf(format, a...))
	k.mu.Unlock()
}

// check is the transport's sendHook: the oracles on one outgoing message.
func (k *fuzzKamd) check(o *core.Outgoing, data []byte) error {
	k.mu.Lock()
	in, raw := k.in, k.raw
	k.mu.Unlock()
	if line, err := checkWire(data); err != nil {
		k.report(passedOn(line, o.Kind == core.OutReply, raw), "sent %v to %v: %v\n%q", o.Kind, o.Dst, err, data)
		return nil
	}
	msg, err := sip.NewParser().ParseSIP(bytes.Clone(data))
	if err != nil {
		k.report(unparsablePassedOn(data, o.Kind == core.OutReply, raw), "sent %v does not re-parse: %v\n%q", o.Kind, err, data)
		return nil
	}
	for _, e := range checkWritten(msg, in) {
		k.failf("sent %v: %s\n%q", o.Kind, e, data)
	}
	return nil
}

// checkWire: the header section is CRLF-terminated lines with no bare CR
// or LF, no folding and no NUL, ended by an empty line. On failure it
// returns the offending line (bare CR/LF split as sent).
func checkWire(data []byte) (string, error) {
	end := bytes.Index(data, []byte("\r\n\r\n"))
	if end < 0 {
		return "", fmt.Errorf("no empty line after the headers")
	}
	lines := strings.Split(string(data[:end]), "\r\n")
	for i, l := range lines {
		switch {
		case strings.ContainsAny(l, "\r\n\x00"):
			return l, fmt.Errorf("line %d holds a CR, LF or NUL: %q", i+1, l)
		case l == "":
			return "", fmt.Errorf("empty line %d inside the headers", i+1)
		case i > 0 && (l[0] == ' ' || l[0] == '\t'):
			return l, fmt.Errorf("folded line %d: %q", i+1, l)
		}
	}
	return "", nil
}

// checkWritten: the values kamd itself wrote are tokens (or IPs).
func checkWritten(msg sip.Message, in *sip.Request) []string {
	var errs []string
	hs := core.Headers(msg)
	for _, h := range hs {
		if v := h.Value(); strings.ContainsAny(v, "\r\n\x00") {
			errs = append(errs, fmt.Sprintf("header %s holds a CR, LF or NUL: %q", h.Name(), v))
		}
	}
	vias := []*sip.ViaHeader{}
	for _, h := range hs {
		if v, ok := h.(*sip.ViaHeader); ok {
			vias = append(vias, v)
		}
	}
	senderVia := 0 // the Via kamd adds received/rport to
	if req, ok := msg.(*sip.Request); ok {
		if len(vias) == 0 {
			return append(errs, "request without Via")
		}
		if b, _ := vias[0].Params.Get("branch"); !core.IsToken(b) {
			errs = append(errs, fmt.Sprintf("our Via branch %q is not a token", b))
		}
		senderVia = 1
		// The Record-Routes kamd added are the first ones beyond those received.
		var nIn int
		if in != nil {
			nIn = len(in.GetHeaders("Record-Route"))
		}
		rrs := req.GetHeaders("Record-Route")
		for i := 0; i < len(rrs)-nIn; i++ {
			rr, ok := rrs[i].(*sip.RecordRouteHeader)
			if !ok {
				errs = append(errs, fmt.Sprintf("Record-Route %q did not parse", rrs[i].Value()))
				continue
			}
			if ft, ok := rr.Address.UriParams.Get("ftag"); ok && !(core.IsToken(ft) && core.IsURIParamValue(ft)) {
				errs = append(errs, fmt.Sprintf("ftag %q is not a token", ft))
			}
		}
	}
	if senderVia < len(vias) && in != nil && in.Via() != nil {
		v, orig := vias[senderVia], in.Via()
		if rcv, ok := v.Params.Get("received"); ok {
			if was, _ := orig.Params.Get("received"); rcv != was {
				if _, err := netip.ParseAddr(strings.Trim(rcv, "[]")); err != nil {
					errs = append(errs, fmt.Sprintf("received %q is not an IP address", rcv))
				}
			}
		}
		if rp, ok := v.Params.Get("rport"); ok && rp != "" {
			if was, _ := orig.Params.Get("rport"); rp != was && !core.IsToken(rp) {
				errs = append(errs, fmt.Sprintf("rport %q is not a token", rp))
			}
		}
	}
	return errs
}

// fuzzLog fails the input on a recovered panic; other records are dropped.
type fuzzLog struct {
	k *fuzzKamd
}

func (l *fuzzLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *fuzzLog) Handle(_ context.Context, r slog.Record) error {
	// process logs "panic while handling message"; the engine turns a
	// panic in a KSR function into a script error "panic in <route>: ...".
	if a := fmt.Sprint(attrs(r)); strings.HasPrefix(r.Message, "panic") || strings.Contains(a, "panic in ") {
		l.k.failf("%s: %s", r.Message, a)
	}
	return nil
}
func (l *fuzzLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *fuzzLog) WithGroup(string) slog.Handler      { return l }

func attrs(r slog.Record) []string {
	var out []string
	r.Attrs(func(a slog.Attr) bool { out = append(out, a.String()); return true })
	return out
}

// Package sanity is Kamailio's sanity module: syntax checks on received
// requests, answered with a precise 4xx/5xx reply on failure.
package sanity

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

func init() { core.Register(New) }

// Kamailio's check bits.
const (
	RURISipVersion  = 1
	RURIScheme      = 2
	RequiredHeaders = 4
	ViaSipVersion   = 8  // no-op, as in Kamailio
	ViaProtocol     = 16 // no-op, as in Kamailio
	CSeqMethod      = 32
	CSeqValue       = 64
	ContentLength   = 128
	ExpiresValue    = 256
	ProxyRequire    = 512
	ParseURIs       = 1024
	Digest          = 2048
	DupTags         = 4096
	Authorization   = 8192
	Via1Header      = 16384

	URIRuri    = 1
	URIFrom    = 2
	URITo      = 4
	URIContact = 8

	DefaultChecks    = 3047
	DefaultURIChecks = 7
)

// failure is a failed check: the reply the module sends.
type failure struct {
	code   int
	reason string
	hdrs   []sip.Header
}

func fail(code int, reason string) *failure { return &failure{code: code, reason: reason} }

func validUint32(s string) bool {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > 10 {
		return false
	}
	_, err := strconv.ParseUint(s, 10, 32)
	return err == nil
}

// addrCheck is the From and To URI check: u is nil when the header is missing.
func addrCheck(name string, u *sip.Uri) *failure {
	if u == nil {
		return fail(400, "Missing "+name+" Header")
	}
	if !uriOK(u) {
		return fail(400, "Bad "+name+" URI")
	}
	return nil
}

func uriOK(u *sip.Uri) bool {
	switch strings.ToLower(u.Scheme) {
	case "sip", "sips":
		return u.Host != ""
	case "tel", "tels":
		return u.Raw() != ""
	}
	return false
}

func countTags(p sip.HeaderParams) int {
	n := 0
	for _, kv := range p {
		if strings.EqualFold(kv.K, "tag") {
			n++
		}
	}
	return n
}

// digestOK checks one credentials header: Digest scheme with username,
// realm, nonce, uri and response present and non-empty. notDigest reports
// another scheme.
func digestOK(value string) (ok, notDigest bool) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(value), " ")
	if !strings.EqualFold(scheme, "digest") {
		return false, true
	}
	got := map[string]string{}
	for _, part := range splitParams(rest) {
		k, v, found := strings.Cut(part, "=")
		if !found {
			continue
		}
		got[strings.ToLower(strings.TrimSpace(k))] = strings.Trim(strings.TrimSpace(v), `"`)
	}
	for _, k := range []string{"username", "realm", "nonce", "uri", "response"} {
		if got[k] == "" {
			return false, false
		}
	}
	return true, false
}

// splitParams splits "a=1, b=\"x,y\"" on commas outside quotes.
func splitParams(s string) []string {
	var out []string
	inQ, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			inQ = !inQ
		case ',':
			if !inQ {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

type module struct {
	env          *core.Env
	defChecks    atomic.Int64
	defURIChecks atomic.Int64
	noreply      atomic.Bool
	mu           sync.RWMutex
	proxyReq     []string
}

func (s *module) check(m *core.Msg, checks, uriChecks int64) *failure {
	msg := m.Message()
	req := m.Req
	if req != nil && checks&RURISipVersion != 0 && !strings.EqualFold(req.SipVersion, "SIP/2.0") {
		return fail(505, "Version Not Supported (R-URI)")
	}
	if req != nil && checks&RURIScheme != 0 {
		switch strings.ToLower(req.Recipient.Scheme) {
		case "sip", "sips", "tel", "tels":
		default:
			return fail(416, "Unsupported URI Scheme in Request URI")
		}
	}
	if checks&RequiredHeaders != 0 {
		if msg.From() == nil || msg.To() == nil || msg.CSeq() == nil || msg.CallID() == nil || msg.Via() == nil {
			return fail(400, "Missing Required Header in Request")
		}
	}
	if checks&(CSeqMethod|CSeqValue) != 0 && msg.CSeq() == nil {
		return fail(400, "Missing CSeq header")
	}
	if req != nil && checks&CSeqMethod != 0 {
		cs := msg.CSeq()
		if cs.MethodName == "" {
			return fail(400, "Missing method in CSeq header")
		}
		if !strings.EqualFold(string(cs.MethodName), string(req.Method)) { // sipgo upper-cases only the request-line method
			return fail(400, "CSeq method does not match request method")
		}
	}
	if checks&CSeqValue != 0 && msg.CSeq().SeqNo > 1<<31-1 {
		return fail(400, "CSeq number is illegal")
	}
	if checks&ContentLength != 0 {
		if cl := msg.ContentLength(); cl != nil && int(*cl) != len(msg.Body()) {
			return fail(400, "Content-Length mis-match")
		}
	}
	if checks&ExpiresValue != 0 {
		if h := core.FirstHeader(msg, "Expires"); h != nil {
			v := strings.TrimSpace(h.Value())
			if v == "" {
				return fail(400, "Missing number in Expires header")
			}
			if !validUint32(v) {
				return fail(400, "Expires value is illegal")
			}
		}
	}
	if req != nil && checks&ProxyRequire != 0 {
		s.mu.RLock()
		supported := s.proxyReq
		s.mu.RUnlock()
		for _, h := range core.FindHeaders(msg, "Proxy-Require") {
			for _, tok := range strings.Split(h.Value(), ",") {
				tok = strings.TrimSpace(tok)
				if tok == "" {
					continue
				}
				known := false
				for _, x := range supported {
					if x == tok {
						known = true
						break
					}
				}
				if !known {
					f := fail(420, "Bad Extension")
					f.hdrs = []sip.Header{sip.NewHeader("Unsupported", tok)}
					return f
				}
			}
		}
	}
	if checks&ParseURIs != 0 {
		if req != nil && uriChecks&URIRuri != 0 && !uriOK(&req.Recipient) {
			return fail(400, "Bad Request URI")
		}
		if uriChecks&URIFrom != 0 {
			var u *sip.Uri
			if f := msg.From(); f != nil {
				u = &f.Address
			}
			if f := addrCheck("From", u); f != nil {
				return f
			}
		}
		if uriChecks&URITo != 0 {
			var u *sip.Uri
			if t := msg.To(); t != nil {
				u = &t.Address
			}
			if f := addrCheck("To", u); f != nil {
				return f
			}
		}
		if uriChecks&URIContact != 0 {
			for _, h := range core.FindHeaders(msg, "Contact") {
				c, ok := h.(*sip.ContactHeader)
				if !ok {
					return fail(400, "Bad Contact Header")
				}
				if !c.Address.Wildcard && !uriOK(&c.Address) {
					return fail(400, "Bad Contact URI")
				}
			}
		}
	}
	if checks&(Digest|Authorization) != 0 {
		creds := append(core.FindHeaders(msg, "Authorization"), core.FindHeaders(msg, "Proxy-Authorization")...)
		for _, h := range creds {
			ok, notDigest := digestOK(h.Value())
			if ok {
				continue
			}
			if notDigest && checks&Digest == 0 {
				continue // Authorization check: other schemes pass
			}
			return fail(400, "Bad Credentials")
		}
	}
	if checks&DupTags != 0 {
		if (msg.From() != nil && countTags(msg.From().Params) > 1) || (msg.To() != nil && countTags(msg.To().Params) > 1) {
			return fail(400, "Duplicated To/From tags")
		}
	}
	if checks&Via1Header != 0 {
		if v := msg.Via(); v == nil || v.Host == "" {
			return fail(400, "Bad Via Header")
		}
	}
	return nil
}

type lastFailure struct{ f *failure }

func (s *module) run(m *core.Msg, checks, uriChecks int64) (core.Val, error) {
	if m.Message() == nil {
		return core.Int(-1), nil
	}
	f := s.check(m, checks, uriChecks)
	if f == nil {
		return core.Int(1), nil
	}
	s.env.Log.Info("sanity check failed", "code", f.code, "reason", f.reason, "method", m.Method(), "src", m.SrcIP, "at", m.Pos())
	m.SetExt("sanity", &lastFailure{f})
	if m.Req != nil && !s.noreply.Load() {
		s.reply(m, f)
	}
	return core.Int(-1), nil
}

func (s *module) reply(m *core.Msg, f *failure) {
	if m.Req == nil || m.Req.IsAck() {
		return
	}
	m.ReplyHeaders = append(m.ReplyHeaders, f.hdrs...)
	if err := m.SendReply(f.code, f.reason); err != nil {
		s.env.Log.Warn("sanity: cannot send reply", "code", f.code, "err", err, "at", m.Pos())
	}
}

// New builds the sanity module.
func New(env *core.Env) *core.Module {
	s := &module{env: env}
	var autodrop atomic.Int64 // kept only so the value reads back
	return core.ApplyDefaults(&core.Module{
		Name: "sanity",
		Doc:  "SIP syntax checks with automatic error replies",
		Params: []core.Param{
			{Name: "default_checks", Type: core.ArgInt, Default: core.Int(DefaultChecks),
				Doc: "checks run by sanity_check_defaults (sum of check bits)",
				Set: func(v core.Val) error {
					if v.Int < 0 || v.Int >= 1<<15 {
						return fmt.Errorf("default_checks %d out of range 0..32767", v.Int)
					}
					s.defChecks.Store(v.Int)
					return nil
				},
				Get: func() core.Val { return core.Int(int(s.defChecks.Load())) }},
			{Name: "uri_checks", Type: core.ArgInt, Default: core.Int(DefaultURIChecks),
				Doc: "URIs checked by the parse-uri check: 1 R-URI, 2 From, 4 To, 8 Contact",
				Set: func(v core.Val) error {
					if v.Int < 0 || v.Int > 15 {
						return fmt.Errorf("uri_checks %d out of range 0..15", v.Int)
					}
					s.defURIChecks.Store(v.Int)
					return nil
				},
				Get: func() core.Val { return core.Int(int(s.defURIChecks.Load())) }},
			{Name: "proxy_require", Type: core.ArgStr, Default: core.Str(""),
				Doc: "comma-separated list of supported Proxy-Require extensions",
				Set: func(v core.Val) error {
					var l []string
					for _, t := range strings.Split(v.Str, ",") {
						if t = strings.TrimSpace(t); t != "" {
							l = append(l, t)
						}
					}
					s.mu.Lock()
					s.proxyReq = l
					s.mu.Unlock()
					return nil
				},
				Get: func() core.Val {
					s.mu.Lock()
					defer s.mu.Unlock()
					return core.Str(strings.Join(s.proxyReq, ","))
				}},
			{Name: "noreply", Type: core.ArgInt, Default: core.Int(0),
				Doc: "1: do not reply on failure; the script may call sanity_reply()",
				Set: func(v core.Val) error { s.noreply.Store(v.Int != 0); return nil },
				Get: func() core.Val { return core.Int01(s.noreply.Load()) }},
			{Name: "autodrop", Type: core.ArgInt, Default: core.Int(1),
				Doc: "accepted for compatibility; ignored, as in Kamailio's KEMI (sanity_check never returns 0)",
				Set: func(v core.Val) error { autodrop.Store(v.Int); return nil },
				Get: func() core.Val { return core.Int(int(autodrop.Load())) }},
		},
		Funcs: []core.Func{
			{Name: "sanity_check", Args: []core.ArgType{core.ArgInt, core.ArgInt}, Ret: core.RetInt,
				Doc: "(msg_checks, uri_checks) 1 ok; -1 failed (a 4xx/5xx reply was already sent, never to ACK)",
				Fn: func(m *core.Msg, a []core.Val) (core.Val, error) {
					if a[0].Int < 0 || a[1].Int < 0 {
						return core.Null, fmt.Errorf("sanity_check: negative check mask")
					}
					return s.run(m, a[0].Int, a[1].Int)
				}},
			{Name: "sanity_check_defaults", Ret: core.RetInt,
				Doc: "sanity_check with the default_checks and uri_checks modparams",
				Fn: func(m *core.Msg, _ []core.Val) (core.Val, error) {
					return s.run(m, s.defChecks.Load(), s.defURIChecks.Load())
				}},
			{Name: "sanity_reply", Ret: core.RetInt, Routes: core.RouteRequest,
				Doc: "send the reply of the last failed check (with noreply=1); 1 sent, -1 nothing to send",
				Fn: func(m *core.Msg, _ []core.Val) (core.Val, error) {
					lf, ok := m.Ext["sanity"].(*lastFailure)
					if !ok || m.Req == nil || m.Replied {
						return core.Int(-1), nil
					}
					s.reply(m, lf.f)
					return core.Int(1), nil
				}},
		},
	})
}

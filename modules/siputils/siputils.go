// Package siputils is Kamailio's siputils module: message and URI tests,
// R-URI parameter edits, URI comparison and options_reply.
package siputils

import (
	"fmt"
	"strings"
	"sync"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

func init() { core.Register(New) }

func paramIndex(p sip.HeaderParams, name string) int {
	for i, kv := range p {
		if strings.EqualFold(kv.K, name) {
			return i
		}
	}
	return -1
}

// parseURI accepts sip:, sips:, tel: and tels: URIs (what Kamailio's parse_uri accepts).
func parseURI(s string) (*sip.Uri, error) {
	if err := core.CheckText("URI", s); err != nil {
		return nil, err
	}
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "<") && strings.HasSuffix(s, ">") {
		s = s[1 : len(s)-1]
	}
	var u sip.Uri
	if err := sip.ParseUri(s, &u); err != nil {
		return nil, err
	}
	switch strings.ToLower(u.Scheme) {
	case "sip", "sips":
		if u.Host == "" || strings.ContainsAny(u.Host, " \t<>\"") {
			return nil, fmt.Errorf("no valid host in %q", s)
		}
	case "tel", "tels":
		if u.Raw() == "" {
			return nil, fmt.Errorf("empty tel URI %q", s)
		}
	default:
		return nil, fmt.Errorf("unsupported URI scheme in %q", s)
	}
	return &u, nil
}

func defaultPort(u *sip.Uri) int {
	if u.Port != 0 {
		return u.Port
	}
	if strings.EqualFold(u.Scheme, "sips") {
		return 5061
	}
	return 5060
}

// uriEqual compares two URIs per RFC 3261 19.1.4.
func uriEqual(a, b *sip.Uri) bool {
	if !strings.EqualFold(a.Scheme, b.Scheme) {
		return false
	}
	if a.Raw() != "" || b.Raw() != "" {
		return strings.EqualFold(a.Raw(), b.Raw())
	}
	if a.User != b.User || a.Password != b.Password || !strings.EqualFold(a.Host, b.Host) || a.Port != b.Port {
		return false
	}
	// transport, user, ttl, method and maddr must match if present in either;
	// other params only when present in both.
	for _, kv := range a.UriParams {
		j := paramIndex(b.UriParams, kv.K)
		if j < 0 {
			switch strings.ToLower(kv.K) {
			case "transport", "user", "ttl", "method", "maddr":
				return false
			}
			continue
		}
		if !strings.EqualFold(kv.V, b.UriParams[j].V) {
			return false
		}
	}
	for _, kv := range b.UriParams {
		if paramIndex(a.UriParams, kv.K) < 0 {
			switch strings.ToLower(kv.K) {
			case "transport", "user", "ttl", "method", "maddr":
				return false
			}
		}
	}
	if len(a.Headers) != len(b.Headers) {
		return false
	}
	for _, kv := range a.Headers {
		j := paramIndex(b.Headers, kv.K)
		if j < 0 || kv.V != b.Headers[j].V {
			return false
		}
	}
	return true
}

// aorEqual compares scheme, user, host and port (absent port = default port).
func aorEqual(a, b *sip.Uri) bool {
	if a.Raw() != "" || b.Raw() != "" {
		return strings.EqualFold(a.Scheme, b.Scheme) && a.Raw() == b.Raw()
	}
	return strings.EqualFold(a.Scheme, b.Scheme) && a.User == b.User && strings.EqualFold(a.Host, b.Host) && defaultPort(a) == defaultPort(b)
}

// charsRet is Kamailio's convention for is_numeric & co: -2 empty, -1 bad char, 1 ok.
func charsRet(s string, ok func(i int, c byte) bool) core.Val {
	if s == "" {
		return core.Int(-2)
	}
	for i := 0; i < len(s); i++ {
		if !ok(i, s[i]) {
			return core.Int(-1)
		}
	}
	return core.Int(1)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

type options struct {
	mu                                sync.RWMutex
	accept, enc, lang, support, allow string
}

// siputils is one module instance; its KSR functions are its methods,
// named in the table New builds (KSR.siputils.has_totag is su.hasTotag).
type siputils struct {
	env *core.Env
	opt *options
}

// New builds the siputils module.
func New(env *core.Env) *core.Module {
	opt := &options{}
	su := &siputils{env: env, opt: opt}
	strParam := func(name, doc, def string, dst *string) core.Param {
		return core.Param{Name: name, Type: core.ArgStr, Default: core.Str(def), Doc: doc,
			Set: func(v core.Val) error {
				if err := core.CheckText(name, v.Str); err != nil {
					return err
				}
				opt.mu.Lock()
				*dst = v.Str
				opt.mu.Unlock()
				return nil
			},
			Get: func() core.Val {
				opt.mu.RLock()
				defer opt.mu.RUnlock()
				return core.Str(*dst)
			}}
	}
	s1 := []core.ArgType{core.ArgStr}
	s2 := []core.ArgType{core.ArgStr, core.ArgStr}
	req := func(f func(m *core.Msg, a []core.Val) (core.Val, error)) func(m *core.Msg, a []core.Val) (core.Val, error) {
		return func(m *core.Msg, a []core.Val) (core.Val, error) {
			if m.Req == nil {
				return core.Null, core.ErrNoRequest
			}
			return f(m, a)
		}
	}
	cmp := func(name string, eq func(a, b *sip.Uri) bool) core.Func {
		return core.Func{Name: name, Args: s2, Ret: core.RetInt,
			Fn: func(m *core.Msg, a []core.Val) (core.Val, error) {
				u1, err1 := parseURI(a[0].Str)
				u2, err2 := parseURI(a[1].Str)
				if err1 != nil || err2 != nil {
					return core.Int(-2), nil
				}
				return core.IntRet(eq(u1, u2)), nil
			}}
	}
	cmpURI := cmp("cmp_uri", uriEqual)
	cmpURI.Doc = "(u1, u2) RFC 3261 19.1.4 URI comparison: 1 equal, -1 different, -2 a URI does not parse"
	cmpAOR := cmp("cmp_aor", aorEqual)
	cmpAOR.Doc = "(u1, u2) compare scheme, user, host and port (default port filled in): 1 equal, -1 different, -2 parse error"
	return core.ApplyDefaults(&core.Module{
		Name: "siputils",
		Doc:  "SIP utilities: message and URI tests, R-URI params, options_reply",
		Params: []core.Param{
			strParam("options_accept", "Accept header of options_reply", "*/*", &opt.accept),
			strParam("options_accept_encoding", "Accept-Encoding header of options_reply", "", &opt.enc),
			strParam("options_accept_language", "Accept-Language header of options_reply", "en", &opt.lang),
			strParam("options_support", "Supported header of options_reply", "", &opt.support),
			strParam("options_allow", "Allow header of options_reply (kamgo addition; empty = no Allow header, as in Kamailio)", "", &opt.allow),
		},
		Funcs: []core.Func{
			{Name: "has_totag", Ret: core.RetInt, Doc: "1 if the To header has a tag (in-dialog), -1 if not",
				Fn: su.hasTotag},
			{Name: "is_request", Ret: core.RetInt, Doc: "1 for a request, -1 for a reply",
				Fn: su.isRequest},
			{Name: "is_reply", Ret: core.RetInt, Doc: "1 for a reply, -1 for a request",
				Fn: su.isReply},
			{Name: "is_first_hop", Ret: core.RetInt, Doc: "1 if the message has a single Via (a request straight from its UA, or a reply back at the UAC side), -1 if not",
				Fn: su.isFirstHop},
			{Name: "uri_param", Args: s1, Ret: core.RetInt, Doc: "(name) 1 if the R-URI has that parameter, -1 if not",
				Fn: req(su.uriParam)},
			{Name: "uri_param_value", Args: s2, Ret: core.RetInt, Doc: "(name, value) 1 if the R-URI has that parameter with that value, -1 if not",
				Fn: req(su.uriParamValue)},
			{Name: "add_uri_param", Args: s1, Ret: core.RetInt, Doc: "(\"name=value\") add a parameter to the R-URI (a leading ';' is accepted); 1 ok",
				Fn: req(su.addURIParam)},
			{Name: "uri_param_rm", Args: s1, Ret: core.RetInt, Doc: "(name) remove the parameter from the R-URI; 1 removed, -1 absent",
				Fn: req(su.uriParamRm)},
			{Name: "is_uri", Args: s1, Ret: core.RetInt, Doc: "(str) 1 if a valid sip/sips/tel URI, -1 if not",
				Fn: su.isURI},
			{Name: "is_tel_number", Args: s1, Ret: core.RetInt, Doc: "(str) 1 if an optional '+' then digits; -1 other characters, -2 empty",
				Fn: su.isTelNumber},
			{Name: "is_numeric", Args: s1, Ret: core.RetInt, Doc: "(str) 1 if only digits; -1 other characters, -2 empty",
				Fn: su.isNumeric},
			{Name: "is_alphanum", Args: s1, Ret: core.RetInt, Doc: "(str) 1 if only ASCII letters and digits; -1 other characters, -2 empty",
				Fn: su.isAlphanum},
			cmpURI, cmpAOR,
			{Name: "options_reply", Ret: core.RetInt, Routes: core.RouteRequest,
				Doc: "reply 200 with Accept/Accept-Encoding/Accept-Language/Supported to an OPTIONS for us (R-URI without user, host ours); -1 otherwise",
				Fn:  req(su.optionsReply)},
		},
	})
}

// hasTotag is KSR.siputils.has_totag.
func (su *siputils) hasTotag(m *core.Msg, _ []core.Val) (core.Val, error) {
	msg := m.Message()
	if msg == nil || msg.To() == nil {
		return core.Int(-1), nil
	}
	t, ok := msg.To().Params.Get("tag")
	return core.IntRet(ok && t != ""), nil
}

// isRequest is KSR.siputils.is_request.
func (su *siputils) isRequest(m *core.Msg, _ []core.Val) (core.Val, error) {
	return core.IntRet(m.Req != nil), nil
}

// isReply is KSR.siputils.is_reply.
func (su *siputils) isReply(m *core.Msg, _ []core.Val) (core.Val, error) {
	return core.IntRet(m.Res != nil), nil
}

// isFirstHop is KSR.siputils.is_first_hop.
func (su *siputils) isFirstHop(m *core.Msg, _ []core.Val) (core.Val, error) {
	msg := m.Message()
	return core.IntRet(msg != nil && len(core.FindHeaders(msg, "Via")) == 1), nil
}

// uriParam is KSR.siputils.uri_param.
func (su *siputils) uriParam(m *core.Msg, a []core.Val) (core.Val, error) {
	return core.IntRet(paramIndex(m.Req.Recipient.UriParams, a[0].Str) >= 0), nil
}

// uriParamValue is KSR.siputils.uri_param_value.
func (su *siputils) uriParamValue(m *core.Msg, a []core.Val) (core.Val, error) {
	p := m.Req.Recipient.UriParams
	i := paramIndex(p, a[0].Str)
	return core.IntRet(i >= 0 && p[i].V == a[1].Str), nil
}

// addURIParam is KSR.siputils.add_uri_param.
func (su *siputils) addURIParam(m *core.Msg, a []core.Val) (core.Val, error) {
	p := strings.TrimPrefix(strings.TrimSpace(a[0].Str), ";")
	if err := core.CheckText("URI parameter", p); err != nil {
		return core.Null, err
	}
	k, v, _ := strings.Cut(p, "=")
	// The value may come from request bytes ($hdr, $fU): the same rule as
	// every URI param kamd writes.
	if err := core.CheckURIParam(k, v); err != nil {
		return core.Null, fmt.Errorf("add_uri_param: invalid parameter %q: %w", a[0].Str, err)
	}
	u := m.Req.Recipient
	u.UriParams = u.UriParams.Clone()
	u.UriParams = append(u.UriParams, sip.HeaderKV{K: k, V: v})
	if err := m.SetRURI(u.String()); err != nil {
		return core.Null, fmt.Errorf("add_uri_param: %v", err)
	}
	return core.Int(1), nil
}

// uriParamRm is KSR.siputils.uri_param_rm.
func (su *siputils) uriParamRm(m *core.Msg, a []core.Val) (core.Val, error) {
	u := m.Req.Recipient
	p := u.UriParams.Clone()
	n := len(p)
	for i := paramIndex(p, a[0].Str); i >= 0; i = paramIndex(p, a[0].Str) {
		p = append(p[:i], p[i+1:]...)
	}
	if len(p) == n {
		return core.Int(-1), nil
	}
	u.UriParams = p
	m.Req.Recipient = u
	return core.Int(1), nil
}

// isURI is KSR.siputils.is_uri.
func (su *siputils) isURI(m *core.Msg, a []core.Val) (core.Val, error) {
	_, err := parseURI(a[0].Str)
	return core.IntRet(err == nil), nil
}

// isTelNumber is KSR.siputils.is_tel_number.
func (su *siputils) isTelNumber(m *core.Msg, a []core.Val) (core.Val, error) {
	s := a[0].Str
	if s == "+" {
		return core.Int(-1), nil
	}
	return charsRet(s, func(i int, c byte) bool { return isDigit(c) || (i == 0 && c == '+') }), nil
}

// isNumeric is KSR.siputils.is_numeric.
func (su *siputils) isNumeric(m *core.Msg, a []core.Val) (core.Val, error) {
	return charsRet(a[0].Str, func(_ int, c byte) bool { return isDigit(c) }), nil
}

// isAlphanum is KSR.siputils.is_alphanum.
func (su *siputils) isAlphanum(m *core.Msg, a []core.Val) (core.Val, error) {
	return charsRet(a[0].Str, func(_ int, c byte) bool {
		return isDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
	}), nil
}

// optionsReply is KSR.siputils.options_reply.
func (su *siputils) optionsReply(m *core.Msg, _ []core.Val) (core.Val, error) {
	if m.Req.Method != sip.OPTIONS || m.Req.Recipient.User != "" ||
		!su.env.IsMyself(m.Req.Recipient.Host, m.Req.Recipient.Port) {
		return core.Int(-1), nil
	}
	su.opt.mu.RLock()
	hs := []sip.Header{}
	if su.opt.allow != "" {
		hs = append(hs, sip.NewHeader("Allow", su.opt.allow))
	}
	hs = append(hs, sip.NewHeader("Accept", su.opt.accept), sip.NewHeader("Accept-Encoding", su.opt.enc),
		sip.NewHeader("Accept-Language", su.opt.lang), sip.NewHeader("Supported", su.opt.support))
	su.opt.mu.RUnlock()
	m.ReplyHeaders = append(m.ReplyHeaders, hs...)
	if err := m.Reply(200, "OK"); err != nil {
		su.env.Log.Warn("options_reply failed", "err", err, "at", m.Pos())
		return core.Int(-1), nil
	}
	return core.Int(1), nil
}

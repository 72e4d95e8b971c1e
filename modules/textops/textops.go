// Package textops is Kamailio's textops module: regex search and
// replace on the message, header presence/removal, body handling and
// string helpers.
//
// Regular expressions use Go's RE2 syntax, not PCRE/POSIX: no
// back-references inside patterns, no look-around. As in Kamailio's KEMI,
// the patterns of search*, replace*, is_present_hf_re and remove_hf_re are
// case-insensitive and line-oriented ((?im)); subst* patterns follow their
// own flags. Edits change the parsed message at once, so later reads
// (KSR.hdr.get, $hdr, search) see them, unlike Kamailio's lumps.
package textops

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

func init() { core.Register(New) }

// lineRegex compiles a pattern the way Kamailio's KEMI textops functions
// do: REG_EXTENDED|REG_ICASE|REG_NEWLINE.
func lineRegex(expr string) (*regexp.Regexp, error) {
	re, err := core.CompileRegex("(?im)" + expr)
	if err != nil {
		return nil, fmt.Errorf("invalid regular expression %q: %v", expr, unwrapRE(err))
	}
	return re, nil
}

func unwrapRE(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

// subst is a parsed "/re/repl/flags" expression.
type subst struct {
	re     *regexp.Regexp
	repl   string // in regexp.Expand syntax
	global bool
}

// parseSubst parses a sed-like "/re/repl/flags"; the first character is
// the separator, which may be escaped with a backslash inside re and repl.
// Flags: g (all matches), i (case-insensitive), s (line mode: ^ and $ match
// at line boundaries and . stops at newlines; without it . matches any
// character, as with POSIX regcomp without REG_NEWLINE).
func parseSubst(expr string) (*subst, error) {
	if len(expr) < 4 {
		return nil, fmt.Errorf("invalid subst expression %q: want /re/repl/flags", expr)
	}
	sep := expr[0]
	var parts []string
	var cur strings.Builder
	for i := 1; i < len(expr); i++ {
		c := expr[i]
		if c == '\\' && i+1 < len(expr) && expr[i+1] == sep {
			cur.WriteByte(sep)
			i++
			continue
		}
		if c == '\\' && i+1 < len(expr) {
			cur.WriteByte(c)
			cur.WriteByte(expr[i+1])
			i++
			continue
		}
		if c == sep && len(parts) < 2 {
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(c)
	}
	if len(parts) != 2 {
		return nil, fmt.Errorf("invalid subst expression %q: want /re/repl/flags", expr)
	}
	flags := cur.String()
	s := &subst{}
	prefix := "(?s)"
	for _, f := range flags {
		switch f {
		case 'g':
			s.global = true
		case 'i':
			prefix += "(?i)"
		case 's':
			prefix = strings.Replace(prefix, "(?s)", "(?m)", 1)
		default:
			return nil, fmt.Errorf("invalid subst expression %q: unknown flag %q (g, i, s)", expr, f)
		}
	}
	re, err := core.CompileRegex(prefix + parts[0])
	if err != nil {
		return nil, fmt.Errorf("invalid regular expression %q in subst %q: %v", parts[0], expr, unwrapRE(err))
	}
	repl, err := convertRepl(parts[1], re.NumSubexp())
	if err != nil {
		return nil, fmt.Errorf("invalid subst expression %q: %v", expr, err)
	}
	s.re, s.repl = re, repl
	return s, nil
}

// convertRepl turns sed's \1 back references into regexp.Expand's ${1}.
func convertRepl(r string, groups int) (string, error) {
	var b strings.Builder
	for i := 0; i < len(r); i++ {
		c := r[i]
		switch {
		case c == '$':
			b.WriteString("$$")
		case c == '\\' && i+1 < len(r) && r[i+1] >= '0' && r[i+1] <= '9':
			n := int(r[i+1] - '0')
			if n > groups {
				return "", fmt.Errorf("back reference \\%d but the pattern has %d groups", n, groups)
			}
			fmt.Fprintf(&b, "${%d}", n)
			i++
		case c == '\\' && i+1 < len(r) && r[i+1] == '\\':
			b.WriteByte('\\')
			i++
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// apply runs the substitution; n is the number of replacements.
func (s *subst) apply(in string) (string, int) {
	locs := s.re.FindAllStringSubmatchIndex(in, -1)
	if len(locs) == 0 {
		return in, 0
	}
	if !s.global {
		locs = locs[:1]
	}
	var out []byte
	last := 0
	for _, loc := range locs {
		out = append(out, in[last:loc[0]]...)
		out = s.re.ExpandString(out, s.repl, in, loc)
		last = loc[1]
	}
	out = append(out, in[last:]...)
	return string(out), len(locs)
}

// replaceRE replaces the first (or every) match with literal text.
func replaceRE(re *regexp.Regexp, in, text string, all bool) (string, int) {
	if all {
		n := len(re.FindAllStringIndex(in, -1))
		if n == 0 {
			return in, 0
		}
		return re.ReplaceAllLiteralString(in, text), n
	}
	loc := re.FindStringIndex(in)
	if loc == nil {
		return in, 0
	}
	return in[:loc[0]] + text + in[loc[1]:], 1
}

// splitFirstLine separates the start line from headers+body.
func splitFirstLine(s string) (string, string) {
	if i := strings.Index(s, "\r\n"); i >= 0 {
		return s[:i+2], s[i+2:]
	}
	return s, ""
}

// applyText re-parses edited message text into msg in place: start line,
// headers and body. On a parse error msg is left untouched. Content-Length
// follows the body.
func applyText(msg sip.Message, text string) error {
	i := strings.Index(text, "\r\n\r\n")
	if i < 0 {
		return fmt.Errorf("edited message has no end of headers")
	}
	head, body := text[:i+4], text[i+4:]
	nm, _, err := sip.NewParser().ParseHeaders([]byte(head), false)
	if err != nil {
		return fmt.Errorf("edited message does not parse: %v", err)
	}
	switch old := msg.(type) {
	case *sip.Request:
		nr, ok := nm.(*sip.Request)
		if !ok {
			return fmt.Errorf("edit turned a request into a reply")
		}
		old.Method, old.Recipient, old.SipVersion = nr.Method, nr.Recipient, nr.SipVersion
	case *sip.Response:
		nr, ok := nm.(*sip.Response)
		if !ok {
			return fmt.Errorf("edit turned a reply into a request")
		}
		old.StatusCode, old.Reason, old.SipVersion = nr.StatusCode, nr.Reason, nr.SipVersion
	}
	core.SetHeaders(msg, core.Headers(nm))
	setBody(msg, []byte(body))
	return nil
}

// setBody replaces the body and keeps Content-Length right.
func setBody(msg sip.Message, body []byte) {
	if len(body) == 0 {
		body = nil
	}
	if body == nil && msg.ContentLength() == nil {
		msg.SetBody(nil)
		core.RemoveHeaders(msg, "Content-Length")
		return
	}
	msg.SetBody(body)
}

type scope int

const (
	scopeAll  scope = iota // start line, headers, body
	scopeMsg               // headers and body (Kamailio: after the first line)
	scopeBody              // body only
)

// edit runs f over one scope of the message and writes the result back.
func edit(m *core.Msg, sc scope, f func(string) (string, int)) (core.Val, error) {
	msg := m.Message()
	if msg == nil {
		return core.Int(-1), nil
	}
	if sc == scopeBody {
		out, n := f(string(msg.Body()))
		if n == 0 {
			return core.Int(-1), nil
		}
		setBody(msg, []byte(out))
		return core.Int(1), nil
	}
	text := core.MessageString(msg)
	var out string
	var n int
	if sc == scopeAll {
		out, n = f(text)
	} else {
		first, rest := splitFirstLine(text)
		var r string
		r, n = f(rest)
		out = first + r
	}
	if n == 0 {
		return core.Int(-1), nil
	}
	if err := applyText(msg, out); err != nil {
		m.Env.Log.Warn("textops: edit not applied", "err", err, "at", m.Pos())
		return core.Int(-1), nil
	}
	return core.Int(1), nil
}

// mediaType is "type/subtype" of a Content-Type value, lower-cased.
func mediaType(v string) string {
	t, _, _ := strings.Cut(v, ";")
	return strings.ToLower(strings.TrimSpace(t))
}

func hasBodyType(msg sip.Message, want string) bool {
	if len(msg.Body()) == 0 {
		return false
	}
	want = strings.ToLower(strings.TrimSpace(want))
	ct := "application/sdp" // RFC 3261 default when absent
	if h := core.FirstHeader(msg, "Content-Type"); h != nil {
		ct = mediaType(h.Value())
	}
	if ct == want {
		return true
	}
	if strings.HasPrefix(ct, "multipart/") {
		// Look for a part of that type.
		for _, line := range strings.Split(string(msg.Body()), "\n") {
			name, val, ok := strings.Cut(strings.TrimRight(line, "\r"), ":")
			if ok && strings.EqualFold(strings.TrimSpace(name), "content-type") && mediaType(val) == want {
				return true
			}
		}
	}
	return false
}

func cmpRet(c int) core.Val {
	switch {
	case c == 0:
		return core.Int(1)
	case c > 0:
		return core.Int(-1)
	}
	return core.Int(-2)
}

// textops has no state: its KSR functions are methods so that the table
// in New names each one (KSR.textops.subst is t.subst).
type textops struct{}

// New builds the textops module.
func New(env *core.Env) *core.Module {
	var t textops
	s1 := []core.ArgType{core.ArgStr}
	s2 := []core.ArgType{core.ArgStr, core.ArgStr}
	s3 := []core.ArgType{core.ArgStr, core.ArgStr, core.ArgStr}
	reFn := func(name string, args []core.ArgType, doc string, f func(m *core.Msg, re *regexp.Regexp, a []core.Val) (core.Val, error)) core.Func {
		return core.Func{Name: name, Args: args, Ret: core.RetInt, Doc: doc,
			Fn: func(m *core.Msg, a []core.Val) (core.Val, error) {
				re, err := lineRegex(a[0].Str)
				if err != nil {
					return core.Null, fmt.Errorf("textops.%s: %v", name, err)
				}
				return f(m, re, a)
			}}
	}
	substFn := func(name, doc string, f func(m *core.Msg, s *subst) (core.Val, error)) core.Func {
		return core.Func{Name: name, Args: s1, Ret: core.RetInt, Doc: doc,
			Fn: func(m *core.Msg, a []core.Val) (core.Val, error) {
				s, err := parseSubst(a[0].Str)
				if err != nil {
					return core.Null, fmt.Errorf("textops.%s: %v", name, err)
				}
				return f(m, s)
			}}
	}
	replaceFn := func(name, doc string, sc scope, all bool) core.Func {
		return reFn(name, s2, doc, func(m *core.Msg, re *regexp.Regexp, a []core.Val) (core.Val, error) {
			if sc != scopeBody {
				if err := core.CheckText("replacement", a[1].Str); err != nil {
					return core.Null, err
				}
			}
			return edit(m, sc, func(in string) (string, int) { return replaceRE(re, in, a[1].Str, all) })
		})
	}
	return &core.Module{
		Name: "textops",
		Doc:  "regex search/replace on the message, headers, body and string helpers (Go RE2 regex syntax)",
		Funcs: []core.Func{
			reFn("search", s1, "(regex) 1 if the whole message (start line, headers, body) matches; -1 otherwise",
				t.search),
			reFn("search_body", s1, "(regex) 1 if the body matches",
				t.searchBody),
			reFn("search_append", s2, "(regex, text) insert text after the first match in the message; -1 if no match",
				t.searchAppend),
			reFn("search_append_body", s2, "(regex, text) insert text after the first match in the body",
				t.searchAppendBody),
			replaceFn("replace", "(regex, text) replace the first match in headers and body with text; 1 replaced, -1 no match", scopeMsg, false),
			replaceFn("replace_all", "(regex, text) replace every match in headers and body", scopeMsg, true),
			replaceFn("replace_body", "(regex, text) replace the first match in the body", scopeBody, false),
			replaceFn("replace_body_all", "(regex, text) replace every match in the body", scopeBody, true),
			substFn("subst", "(\"/re/repl/flags\") sed-like substitution on headers and body; \\N back references; flags g, i, s",
				t.subst),
			substFn("subst_body", "(\"/re/repl/flags\") substitution on the body",
				t.substBody),
			substFn("subst_uri", "(\"/re/repl/flags\") substitution on the R-URI; the result must be a valid SIP URI",
				t.substURI),
			substFn("subst_user", "(\"/re/repl/flags\") substitution on the R-URI user (an empty user matches \"\")",
				t.substUser),
			{Name: "is_present_hf", Args: s1, Ret: core.RetInt, Doc: "(name) 1 if a header with that name exists (compact forms too), -1 if not",
				Fn: t.isPresentHf},
			reFn("is_present_hf_re", s1, "(regex) 1 if a header name matches",
				t.isPresentHfRe),
			{Name: "remove_hf", Args: s1, Ret: core.RetInt, Doc: "(name) remove every header with that name; the count removed, -1 if none",
				Fn: t.removeHf},
			reFn("remove_hf_re", s1, "(regex) remove every header whose name matches; the count removed, -1 if none",
				t.removeHfRe),
			{Name: "append_hf", Args: s1, Ret: core.RetInt, Doc: "(\"Name: value\\r\\n\") append header(s) after the last header",
				Fn: t.appendHf},
			{Name: "set_body", Args: s2, Ret: core.RetInt, Doc: "(body, content_type) replace the body and Content-Type; Content-Length follows; -1 for an empty body",
				Fn: t.setBody},
			{Name: "has_body", Ret: core.RetInt, Doc: "1 if the message has a non-empty body, -1 if not",
				Fn: t.hasBody},
			{Name: "has_body_type", Args: s1, Ret: core.RetInt, Doc: "(\"type/subtype\") 1 if the body is of that type (or a multipart body has such a part)",
				Fn: t.hasBodyType},
			{Name: "in_list", Args: s3, Ret: core.RetInt, Doc: "(subject, list, separator) 1 if subject equals an item of list (items trimmed); separator is one character",
				Fn: t.inList},
			{Name: "cmp_str", Args: s2, Ret: core.RetInt, Doc: "(s1, s2) 1 equal, -1 s1 > s2, -2 s1 < s2",
				Fn: t.cmpStr},
			{Name: "cmp_istr", Args: s2, Ret: core.RetInt, Doc: "(s1, s2) like cmp_str, case-insensitive",
				Fn: t.cmpIstr},
			{Name: "starts_with", Args: s2, Ret: core.RetInt, Doc: "(s, prefix) 1 if s starts with prefix, -1 if not",
				Fn: t.startsWith},
			{Name: "ends_with", Args: s2, Ret: core.RetInt, Doc: "(s, suffix) 1 if s ends with suffix, -1 if not",
				Fn: t.endsWith},
		},
	}
}

// search is KSR.textops.search.
func (t textops) search(m *core.Msg, re *regexp.Regexp, _ []core.Val) (core.Val, error) {
	return core.IntRet(re.MatchString(core.MessageString(m.Message()))), nil
}

// searchBody is KSR.textops.search_body.
func (t textops) searchBody(m *core.Msg, re *regexp.Regexp, _ []core.Val) (core.Val, error) {
	msg := m.Message()
	return core.IntRet(msg != nil && re.Match(msg.Body())), nil
}

// searchAppend is KSR.textops.search_append.
func (t textops) searchAppend(m *core.Msg, re *regexp.Regexp, a []core.Val) (core.Val, error) {
	return edit(m, scopeAll, appendAfterMatch(re, a[1].Str))
}

// searchAppendBody is KSR.textops.search_append_body.
func (t textops) searchAppendBody(m *core.Msg, re *regexp.Regexp, a []core.Val) (core.Val, error) {
	return edit(m, scopeBody, appendAfterMatch(re, a[1].Str))
}

// appendAfterMatch inserts text after the first match of re.
func appendAfterMatch(re *regexp.Regexp, text string) func(string) (string, int) {
	return func(in string) (string, int) {
		loc := re.FindStringIndex(in)
		if loc == nil {
			return in, 0
		}
		return in[:loc[1]] + text + in[loc[1]:], 1
	}
}

// subst is KSR.textops.subst.
func (t textops) subst(m *core.Msg, s *subst) (core.Val, error) { return edit(m, scopeMsg, s.apply) }

// substBody is KSR.textops.subst_body.
func (t textops) substBody(m *core.Msg, s *subst) (core.Val, error) {
	return edit(m, scopeBody, s.apply)
}

// substURI is KSR.textops.subst_uri.
func (t textops) substURI(m *core.Msg, s *subst) (core.Val, error) {
	if m.Req == nil {
		return core.Null, core.ErrNoRequest
	}
	out, n := s.apply(m.Req.Recipient.String())
	if n == 0 {
		return core.Int(-1), nil
	}
	if err := m.SetRURI(out); err != nil {
		return core.Null, fmt.Errorf("textops.subst_uri: %v", err)
	}
	return core.Int(1), nil
}

// substUser is KSR.textops.subst_user.
func (t textops) substUser(m *core.Msg, s *subst) (core.Val, error) {
	if m.Req == nil {
		return core.Null, core.ErrNoRequest
	}
	out, n := s.apply(m.Req.Recipient.User)
	if n == 0 {
		return core.Int(-1), nil
	}
	if err := m.SetRURIUser(out); err != nil {
		return core.Null, fmt.Errorf("textops.subst_user: %v", err)
	}
	return core.Int(1), nil
}

// isPresentHf is KSR.textops.is_present_hf.
func (t textops) isPresentHf(m *core.Msg, a []core.Val) (core.Val, error) {
	msg := m.Message()
	return core.IntRet(msg != nil && core.FirstHeader(msg, a[0].Str) != nil), nil
}

// isPresentHfRe is KSR.textops.is_present_hf_re.
func (t textops) isPresentHfRe(m *core.Msg, re *regexp.Regexp, _ []core.Val) (core.Val, error) {
	for _, h := range core.Headers(m.Message()) {
		if re.MatchString(h.Name()) {
			return core.Int(1), nil
		}
	}
	return core.Int(-1), nil
}

// removeHf is KSR.textops.remove_hf.
func (t textops) removeHf(m *core.Msg, a []core.Val) (core.Val, error) {
	msg := m.Message()
	if msg == nil {
		return core.Int(-1), nil
	}
	if n := core.RemoveHeaders(msg, a[0].Str); n > 0 {
		return core.Int(n), nil
	}
	return core.Int(-1), nil
}

// removeHfRe is KSR.textops.remove_hf_re.
func (t textops) removeHfRe(m *core.Msg, re *regexp.Regexp, _ []core.Val) (core.Val, error) {
	msg := m.Message()
	if msg == nil {
		return core.Int(-1), nil
	}
	hs := core.Headers(msg)
	out := make([]sip.Header, 0, len(hs))
	for _, h := range hs {
		if !re.MatchString(h.Name()) {
			out = append(out, h)
		}
	}
	n := len(hs) - len(out)
	if n == 0 {
		return core.Int(-1), nil
	}
	core.SetHeaders(msg, out)
	return core.Int(n), nil
}

// appendHf is KSR.textops.append_hf.
func (t textops) appendHf(m *core.Msg, a []core.Val) (core.Val, error) {
	msg := m.Message()
	if msg == nil {
		return core.Int(-1), nil
	}
	hs, err := core.ParseHeaderText(a[0].Str)
	if err != nil {
		return core.Null, fmt.Errorf("textops.append_hf: %v", err)
	}
	for _, h := range hs {
		msg.AppendHeader(h)
	}
	return core.Int(1), nil
}

// setBody is KSR.textops.set_body.
func (t textops) setBody(m *core.Msg, a []core.Val) (core.Val, error) {
	msg := m.Message()
	if msg == nil || a[0].Str == "" {
		return core.Int(-1), nil
	}
	ct := strings.TrimSpace(a[1].Str)
	if err := core.CheckText("content type", ct); err != nil {
		return core.Null, err
	}
	if ct == "" || !strings.Contains(ct, "/") {
		return core.Null, fmt.Errorf("textops.set_body: invalid content type %q", a[1].Str)
	}
	core.RemoveHeaders(msg, "Content-Type")
	h := sip.ContentTypeHeader(ct)
	msg.AppendHeader(&h)
	setBody(msg, []byte(a[0].Str))
	return core.Int(1), nil
}

// hasBody is KSR.textops.has_body.
func (t textops) hasBody(m *core.Msg, _ []core.Val) (core.Val, error) {
	msg := m.Message()
	return core.IntRet(msg != nil && len(msg.Body()) > 0), nil
}

// hasBodyType is KSR.textops.has_body_type.
func (t textops) hasBodyType(m *core.Msg, a []core.Val) (core.Val, error) {
	msg := m.Message()
	return core.IntRet(msg != nil && hasBodyType(msg, a[0].Str)), nil
}

// inList is KSR.textops.in_list.
func (t textops) inList(m *core.Msg, a []core.Val) (core.Val, error) {
	if len(a[2].Str) != 1 {
		return core.Null, fmt.Errorf("textops.in_list: separator must be one character, got %q", a[2].Str)
	}
	for _, it := range strings.Split(a[1].Str, a[2].Str) {
		if strings.TrimSpace(it) == a[0].Str {
			return core.Int(1), nil
		}
	}
	return core.Int(-1), nil
}

// cmpStr is KSR.textops.cmp_str.
func (t textops) cmpStr(m *core.Msg, a []core.Val) (core.Val, error) {
	return cmpRet(strings.Compare(a[0].Str, a[1].Str)), nil
}

// cmpIstr is KSR.textops.cmp_istr.
func (t textops) cmpIstr(m *core.Msg, a []core.Val) (core.Val, error) {
	return cmpRet(strings.Compare(strings.ToLower(a[0].Str), strings.ToLower(a[1].Str))), nil
}

// startsWith is KSR.textops.starts_with.
func (t textops) startsWith(m *core.Msg, a []core.Val) (core.Val, error) {
	return core.IntRet(strings.HasPrefix(a[0].Str, a[1].Str)), nil
}

// endsWith is KSR.textops.ends_with.
func (t textops) endsWith(m *core.Msg, a []core.Val) (core.Val, error) {
	return core.IntRet(strings.HasSuffix(a[0].Str, a[1].Str)), nil
}

package core

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/emiago/sipgo/sip"
)

// PVDef defines a pseudo-variable class such as $ru or $hdr(name).
type PVDef struct {
	Name   string // "ru", "hdr"
	HasArg bool   // $hdr(Name) form
	Doc    string
	Get    func(m *Msg, arg string) Val
	// Set is nil for read-only PVs: writing them is an error, not Kamailio's silent success.
	Set func(m *Msg, arg string, v Val) error
}

// PV is a parsed pseudo-variable name.
type PV struct {
	Def *PVDef
	Arg string
	Src string
}

const pvCacheLimit = 4096

// pvTable is one Env's pseudo-variables: core's own plus those declared in
// the PVs of its modules' tables (SetModule adds them). Parses are cached
// per Env because a module's PV is bound to that Env's module instance.
type pvTable struct {
	mu   sync.RWMutex
	defs map[string]pvEntry
	pvs  boundedCache[*PV]
	fmts boundedCache[[]formatSeg]
}

type pvEntry struct {
	module string
	def    *PVDef
}

// corePVByName indexes corePVs, which every Env knows (also an Env whose
// modules are not built, as in a module's unit test).
var corePVByName = func() map[string]*PVDef {
	m := make(map[string]*PVDef, len(corePVs))
	for i := range corePVs {
		m[corePVs[i].Name] = &corePVs[i]
	}
	return m
}()

// addModule adds mod's PVs; a name another module already declared is a
// programming error, as a duplicate module is.
func (t *pvTable) addModule(mod *Module) {
	if len(mod.PVs) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.defs == nil {
		t.defs = map[string]pvEntry{}
	}
	for i := range mod.PVs {
		d := &mod.PVs[i]
		if c := corePVByName[d.Name]; c == d {
			continue // the core module's own table
		} else if c != nil {
			panic(fmt.Sprintf("core: module %q declares $%s, a core pseudo-variable", mod.Name, d.Name))
		}
		if old, dup := t.defs[d.Name]; dup && old.module != mod.Name {
			panic(fmt.Sprintf("core: $%s declared by modules %q and %q", d.Name, old.module, mod.Name))
		}
		t.defs[d.Name] = pvEntry{module: mod.Name, def: d}
	}
	// A parse cached before may now resolve differently.
	t.pvs.reset()
	t.fmts.reset()
}

func (t *pvTable) lookup(name string) *PVDef {
	if d := corePVByName[name]; d != nil {
		return d
	}
	if t == nil {
		return nil
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.defs[name].def
}

// ParsePV parses "$ru", "$hdr(X-Foo)", "$var(x)" against the PVs of e's
// modules (a nil Env knows core's only). Results are cached (bounded).
func (e *Env) ParsePV(s string) (*PV, error) {
	var t *pvTable
	if e != nil {
		t = &e.pvs
		if pv, ok := t.pvs.load(s); ok {
			return pv, nil
		}
	}
	pv, err := parsePV(t, s)
	if err != nil {
		return nil, err
	}
	if t != nil {
		t.pvs.store(s, pv, pvCacheLimit)
	}
	return pv, nil
}

func parsePV(t *pvTable, s string) (*PV, error) {
	if !strings.HasPrefix(s, "$") || len(s) < 2 {
		return nil, fmt.Errorf("invalid pseudo-variable %q: must start with $", s)
	}
	name, arg := s[1:], ""
	hasArg := false
	if i := strings.IndexByte(name, '('); i >= 0 {
		if !strings.HasSuffix(name, ")") {
			return nil, fmt.Errorf("invalid pseudo-variable %q: missing ')'", s)
		}
		name, arg, hasArg = name[:i], name[i+1:len(name)-1], true
		if arg == "" {
			return nil, fmt.Errorf("invalid pseudo-variable %q: empty name in ()", s)
		}
	}
	d := t.lookup(name)
	if d == nil {
		return nil, fmt.Errorf("unknown pseudo-variable %q", s)
	}
	if d.HasArg != hasArg {
		if d.HasArg {
			return nil, fmt.Errorf("pseudo-variable %q needs a name: $%s(name)", s, name)
		}
		return nil, fmt.Errorf("pseudo-variable %q takes no (name)", s)
	}
	return &PV{Def: d, Arg: arg, Src: s}, nil
}

// Get reads the PV; Null means $null.
func (p *PV) Get(m *Msg) Val { return p.Def.Get(m, p.Arg) }

// Set writes the PV; read-only PVs return an error naming the PV.
func (p *PV) Set(m *Msg, v Val) error {
	if p.Def.Set == nil {
		return fmt.Errorf("pseudo-variable %s is read-only", p.Src)
	}
	return p.Def.Set(m, p.Arg, v)
}

func strOrNull(s string) Val {
	if s == "" {
		return Null
	}
	return Str(s)
}

func reqOnly(f func(r *sip.Request) Val) func(m *Msg, _ string) Val {
	return func(m *Msg, _ string) Val {
		if m.Req == nil {
			return Null
		}
		return f(m.Req)
	}
}

func fromOrTo(m *Msg, from bool) (addr *sip.Uri, display string, params sip.HeaderParams, ok bool) {
	msg := m.Message()
	if msg == nil {
		return nil, "", nil, false
	}
	if from {
		if h := msg.From(); h != nil {
			return &h.Address, h.DisplayName, h.Params, true
		}
		return nil, "", nil, false
	}
	if h := msg.To(); h != nil {
		return &h.Address, h.DisplayName, h.Params, true
	}
	return nil, "", nil, false
}

func addrPV(from bool, part func(u *sip.Uri, display string, p sip.HeaderParams) Val) func(m *Msg, _ string) Val {
	return func(m *Msg, _ string) Val {
		u, d, p, ok := fromOrTo(m, from)
		if !ok {
			return Null
		}
		return part(u, d, p)
	}
}

func quoteDisplay(d string) Val {
	if d == "" {
		return Null
	}
	// Kamailio returns the display name with its quotes (Q16).
	return Str(`"` + d + `"`)
}

func setRURI(m *Msg, edit func(u *sip.Uri) error) error {
	if m.Req == nil {
		return ErrNoRequest
	}
	u := m.Req.Recipient
	u.UriParams = u.UriParams.Clone()
	if err := edit(&u); err != nil {
		return err
	}
	m.Req.Recipient = u
	return nil
}

// SetRURI replaces the R-URI after validating it.
func (m *Msg) SetRURI(s string) error {
	u, err := ParseURI(s)
	if err != nil {
		return err
	}
	return setRURI(m, func(r *sip.Uri) error { *r = u; return nil })
}

// SetRURIHost rewrites the host part of the R-URI.
func (m *Msg) SetRURIHost(host string) error {
	if err := CheckText("host", host); err != nil {
		return err
	}
	if host == "" || strings.ContainsAny(host, " ;?@<>\"") {
		return fmt.Errorf("invalid host %q", host)
	}
	host = HostRef(host) // an IPv6 address keeps its brackets in the URI
	return setRURI(m, func(u *sip.Uri) error { u.Host = host; return nil })
}

// SetRURIUser rewrites the user part of the R-URI ("" removes it).
func (m *Msg) SetRURIUser(user string) error {
	if err := CheckText("user", user); err != nil {
		return err
	}
	if strings.ContainsAny(user, " ;?@<>\"") {
		return fmt.Errorf("invalid user %q", user)
	}
	return setRURI(m, func(u *sip.Uri) error { u.User = user; return nil })
}

// SetRURIPort rewrites the R-URI port (0 removes it).
func (m *Msg) SetRURIPort(port int) error {
	if port < 0 || port > 65535 {
		return fmt.Errorf("invalid port %d", port)
	}
	return setRURI(m, func(u *sip.Uri) error { u.Port = port; return nil })
}

// SetDstURI sets $du ("" clears it).
func (m *Msg) SetDstURI(s string) error {
	if s == "" {
		m.DstURI = ""
		return nil
	}
	if _, err := ParseURI(s); err != nil {
		return err
	}
	m.DstURI = s
	return nil
}

func valStr(v Val) string { return v.String() }

// corePVs are core's own pseudo-variables, declared in the core module's
// table like any module's.
var corePVs = []PVDef{
	{Name: "rm", Doc: "request method (CSeq method for replies)", Get: func(m *Msg, _ string) Val { return strOrNull(m.Method()) }},
	{Name: "ru", Doc: "request URI", Get: reqOnly(func(r *sip.Request) Val { return Str(r.Recipient.String()) }),
		Set: func(m *Msg, _ string, v Val) error {
			if v.IsNull() {
				return fmt.Errorf("$ru cannot be set to $null")
			}
			return m.SetRURI(valStr(v))
		}},
	{Name: "rU", Doc: "request URI user", Get: reqOnly(func(r *sip.Request) Val { return strOrNull(r.Recipient.User) }),
		Set: func(m *Msg, _ string, v Val) error {
			if v.IsNull() {
				return m.SetRURIUser("")
			}
			return m.SetRURIUser(valStr(v))
		}},
	{Name: "rd", Doc: "request URI host", Get: reqOnly(func(r *sip.Request) Val { return strOrNull(r.Recipient.Host) }),
		Set: func(m *Msg, _ string, v Val) error { return m.SetRURIHost(valStr(v)) }},
	{Name: "rp", Doc: "request URI port (a string, as in Kamailio)", Get: reqOnly(func(r *sip.Request) Val {
		p := r.Recipient.Port
		if p == 0 {
			p = TargetOf(&r.Recipient).Port
		}
		return Str(strconv.Itoa(p))
	}), Set: func(m *Msg, _ string, v Val) error {
		if v.IsNull() {
			return m.SetRURIPort(0)
		}
		p, ok := v.AsInt()
		if !ok {
			return fmt.Errorf("$rp: %q is not a port number", v.Str)
		}
		return m.SetRURIPort(int(p))
	}},
	{Name: "rz", Doc: "request URI scheme", Get: reqOnly(func(r *sip.Request) Val { return Str(r.Recipient.Scheme) })},
	{Name: "fu", Doc: "From URI", Get: addrPV(true, func(u *sip.Uri, _ string, _ sip.HeaderParams) Val { return Str(u.String()) })},
	{Name: "fU", Doc: "From URI user", Get: addrPV(true, func(u *sip.Uri, _ string, _ sip.HeaderParams) Val { return strOrNull(u.User) })},
	{Name: "fd", Doc: "From URI host", Get: addrPV(true, func(u *sip.Uri, _ string, _ sip.HeaderParams) Val { return strOrNull(u.Host) })},
	{Name: "fn", Doc: "From display name, with quotes", Get: addrPV(true, func(_ *sip.Uri, d string, _ sip.HeaderParams) Val { return quoteDisplay(d) })},
	{Name: "ft", Doc: "From tag", Get: addrPV(true, func(_ *sip.Uri, _ string, p sip.HeaderParams) Val { t, _ := p.Get("tag"); return strOrNull(t) })},
	{Name: "tu", Doc: "To URI", Get: addrPV(false, func(u *sip.Uri, _ string, _ sip.HeaderParams) Val { return Str(u.String()) })},
	{Name: "tU", Doc: "To URI user", Get: addrPV(false, func(u *sip.Uri, _ string, _ sip.HeaderParams) Val { return strOrNull(u.User) })},
	{Name: "td", Doc: "To URI host", Get: addrPV(false, func(u *sip.Uri, _ string, _ sip.HeaderParams) Val { return strOrNull(u.Host) })},
	{Name: "tn", Doc: "To display name, with quotes", Get: addrPV(false, func(_ *sip.Uri, d string, _ sip.HeaderParams) Val { return quoteDisplay(d) })},
	{Name: "tt", Doc: "To tag", Get: addrPV(false, func(_ *sip.Uri, _ string, p sip.HeaderParams) Val { t, _ := p.Get("tag"); return strOrNull(t) })},
	{Name: "ci", Doc: "Call-ID", Get: func(m *Msg, _ string) Val {
		if msg := m.Message(); msg != nil && msg.CallID() != nil {
			return Str(string(*msg.CallID()))
		}
		return Null
	}},
	{Name: "cs", Doc: "CSeq number (a string, as in Kamailio)", Get: func(m *Msg, _ string) Val {
		if msg := m.Message(); msg != nil && msg.CSeq() != nil {
			return Str(strconv.FormatUint(uint64(msg.CSeq().SeqNo), 10))
		}
		return Null
	}},
	{Name: "si", Doc: "source IP", Get: func(m *Msg, _ string) Val { return Str(m.SrcIP) }},
	{Name: "sp", Doc: "source port (int)", Get: func(m *Msg, _ string) Val { return Int(m.SrcPort) }},
	{Name: "Ri", Doc: "local receiving IP", Get: func(m *Msg, _ string) Val { return strOrNull(m.Local.IP) }},
	{Name: "Rp", Doc: "local receiving port (int)", Get: func(m *Msg, _ string) Val { return Int(m.Local.Port) }},
	{Name: "pr", Doc: "receiving protocol", Get: func(m *Msg, _ string) Val { return Str(m.Proto) }},
	{Name: "proto", Doc: "receiving protocol", Get: func(m *Msg, _ string) Val { return Str(m.Proto) }},
	{Name: "rs", Doc: "reply status code (int)", Get: func(m *Msg, _ string) Val {
		if m.Res == nil {
			return Null
		}
		return Int(m.Res.StatusCode)
	}},
	{Name: "rr", Doc: "reply reason", Get: func(m *Msg, _ string) Val {
		if m.Res == nil {
			return Null
		}
		return Str(m.Res.Reason)
	}},
	{Name: "ua", Doc: "User-Agent", Get: func(m *Msg, _ string) Val { return hdrVal(m, "User-Agent") }},
	{Name: "ct", Doc: "Contact header", Get: func(m *Msg, _ string) Val { return hdrVal(m, "Contact") }},
	{Name: "du", Doc: "destination URI (next hop)", Get: func(m *Msg, _ string) Val { return strOrNull(m.DstURI) },
		Set: func(m *Msg, _ string, v Val) error {
			if v.IsNull() {
				return m.SetDstURI("")
			}
			return m.SetDstURI(valStr(v))
		}},
	{Name: "rb", Doc: "message body", Get: func(m *Msg, _ string) Val {
		if msg := m.Message(); msg != nil {
			return Str(string(msg.Body()))
		}
		return Str("")
	}},
	{Name: "cl", Doc: "Content-Length (int)", Get: func(m *Msg, _ string) Val {
		if msg := m.Message(); msg != nil {
			return Int(len(msg.Body()))
		}
		return Int(0)
	}},
	{Name: "hdr", HasArg: true, Doc: "body of the first header with that name", Get: func(m *Msg, name string) Val { return hdrVal(m, name) }},
	{Name: "hdrc", HasArg: true, Doc: "number of headers with that name", Get: func(m *Msg, name string) Val {
		if msg := m.Message(); msg != nil {
			return Int(len(FindHeaders(msg, name)))
		}
		return Int(0)
	}},
	{Name: "var", HasArg: true, Doc: "script variable, per message (unset reads as 0)", Get: func(m *Msg, name string) Val {
		if v, ok := m.Vars[name]; ok {
			return v
		}
		return Int(0)
	}, Set: func(m *Msg, name string, v Val) error {
		if m.Vars == nil {
			m.Vars = map[string]Val{}
		}
		if v.IsNull() {
			v = Int(0)
		}
		m.Vars[name] = v
		return nil
	}},
	{Name: "shv", HasArg: true, Doc: "shared variable, visible to all messages (unset reads as 0)", Get: func(m *Msg, name string) Val {
		return m.Env.Shv.Get(name)
	}, Set: func(m *Msg, name string, v Val) error {
		if v.IsNull() {
			v = Int(0)
		}
		m.Env.Shv.Set(name, v)
		return nil
	}},
	{Name: "bf", Doc: "branch flags of branch 0 as an int (writable; KSR.setbflag sets one)", Get: func(m *Msg, _ string) Val { return Val{Kind: KInt, Int: int64(m.BFlags)} },
		Set: func(m *Msg, _ string, v Val) error {
			n, ok := v.AsInt()
			if !ok && !v.IsNull() {
				return fmt.Errorf("$bf: %q is not a number", v.Str)
			}
			m.BFlags = uint64(n)
			return nil
		}},
	{Name: "bF", Doc: "branch flags of branch 0 in hex (0x...)", Get: func(m *Msg, _ string) Val { return Str("0x" + strconv.FormatUint(m.BFlags, 16)) }},
	{Name: "mf", Doc: "message flags as an int (writable)", Get: func(m *Msg, _ string) Val { return Val{Kind: KInt, Int: int64(m.Flags)} },
		Set: func(m *Msg, _ string, v Val) error {
			n, ok := v.AsInt()
			if !ok && !v.IsNull() {
				return fmt.Errorf("$mf: %q is not a number", v.Str)
			}
			m.Flags = uint64(n)
			return nil
		}},
	{Name: "T_reply_code", Doc: "last reply code sent (request route) or the winning/current reply (failure/onreply routes)", Get: func(m *Msg, _ string) Val {
		if m.Res != nil && m.RouteType&(RouteTmReply|RouteReply) != 0 {
			return Int(m.Res.StatusCode)
		}
		return Int(m.ReplyCode)
	}},
}

func hdrVal(m *Msg, name string) Val {
	msg := m.Message()
	if msg == nil {
		return Null
	}
	if h := FirstHeader(msg, name); h != nil {
		return Str(h.Value())
	}
	return Null
}

// Package registrar is Kamailio's registrar module: save() processes a
// REGISTER into usrloc (RFC 3261 §10.3) and answers it; lookup() rewrites
// the R-URI to a registered contact. It reaches usrloc through
// usrloc.Of(env), so both modules must be loaded (modules/all links both).
package registrar

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/usrloc"
)

func init() { core.Register(New) }

// save() flags (Kamailio's REG_SAVE_*).
const (
	FlagMemOnly  = 0x01
	FlagNoReply  = 0x02
	FlagReplace  = 0x04 // one contact per AoR: the new one replaces the others
	FlagNoExpRng = 0x08 // accepted; kamgo has no expires_range
)

// save() results.
const (
	SaveInserted = 1
	SaveUpdated  = 2
	SaveDeleted  = 3
	SaveQuery    = 4
)

// Kamailio method bits (parser/msg_parser.h) for the methods column.
var methodBits = map[string]int64{
	"INVITE": 1, "CANCEL": 2, "ACK": 4, "BYE": 8, "INFO": 16, "REGISTER": 32, "SUBSCRIBE": 64,
	"NOTIFY": 128, "MESSAGE": 256, "OPTIONS": 512, "PRACK": 1024, "UPDATE": 2048, "REFER": 4096, "PUBLISH": 8192,
}

// Reg is the registrar instance of one Env.
type Reg struct {
	env *core.Env

	defaultExpires  atomic.Int64
	minExpires      atomic.Int64
	minExpiresMode  atomic.Int64
	maxExpires      atomic.Int64
	maxContacts     atomic.Int64
	usePath         atomic.Bool
	methodFiltering atomic.Bool
	appendBranches  atomic.Bool

	accepted, rejected *core.Counter
}

// New builds the registrar module.
func New(env *core.Env) *core.Module {
	r := &Reg{env: env}
	r.accepted = env.Stats.Counter("registrar", "accepted_regs")
	r.rejected = env.Stats.Counter("registrar", "rejected_regs")
	return r.module()
}

// regError is a failed save(): the reply to send and save()'s return code.
type regError struct {
	code   int
	reason string
	info   string // P-Registrar-Error
	ret    int
	hdrs   []sip.Header
}

func (e *regError) Error() string { return fmt.Sprintf("%d %s (%s)", e.code, e.reason, e.info) }

func bad(info string) *regError {
	return &regError{code: 400, reason: "Bad Request", info: info, ret: -1}
}

func (r *Reg) ul() (*usrloc.UL, error) {
	u := usrloc.Of(r.env)
	if u == nil {
		return nil, fmt.Errorf("registrar: the usrloc module is not loaded")
	}
	return u, nil
}

func (r *Reg) domain(table string) (*usrloc.UL, *usrloc.Domain, error) {
	u, err := r.ul()
	if err != nil {
		return nil, nil, err
	}
	d, err := u.Domain(table)
	if err != nil {
		return nil, nil, fmt.Errorf("registrar: %w", err)
	}
	return u, d, nil
}

// aorOf turns a URI text into the AoR key.
func aorOf(u *usrloc.UL, uri string) (string, error) {
	p, err := core.ParseURI(uri)
	if err != nil {
		return "", err
	}
	return u.AoR(p.User, p.Host), nil
}

// aorIn is the start of reg_fetch_contacts and unregister: the location
// table and uri's AoR. ok is false with err set when the table is unusable,
// and with err nil (after a warning naming fn) when uri is no AoR: the
// function then returns -1.
func (r *Reg) aorIn(m *core.Msg, fn, table, uri string) (d *usrloc.Domain, aor string, ok bool, err error) {
	u, d, err := r.domain(table)
	if err != nil {
		return nil, "", false, err
	}
	aor, err = aorOf(u, uri)
	if err != nil {
		r.env.Log.Warn("registrar: "+fn+": bad AoR", "aor", uri, "err", err, "at", m.Pos())
		return nil, "", false, nil
	}
	return d, aor, true, nil
}

// contactSpec is one Contact of a REGISTER.
type contactSpec struct {
	uri    string
	params sip.HeaderParams
}

// requestContacts returns the REGISTER's contacts; star is "Contact: *".
func requestContacts(req *sip.Request) (cs []contactSpec, star bool, err error) {
	for _, h := range core.FindHeaders(req, "Contact") {
		var list []*sip.ContactHeader
		if ch, ok := h.(*sip.ContactHeader); ok {
			list = append(list, ch)
		} else {
			for _, part := range splitContacts(h.Value()) {
				ch := &sip.ContactHeader{}
				if strings.TrimSpace(part) == "*" {
					ch.Address.Wildcard = true
				} else if _, err := sip.ParseAddressValue(part, &ch.Address, &ch.Params); err != nil {
					return nil, false, err
				}
				list = append(list, ch)
			}
		}
		for _, ch := range list {
			if ch.Address.Wildcard || strings.TrimSpace(h.Value()) == "*" {
				star = true
				continue
			}
			u := ch.Address
			if u.Host == "" {
				return nil, false, fmt.Errorf("contact without host")
			}
			if err := checkContact(&u, ch.Params); err != nil {
				return nil, false, err
			}
			cs = append(cs, contactSpec{uri: u.String(), params: ch.Params})
		}
	}
	return cs, star, nil
}

// checkContact refuses a contact kamd could not store and echo as it
// came (issue 16: a bare LF inside a URI param split the 200's Contact in
// two): the URI must hold no CR, LF or NUL and re-parse to itself, and each
// header param must pass core.CheckParam.
func checkContact(u *sip.Uri, params sip.HeaderParams) error {
	text := u.String()
	if err := core.CheckText("Contact URI", text); err != nil {
		return err
	}
	if strings.ContainsAny(text, " \t<>\"") {
		return fmt.Errorf("contact URI %q has characters that need quoting", text)
	}
	again, err := core.ParseURI(text)
	if err != nil {
		return err
	}
	if again.String() != text {
		return fmt.Errorf("contact URI %q does not re-parse to itself", text)
	}
	for _, kv := range params {
		if err := core.CheckParsedParam(kv.K, kv.V); err != nil {
			return err
		}
	}
	return nil
}

// checkPath: each Path value is stored, echoed in the 200 and later
// written as a Route, so it must parse as a Route list.
func checkPath(v string) error {
	if err := core.CheckText("Path", v); err != nil {
		return err
	}
	hs, err := core.ParseHeaderText("Route: " + v)
	if err != nil {
		return err
	}
	for _, h := range hs {
		if _, ok := h.(*sip.RouteHeader); !ok {
			return fmt.Errorf("Path %q is not a list of name-addrs", v)
		}
	}
	// sipgo's Route keeps only the URI: check each element whole (display
	// name, URI, header params) as the name-addr it is written back as.
	for _, e := range splitContacts(v) {
		hs, err := core.ParseHeaderText("Contact: " + strings.TrimSpace(e))
		if err != nil {
			return err
		}
		c, ok := hs[0].(*sip.ContactHeader)
		if len(hs) != 1 || !ok {
			return fmt.Errorf("Path %q is not a list of name-addrs", v)
		}
		if err := core.CheckNameAddr(c.DisplayName, &c.Address, c.Params); err != nil {
			return fmt.Errorf("Path %q: %w", v, err)
		}
	}
	return nil
}

// splitContacts splits a header value at commas outside <> and quotes.
func splitContacts(v string) []string {
	var out []string
	inQ, inB, start := false, false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '"':
			inQ = !inQ
		case c == '<' && !inQ:
			inB = true
		case c == '>' && !inQ:
			inB = false
		case c == ',' && !inQ && !inB:
			out = append(out, v[start:i])
			start = i + 1
		}
	}
	return append(out, v[start:])
}

func headerValue(m sip.Message, name string) (string, bool) {
	h := core.FirstHeader(m, name)
	if h == nil {
		return "", false
	}
	return strings.TrimSpace(h.Value()), true
}

// expiresFor applies RFC 3261 §10.3 step 7 and the modparams; a 423
// regError when it is below min_expires and min_expires_mode is 1.
func (r *Reg) expiresFor(p sip.HeaderParams, hdr int, hasHdr bool, flags int) (int, *regError) {
	e := int(r.defaultExpires.Load())
	if hasHdr {
		e = hdr
	}
	if v, ok := p.Get("expires"); ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 {
			return 0, bad("Invalid expires param in contact")
		}
		e = n
	}
	if e == 0 {
		return 0, nil
	}
	if min := int(r.minExpires.Load()); min > 0 && e < min {
		if r.minExpiresMode.Load() == 1 {
			return 0, &regError{code: 423, reason: "Interval Too Brief", info: "Interval too brief", ret: -1,
				hdrs: []sip.Header{sip.NewHeader("Min-Expires", strconv.Itoa(min))}}
		}
		e = min
	}
	if max := int(r.maxExpires.Load()); max > 0 && e > max {
		e = max
	}
	return e, nil
}

func parseQ(p sip.HeaderParams) (int, bool) {
	v, ok := p.Get("q")
	if !ok {
		return -1, true
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || f < 0 || f > 1 {
		return 0, false
	}
	return int(f*1000 + 0.5), true
}

func allowedMethods(req *sip.Request) int64 {
	hs := core.FindHeaders(req, "Allow")
	if len(hs) == 0 {
		return usrloc.MethodsAll
	}
	var bits int64
	for _, h := range hs {
		for _, m := range strings.Split(h.Value(), ",") {
			bits |= methodBits[strings.ToUpper(strings.TrimSpace(m))]
		}
	}
	return bits
}

// save processes the REGISTER in m for aor (from To, or the given URI).
func (r *Reg) save(m *core.Msg, table string, flags int, uri string) (core.Val, error) {
	if m.Req == nil {
		return core.Null, core.ErrNoRequest
	}
	u, d, err := r.domain(table)
	if err != nil {
		return core.Null, err
	}
	ret, contacts, rerr := r.doSave(m, u, d, flags, uri)
	if rerr != nil {
		r.rejected.Inc()
		r.env.Log.Info("registrar: REGISTER refused", "code", rerr.code, "reason", rerr.info, "at", m.Pos())
		if flags&FlagNoReply == 0 {
			m.ReplyHeaders = append(m.ReplyHeaders, rerr.hdrs...)
			m.ReplyHeaders = append(m.ReplyHeaders, sip.NewHeader("P-Registrar-Error", rerr.info))
			if err := m.Reply(rerr.code, rerr.reason); err != nil {
				r.env.Log.Warn("registrar: reply failed", "err", err, "at", m.Pos())
			}
		}
		return core.Int(rerr.ret), nil
	}
	r.accepted.Inc()
	if flags&FlagNoReply == 0 {
		now := u.Now()
		for i := range contacts {
			v, err := replyContact(&contacts[i], now)
			if err != nil {
				// Stored before kamd checked contacts (or by hand in the
				// database): never echoed, and lookup skips it too.
				r.env.Log.Warn("registrar: bad stored contact not echoed", "contact", contacts[i].Contact, "err", err, "at", m.Pos())
				continue
			}
			m.ReplyHeaders = append(m.ReplyHeaders, sip.NewHeader("Contact", v))
		}
		if r.usePath.Load() {
			if p, ok := headerValue(m.Req, "Path"); ok {
				m.ReplyHeaders = append(m.ReplyHeaders, sip.NewHeader("Path", p))
			}
		}
		if err := m.Reply(200, "OK"); err != nil {
			r.env.Log.Warn("registrar: reply failed", "err", err, "at", m.Pos())
			return core.Int(-1), nil
		}
	}
	return core.Int(ret), nil
}

// replyContact is the Contact of the 200 for one binding; every param
// goes through core.AppendParam.
func replyContact(c *usrloc.Contact, now time.Time) (string, error) {
	if err := usrloc.CheckContact(c); err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("<" + c.Contact + ">")
	err := core.AppendParam(&b, "expires", strconv.Itoa(c.ExpiresIn(now)))
	if err == nil && c.Q >= 0 {
		err = core.AppendParam(&b, "q", strconv.FormatFloat(float64(c.Q)/1000, 'f', -1, 64))
	}
	if err == nil && c.Received != "" {
		var q string
		if q, err = core.QuoteString(c.Received); err == nil {
			err = core.AppendParam(&b, "received", q)
		}
	}
	if err == nil && c.Instance != "" {
		err = core.AppendParam(&b, "+sip.instance", c.Instance)
		if err == nil && c.RegID > 0 {
			err = core.AppendParam(&b, "reg-id", strconv.Itoa(c.RegID))
		}
	}
	return b.String(), err
}

// doSave updates usrloc; it returns save()'s code and the AoR's contacts
// for the 200 reply.
func (r *Reg) doSave(m *core.Msg, u *usrloc.UL, d *usrloc.Domain, flags int, uri string) (int, []usrloc.Contact, *regError) {
	req := m.Req
	if uri == "" {
		to := req.To()
		if to == nil {
			return 0, nil, bad("Error while parsing To")
		}
		uri = to.Address.String()
	}
	aor, err := aorOf(u, uri)
	if err != nil {
		return 0, nil, bad("Bad AOR")
	}
	callID := ""
	if c := req.CallID(); c != nil {
		callID = string(*c)
	}
	cseq := 0
	if c := req.CSeq(); c != nil {
		cseq = int(c.SeqNo)
	}
	if callID == "" {
		return 0, nil, bad("Call-ID header not found")
	}
	contacts, star, err := requestContacts(req)
	if err != nil {
		return 0, nil, bad("Bad Contact URI")
	}
	hdrExp, hasHdr := 0, false
	if v, ok := headerValue(req, "Expires"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, nil, bad("Error while parsing expires")
		}
		hdrExp, hasHdr = n, true
	}
	now := u.Now()
	ua, _ := headerValue(req, "User-Agent")
	path := ""
	if r.usePath.Load() {
		var ps []string
		for _, h := range core.FindHeaders(req, "Path") {
			v := strings.TrimSpace(h.Value())
			if err := checkPath(v); err != nil {
				return 0, nil, bad("Error while parsing Path")
			}
			ps = append(ps, v)
		}
		path = strings.Join(ps, ",")
	}
	natFlag := u.NatBflag()
	nat := natFlag >= 0 && (m.Flags|m.BFlags)&(1<<uint(natFlag)) != 0
	received := ""
	if v, ok := m.Ext["registrar:received"].(string); ok {
		received = v
	} else if nat {
		received = core.Target{Proto: m.Proto, Host: m.SrcIP, Port: m.SrcPort}.URI()
	}
	memFlag := 0
	if flags&FlagMemOnly != 0 {
		memFlag = usrloc.FlMem
	}

	if star {
		if len(contacts) > 0 {
			return 0, nil, bad("* used in contact and more contacts")
		}
		if !hasHdr || hdrExp != 0 {
			return 0, nil, bad("* used in contact and expires not zero")
		}
		if _, err := d.Update(aor, func(cs []usrloc.Contact) ([]usrloc.Contact, error) { return nil, nil }); err != nil {
			return 0, nil, &regError{code: 500, reason: "Server Internal Error", info: "Error while accessing usrloc", ret: -1}
		}
		return SaveDeleted, nil, nil
	}
	if len(contacts) == 0 {
		return SaveQuery, d.Lookup(aor), nil
	}

	type wanted struct {
		spec    contactSpec
		expires int
		q       int
	}
	ws := make([]wanted, 0, len(contacts))
	for _, c := range contacts {
		e, rerr := r.expiresFor(c.params, hdrExp, hasHdr, flags)
		if rerr != nil {
			return 0, nil, rerr
		}
		q, ok := parseQ(c.params)
		if !ok {
			return 0, nil, bad("Invalid q parameter")
		}
		ws = append(ws, wanted{spec: c, expires: e, q: q})
	}
	ret := 0
	var rerr *regError
	_, err = d.Update(aor, func(cs []usrloc.Contact) ([]usrloc.Contact, error) {
		inserted, updated, deleted := false, false, false
		for _, w := range ws {
			inst, _ := w.spec.params.Get("+sip.instance")
			regID := 0
			if v, ok := w.spec.params.Get("reg-id"); ok {
				regID, _ = strconv.Atoi(v)
			}
			idx := -1
			for i := range cs {
				if (inst != "" && cs[i].Instance == inst && cs[i].RegID == regID) || (inst == "" && cs[i].Contact == w.spec.uri) {
					idx = i
					break
				}
			}
			if idx >= 0 && cs[idx].CallID == callID {
				if cseq < cs[idx].CSeq {
					rerr = bad("Invalid CSeq number")
					return nil, rerr
				}
				if cseq == cs[idx].CSeq {
					continue // a retransmission: nothing changes
				}
			}
			if w.expires == 0 {
				if idx >= 0 {
					cs = append(cs[:idx], cs[idx+1:]...)
					deleted = true
				}
				continue
			}
			c := usrloc.Contact{
				Contact: w.spec.uri, Received: received, Path: path, Q: w.q, CallID: callID, CSeq: cseq,
				LastModified: now, Expires: now.Add(time.Duration(w.expires) * time.Second), UserAgent: ua,
				Socket: m.Local.String(), Methods: allowedMethods(req), Instance: inst, RegID: regID,
				Flags: memFlag, ConnID: -1,
			}
			if nat {
				c.CFlags |= 1 << uint(natFlag)
			}
			// Kamailio keeps the REGISTER's branch flags (nat_bflag,
			// sipping_bflag...) per contact; lookup sets them again.
			c.CFlags |= int(m.BFlags)
			if idx >= 0 {
				c.Ruid = cs[idx].Ruid
				cs[idx] = c
				updated = true
			} else {
				cs = append(cs, c)
				inserted = true
			}
			if flags&FlagReplace != 0 {
				cs = []usrloc.Contact{c}
			}
		}
		if max := int(r.maxContacts.Load()); max > 0 {
			n := 0
			for i := range cs {
				if cs[i].Valid(now) {
					n++
				}
			}
			if n > max {
				rerr = &regError{code: 503, reason: "Service Unavailable", info: "Too many registered contacts", ret: -2}
				return nil, rerr
			}
		}
		switch {
		case inserted:
			ret = SaveInserted
		case updated:
			ret = SaveUpdated
		case deleted:
			ret = SaveDeleted
		default:
			ret = SaveUpdated
		}
		return cs, nil
	})
	if rerr != nil {
		return 0, nil, rerr
	}
	if err != nil {
		return 0, nil, &regError{code: 500, reason: "Server Internal Error", info: "Error while accessing usrloc", ret: -1}
	}
	return ret, d.Lookup(aor), nil
}

// contactDst is the next hop of a contact: the first Path hop, else the
// received address (NAT), else "" (its own URI).
func contactDst(c usrloc.Contact) string {
	if c.Path != "" {
		first := strings.TrimSpace(splitContacts(c.Path)[0])
		first = strings.TrimSuffix(strings.TrimPrefix(first, "<"), ">")
		if i := strings.Index(first, ">"); i >= 0 {
			first = first[:i]
		}
		return first
	}
	return c.Received
}

// lookup rewrites the R-URI to the AoR's best contact; with append_branches
// the others become branches of the destination set.
func (r *Reg) lookup(m *core.Msg, table, uri string) (core.Val, error) {
	if m.Req == nil {
		return core.Null, core.ErrNoRequest
	}
	u, d, err := r.domain(table)
	if err != nil {
		return core.Null, err
	}
	if uri == "" {
		uri = m.Req.Recipient.String()
	}
	aor, err := aorOf(u, uri)
	if err != nil {
		r.env.Log.Warn("registrar: lookup: bad URI", "uri", uri, "err", err, "at", m.Pos())
		return core.Int(-3), nil
	}
	cs := d.Lookup(aor)
	if len(cs) == 0 {
		return core.Int(-1), nil
	}
	if r.methodFiltering.Load() {
		bit := methodBits[m.Method()]
		kept := cs[:0]
		for _, c := range cs {
			if bit == 0 || c.Methods&bit != 0 {
				kept = append(kept, c)
			}
		}
		if len(kept) == 0 {
			return core.Int(-2), nil
		}
		cs = kept
	}
	c := cs[0]
	if err := m.SetRURI(c.Contact); err != nil {
		r.env.Log.Error("registrar: lookup: bad stored contact", "contact", c.Contact, "err", err, "at", m.Pos())
		return core.Int(-3), nil
	}
	du := contactDst(c)
	if c.Path != "" {
		m.Req.PrependHeader(sip.NewHeader("Route", c.Path))
		m.SetExt(core.ExtRURIPath, c.Path)
	}
	if du != "" {
		if err := m.SetDstURI(du); err != nil {
			r.env.Log.Error("registrar: lookup: bad received/path", "uri", du, "err", err, "at", m.Pos())
			return core.Int(-3), nil
		}
	}
	if r.appendBranches.Load() {
		// The other contacts join the destination set, highest q first:
		// t_relay forks to all of them in parallel (Kamailio's append_branches=1).
		for _, o := range cs[1:] {
			if err := m.AppendBranch(core.Branch{URI: o.Contact, DstURI: contactDst(o), Path: o.Path, Q: o.Q, BFlags: uint64(o.CFlags)}); err != nil {
				r.env.Log.Warn("registrar: lookup: contact not added as a branch", "contact", o.Contact, "err", err, "at", m.Pos())
			}
		}
	}
	if f := u.NatBflag(); f >= 0 && c.CFlags&(1<<uint(f)) != 0 {
		m.Flags |= 1 << uint(f)
	}
	// The R-URI branch gets its contact's flags (Kamailio's setbflagsval(0, cflags)).
	m.BFlags = uint64(c.CFlags)
	return core.Int(1), nil
}

func (r *Reg) registered(m *core.Msg, table, uri string) (core.Val, error) {
	u, d, err := r.domain(table)
	if err != nil {
		return core.Null, err
	}
	if uri == "" {
		switch {
		case m.Req != nil:
			uri = m.Req.Recipient.String()
		case m.Res != nil && m.Res.To() != nil:
			uri = m.Res.To().Address.String()
		default:
			return core.Int(-1), nil
		}
	}
	aor, err := aorOf(u, uri)
	if err != nil {
		return core.Int(-1), nil
	}
	return core.IntRet(len(d.Lookup(aor)) > 0), nil
}

func (r *Reg) unregister(m *core.Msg, table, uri string) (core.Val, error) {
	d, aor, ok, err := r.aorIn(m, "unregister", table, uri)
	if err != nil {
		return core.Null, err
	}
	if !ok {
		return core.Int(-1), nil
	}
	d.DeleteAoR(aor)
	return core.Int(1), nil
}

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
			cs = append(cs, contactSpec{uri: u.String(), params: ch.Params})
		}
	}
	return cs, star, nil
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
			if err := reply(m, rerr.code, rerr.reason); err != nil {
				r.env.Log.Warn("registrar: reply failed", "err", err, "at", m.Pos())
			}
		}
		return core.Int(rerr.ret), nil
	}
	r.accepted.Inc()
	if flags&FlagNoReply == 0 {
		now := u.Now()
		for i := range contacts {
			m.ReplyHeaders = append(m.ReplyHeaders, sip.NewHeader("Contact", replyContact(&contacts[i], now)))
		}
		if r.usePath.Load() {
			if p, ok := headerValue(m.Req, "Path"); ok {
				m.ReplyHeaders = append(m.ReplyHeaders, sip.NewHeader("Path", p))
			}
		}
		if err := reply(m, 200, "OK"); err != nil {
			r.env.Log.Warn("registrar: reply failed", "err", err, "at", m.Pos())
			return core.Int(-1), nil
		}
	}
	return core.Int(ret), nil
}

// reply answers statefully when a transaction exists (as Kamailio's slb.freply), else statelessly.
func reply(m *core.Msg, code int, reason string) error {
	if tx, ok := m.Tx.(core.TxReplier); ok {
		return tx.Reply(m, code, reason)
	}
	return m.SendReply(code, reason)
}

func replyContact(c *usrloc.Contact, now time.Time) string {
	var b strings.Builder
	b.WriteString("<" + c.Contact + ">;expires=" + strconv.Itoa(c.ExpiresIn(now)))
	if c.Q >= 0 {
		b.WriteString(";q=" + strconv.FormatFloat(float64(c.Q)/1000, 'f', -1, 64))
	}
	if c.Received != "" {
		b.WriteString(`;received="` + c.Received + `"`)
	}
	if c.Instance != "" {
		b.WriteString(";+sip.instance=" + c.Instance)
		if c.RegID > 0 {
			b.WriteString(";reg-id=" + strconv.Itoa(c.RegID))
		}
	}
	return b.String()
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
			ps = append(ps, strings.TrimSpace(h.Value()))
		}
		path = strings.Join(ps, ",")
	}
	natFlag := u.NatBflag()
	nat := natFlag >= 0 && m.Flags&(1<<uint(natFlag)) != 0
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

// lookup rewrites the R-URI to the AoR's best contact.
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
	du := c.Received
	if c.Path != "" {
		first := strings.TrimSpace(splitContacts(c.Path)[0])
		first = strings.TrimSuffix(strings.TrimPrefix(first, "<"), ">")
		if i := strings.Index(first, ">"); i >= 0 {
			first = first[:i]
		}
		du = first
		m.Req.PrependHeader(sip.NewHeader("Route", c.Path))
	}
	if du != "" {
		if err := m.SetDstURI(du); err != nil {
			r.env.Log.Error("registrar: lookup: bad received/path", "uri", du, "err", err, "at", m.Pos())
			return core.Int(-3), nil
		}
	}
	if f := u.NatBflag(); f >= 0 && c.CFlags&(1<<uint(f)) != 0 {
		m.Flags |= 1 << uint(f)
	}
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
	u, d, err := r.domain(table)
	if err != nil {
		return core.Null, err
	}
	aor, err := aorOf(u, uri)
	if err != nil {
		r.env.Log.Warn("registrar: unregister: bad AoR", "aor", uri, "err", err, "at", m.Pos())
		return core.Int(-1), nil
	}
	d.DeleteAoR(aor)
	return core.Int(1), nil
}

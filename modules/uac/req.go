package uac

// The request side of uac: $uac_req and uac_req_send (requests the script
// makes kamd send, through tm's local client transactions, answering one
// digest challenge itself), the event callback for their replies, and
// uac_replace_from/to and uac_auth on routed requests.

import (
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/tm"
)

// reqData is $uac_req: one request being prepared (and, in the event
// callback, the request being answered with evcode/evtype set).
type reqData struct {
	method, ruri, furi, turi, ouri, hdrs, body string
	auser, apasswd, sock, callid, evparam      string
	flags, evroute, evcode, evtype             int64
}

// reqKey describes one $uac_req key: Kamailio's size limit for strings
// (0 for ints) and where the value lives.
type reqKey struct {
	max int
	str func(d *reqData) *string
	num func(d *reqData) *int64
}

var reqKeys = map[string]reqKey{
	"method":  {max: 32, str: func(d *reqData) *string { return &d.method }},
	"ruri":    {max: 1024, str: func(d *reqData) *string { return &d.ruri }},
	"furi":    {max: 1024, str: func(d *reqData) *string { return &d.furi }},
	"turi":    {max: 1024, str: func(d *reqData) *string { return &d.turi }},
	"ouri":    {max: 1024, str: func(d *reqData) *string { return &d.ouri }},
	"hdrs":    {max: 2048, str: func(d *reqData) *string { return &d.hdrs }},
	"body":    {max: 32768, str: func(d *reqData) *string { return &d.body }},
	"auser":   {max: 128, str: func(d *reqData) *string { return &d.auser }},
	"apasswd": {max: 64, str: func(d *reqData) *string { return &d.apasswd }},
	"sock":    {max: 128, str: func(d *reqData) *string { return &d.sock }},
	"callid":  {max: 128, str: func(d *reqData) *string { return &d.callid }},
	"evparam": {max: 128, str: func(d *reqData) *string { return &d.evparam }},
	"flags":   {num: func(d *reqData) *int64 { return &d.flags }},
	"evroute": {num: func(d *reqData) *int64 { return &d.evroute }},
	"evcode":  {num: func(d *reqData) *int64 { return &d.evcode }},
	"evtype":  {num: func(d *reqData) *int64 { return &d.evtype }},
}

const reqExt = "uac_req"

// reqOf is the message's $uac_req, created on first write.
func reqOf(m *core.Msg, create bool) *reqData {
	if d, ok := m.Ext[reqExt].(*reqData); ok {
		return d
	}
	if !create {
		return nil
	}
	d := &reqData{}
	m.SetExt(reqExt, d)
	return d
}

// reqPVs are the request side's pseudo-variables ($uac_req).
func (u *UAC) reqPVs() []core.PVDef {
	return []core.PVDef{{Name: "uac_req", HasArg: true,
		Doc: "the request uac_req_send sends: keys method, ruri, furi, turi, ouri, hdrs, body, flags, auser, apasswd, sock, callid, evroute, evcode, evtype, evparam; $uac_req(all) = $null resets them. Per message (Kamailio: per process)",
		Get: func(m *core.Msg, arg string) core.Val {
			k, ok := reqKeys[arg]
			d := reqOf(m, false)
			if !ok || d == nil {
				if !ok {
					u.env.Log.Error("uac: unknown $uac_req key", "key", arg, "at", m.Pos())
				}
				return core.Null
			}
			if k.num != nil {
				return core.Int(int(*k.num(d)))
			}
			if s := *k.str(d); s != "" {
				return core.Str(s)
			}
			return core.Null
		},
		Set: func(m *core.Msg, arg string, v core.Val) error {
			if arg == "all" {
				m.SetExt(reqExt, &reqData{}) // Kamailio: any assignment to all resets every key
				return nil
			}
			k, ok := reqKeys[arg]
			if !ok {
				return fmt.Errorf("$uac_req(%s): unknown key (method, ruri, furi, turi, ouri, hdrs, body, flags, auser, apasswd, sock, callid, evroute, evcode, evtype, evparam, all)", arg)
			}
			d := reqOf(m, true)
			if k.num != nil {
				if v.IsNull() {
					*k.num(d) = 0
					return nil
				}
				n, ok := v.AsInt()
				if !ok {
					return fmt.Errorf("$uac_req(%s): want an integer, got %q", arg, v.String())
				}
				*k.num(d) = n
				return nil
			}
			s := ""
			if !v.IsNull() {
				s = v.String()
			}
			if len(s) >= k.max {
				return fmt.Errorf("$uac_req(%s): %d bytes, the limit is %d", arg, len(s), k.max-1)
			}
			*k.str(d) = s
			return nil
		}}}
}

// reqFuncs are the script functions of uac's request side.
func (u *UAC) reqFuncs() []core.Func {
	s := core.ArgStr
	return []core.Func{
		{Name: "uac_req_send", Ret: core.RetInt,
			Doc: "send the request prepared in $uac_req through tm; 1 handed to tm, -1 not (missing method/ruri, bad value, no socket); replies go to the event_callback with $uac_req(evcode/evtype)",
			Fn:  u.reqSend},
		{Name: "uac_replace_from", Args: []core.ArgType{s, s}, Ret: core.RetInt, Routes: core.RouteRequest | core.RouteFailure | core.RouteBranch,
			Doc: "(display, uri) replace the From display name and URI (\"\" display removes it, \"\" uri keeps it); restore_mode none semantics",
			Fn:  func(m *core.Msg, a []core.Val) (core.Val, error) { return u.replace(m, "From", a[0].Str, a[1].Str) }},
		{Name: "uac_replace_from_uri", Args: []core.ArgType{s}, Ret: core.RetInt, Routes: core.RouteRequest | core.RouteFailure | core.RouteBranch,
			Doc: "(uri) replace the From URI, keeping the display name",
			Fn:  func(m *core.Msg, a []core.Val) (core.Val, error) { return u.replaceURI(m, "From", a[0].Str) }},
		{Name: "uac_replace_to", Args: []core.ArgType{s, s}, Ret: core.RetInt, Routes: core.RouteRequest | core.RouteFailure | core.RouteBranch,
			Doc: "(display, uri) replace the To display name and URI (\"\" display removes it, \"\" uri keeps it); restore_mode none semantics",
			Fn:  func(m *core.Msg, a []core.Val) (core.Val, error) { return u.replace(m, "To", a[0].Str, a[1].Str) }},
		{Name: "uac_replace_to_uri", Args: []core.ArgType{s}, Ret: core.RetInt, Routes: core.RouteRequest | core.RouteFailure | core.RouteBranch,
			Doc: "(uri) replace the To URI, keeping the display name",
			Fn:  func(m *core.Msg, a []core.Val) (core.Val, error) { return u.replaceURI(m, "To", a[0].Str) }},
		{Name: "uac_auth", Ret: core.RetInt, Routes: core.RouteFailure,
			Doc: "in a failure route after a 401/407: add (Proxy-)Authorization for the challenged realm from the credential modparam; then t_relay() again. 1 added, -1 no challenge or no credential for its realm",
			Fn:  u.uacAuth},
	}
}

var warnedRestore atomic.Bool

// sendCtx follows one uac_req_send: the request (without tm's Via), its
// data, and whether the one automatic authentication was used.
type sendCtx struct {
	u      *UAC
	tm     *tm.TM
	d      reqData
	req    *sip.Request
	dst    core.Target
	sock   string
	prog   any
	authed atomic.Bool
}

// reqSend is KSR.uac.uac_req_send.
func (u *UAC) reqSend(m *core.Msg, _ []core.Val) (core.Val, error) {
	fail := func(why string, args ...any) (core.Val, error) {
		u.env.Log.Error("uac: uac_req_send: "+why, append(args, "at", m.Pos())...)
		return core.Int(-1), nil
	}
	d := reqOf(m, false)
	if d == nil || d.method == "" || d.ruri == "" {
		return fail("$uac_req(method) and $uac_req(ruri) are required")
	}
	t, err := tm.Of(u.env)
	if err != nil {
		return fail(err.Error())
	}
	sc := &sendCtx{u: u, tm: t, d: *d, prog: m.Prog}
	if err := sc.build(); err != nil {
		return fail(err.Error())
	}
	if n, max := u.reqPending.Add(1), u.reqMaxPending.Load(); max > 0 && n > max {
		u.reqPending.Add(-1)
		return fail(fmt.Sprintf("%d requests in flight already (modparam req_max_pending)", max), "method", d.method, "ruri", d.ruri)
	}
	if err := sc.send(sc.req); err != nil {
		u.reqPending.Add(-1)
		return fail("cannot send", "err", err, "method", d.method, "ruri", d.ruri)
	}
	return core.Int(1), nil
}

// build makes the request from $uac_req. Every value written into a
// header is checked: URIs parse as SIP URIs, the tag and Call-ID are ours,
// extra headers parse as header lines.
func (sc *sendCtx) build() error {
	d := &sc.d
	if !core.IsToken(d.method) {
		return fmt.Errorf("$uac_req(method) %q is not a SIP method", d.method)
	}
	ruri, err := core.ParseURI(d.ruri)
	if err != nil {
		return fmt.Errorf("$uac_req(ruri): %v", err)
	}
	uriOr := func(key, s string) (sip.Uri, error) {
		if s == "" {
			return *ruri.Clone(), nil
		}
		u, err := core.ParseURI(s)
		if err != nil {
			return u, fmt.Errorf("$uac_req(%s): %v", key, err)
		}
		return u, nil
	}
	furi, err := uriOr("furi", d.furi)
	if err != nil {
		return err
	}
	turi, err := uriOr("turi", d.turi)
	if err != nil {
		return err
	}
	req := sip.NewRequest(sip.RequestMethod(d.method), ruri)
	from := &sip.FromHeader{Address: furi, Params: sip.NewParams()}
	if err := core.SetParam(&from.Params, "tag", randHex(8)); err != nil {
		return err
	}
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: turi, Params: sip.NewParams()})
	callid := d.callid
	if callid == "" {
		callid = randHex(12) + "@" + sc.u.localHost()
	}
	if err := core.CheckText("$uac_req(callid)", callid); err != nil || strings.ContainsAny(callid, " \t") {
		return fmt.Errorf("$uac_req(callid) %q is not a Call-ID", callid)
	}
	cid := sip.CallIDHeader(callid)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 10, MethodName: sip.RequestMethod(d.method)})
	if d.hdrs != "" {
		hs, err := core.ParseHeaderText(d.hdrs)
		if err != nil {
			return fmt.Errorf("$uac_req(hdrs): %v", err)
		}
		for _, h := range hs {
			switch core.CanonicalHeader(h.Name()) {
			case "via", "call-id", "cseq", "from", "to", "content-length":
				return fmt.Errorf("$uac_req(hdrs): %s is built by uac_req_send", h.Name())
			}
			req.AppendHeader(h)
		}
	}
	if d.body != "" {
		req.SetBody([]byte(d.body))
	}
	sc.req = req
	if d.ouri != "" {
		o, err := core.ParseURI(d.ouri)
		if err != nil {
			return fmt.Errorf("$uac_req(ouri): %v", err)
		}
		sc.dst = core.TargetOf(&o)
	}
	sc.sock = d.sock
	if sc.sock == "" {
		sc.sock = sc.u.DefaultSocket()
	}
	if sc.sock != "" {
		// The socket's protocol wins over the target's default (Kamailio sends from it).
		s, err := core.ParseSocket(sc.sock)
		if err != nil {
			return fmt.Errorf("$uac_req(sock): %v", err)
		}
		if sc.dst.Host == "" {
			sc.dst = core.TargetOf(&req.Recipient)
		}
		if _, ok := req.Recipient.UriParams.Get("transport"); !ok && d.ouri == "" && !strings.EqualFold(req.Recipient.Scheme, "sips") {
			sc.dst.Proto = s.Proto
		}
	}
	return nil
}

// localHost is the host written into generated Call-IDs.
func (u *UAC) localHost() string {
	if len(u.env.Sockets()) > 0 {
		return u.env.Sockets()[0].Host()
	}
	return "kamgo"
}

func (sc *sendCtx) send(req *sip.Request) error {
	return sc.tm.SendRequest(&tm.LocalRequest{Req: req, Dst: sc.dst, Socket: sc.sock, OnReply: sc.onReply})
}

// onReply: a 401/407 is answered once when auser/apasswd are set
// (Kamailio: the event callback runs for the challenge and again for the
// final reply of the authenticated request); finals go to the callback.
func (sc *sendCtx) onReply(res *sip.Response) {
	code := res.StatusCode
	if code < 200 {
		return
	}
	generated := tm.Generated(res)
	sc.event(res, generated)
	if (code == 401 || code == 407) && !generated && sc.d.auser != "" && sc.d.apasswd != "" && sc.authed.CompareAndSwap(false, true) {
		req, err := sc.authorized(res)
		if err == nil {
			err = sc.send(req)
		}
		if err == nil {
			return // still in flight: the authenticated request's final ends it
		}
		sc.u.env.Log.Error("uac: uac_req_send: cannot answer the challenge", "code", code, "err", err, "ruri", sc.d.ruri)
	}
	sc.u.reqPending.Add(-1) // tm delivers exactly one final per transaction
}

// authorized is the request again with CSeq+1 and the credentials for
// the challenge in res.
func (sc *sendCtx) authorized(res *sip.Response) (*sip.Request, error) {
	values, crName := core.DigestChallengeValues(res)
	ch, err := core.PickDigestChallenge(values)
	if err != nil {
		return nil, err
	}
	cred := core.DigestCredentials{Username: sc.d.auser, Password: sc.d.apasswd}
	if sc.d.flags&1 != 0 {
		cred = core.DigestCredentials{Username: sc.d.auser, HA1: sc.d.apasswd}
	}
	req := sc.req.Clone()
	v, err := ch.Authorize(cred, string(req.Method), req.Recipient.String(), 1, randHex(8), req.Body())
	if err != nil {
		return nil, err
	}
	cs := req.CSeq()
	cs.SeqNo++
	req.AppendHeader(sip.NewHeader(crName, v))
	return req, nil
}

// event runs the event_callback for a final reply: evroute 1 for every
// final, 2 only for negative ones (and timeouts), 0 never.
func (sc *sendCtx) event(res *sip.Response, generated bool) {
	u := sc.u
	cb := u.EventCallback()
	if sc.d.evroute == 0 || (sc.d.evroute == 2 && res.StatusCode < 300) || cb == "" || u.env.Router == nil {
		return
	}
	ev := sc.d
	ev.evcode, ev.evtype = int64(res.StatusCode), 1
	if generated {
		ev.evtype = 2
	}
	dst := sc.dst
	if dst.Host == "" {
		dst = core.TargetOf(&sc.req.Recipient)
	}
	local, _ := u.env.SocketFor(dst.Proto)
	m := &core.Msg{Env: u.env, Res: res, Proto: dst.Proto, SrcIP: dst.Host, SrcPort: dst.Port, Local: local,
		Arrived: u.env.Clock.Now(), Event: "uac:reply", Ext: map[string]any{reqExt: &ev}}
	prog := sc.prog
	if prog == nil {
		prog = u.env.Router.Current()
	}
	if err := u.env.Router.Run(prog, cb, core.RouteEvent, m); err != nil {
		u.env.Log.Error("script error in "+cb, "err", err, "event", "uac:reply")
	}
}

// replace is uac_replace_from/uac_replace_to with restore_mode none
// semantics: the header is rewritten and nothing is restored later.
func (u *UAC) replace(m *core.Msg, which, display, uri string) (core.Val, error) {
	if m.Req == nil {
		return core.Null, core.ErrNoRequest
	}
	u.noteRestore()
	var addr *sip.Uri
	var disp *string
	switch which {
	case "From":
		if f := m.Req.From(); f != nil {
			addr, disp = &f.Address, &f.DisplayName
		}
	default:
		if t := m.Req.To(); t != nil {
			addr, disp = &t.Address, &t.DisplayName
		}
	}
	if addr == nil {
		u.env.Log.Error("uac: uac_replace_"+strings.ToLower(which)+": the request has no "+which+" header", "at", m.Pos())
		return core.Int(-1), nil
	}
	if uri != "" {
		nu, err := core.ParseURI(uri)
		if err != nil {
			return core.Null, fmt.Errorf("uac_replace_%s: %v", strings.ToLower(which), err)
		}
		*addr = nu
	}
	d, err := displayName(display)
	if err != nil {
		return core.Null, fmt.Errorf("uac_replace_%s: display %v", strings.ToLower(which), err)
	}
	*disp = d
	return core.Int(1), nil
}

// replaceURI is uac_replace_from_uri / uac_replace_to_uri.
func (u *UAC) replaceURI(m *core.Msg, which, uri string) (core.Val, error) {
	if m.Req == nil {
		return core.Null, core.ErrNoRequest
	}
	if uri == "" {
		return core.Null, fmt.Errorf("uac_replace_%s_uri: empty URI", strings.ToLower(which))
	}
	keep := ""
	if which == "From" && m.Req.From() != nil {
		keep = m.Req.From().DisplayName
	} else if which == "To" && m.Req.To() != nil {
		keep = m.Req.To().DisplayName
	}
	v, err := u.replace(m, which, "", uri)
	if err != nil || v.Int != 1 {
		return v, err
	}
	if which == "From" {
		m.Req.From().DisplayName = keep
	} else {
		m.Req.To().DisplayName = keep
	}
	return v, nil
}

// displayName turns a script's display name (quoted or not) into what
// sipgo writes between its own quotes: the escaped inside of a
// quoted-string (core.QuoteString).
func displayName(s string) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
		s = strings.NewReplacer(`\"`, `"`, `\\`, `\`).Replace(s)
	}
	if s == "" {
		return "", nil
	}
	q, err := core.QuoteString(s)
	if err != nil {
		return "", err
	}
	return q[1 : len(q)-1], nil
}

// noteRestore logs once that restoring (restore_mode auto/manual) is not done.
func (u *UAC) noteRestore() {
	if mode := u.restoreMode.Load(); mode != "none" && warnedRestore.CompareAndSwap(false, true) {
		u.env.Log.Warn("uac: restore_mode " + mode + " is not implemented: uac_replace_from/to behave as restore_mode none (replies and in-dialog requests keep the replaced value)")
	}
}

// credentialFor is the credential modparam (username:realm:password) for realm.
func (u *UAC) credentialFor(realm string) (user, pass string, ok bool) {
	c := u.credential.Load()
	if c == "" {
		return "", "", false
	}
	parts := strings.SplitN(c, ":", 3)
	if len(parts) != 3 || parts[1] != realm {
		return "", "", false
	}
	return parts[0], parts[2], true
}

// uacAuth is KSR.uac.uac_auth: in a failure route after a 401/407,
// authorize the request for the challenged realm; the script relays again.
func (u *UAC) uacAuth(m *core.Msg, _ []core.Val) (core.Val, error) {
	if m.Req == nil {
		return core.Null, core.ErrNoRequest
	}
	res := tm.FailedReply(m)
	if res == nil || (res.StatusCode != 401 && res.StatusCode != 407) {
		u.env.Log.Error("uac: uac_auth: the failed branch has no 401/407 reply", "at", m.Pos())
		return core.Int(-1), nil
	}
	values, crName := core.DigestChallengeValues(res)
	ch, err := core.PickDigestChallenge(values)
	if err != nil {
		u.env.Log.Error("uac: uac_auth: "+err.Error(), "at", m.Pos())
		return core.Int(-1), nil
	}
	user, pass, ok := u.credentialFor(ch.Realm)
	if !ok {
		u.env.Log.Error("uac: uac_auth: no credential for realm "+ch.Realm, "at", m.Pos())
		return core.Int(-1), nil
	}
	v, err := ch.Authorize(core.DigestCredentials{Username: user, Password: pass}, string(m.Req.Method), m.Req.Recipient.String(), 1, randHex(8), m.Req.Body())
	if err != nil {
		u.env.Log.Error("uac: uac_auth: "+err.Error(), "at", m.Pos())
		return core.Int(-1), nil
	}
	core.RemoveHeaders(m.Req, crName) // a stale one from an earlier attempt
	m.Req.AppendHeader(sip.NewHeader(crName, v))
	return core.Int(1), nil
}

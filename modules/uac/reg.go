package uac

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

// Record states (the `state` field of reg_dump; Kamailio has only flags).
const (
	StateDisabled       = "disabled"
	StateIdle           = "idle"
	StateRegistering    = "registering"
	StateAuthenticating = "authenticating"
	StateRegistered     = "registered"
	StateFailed         = "failed"
	StateUnregistering  = "unregistering"
	StateInvalid        = "invalid"
)

// Kamailio's record flags (uac_reg.c), shown in reg_dump's `flags`.
const (
	flagDisabled = 1
	flagOngoing  = 2
	flagOnline   = 4
	flagAuthSent = 8
	flagInit     = 16
)

// startSpacing spreads the first REGISTERs of many records (at start, on
// reg_active 1 or a reload adding rows): record i of a batch goes out
// i×startSpacing after the batch, 500 per second, so 10,000 rows do not
// leave in one burst.
const startSpacing = 2 * time.Millisecond

// max423 bounds the 423 retries of one attempt.
const max423 = 3

// record is one registration: its row and its state. Every field is
// guarded by UAC.mu.
type record struct {
	Row
	src     Row           // the row as read (reload compares it)
	invalid string        // why the row was refused (state invalid)
	dsts    []core.Target // auth_proxy's next hops (several with SRV)
	dstIdx  int           // the one in use: a timeout or 503 moves on

	expires      int // requested expires in effect (423 and unregister change it)
	flags        int
	state        string
	lastCode     int
	lastReason   string
	lastAttempt  time.Time
	lastSuccess  time.Time
	nextRefresh  time.Time
	timerExpires time.Time // Kamailio's: when the binding runs out (the send time while none)
	regInit      time.Time
	granted      int
	failures     int
	callID       string
	fromTag      string
	cseq         uint32

	timer   core.Timer
	gen     uint64 // bumped per REGISTER sent; an older reply is ignored
	removed bool
	// parked: a refresh came due while reg_active was 0; the timer now
	// fires when the binding runs out (state idle then), and reg_active 1
	// refreshes at once.
	parked bool

	// The attempt in flight.
	sentAt    time.Time // send time of the attempt's first REGISTER
	unreg     bool      // the attempt is an un-REGISTER (Expires: 0)
	then      func()    // run (under mu) when an un-REGISTER ends
	authTries int
	staleUsed bool
	tries423  int
	// The last challenge, kept so refreshes authorize at once (nc counts on).
	chal    *core.DigestChallenge
	chalHdr string
	nc      uint32
}

func (r *record) contact() string {
	return "<sip:" + r.LUUID + "@" + r.ContactAddr + ">"
}

func (r *record) dst() core.Target {
	if len(r.dsts) == 0 {
		return core.Target{}
	}
	return r.dsts[r.dstIdx%len(r.dsts)]
}

func (r *record) aor() string { return "sip:" + r.RUsername + "@" + r.RDomain }

// randHex is n random bytes in hex (Call-IDs, tags, cnonces).
func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (u *UAC) now() time.Time { return u.env.Clock.Now() }

// setState changes the state and queues the event (emitted after unlock).
func (u *UAC) setState(r *record, s string) {
	if r.state == s {
		return
	}
	old := r.state
	r.state = s
	if !r.removed {
		if c := u.gauge(old); c != nil {
			c.Add(-1)
		}
		if c := u.gauge(s); c != nil {
			c.Add(1)
		}
	}
	u.events = append(u.events, map[string]any{
		"event": "reg_state", "l_uuid": r.LUUID, "state": s, "old_state": old,
		"last_code": r.lastCode, "last_reason": r.lastReason, "failures": r.failures,
	})
}

// unlock releases mu and publishes the events queued under it, so a slow
// subscriber never holds the registration lock.
func (u *UAC) unlock() {
	ev := u.events
	u.events = nil
	if len(ev) == 0 {
		u.mu.Unlock()
		return
	}
	// emitMu is taken before mu is released, so events leave in the order
	// their state changes happened even when two goroutines (an RPC and a
	// reply) change states back to back.
	u.emitMu.Lock()
	u.mu.Unlock()
	for _, e := range ev {
		u.env.Emit("uac", e)
	}
	u.emitMu.Unlock()
}

// schedule arms r's one timer to fire at `at` (stopping the previous).
// Every record has at most one pending runtime timer: no goroutine sleeps.
func (u *UAC) schedule(r *record, at time.Time) {
	if r.timer != nil {
		r.timer.Stop()
	}
	r.nextRefresh = at
	d := at.Sub(u.now())
	if d < 0 {
		d = 0
	}
	gen := r.gen
	r.timer = u.env.Clock.AfterFunc(d, func() { u.due(r, gen) })
}

func (u *UAC) unschedule(r *record) {
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	r.nextRefresh = time.Time{}
}

// due runs when r's timer fires: (re-)REGISTER unless something changed.
func (u *UAC) due(r *record, gen uint64) {
	u.mu.Lock()
	defer u.unlock()
	if r.removed || r.gen != gen || r.invalid != "" {
		return
	}
	r.timer = nil
	r.nextRefresh = time.Time{}
	r.parked = false
	if r.flags&flagOngoing != 0 || r.flags&flagDisabled != 0 || r.expires == 0 {
		return
	}
	if u.regActive.Load() == 0 {
		if now := u.now(); r.state == StateRegistered && r.timerExpires.After(now) {
			// No refresh while inactive: the binding stays until it
			// runs out, and the dump says so then.
			u.schedule(r, r.timerExpires)
			r.parked = true
			return
		}
		r.flags &^= flagOnline
		u.setState(r, StateIdle)
		return
	}
	r.flags |= flagInit
	u.startAttempt(r, false)
}

// startAttempt begins a REGISTER (or un-REGISTER) attempt.
func (u *UAC) startAttempt(r *record, unreg bool) {
	now := u.now()
	keep := u.regKeepCallID.Load() == 1 && r.flags&flagOnline != 0 && r.callID != "" && r.cseq > 0 && r.cseq < 2147483638
	if unreg && r.callID != "" && r.cseq > 0 {
		keep = true // the un-REGISTER belongs to the registration's dialog
	}
	if !keep {
		r.callID = randHex(12) + "@kamgo"
		r.fromTag = randHex(8)
		r.cseq = 9 // the first REGISTER has CSeq 10, as Kamailio's
	}
	r.unreg = unreg
	r.sentAt = now
	r.lastAttempt = now
	r.authTries, r.staleUsed, r.tries423 = 0, false, 0
	r.flags |= flagOngoing
	r.flags &^= flagAuthSent
	switch {
	case unreg:
		u.setState(r, StateUnregistering)
	case r.state == StateRegistered && r.timerExpires.After(now):
		// A refresh: the binding is valid until it runs out.
	default:
		u.setState(r, StateRegistering)
	}
	u.sendRegister(r)
}

// sendRegister sends the next REGISTER of the attempt (CSeq+1).
func (u *UAC) sendRegister(r *record) {
	r.cseq++
	r.gen++
	gen := r.gen
	exp := r.expires
	if r.unreg {
		exp = 0
	}
	var b strings.Builder
	fmt.Fprintf(&b, "REGISTER sip:%s SIP/2.0\r\n", r.RDomain)
	fmt.Fprintf(&b, "From: <%s>;tag=%s\r\n", r.aor(), r.fromTag)
	fmt.Fprintf(&b, "To: <%s>\r\n", r.aor())
	fmt.Fprintf(&b, "Call-ID: %s\r\n", r.callID)
	fmt.Fprintf(&b, "CSeq: %d REGISTER\r\n", r.cseq)
	fmt.Fprintf(&b, "Contact: %s\r\n", r.contact())
	fmt.Fprintf(&b, "Expires: %d\r\n", exp)
	if r.chal != nil {
		r.nc++
		v, err := r.chal.Authorize(u.creds(r), "REGISTER", "sip:"+r.RDomain, r.nc, randHex(8), nil)
		if err == nil {
			fmt.Fprintf(&b, "%s: %s\r\n", r.chalHdr, v)
			r.flags |= flagAuthSent
		} else {
			r.chal = nil
		}
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	msg, err := sip.NewParser().ParseSIP([]byte(b.String()))
	req, ok := msg.(*sip.Request)
	if err != nil || !ok {
		u.fail(r, 500, fmt.Sprintf("cannot build the REGISTER: %v", err), 0)
		return
	}
	sock := r.Socket
	if sock == "" {
		sock = u.defaultSocket.Load()
	}
	send := u.send
	if send == nil {
		u.fail(r, 500, "tm is not available", 0)
		return
	}
	if err := send(req, r.dst(), sock, func(res *sip.Response) { u.onReply(r, gen, res) }); err != nil {
		u.env.Log.Warn("uac: cannot send REGISTER", "l_uuid", r.LUUID, "err", err)
		u.fail(r, 503, "cannot send: "+err.Error(), 0)
	}
}

func (u *UAC) creds(r *record) core.DigestCredentials {
	return core.DigestCredentials{Username: r.AuthUsername, Password: r.AuthPassword, HA1: r.AuthHA1}
}

// onReply handles every reply to r's REGISTERs (called by tm, outside mu).
func (u *UAC) onReply(r *record, gen uint64, res *sip.Response) {
	if res.StatusCode < 200 {
		return
	}
	u.mu.Lock()
	defer u.unlock()
	if r.gen != gen || r.flags&flagOngoing == 0 {
		return // a reply to a REGISTER since replaced (reload, disable, new attempt)
	}
	// Registration attempts by result (kamd_uac_reg_replies_total{code} in /metrics).
	u.env.Stats.Counter("uac", "reg_"+strconv.Itoa(res.StatusCode)+"_replies").Inc()
	r.lastCode, r.lastReason = res.StatusCode, res.Reason
	switch code := res.StatusCode; {
	case code >= 200 && code < 300:
		u.registered(r, res)
	case code == 401 || code == 407:
		u.challenged(r, res)
	case code == 423:
		r.tries423++
		min := 0
		if h := core.FirstHeader(res, "Min-Expires"); h != nil {
			min, _ = strconv.Atoi(strings.TrimSpace(h.Value()))
		}
		if min <= r.expires {
			min = r.expires * 2
		}
		if r.tries423 > max423 || r.unreg {
			u.fail(r, code, res.Reason, 0)
			return
		}
		u.env.Log.Info("uac: 423 Interval Too Brief, retrying with a longer expires", "l_uuid", r.LUUID, "expires", min)
		r.expires = min
		u.sendRegister(r)
	default:
		u.env.Log.Warn("uac: got sip response while registering", "l_uuid", r.LUUID, "code", code, "reason", res.Reason)
		u.fail(r, code, res.Reason, retryAfter(res))
	}
}

func retryAfter(res *sip.Response) time.Duration {
	h := core.FirstHeader(res, "Retry-After")
	if h == nil {
		return 0
	}
	v := strings.TrimSpace(h.Value())
	if i := strings.IndexAny(v, " ;("); i >= 0 {
		v = v[:i]
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}

// challenged answers a 401/407 with credentials (uac.md §3.4, done right:
// the strongest usable algorithm, a fresh cnonce, nc counting per nonce,
// stale=true answered once without counting a failure).
func (u *UAC) challenged(r *record, res *sip.Response) {
	vals, aname := core.DigestChallengeValues(res)
	ch, err := u.pickChallenge(r, vals)
	if err != nil {
		r.chal = nil
		u.fail(r, res.StatusCode, fmt.Sprintf("%s (%v)", res.Reason, err), 0)
		return
	}
	if r.Realm != "" && ch.Realm != r.Realm {
		r.chal = nil
		u.env.Log.Error("uac: realms do not match", "l_uuid", r.LUUID, "requested_realm", ch.Realm, "realm", r.Realm)
		u.fail(r, res.StatusCode, "realms do not match. requested realm: ["+ch.Realm+"]", 0)
		return
	}
	switch {
	case ch.Stale && !r.staleUsed:
		r.staleUsed = true // the credentials were right: only the nonce aged
	case r.authTries >= 1:
		r.chal = nil
		u.env.Log.Warn("uac: authentication failed", "l_uuid", r.LUUID, "code", res.StatusCode)
		u.fail(r, res.StatusCode, "authentication failed: "+res.Reason, 0)
		return
	default:
		r.authTries++
	}
	if r.chal == nil || r.chal.Nonce != ch.Nonce {
		r.nc = 0
	}
	r.chal, r.chalHdr = ch, aname
	if !r.unreg && r.state != StateRegistered {
		u.setState(r, StateAuthenticating)
	}
	u.sendRegister(r)
}

// pickChallenge chooses the strongest challenge the credentials can answer:
// with only an HA1 (an MD5 one) that is an MD5 challenge.
func (u *UAC) pickChallenge(r *record, vals []string) (*core.DigestChallenge, error) {
	if r.AuthPassword == "" {
		var md5 []string
		for _, v := range vals {
			if c, err := core.ParseDigestChallenge(v); err == nil && strings.HasPrefix(strings.ToUpper(c.Algorithm), "MD5") {
				md5 = append(md5, v)
			}
		}
		if len(md5) == 0 {
			return nil, fmt.Errorf("only auth_ha1 (MD5) is set and no MD5 challenge was offered")
		}
		vals = md5
	}
	return core.PickDigestChallenge(vals)
}

// registered handles a 2xx.
func (u *UAC) registered(r *record, res *sip.Response) {
	now := u.now()
	r.flags &^= flagOngoing | flagAuthSent
	if r.unreg {
		r.flags &^= flagOnline
		r.granted = 0
		r.timerExpires = time.Time{}
		r.lastSuccess = now
		then := r.then
		r.then, r.unreg = nil, false
		if then != nil {
			then()
		} else {
			u.setState(r, StateDisabled)
		}
		return
	}
	granted, ok := grantedExpires(res, r)
	if !ok || granted <= 0 {
		// The registrar did not say: take what we asked for, so the
		// refresh is still scheduled (never a REGISTER on every tick).
		u.env.Log.Warn("uac: 2xx without a granted expiry for our contact; assuming the requested one", "l_uuid", r.LUUID, "expires", r.expires)
		granted = r.expires
	}
	r.granted = granted
	first := r.state != StateRegistered // a registration, not a refresh
	r.flags |= flagOnline
	r.failures = 0
	r.lastSuccess = now
	r.timerExpires = r.sentAt.Add(time.Duration(granted) * time.Second)
	u.setState(r, StateRegistered)
	u.schedule(r, r.sentAt.Add(u.refreshAfter(granted, first)))
}

// refreshAfter is the refresh rule: re-REGISTER 70% of the granted expiry
// after the REGISTER was sent (at least 1 s), leaving 30% for a challenge
// round trip and tm's timeout. The first refresh after a registration
// (start, enable, reload, recovery from a failure) comes between 10% and
// 75% instead, at a point of a low-discrepancy sequence (the golden-ratio
// fractions of a counter): rows that registered in the same seconds —
// thousands at start — are spread evenly over the whole period at once,
// and the fixed 70% afterwards keeps them spread. Random jitter would
// leave Poisson clusters (several times the average in some second).
func (u *UAC) refreshAfter(granted int, first bool) time.Duration {
	g := time.Duration(granted) * time.Second
	d := g * 7 / 10
	if first {
		frac := math.Mod(float64(u.spreadSeq.Add(1))*0.6180339887498949, 1)
		d = g/10 + time.Duration(frac*float64(g*65/100))
	}
	if d < time.Second {
		d = time.Second
	}
	return d
}

// grantedExpires is the expiry the registrar granted: the expires param of
// the Contact that is ours (user = l_uuid), else of the only Contact, else
// the Expires header.
func grantedExpires(res *sip.Response, r *record) (int, bool) {
	var only *sip.ContactHeader
	n := 0
	for _, h := range core.FindHeaders(res, "Contact") {
		c, ok := h.(*sip.ContactHeader)
		if !ok {
			continue
		}
		n++
		only = c
		if c.Address.User == r.LUUID {
			if v, ok := c.Params.Get("expires"); ok {
				if e, err := strconv.Atoi(v); err == nil {
					return e, true
				}
			}
			only = nil
			break
		}
	}
	if n == 1 && only != nil {
		if v, ok := only.Params.Get("expires"); ok {
			if e, err := strconv.Atoi(v); err == nil {
				return e, true
			}
		}
	}
	if h := core.FirstHeader(res, "Expires"); h != nil {
		if e, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil {
			return e, true
		}
	}
	return 0, false
}

// backoff is the delay before retry number `failures` (1-based):
// reg_retry_interval doubled per consecutive failure, capped at
// reg_retry_max, ±10% jitter.
func (u *UAC) backoff(failures int) time.Duration {
	base := time.Duration(u.regRetryIntv.Load()) * time.Second
	cap := time.Duration(u.regRetryMax.Load()) * time.Second
	d := base
	for i := 1; i < failures && d < cap; i++ {
		d *= 2
	}
	if d > cap {
		d = cap
	}
	j := int64(d / 10)
	if j > 0 {
		d += time.Duration(mrand.Int64N(2*j+1) - j)
	}
	return d
}

// fail ends the attempt: state failed and a retry after the backoff (or
// Retry-After when longer), or disabled for good with reg_retry_interval 0
// as in Kamailio.
func (u *UAC) fail(r *record, code int, reason string, after time.Duration) {
	now := u.now()
	r.lastCode, r.lastReason = code, reason
	r.flags &^= flagOngoing | flagAuthSent | flagOnline
	r.cseq = 0
	if r.unreg {
		then := r.then
		r.then, r.unreg = nil, false
		if then != nil {
			then()
		} else {
			r.timerExpires = now
			u.setState(r, StateDisabled)
		}
		return
	}
	r.failures++
	r.timerExpires = now
	if (code == 408 || code == 503) && len(r.dsts) > 1 {
		// No answer or unreachable: the next attempt tries the next SRV target.
		r.dstIdx = (r.dstIdx + 1) % len(r.dsts)
		u.env.Log.Info("uac: next attempt goes to the next SRV target", "l_uuid", r.LUUID, "target", r.dst().String())
	}
	u.setState(r, StateFailed)
	if u.regRetryIntv.Load() == 0 {
		r.flags |= flagDisabled
		u.unschedule(r)
		return
	}
	d := u.backoff(r.failures)
	if after > d {
		d = min(after, time.Duration(u.regRetryMax.Load())*time.Second)
	}
	u.schedule(r, now.Add(d))
}

// unregister sends Expires: 0 for r if it is (or may be) registered and
// runs then (under mu) when that ends; with nothing to unregister it runs
// then at once.
func (u *UAC) unregister(r *record, then func()) {
	u.unschedule(r)
	wasOnline := r.flags&flagOnline != 0 || r.flags&flagOngoing != 0
	if !wasOnline || r.invalid != "" || u.send == nil {
		r.flags &^= flagOngoing | flagAuthSent | flagOnline
		if then != nil {
			then()
		}
		return
	}
	r.then = then
	u.startAttempt(r, true)
}

// srvTargets resolves auth_proxy's host by SRV when it is a name without
// a port (RFC 3263 §4.2): every target, by priority and weight as
// net.LookupSRV orders them; A/AAAA is left to the transport. A failed
// lookup keeps the name.
func srvTargets(t core.Target, explicitPort bool) []core.Target {
	if explicitPort || net.ParseIP(strings.Trim(t.Host, "[]")) != nil {
		return []core.Target{t}
	}
	svc, proto := "sip", "udp"
	switch t.Proto {
	case "tcp", "ws":
		proto = "tcp"
	case "tls", "wss":
		svc, proto = "sips", "tcp"
	}
	_, srvs, err := net.LookupSRV(svc, proto, t.Host)
	if err != nil || len(srvs) == 0 {
		return []core.Target{t}
	}
	out := make([]core.Target, 0, len(srvs))
	for _, s := range srvs {
		x := t
		x.Host, x.Port = strings.TrimSuffix(s.Target, "."), int(s.Port)
		out = append(out, x)
	}
	return out
}

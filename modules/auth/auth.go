// Package auth is Kamailio's auth module: digest challenges (401/407),
// kamgo's own HMAC nonces with expiry and nonce-count replay protection,
// and verification against a password the script supplies (pv_*). The
// auth_db module verifies against the subscriber table through
// Of(env).Authenticate.
package auth

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

func init() { core.Register(New) }

// Auth is one auth module instance (one per Env).
type Auth struct {
	env *core.Env

	key            atomic.Pointer[[]byte]
	randKey        []byte                 // the key when no secret is set
	secret         atomic.Pointer[string] // the secret param, "" if unset
	expire         atomic.Int64           // seconds
	nonceCount     atomic.Bool
	oneTime        atomic.Bool
	alg            atomic.Pointer[string] // "" (MD5, not printed), "MD5", "SHA-256"
	forceStateless atomic.Bool
	useDomain      atomic.Bool

	tmu     sync.Mutex
	tracker *tracker
}

var instances core.PerEnv[*Auth]

// Of returns the auth instance bound to env (nil if none was built).
func Of(env *core.Env) *Auth { return instances.Of(env) }

const defaultTrackerSize = 65536

// New builds the auth module.
func New(env *core.Env) *core.Module {
	a := &Auth{env: env, randKey: randomKey()}
	instances.Set(env, a)
	return core.ApplyDefaults(a.module())
}

// Algorithm is the digest algorithm challenges offer: "MD5" or "SHA-256".
func (a *Auth) Algorithm() string {
	if s := *a.alg.Load(); s != "" {
		return s
	}
	return "MD5"
}

func (a *Auth) trk() *tracker {
	a.tmu.Lock()
	defer a.tmu.Unlock()
	return a.tracker
}

func (a *Auth) now() time.Time { return a.env.Clock.Now() }

// msgState is what auth remembers about one message.
type msgState struct {
	stale      bool       // credentials carried a stale nonce: challenge with stale=true
	authorized sip.Header // the header that authenticated (consume_credentials)
}

const extKey = "auth"

func state(m *core.Msg) *msgState {
	if s, ok := m.Ext[extKey].(*msgState); ok {
		return s
	}
	s := &msgState{}
	m.SetExt(extKey, s)
	return s
}

// RealmFor is Kamailio's default realm: the To host for REGISTER, else
// the From host; realm itself when not empty.
func RealmFor(m *core.Msg, realm string) string {
	if realm != "" || m.Req == nil {
		return realm
	}
	if m.Req.Method == sip.REGISTER {
		if t := m.Req.To(); t != nil {
			return t.Address.Host
		}
		return ""
	}
	if f := m.Req.From(); f != nil {
		return f.Address.Host
	}
	return ""
}

// noAuthMethod: ACK, CANCEL and PRACK cannot be challenged (Kamailio's pre_auth).
func noAuthMethod(m *core.Msg) bool {
	switch m.Req.Method {
	case sip.ACK, sip.CANCEL, sip.PRACK:
		return true
	}
	return false
}

// HA1Lookup returns the HA1 for the credentials (in c.Algorithm), or a
// negative Kamailio return code (ErrUserUnknown, ErrGeneric).
type HA1Lookup func(c *Cred, realm string) (ha1 string, rc int)

// Authenticate verifies the credentials for realm in the hf header
// against the HA1 lookup gives, with method in the digest (normally the
// request's). It returns Kamailio's code and the credentials it used.
func (a *Auth) Authenticate(m *core.Msg, realm string, hf HF, method string, lookup HA1Lookup) (int, *Cred) {
	if m.Req == nil {
		return ErrGeneric, nil
	}
	if noAuthMethod(m) {
		return OK, nil
	}
	realm = RealmFor(m, realm)
	c, rc, err := findCred(m, realm, hf)
	if err != nil {
		a.env.Log.Error("auth: cannot parse credentials", "header", hf.CredHeader(), "err", err, "at", m.Pos())
	}
	if rc != 0 {
		return rc, nil
	}
	log := func(why string) {
		a.env.Log.Debug("auth: bad credentials: "+why, "username", c.Username, "realm", realm, "at", m.Pos())
	}
	d := c.d
	switch {
	case d.Username == "" || d.Nonce == "" || d.URI == "" || d.Response == "":
		log("missing username, nonce, uri or response")
		return ErrGeneric, c
	case c.QOP != "" && c.QOP != "auth" && c.QOP != "auth-int":
		log("unknown qop")
		return ErrGeneric, c
	case c.QOP != "" && (d.Cnonce == "" || d.Nc <= 0):
		log("qop without cnonce or nc")
		return ErrGeneric, c
	case c.Algorithm != "MD5" && c.Algorithm != "SHA-256":
		log("unsupported algorithm")
		return ErrGeneric, c
	case d.Userhash:
		log("userhash is not supported")
		return ErrGeneric, c
	}
	n, ok := parseNonce(*a.key.Load(), d.Nonce)
	if !ok {
		log("invalid nonce (not issued with this secret)")
		return ErrGeneric, c
	}
	algCode := byte(algMD5)
	if c.Algorithm == "SHA-256" {
		algCode = algSHA256
	}
	switch {
	case n.alg != algCode:
		log("algorithm differs from the challenge's")
		return ErrGeneric, c
	case n.flags&(nfQopAuth|nfQopAuthInt) != 0 && c.QOP == "":
		log("the challenge offered qop but the response has none")
		return ErrGeneric, c
	}
	now := a.now().Unix()
	if n.ts > now+60 {
		log("nonce issued in the future")
		return ErrGeneric, c
	}
	expire := a.expire.Load()
	if n.ts+expire < now {
		state(m).stale = true
		return ErrStaleNonce, c
	}
	once := a.oneTime.Load()
	track := once || (a.nonceCount.Load() && c.QOP != "")
	nc := uint32(d.Nc)
	trk := a.trk()
	if track {
		if rc := staleCode(m, trk.check(n.id, n.ts, nc, once)); rc != OK {
			return rc, c
		}
	}
	ha1, rc := lookup(c, realm)
	if rc < 0 {
		return rc, c
	}
	if why := CheckHA1(c.Algorithm, ha1); why != "" {
		a.env.Log.Error("auth: unusable HA1 for "+c.Username+": "+why, "realm", realm, "at", m.Pos())
		return ErrGeneric, c
	}
	if len(d.Response) != HexLen(c.Algorithm) {
		log("response has the wrong length")
		return ErrGeneric, c
	}
	want, err := response(c, method, ha1, m.Req.Body())
	if err != nil {
		a.env.Log.Error("auth: computing the digest: "+err.Error(), "at", m.Pos())
		return ErrGeneric, c
	}
	if !equalHex(d.Response, want) {
		return ErrInvalidPassword, c
	}
	if track {
		if rc := staleCode(m, trk.use(n.id, n.ts, nc, once, now-expire)); rc != OK {
			return rc, c
		}
	}
	state(m).authorized = c.hdr
	return OK, c
}

// CheckIDs is Kamailio's AUTH_CHECK_ID_F: the auth user must be the To
// user (REGISTER, PUBLISH; From user == To user as well) or the From user;
// skipFwd (AUTH_CHECK_SKIPFWD_F) skips the auth-user check for INVITE,
// BYE, PRACK, UPDATE and MESSAGE.
func CheckIDs(m *core.Msg, c *Cred, useDomain, skipFwd bool) int {
	if c == nil {
		return OK
	}
	f, t := m.Req.From(), m.Req.To()
	if f == nil {
		return ErrGeneric
	}
	uri := &f.Address
	regpub := m.Req.Method == sip.REGISTER || m.Req.Method == sip.PUBLISH
	if regpub {
		if t == nil {
			return ErrGeneric
		}
		uri = &t.Address
	}
	skip := false
	if skipFwd {
		switch m.Req.Method {
		case sip.INVITE, sip.BYE, sip.PRACK, sip.UPDATE, sip.MESSAGE:
			skip = true
		}
	}
	if !skip && c.User != uri.User {
		return ErrUserMismatch
	}
	if regpub {
		if f.Address.User != t.Address.User || (useDomain && f.Address.Host != t.Address.Host) {
			return ErrUserMismatch
		}
		if m.Req.Method == sip.PUBLISH {
			r := &m.Req.Recipient
			if f.Address.User != r.User || (useDomain && f.Address.Host != r.Host) {
				return ErrUserMismatch
			}
		}
	}
	return OK
}

// Challenge flags (auth_challenge, www_challenge, proxy_challenge).
const (
	FlagQopAuth    = 1
	FlagQopAuthInt = 2
	FlagNo500      = 4
	FlagStale      = 16
)

// ChallengeValue builds a WWW-/Proxy-Authenticate value with a fresh nonce.
func (a *Auth) ChallengeValue(realm string, flags int, stale bool) (string, error) {
	if !quotedSafe(realm) {
		return "", fmt.Errorf("realm %q cannot be sent in a quoted string", realm)
	}
	if realm == "" {
		return "", errors.New("empty realm (and no From/To host to use)")
	}
	n := nonce{alg: algMD5, ts: a.now().Unix(), id: randomID()}
	if *a.alg.Load() == "SHA-256" {
		n.alg = algSHA256
	}
	qop := ""
	switch {
	case flags&FlagQopAuthInt != 0:
		qop, n.flags = "auth-int", nfQopAuthInt
	case flags&FlagQopAuth != 0:
		qop, n.flags = "auth", nfQopAuth
	}
	var b strings.Builder
	b.WriteString(`Digest realm="`)
	b.WriteString(realm)
	b.WriteString(`", nonce="`)
	b.WriteString(makeNonce(*a.key.Load(), n))
	b.WriteByte('"')
	if qop != "" {
		b.WriteString(`, qop="` + qop + `"`)
	}
	if stale {
		b.WriteString(", stale=true")
	}
	if alg := *a.alg.Load(); alg != "" {
		b.WriteString(", algorithm=" + alg)
	}
	return b.String(), nil
}

// reply answers statefully when a transaction is bound (unless
// force_stateless_reply), else statelessly.
func (a *Auth) reply(m *core.Msg, code int, reason string) error {
	if a.forceStateless.Load() {
		return m.SendReply(code, reason)
	}
	return m.Reply(code, reason)
}

// Challenge sends a 401 (WWW) or 407 (Proxy) with a fresh nonce: 1 sent,
// -2 the challenge could not be built (a 500 is sent unless FlagNo500),
// -3 the reply could not be sent, -4 neither could the 500.
func (a *Auth) Challenge(m *core.Msg, realm string, flags int, hf HF) int {
	if m.Req == nil {
		return ErrGeneric
	}
	if m.Req.Method == sip.ACK || m.Req.Method == sip.CANCEL {
		return OK
	}
	stale := flags&FlagStale != 0 || state(m).stale
	v, err := a.ChallengeValue(RealmFor(m, realm), flags, stale)
	if err != nil {
		a.env.Log.Error("auth: cannot build the challenge: "+err.Error(), "at", m.Pos())
		if flags&FlagNo500 == 0 {
			if err := a.reply(m, 500, "Internal Server Error"); err != nil {
				return -4
			}
		}
		return -2
	}
	m.ReplyHeaders = append(m.ReplyHeaders, sip.NewHeader(hf.ChallengeHeader(), v))
	code, reason := 401, "Unauthorized"
	if hf == Proxy {
		code, reason = 407, "Proxy Authentication Required"
	}
	if err := a.reply(m, code, reason); err != nil {
		a.env.Log.Error("auth: cannot send the challenge", "code", code, "err", err, "at", m.Pos())
		return -3
	}
	return OK
}

// Consume removes the credentials that authenticated this message.
func (a *Auth) Consume(m *core.Msg) int {
	if m.Req == nil {
		return ErrGeneric
	}
	st := state(m)
	if st.authorized == nil {
		a.env.Log.Error("auth: consume_credentials: no authorized credentials in this message (authenticate first)", "at", m.Pos())
		return ErrGeneric
	}
	removeHeader(m.Req, st.authorized)
	st.authorized = nil
	return OK
}

// removeHeader removes exactly h (sipgo removes by name, first first).
func removeHeader(r *sip.Request, h sip.Header) {
	name := h.Name()
	var keep []sip.Header
	for {
		first := r.GetHeader(name)
		if first == nil {
			break
		}
		r.RemoveHeader(name)
		if first == h {
			break
		}
		keep = append(keep, first)
	}
	for i := len(keep) - 1; i >= 0; i-- {
		r.PrependHeader(keep[i])
	}
}

// HasCredentials: 1 if Authorization or Proxy-Authorization has Digest
// credentials for realm.
func (a *Auth) HasCredentials(m *core.Msg, realm string) int {
	if m.Req == nil {
		return ErrGeneric
	}
	realm = RealmFor(m, realm)
	for _, hf := range []HF{WWW, Proxy} {
		if c, _, _ := findCred(m, realm, hf); c != nil {
			return OK
		}
	}
	return ErrGeneric
}

// pvAuthenticate is pv_www_authenticate/pv_proxy_authenticate: flags bit 1
// means password is already the HA1.
func (a *Auth) pvAuthenticate(m *core.Msg, realm, password string, flags int, hf HF, method string) (int, *Cred) {
	if password == "" {
		a.env.Log.Error("auth: empty password", "at", m.Pos())
		return ErrGeneric, nil
	}
	return a.Authenticate(m, realm, hf, method, func(c *Cred, realm string) (string, int) {
		if flags&1 != 0 {
			return password, 0
		}
		return HA1(c.Algorithm, c.Username, realm, password), 0
	})
}

func (a *Auth) module() *core.Module {
	s, i := core.ArgStr, core.ArgInt
	ret := func(rc int) (core.Val, error) { return core.Int(rc), nil }
	chal := func(name string, hf func(m *core.Msg) HF, doc string) core.Func {
		return core.Func{Name: name, Args: []core.ArgType{s, i}, Ret: core.RetInt, Routes: core.RouteRequest, Doc: doc,
			Fn: func(m *core.Msg, a2 []core.Val) (core.Val, error) {
				if m.Req == nil {
					return core.Null, core.ErrNoRequest
				}
				return ret(a.Challenge(m, a2[0].Str, int(a2[1].Int), hf(m)))
			}}
	}
	pvAuth := func(name string, hf HF, doc string, withMethod bool) core.Func {
		args := []core.ArgType{s, s, i}
		if withMethod {
			args = append(args, s)
		}
		return core.Func{Name: name, Args: args, Ret: core.RetInt, Routes: core.RouteRequest, Doc: doc,
			Fn: func(m *core.Msg, a2 []core.Val) (core.Val, error) {
				if m.Req == nil {
					return core.Null, core.ErrNoRequest
				}
				method := string(m.Req.Method)
				if withMethod {
					method = a2[3].Str
				}
				rc, _ := a.pvAuthenticate(m, a2[0].Str, a2[1].Str, int(a2[2].Int), hf, method)
				return ret(rc)
			}}
	}
	intParam := func(name string, def int, doc string, set func(int64), get func() int64) core.Param {
		return core.Param{Name: name, Type: i, Default: core.Int(def), Doc: doc,
			Check: func(v core.Val) error {
				if n, ok := v.AsInt(); !ok || n < 0 {
					return fmt.Errorf("%s must be a non-negative integer", name)
				}
				return nil
			},
			Set: func(v core.Val) error { n, _ := v.AsInt(); set(n); return nil },
			Get: func() core.Val { return core.Int(int(get())) }}
	}
	flag := func(b *atomic.Bool) func() int64 { return func() int64 { return core.Int01(b.Load()).Int } }
	return &core.Module{
		Name: "auth",
		Doc:  "digest authentication: challenges, nonces, verification against a given password",
		PVs:  credPVs,
		Params: []core.Param{
			{Name: "secret", Type: s, Default: core.Str(""),
				Doc: "secret the nonces are signed with (HMAC-SHA-256); nodes sharing it accept each other's nonces. Default: random per process",
				Set: func(v core.Val) error {
					secret := v.String()
					a.secret.Store(&secret)
					if secret == "" {
						a.key.Store(&a.randKey)
						return nil
					}
					k := sha256.Sum256([]byte(secret))
					b := k[:]
					a.key.Store(&b)
					return nil
				},
				Get: func() core.Val { return core.Str(*a.secret.Load()) }},
			intParam("nonce_expire", 300, "seconds a nonce is valid; an older one gets -4 and the next challenge says stale=true", func(n int64) {
				if n == 0 {
					n = 300
				}
				a.expire.Store(n)
			}, a.expire.Load),
			intParam("nonce_count", 1, "1: a response with qop must carry a higher nc than the last accepted one for that nonce (-6 otherwise); kamgo's default is 1 (Kamailio's 0)", func(n int64) { a.nonceCount.Store(n != 0) }, flag(&a.nonceCount)),
			intParam("one_time_nonce", 0, "1: a nonce is accepted once only (-6 afterwards)", func(n int64) { a.oneTime.Store(n != 0) }, flag(&a.oneTime)),
			intParam("nc_array_size", defaultTrackerSize, "how many nonces the replay tracker remembers (bounded memory); older untracked nonces are stale", func(n int64) {
				if n <= 0 {
					n = defaultTrackerSize
				}
				a.tmu.Lock()
				if old := a.tracker; old == nil {
					a.tracker = newTracker(int(n), 0)
				} else if int64(old.size) != n {
					// Nonces the old tracker remembered are forgotten: stale.
					low := old.low
					if old.len() > 0 {
						low = a.now().Unix()
					}
					a.tracker = newTracker(int(n), low)
				}
				a.tmu.Unlock()
			}, func() int64 { return int64(a.trk().size) }),
			{Name: "algorithm", Type: s, Default: core.Str(""),
				Doc: `digest algorithm of challenges: "" (MD5, not printed), "MD5" or "SHA-256"`,
				Check: func(v core.Val) error {
					switch v.String() {
					case "", "MD5", "SHA-256":
						return nil
					}
					return fmt.Errorf(`algorithm %q: want "", "MD5" or "SHA-256"`, v.String())
				},
				Set: func(v core.Val) error { x := v.String(); a.alg.Store(&x); return nil },
				Get: func() core.Val { return core.Str(*a.alg.Load()) }},
			intParam("force_stateless_reply", 0, "1: challenges are always sent statelessly", func(n int64) { a.forceStateless.Store(n != 0) }, flag(&a.forceStateless)),
			intParam("use_domain", 0, "1: pv_auth_check's ID checks compare domains too", func(n int64) { a.useDomain.Store(n != 0) }, flag(&a.useDomain)),
		},
		Funcs: []core.Func{
			chal("auth_challenge", HFFor, "(realm, flags) 401 for REGISTER, else 407; flags 1 qop=auth, 2 qop=auth-int, 4 no 500 on failure, 16 stale=true (also automatic after a stale nonce); realm \"\" is the To (REGISTER) or From host; 1 sent, -2 challenge not built, -3 not sent"),
			chal("www_challenge", func(*core.Msg) HF { return WWW }, "(realm, flags) send a 401 with WWW-Authenticate; flags as auth_challenge"),
			chal("proxy_challenge", func(*core.Msg) HF { return Proxy }, "(realm, flags) send a 407 with Proxy-Authenticate; flags as auth_challenge"),
			{Name: "consume_credentials", Ret: core.RetInt, Routes: core.RouteRequest,
				Doc: "remove the Authorization/Proxy-Authorization header that authenticated this request; -1 if none did",
				Fn: func(m *core.Msg, _ []core.Val) (core.Val, error) {
					if m.Req == nil {
						return core.Null, core.ErrNoRequest
					}
					return ret(a.Consume(m))
				}},
			{Name: "has_credentials", Args: []core.ArgType{s}, Ret: core.RetInt,
				Doc: "(realm) 1 if Authorization or Proxy-Authorization has Digest credentials for realm, else -1",
				Fn:  func(m *core.Msg, a2 []core.Val) (core.Val, error) { return ret(a.HasCredentials(m, a2[0].Str)) }},
			pvAuth("pv_www_authenticate", WWW, "(realm, password, flags) verify Authorization against password (flags 1: password is the HA1); 1 ok, -1 error, -2 bad password, -4 stale nonce, -5 no credentials, -6 nonce reused", false),
			pvAuth("pv_www_authenticate_method", WWW, "(realm, password, flags, method) pv_www_authenticate with another method in the digest", true),
			pvAuth("pv_proxy_authenticate", Proxy, "(realm, password, flags) verify Proxy-Authorization against password; codes as pv_www_authenticate", false),
			{Name: "pv_auth_check", Args: []core.ArgType{s, s, i, i}, Ret: core.RetInt, Routes: core.RouteRequest,
				Doc: "(realm, password, flags, checks) pv_www_authenticate for REGISTER, pv_proxy_authenticate otherwise; checks 1: auth user must match To (REGISTER/PUBLISH) or From user (-8)",
				Fn: func(m *core.Msg, a2 []core.Val) (core.Val, error) {
					if m.Req == nil {
						return core.Null, core.ErrNoRequest
					}
					if m.Req.Method == sip.ACK || m.Req.Method == sip.CANCEL {
						return ret(OK)
					}
					rc, c := a.pvAuthenticate(m, a2[0].Str, a2[1].Str, int(a2[2].Int), HFFor(m), string(m.Req.Method))
					if rc == OK && a2[3].Int&1 != 0 {
						rc = CheckIDs(m, c, a.useDomain.Load(), false)
					}
					return ret(rc)
				}},
		},
		Stop: func() { instances.Drop(a.env, a) },
	}
}

// staleCode turns the nonce tracker's verdict into the result code; a
// reused or forgotten nonce marks the challenge that follows stale=true.
func staleCode(m *core.Msg, r trackResult) int {
	switch r {
	case trackReused:
		state(m).stale = true
		return ErrNonceReused
	case trackEvicted:
		state(m).stale = true
		return ErrStaleNonce
	}
	return OK
}

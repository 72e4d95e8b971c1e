package tests

// A SIP registrar for the uac tests, built on sipgo: kamd's outbound
// registrations (modules/uac) talk to it on 127.0.0.1 and the tests
// configure per user how it answers (challenge algorithms, stale nonces,
// 423, 403, silence, the granted expiry) and read back every REGISTER it
// received. It computes and checks digest responses itself (RFC 2617,
// 7616, 8760) rather than reusing kamd's client code, so a bug in the
// client cannot hide in a shared implementation.

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// regUser is how the test registrar answers REGISTERs for one To user.
// The zero value accepts without authentication and grants what was asked.
type regUser struct {
	AuthUser   string   // the digest username expected (default: the To user)
	Password   string   // "" together with no Algorithms: no authentication
	Realm      string   // challenge realm (default "uac.test")
	Algorithms []string // one challenge header per entry: "MD5", "SHA-256", "SHA-512-256"; nil with a Password: MD5
	NoQOP      bool     // challenge without qop (RFC 2069 style response)
	Proxy      bool     // 407 with Proxy-Authenticate instead of 401
	StaleOnce  bool     // the first correct credentials get a new nonce with stale=true
	Reply      int      // once authenticated: answer this code (403, 404, 503, 603...) instead of 200
	MinExpires int      // a non-zero Expires below this gets 423 with Min-Expires
	NoAnswer   bool     // never answer (the client's timer F fires)
	Grant      int      // the expiry granted in the 200 (0: as requested)
	GrantIn    string   // where the 200 says it: "contact" (;expires, default), "header" (Expires), "both"
}

func (u regUser) authOn() bool { return u.Password != "" || len(u.Algorithms) > 0 }

func (u regUser) algorithms() []string {
	if len(u.Algorithms) == 0 {
		return []string{"MD5"}
	}
	return u.Algorithms
}

func (u regUser) realm() string {
	if u.Realm == "" {
		return "uac.test"
	}
	return u.Realm
}

// regRecord is one REGISTER as the test registrar received it (UDP
// retransmissions are absorbed by sipgo's server transaction and not
// recorded).
type regRecord struct {
	At             time.Time
	User           string // To user
	Transport      string // "UDP", "TCP"
	Source         string // ip:port it came from
	RequestURI     string
	CallID         string
	CSeq           uint32
	FromTag        string
	Expires        int    // the Expires header, -1 if absent
	Contact        string // the first Contact header value, "" if none
	ContactExpires int    // its ;expires param, -1 if absent
	Authorization  string // Authorization or Proxy-Authorization, "" if none
	Auth           string // the verdict on it: "", "ok", "stale", or why it failed
	Code           int    // the final reply sent, 0 if none
}

// testRegistrar is a registrar on 127.0.0.1:Port (UDP and TCP).
type testRegistrar struct {
	Port int

	ua     *sipgo.UserAgent
	ctx    context.Context
	cancel context.CancelFunc
	conns  []io.Closer

	mu       sync.Mutex
	users    map[string]regUser
	def      *regUser // for users not configured; nil: 404
	records  []regRecord
	nonces   map[string]*regNonce
	staleHit map[string]bool                 // users whose StaleOnce was used
	bindings map[string]map[string]time.Time // user -> contact URI -> expiry
	changed  chan struct{}                   // closed and replaced on every record
}

type regNonce struct {
	user   string
	algs   []string
	lastNC uint64
}

// newTestRegistrar starts a registrar; def answers users that SetUser
// has not configured (nil: 404). It stops at the test's cleanup.
func newTestRegistrar(t testing.TB, def *regUser) *testRegistrar {
	t.Helper()
	r := &testRegistrar{
		users: map[string]regUser{}, def: def, nonces: map[string]*regNonce{},
		staleHit: map[string]bool{}, bindings: map[string]map[string]time.Time{},
		changed: make(chan struct{}),
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("uacreg-test-registrar"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	srv.OnRegister(r.handle)
	// Anything else is a test bug; answer it rather than let it time out.
	srv.OnNoRoute(func(req *sip.Request, tx sip.ServerTransaction) {
		if !req.IsAck() {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 405, "Method Not Allowed", nil))
		}
	})
	var pc net.PacketConn
	var ln net.Listener
	for i := 0; ; i++ {
		port := freePort(t)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if pc, err = net.ListenPacket("udp", addr); err == nil {
			if ln, err = net.Listen("tcp", addr); err == nil {
				r.Port = port
				break
			}
			pc.Close()
		}
		if i == 5 {
			t.Fatalf("test registrar: %v", err)
		}
	}
	r.ua = ua
	r.conns = []io.Closer{pc, ln}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	go func() { _ = srv.ServeUDP(pc) }()
	go func() { _ = srv.ServeTCP(ln) }()
	t.Cleanup(r.Close)
	return r
}

// Close stops the registrar; handlers blocked by NoAnswer return.
func (r *testRegistrar) Close() {
	r.cancel()
	for _, c := range r.conns {
		c.Close()
	}
	_ = r.ua.Close()
}

// Addr is "127.0.0.1:port".
func (r *testRegistrar) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.Port)) }

// SetUser configures (or reconfigures, mid-test) how user is answered.
func (r *testRegistrar) SetUser(user string, u regUser) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.users[user] = u
	delete(r.staleHit, user)
}

// Records returns what was received for user ("" = every user), in order.
func (r *testRegistrar) Records(user string) []regRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []regRecord
	for _, rec := range r.records {
		if user == "" || rec.User == user {
			out = append(out, rec)
		}
	}
	return out
}

// Count is len(Records(user)) without the copy.
func (r *testRegistrar) Count(user string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if user == "" {
		return len(r.records)
	}
	n := 0
	for _, rec := range r.records {
		if rec.User == user {
			n++
		}
	}
	return n
}

// WaitRecords waits until at least n REGISTERs for user were answered (or
// recorded, for NoAnswer users) and returns them all.
func (r *testRegistrar) WaitRecords(t testing.TB, user string, n int, d time.Duration) []regRecord {
	t.Helper()
	deadline := time.After(d)
	for {
		r.mu.Lock()
		ch := r.changed
		r.mu.Unlock()
		if recs := r.Records(user); len(recs) >= n {
			return recs
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("test registrar: %d REGISTERs for %q after %v, want %d: %s", r.Count(user), user, d, n, fmtRecords(r.Records(user)))
			return nil
		}
	}
}

// Bindings are the contacts user has registered now (contact URI -> expiry).
func (r *testRegistrar) Bindings(user string) map[string]time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]time.Time{}
	now := time.Now()
	for c, exp := range r.bindings[user] {
		if exp.After(now) {
			out[c] = exp
		}
	}
	return out
}

func fmtRecords(recs []regRecord) string {
	var b strings.Builder
	for _, rec := range recs {
		fmt.Fprintf(&b, "\n  %s %s %s cseq=%d callid=%s expires=%d contact=%q auth=%q -> %d",
			rec.At.Format("15:04:05.000"), rec.Transport, rec.User, rec.CSeq, rec.CallID, rec.Expires, rec.Contact, rec.Auth, rec.Code)
	}
	return b.String()
}

func (r *testRegistrar) add(rec regRecord) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec)
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *testRegistrar) handle(req *sip.Request, tx sip.ServerTransaction) {
	rec := regRecord{
		At: time.Now(), Transport: req.Transport(), Source: req.Source(),
		RequestURI: req.Recipient.String(), Expires: -1, ContactExpires: -1,
	}
	if h := req.To(); h != nil {
		rec.User = h.Address.User
	}
	if h := req.From(); h != nil {
		rec.FromTag, _ = h.Params.Get("tag")
	}
	if h := req.CallID(); h != nil {
		rec.CallID = h.Value()
	}
	if h := req.CSeq(); h != nil {
		rec.CSeq = h.SeqNo
	}
	if h := req.GetHeader("Expires"); h != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil {
			rec.Expires = n
		}
	}
	contacts := req.GetHeaders("Contact")
	if len(contacts) > 0 {
		rec.Contact = contacts[0].Value()
		if c, ok := contacts[0].(*sip.ContactHeader); ok {
			if v, ok := c.Params.Get("expires"); ok {
				if n, err := strconv.Atoi(v); err == nil {
					rec.ContactExpires = n
				}
			}
		}
	}

	r.mu.Lock()
	u, ok := r.users[rec.User]
	if !ok && r.def != nil {
		u, ok = *r.def, true
	}
	r.mu.Unlock()

	hf := "Authorization"
	if u.Proxy {
		hf = "Proxy-Authorization"
	}
	if h := req.GetHeader(hf); h != nil {
		rec.Authorization = h.Value()
	}

	respond := func(res *sip.Response) {
		rec.Code = res.StatusCode
		r.add(rec)
		_ = tx.Respond(res)
	}
	switch {
	case !ok:
		respond(sip.NewResponseFromRequest(req, 404, "Not Found", nil))
		return
	case u.NoAnswer:
		r.add(rec)
		// Hold the transaction so that retransmissions are absorbed.
		select {
		case <-r.ctx.Done():
		case <-tx.Done():
		case <-time.After(2 * time.Minute):
		}
		return
	}

	if u.authOn() {
		rec.Auth = r.checkAuth(req, rec, u)
		if rec.Auth != "ok" {
			respond(r.challenge(req, rec.User, u, rec.Auth == "stale"))
			return
		}
	}
	if u.Reply != 0 {
		respond(sip.NewResponseFromRequest(req, u.Reply, reasonFor(u.Reply), nil))
		return
	}
	want := rec.ContactExpires
	if want < 0 {
		want = rec.Expires
	}
	if want < 0 {
		want = 3600
	}
	if u.MinExpires > 0 && want > 0 && want < u.MinExpires {
		res := sip.NewResponseFromRequest(req, 423, "Interval Too Brief", nil)
		res.AppendHeader(sip.NewHeader("Min-Expires", strconv.Itoa(u.MinExpires)))
		respond(res)
		return
	}
	grant := want
	if u.Grant > 0 && want > 0 {
		grant = u.Grant
	}
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	r.mu.Lock()
	b := r.bindings[rec.User]
	if b == nil {
		b = map[string]time.Time{}
		r.bindings[rec.User] = b
	}
	for _, h := range contacts {
		c, ok := h.(*sip.ContactHeader)
		if !ok {
			continue
		}
		if c.Address.Wildcard || strings.TrimSpace(h.Value()) == "*" {
			clear(b)
			continue
		}
		key := c.Address.String()
		if grant == 0 {
			delete(b, key)
		} else {
			b[key] = time.Now().Add(time.Duration(grant) * time.Second)
		}
	}
	// Like a real registrar: every current binding of the AOR, each with
	// its remaining time.
	now := time.Now()
	for c, exp := range b {
		left := int(exp.Sub(now).Round(time.Second) / time.Second)
		if left <= 0 {
			delete(b, c)
			continue
		}
		if u.GrantIn == "header" {
			res.AppendHeader(sip.NewHeader("Contact", "<"+c+">"))
		} else {
			res.AppendHeader(sip.NewHeader("Contact", "<"+c+">;expires="+strconv.Itoa(left)))
		}
	}
	r.mu.Unlock()
	if u.GrantIn == "header" || u.GrantIn == "both" {
		res.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(grant)))
	}
	respond(res)
}

func reasonFor(code int) string {
	switch code {
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 480:
		return "Temporarily Unavailable"
	case 500:
		return "Server Internal Error"
	case 503:
		return "Service Unavailable"
	case 603:
		return "Decline"
	}
	return "Test Reply"
}

// challenge builds a 401/407 with a fresh nonce, one header per algorithm.
func (r *testRegistrar) challenge(req *sip.Request, user string, u regUser, stale bool) *sip.Response {
	code, reason, hf := 401, "Unauthorized", "WWW-Authenticate"
	if u.Proxy {
		code, reason, hf = 407, "Proxy Authentication Required", "Proxy-Authenticate"
	}
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	nonce := hex.EncodeToString(raw[:])
	r.mu.Lock()
	r.nonces[nonce] = &regNonce{user: user, algs: u.algorithms()}
	r.mu.Unlock()
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, alg := range u.algorithms() {
		v := fmt.Sprintf(`Digest realm="%s", nonce="%s", opaque="op-%s", algorithm=%s`, u.realm(), nonce, user, alg)
		if !u.NoQOP {
			v += `, qop="auth"`
		}
		if stale {
			v += ", stale=true"
		}
		res.AppendHeader(sip.NewHeader(hf, v))
	}
	return res
}

// checkAuth verifies the request's credentials against u: "ok", "stale"
// (correct, but StaleOnce asks for a new nonce), or why they fail.
func (r *testRegistrar) checkAuth(req *sip.Request, rec regRecord, u regUser) string {
	if rec.Authorization == "" {
		return "no credentials"
	}
	p, err := parseDigestParams(rec.Authorization)
	if err != nil {
		return err.Error()
	}
	authUser := u.AuthUser
	if authUser == "" {
		authUser = rec.User
	}
	alg := p["algorithm"]
	if alg == "" {
		alg = "MD5"
	}
	switch {
	case p["username"] != authUser:
		return fmt.Sprintf("username %q, want %q", p["username"], authUser)
	case p["realm"] != u.realm():
		return fmt.Sprintf("realm %q, want %q", p["realm"], u.realm())
	case p["opaque"] != "op-"+rec.User:
		return fmt.Sprintf("opaque %q not echoed", p["opaque"])
	}
	var uri sip.Uri
	if err := sip.ParseUri(p["uri"], &uri); err != nil {
		return fmt.Sprintf("digest uri %q: %v", p["uri"], err)
	} else if uri.Host != req.Recipient.Host || uri.Port != req.Recipient.Port || uri.User != req.Recipient.User {
		return fmt.Sprintf("digest uri %q is not the Request-URI %s", p["uri"], req.Recipient.String())
	}
	r.mu.Lock()
	n := r.nonces[p["nonce"]]
	r.mu.Unlock()
	if n == nil || n.user != rec.User {
		return "unknown nonce"
	}
	offered := false
	for _, a := range n.algs {
		offered = offered || strings.EqualFold(a, alg)
	}
	if !offered {
		return fmt.Sprintf("algorithm %s was not offered", alg)
	}
	want, err := digestResponse(alg, authUser, u.realm(), u.Password, string(req.Method), p)
	if err != nil {
		return err.Error()
	}
	if !strings.EqualFold(p["response"], want) {
		return "wrong response"
	}
	if !u.NoQOP {
		if p["qop"] != "auth" || p["cnonce"] == "" {
			return fmt.Sprintf("qop %q cnonce %q, want qop=auth with a cnonce", p["qop"], p["cnonce"])
		}
		nc, err := strconv.ParseUint(p["nc"], 16, 32)
		if err != nil || len(p["nc"]) != 8 {
			return fmt.Sprintf("nc %q is not 8 hex digits", p["nc"])
		}
		r.mu.Lock()
		last := n.lastNC
		if nc > last {
			n.lastNC = nc
		}
		r.mu.Unlock()
		if nc <= last {
			return fmt.Sprintf("nc %08x replayed (last %08x)", nc, last)
		}
	}
	if u.StaleOnce {
		r.mu.Lock()
		hit := r.staleHit[rec.User]
		r.staleHit[rec.User] = true
		if !hit {
			delete(r.nonces, p["nonce"]) // that nonce is over
		}
		r.mu.Unlock()
		if !hit {
			return "stale"
		}
	}
	return "ok"
}

// digestHash returns the hash function for a digest algorithm name.
func digestHash(alg string) (func() hash.Hash, error) {
	switch strings.ToUpper(alg) {
	case "MD5":
		return md5.New, nil
	case "SHA-256":
		return sha256.New, nil
	case "SHA-512-256":
		return sha512.New512_256, nil
	}
	return nil, fmt.Errorf("unsupported algorithm %q", alg)
}

// digestResponse computes the response RFC 7616 §3.4.1 expects for the
// credentials' parameters p.
func digestResponse(alg, user, realm, password, method string, p map[string]string) (string, error) {
	newH, err := digestHash(alg)
	if err != nil {
		return "", err
	}
	h := func(s string) string {
		x := newH()
		io.WriteString(x, s)
		return hex.EncodeToString(x.Sum(nil))
	}
	ha1 := h(user + ":" + realm + ":" + password)
	ha2 := h(method + ":" + p["uri"])
	if p["qop"] == "" {
		return h(ha1 + ":" + p["nonce"] + ":" + ha2), nil
	}
	return h(ha1 + ":" + p["nonce"] + ":" + p["nc"] + ":" + p["cnonce"] + ":" + p["qop"] + ":" + ha2), nil
}

// parseDigestParams parses `Digest k=v, k="v", ...` into a map with
// lower-cased keys and unquoted values.
func parseDigestParams(v string) (map[string]string, error) {
	v = strings.TrimSpace(v)
	scheme, rest, _ := strings.Cut(v, " ")
	if !strings.EqualFold(scheme, "Digest") {
		return nil, fmt.Errorf("scheme %q is not Digest", scheme)
	}
	out := map[string]string{}
	s := rest
	for {
		s = strings.TrimLeft(s, " \t,")
		if s == "" {
			return out, nil
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("bad digest parameter at %q", s)
		}
		key := strings.ToLower(strings.TrimSpace(s[:eq]))
		s = strings.TrimLeft(s[eq+1:], " \t")
		var val string
		if strings.HasPrefix(s, `"`) {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				return nil, fmt.Errorf("unterminated quote in %q", key)
			}
			val, s = s[1:1+end], s[2+end:]
		} else {
			end := strings.IndexAny(s, ", \t")
			if end < 0 {
				end = len(s)
			}
			val, s = s[:end], s[end:]
		}
		if _, dup := out[key]; dup {
			return nil, fmt.Errorf("parameter %q twice", key)
		}
		out[key] = val
	}
}

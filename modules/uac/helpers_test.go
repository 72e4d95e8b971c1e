package uac

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

// fakeClock is a core.Clock whose time moves only by Advance; due timers
// run in time order, outside the clock's lock.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	at      time.Time
	f       func()
	stopped bool
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) core.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

// pending counts the armed timers.
func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.stopped {
			n++
		}
	}
	return n
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		sort.SliceStable(c.timers, func(i, j int) bool { return c.timers[i].at.Before(c.timers[j].at) })
		var next *fakeTimer
		for i, t := range c.timers {
			if t.stopped {
				continue
			}
			if t.at.After(end) {
				break
			}
			next = t
			c.timers = append(c.timers[:i:i], c.timers[i+1:]...)
			break
		}
		if next == nil {
			c.now = end
			c.mu.Unlock()
			return
		}
		if next.at.After(c.now) {
			c.now = next.at
		}
		next.stopped = true
		c.mu.Unlock()
		next.f()
	}
}

// sent is one REGISTER handed to the fake tm.
type sent struct {
	req   *sip.Request
	dst   core.Target
	sock  string
	reply func(*sip.Response)
}

type harness struct {
	t     *testing.T
	clock *fakeClock
	env   *core.Env
	mod   *core.Module
	u     *UAC
	mu    sync.Mutex
	sent  []*sent
	evs   []map[string]any
}

var t0 = time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)

// newHarness builds uac on a fresh SQLite file holding rows, with a fake
// tm and a fixed clock; params are "name=value" (ints parsed).
func newHarness(t *testing.T, rows []Row, params ...string) *harness {
	t.Helper()
	h := &harness{t: t, clock: &fakeClock{now: t0}}
	env := core.NewEnv(nil)
	env.Clock = h.clock
	env.Publish = func(topic string, data any) {
		h.mu.Lock()
		defer h.mu.Unlock()
		if topic == "uac" {
			h.evs = append(h.evs, data.(map[string]any))
		}
	}
	db, err := core.OpenDB(filepath.Join(t.TempDir(), "kamgo.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	env.DB = db
	h.env = env
	h.mod = New(env)
	env.SetModule(h.mod)
	h.u = Of(env)
	h.u.resolve = func(t core.Target, _ bool) []core.Target { return []core.Target{t} }
	h.u.send = func(req *sip.Request, dst core.Target, sock string, onReply func(*sip.Response)) error {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.sent = append(h.sent, &sent{req: req, dst: dst, sock: sock, reply: onReply})
		return nil
	}
	h.set("reg_contact_addr=127.0.0.1:5060")
	for _, p := range params {
		h.set(p)
	}
	if err := core.EnsureTable(db, h.u.schema("uacreg")); err != nil {
		t.Fatal(err)
	}
	for i := range rows {
		if err := insertRow(db, "uacreg", &rows[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.mod.Init(); err != nil {
		t.Fatal(err)
	}
	if err := h.mod.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.mod.Stop)
	return h
}

func (h *harness) set(p string) {
	h.t.Helper()
	name, val, _ := strings.Cut(p, "=")
	for _, mp := range h.mod.Params {
		if mp.Name != name {
			continue
		}
		v := core.Str(val)
		if mp.Type == core.ArgInt {
			var n int
			fmt.Sscan(val, &n)
			v = core.Int(n)
		}
		if err := mp.Set(v); err != nil {
			h.t.Fatal(err)
		}
		return
	}
	h.t.Fatalf("no param %s", name)
}

// take returns the REGISTERs sent since the last take.
func (h *harness) take() []*sent {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.sent
	h.sent = nil
	return s
}

// one expects exactly one REGISTER sent since the last take.
func (h *harness) one() *sent {
	h.t.Helper()
	s := h.take()
	if len(s) != 1 {
		h.t.Fatalf("%d REGISTERs sent, want 1", len(s))
	}
	return s[0]
}

func (h *harness) none() {
	h.t.Helper()
	if s := h.take(); len(s) != 0 {
		h.t.Fatalf("%d REGISTERs sent, want none:\n%s", len(s), s[0].req)
	}
}

// reply answers s with code and extra header lines ("Name: value").
func (h *harness) reply(s *sent, code int, reason string, hdrs ...string) {
	h.t.Helper()
	res := core.BuildReply(s.req, code, reason, nil)
	text := res.String()
	if len(hdrs) > 0 {
		i := strings.Index(text, "\r\n\r\n")
		text = text[:i] + "\r\n" + strings.Join(hdrs, "\r\n") + text[i:]
	}
	msg, err := sip.NewParser().ParseSIP([]byte(text))
	if err != nil {
		h.t.Fatalf("reply: %v\n%s", err, text)
	}
	s.reply(msg.(*sip.Response))
}

func (h *harness) info(uuid string) Rec {
	h.t.Helper()
	for _, r := range h.u.Dump(true) {
		if r.LUUID == uuid {
			return r
		}
	}
	h.t.Fatalf("no record %s", uuid)
	return Rec{}
}

func (h *harness) states(uuid string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, e := range h.evs {
		if e["l_uuid"] == uuid {
			out = append(out, e["state"].(string))
		}
	}
	return out
}

func row(uuid string) Row {
	return Row{LUUID: uuid, LUsername: "alice", LDomain: "local.test", RUsername: uuid + "_r", RDomain: "127.0.0.1:25070",
		AuthUsername: uuid + "_a", AuthPassword: "secret", AuthProxy: "sip:127.0.0.1:25070", Expires: 120}
}

var authParamRe = regexp.MustCompile(`([a-z]+)=("([^"]*)"|[^,\s]+)`)

func authParams(v string) map[string]string {
	out := map[string]string{}
	for _, m := range authParamRe.FindAllStringSubmatch(v, -1) {
		val := m[2]
		if m[3] != "" || strings.HasPrefix(val, `"`) {
			val = m[3]
		}
		out[m[1]] = val
	}
	return out
}

// checkDigest verifies an Authorization value as a registrar would.
func checkDigest(t *testing.T, v, password, ha1 string) map[string]string {
	t.Helper()
	p := authParams(v)
	var nh func() hash.Hash
	switch p["algorithm"] {
	case "", "MD5":
		nh = md5.New
	case "SHA-256":
		nh = sha256.New
	case "SHA-512-256":
		nh = sha512.New512_256
	default:
		t.Fatalf("algorithm %q", p["algorithm"])
	}
	H := func(s string) string { x := nh(); x.Write([]byte(s)); return hex.EncodeToString(x.Sum(nil)) }
	if ha1 == "" {
		ha1 = H(p["username"] + ":" + p["realm"] + ":" + password)
	}
	ha2 := H("REGISTER:" + p["uri"])
	want := H(ha1 + ":" + p["nonce"] + ":" + p["nc"] + ":" + p["cnonce"] + ":" + p["qop"] + ":" + ha2)
	if p["response"] != want {
		t.Fatalf("digest response %s, want %s (%s)", p["response"], want, v)
	}
	return p
}

func hdr(m sip.Message, name string) string {
	if h := core.FirstHeader(m, name); h != nil {
		return h.Value()
	}
	return ""
}

func md5hex(s string) string {
	x := md5.Sum([]byte(s))
	return hex.EncodeToString(x[:])
}

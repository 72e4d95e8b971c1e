package ims_ipsec_pcscf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

type fclock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*ftimer
}

type ftimer struct {
	at      time.Time
	f       func()
	stopped bool
	c       *fclock
}

func (t *ftimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

func (c *fclock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fclock) AfterFunc(d time.Duration, f func()) core.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &ftimer{at: c.now.Add(d), f: f, c: c}
	c.timers = append(c.timers, t)
	return t
}

// Advance moves time and runs due timers outside the lock.
func (c *fclock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*ftimer
	for _, t := range c.timers {
		if !t.stopped && !t.at.After(c.now) {
			t.stopped = true
			due = append(due, t)
		}
	}
	c.mu.Unlock()
	for _, t := range due {
		t.f()
	}
}

type event struct {
	topic string
	data  map[string]any
}

type rig struct {
	m      *mod
	t      *core.Module
	k      *FakeKernel
	clock  *fclock
	env    *core.Env
	mu     sync.Mutex
	events []event
}

func newRig(t *testing.T, params map[string]core.Val) *rig {
	t.Helper()
	env := core.NewEnv(nil)
	env.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	r := &rig{k: NewFakeKernel(), clock: &fclock{now: time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)}, env: env}
	env.Clock = r.clock
	env.Publish = func(topic string, data any) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.events = append(r.events, event{topic, data.(map[string]any)})
	}
	env.SocketManager = fakeSockets{env}
	r.m, r.t = newModule(env, r.k)
	env.SetModule(r.t)
	if _, ok := params["ipsec_listen_addr"]; !ok {
		params["ipsec_listen_addr"] = core.Str("10.99.0.1")
	}
	for name, v := range params {
		setParam(t, r.t, name, v)
	}
	if err := r.t.Init(); err != nil {
		t.Fatal(err)
	}
	return r
}

func setParam(t *testing.T, mod *core.Module, name string, v core.Val) {
	t.Helper()
	for _, p := range mod.Params {
		if p.Name == name {
			if p.Check != nil {
				if err := p.Check(v); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.Set(v); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no param %s", name)
}

func parse(t *testing.T, text string) sip.Message {
	t.Helper()
	msg, err := sip.NewParser().ParseSIP([]byte(strings.ReplaceAll(strings.TrimSpace(text), "\n", "\r\n") + "\r\nContent-Length: 0\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func (r *rig) call(t *testing.T, msg *core.Msg, name string, args ...core.Val) int64 {
	t.Helper()
	for _, f := range r.t.Funcs {
		if f.Name == name {
			v, err := f.Fn(msg, args)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return v.Int
		}
	}
	t.Fatalf("no func %s", name)
	return 0
}

func (r *rig) rpc(t *testing.T, name string, args ...any) (any, error) {
	t.Helper()
	for _, m := range r.t.RPC {
		if m.Name == name {
			return m.Handler(context.Background(), rpcArgs(args))
		}
	}
	t.Fatalf("no rpc %s", name)
	return nil, nil
}

type rpcArgs []any

func (a rpcArgs) Len() int                     { return len(a) }
func (a rpcArgs) String(i int) (string, error) { return fmt.Sprint(a[i]), nil }
func (a rpcArgs) Int(i int) (int, error)       { return a[i].(int), nil }

const secClient = "ipsec-3gpp;prot=esp;mod=trans;spi-c=11111;spi-s=22222;port-c=31000;port-s=31001;alg=hmac-sha-1-96;ealg=null, ipsec-3gpp;prot=esp;mod=trans;spi-c=11111;spi-s=22222;port-c=31000;port-s=31001;alg=hmac-sha-1-96;ealg=aes-cbc"

// register feeds a REGISTER from ue through the module's request hook.
func (r *rig) register(t *testing.T, callID, ue string) {
	t.Helper()
	req := parse(t, `REGISTER sip:ims.example SIP/2.0
Via: SIP/2.0/UDP `+ue+`:5060;branch=z9hG4bK1;rport
From: <sip:alice@ims.example>;tag=a1
To: <sip:alice@ims.example>
Call-ID: `+callID+`
CSeq: 1 REGISTER
Contact: <sip:alice@`+ue+`:5060>
Security-Client: `+secClient+`
Require: sec-agree`).(*sip.Request)
	if r.t.OnRequest(&core.Msg{Env: r.env, Req: req, Proto: "udp", SrcIP: ue, SrcPort: 5060, RouteType: core.RouteRequest}) {
		t.Fatal("the hook must not take the request")
	}
}

func (r *rig) reply(t *testing.T, callID, status, extra string) *core.Msg {
	t.Helper()
	res := parse(t, `SIP/2.0 `+status+`
Via: SIP/2.0/UDP 10.99.0.2:5060;branch=z9hG4bK1;rport=5060
From: <sip:alice@ims.example>;tag=a1
To: <sip:alice@ims.example>;tag=s1
Call-ID: `+callID+`
CSeq: 1 REGISTER
`+extra).(*sip.Response)
	return &core.Msg{Env: r.env, Res: res, Proto: "udp", SrcIP: "127.0.0.2", SrcPort: 6060, RouteType: core.RouteTmReply}
}

const wwwAuth = `WWW-Authenticate: Digest realm="ims.example", nonce="bm9uY2U=", algorithm=AKAv1-MD5, ck="b40ba9a3c58b2a05bbf0d987b21bf8cb", ik="f769bcd751044604127672711c6d3441", qop="auth"`

func hdr(msg sip.Message, name string) string {
	var v []string
	for _, h := range core.FindHeaders(msg, name) {
		v = append(v, h.Value())
	}
	return strings.Join(v, " | ")
}

func TestCreateHappyPath(t *testing.T) {
	r := newRig(t, map[string]core.Val{"ipsec_preferred_ealg": core.Str("aes-cbc")})
	r.register(t, "c1", "10.99.0.2")
	msg := r.reply(t, "c1", "401 Unauthorized", wwwAuth)
	if got := r.call(t, msg, "ipsec_create", core.Str("location"), core.Int(0)); got != 1 {
		t.Fatalf("ipsec_create = %d", got)
	}
	if w := hdr(msg.Res, "WWW-Authenticate"); w != `Digest realm="ims.example", nonce="bm9uY2U=", algorithm=AKAv1-MD5, qop="auth"` {
		t.Errorf("WWW-Authenticate %s", w)
	}
	if s := hdr(msg.Res, "Security-Server"); s != "ipsec-3gpp;q=0.1;prot=esp;mod=trans;spi-c=4096;spi-s=4097;port-c=5100;port-s=6100;alg=hmac-sha-1-96;ealg=aes-cbc" {
		t.Errorf("Security-Server %s", s)
	}
	if s := hdr(msg.Res, "Supported"); s != "sec-agree" {
		t.Errorf("Supported %q", s)
	}
	sts, _ := r.k.List(r.m.rng)
	if len(sts) != 4 {
		t.Fatalf("%d kernel states", len(sts))
	}
	if n, _ := r.k.PolicyCount(r.m.rng); n != 4 {
		t.Errorf("%d policies", n)
	}
	if len(r.events) != 1 || r.events[0].topic != "ims_ipsec_pcscf" || r.events[0].data["event"] != "created" || r.events[0].data["ue"] != "10.99.0.2:31000" {
		t.Errorf("events %+v", r.events)
	}

	// ipsec.list joins the kernel counters and never shows the keys.
	r.k.AddCounters("10.99.0.1", 4097, 1, 77)
	v, err := r.rpc(t, "ipsec.list")
	if err != nil {
		t.Fatal(err)
	}
	l := v.([]map[string]any)
	if len(l) != 1 || l[0]["state"] != StateTemporary || l[0]["spi_ps"] != uint32(4097) || l[0]["ealg"] != "aes-cbc" || l[0]["aor"] != "sip:alice@ims.example" {
		t.Fatalf("list %+v", l)
	}
	if _, ok := l[0]["ik"]; ok {
		t.Error("ik shown without ipsec_rpc_show_keys")
	}
	sa := l[0]["sas"].([]map[string]any)[0]
	if sa["name"] != "A" || sa["packets"] != uint64(1) || sa["bytes"] != uint64(77) || sa["in_kernel"] != true {
		t.Errorf("SA A %+v", sa)
	}
	setParam(t, r.t, "ipsec_rpc_show_keys", core.Int(1))
	v, _ = r.rpc(t, "ipsec.get", "sip:alice@ims.example")
	if g := v.([]map[string]any); len(g) != 1 || g[0]["ik"] != "f769bcd751044604127672711c6d3441" {
		t.Errorf("get with keys %+v", g)
	}
	if a, _ := r.rpc(t, "ipsec.audit"); a.(map[string]any)["ok"] != true {
		t.Errorf("audit %+v", a)
	}

	// 200 OK: established, expiry = granted + 30 s; over UDP it leaves
	// port_pc for the UE's port_us.
	ok := r.reply(t, "c1", "200 OK", "Contact: <sip:alice@10.99.0.2:31001>;expires=600")
	if got := r.call(t, ok, "ipsec_forward", core.Str("location"), core.Int(0)); got != 1 {
		t.Errorf("ipsec_forward = %d", got)
	}
	if ok.SendSocket == nil || ok.SendSocket.String() != "udp:10.99.0.1:5100" || ok.DstURI != "sip:10.99.0.2:31001" {
		t.Errorf("200 leaves from %v to %q", ok.SendSocket, ok.DstURI)
	}
	if hdr(ok.Res, "Require") != "sec-agree" {
		t.Errorf("Require %q", hdr(ok.Res, "Require"))
	}
	v, _ = r.rpc(t, "ipsec.get", "10.99.0.2")
	g := v.([]map[string]any)[0]
	if g["state"] != StateEstablished || g["expires"] != "2026-05-01T10:10:30Z" {
		t.Errorf("after 200: %v %v", g["state"], g["expires"])
	}
	// Expiry removes the SAs and releases the pair.
	r.clock.Advance(631 * time.Second)
	if sts, _ := r.k.List(r.m.rng); len(sts) != 0 {
		t.Errorf("%d states after expiry", len(sts))
	}
	if u, _ := r.m.pool.Usage(); u != 0 {
		t.Errorf("pool used %d after expiry", u)
	}
	last := r.events[len(r.events)-1]
	if last.data["event"] != "removed" || last.data["reason"] != "expired" {
		t.Errorf("last event %+v", last)
	}
}

func TestCreateTemporaryExpires(t *testing.T) {
	r := newRig(t, map[string]core.Val{"ipsec_temporary_lifetime": core.Int(30)})
	r.register(t, "c1", "10.99.0.2")
	r.call(t, r.reply(t, "c1", "401 Unauthorized", wwwAuth), "ipsec_create", core.Str("location"), core.Int(0))
	r.clock.Advance(29 * time.Second)
	if sts, _ := r.k.List(r.m.rng); len(sts) != 4 {
		t.Fatalf("%d states before the temporary lifetime", len(sts))
	}
	r.clock.Advance(time.Second)
	if sts, _ := r.k.List(r.m.rng); len(sts) != 0 {
		t.Errorf("%d states after it", len(sts))
	}
}

func TestCreateExhaustionLeavesNothing(t *testing.T) {
	r := newRig(t, map[string]core.Val{"ipsec_spi_id_range": core.Int(2)})
	r.register(t, "c1", "10.99.0.2")
	if r.call(t, r.reply(t, "c1", "401 Unauthorized", wwwAuth), "ipsec_create", core.Str("location"), core.Int(0)) != 1 {
		t.Fatal("first UE")
	}
	r.register(t, "c2", "10.99.0.3")
	msg := r.reply(t, "c2", "401 Unauthorized", wwwAuth)
	if got := r.call(t, msg, "ipsec_create", core.Str("location"), core.Int(0)); got != -1 {
		t.Fatalf("second UE: %d, want -1", got)
	}
	if strings.Contains(hdr(msg.Res, "WWW-Authenticate"), "ck=") || hdr(msg.Res, "Security-Server") != "" {
		t.Errorf("failed 401: %s / %s", hdr(msg.Res, "WWW-Authenticate"), hdr(msg.Res, "Security-Server"))
	}
	// The UE gets a 500 (tm relays the rewritten reply), not a 401 it
	// could not protect its next REGISTER with.
	if msg.Res.StatusCode != 500 || hdr(msg.Res, "WWW-Authenticate") != "" || !strings.Contains(hdr(msg.Res, "Warning"), "IPsec") {
		t.Errorf("reply to the UE: %d %s, WWW-Authenticate %q, Warning %q", msg.Res.StatusCode, msg.Res.Reason, hdr(msg.Res, "WWW-Authenticate"), hdr(msg.Res, "Warning"))
	}
	if sts, _ := r.k.List(r.m.rng); len(sts) != 4 {
		t.Errorf("%d states, want only the first UE's 4", len(sts))
	}
}

func TestCreateKernelFailureReleases(t *testing.T) {
	r := newRig(t, map[string]core.Val{})
	r.k.FailAt = 3
	r.register(t, "c1", "10.99.0.2")
	if got := r.call(t, r.reply(t, "c1", "401 Unauthorized", wwwAuth), "ipsec_create", core.Str("location"), core.Int(0)); got != -1 {
		t.Fatalf("got %d", got)
	}
	if u, _ := r.m.pool.Usage(); u != 0 {
		t.Errorf("pair not released: %d used", u)
	}
	if sts, _ := r.k.List(r.m.rng); len(sts) != 0 {
		t.Errorf("%d states left", len(sts))
	}
	if v, _ := r.rpc(t, "ipsec.list"); len(v.([]map[string]any)) != 0 {
		t.Errorf("list %+v", v)
	}
}

func TestCreateRefusals(t *testing.T) {
	r := newRig(t, map[string]core.Val{})
	// No Security-Client seen for this Call-ID: the 401 passes (no sec-agree).
	plain := r.reply(t, "nope", "401 Unauthorized", wwwAuth)
	if got := r.call(t, plain, "ipsec_create", core.Str("l"), core.Int(0)); got != -1 || plain.Res.StatusCode != 401 {
		t.Errorf("unknown REGISTER: %d, reply %d", got, plain.Res.StatusCode)
	}
	// ik missing: the ck must still not reach the UE.
	r.register(t, "c2", "10.99.0.2")
	msg := r.reply(t, "c2", "401 Unauthorized", `WWW-Authenticate: Digest realm="x", nonce="n", ck="b40ba9a3c58b2a05bbf0d987b21bf8cb"`)
	if got := r.call(t, msg, "ipsec_create", core.Str("l"), core.Int(0)); got != -1 {
		t.Errorf("no ik: %d", got)
	}
	if w := hdr(msg.Res, "WWW-Authenticate"); strings.Contains(strings.ToLower(w), "ck=") {
		t.Errorf("ck left in %q", w)
	}
	if msg.Res.StatusCode != 500 {
		t.Errorf("no ik: the UE gets %d, want 500", msg.Res.StatusCode)
	}
	// Not a 401.
	r.register(t, "c3", "10.99.0.2")
	if got := r.call(t, r.reply(t, "c3", "200 OK", wwwAuth), "ipsec_create", core.Str("l"), core.Int(0)); got != -1 {
		t.Errorf("200: %d", got)
	}
	if sts, _ := r.k.List(r.m.rng); len(sts) != 0 {
		t.Errorf("%d states", len(sts))
	}
}

func TestProbeAtInit(t *testing.T) {
	env := core.NewEnv(nil)
	k := NewFakeKernel()
	k.NoESP = true
	_, tbl := newModule(env, k)
	// Disabled (no ipsec_listen_addr): the kernel is not touched.
	if err := tbl.Init(); err != nil {
		t.Fatalf("disabled module: %v", err)
	}
	setParam(t, tbl, "ipsec_listen_addr", core.Str("10.99.0.1"))
	err := tbl.Init()
	if err == nil || !strings.Contains(err.Error(), "kernel has no ESP support (CONFIG_INET_ESP)") {
		t.Fatalf("init: %v", err)
	}
}

func TestInitRemovesOnlyOwnSAs(t *testing.T) {
	env := core.NewEnv(nil)
	k := NewFakeKernel()
	k.AddForeign(StateInfo{Src: "10.99.0.2", Dst: "10.99.0.1", SPI: 4100, SrcPort: 31000, DstPort: 6100, Reqid: 4100}) // ours, left by a crash
	k.AddForeign(StateInfo{Src: "10.99.0.2", Dst: "10.99.0.1", SPI: 200000, SrcPort: 1, DstPort: 2, Reqid: 200000})    // someone else's
	_, tbl := newModule(env, k)
	setParam(t, tbl, "ipsec_listen_addr", core.Str("10.99.0.1"))
	if err := tbl.Init(); err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.states) != 1 || k.states["10.99.0.1/200000"].SPI != 200000 {
		t.Errorf("states %+v", k.states)
	}
}

func TestRPCDestroyAndAudit(t *testing.T) {
	r := newRig(t, map[string]core.Val{})
	r.register(t, "c1", "10.99.0.2")
	r.call(t, r.reply(t, "c1", "401 Unauthorized", wwwAuth), "ipsec_create", core.Str("l"), core.Int(0))
	r.k.AddForeign(StateInfo{Src: "10.99.0.9", Dst: "10.99.0.1", SPI: 4500, SrcPort: 1, DstPort: 6100, Reqid: 4500})
	a, _ := r.rpc(t, "ipsec.audit")
	am := a.(map[string]any)
	if am["ok"] != false || len(am["leaked"].([]map[string]any)) != 1 || len(am["missing"].([]map[string]any)) != 0 {
		t.Errorf("audit %+v", am)
	}
	st, _ := r.rpc(t, "ipsec.stats")
	sm := st.(map[string]any)
	if sm["pairs_used"] != 1 || sm["pairs_total"] != 500 || sm["kernel_states"] != 5 || sm["sets"].(map[string]int)[StateTemporary] != 1 {
		t.Errorf("stats %+v", sm)
	}
	if _, err := r.rpc(t, "ipsec.destroy", "10.99.0.7"); err == nil {
		t.Error("destroy of an unknown UE: want 404")
	}
	v, err := r.rpc(t, "ipsec.destroy", "10.99.0.2:31000")
	if err != nil || v.(map[string]any)["removed"] != 1 {
		t.Fatalf("destroy %v %v", v, err)
	}
	if sts, _ := r.k.List(r.m.rng); len(sts) != 1 {
		t.Errorf("%d states left, want the foreign one", len(sts))
	}
}

func TestDestroyByAoRAndStop(t *testing.T) {
	r := newRig(t, map[string]core.Val{})
	r.register(t, "c1", "10.99.0.2")
	r.call(t, r.reply(t, "c1", "401 Unauthorized", wwwAuth), "ipsec_create", core.Str("l"), core.Int(0))
	if r.call(t, &core.Msg{Env: r.env}, "ipsec_destroy_by_aor", core.Str("l"), core.Str("sip:bob@ims.example")) != -1 {
		t.Error("unknown AoR")
	}
	if r.call(t, &core.Msg{Env: r.env}, "ipsec_destroy_by_aor", core.Str("l"), core.Str("sip:alice@ims.example")) != 1 {
		t.Error("known AoR")
	}
	r.register(t, "c2", "10.99.0.3")
	r.call(t, r.reply(t, "c2", "401 Unauthorized", wwwAuth), "ipsec_create", core.Str("l"), core.Int(0))
	r.t.Stop()
	if sts, _ := r.k.List(r.m.rng); len(sts) != 0 {
		t.Errorf("%d states after Stop", len(sts))
	}
}

func TestVerify(t *testing.T) {
	r := newRig(t, map[string]core.Val{})
	r.register(t, "c1", "10.99.0.2")
	r.call(t, r.reply(t, "c1", "401 Unauthorized", wwwAuth), "ipsec_create", core.Str("l"), core.Int(0))
	protected := func(verify string) *core.Msg {
		req := parse(t, `REGISTER sip:ims.example SIP/2.0
Via: SIP/2.0/UDP 10.99.0.2:31001;branch=z9hG4bK2
From: <sip:alice@ims.example>;tag=a1
To: <sip:alice@ims.example>
Call-ID: c1
CSeq: 2 REGISTER
`+verify).(*sip.Request)
		return &core.Msg{Env: r.env, Req: req, Proto: "udp", SrcIP: "10.99.0.2", SrcPort: 31000}
	}
	good := "Security-Verify: ipsec-3gpp; q=0.1; prot=esp; mod=trans; spi-c=4096; spi-s=4097; port-c=5100; port-s=6100; alg=hmac-sha-1-96; ealg=null"
	if got := r.call(t, protected(good), "ipsec_verify", core.Str("l")); got != 1 {
		t.Fatalf("matching Security-Verify: %d", got)
	}
	stranger := protected(good)
	stranger.SrcIP = "10.99.0.5"
	if got := r.call(t, stranger, "ipsec_verify", core.Str("l")); got != -1 {
		t.Errorf("unknown source: %d", got)
	}
	if got := r.call(t, protected(strings.Replace(good, "spi-s=4097", "spi-s=4099", 1)), "ipsec_verify", core.Str("l")); got != -2 {
		t.Fatalf("mismatch: %d", got)
	}
	if sts, _ := r.k.List(r.m.rng); len(sts) != 0 {
		t.Errorf("%d states after a mismatch", len(sts))
	}
	r.register(t, "c2", "10.99.0.2")
	r.call(t, r.reply(t, "c2", "401 Unauthorized", wwwAuth), "ipsec_create", core.Str("l"), core.Int(0))
	if got := r.call(t, protected(""), "ipsec_verify", core.Str("l")); got != -2 {
		t.Errorf("missing Security-Verify: %d", got)
	}
}

// Re-authentication: the UE re-REGISTERs over its SAs with a new port_uc
// and the same port_us; the new set gets a port_pc the old one does not
// use (even with one port pair per two SPIs pairs) and, once its 200 comes,
// the old set is removed.
func TestReauthReplacesOldSet(t *testing.T) {
	r := newRig(t, map[string]core.Val{"ipsec_max_connections": core.Int(2)})
	r.register(t, "c1", "10.99.0.2")
	r.call(t, r.reply(t, "c1", "401 Unauthorized", wwwAuth), "ipsec_create", core.Str("l"), core.Int(0))
	r.call(t, r.reply(t, "c1", "200 OK", "Expires: 600"), "ipsec_forward", core.Str("l"), core.Int(0))
	// Occupy pair 2 with another UE, so the next free pair cycles back to
	// port_pc 5100, the one the first set uses.
	r.register(t, "x", "10.99.0.9")
	r.call(t, r.reply(t, "x", "401 Unauthorized", wwwAuth), "ipsec_create", core.Str("l"), core.Int(0))

	req := parse(t, `REGISTER sip:ims.example SIP/2.0
Via: SIP/2.0/UDP 10.99.0.2:31001;branch=z9hG4bK2
From: <sip:alice@ims.example>;tag=a1
To: <sip:alice@ims.example>
Call-ID: c1
CSeq: 2 REGISTER
Security-Client: ipsec-3gpp;alg=hmac-md5-96;spi-c=33333;spi-s=44444;port-c=31002;port-s=31001`).(*sip.Request)
	r.t.OnRequest(&core.Msg{Env: r.env, Req: req, Proto: "udp", SrcIP: "10.99.0.2", SrcPort: 31000})
	res := parse(t, `SIP/2.0 401 Unauthorized
Via: SIP/2.0/UDP 10.99.0.2:31001;branch=z9hG4bK2
From: <sip:alice@ims.example>;tag=a1
To: <sip:alice@ims.example>;tag=s2
Call-ID: c1
CSeq: 2 REGISTER
`+wwwAuth).(*sip.Response)
	msg := &core.Msg{Env: r.env, Res: res, RouteType: core.RouteTmReply}
	if got := r.call(t, msg, "ipsec_create", core.Str("l"), core.Int(0)); got != 1 {
		t.Fatalf("re-auth create: %d", got)
	}
	if s := hdr(res, "Security-Server"); !strings.Contains(s, "port-c=5101") || !strings.Contains(s, "alg=hmac-md5-96") {
		t.Errorf("Security-Server %s: want port-c 5101 (5100 is the old set's)", s)
	}
	if sts, _ := r.k.List(r.m.rng); len(sts) != 12 {
		t.Fatalf("%d states, want 4 old + 4 new + 4 other UE", len(sts))
	}
	ok := parse(t, `SIP/2.0 200 OK
Via: SIP/2.0/UDP 10.99.0.2:31001;branch=z9hG4bK2
From: <sip:alice@ims.example>;tag=a1
To: <sip:alice@ims.example>;tag=s2
Call-ID: c1
CSeq: 2 REGISTER
Contact: <sip:alice@10.99.0.2:31001>;expires=600`).(*sip.Response)
	r.call(t, &core.Msg{Env: r.env, Res: ok}, "ipsec_forward", core.Str("l"), core.Int(0))
	v, _ := r.rpc(t, "ipsec.get", "10.99.0.2")
	l := v.([]map[string]any)
	if len(l) != 1 || l[0]["port_uc"] != uint16(31002) || l[0]["state"] != StateEstablished {
		t.Fatalf("after re-auth 200: %+v", l)
	}
	if sts, _ := r.k.List(r.m.rng); len(sts) != 8 {
		t.Errorf("%d states, want 8", len(sts))
	}
	if st := r.k.states["10.99.0.1/"+fmt.Sprint(l[0]["spi_ps"])]; st.HardLifetime != 690 {
		t.Errorf("kernel hard lifetime %d, want 600+30+60", st.HardLifetime)
	}
}

func TestDeregistrationRemovesAfterDelay(t *testing.T) {
	r := newRig(t, map[string]core.Val{})
	r.register(t, "c1", "10.99.0.2")
	r.call(t, r.reply(t, "c1", "401 Unauthorized", wwwAuth), "ipsec_create", core.Str("l"), core.Int(0))
	r.call(t, r.reply(t, "c1", "200 OK", "Expires: 600"), "ipsec_forward", core.Str("l"), core.Int(0))
	r.call(t, r.reply(t, "c1", "200 OK", "Contact: <sip:alice@10.99.0.2:31001>;expires=0"), "ipsec_forward", core.Str("l"), core.Int(0))
	v, _ := r.rpc(t, "ipsec.list")
	if l := v.([]map[string]any); len(l) != 1 || l[0]["state"] != StateDeleting {
		t.Fatalf("after de-registration 200: %+v", l)
	}
	// The 200 still has its SAs for a moment, then nothing is left.
	r.clock.Advance(4 * time.Second)
	if sts, _ := r.k.List(r.m.rng); len(sts) != 4 {
		t.Fatalf("%d states before the delay", len(sts))
	}
	r.clock.Advance(time.Second)
	if sts, _ := r.k.List(r.m.rng); len(sts) != 0 {
		t.Errorf("%d states after it", len(sts))
	}
}

func TestCreateConcurrent(t *testing.T) {
	r := newRig(t, map[string]core.Val{"ipsec_spi_id_range": core.Int(40)}) // 20 pairs
	var wg sync.WaitGroup
	var okN, failN sync.Map
	for i := 0; i < 30; i++ {
		ue, cid := fmt.Sprintf("10.99.1.%d", i+1), fmt.Sprintf("c%d", i)
		r.register(t, cid, ue)
		msg := r.reply(t, cid, "401 Unauthorized", wwwAuth)
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, _ := r.t.Funcs[0].Fn(msg, []core.Val{core.Str("l"), core.Int(0)})
			if v.Int == 1 {
				okN.Store(cid, true)
			} else {
				failN.Store(cid, true)
			}
		}()
	}
	wg.Wait()
	n := 0
	okN.Range(func(any, any) bool { n++; return true })
	if n != 20 {
		t.Errorf("%d created, want 20 (the pool)", n)
	}
	if sts, _ := r.k.List(r.m.rng); len(sts) != 80 {
		t.Errorf("%d states, want 80", len(sts))
	}
}

// fakeSockets is a SocketManager that only lists sockets, as route tests'.
type fakeSockets struct{ env *core.Env }

func (f fakeSockets) OpenSocket(_ context.Context, s core.Socket) (core.Socket, error) {
	for _, x := range f.env.Sockets() {
		if x == s {
			return s, fmt.Errorf("%s already open", s)
		}
	}
	f.env.AddSocket(s)
	return s, nil
}

func (f fakeSockets) CloseSocket(s core.Socket) error {
	if !f.env.RemoveSocket(s) {
		return fmt.Errorf("%s not open", s)
	}
	return nil
}

// ipsec.list pages like ul.dump and uac.reg_dump: limit and cursor give
// {"records", "next"}; the cursor names the first set not yet shown.
func TestRPCListPaging(t *testing.T) {
	r := newRig(t, map[string]core.Val{})
	for i, ue := range []string{"10.99.0.2", "10.99.0.3", "10.99.0.4"} {
		cid := fmt.Sprintf("c%d", i)
		r.register(t, cid, ue)
		r.call(t, r.reply(t, cid, "401 Unauthorized", wwwAuth), "ipsec_create", core.Str("l"), core.Int(0))
	}
	if v, _ := r.rpc(t, "ipsec.list"); len(v.([]map[string]any)) != 3 {
		t.Fatalf("unpaged list %v", v)
	}
	v, err := r.rpc(t, "ipsec.list", 2)
	p1, _ := v.(map[string]any)
	if err != nil || len(p1["records"].([]map[string]any)) != 2 || p1["next"] == nil {
		t.Fatalf("page 1: %v %v", v, err)
	}
	if id := p1["records"].([]map[string]any)[1]["ue"]; id != "10.99.0.3:31000" {
		t.Errorf("page 1 ends with %v", id)
	}
	v, err = r.rpc(t, "ipsec.list", 2, p1["next"])
	p2, _ := v.(map[string]any)
	if err != nil || len(p2["records"].([]map[string]any)) != 1 || p2["next"] != nil ||
		p2["records"].([]map[string]any)[0]["ue"] != "10.99.0.4:31000" {
		t.Fatalf("page 2: %v %v", v, err)
	}
	for _, bad := range [][]any{{0}, {-1}, {2, "!!"}} {
		_, err := r.rpc(t, "ipsec.list", bad...)
		var re *core.RPCError
		if !errors.As(err, &re) || re.Code != 400 {
			t.Errorf("ipsec.list %v: %v, want 400", bad, err)
		}
	}
}

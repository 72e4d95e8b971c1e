package auth_db_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"github.com/kamgo/kamgo/kamd/node"
	"github.com/kamgo/kamgo/starlark/routetest"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/kamgo/kamgo/modules/auth_db"
	"github.com/kamgo/kamgo/modules/core"

	_ "github.com/kamgo/kamgo/modules/all"
)

// script answers REGISTER and INVITE after auth_db: 200 with X-RC: 1, or
// a challenge carrying X-RC: <code>.
const script = `
%s
def ksr_request_route():
    if KSR.is_INVITE():
        rc = KSR.auth_db.proxy_authenticate("example.com", "%s")
    else:
        rc = KSR.auth_db.auth_check("example.com", "%s", %d)
    KSR.hdr.append_to_reply("X-RC: " + str(rc) + "\r\n")
    if rc < 0:
        KSR.auth.auth_challenge("", 1)
        return
    KSR.sl.sl_send_reply(200, "OK")
`

type h struct {
	t *testing.T
	*routetest.Harness
	cseq int
}

func newH(t *testing.T, modparams, table string, flags int) *h {
	t.Helper()
	hh, err := routetest.NewHarness(node.RouteTest, "route.star", []byte(fmt.Sprintf(script, modparams, table, table, flags)), routetest.HarnessOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hh.Close)
	return &h{t: t, Harness: hh}
}

type args []string

func (a args) Len() int                     { return len(a) }
func (a args) String(i int) (string, error) { return a[i], nil }
func (a args) Int(i int) (int, error)       { return 0, fmt.Errorf("not an int") }

func (x *h) rpc(method string, a ...string) (any, error) {
	for _, m := range x.Engine.Modules {
		for _, r := range m.RPC {
			if r.Name == method {
				return r.Handler(context.Background(), args(a))
			}
		}
	}
	x.t.Fatalf("no RPC %s", method)
	return nil, nil
}

// request routes a REGISTER (or INVITE) from user with optional credentials
// and returns the reply, its X-RC and the challenge in it (if any).
func (x *h) request(method, from, to, authHdr string) (*sip.Response, string, *digest.Challenge) {
	x.t.Helper()
	x.cseq++
	ruri := "sip:example.com"
	if method == "INVITE" {
		ruri = "sip:bob@example.com"
	}
	text := fmt.Sprintf("%s %s SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-%d\r\nFrom: <sip:%s@example.com>;tag=1\r\nTo: <sip:%s@example.com>\r\n"+
		"Call-ID: auth@192.0.2.10\r\nCSeq: %d %s\r\nMax-Forwards: 70\r\nContact: <sip:%s@192.0.2.10:5060>\r\n", method, ruri, x.cseq, from, to, x.cseq, method, from)
	if authHdr != "" {
		text += authHdr + "\r\n"
	}
	msg, err := routetest.ParseMessage(text + "Content-Length: 0\r\n\r\n")
	if err != nil {
		x.t.Fatal(err)
	}
	r, err := x.Request(msg.(*sip.Request), "192.0.2.10:5060", "udp")
	if err != nil {
		x.t.Fatal(err)
	}
	if e := r.Error(); e != "" {
		x.t.Fatalf("script error: %s", e)
	}
	reps := r.Of(core.OutReply)
	if len(reps) != 1 {
		x.t.Fatalf("want one reply, got %d", len(reps))
	}
	res := reps[0].Msg.(*sip.Response)
	rc := ""
	if hdr := res.GetHeader("X-RC"); hdr != nil {
		rc = hdr.Value()
	}
	var ch *digest.Challenge
	for _, n := range []string{"WWW-Authenticate", "Proxy-Authenticate"} {
		if hdr := res.GetHeader(n); hdr != nil {
			if ch, err = digest.ParseChallenge(hdr.Value()); err != nil {
				x.t.Fatalf("%s: %v", hdr.Value(), err)
			}
		}
	}
	return res, rc, ch
}

type cr struct {
	user, pass string
	nc         int
	method     string
}

func creds(t *testing.T, ch *digest.Challenge, c cr) string {
	t.Helper()
	method, uri, name := "REGISTER", "sip:example.com", "Authorization"
	if c.method == "INVITE" {
		method, uri, name = "INVITE", "sip:bob@example.com", "Proxy-Authorization"
	}
	d, err := digest.Digest(ch, digest.Options{Method: method, URI: uri, Username: c.user, Password: c.pass, Count: c.nc, Cnonce: "c0ffee"})
	if err != nil {
		t.Fatal(err)
	}
	return name + ": " + d.String()
}

func TestAuthCheck(t *testing.T) {
	type step struct {
		from, to string
		cred     *cr // nil: no credentials
		tamper   bool
		advance  time.Duration
		wantRC   string
		stale    bool
	}
	alice := &cr{user: "alice", pass: "wonderland", nc: 1}
	for _, tc := range []struct {
		name      string
		modparams string
		table     string
		setup     func(x *h, db *sql.DB)
		flags     int
		steps     []step
	}{
		{name: "challenge then 200", steps: []step{{wantRC: "-5"}, {cred: alice, wantRC: "1"}}},
		{name: "wrong password", steps: []step{{wantRC: "-5"}, {cred: &cr{user: "alice", pass: "nope", nc: 1}, wantRC: "-2"}}},
		{name: "unknown user", steps: []step{{wantRC: "-5"}, {from: "carol", to: "carol", cred: &cr{user: "carol", pass: "x", nc: 1}, wantRC: "-3"}}},
		{name: "expired nonce", steps: []step{{wantRC: "-5"}, {cred: alice, advance: 301 * time.Second, wantRC: "-4", stale: true}}},
		{name: "replayed nc", steps: []step{{wantRC: "-5"}, {cred: alice, wantRC: "1"}, {cred: alice, wantRC: "-6", stale: true}}},
		{name: "tampered nonce", steps: []step{{wantRC: "-5"}, {cred: alice, tamper: true, wantRC: "-1"}}},
		{name: "from user mismatch", flags: 1, steps: []step{{wantRC: "-5"}, {from: "bob", to: "bob", cred: alice, wantRC: "-8"}}},
		{name: "no id check without flag 1", flags: 0, steps: []step{{wantRC: "-5"}, {from: "bob", to: "bob", cred: alice, wantRC: "1"}}},
		{name: "sha-256", modparams: `modparam("auth", "algorithm", "SHA-256")`, steps: []step{{wantRC: "-5"}, {cred: alice, wantRC: "1"}}},
		{name: "calculate_ha1", modparams: `modparam("auth_db", "calculate_ha1", 1)
modparam("auth_db", "store_password", 1)`, steps: []step{{wantRC: "-5"}, {cred: alice, wantRC: "1"}}},
		{name: "username with domain uses ha1b", steps: []step{{wantRC: "-5"}, {cred: &cr{user: "alice@example.com", pass: "wonderland", nc: 1}, wantRC: "1"}}},
		{name: "use_domain", modparams: `modparam("auth_db", "use_domain", 1)`, steps: []step{{wantRC: "-5"}, {cred: alice, wantRC: "1"}}},
		{name: "garbled ha1", setup: func(x *h, db *sql.DB) {
			if _, err := db.Exec(`UPDATE subscriber SET ha1 = 'zz' WHERE username = 'alice'`); err != nil {
				t.Fatal(err)
			}
		}, steps: []step{{wantRC: "-5"}, {cred: alice, wantRC: "-1"}}},
		{name: "null ha1", table: "legacy_subscriber", setup: func(x *h, db *sql.DB) {
			if _, err := db.Exec(`CREATE TABLE legacy_subscriber (id INTEGER PRIMARY KEY, username TEXT, domain TEXT, ha1 TEXT, ha1b TEXT);
				INSERT INTO legacy_subscriber (username, domain, ha1) VALUES ('alice', 'example.com', NULL)`); err != nil {
				t.Fatal(err)
			}
		}, steps: []step{{wantRC: "-5"}, {cred: alice, wantRC: "-1"}}},
		{name: "invalid table name", table: "subscriber; DROP TABLE version", steps: []step{{wantRC: "-5"}, {cred: alice, wantRC: "-1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			table := tc.table
			if table == "" {
				table = "subscriber"
			}
			x := newH(t, tc.modparams, table, tc.flags)
			if _, err := x.rpc("auth_db.subscriber_add", "alice", "example.com", "wonderland"); err != nil {
				t.Fatal(err)
			}
			if tc.setup != nil {
				tc.setup(x, x.Env.DB)
			}
			var ch *digest.Challenge
			for i, s := range tc.steps {
				if s.from == "" {
					s.from, s.to = "alice", "alice"
				}
				x.Advance(s.advance)
				auth := ""
				if s.cred != nil {
					auth = creds(t, ch, *s.cred)
					if s.tamper {
						auth = strings.Replace(auth, `nonce="`, `nonce="x`, 1)
					}
				}
				res, rc, next := x.request("REGISTER", s.from, s.to, auth)
				if rc != s.wantRC {
					t.Fatalf("step %d: X-RC %s, want %s (reply %d)", i, rc, s.wantRC, res.StatusCode)
				}
				if rc == "1" {
					if res.StatusCode != 200 {
						t.Fatalf("step %d: %d, want 200", i, res.StatusCode)
					}
				} else {
					if res.StatusCode != 401 || next == nil {
						t.Fatalf("step %d: %d, want a 401 challenge", i, res.StatusCode)
					}
					if next.Stale != s.stale {
						t.Fatalf("step %d: stale=%v, want %v", i, next.Stale, s.stale)
					}
					ch = next
				}
			}
		})
	}
}

func TestProxyAuthenticateInvite(t *testing.T) {
	x := newH(t, "", "subscriber", 1)
	if _, err := x.rpc("auth_db.subscriber_add", "alice", "example.com", "wonderland"); err != nil {
		t.Fatal(err)
	}
	res, rc, ch := x.request("INVITE", "alice", "bob", "")
	if res.StatusCode != 407 || rc != "-5" || ch == nil {
		t.Fatalf("%d %s", res.StatusCode, rc)
	}
	res, rc, _ = x.request("INVITE", "alice", "bob", creds(t, ch, cr{user: "alice", pass: "wonderland", nc: 1, method: "INVITE"}))
	if res.StatusCode != 200 || rc != "1" {
		t.Fatalf("%d %s", res.StatusCode, rc)
	}
}

func TestGarbledRowLogsError(t *testing.T) {
	x := newH(t, "", "subscriber", 1)
	x.rpc("auth_db.subscriber_add", "alice", "example.com", "wonderland")
	x.Env.DB.Exec(`UPDATE subscriber SET ha1 = 'abc' WHERE username = 'alice'`)
	_, _, ch := x.request("REGISTER", "alice", "alice", "")
	x.request("REGISTER", "alice", "alice", creds(t, ch, cr{user: "alice", pass: "wonderland", nc: 1}))
	found := false
	for _, l := range x.AllLogs() {
		if strings.Contains(l.Message, "malformed ha1 column") {
			found = true
		}
	}
	if !found {
		t.Errorf("no ERR log about the malformed ha1: %+v", x.AllLogs())
	}
}

func TestSubscriberRPCAndIsSubscriber(t *testing.T) {
	x := newH(t, "", "subscriber", 1)
	if _, err := x.rpc("auth_db.subscriber_add", "alice", "example.com", "wonderland"); err != nil {
		t.Fatal(err)
	}
	if _, err := x.rpc("auth_db.subscriber_add", "alice", "example.com", "again"); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("duplicate: %v", err)
	}
	for _, bad := range [][]string{{"", "example.com", "x"}, {"a b", "example.com", "x"}, {"bob", "example.com", "p\r\nX: y"}} {
		if _, err := x.rpc("auth_db.subscriber_add", bad...); err == nil || !strings.Contains(err.Error(), "400") {
			t.Errorf("add %q: %v, want a 400", bad, err)
		}
	}
	x.rpc("auth_db.subscriber_add", "bob", "other.org", "pw")
	list, err := x.rpc("auth_db.subscriber_list")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(list)
	if strings.Contains(string(b), "ha1") || strings.Contains(string(b), "wonderland") || !strings.Contains(string(b), `"username":"alice"`) {
		t.Errorf("subscriber_list: %s", b)
	}
	one, _ := x.rpc("auth_db.subscriber_list", "other.org")
	if b, _ := json.Marshal(one); strings.Contains(string(b), "alice") {
		t.Errorf("list other.org: %s", b)
	}
	var pw string
	x.Env.DB.QueryRow(`SELECT password FROM subscriber WHERE username='alice'`).Scan(&pw)
	if pw != "" {
		t.Errorf("password stored by default: %q", pw)
	}

	mod := findModule(t, x, "auth_db")
	m := &core.Msg{Env: x.Env, RouteType: core.RouteRequest}
	for _, tc := range []struct {
		uri   string
		flags int
		want  int64
	}{
		{"sip:alice@example.com", 0, 1},
		{"sip:alice@other.org", 0, 1},
		{"sip:alice@other.org", 1, -2},
		{"sip:carol@example.com", 0, -2},
		{"not a uri", 0, -1},
	} {
		fn := findFunc(t, mod, "is_subscriber")
		v, err := fn.Fn(m, []core.Val{core.Str(tc.uri), core.Str("subscriber"), core.Int(tc.flags)})
		if err != nil || v.Int != tc.want {
			t.Errorf("is_subscriber(%s, %d) = %v %v, want %d", tc.uri, tc.flags, v, err, tc.want)
		}
	}

	if _, err := x.rpc("auth_db.subscriber_rm", "alice", "example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := x.rpc("auth_db.subscriber_rm", "alice", "example.com"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("rm twice: %v", err)
	}
}

func TestSchemaVersion(t *testing.T) {
	db, err := core.OpenDB(t.TempDir() + "/k.db")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := auth_db.CreateSchema(db); err != nil {
		t.Fatal(err)
	}
	if err := auth_db.CreateSchema(db); err != nil {
		t.Fatalf("twice: %v", err)
	}
	db.Exec(`UPDATE version SET table_version = 6 WHERE table_name = 'subscriber'`)
	if err := auth_db.CreateSchema(db); err == nil || !strings.Contains(err.Error(), "version 6") {
		t.Fatalf("old version: %v", err)
	}
}

func findModule(t *testing.T, x *h, name string) *core.Module {
	for _, m := range x.Engine.Modules {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("no module %s", name)
	return nil
}

func findFunc(t *testing.T, mod *core.Module, name string) *core.Func {
	for i := range mod.Funcs {
		if mod.Funcs[i].Name == name {
			return &mod.Funcs[i]
		}
	}
	t.Fatalf("no func %s", name)
	return nil
}

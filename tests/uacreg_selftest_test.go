package tests

// Self-tests of the uac test infrastructure: the test registrar's digest
// check (RFC 7616's own example) and a sipgo client registering with it,
// and with the shared Kamailio registrar. They need no uac module; they
// make sure a failing uac test points at kamd, not at the harness.

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

func TestUACRegDigestVectors(t *testing.T) {
	// RFC 7616 §3.9.1.
	p := map[string]string{
		"uri": "/dir/index.html", "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
		"nc": "00000001", "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", "qop": "auth",
	}
	for alg, want := range map[string]string{
		"MD5":     "8ca523f5e9506fed4657c9700eebdbec",
		"SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
	} {
		got, err := digestResponse(alg, "Mufasa", "http-auth@example.org", "Circle of Life", "GET", p)
		if err != nil || got != want {
			t.Errorf("%s: got %q, %v; want %q", alg, got, err, want)
		}
	}
	m, err := parseDigestParams(`Digest username="a b", realm="r,x", nc=00000001, qop=auth,algorithm=SHA-512-256`)
	if err != nil || m["username"] != "a b" || m["realm"] != "r,x" || m["nc"] != "00000001" || m["qop"] != "auth" || m["algorithm"] != "SHA-512-256" {
		t.Errorf("parseDigestParams: %v %v", m, err)
	}
	for _, bad := range []string{`Basic abc`, `Digest realm="x`, `Digest realm="a", realm="b"`, `Digest =x`} {
		if _, err := parseDigestParams(bad); err == nil {
			t.Errorf("parseDigestParams(%q): no error", bad)
		}
	}
}

// sipgoRegisterClient is a sipgo client for the self-tests.
func sipgoRegisterClient(t testing.TB) *sipgo.Client {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("uacreg-selftest"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ua.Close() })
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"),
		sipgo.WithClientLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// sipgoRegister sends a REGISTER for user@domain to dst (host:port) and
// answers one challenge with password; it returns the final response.
func sipgoRegister(t testing.TB, cli *sipgo.Client, dst, user, domain, authUser, password string, expires int) *sip.Response {
	t.Helper()
	var ruri sip.Uri
	if err := sip.ParseUri("sip:"+domain, &ruri); err != nil {
		t.Fatal(err)
	}
	req := sip.NewRequest(sip.REGISTER, ruri)
	aor := "<sip:" + user + "@" + domain + ">"
	req.AppendHeader(sip.NewHeader("To", aor))
	req.AppendHeader(sip.NewHeader("From", aor+";tag="+sip.GenerateTagN(8)))
	req.AppendHeader(sip.NewHeader("Contact", "<sip:"+user+"-ct@127.0.0.1:9>"))
	req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(expires)))
	req.SetDestination(dst)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := cli.Do(ctx, req)
	if err != nil {
		t.Fatalf("REGISTER %s: %v", user, err)
	}
	if res.StatusCode == 401 || res.StatusCode == 407 {
		res, err = cli.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: authUser, Password: password})
		if err != nil {
			t.Fatalf("REGISTER %s with credentials: %v", user, err)
		}
	}
	return res
}

func TestUACRegTestRegistrar(t *testing.T) {
	reg := newTestRegistrar(t, nil)
	cli := sipgoRegisterClient(t)
	for _, alg := range []string{"MD5", "SHA-256", "SHA-512-256"} {
		user := "u-" + strings.ToLower(alg)
		reg.SetUser(user, regUser{Password: "pw", Algorithms: []string{alg}, Grant: 77})
		res := sipgoRegister(t, cli, reg.Addr(), user, reg.Addr(), user, "pw", 300)
		recs := reg.Records(user)
		if res.StatusCode != 200 || len(recs) != 2 || recs[1].Auth != "ok" {
			t.Fatalf("%s: got %d, records %s", alg, res.StatusCode, fmtRecords(recs))
		}
		if c := res.GetHeader("Contact"); c == nil || !strings.Contains(c.Value(), "expires=77") {
			t.Errorf("%s: 200's Contact %v, want ;expires=77", alg, c)
		}
		if b := reg.Bindings(user); len(b) != 1 {
			t.Errorf("%s: bindings %v", alg, b)
		}
	}

	// A wrong password is challenged again; the verdict says why.
	reg.SetUser("wrong", regUser{Password: "right"})
	if res := sipgoRegister(t, cli, reg.Addr(), "wrong", reg.Addr(), "wrong", "bad", 60); res.StatusCode != 401 {
		t.Errorf("wrong password: %d", res.StatusCode)
	}
	if recs := reg.Records("wrong"); len(recs) != 2 || recs[1].Auth != "wrong response" {
		t.Errorf("wrong password: %s", fmtRecords(recs))
	}

	// stale=true once, then accepted with the new nonce.
	reg.SetUser("stale", regUser{Password: "pw", StaleOnce: true, Proxy: true})
	res := sipgoRegister(t, cli, reg.Addr(), "stale", reg.Addr(), "stale", "pw", 60)
	if res.StatusCode != 407 || !strings.Contains(res.GetHeader("Proxy-Authenticate").Value(), "stale=true") {
		t.Fatalf("stale: got %d %v", res.StatusCode, res.GetHeader("Proxy-Authenticate"))
	}
	if res := sipgoRegister(t, cli, reg.Addr(), "stale", reg.Addr(), "stale", "pw", 60); res.StatusCode != 200 {
		t.Errorf("after stale: %d %s", res.StatusCode, fmtRecords(reg.Records("stale")))
	}

	// 423 with Min-Expires, fixed codes, unknown users.
	reg.SetUser("brief", regUser{MinExpires: 600})
	if res := sipgoRegister(t, cli, reg.Addr(), "brief", reg.Addr(), "", "", 60); res.StatusCode != 423 || res.GetHeader("Min-Expires").Value() != "600" {
		t.Errorf("423: %d", res.StatusCode)
	}
	reg.SetUser("forbidden", regUser{Reply: 403})
	if res := sipgoRegister(t, cli, reg.Addr(), "forbidden", reg.Addr(), "", "", 60); res.StatusCode != 403 {
		t.Errorf("403: %d", res.StatusCode)
	}
	if res := sipgoRegister(t, cli, reg.Addr(), "nobody", reg.Addr(), "", "", 60); res.StatusCode != 404 {
		t.Errorf("unknown user: %d", res.StatusCode)
	}

	// Unregister removes the binding; the Expires header carries the grant.
	reg.SetUser("hdr", regUser{GrantIn: "header", Grant: 30})
	if res := sipgoRegister(t, cli, reg.Addr(), "hdr", reg.Addr(), "", "", 60); res.StatusCode != 200 || res.GetHeader("Expires").Value() != "30" {
		t.Errorf("grant in header: %d %v", res.StatusCode, res.GetHeader("Expires"))
	}
	sipgoRegister(t, cli, reg.Addr(), "hdr", reg.Addr(), "", "", 0)
	if b := reg.Bindings("hdr"); len(b) != 0 {
		t.Errorf("after Expires: 0: bindings %v", b)
	}
}

func TestUACRegKamailioSelfTest(t *testing.T) {
	kam := sharedKamailio(t)
	kam.AddUser(t, "selftest", "s3cret")
	cli := sipgoRegisterClient(t)
	if res := sipgoRegister(t, cli, kam.Addr(), "selftest", kam.Addr(), "selftest", "wrong", 60); res.StatusCode != 401 {
		t.Errorf("wrong password: got %d, want 401", res.StatusCode)
	}
	if res := sipgoRegister(t, cli, kam.Addr(), "selftest", kam.Addr(), "selftest", "s3cret", 60); res.StatusCode != 200 {
		t.Fatalf("REGISTER with digest: got %d\nKamailio log:\n%s", res.StatusCode, kam.Log())
	}
	l := kam.WaitLocation(t, "selftest", "sip:selftest-ct@127.0.0.1:9", 5*time.Second)
	if exp, err := time.Parse(time.DateTime, l.Expires); err != nil || time.Until(exp) < 30*time.Second || time.Until(exp) > 90*time.Second {
		t.Errorf("location row %+v: want an expiry about 60s from now (%v)", l, err)
	}
}

func TestUACRegKamailioOwnUAC(t *testing.T) {
	kam := sharedKamailio(t)
	kam.WaitLocation(t, kamRefUUID, "sip:"+kamRefUUID+"@127.0.0.1:", 10*time.Second)
	var res struct{ Result []map[string]any }
	if err := json.Unmarshal(kam.RPC(t, "uac.reg_dump"), &res); err != nil || len(res.Result) != 1 {
		t.Fatalf("Kamailio's uac.reg_dump: %v %v", res, err)
	}
	if r := res.Result[0]; r["l_uuid"] != kamRefUUID || r["flags"] != 20.0 || len(r) != 18 {
		t.Errorf("Kamailio's uac.reg_dump record: %v", r)
	}
}

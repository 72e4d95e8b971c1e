package core_test

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/icholy/digest"
	"github.com/kamgo/kamgo/modules/core"
)

// RFC 7616 §3.9.1: the same request answered with SHA-256 and with MD5.
const (
	rfcNonce  = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
	rfcOpaque = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
	rfcCnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
)

func rfcChallenge(alg string) string {
	return `Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=` + alg +
		`, nonce="` + rfcNonce + `", opaque="` + rfcOpaque + `"`
}

// param pulls one parameter out of an Authorization value (as a server would).
func param(t *testing.T, v, name string) string {
	t.Helper()
	c, err := digest.ParseCredentials(v)
	if err != nil {
		t.Fatalf("%q: %v", v, err)
	}
	switch name {
	case "response":
		return c.Response
	case "qop":
		return c.QOP
	case "cnonce":
		return c.Cnonce
	case "opaque":
		return c.Opaque
	case "algorithm":
		return c.Algorithm
	case "username":
		return c.Username
	case "uri":
		return c.URI
	}
	t.Fatalf("param %s", name)
	return ""
}

func TestDigestClientRFC7616Vectors(t *testing.T) {
	for _, tc := range []struct {
		alg, want string
	}{
		{"SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"},
		{"MD5", "8ca523f5e9506fed4657c9700eebdbec"},
	} {
		t.Run(tc.alg, func(t *testing.T) {
			ch, err := core.ParseDigestChallenge(rfcChallenge(tc.alg))
			if err != nil {
				t.Fatal(err)
			}
			if ch.Realm != "http-auth@example.org" || ch.Nonce != rfcNonce || ch.Opaque != rfcOpaque || ch.Algorithm != tc.alg ||
				len(ch.QOP) != 2 || ch.QOP[0] != "auth" || ch.QOP[1] != "auth-int" || ch.Stale {
				t.Fatalf("parsed %+v", ch)
			}
			v, err := ch.Authorize(core.DigestCredentials{Username: "Mufasa", Password: "Circle of Life"}, "GET", "/dir/index.html", 1, rfcCnonce, nil)
			if err != nil {
				t.Fatal(err)
			}
			want := `Digest username="Mufasa", realm="http-auth@example.org", nonce="` + rfcNonce + `", uri="/dir/index.html", opaque="` + rfcOpaque +
				`", qop=auth, nc=00000001, cnonce="` + rfcCnonce + `", response="` + tc.want + `", algorithm=` + tc.alg
			if v != want {
				t.Errorf("got  %s\nwant %s", v, want)
			}
		})
	}
}

// TestDigestClientAgainstIcholy cross-checks every algorithm/qop pair
// icholy/digest implements (modules/auth's server side uses it).
func TestDigestClientAgainstIcholy(t *testing.T) {
	body := []byte("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n")
	for _, alg := range []string{"MD5", "SHA-256", "SHA-512-256"} {
		for _, qop := range []string{"", "auth", "auth-int"} {
			t.Run(alg+"/"+qop, func(t *testing.T) {
				hdr := `Digest realm="sip.example.com", nonce="abc123nonce", opaque="op42", algorithm=` + alg
				if qop != "" {
					hdr += `, qop="` + qop + `"`
				}
				ch, err := core.ParseDigestChallenge(hdr)
				if err != nil {
					t.Fatal(err)
				}
				got, err := ch.Authorize(core.DigestCredentials{Username: "alice", Password: "s3cret"}, "REGISTER", "sip:sip.example.com", 7, "0a4f113b", body)
				if err != nil {
					t.Fatal(err)
				}
				ic, _ := digest.ParseChallenge(hdr)
				o := digest.Options{Method: "REGISTER", URI: "sip:sip.example.com", Username: "alice", Password: "s3cret", Count: 7, Cnonce: "0a4f113b",
					GetBody: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }}
				want, err := digest.Digest(ic, o)
				if err != nil {
					t.Fatal(err)
				}
				if r := param(t, got, "response"); r != want.Response {
					t.Errorf("response %s, icholy %s\n%s", r, want.Response, got)
				}
				if param(t, got, "qop") != qop || param(t, got, "opaque") != "op42" {
					t.Errorf("qop/opaque not right: %s", got)
				}
				if qop != "" && !strings.Contains(got, "nc=00000007") {
					t.Errorf("nc not 00000007: %s", got)
				}
				if qop == "" && strings.Contains(got, "cnonce") {
					t.Errorf("RFC 2069 answer with a cnonce: %s", got)
				}
			})
		}
	}
}

func TestDigestClientHA1AndSess(t *testing.T) {
	ch, _ := core.ParseDigestChallenge(`Digest realm="r", nonce="n", qop="auth"`)
	pw, err := ch.Authorize(core.DigestCredentials{Username: "u", Password: "p"}, "REGISTER", "sip:r", 1, "c", nil)
	if err != nil {
		t.Fatal(err)
	}
	// HA1 = MD5("u:r:p"), as Kamailio's auth_ha1 column stores it.
	ha1 := "44add22b6f3179b751eafd68ee370f7d"
	h, err := ch.Authorize(core.DigestCredentials{Username: "u", HA1: strings.ToUpper(ha1), Password: "ignored"}, "REGISTER", "sip:r", 1, "c", nil)
	if err != nil {
		t.Fatal(err)
	}
	if h != pw {
		t.Errorf("HA1 answer differs from the password's:\n%s\n%s", h, pw)
	}
	// MD5-sess: HA1' = MD5(HA1:nonce:cnonce).
	sess, _ := core.ParseDigestChallenge(`Digest realm="r", nonce="n", qop="auth", algorithm=MD5-sess`)
	a, err := sess.Authorize(core.DigestCredentials{Username: "u", Password: "p"}, "REGISTER", "sip:r", 1, "c", nil)
	if err != nil || !strings.HasSuffix(a, "algorithm=MD5-sess") || a == pw {
		t.Errorf("MD5-sess: %v %s", err, a)
	}
	b, _ := sess.Authorize(core.DigestCredentials{Username: "u", HA1: ha1}, "REGISTER", "sip:r", 1, "c", nil)
	if a != b {
		t.Errorf("MD5-sess with HA1 differs")
	}
}

func TestDigestClientErrors(t *testing.T) {
	md5, _ := core.ParseDigestChallenge(`Digest realm="r", nonce="n", qop="auth"`)
	sha, _ := core.ParseDigestChallenge(`Digest realm="r", nonce="n", qop="auth", algorithm=SHA-256`)
	odd, _ := core.ParseDigestChallenge(`Digest realm="r", nonce="n", algorithm=SHA-1024`)
	qx, _ := core.ParseDigestChallenge(`Digest realm="r", nonce="n", qop="auth-conf"`)
	u := core.DigestCredentials{Username: "u", Password: "p"}
	for _, tc := range []struct {
		name   string
		ch     *core.DigestChallenge
		cred   core.DigestCredentials
		cnonce string
		nc     uint32
		uri    string
	}{
		{"ha1 only for SHA-256", sha, core.DigestCredentials{Username: "u", HA1: "44add22b6f3179b751eafd68ee370f7d"}, "c", 1, "sip:r"},
		{"short ha1", md5, core.DigestCredentials{Username: "u", HA1: "abc"}, "c", 1, "sip:r"},
		{"non-hex ha1", md5, core.DigestCredentials{Username: "u", HA1: strings.Repeat("z", 32)}, "c", 1, "sip:r"},
		{"unknown algorithm", odd, u, "c", 1, "sip:r"},
		{"unknown qop", qx, u, "c", 1, "sip:r"},
		{"qop without cnonce", md5, u, "", 1, "sip:r"},
		{"qop with nc 0", md5, u, "c", 0, "sip:r"},
		{"no username", md5, core.DigestCredentials{Password: "p"}, "c", 1, "sip:r"},
		{"no uri", md5, u, "c", 1, ""},
		{"CR in username", md5, core.DigestCredentials{Username: "u\r\nX: y", Password: "p"}, "c", 1, "sip:r"},
	} {
		if v, err := tc.ch.Authorize(tc.cred, "REGISTER", tc.uri, tc.nc, tc.cnonce, nil); err == nil {
			t.Errorf("%s: no error, got %s", tc.name, v)
		}
	}
	if odd.Supported() || !sha.Supported() {
		t.Errorf("Supported wrong")
	}
}

func TestParseDigestChallenge(t *testing.T) {
	for _, tc := range []struct {
		in    string
		ok    bool
		check func(c *core.DigestChallenge) bool
	}{
		{`Digest realm="a\"b", nonce="n\\1", stale=TRUE, algorithm=sha-256`, true, func(c *core.DigestChallenge) bool {
			return c.Realm == `a"b` && c.Nonce == `n\1` && c.Stale && c.Algorithm == "SHA-256" && !c.HasOpaque
		}},
		{`digest nonce="n",realm="r",opaque="",qop=auth`, true, func(c *core.DigestChallenge) bool {
			return c.Realm == "r" && c.HasOpaque && c.Opaque == "" && len(c.QOP) == 1 && c.Algorithm == "MD5"
		}},
		{`Digest realm="r"`, false, nil},
		{`Basic realm="r"`, false, nil},
		{`Digest realm="r, nonce="n"`, false, nil},
		{`Digest realm="r" nonce="n"`, false, nil},
		{`Digest realm`, false, nil},
		{`Digest realm="r", nonce="n", qop="auth` + "\r\n" + `"`, false, nil},
		{`Digest realm="` + strings.Repeat("x", 5000) + `", nonce="n"`, false, nil},
	} {
		c, err := core.ParseDigestChallenge(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("%.60q: err %v", tc.in, err)
			continue
		}
		if tc.ok && !tc.check(c) {
			t.Errorf("%q parsed as %+v", tc.in, c)
		}
	}
	// A realm with a quote is re-quoted with escapes in the answer.
	c, _ := core.ParseDigestChallenge(`Digest realm="a\"b", nonce="n"`)
	v, err := c.Authorize(core.DigestCredentials{Username: "u", Password: "p"}, "REGISTER", "sip:x", 1, "c", nil)
	if err != nil || !strings.Contains(v, `realm="a\"b"`) {
		t.Errorf("%v %s", err, v)
	}
}

func TestPickDigestChallenge(t *testing.T) {
	c, err := core.PickDigestChallenge([]string{
		`Basic realm="x"`,
		`Digest realm="r", nonce="1", algorithm=MD5`,
		`Digest realm="r", nonce="2", algorithm=SHA-1024`,
		`Digest realm="r", nonce="3", algorithm=SHA-256`,
		`Digest realm="r", nonce="4", algorithm=SHA-256`,
	})
	if err != nil || c.Nonce != "3" {
		t.Errorf("picked %+v, %v", c, err)
	}
	if _, err := core.PickDigestChallenge([]string{`Basic realm="x"`}); err == nil {
		t.Errorf("no error without a digest challenge")
	}
	if _, err := core.PickDigestChallenge(nil); err == nil {
		t.Errorf("no error for nothing")
	}
}

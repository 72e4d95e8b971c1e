package auth_test

import (
	"strings"
	"testing"

	"github.com/kamgo/kamgo/modules/auth"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/moduletest"
)

// TestCoreDigestClientPasses checks kamd's digest client (core, used by
// uac) against this server side: what the client answers to auth's
// challenge is accepted, with each algorithm and qop auth offers.
func TestCoreDigestClientPasses(t *testing.T) {
	ha1 := auth.HA1("MD5", "alice", "example.com", "secret")
	for _, tc := range []struct {
		name  string
		alg   string
		flags int
		cred  core.DigestCredentials
		body  string
		want  int64
	}{
		{"MD5 no qop", "", 0, core.DigestCredentials{Username: "alice", Password: "secret"}, "", 1},
		{"MD5 qop auth", "", 1, core.DigestCredentials{Username: "alice", Password: "secret"}, "", 1},
		{"MD5 qop auth with HA1", "", 1, core.DigestCredentials{Username: "alice", HA1: ha1}, "", 1},
		{"MD5 auth-int", "", 2, core.DigestCredentials{Username: "alice", Password: "secret"}, "v=0\r\n", 1},
		{"SHA-256 qop auth", "SHA-256", 1, core.DigestCredentials{Username: "alice", Password: "secret"}, "", 1},
		{"SHA-256 auth-int", "SHA-256", 2, core.DigestCredentials{Username: "alice", Password: "secret"}, "v=0\r\n", 1},
		{"wrong password", "SHA-256", 1, core.DigestCredentials{Username: "alice", Password: "nope"}, "", -2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			params := map[string]core.Val{}
			if tc.alg != "" {
				params["algorithm"] = core.Str(tc.alg)
			}
			f := newFixture(t, params)
			_, res := f.challenge(register(), "auth_challenge", tc.flags)
			ch, err := core.ParseDigestChallenge(res.GetHeader("WWW-Authenticate").Value())
			if err != nil {
				t.Fatal(err)
			}
			v, err := ch.Authorize(tc.cred, "REGISTER", "sip:example.com", 1, "c0ffee42", []byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			hdrs := register("Authorization: " + v)
			if tc.body != "" {
				hdrs += "\nContent-Type: application/sdp"
			}
			m := moduletest.NewMsg(t, f.env, hdrs, tc.body)
			if rc := f.call(m, "pv_www_authenticate", core.Str("example.com"), core.Str("secret"), core.Int(0)); rc != tc.want {
				t.Errorf("pv_www_authenticate = %d, want %d (%s)", rc, tc.want, v)
			}
			if tc.want == 1 && !strings.Contains(v, "algorithm="+ch.Algorithm) {
				t.Errorf("algorithm not echoed: %s", v)
			}
		})
	}
}

package tests

// End-to-end tests of kamd's outbound registration (issue 9): kamd's uac
// module registers the rows of a uacreg table with the test registrar
// (uacreg_registrar_test.go) and the shared Kamailio registrar
// (uacreg_kamailio_test.go); everything is checked through
// `kamctl --json uac.reg_dump` and what the registrars received.

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestUACRegStateMachine runs every registrar behaviour at once, one row
// each, then the RPCs that change records (disable, enable, unregister,
// reload as a diff).
func TestUACRegStateMachine(t *testing.T) {
	reg := newTestRegistrar(t, nil)
	a := reg.Addr()
	users := map[string]regUser{
		"md5":     {Password: "pw", Algorithms: []string{"MD5"}},
		"sha256":  {Password: "pw", Algorithms: []string{"SHA-256"}},
		"sha512":  {Password: "pw", Algorithms: []string{"SHA-512-256"}},
		"stale":   {Password: "pw", StaleOnce: true},
		"proxy":   {Password: "pw", Proxy: true},
		"brief":   {MinExpires: 120},
		"forbid":  {Reply: 403},
		"nf":      {Reply: 404},
		"busy":    {Reply: 503},
		"decline": {Reply: 603},
		"tcp":     {Password: "pw", Algorithms: []string{"SHA-256"}},
		"wrongpw": {Password: "right"},
		"realm":   {Password: "pw"},
		"silent":  {NoAnswer: true},
		"grant":   {Grant: 6},
		"hdr":     {Grant: 7, GrantIn: "header"},
	}
	var rows []uacRow
	for name, u := range users {
		reg.SetUser(name, u)
		r := toRow(name, a)
		switch name {
		case "wrongpw":
			r.Password = "wrong"
		case "realm":
			r.Realm = "other.test"
		case "proxy", "md5":
			r.Expires = 3600 // no refresh while the test runs
		case "tcp":
			r.Proxy += ";transport=tcp"
		}
		rows = append(rows, r)
	}
	k := newUACKamd(t, "", rows...)

	for _, name := range []string{"md5", "sha256", "sha512", "stale", "proxy", "tcp"} {
		r := k.waitState(t, name, "registered", 10*time.Second)
		recs := reg.Records(name)
		last := recs[len(recs)-1]
		if last.Code != 200 || last.Auth != "ok" {
			t.Errorf("%s: the registrar's last REGISTER: %s", name, fmtRecords(recs))
		}
		if got := recInt(t, r, "last_code"); got != 200 {
			t.Errorf("%s: last_code %d, want 200", name, got)
		}
		if got := recInt(t, r, "failures"); got != 0 {
			t.Errorf("%s: failures %d, want 0 (stale=true is not a failure)", name, got)
		}
		if f := recInt(t, r, "flags"); f&4 == 0 || f&1 != 0 {
			t.Errorf("%s: flags %d, want ONLINE (4) set and DISABLED (1) clear", name, f)
		}
		if recStr(r, "call_id") != last.CallID || recInt(t, r, "cseq") != int64(last.CSeq) {
			t.Errorf("%s: call_id %v cseq %v, the registrar got %s / %d", name, r["call_id"], r["cseq"], last.CallID, last.CSeq)
		}
		if want := "<sip:" + name + "@127.0.0.1:"; !strings.HasPrefix(last.Contact, want) {
			t.Errorf("%s: Contact %q, want %s...>", name, last.Contact, want)
		}
		// One challenge, then one authenticated REGISTER with the same Call-ID and CSeq+1.
		n := 2
		if name == "stale" {
			n = 3
		}
		if len(recs) != n {
			t.Errorf("%s: %d REGISTERs, want %d: %s", name, len(recs), n, fmtRecords(recs))
		}
		for i := 1; i < len(recs); i++ {
			if recs[i].CallID != recs[0].CallID || recs[i].CSeq != recs[i-1].CSeq+1 {
				t.Errorf("%s: resubmission %d does not keep the Call-ID with CSeq+1: %s", name, i, fmtRecords(recs))
			}
		}
		if !strings.Contains(last.Authorization, "qop=auth") || !strings.Contains(last.Authorization, "nc=") {
			t.Errorf("%s: Authorization without qop=auth/nc: %s", name, last.Authorization)
		}
	}
	for _, rec := range reg.Records("tcp") {
		if rec.Transport != "TCP" {
			t.Errorf("tcp: auth_proxy has ;transport=tcp, REGISTER came over %s", rec.Transport)
		}
	}

	// 423: retried with Min-Expires, which becomes the record's expires.
	r := k.waitState(t, "brief", "registered", 10*time.Second)
	if got := recInt(t, r, "expires"); got != 120 {
		t.Errorf("brief: expires %d after 423 with Min-Expires 120", got)
	}
	if recs := reg.Records("brief"); len(recs) != 2 || recs[0].Code != 423 || recs[1].Expires != 120 {
		t.Errorf("brief: %s", fmtRecords(recs))
	}

	// Final failures: state failed with the code, counted, retried later.
	for name, code := range map[string]int64{"forbid": 403, "nf": 404, "busy": 503, "decline": 603, "wrongpw": 401} {
		r := k.waitState(t, name, "failed", 10*time.Second)
		if got := recInt(t, r, "last_code"); got != code {
			t.Errorf("%s: last_code %d, want %d", name, got, code)
		}
		if recInt(t, r, "failures") < 1 {
			t.Errorf("%s: failures %v, want >= 1", name, r["failures"])
		}
	}
	// A second challenge after our credentials is a failure, not a loop.
	if recs := reg.Records("wrongpw"); len(recs) < 2 || recs[1].Auth != "wrong response" {
		t.Errorf("wrongpw: %s", fmtRecords(recs))
	}
	r = k.waitState(t, "realm", "failed", 10*time.Second)
	if !strings.Contains(recStr(r, "last_reason"), "realms do not match") || !strings.Contains(recStr(r, "last_reason"), "uac.test") {
		t.Errorf("realm: last_reason %q, want Kamailio's \"realms do not match. requested realm: [uac.test]\"", recStr(r, "last_reason"))
	}
	if recs := reg.Records("realm"); len(recs) < 1 || recs[0].Authorization != "" || len(recs) > 1 && recs[1].Authorization != "" {
		t.Errorf("realm: credentials were sent for the wrong realm: %s", fmtRecords(recs))
	}
	// Backoff retries: the 403 row is tried again (reg_retry_interval 1).
	reg.WaitRecords(t, "forbid", 2, 10*time.Second)

	// Granted expiry from the Contact's ;expires, then from Expires: the
	// refresh comes before it runs out, and the record stays registered.
	for name, grant := range map[string]int64{"grant": 6, "hdr": 7} {
		r := k.waitState(t, name, "registered", 10*time.Second)
		if got := recInt(t, r, "granted_expires"); got != grant {
			t.Errorf("%s: granted_expires %d, want %d", name, got, grant)
		}
		if d := recInt(t, r, "timer_expires") - recInt(t, r, "last_attempt"); d < grant-1 || d > grant+1 {
			t.Logf("%s: timer_expires %v last_attempt %v", name, r["timer_expires"], r["last_attempt"])
		}
	}
	recs := reg.WaitRecords(t, "grant", 3, 20*time.Second)
	for i := 1; i < 3; i++ {
		gap := recs[i].At.Sub(recs[i-1].At)
		// The first refresh after a registration is spread over 10-75% of
		// the grant (at least 1 s), later ones come at 70%.
		least := 4 * time.Second
		if i == 1 {
			least = 900 * time.Millisecond
		}
		if gap < least || gap >= 6*time.Second {
			t.Errorf("grant: refresh %d came %v after the previous REGISTER; want before the 6s grant runs out, not on every tick: %s", i, gap, fmtRecords(recs))
		}
	}
	if r := k.dump(t)["grant"]; r["state"] != "registered" {
		t.Errorf("grant: state %v across refreshes", r["state"])
	}

	// Disable unregisters (Expires: 0) and enable registers again.
	n := reg.Count("md5")
	k.ctlOK(t, "uac.reg_disable", "l_uuid", "md5")
	k.waitState(t, "md5", "disabled", 10*time.Second)
	recs = reg.WaitRecords(t, "md5", n+1, 10*time.Second)
	if recs[n].Expires != 0 && recs[n].ContactExpires != 0 {
		t.Errorf("md5: disable sent no Expires: 0: %s", fmtRecords(recs[n:]))
	}
	waitNoBinding(t, reg, "md5")
	k.ctlOK(t, "uac.reg_enable", "l_uuid", "md5")
	k.waitState(t, "md5", "registered", 10*time.Second)
	if len(reg.Bindings("md5")) != 1 {
		t.Errorf("md5: re-enabled but bindings %v", reg.Bindings("md5"))
	}

	// reg_unregister: Expires: 0 now, the binding is gone.
	n = reg.Count("sha256")
	k.ctlOK(t, "uac.reg_unregister", "l_uuid", "sha256")
	recs = reg.WaitRecords(t, "sha256", n+1, 10*time.Second)
	if recs[n].Expires != 0 && recs[n].ContactExpires != 0 {
		t.Errorf("sha256: unregister sent %s", fmtRecords(recs[n:]))
	}
	waitNoBinding(t, reg, "sha256")
	k.waitRec(t, "sha256", 10*time.Second, "no longer registered", func(r map[string]any) bool {
		return r["state"] != "registered" && r["state"] != "unregistering"
	})

	// Errors as Kamailio's.
	wantRPCError(t, k.ctl(t, "uac.reg_info", "l_uuid", "nosuch"), 404)
	wantRPCError(t, k.ctl(t, "uac.reg_info", "color", "md5"), 400)

	// reload is a diff: the changed row re-registers, the removed one
	// unregisters, the new one registers, the others are left alone.
	before := k.dump(t)
	counts := map[string]int{}
	for name := range users {
		counts[name] = reg.Count(name)
	}
	reg.SetUser("newrow", regUser{})
	k.exec(t, `UPDATE uacreg SET expires = 90 WHERE l_uuid = 'stale'`)
	k.exec(t, `DELETE FROM uacreg WHERE l_uuid = 'sha512'`)
	k.insert(t, toRow("newrow", a))
	k.ctlOK(t, "uac.reg_reload")
	k.waitState(t, "newrow", "registered", 10*time.Second)
	// The changed row registers with its new expires (kamd may unregister
	// the old binding first).
	k.waitRec(t, "stale", 10*time.Second, "registered with expires 90", func(r map[string]any) bool {
		return r["state"] == "registered" && r["expires"] == jsonNum(90)
	})
	if recs := reg.Records("stale")[counts["stale"]:]; len(recs) == 0 || recs[len(recs)-1].Expires != 90 || recs[len(recs)-1].Code != 200 {
		t.Errorf("stale: after the reload: %s", fmtRecords(recs))
	}
	recs = reg.WaitRecords(t, "sha512", counts["sha512"]+1, 10*time.Second)
	if recs[counts["sha512"]].Expires != 0 {
		t.Errorf("sha512: removed by the reload but not unregistered: %s", fmtRecords(recs))
	}
	waitNoBinding(t, reg, "sha512")
	k.waitGone(t, "sha512", 10*time.Second)
	after := k.dump(t)
	for _, name := range []string{"proxy", "brief"} {
		if reg.Count(name) != counts[name] {
			t.Errorf("%s: unchanged by the reload but REGISTERed again: %s", name, fmtRecords(reg.Records(name)))
		}
		if after[name]["call_id"] != before[name]["call_id"] || after[name]["state"] != "registered" {
			t.Errorf("%s: unchanged by the reload, but call_id %v -> %v, state %v", name, before[name]["call_id"], after[name]["call_id"], after[name]["state"])
		}
	}

	// The registrar grants a longer expiry: the schedule follows it.
	n = reg.Count("grant")
	reg.SetUser("grant", regUser{Grant: 12})
	k.waitRec(t, "grant", 10*time.Second, "granted 12s", func(r map[string]any) bool { return r["granted_expires"] == jsonNum(12) })
	recs = reg.WaitRecords(t, "grant", n+2, 20*time.Second)
	if gap := recs[n+1].At.Sub(recs[n].At); gap < 6*time.Second || gap >= 12*time.Second {
		t.Errorf("grant: refresh %v after a 12s grant: %s", gap, fmtRecords(recs[n:]))
	}

	// No answer at all: tm's timeout is a 408, the record fails.
	r = k.waitState(t, "silent", "failed", 45*time.Second)
	if got := recInt(t, r, "last_code"); got != 408 {
		t.Errorf("silent: last_code %d, want 408", got)
	}
}

// jsonNum is n as decodeJSON decodes it.
func jsonNum(n int) json.Number { return json.Number(strconv.Itoa(n)) }

// waitNoBinding waits until the test registrar has no contact for user.
func waitNoBinding(t testing.TB, reg *testRegistrar, user string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(reg.Bindings(user)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still bound: %v %s", user, reg.Bindings(user), fmtRecords(reg.Records(user)))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

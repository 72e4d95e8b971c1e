package registrar_test

import (
	"fmt"
	"github.com/kamgo/kamgo/kamd/node"
	"github.com/kamgo/kamgo/starlark/routetest"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"

	_ "github.com/kamgo/kamgo/modules/all"
)

const script = `
modparam("registrar", "max_contacts", 2)
modparam("usrloc", "nat_bflag", 6)
modparam("registrar", "use_path", 1)

def ksr_request_route():
    if KSR.is_REGISTER():
        if KSR.hdr.is_present("X-NAT") > 0:
            KSR.setflag(6)
        flags = 0
        if KSR.hdr.is_present("X-Flags") > 0:
            flags = int(KSR.pv.get("$hdr(X-Flags)"))
        rc = KSR.registrar.save("location", flags)
        KSR.pv.sets("$var(rc)", str(rc))
        if flags & 2:
            KSR.sl.send_reply(299, "Saved " + str(rc))
        return
    if KSR.is_OPTIONS():
        KSR.pv.sets("$var(reg)", str(KSR.registrar.registered("location")))
        KSR.pv.sets("$var(fetch)", str(KSR.registrar.reg_fetch_contacts("location", "sip:alice@127.0.0.1", "p")))
        KSR.pv.sets("$var(addr)", str(KSR.pv.get("$ulc(p=>addr)")))
        KSR.pv.sets("$var(count)", str(KSR.pv.get("$ulc(p=>count)")))
        KSR.pv.sets("$var(second)", str(KSR.pv.get("$ulc(p=>addr=>1)")))
        KSR.sl.send_reply(200, "OK")
        return
    if KSR.is_MESSAGE():
        KSR.pv.sets("$var(un)", str(KSR.registrar.unregister("location", "sip:alice@127.0.0.1")))
        KSR.sl.send_reply(200, "OK")
        return
    KSR.pv.sets("$var(rc)", str(KSR.registrar.lookup("location")))
    KSR.sl.send_reply(200, "OK")
`

type harness struct {
	t   *testing.T
	h   *routetest.Harness
	seq int
}

func newHarness(t *testing.T) *harness {
	h, err := routetest.NewHarness(node.RouteTest, "route.star", []byte(script), routetest.HarnessOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return &harness{t: t, h: h}
}

func (x *harness) send(method, ruri string, hdrs ...string) (*routetest.Result, *core.Msg) {
	x.t.Helper()
	x.seq++
	text := fmt.Sprintf("%s %s SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-%d\nFrom: <sip:alice@127.0.0.1>;tag=f%d\nTo: <sip:alice@127.0.0.1>\nMax-Forwards: 70\n",
		method, ruri, x.seq, x.seq)
	has := func(name string) bool {
		for _, h := range hdrs {
			if strings.HasPrefix(strings.ToLower(h), strings.ToLower(name)+":") {
				return true
			}
		}
		return false
	}
	if !has("Call-ID") {
		text += fmt.Sprintf("Call-ID: c%d\n", x.seq)
	}
	if !has("CSeq") {
		text += fmt.Sprintf("CSeq: 1 %s\n", method)
	}
	text += strings.Join(hdrs, "\n") + "\n"
	msg, err := routetest.ParseMessage(text)
	if err != nil {
		x.t.Fatal(err)
	}
	r, err := x.h.Request(msg.(*sip.Request), "192.0.2.10:5060", "udp")
	if err != nil {
		x.t.Fatal(err)
	}
	if r.Error() != "" {
		x.t.Fatalf("script error: %s", r.Error())
	}
	return r, r.Msg
}

func reply(t *testing.T, r *routetest.Result) *sip.Response {
	t.Helper()
	rs := r.Of(core.OutReply)
	if len(rs) == 0 {
		t.Fatal("no reply")
	}
	return rs[len(rs)-1].Msg.(*sip.Response)
}

func pv(m *core.Msg, name string) string {
	p, _ := m.Env.ParsePV(name)
	return p.Get(m).String()
}

func TestSave(t *testing.T) {
	for _, c := range []struct {
		name     string
		before   [][]string // earlier REGISTERs' extra headers
		hdrs     []string
		code     int
		rc       string
		contacts int
		info     string
	}{
		{name: "insert", hdrs: []string{"Contact: <sip:alice@192.0.2.10>", "Expires: 300"}, code: 200, rc: "1", contacts: 1},
		{name: "update", before: [][]string{{"Call-ID: r", "CSeq: 1 REGISTER", "Contact: <sip:alice@192.0.2.10>"}},
			hdrs: []string{"Call-ID: r", "CSeq: 2 REGISTER", "Contact: <sip:alice@192.0.2.10>"}, code: 200, rc: "2", contacts: 1},
		{name: "lower cseq", before: [][]string{{"Call-ID: r", "CSeq: 5 REGISTER", "Contact: <sip:alice@192.0.2.10>"}},
			hdrs: []string{"Call-ID: r", "CSeq: 4 REGISTER", "Contact: <sip:alice@192.0.2.10>"}, code: 400, rc: "-1", info: "Invalid CSeq number"},
		{name: "delete by param", before: [][]string{{"Contact: <sip:alice@192.0.2.10>"}},
			hdrs: []string{"Contact: <sip:alice@192.0.2.10>;expires=0"}, code: 200, rc: "3", contacts: 0},
		{name: "query", before: [][]string{{"Contact: <sip:alice@192.0.2.10>"}}, hdrs: nil, code: 200, rc: "4", contacts: 1},
		{name: "star needs expires 0", hdrs: []string{"Contact: *", "Expires: 10"}, code: 400, rc: "-1", info: "expires not zero"},
		{name: "star with contacts", hdrs: []string{"Contact: *, <sip:a@b>", "Expires: 0"}, code: 400, rc: "-1"},
		{name: "too many", before: [][]string{{"Contact: <sip:alice@192.0.2.10>, <sip:alice@192.0.2.11>"}},
			hdrs: []string{"Contact: <sip:alice@192.0.2.12>"}, code: 503, rc: "-2", info: "Too many registered contacts"},
		{name: "replace", before: [][]string{{"Contact: <sip:alice@192.0.2.10>, <sip:alice@192.0.2.11>"}},
			hdrs: []string{"Contact: <sip:alice@192.0.2.12>", "X-Flags: 4"}, code: 200, rc: "1", contacts: 1},
		{name: "no reply", hdrs: []string{"Contact: <sip:alice@192.0.2.12>", "X-Flags: 2"}, code: 299, rc: "1"},
		{name: "bad q", hdrs: []string{"Contact: <sip:alice@192.0.2.12>;q=2"}, code: 400, rc: "-1"},
		{name: "min expires raised", hdrs: []string{"Contact: <sip:alice@192.0.2.12>;expires=5"}, code: 200, rc: "1", contacts: 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			x := newHarness(t)
			for _, b := range c.before {
				r, _ := x.send("REGISTER", "sip:127.0.0.1", b...)
				if code := reply(t, r).StatusCode; code != 200 {
					t.Fatalf("setup REGISTER: %d", code)
				}
			}
			r, m := x.send("REGISTER", "sip:127.0.0.1", c.hdrs...)
			res := reply(t, r)
			if res.StatusCode != c.code {
				t.Fatalf("code %d, want %d\n%s", res.StatusCode, c.code, res)
			}
			if got := pv(m, "$var(rc)"); got != c.rc {
				t.Errorf("save() = %s, want %s", got, c.rc)
			}
			if c.code == 200 {
				if got := len(res.GetHeaders("Contact")); got != c.contacts {
					t.Errorf("%d Contacts in the reply, want %d\n%s", got, c.contacts, res)
				}
			}
			if c.info != "" {
				if h := res.GetHeader("P-Registrar-Error"); h == nil || !strings.Contains(h.Value(), c.info) {
					t.Errorf("P-Registrar-Error: %v, want %q", h, c.info)
				}
			}
			if c.name == "min expires raised" {
				if v := res.GetHeader("Contact").Value(); !strings.HasSuffix(v, ";expires=60") {
					t.Errorf("Contact %s: want expires raised to min_expires", v)
				}
			}
		})
	}
}

func TestLookupQAndNAT(t *testing.T) {
	x := newHarness(t)
	x.send("REGISTER", "sip:127.0.0.1", "Contact: <sip:alice@10.0.0.1:5062>;q=0.2")
	x.send("REGISTER", "sip:127.0.0.1", "Contact: <sip:alice@10.0.0.2:5064>;q=0.9", "X-NAT: 1")
	r, m := x.send("INVITE", "sip:alice@127.0.0.1")
	if pv(m, "$var(rc)") != "1" {
		t.Fatalf("lookup = %s", pv(m, "$var(rc)"))
	}
	if got := m.Req.Recipient.String(); got != "sip:alice@10.0.0.2:5064" {
		t.Errorf("R-URI %s: want the q=0.9 contact", got)
	}
	if m.DstURI != "sip:192.0.2.10:5060" {
		t.Errorf("$du %q: want the REGISTER's source (nat_bflag)", m.DstURI)
	}
	if m.Flags&(1<<6) == 0 {
		t.Error("lookup did not set nat_bflag")
	}
	// append_branches (default 1): the other contact joins the destination set.
	want := []core.Branch{{URI: "sip:alice@10.0.0.1:5062", Q: 200}}
	if len(m.Branches) != 1 || m.Branches[0] != want[0] {
		t.Errorf("branches %+v, want %+v", m.Branches, want)
	}
	_ = r
	_, m = x.send("INVITE", "sip:nobody@127.0.0.1")
	if pv(m, "$var(rc)") != "-1" {
		t.Errorf("unknown AoR: lookup = %s", pv(m, "$var(rc)"))
	}
	_, m = x.send("OPTIONS", "sip:alice@127.0.0.1")
	for k, want := range map[string]string{"$var(reg)": "1", "$var(fetch)": "1", "$var(addr)": "sip:alice@10.0.0.2:5064", "$var(count)": "2", "$var(second)": "sip:alice@10.0.0.1:5062"} {
		if got := pv(m, k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	_, m = x.send("MESSAGE", "sip:alice@127.0.0.1")
	if pv(m, "$var(un)") != "1" {
		t.Errorf("unregister = %s", pv(m, "$var(un)"))
	}
	_, m = x.send("OPTIONS", "sip:alice@127.0.0.1")
	if pv(m, "$var(reg)") != "-1" || pv(m, "$var(fetch)") != "-1" {
		t.Errorf("after unregister: registered %s fetch %s", pv(m, "$var(reg)"), pv(m, "$var(fetch)"))
	}
}

// Issue 16: a Contact holding a bare LF (or NUL, or anything that does not
// re-parse to itself) is refused 400, never stored nor echoed.
func TestSaveRefusesBadContact(t *testing.T) {
	head := "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1\r\nFrom: <sip:alice@127.0.0.1>;tag=f1\r\nTo: <sip:alice@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\n"
	for _, tc := range []struct{ name, hdrs, info string }{
		{"bare LF in URI param", "Contact: <sip:alice@192.0.2.10;x=\nX-Injected: yes>\r\n", "Bad Contact URI"},
		{"NUL in URI param", "Contact: <sip:alice@192.0.2.10;x=a\x00b>\r\n", "Bad Contact URI"},
		{"bare LF in header param", "Contact: <sip:alice@192.0.2.10>;x=\"\nX-Injected: yes\"\r\n", "Bad Contact URI"},
		{"quote in URI param", "Contact: <sip:alice@192.0.2.10;x=\"a>\r\n", "Bad Contact URI"},
		{"bad Path", "Contact: <sip:alice@192.0.2.10>\r\nPath: <sip:p@192.0.2.1;lr>;x=\"\nX: y\"\r\n", "Error while parsing Path"},
		// sipgo parses these as Routes, but kamd would write them back
		// malformed: a quote inside the URI, an unterminated quoted string,
		// a backslash in a token.
		{"quote in Path URI", "Contact: <sip:alice@192.0.2.10>\r\nPath: <sip:p1@10.0.0.1;lr;x=\">\r\n", "Error while parsing Path"},
		{"unterminated quote in Path param", "Contact: <sip:alice@192.0.2.10>\r\nPath: <sip:p1@10.0.0.1;lr>;evil=\"x\\\r\n", "Error while parsing Path"},
		{"backslash in Path param", "Contact: <sip:alice@192.0.2.10>\r\nPath: <sip:p1@10.0.0.1;lr>;x=a\\b\r\n", "Error while parsing Path"},
		{"second Path element bad", "Contact: <sip:alice@192.0.2.10>\r\nPath: <sip:p1@10.0.0.1;lr>, <sip:p2@10.0.0.2;lr;x=\">\r\n", "Error while parsing Path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newHarness(t)
			msg, err := sip.NewParser().ParseSIP([]byte(head + tc.hdrs + "Content-Length: 0\r\n\r\n"))
			if err != nil {
				t.Skipf("sipgo refuses it already: %v", err)
			}
			r, err := x.h.Request(msg.(*sip.Request), "192.0.2.10:5060", "udp")
			if err != nil {
				t.Fatal(err)
			}
			res := reply(t, r)
			if res.StatusCode != 400 {
				t.Fatalf("code %d, want 400\n%s", res.StatusCode, res)
			}
			if h := res.GetHeader("P-Registrar-Error"); h == nil || h.Value() != tc.info {
				t.Errorf("P-Registrar-Error %v, want %q", h, tc.info)
			}
			if text := res.String(); strings.Contains(text, "X-Injected") || strings.Contains(text, "Contact:") {
				t.Errorf("reply echoes the contact:\n%q", text)
			}
			_, m := x.send("OPTIONS", "sip:alice@127.0.0.1")
			if got := pv(m, "$var(reg)"); got != "-1" {
				t.Errorf("registered = %s: the contact was stored", got)
			}
		})
	}
}

// Every param of the 200's Contacts goes through core.AppendParam: a
// well-formed instance and received come back as they were registered.
func TestSaveReplyParams(t *testing.T) {
	x := newHarness(t)
	r, _ := x.send("REGISTER", "sip:127.0.0.1", `Contact: <sip:alice@192.0.2.10;ob>;+sip.instance="<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>";reg-id=1;q=0.5`, "X-NAT: 1")
	res := reply(t, r)
	if res.StatusCode != 200 {
		t.Fatalf("code %d\n%s", res.StatusCode, res)
	}
	want := `<sip:alice@192.0.2.10;ob>;expires=3600;q=0.5;received="sip:192.0.2.10:5060";+sip.instance="<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>";reg-id=1`
	if got := res.GetHeader("Contact").Value(); got != want {
		t.Errorf("Contact %s\nwant    %s", got, want)
	}
}

// A Contact param holding a quoted space, with LWS around "=", is valid
// (RFC 3261 EQUAL, quoted-string): the door hands it over unquoted
// (core.NormalizeParams) and the registrar still accepts it.
func TestSaveAcceptsQuotedSpaceParam(t *testing.T) {
	x := newHarness(t)
	r, _ := x.send("REGISTER", "sip:127.0.0.1", `Contact: <sip:alice@192.0.2.10>;p="x y";expires = 60`)
	if res := reply(t, r); res.StatusCode != 200 {
		t.Fatalf("code %d\n%s", res.StatusCode, res)
	}
}

// With use_path, each branch of a forked lookup carries its own contact's
// Path as Route, not the R-URI contact's.
func TestLookupBranchesKeepTheirPath(t *testing.T) {
	src := strings.Replace(script, `def ksr_request_route():`, `modparam("registrar", "use_path", 1)

def ksr_request_route():`, 1)
	src = strings.Replace(src, `    KSR.pv.sets("$var(rc)", str(KSR.registrar.lookup("location")))
    KSR.sl.send_reply(200, "OK")`, `    KSR.pv.sets("$var(rc)", str(KSR.registrar.lookup("location")))
    KSR.tm.t_relay()`, 1)
	h, err := routetest.NewHarness(node.RouteTest, "route.star", []byte(src), routetest.HarnessOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	x := &harness{t: t, h: h}
	x.send("REGISTER", "sip:127.0.0.1", "Contact: <sip:alice@10.0.0.1:5062>;q=0.9", "Path: <sip:edge1@10.9.0.1;lr>")
	x.send("REGISTER", "sip:127.0.0.1", "Contact: <sip:alice@10.0.0.2:5064>;q=0.5", "Path: <sip:edge2@10.9.0.2;lr>")
	r, _ := x.send("INVITE", "sip:alice@127.0.0.1")
	var got []string
	for _, s := range r.Of(core.OutBranch) {
		var routes []string
		for _, h := range s.Msg.(*sip.Request).GetHeaders("Route") {
			routes = append(routes, h.Value())
		}
		got = append(got, s.Dst.String()+" "+strings.Join(routes, ","))
	}
	want := []string{"udp:10.9.0.1:5060 <sip:edge1@10.9.0.1;lr>", "udp:10.9.0.2:5060 <sip:edge2@10.9.0.2;lr>"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("branches %q, want %q", got, want)
	}
}

// Each branch of lookup's destination set gets its own contact's cflags as
// branch flags, replacing the message's (Kamailio's setbflagsval(0, ...)
// and append_branch with the contact's flags): a NATed contact's branch
// is marked, a public one is not, whichever is the R-URI.
func TestLookupBranchFlagsPerContact(t *testing.T) {
	x := newHarness(t)
	x.send("REGISTER", "sip:127.0.0.1", "Contact: <sip:alice@10.0.0.1:5062>;q=0.2", "X-NAT: 1")
	x.send("REGISTER", "sip:127.0.0.1", "Contact: <sip:alice@10.0.0.2:5064>;q=0.9")
	_, m := x.send("INVITE", "sip:alice@127.0.0.1")
	if got := m.Req.Recipient.String(); got != "sip:alice@10.0.0.2:5064" {
		t.Fatalf("R-URI %s: want the q=0.9 contact", got)
	}
	if m.BFlags&(1<<6) != 0 {
		t.Errorf("$bf %d: the public R-URI contact has no nat_bflag", m.BFlags)
	}
	if len(m.Branches) != 1 || m.Branches[0].BFlags&(1<<6) == 0 {
		t.Errorf("branches %+v: want the NATed contact's branch with nat_bflag", m.Branches)
	}
}

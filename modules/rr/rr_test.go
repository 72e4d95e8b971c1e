package rr_test

import (
	"errors"
	"strings"
	"testing"

	mt "github.com/kamgo/kamgo/modules/moduletest"

	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/rr"
)

func rrValues(m *core.Msg) []string {
	var out []string
	for _, h := range core.FindHeaders(m.Req, "Record-Route") {
		out = append(out, h.Value())
	}
	return out
}

func routeValues(m *core.Msg) []string {
	var out []string
	for _, h := range core.FindHeaders(m.Req, "Route") {
		out = append(out, h.Value())
	}
	return out
}

func TestRecordRoute(t *testing.T) {
	withRR := mt.Invite + "\nRecord-Route: <sip:10.0.0.9;lr>"
	for _, tc := range []struct {
		name   string
		msg    string
		setup  func(m *core.Msg)
		before []string // add_rr_param before record_route
		after  []string // add_rr_param after
		params string   // record_route_params
		want   []string
	}{
		{name: "single udp", msg: mt.Invite,
			want: []string{"<sip:127.0.0.1:5060;lr;ftag=ftag1>"}},
		{name: "before existing RR", msg: withRR,
			want: []string{"<sip:127.0.0.1:5060;lr;ftag=ftag1>", "<sip:10.0.0.9;lr>"}},
		{name: "params before and after", msg: mt.Invite, before: []string{";a=1"}, after: []string{"b"},
			want: []string{"<sip:127.0.0.1:5060;lr;ftag=ftag1;a=1;b>"}},
		{name: "record_route_params", msg: mt.Invite, params: ";nat=yes",
			want: []string{"<sip:127.0.0.1:5060;lr;ftag=ftag1;nat=yes>"}},
		{name: "double rr udp to tcp", msg: mt.Invite,
			setup: func(m *core.Msg) { m.DstURI = "sip:192.0.2.99:5080;transport=tcp" },
			want:  []string{"<sip:127.0.0.1:5060;transport=tcp;r2=on;lr;ftag=ftag1>", "<sip:127.0.0.1:5060;r2=on;lr;ftag=ftag1>"}},
		{name: "no socket for next hop: single", msg: mt.Invite,
			setup: func(m *core.Msg) { m.DstURI = "sip:192.0.2.99:5080;transport=tls" },
			want:  []string{"<sip:127.0.0.1:5060;lr;ftag=ftag1>"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, _ := mt.NewEnv()
			mod := rr.New(env)
			m := mt.NewMsg(t, env, tc.msg, "")
			if tc.setup != nil {
				tc.setup(m)
			}
			for _, p := range tc.before {
				mt.MustInt(t, mod, m, "add_rr_param", mt.S(p))
			}
			var ret int64
			if tc.params != "" {
				ret = mt.MustInt(t, mod, m, "record_route_params", mt.S(tc.params))
			} else {
				ret = mt.MustInt(t, mod, m, "record_route")
			}
			if ret != 1 {
				t.Fatalf("record_route = %d", ret)
			}
			for _, p := range tc.after {
				mt.MustInt(t, mod, m, "add_rr_param", mt.S(p))
			}
			got := rrValues(m)
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("RR = %q\nwant %q", got, tc.want)
			}
			if mt.MustInt(t, mod, m, "record_route") != -1 {
				t.Fatal("second record_route should fail")
			}
		})
	}
}

func TestRecordRouteRejectsInjection(t *testing.T) {
	env, _ := mt.NewEnv()
	mod := rr.New(env)
	m := mt.NewMsg(t, env, mt.Invite, "")
	if _, err := mt.Call(t, mod, m, "add_rr_param", mt.S(";a=1\r\nX-Evil: 1")); err == nil {
		t.Fatal("CRLF accepted")
	}
	if _, err := mt.Call(t, mod, m, "record_route_params", mt.S(";a=<x>")); err == nil {
		t.Fatal("'<' accepted")
	}
}

const inDialog = `BYE sip:bob@192.0.2.20:5090 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-2
From: <sip:alice@example.com>;tag=ftag1
To: <sip:bob@example.com>;tag=ttag
Call-ID: call-1@192.0.2.10
CSeq: 2 BYE
Max-Forwards: 70`

func TestLooseRoute(t *testing.T) {
	for _, tc := range []struct {
		name      string
		msg       string
		want      int64
		wantDU    string
		wantRURI  string
		wantRoute []string
		checkRE   string
		checkWant int64
		dir       string
	}{
		{name: "no route", msg: inDialog, want: -1, wantRURI: "sip:bob@192.0.2.20:5090"},
		{name: "ours only, in-dialog", msg: inDialog + "\nRoute: <sip:127.0.0.1:5060;lr;ftag=ftag1;nat=yes>",
			want: 1, wantRURI: "sip:bob@192.0.2.20:5090", checkRE: "NAT=yes", checkWant: 1, dir: "downstream"},
		{name: "ours then next loose", msg: inDialog + "\nRoute: <sip:127.0.0.1:5060;lr;ftag=other>,<sip:10.0.0.2;lr>",
			want: 1, wantDU: "sip:10.0.0.2;lr", wantRURI: "sip:bob@192.0.2.20:5090", wantRoute: []string{"<sip:10.0.0.2;lr>"},
			checkRE: "^;nat", checkWant: -1, dir: "upstream"},
		{name: "escaped ftag, downstream", msg: strings.Replace(inDialog, "tag=ftag1", "tag=a`b%c", 1) + "\nRoute: <sip:127.0.0.1:5060;lr;ftag=a%60b%25c>",
			want: 1, wantRURI: "sip:bob@192.0.2.20:5090", dir: "downstream"},
		{name: "escaped ftag, upstream", msg: strings.Replace(inDialog, "tag=ftag1", "tag=a`b", 1) + "\nRoute: <sip:127.0.0.1:5060;lr;ftag=a%60b%25c>",
			want: 1, wantRURI: "sip:bob@192.0.2.20:5090", dir: "upstream"},
		{name: "double rr both removed", msg: inDialog + "\nRoute: <sip:127.0.0.1:5060;r2=on;lr>\nRoute: <sip:127.0.0.1:5060;transport=tcp;r2=on;lr>\nRoute: <sip:10.0.0.2;lr>",
			want: 1, wantDU: "sip:10.0.0.2;lr", wantRURI: "sip:bob@192.0.2.20:5090", wantRoute: []string{"<sip:10.0.0.2;lr>"}},
		{name: "next is strict router", msg: inDialog + "\nRoute: <sip:127.0.0.1:5060;lr>,<sip:10.0.0.3>",
			want: 1, wantRURI: "sip:10.0.0.3", wantRoute: []string{"<sip:bob@192.0.2.20:5090>"}},
		{name: "top route not ours", msg: inDialog + "\nRoute: <sip:10.0.0.2;lr>",
			want: 1, wantDU: "sip:10.0.0.2;lr", wantRURI: "sip:bob@192.0.2.20:5090", wantRoute: []string{"<sip:10.0.0.2;lr>"}, checkRE: ".", checkWant: -1},
		{name: "preloaded ours only", msg: strings.Replace(inDialog, ";tag=ttag", "", 1) + "\nRoute: <sip:127.0.0.1;lr>",
			want: -3, wantRURI: "sip:bob@192.0.2.20:5090"},
		{name: "strict router before us", msg: strings.Replace(inDialog, "BYE sip:bob@192.0.2.20:5090", "BYE sip:127.0.0.1:5060;lr;ftag=ftag1", 1) +
			"\nRoute: <sip:10.0.0.2;lr>\nRoute: <sip:bob@192.0.2.20:5090>",
			want: 1, wantDU: "sip:10.0.0.2;lr", wantRURI: "sip:bob@192.0.2.20:5090", wantRoute: []string{"<sip:10.0.0.2;lr>"}, checkRE: "ftag=ftag1", checkWant: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, _ := mt.NewEnv()
			mod := rr.New(env)
			m := mt.NewMsg(t, env, tc.msg, "")
			if got := mt.MustInt(t, mod, m, "loose_route"); got != tc.want {
				t.Fatalf("loose_route = %d, want %d", got, tc.want)
			}
			if m.DstURI != tc.wantDU {
				t.Errorf("$du = %q, want %q", m.DstURI, tc.wantDU)
			}
			if got := m.Req.Recipient.String(); got != tc.wantRURI {
				t.Errorf("R-URI = %q, want %q", got, tc.wantRURI)
			}
			if got := routeValues(m); strings.Join(got, "|") != strings.Join(tc.wantRoute, "|") {
				t.Errorf("Route = %q, want %q", got, tc.wantRoute)
			}
			if tc.checkRE != "" {
				if got := mt.MustInt(t, mod, m, "check_route_param", mt.S(tc.checkRE)); got != tc.checkWant {
					t.Errorf("check_route_param(%q) = %d, want %d", tc.checkRE, got, tc.checkWant)
				}
			}
			if tc.dir != "" {
				if got := mt.MustInt(t, mod, m, "is_direction", mt.S(tc.dir)); got != 1 {
					t.Errorf("is_direction(%q) = %d", tc.dir, got)
				}
				other := map[string]string{"upstream": "downstream", "downstream": "upstream"}[tc.dir]
				if got := mt.MustInt(t, mod, m, "is_direction", mt.S(other)); got != -1 {
					t.Errorf("is_direction(%q) = %d", other, got)
				}
			}
		})
	}
}

func TestCheckRouteParamBadRegex(t *testing.T) {
	env, _ := mt.NewEnv()
	mod := rr.New(env)
	m := mt.NewMsg(t, env, inDialog+"\nRoute: <sip:127.0.0.1;lr;x=1>", "")
	_, err := mt.Call(t, mod, m, "check_route_param", mt.S("(unclosed"))
	if err == nil || !strings.Contains(err.Error(), "(unclosed") {
		t.Fatalf("want error naming the regex, got %v", err)
	}
	if _, err := mt.Call(t, mod, m, "is_direction", mt.S("sideways")); err == nil {
		t.Fatal("is_direction accepted a bad direction")
	}
}

func TestScriptLooseRouteAndRecordRoute(t *testing.T) {
	src := `
def ksr_request_route(msg):
    if KSR.siputils.has_totag() > 0:
        if KSR.rr.loose_route() > 0:
            KSR.forward()
        return
    KSR.rr.record_route()
    KSR.forward()
`
	// In-dialog: routed to the next Route via $du.
	env, rec := mt.NewEnv()
	m := mt.NewMsg(t, env, inDialog+"\nRoute: <sip:127.0.0.1:5060;lr>,<sip:10.0.0.2:5070;lr>", "")
	mt.RunScript(t, env, src, m)
	out := rec.All()
	if len(out) != 1 || out[0].Kind != core.OutForward || out[0].Dst.String() != "udp:10.0.0.2:5070" {
		t.Fatalf("in-dialog: want forward to udp:10.0.0.2:5070, got %+v", out)
	}
	if !strings.Contains(out[0].Text, "Route: <sip:10.0.0.2:5070;lr>\r\n") || strings.Contains(out[0].Text, "127.0.0.1:5060;lr>") {
		t.Fatalf("in-dialog: our Route must be gone, next kept:\n%s", out[0].Text)
	}
	// Initial: Record-Route on the forwarded request.
	env, rec = mt.NewEnv()
	m = mt.NewMsg(t, env, mt.Invite, "")
	mt.RunScript(t, env, src, m)
	out = rec.All()
	if len(out) != 1 || !strings.Contains(out[0].Text, "Record-Route: <sip:127.0.0.1:5060;lr;ftag=ftag1>\r\n") {
		t.Fatalf("initial: want RR on forwarded request, got %+v", out)
	}
}

// Issue 16: a From tag that is not a token must never reach ;ftag= (it
// added a Record-Route hop of the attacker's choice); the request is
// answered 400 "Bad From tag" and the script ends.
func TestRecordRouteBadFromTag(t *testing.T) {
	for _, tc := range []struct {
		name, from string
		bad        bool
		want       string // the Record-Route written when not bad
	}{
		{"angle injection", "From: <sip:alice@127.0.0.1>;tag=a>,<sip:evil@203.0.113.9;lr", true, ""},
		{"quoted injection", `From: <sip:alice@127.0.0.1>;tag="x>,<sip:evil@203.0.113.9;lr>"`, true, ""},
		{"quoted tag", `From: <sip:alice@127.0.0.1>;tag="abc"`, true, ""},
		{"token tag", "From: <sip:alice@127.0.0.1>;tag=a.b-c_d!e~f*g+h'i", false, "<sip:127.0.0.1:5060;lr;ftag=a.b-c_d!e~f*g+h'i>"},
		// RFC 4475 intmeth's tag: a token, but '`' and a bare '%' may not stand in a URI.
		{"token tag escaped", "From: <sip:alice@127.0.0.1>;tag=_token~1'+`*%!-.", false, "<sip:127.0.0.1:5060;lr;ftag=_token~1'+%60*%25!-.>"},
		{"no tag", "From: <sip:alice@127.0.0.1>", false, "<sip:127.0.0.1:5060;lr>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, rec := mt.NewEnv()
			mod := rr.New(env)
			msg := strings.Replace(mt.Invite, `From: "Alice" <sip:alice@example.com>;tag=ftag1`, tc.from, 1)
			m := mt.NewMsg(t, env, msg, "")
			v, err := mt.Call(t, mod, m, "record_route")
			if !tc.bad {
				if err != nil || v.Int != 1 {
					t.Fatalf("record_route = %v, %v", v, err)
				}
				if got := rrValues(m); len(got) != 1 || got[0] != tc.want {
					t.Fatalf("RR %q, want %q", got, tc.want)
				}
				return
			}
			if !errors.Is(err, core.ErrExit) {
				t.Fatalf("record_route = %v, %v: want the script ended", v, err)
			}
			if got := rrValues(m); len(got) != 0 {
				t.Fatalf("Record-Route written: %q", got)
			}
			sent := rec.All()
			if len(sent) != 1 || !strings.HasPrefix(sent[0].Text, "SIP/2.0 400 Bad From tag\r\n") {
				t.Fatalf("sent %q, want one 400 Bad From tag", sent)
			}
			if strings.Contains(sent[0].Text, "Record-Route") {
				t.Fatalf("400 carries a Record-Route:\n%s", sent[0].Text)
			}
		})
	}
	// append_fromtag off: the tag is not written, so nothing to refuse.
	env, _ := mt.NewEnv()
	mod := rr.New(env)
	mt.SetParam(t, mod, "append_fromtag", mt.I(0))
	m := mt.NewMsg(t, env, strings.Replace(mt.Invite, "tag=ftag1", "tag=a>,<sip:evil@203.0.113.9;lr", 1), "")
	if v := mt.MustInt(t, mod, m, "record_route"); v != 1 {
		t.Fatalf("append_fromtag 0: record_route = %d", v)
	}
	if got := rrValues(m); len(got) != 1 || got[0] != "<sip:127.0.0.1:5060;lr>" {
		t.Fatalf("append_fromtag 0: RR %q", got)
	}
}

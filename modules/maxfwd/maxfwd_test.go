package maxfwd_test

import (
	"strings"
	"testing"

	mt "github.com/kamgo/kamgo/modules/moduletest"

	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/maxfwd"
)

func TestProcessMaxfwd(t *testing.T) {
	noMF := strings.Replace(mt.Invite, "Max-Forwards: 70", "Subject: x", 1)
	for _, tc := range []struct {
		name     string
		msg      string
		limit    int
		maxLimit int
		want     int64
		wantHdr  string // Max-Forwards after the call ("" = absent)
		wantRpl  string // start of a sent reply
	}{
		{"decrement", mt.Invite, 10, 0, 1, "69", ""},
		{"added", noMF, 10, 0, 2, "10", ""},
		{"zero replies 483", strings.Replace(mt.Invite, "Max-Forwards: 70", "Max-Forwards: 0", 1), 10, 0, -1, "0", "SIP/2.0 483 Too Many Hops"},
		{"zero ACK not answered", strings.NewReplacer("Max-Forwards: 70", "Max-Forwards: 0", "INVITE sip", "ACK sip", "1 INVITE", "1 ACK").Replace(mt.Invite), 10, 0, -1, "0", ""},
		{"max_limit lowers", mt.Invite, 10, 16, 1, "16", ""},
		{"one goes to zero", strings.Replace(mt.Invite, "Max-Forwards: 70", "Max-Forwards: 1", 1), 10, 0, 1, "0", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, rec := mt.NewEnv()
			mod := maxfwd.New(env)
			if tc.maxLimit > 0 {
				mt.SetParam(t, mod, "max_limit", mt.I(tc.maxLimit))
			}
			m := mt.NewMsg(t, env, tc.msg, "")
			if got := mt.MustInt(t, mod, m, "process_maxfwd", mt.I(tc.limit)); got != tc.want {
				t.Fatalf("ret = %d, want %d", got, tc.want)
			}
			h := core.FirstHeader(m.Req, "Max-Forwards")
			if tc.wantHdr == "" && h != nil || tc.wantHdr != "" && (h == nil || h.Value() != tc.wantHdr) {
				t.Fatalf("Max-Forwards = %v, want %q", h, tc.wantHdr)
			}
			if mf := m.Req.MaxForwards(); tc.wantHdr != "" && (mf == nil || mf.Value() != tc.wantHdr) {
				t.Fatalf("typed Max-Forwards = %v, want %q", mf, tc.wantHdr)
			}
			out := rec.All()
			if tc.wantRpl == "" && len(out) != 0 {
				t.Fatalf("unexpected send: %q", out[0].Text)
			}
			if tc.wantRpl != "" && (len(out) != 1 || !strings.HasPrefix(out[0].Text, tc.wantRpl)) {
				t.Fatalf("sent %v, want %q", out, tc.wantRpl)
			}
		})
	}
}

func TestProcessMaxfwdGeneric(t *testing.T) {
	env, _ := mt.NewEnv()
	mod := maxfwd.New(env)
	m := mt.NewMsg(t, env, strings.Replace(mt.Invite, "\nMax-Forwards: 70", "", 1), "")
	hs, _ := core.ParseHeaderText("X-A: 1\r\n")
	m.Req.AppendHeader(hs[0])
	// A script-supplied bogus value is "unparsable".
	m.Req.AppendHeader(genericMF("abc"))
	if got := mt.MustInt(t, mod, m, "process_maxfwd", mt.I(10)); got != -2 {
		t.Fatalf("ret %d, want -2", got)
	}
	if got := mt.MustInt(t, mod, m, "is_maxfwd_lt", mt.I(10)); got != -3 {
		t.Fatalf("is_maxfwd_lt ret %d, want -3", got)
	}
	if _, err := mt.Call(t, mod, m, "process_maxfwd", mt.I(300)); err == nil {
		t.Fatal("limit 300 accepted")
	}
}

func TestIsMaxfwdLt(t *testing.T) {
	env, _ := mt.NewEnv()
	mod := maxfwd.New(env)
	for _, tc := range []struct {
		msg  string
		n    int
		want int64
	}{
		{mt.Invite, 71, 1},
		{mt.Invite, 70, -1},
		{strings.Replace(mt.Invite, "Max-Forwards: 70", "Subject: x", 1), 10, -2},
	} {
		m := mt.NewMsg(t, env, tc.msg, "")
		if got := mt.MustInt(t, mod, m, "is_maxfwd_lt", mt.I(tc.n)); got != tc.want {
			t.Errorf("is_maxfwd_lt(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
}

func TestScript483(t *testing.T) {
	env, rec := mt.NewEnv()
	m := mt.NewMsg(t, env, strings.Replace(mt.Invite, "Max-Forwards: 70", "Max-Forwards: 0", 1), "")
	mt.RunScript(t, env, `
def ksr_request_route(msg):
    if KSR.maxfwd.process_maxfwd(10) < 0:
        return
    KSR.forward()
`, m)
	out := rec.All()
	if len(out) != 1 || out[0].Kind != core.OutReply || !strings.HasPrefix(out[0].Text, "SIP/2.0 483 Too Many Hops") {
		t.Fatalf("want one 483 reply, got %+v", out)
	}
}

func TestScriptForwardDecremented(t *testing.T) {
	env, rec := mt.NewEnv()
	m := mt.NewMsg(t, env, mt.Invite, "")
	mt.RunScript(t, env, `
def ksr_request_route(msg):
    if KSR.maxfwd.process_maxfwd(10) < 0:
        return
    KSR.forward()
`, m)
	out := rec.All()
	if len(out) != 1 || out[0].Kind != core.OutForward || !strings.Contains(out[0].Text, "Max-Forwards: 69\r\n") {
		t.Fatalf("want forward with Max-Forwards 69, got %+v", out)
	}
}

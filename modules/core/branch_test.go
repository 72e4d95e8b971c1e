package core_test

import (
	"strings"
	"testing"

	"github.com/kamgo/kamgo/modules/core"
)

func TestParseQ(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		bad  bool
	}{
		{"", -1, false}, {"1", 1000, false}, {"1.0", 1000, false}, {"0.5", 500, false}, {"0.25", 250, false},
		{"0.125", 125, false}, {"0", 0, false}, {" 0.7 ", 700, false},
		{"1.5", 0, true}, {"2", 0, true}, {"0.1234", 0, true}, {"x", 0, true}, {".5", 0, true}, {"0,5", 0, true},
	} {
		got, err := core.ParseQ(tc.in)
		if (err != nil) != tc.bad || (!tc.bad && got != tc.want) {
			t.Errorf("ParseQ(%q) = %d, %v; want %d (error %v)", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

// corexFn runs one corex (or core "") function on m.
func corexFn(t *testing.T, m *core.Msg, mod, name string, args ...core.Val) core.Val {
	t.Helper()
	for _, f := range core.BuildModules(m.Env) {
		if f.Name != mod {
			continue
		}
		for _, fn := range f.Funcs {
			if fn.Name == name {
				v, err := fn.Fn(m, args)
				if err != nil {
					t.Fatalf("%s.%s: %v", mod, name, err)
				}
				return v
			}
		}
	}
	t.Fatalf("no %s.%s", mod, name)
	return core.Null
}

func TestAppendBranch(t *testing.T) {
	m := request(t, invite)
	m.DstURI = "sip:10.0.0.9:5080"
	if v := corexFn(t, m, "corex", "append_branch"); v.Int != 1 {
		t.Fatalf("append_branch: %v", v)
	}
	if v := corexFn(t, m, "corex", "append_branch_uri_q", core.Str("sip:carol@10.0.0.3"), core.Str("0.5")); v.Int != 1 {
		t.Fatalf("append_branch_uri_q: %v", v)
	}
	want := []core.Branch{
		{URI: "sip:bob@example.com:5070;transport=tcp", DstURI: "sip:10.0.0.9:5080", Q: -1},
		{URI: "sip:carol@10.0.0.3", Q: 500},
	}
	if len(m.Branches) != 2 || m.Branches[0] != want[0] || m.Branches[1] != want[1] {
		t.Errorf("branches %+v, want %+v", m.Branches, want)
	}
	for _, bad := range [][2]string{{"sip:x@h\r\nX: y", "1"}, {"http://example.com", "1"}, {"sip:ok@h", "2"}} {
		if v := corexFn(t, m, "corex", "append_branch_uri_q", core.Str(bad[0]), core.Str(bad[1])); v.Int != -1 {
			t.Errorf("append_branch_uri_q(%q, %q) = %v, want -1", bad[0], bad[1], v)
		}
	}
	for len(m.Branches) < core.MaxBranches-1 {
		if err := m.AppendBranch(core.Branch{URI: "sip:x@h", Q: -1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.AppendBranch(core.Branch{URI: "sip:x@h"}); err == nil || !strings.Contains(err.Error(), "full") {
		t.Errorf("a 13th destination: %v", err)
	}
	m.ClearBranches()
	if len(m.Branches) != 0 {
		t.Error("ClearBranches left branches")
	}
}

func TestCorexTests(t *testing.T) {
	m := request(t, invite)
	if v := corexFn(t, m, "corex", "has_user_agent"); v.Int != 1 {
		t.Errorf("has_user_agent with one: %v", v)
	}
	if v := corexFn(t, m, "corex", "has_ruri_user"); v.Int != 1 {
		t.Errorf("has_ruri_user on bob@: %v", v)
	}
	m2 := request(t, strings.Replace(strings.Replace(invite, "User-Agent: phone/1.0\r\n", "", 1), "sip:bob@example.com:5070", "sip:example.com:5070", 1))
	if v := corexFn(t, m2, "corex", "has_user_agent"); v.Int != -1 {
		t.Errorf("has_user_agent without one: %v", v)
	}
	if v := corexFn(t, m2, "corex", "has_ruri_user"); v.Int != -1 {
		t.Errorf("has_ruri_user without a user: %v", v)
	}
}

func TestSendData(t *testing.T) {
	m := request(t, invite)
	s := m.Env.Sender.(*nopSender)
	msg := "OPTIONS sip:gw@10.0.0.5 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\nFrom: <sip:k@h>;tag=1\r\nTo: <sip:gw@10.0.0.5>\r\nCall-ID: sd1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
	if v := corexFn(t, m, "corex", "send_data", core.Str("sip:10.0.0.5:5070"), core.Str(msg)); v.Int != 1 {
		t.Fatalf("send_data: %v", v)
	}
	if len(s.out) != 1 || s.out[0].Dst.String() != "udp:10.0.0.5:5070" || s.out[0].Kind != core.OutLocalRequest {
		t.Errorf("sent %+v", s.out)
	}
	for _, bad := range [][2]string{{"sip:10.0.0.5", "not sip"}, {"nosuch", msg}, {"sip:127.0.0.1:5060", msg}} {
		if v := corexFn(t, m, "corex", "send_data", core.Str(bad[0]), core.Str(bad[1])); v.Int != -1 {
			t.Errorf("send_data(%q) = %v, want -1", bad[0], v)
		}
	}
}

func TestIsMyselfFromTo(t *testing.T) {
	raw := strings.Replace(strings.Replace(invite, "<sip:alice@example.com>", "<sip:alice@127.0.0.1>", 1), "To: <sip:bob@example.com>", "To: <sip:bob@127.0.0.1:5070>", 1)
	m := request(t, raw)
	if v := corexFn(t, m, "", "is_myself_furi"); v.Int != 1 {
		t.Errorf("is_myself_furi on alice@127.0.0.1: %v", v)
	}
	if v := corexFn(t, m, "", "is_myself_turi"); v.Int != 0 {
		t.Errorf("is_myself_turi on a port kamd does not listen on: %v", v)
	}
	m.DstURI = "sip:127.0.0.1:5060"
	if v := corexFn(t, m, "", "is_myself_duri"); v.Int != 1 {
		t.Errorf("is_myself_duri: %v", v)
	}
	if v := corexFn(t, m, "", "is_myself_nhuri"); v.Int != 1 {
		t.Errorf("is_myself_nhuri with $du to us: %v", v)
	}
	m.DstURI = ""
	if v := corexFn(t, m, "", "is_myself_nhuri"); v.Int != 0 {
		t.Errorf("is_myself_nhuri to example.com: %v", v)
	}
	m2 := request(t, invite)
	if v := corexFn(t, m2, "", "is_myself_furi"); v.Int != 0 {
		t.Errorf("is_myself_furi on example.com: %v", v)
	}
}

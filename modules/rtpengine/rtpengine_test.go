package rtpengine

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestBencodeRoundTrip(t *testing.T) {
	in := map[string]any{"command": "offer", "flags": []string{"trust-address", "symmetric"},
		"TOS": int64(184), "received-from": []string{"IP4", "10.0.0.1"}, "sdp": "v=0\r\n"}
	b, err := Encode(nil, in)
	if err != nil {
		t.Fatal(err)
	}
	// Keys sorted, strings length-prefixed, integers i...e.
	want := "d3:TOSi184e7:command5:offer5:flagsl13:trust-address9:symmetrice13:received-froml3:IP48:10.0.0.1e3:sdp5:v=0\r\ne"
	if string(b) != want {
		t.Fatalf("encode:\n got %q\nwant %q", b, want)
	}
	out, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	wantOut := map[string]any{"command": "offer", "flags": []any{"trust-address", "symmetric"},
		"TOS": int64(184), "received-from": []any{"IP4", "10.0.0.1"}, "sdp": "v=0\r\n"}
	if !reflect.DeepEqual(out, wantOut) {
		t.Errorf("decode: %#v", out)
	}
}

func TestBencodeMalformed(t *testing.T) {
	for _, s := range []string{"", "d", "l", "i12", "ie", "i1x2e", "5:abc", "-1:a", "d3:keye", "di1e1:ae",
		"d6:result2:oke trailing", strings.Repeat("l", 100) + strings.Repeat("e", 100), "x"} {
		if _, err := Decode([]byte(s)); !errors.Is(err, ErrBencode) {
			t.Errorf("Decode(%q): %v, want ErrBencode", s, err)
		}
	}
	v, err := Decode([]byte("d6:result4:ponge"))
	if err != nil || v.(map[string]any)["result"] != "pong" {
		t.Errorf("pong: %v %v", v, err)
	}
}

func TestParseFlags(t *testing.T) {
	cases := []struct {
		op, in string
		want   map[string]any
		newOp  string
	}{
		{"offer", "replace-origin replace-session-connection", map[string]any{"replace": []string{"origin", "session-connection"}}, "offer"},
		{"offer", "trust-address ICE=remove RTP/AVP internal direction=external",
			map[string]any{"flags": []string{"trust-address"}, "ICE": "remove", "transport-protocol": "RTP/AVP", "direction": []string{"internal", "external"}}, "offer"},
		{"offer", "SRTP AVPF", map[string]any{"transport-protocol": "RTP/SAVPF"}, "offer"},
		{"offer", "RTP/SAVP rtcp-mux-demux TOS=184 delete-delay=5 repacketize=20",
			map[string]any{"transport-protocol": "RTP/SAVP", "rtcp-mux": []string{"demux"}, "TOS": int64(184), "delete delay": int64(5), "delete-delay": "5", "repacketize": int64(20)}, "offer"},
		{"offer", "force-answer", map[string]any{}, "answer"},
		{"delete", "", map[string]any{}, "delete"},
		{"offer", "  UDP/TLS/RTP/SAVPF  ", map[string]any{"transport-protocol": "UDP/TLS/RTP/SAVPF"}, "offer"},
	}
	for _, c := range cases {
		op := c.op
		f, err := parseFlags(c.in, &op)
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if !reflect.DeepEqual(f.dict, c.want) || op != c.newOp {
			t.Errorf("%q: %#v op %s, want %#v op %s", c.in, f.dict, op, c.want, c.newOp)
		}
	}
	op := "offer"
	f, _ := parseFlags("call-id=abc from-tag=ft to-tag=tt via-branch=1", &op)
	if f.callID != "abc" || f.fromTag != "ft" || f.toTag != "tt" || f.via != 1 || !f.to {
		t.Errorf("overrides: %+v", f)
	}
	for _, bad := range []string{"call-id", "from-tag", "via-branch=x", "repacketize=0"} {
		op := "offer"
		if _, err := parseFlags(bad, &op); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
	op = "answer"
	if _, err := parseFlags("force-answer", &op); err == nil {
		t.Error("force-answer in answer: want an error")
	}
}

func TestParseSock(t *testing.T) {
	ns, err := parseSock("udp:127.0.0.1:2223 udp:127.0.0.1:2224=3; 2 == udp6:[::1]:2225", 0)
	if err != nil {
		t.Fatal(err)
	}
	got := []string{}
	for _, n := range ns {
		got = append(got, n.url+"/"+string(rune('0'+n.set))+"/"+string(rune('0'+n.weight))+"/"+string(rune('0'+n.index)))
	}
	want := []string{"udp:127.0.0.1:2223/0/1/0", "udp:127.0.0.1:2224/0/3/1", "udp6:[::1]:2225/2/1/2"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v want %v", got, want)
	}
	for _, bad := range []string{"127.0.0.1:2223", "unix:/run/rtpengine.sock", "udp:127.0.0.1", "udp:h:0", "x == udp:a:1", "1 == ", "udp:a:1=x"} {
		if _, err := parseSock(bad, 0); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

func TestRtpstat(t *testing.T) {
	d := map[string]any{"totals": map[string]any{
		"RTP":  map[string]any{"bytes": int64(1720), "packets": int64(10), "errors": int64(0)},
		"RTCP": map[string]any{"bytes": int64(0), "packets": int64(0), "errors": int64(0)}}}
	if got := rtpstat(d); got != "RTP: 1720 bytes, 10 packets, 0 errors; RTCP: 0 bytes, 0 packets, 0 errors" {
		t.Error(got)
	}
}

// selectNode is Kamailio's: (sum of the Call-ID's bytes & 0xff) modulo
// the total weight of the enabled engines, walked in order; tried and
// permanently disabled engines are left out (no network: all enabled).
func TestSelectNodeWeights(t *testing.T) {
	r := &RTPE{calls: map[string]callEntry{}}
	r.queriedLimit.Store(30)
	ns, err := parseSock("udp:127.0.0.1:1=1 udp:127.0.0.1:2=3; 1 == udp:127.0.0.1:3", 0)
	if err != nil {
		t.Fatal(err)
	}
	r.nodes = ns
	sum := func(s string) int {
		n := 0
		for i := 0; i < len(s); i++ {
			n += int(s[i])
		}
		return n & 0xff
	}
	for _, cid := range []string{"a", "b", "c", "d", "call-1@host", "xyz"} {
		want := ns[0]
		if sum(cid)%4 >= 1 {
			want = ns[1]
		}
		if got := r.selectNode(0, cid, nil); got != want {
			t.Errorf("%q (sum %d): got %s, want %s", cid, sum(cid), got.url, want.url)
		}
		// The other engine when the first choice was tried.
		other := ns[1]
		if want == ns[1] {
			other = ns[0]
		}
		if got := r.selectNode(0, cid, []*node{want}); got != other {
			t.Errorf("%q after %s failed: got %v", cid, want.url, got)
		}
		if got := r.selectNode(1, cid, nil); got != ns[2] {
			t.Errorf("set 1: %v", got)
		}
	}
	// A call stays on its engine.
	r.calls["a"] = callEntry{n: ns[1]}
	if got := r.selectNode(0, "a", nil); got != ns[1] {
		t.Errorf("bound call: %v", got.url)
	}
	// Permanently disabled engines are never chosen.
	ns[0].disabled, ns[0].permanent = true, true
	for _, cid := range []string{"b", "c", "d"} {
		if got := r.selectNode(0, cid, nil); got != ns[1] {
			t.Errorf("%q with engine 1 disabled: %v", cid, got.url)
		}
	}
	if got := r.selectNode(0, "b", []*node{ns[1]}); got != nil {
		t.Errorf("nothing left: %v", got.url)
	}
	if got := r.selectNode(7, "b", nil); got != nil {
		t.Errorf("no such set: %v", got.url)
	}
}

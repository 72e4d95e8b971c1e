package nathelper_test

import (
	"strings"
	"testing"

	"github.com/kamgo/kamgo/modules/core"
	mt "github.com/kamgo/kamgo/modules/moduletest"
	"github.com/kamgo/kamgo/modules/nathelper"
)

const sdpPriv = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:4001 IN IP4 10.0.0.5\r\n"
const sdpSrc = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
const sdpPublic = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"

// invite builds an INVITE received over UDP from 192.0.2.10:5070 with the
// given top Via sent-by and Contact host:port.
func invite(t *testing.T, env *core.Env, via, contact, sdp string) *core.Msg {
	hdrs := "INVITE sip:bob@example.com SIP/2.0\n" +
		"Via: SIP/2.0/UDP " + via + ";branch=z9hG4bK1\n" +
		"From: <sip:alice@example.com>;tag=1\nTo: <sip:bob@example.com>\n" +
		"Call-ID: c1\nCSeq: 1 INVITE\nContact: <sip:alice@" + contact + ">\nMax-Forwards: 70"
	if sdp != "" {
		hdrs += "\nContent-Type: application/sdp"
	}
	return mt.NewMsg(t, env, hdrs, sdp)
}

// Each nat_uac_test bit on a message that trips only it, and on one that
// trips none (the UA on the public source address it talks from).
func TestNatUACTestPerBit(t *testing.T) {
	env, _ := mt.NewEnv()
	mod := nathelper.New(env)
	clean := func() *core.Msg { return invite(t, env, "192.0.2.10:5070", "192.0.2.10:5070", sdpSrc) }
	cases := []struct {
		flag int
		name string
		hit  func() *core.Msg
	}{
		{1, "Contact private", func() *core.Msg { return invite(t, env, "192.0.2.10:5070", "10.0.0.5:5070", sdpSrc) }},
		{1, "Contact private RFC 6598", func() *core.Msg { return invite(t, env, "192.0.2.10:5070", "100.64.1.1:5070", sdpSrc) }},
		{2, "Via host differs from source", func() *core.Msg { return invite(t, env, "198.51.100.7:5070", "192.0.2.10:5070", sdpSrc) }},
		{4, "Via private", func() *core.Msg { return invite(t, env, "192.168.1.2:5070", "192.0.2.10:5070", sdpSrc) }},
		{8, "SDP private", func() *core.Msg { return invite(t, env, "192.0.2.10:5070", "192.0.2.10:5070", sdpPriv) }},
		{16, "Via port differs from source port", func() *core.Msg { return invite(t, env, "192.0.2.10:5060", "192.0.2.10:5070", sdpSrc) }},
		{16, "Via without port is 5060", func() *core.Msg { return invite(t, env, "192.0.2.10", "192.0.2.10:5070", sdpSrc) }},
		{32, "source private", func() *core.Msg {
			m := clean()
			m.SrcIP = "172.16.3.4"
			m.Req.Via().Host = "172.16.3.4"
			m.Req.Contact().Address.Host = "172.16.3.4"
			m.Req.SetBody([]byte(strings.ReplaceAll(sdpSrc, "192.0.2.10", "172.16.3.4")))
			return m
		}},
		{64, "WebSocket", func() *core.Msg { m := clean(); m.Proto = "ws"; return m }},
		{128, "Contact port differs from source port", func() *core.Msg { return invite(t, env, "192.0.2.10:5070", "192.0.2.10:5080", sdpSrc) }},
		{256, "SDP address differs from source", func() *core.Msg { return invite(t, env, "192.0.2.10:5070", "192.0.2.10:5070", sdpPublic) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := mt.MustInt(t, mod, c.hit(), "nat_uac_test", mt.I(c.flag)); got != 1 {
				t.Errorf("flag %d on the tripping message: %d, want 1", c.flag, got)
			}
			if got := mt.MustInt(t, mod, clean(), "nat_uac_test", mt.I(c.flag)); got != -1 {
				t.Errorf("flag %d on a clean message: %d, want -1", c.flag, got)
			}
			// Other bits do not see what trips this one (each test is its own).
			if others := 511 &^ c.flag &^ 64; c.flag != 32 {
				if got := mt.MustInt(t, mod, c.hit(), "nat_uac_test", mt.I(others&^otherHits(c.flag))); got != -1 {
					t.Errorf("flags %d (not %d) hit: %d", others&^otherHits(c.flag), c.flag, got)
				}
			}
		})
	}
	if _, err := mt.Call(t, mod, clean(), "nat_uac_test", mt.I(1024)); err == nil {
		t.Error("nat_uac_test(1024): want an error for an unknown bit")
	}
	// The example script's 19 (1|2|16) on a UA behind NAT.
	if got := mt.MustInt(t, mod, invite(t, env, "10.0.0.5:5060", "10.0.0.5:5060", ""), "nat_uac_test", mt.I(19)); got != 1 {
		t.Errorf("nat_uac_test(19) behind NAT: %d", got)
	}
}

// otherHits: bits that look at the same thing as flag and so trip together.
func otherHits(flag int) int {
	switch flag {
	case 1:
		return 0
	case 2, 4:
		return 2 | 4 // a private Via host also differs from the source
	case 8, 256:
		return 8 | 256
	case 16, 128:
		return 0
	}
	return 0
}

func TestIsRFC1918(t *testing.T) {
	env, _ := mt.NewEnv()
	mod := nathelper.New(env)
	m := invite(t, env, "192.0.2.10:5070", "192.0.2.10:5070", "")
	for ip, want := range map[string]int64{"10.1.2.3": 1, "172.16.0.1": 1, "172.31.255.255": 1, "172.32.0.1": -1,
		"192.168.0.1": 1, "100.64.0.1": 1, "100.127.255.254": 1, "100.128.0.1": -1, "192.0.0.1": 1,
		"8.8.8.8": -1, "127.0.0.1": -1, "fd00::1": 1, "2001:db8::1": -1, "example.com": -1} {
		if got := mt.MustInt(t, mod, m, "is_rfc1918", mt.S(ip)); got != want {
			t.Errorf("is_rfc1918(%s) = %d, want %d", ip, got, want)
		}
	}
}

func TestFixNatedContactAndRegister(t *testing.T) {
	env, _ := mt.NewEnv()
	mod := nathelper.New(env)
	m := invite(t, env, "10.0.0.5:5060", "10.0.0.5:5060", "")
	if mt.MustInt(t, mod, m, "fix_nated_contact") != 1 {
		t.Fatal("fix_nated_contact")
	}
	if got := m.Req.Contact().Address.String(); got != "sip:alice@192.0.2.10:5070" {
		t.Errorf("Contact %q", got)
	}
	if mt.MustInt(t, mod, m, "fix_nated_register") != -1 {
		t.Error("fix_nated_register on an INVITE: want -1")
	}
	reg := mt.NewMsg(t, env, "REGISTER sip:example.com SIP/2.0\nVia: SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bK2\nFrom: <sip:alice@example.com>;tag=1\nTo: <sip:alice@example.com>\nCall-ID: r1\nCSeq: 1 REGISTER\nContact: <sip:alice@10.0.0.5:5060;transport=tcp>", "")
	reg.Proto = "tcp"
	if mt.MustInt(t, mod, reg, "fix_nated_register") != 1 {
		t.Fatal("fix_nated_register")
	}
	if got := reg.Ext["registrar:received"]; got != "sip:192.0.2.10:5070;transport=tcp" {
		t.Errorf("received %v", got)
	}
	if mt.MustInt(t, mod, reg, "add_rcv_param", mt.I(0)) != 1 {
		t.Fatal("add_rcv_param")
	}
	if got := reg.Req.Contact().Value(); !strings.Contains(got, `;received="sip:192.0.2.10:5070;transport=tcp"`) {
		t.Errorf("add_rcv_param(0): Contact %q", got)
	}
	reg2 := invite(t, env, "10.0.0.5:5060", "10.0.0.5:5060", "")
	mt.MustInt(t, mod, reg2, "add_rcv_param", mt.I(1))
	if got := reg2.Req.Contact().Address.String(); got != "sip:alice@10.0.0.5:5060;received=sip:192.0.2.10:5070" {
		t.Errorf("add_rcv_param(1): Contact URI %q", got)
	}
}

func TestContactAlias(t *testing.T) {
	env, _ := mt.NewEnv()
	mod := nathelper.New(env)
	m := invite(t, env, "10.0.0.5:5060", "10.0.0.5:5060", "")
	if got := mt.MustInt(t, mod, m, "add_contact_alias"); got != 1 {
		t.Fatalf("add_contact_alias: %d", got)
	}
	c := m.Req.Contact().Address.String()
	if c != "sip:alice@10.0.0.5:5060;alias=192.0.2.10~5070~1" {
		t.Fatalf("Contact %q", c)
	}
	if got := mt.MustInt(t, mod, m, "add_contact_alias"); got != 2 {
		t.Errorf("second add_contact_alias: %d, want 2", got)
	}
	same := invite(t, env, "192.0.2.10:5070", "192.0.2.10:5070;transport=udp", "")
	if got := mt.MustInt(t, mod, same, "add_contact_alias"); got != 2 {
		t.Errorf("add_contact_alias with the Contact at the source: %d, want 2", got)
	}
	// As Kamailio: a Contact without ;transport never equals the source.
	noTP := invite(t, env, "192.0.2.10:5070", "192.0.2.10:5070", "")
	if got := mt.MustInt(t, mod, noTP, "add_contact_alias"); got != 1 {
		t.Errorf("add_contact_alias, Contact without transport: %d, want 1", got)
	}
	if got := mt.MustInt(t, mod, same, "set_contact_alias"); got != 1 {
		t.Errorf("set_contact_alias not needed: %d, want 1", got)
	}
	// An in-dialog request to that Contact: handle_ruri_alias routes to the alias.
	bye := mt.NewMsg(t, env, "BYE "+c+" SIP/2.0\nVia: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK3\nFrom: <sip:bob@example.com>;tag=2\nTo: <sip:alice@example.com>;tag=1\nCall-ID: c1\nCSeq: 2 BYE", "")
	if got := mt.MustInt(t, mod, bye, "handle_ruri_alias"); got != 1 {
		t.Fatalf("handle_ruri_alias: %d", got)
	}
	if bye.DstURI != "sip:192.0.2.10:5070" || bye.Req.Recipient.String() != "sip:alice@10.0.0.5:5060" {
		t.Errorf("$du %q, R-URI %q", bye.DstURI, bye.Req.Recipient.String())
	}
	if got := mt.MustInt(t, mod, bye, "handle_ruri_alias"); got != 2 {
		t.Errorf("handle_ruri_alias without alias: %d, want 2", got)
	}
	tcp := mt.NewMsg(t, env, "BYE sip:a@10.0.0.5;alias=192.0.2.9~5099~2 SIP/2.0\nVia: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK3\nFrom: <sip:bob@example.com>;tag=2\nTo: <sip:alice@example.com>;tag=1\nCall-ID: c1\nCSeq: 2 BYE", "")
	mt.MustInt(t, mod, tcp, "handle_ruri_alias")
	if tcp.DstURI != "sip:192.0.2.9:5099;transport=tcp" {
		t.Errorf("tcp alias: $du %q", tcp.DstURI)
	}
	bad := mt.NewMsg(t, env, "BYE sip:a@10.0.0.5;alias=192.0.2.9~x~2 SIP/2.0\nVia: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK3\nFrom: <sip:bob@example.com>;tag=2\nTo: <sip:alice@example.com>;tag=1\nCall-ID: c1\nCSeq: 2 BYE", "")
	if got := mt.MustInt(t, mod, bad, "handle_ruri_alias"); got != -1 {
		t.Errorf("bad alias: %d, want -1", got)
	}
}

func TestFixNatedSDP(t *testing.T) {
	cases := []struct {
		flags int
		in    string
		want  []string // lines that must be there
		gone  []string
		ret   int64
	}{
		{2, sdpPriv, []string{"c=IN IP4 192.0.2.10", "o=- 1 1 IN IP4 10.0.0.5", "a=rtcp:4001 IN IP4 192.0.2.10", "a=oldmediaip:10.0.0.5"}, []string{"c=IN IP4 10.0.0.5"}, 1},
		{8, sdpPriv, []string{"o=- 1 1 IN IP4 192.0.2.10", "c=IN IP4 10.0.0.5", "a=oldmediaip:10.0.0.5"}, nil, 1},
		{1, sdpPriv, []string{"a=direction:active"}, nil, 2}, // lines added, no address: 2 as Kamailio
		{4, sdpPriv, []string{"a=nortpproxy:yes"}, nil, 2},
		{2, sdpSrc, nil, nil, 2},
		{2, strings.ReplaceAll(sdpPriv, "c=IN IP4 10.0.0.5", "c=IN IP4 0.0.0.0"), []string{"c=IN IP4 0.0.0.0"}, nil, 1},
	}
	for _, c := range cases {
		env, _ := mt.NewEnv()
		mod := nathelper.New(env)
		m := invite(t, env, "10.0.0.5:5060", "10.0.0.5:5060", c.in)
		if got := mt.MustInt(t, mod, m, "fix_nated_sdp", mt.I(c.flags)); got != c.ret {
			t.Errorf("fix_nated_sdp(%d): %d, want %d", c.flags, got, c.ret)
		}
		body := string(m.Req.Body())
		if c.flags&5 != 0 && !strings.HasSuffix(body, "a=direction:active\r\n") && !strings.HasSuffix(body, "a=nortpproxy:yes\r\n") {
			t.Errorf("fix_nated_sdp(%d): the added line is not at the end (as Kamailio):\n%s", c.flags, body)
		}
		for _, w := range c.want {
			if !strings.Contains(body, w+"\r\n") {
				t.Errorf("fix_nated_sdp(%d): no %q in\n%s", c.flags, w, body)
			}
		}
		for _, g := range c.gone {
			if strings.Contains(body, g+"\r\n") {
				t.Errorf("fix_nated_sdp(%d): %q still in\n%s", c.flags, g, body)
			}
		}
		if cl := m.Req.ContentLength(); cl == nil || int(*cl) != len(body) {
			t.Errorf("Content-Length %v for %d bytes", cl, len(body))
		}
	}
	env, _ := mt.NewEnv()
	mod := nathelper.New(env)
	if got := mt.MustInt(t, mod, invite(t, env, "a", "b", ""), "fix_nated_sdp", mt.I(2)); got != -1 {
		t.Errorf("no SDP: %d", got)
	}
	m := invite(t, env, "10.0.0.5:5060", "10.0.0.5:5060", sdpPriv)
	mt.MustInt(t, mod, m, "fix_nated_sdp_ip", mt.I(2), mt.S("203.0.113.9"))
	if !strings.Contains(string(m.Req.Body()), "c=IN IP4 203.0.113.9\r\n") {
		t.Errorf("fix_nated_sdp_ip: %s", m.Req.Body())
	}
}

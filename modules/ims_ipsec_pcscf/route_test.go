package ims_ipsec_pcscf

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	_ "github.com/kamgo/kamgo/modules/sl"
	_ "github.com/kamgo/kamgo/modules/tm"
	"github.com/kamgo/kamgo/starlark"
	"github.com/kamgo/kamgo/starlark/routetest"
)

// routeRec records what the script sends, with the forced local socket.
type routeRec struct{ sent []routeSent }

type routeSent struct {
	kind    core.OutKind
	dst     string
	local   string
	arrival string // Outgoing.Arrival: where a UDP reply leaves without local
	msg     sip.Message
}

func (r *routeRec) Send(o *core.Outgoing) error {
	var sb strings.Builder
	o.Msg.StringWrite(&sb)
	msg, err := sip.NewParser().ParseSIP([]byte(sb.String()))
	if err != nil {
		return err
	}
	s := routeSent{kind: o.Kind, dst: o.Dst.String(), msg: msg}
	if o.LocalSocket != nil {
		s.local = o.LocalSocket.String()
	}
	if o.Arrival != nil {
		s.arrival = o.Arrival.String()
	}
	r.sent = append(r.sent, s)
	return nil
}

type pcscf struct {
	t   *testing.T
	env *core.Env
	eng *starlark.Engine
	rec *routeRec
	k   *FakeKernel
	mod *core.Module
}

// newPCSCF loads examples/ims_pcscf/route.star with the in-memory kernel
// and the route-test socket stand-in (sockets only listed).
func newPCSCF(t *testing.T, params map[string]core.Val) *pcscf {
	t.Helper()
	src, err := os.ReadFile("../../examples/ims_pcscf/route.star")
	if err != nil {
		t.Fatal(err)
	}
	return newPCSCFSrc(t, params, src)
}

// newPCSCFSrc is newPCSCF with another script.
func newPCSCFSrc(t *testing.T, params map[string]core.Val, src []byte) *pcscf {
	t.Helper()
	k := NewFakeKernel()
	old := newKernel
	newKernel = func() Kernel { return k }
	t.Cleanup(func() { newKernel = old })
	p := &pcscf{t: t, rec: &routeRec{}, k: k}
	p.env = core.NewEnv(p.rec)
	p.env.Clock = routetest.NewFixedClock(routetest.RouteTestEpoch)
	p.env.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	p.env.SetSockets([]core.Socket{{Proto: "udp", IP: "10.99.0.1", Port: 5060}, {Proto: "tcp", IP: "10.99.0.1", Port: 5060}})
	p.env.SocketManager = fakeSockets{p.env}
	p.eng = starlark.New(p.env)
	if _, err := p.eng.Load("route.star", src); err != nil {
		t.Fatal(err)
	}
	p.mod = p.env.Module(Name)
	for n, v := range params {
		setParam(t, p.mod, n, v)
	}
	if err := p.mod.Init(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.mod.Stop)
	return p
}

func (p *pcscf) do(f func()) []routeSent {
	i := len(p.rec.sent)
	f()
	return p.rec.sent[i:]
}

func (p *pcscf) request(raw, src string, local core.Socket) []routeSent {
	p.t.Helper()
	ip, port := core.HostPort(src)
	m := &core.Msg{Env: p.env, Req: parse(p.t, raw).(*sip.Request), Proto: local.Proto, SrcIP: ip, SrcPort: port, Local: local}
	return p.do(func() { p.eng.HandleRequest(m) })
}

// answer replies to a branch kamd sent, as the S-CSCF at 127.0.0.2:6060.
func (p *pcscf) answer(to routeSent, status, extra string) []routeSent {
	p.t.Helper()
	req := to.msg.(*sip.Request)
	var b strings.Builder
	b.WriteString("SIP/2.0 " + status + "\n")
	for _, h := range req.GetHeaders("Via") {
		b.WriteString("Via: " + h.Value() + "\n")
	}
	for _, n := range []string{"From", "To", "Call-ID", "CSeq"} {
		b.WriteString(n + ": " + req.GetHeader(n).Value() + "\n")
	}
	b.WriteString(extra)
	m := &core.Msg{Env: p.env, Res: parse(p.t, b.String()).(*sip.Response), Proto: "udp", SrcIP: "127.0.0.2", SrcPort: 6060,
		Local: core.Socket{Proto: "udp", IP: "10.99.0.1", Port: 5060}}
	return p.do(func() { p.eng.HandleReply(m) })
}

func of(o []routeSent, k core.OutKind) []routeSent {
	var r []routeSent
	for _, s := range o {
		if s.kind == k {
			r = append(r, s)
		}
	}
	return r
}

func ueRegister(ue string, port int, cseq int, extra string) string {
	return fmt.Sprintf(`REGISTER sip:ims.example SIP/2.0
Via: SIP/2.0/UDP %s:%d;branch=z9hG4bKr%d
From: <sip:alice@ims.example>;tag=a1
To: <sip:alice@ims.example>
Call-ID: reg-%s
CSeq: %d REGISTER
Max-Forwards: 70
Contact: <sip:alice@%s:%d>
%s`, ue, port, cseq, ue, cseq, ue, port, extra)
}

var plain5060 = core.Socket{Proto: "udp", IP: "10.99.0.1", Port: 5060}

// TestExampleScript runs the README's P-CSCF script: the 401 carries
// Security-Server and no ck/ik, the protected REGISTER is verified, its 200
// leaves port_pc for port_us, a request from the core reaches the UE from
// port_pc, plaintext to a protected port is dropped, and a UE the pool
// cannot serve gets a 500.
func TestExampleScript(t *testing.T) {
	p := newPCSCF(t, map[string]core.Val{"ipsec_spi_id_range": core.Int(2)})
	ps := core.Socket{Proto: "udp", IP: "10.99.0.1", Port: 6100}

	o := p.request(ueRegister("10.99.0.2", 5060, 1, "Security-Client: "+secClient+"\nRequire: sec-agree"), "10.99.0.2:5060", plain5060)
	br := of(o, core.OutBranch)
	if len(br) != 1 || br[0].dst != "udp:127.0.0.2:6060" || hdr(br[0].msg, "Security-Client") != "" {
		t.Fatalf("first REGISTER to the S-CSCF: %+v", o)
	}
	o = p.answer(br[0], "401 Unauthorized", wwwAuth)
	up := of(o, core.OutRelayedReply)
	if len(up) != 1 {
		t.Fatalf("401 not relayed: %+v", o)
	}
	res := up[0].msg.(*sip.Response)
	if res.StatusCode != 401 || strings.Contains(hdr(res, "WWW-Authenticate"), "ck=") ||
		hdr(res, "Security-Server") != "ipsec-3gpp;q=0.1;prot=esp;mod=trans;spi-c=4096;spi-s=4097;port-c=5100;port-s=6100;alg=hmac-sha-1-96;ealg=null" {
		t.Fatalf("401 to the UE: %d, %q, %q", res.StatusCode, hdr(res, "WWW-Authenticate"), hdr(res, "Security-Server"))
	}
	if up[0].local != "" || up[0].dst != "udp:10.99.0.2:5060" {
		t.Errorf("the 401 is not protected: from %q to %s", up[0].local, up[0].dst)
	}

	// Plaintext to the protected server port from another port: dropped.
	if o := p.request(ueRegister("10.99.0.2", 40000, 2, ""), "10.99.0.2:40000", ps); len(o) != 0 {
		t.Errorf("plaintext to port_ps was handled: %+v", o)
	}

	verify := "Security-Verify: ipsec-3gpp;q=0.1;prot=esp;mod=trans;spi-c=4096;spi-s=4097;port-c=5100;port-s=6100;alg=hmac-sha-1-96;ealg=null\nSecurity-Client: " + secClient
	o = p.request(ueRegister("10.99.0.2", 31001, 3, verify), "10.99.0.2:31000", ps)
	br = of(o, core.OutBranch)
	if len(br) != 1 || hdr(br[0].msg, "Security-Verify") != "" {
		t.Fatalf("protected REGISTER: %+v", o)
	}
	o = p.answer(br[0], "200 OK", "Contact: <sip:alice@10.99.0.2:31001>;expires=600")
	up = of(o, core.OutRelayedReply)
	if len(up) != 1 || up[0].local != "udp:10.99.0.1:5100" || up[0].dst != "udp:10.99.0.2:31001" {
		t.Fatalf("200 to the UE: %+v", o)
	}

	// From the core to the UE: port_pc -> port_us, our Via names port_ps
	// (where the UE's answer arrives over SA A), not the sending port_pc.
	o = p.request(`OPTIONS sip:alice@10.99.0.2:31001 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.2:6060;branch=z9hG4bKmt1
From: <sip:scscf@ims.example>;tag=s1
To: <sip:alice@ims.example>
Call-ID: mt-1
CSeq: 1 OPTIONS
Max-Forwards: 70`, "127.0.0.2:6060", plain5060)
	br = of(o, core.OutBranch)
	if len(br) != 1 || br[0].local != "udp:10.99.0.1:5100" || br[0].dst != "udp:10.99.0.2:31001" {
		t.Fatalf("MT request: %+v", o)
	}
	if v := br[0].msg.(*sip.Request).Via(); v.Host != "10.99.0.1" || v.Port != 6100 {
		t.Errorf("MT Via %s", v.Value())
	}
	// The UE's answer comes in on port_ps from port_uc (SA A) and goes up.
	o = p.do(func() {
		res := parse(t, "SIP/2.0 200 OK\nVia: "+br[0].msg.(*sip.Request).Via().Value()+"\nVia: SIP/2.0/UDP 127.0.0.2:6060;branch=z9hG4bKmt1\nFrom: <sip:scscf@ims.example>;tag=s1\nTo: <sip:alice@ims.example>;tag=u1\nCall-ID: mt-1\nCSeq: 1 OPTIONS").(*sip.Response)
		p.eng.HandleReply(&core.Msg{Env: p.env, Res: res, Proto: "udp", SrcIP: "10.99.0.2", SrcPort: 31000, Local: ps})
	})
	if up := of(o, core.OutRelayedReply); len(up) != 1 || up[0].dst != "udp:127.0.0.2:6060" {
		t.Errorf("UE's 200 to the core: %+v", o)
	}

	// A UE INVITE on port_ps: tm's 100 Trying leaves port_pc for the Via's
	// port_us (SA C), not the arrival socket port_ps (no SA).
	o = p.request(`INVITE sip:bob@ims.example SIP/2.0
Via: SIP/2.0/UDP 10.99.0.2:31001;branch=z9hG4bKinv1
From: <sip:alice@ims.example>;tag=i1
To: <sip:bob@ims.example>
Call-ID: inv-1
CSeq: 1 INVITE
Contact: <sip:alice@10.99.0.2:31001>
Max-Forwards: 70`, "10.99.0.2:31000", ps)
	var trying []routeSent
	for _, s := range o {
		if r, ok := s.msg.(*sip.Response); ok && r.StatusCode == 100 {
			trying = append(trying, s)
		}
	}
	if len(trying) != 1 || trying[0].arrival != "udp:10.99.0.1:5100" || trying[0].dst != "udp:10.99.0.2:31001" {
		t.Errorf("100 Trying to the UE's INVITE: %+v, want from udp:10.99.0.1:5100 to udp:10.99.0.2:31001", trying)
	}

	// A second UE: the pool (one SPI pair) is exhausted, the UE gets a 500.
	o = p.request(ueRegister("10.99.0.3", 5060, 1, "Security-Client: "+secClient), "10.99.0.3:5060", plain5060)
	br = of(o, core.OutBranch)
	o = p.answer(br[0], "401 Unauthorized", wwwAuth)
	up = of(o, core.OutRelayedReply)
	if len(up) != 1 || up[0].msg.(*sip.Response).StatusCode != 500 || up[0].dst != "udp:10.99.0.3:5060" {
		t.Fatalf("exhausted pool: %+v", o)
	}
	if strings.Contains(up[0].msg.String(), "ck=") || hdr(up[0].msg, "Security-Server") != "" {
		t.Errorf("500 carries keys or Security-Server:\n%s", up[0].msg)
	}
	for _, r := range p.mod.RPC {
		if r.Name == "ipsec.stats" {
			v, _ := r.Handler(context.Background(), rpcArgs(nil))
			if st := v.(map[string]any); st["kernel_states"] != 4 || st["plaintext_dropped"] != int64(1) {
				t.Errorf("stats %v: want the first UE's 4 SAs and 1 plaintext drop", st)
			}
		}
	}
}

// TestReadmeHasTheExample: the README shows the script the route test runs.
func TestReadmeHasTheExample(t *testing.T) {
	src, err := os.ReadFile("../../examples/ims_pcscf/route.star")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```python\n"+string(src)+"```") {
		t.Error("README's P-CSCF script differs from examples/ims_pcscf/route.star")
	}
}

// TestExampleProtectedRegisterWithoutVerify: the example checks every
// REGISTER, so one that arrives over the SAs without Security-Verify gets a
// 494 and never reaches the S-CSCF (the script used to skip ipsec_verify
// when the header was absent), and its SA set is removed.
func TestExampleProtectedRegisterWithoutVerify(t *testing.T) {
	p := newPCSCF(t, nil)
	ps := core.Socket{Proto: "udp", IP: "10.99.0.1", Port: 6100}
	o := p.request(ueRegister("10.99.0.2", 5060, 1, "Security-Client: "+secClient+"\nRequire: sec-agree"), "10.99.0.2:5060", plain5060)
	br := of(o, core.OutBranch)
	if len(br) != 1 {
		t.Fatalf("first REGISTER: %+v", o)
	}
	if up := of(p.answer(br[0], "401 Unauthorized", wwwAuth), core.OutRelayedReply); len(up) != 1 || hdr(up[0].msg, "Security-Server") == "" {
		t.Fatalf("401: %+v", up)
	}
	if n := p.k.count(); n != 4 {
		t.Fatalf("%d SAs after the 401, want 4", n)
	}
	o = p.request(ueRegister("10.99.0.2", 31001, 2, "Security-Client: "+secClient), "10.99.0.2:31000", ps)
	if br := of(o, core.OutBranch); len(br) != 0 {
		t.Errorf("REGISTER without Security-Verify went to the S-CSCF: %+v", br)
	}
	var codes []int
	for _, s := range o {
		if r, ok := s.msg.(*sip.Response); ok {
			codes = append(codes, r.StatusCode)
		}
	}
	if len(codes) != 1 || codes[0] != 494 {
		t.Errorf("replies %v, want [494]", codes)
	}
	if n := p.k.count(); n != 0 {
		t.Errorf("%d SAs left, want the set removed", n)
	}
}

// count is the number of SAs in the fake kernel, whoever owns them.
func (f *FakeKernel) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.states)
}

// TestScriptDestroyVariantsAndSecAgreeTags runs Kamailio's call forms from a
// script: ipsec_destroy with and without aor (one name, optional argument),
// ipsec_destroy_by_contact, and ipsec_forward called twice on the 200 to
// REGISTER adding Supported and Require: sec-agree once each.
func TestScriptDestroyVariantsAndSecAgreeTags(t *testing.T) {
	src := strings.Replace(mustRead(t, "../../examples/ims_pcscf/route.star"), `    elif code == 200:
        KSR.ims_ipsec_pcscf.ipsec_forward("location", 1)
`, `    elif code == 200:
        KSR.ims_ipsec_pcscf.ipsec_forward("location", 1)
        KSR.ims_ipsec_pcscf.ipsec_forward("location", 1)
`, 1)
	src = strings.Replace(src, `    if KSR.pv.get("$si") == "127.0.0.2":`, `    if KSR.pv.get("$rU") == "destroy":
        KSR.sl.send_reply(200, "r=%d" % KSR.ims_ipsec_pcscf.ipsec_destroy("location", KSR.hdr.get("X-Aor")))
        return
    if KSR.pv.get("$rU") == "destroy-msg":
        KSR.sl.send_reply(200, "r=%d" % KSR.ims_ipsec_pcscf.ipsec_destroy("location"))
        return
    if KSR.pv.get("$rU") == "by-contact":
        KSR.sl.send_reply(200, "r=%d" % KSR.ims_ipsec_pcscf.ipsec_destroy_by_contact("location",
            KSR.hdr.get("X-Aor"), KSR.hdr.get("X-Host"), KSR.hdr.get("X-Port")))
        return
    if KSR.pv.get("$si") == "127.0.0.2":`, 1)
	if !strings.Contains(src, "ipsec_destroy_by_contact") || strings.Count(src, `ipsec_forward("location", 1)`) != 4 {
		t.Fatal("the example changed; update this test's edits")
	}
	p := newPCSCFSrc(t, nil, []byte(src))
	ps := core.Socket{Proto: "udp", IP: "10.99.0.1", Port: 6100}
	establish := func(ue string) {
		t.Helper()
		o := p.request(ueRegister(ue, 5060, 1, "Security-Client: "+secClient+"\nRequire: sec-agree"), ue+":5060", plain5060)
		br := of(o, core.OutBranch)
		up := of(p.answer(br[0], "401 Unauthorized", wwwAuth+"\nSupported: path, sec-agree"), core.OutRelayedReply)
		if len(up) != 1 || len(up[0].msg.(*sip.Response).GetHeaders("Supported")) != 1 {
			t.Fatalf("401 (Supported already lists sec-agree): %+v", up)
		}
		srv := hdr(up[0].msg, "Security-Server")
		o = p.request(ueRegister(ue, 31001, 2, "Security-Verify: "+srv+"\nSecurity-Client: "+secClient), ue+":31000", ps)
		br = of(o, core.OutBranch)
		if len(br) != 1 {
			t.Fatalf("protected REGISTER: %+v", o)
		}
		up = of(p.answer(br[0], "200 OK", "Contact: <sip:alice@"+ue+":31001>;expires=600"), core.OutRelayedReply)
		res := up[0].msg.(*sip.Response)
		if s, r := res.GetHeaders("Supported"), res.GetHeaders("Require"); len(s) != 1 || len(r) != 1 || s[0].Value() != "sec-agree" || r[0].Value() != "sec-agree" {
			t.Errorf("200 to REGISTER: Supported %v Require %v, want one sec-agree each", s, r)
		}
	}
	ask := func(user, extra string) string {
		t.Helper()
		o := p.request(`OPTIONS sip:`+user+`@10.99.0.1 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bK`+user+`
From: <sip:ops@ims.example>;tag=o1
To: <sip:`+user+`@ims.example>
Call-ID: ops-`+user+`-`+fmt.Sprint(len(p.rec.sent))+`
CSeq: 1 OPTIONS
Max-Forwards: 70
`+extra, "127.0.0.9:5060", plain5060)
		for _, s := range o {
			if r, ok := s.msg.(*sip.Response); ok {
				return r.Reason
			}
		}
		return ""
	}
	establish("10.99.0.2")
	if n := p.k.count(); n != 4 {
		t.Fatalf("%d SAs", n)
	}
	if r := ask("destroy", "X-Aor: sip:bob@ims.example"); r != "r=-1" {
		t.Errorf("ipsec_destroy of an unknown aor: %s", r)
	}
	if r := ask("destroy", "X-Aor: sip:alice@ims.example"); r != "r=1" || p.k.count() != 0 {
		t.Errorf("ipsec_destroy(domain, aor): %s, %d SAs left", r, p.k.count())
	}
	if r := ask("destroy-msg", ""); r != "r=-1" {
		t.Errorf("ipsec_destroy(domain) for a sender without SAs: %s", r)
	}

	establish("10.99.0.3")
	for _, tc := range []struct{ aor, host, port, want string }{
		{"sip:alice@10.99.0.3:5060", "10.99.0.4", "31001", "r=-1"},         // other host
		{"sip:alice@10.99.0.3:5060", "10.99.0.3", "5060", "r=-1"},          // not a protected port
		{"sip:carol@10.99.0.3:5060;alias=x", "10.99.0.3", "31001", "r=-1"}, // other contact
		{"sip:alice@10.99.0.3:5060", "10.99.0.3", "x", "error"},
		{"sip:alice@10.99.0.3:5060;alias=10.99.0.3~31001~1", "10.99.0.3", "31001", "r=1"},
	} {
		r := ask("by-contact", "X-Aor: "+tc.aor+"\nX-Host: "+tc.host+"\nX-Port: "+tc.port)
		if tc.want == "error" && r != "Server Internal Error" {
			t.Errorf("bad recv_port answered %q", r)
		} else if tc.want != "error" && r != tc.want {
			t.Errorf("ipsec_destroy_by_contact(%q, %q, %q) = %s, want %s", tc.aor, tc.host, tc.port, r, tc.want)
		}
	}
	if n := p.k.count(); n != 0 {
		t.Errorf("%d SAs left after ipsec_destroy_by_contact", n)
	}
}

func mustRead(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestScriptDestroyArity: the optional aor is the only optional argument; a
// third one is a load error naming the accepted counts.
func TestScriptDestroyArity(t *testing.T) {
	env := core.NewEnv(&routeRec{})
	env.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	eng := starlark.New(env)
	_, err := eng.Load("x.star", []byte("def ksr_request_route():\n    KSR.ims_ipsec_pcscf.ipsec_destroy(\"l\", \"a\", \"b\")\n"))
	if err == nil || !strings.Contains(err.Error(), "takes 1 to 2 arguments") {
		t.Errorf("load: %v", err)
	}
	if _, err := eng.Load("y.star", []byte("def ksr_request_route():\n    KSR.ims_ipsec_pcscf.ipsec_destroy()\n")); err == nil {
		t.Error("no arguments accepted")
	}
}

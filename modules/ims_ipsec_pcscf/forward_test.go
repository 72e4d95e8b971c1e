package ims_ipsec_pcscf

import (
	"slices"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

func (r *rig) socketList() []string {
	var out []string
	for _, s := range r.env.Sockets() {
		out = append(out, s.String())
	}
	slices.Sort(out)
	return out
}

// created registers ue with Call-ID cid and creates its set.
func (r *rig) created(t *testing.T, cid, ue string) {
	t.Helper()
	r.register(t, cid, ue)
	if got := r.call(t, r.reply(t, cid, "401 Unauthorized", wwwAuth), "ipsec_create", core.Str("l"), core.Int(0)); got != 1 {
		t.Fatalf("ipsec_create = %d", got)
	}
}

func TestProtectedSocketsFollowSets(t *testing.T) {
	r := newRig(t, map[string]core.Val{"ipsec_max_connections": core.Int(1)})
	want := []string{"tcp:10.99.0.1:5100", "tcp:10.99.0.1:6100", "udp:10.99.0.1:5100", "udp:10.99.0.1:6100"}
	r.created(t, "c1", "10.99.0.2")
	if got := r.socketList(); !slices.Equal(got, want) {
		t.Fatalf("sockets after the first set %v, want %v (on ipsec_listen_addr)", got, want)
	}
	// A second UE shares the only port pair: the sockets stay open until
	// the last set using them goes.
	r.created(t, "c2", "10.99.0.3")
	r.m.destroyMatching("10.99.0.2", "test")
	if got := r.socketList(); !slices.Equal(got, want) {
		t.Fatalf("sockets with one set left %v", got)
	}
	r.m.destroyMatching("10.99.0.3", "test")
	if got := r.socketList(); len(got) != 0 {
		t.Fatalf("sockets after the last set %v", got)
	}
}

func TestCreateFailsWhenSocketsCannotOpen(t *testing.T) {
	r := newRig(t, map[string]core.Val{})
	r.env.AddSocket(core.Socket{Proto: "tcp", IP: "10.99.0.1", Port: 6100}) // taken
	r.register(t, "c1", "10.99.0.2")
	if got := r.call(t, r.reply(t, "c1", "401 Unauthorized", wwwAuth), "ipsec_create", core.Str("l"), core.Int(0)); got != -1 {
		t.Fatalf("ipsec_create = %d with a port taken", got)
	}
	if sts, _ := r.k.List(r.m.rng); len(sts) != 0 {
		t.Errorf("%d SAs left", len(sts))
	}
	if u, _ := r.m.pool.Usage(); u != 0 {
		t.Errorf("pool used %d", u)
	}
	if got := r.socketList(); !slices.Equal(got, []string{"tcp:10.99.0.1:6100"}) {
		t.Errorf("sockets %v: the ones opened must be closed again", got)
	}
}

func mtRequest(t *testing.T, r *rig, ruri string) *core.Msg {
	t.Helper()
	req := parse(t, `OPTIONS `+ruri+` SIP/2.0
Via: SIP/2.0/UDP 127.0.0.2:6060;branch=z9hG4bK9
From: <sip:scscf@ims.example>;tag=s9
To: <sip:alice@ims.example>
Call-ID: mt1
CSeq: 1 OPTIONS`).(*sip.Request)
	return &core.Msg{Env: r.env, Req: req, Proto: "udp", SrcIP: "127.0.0.2", SrcPort: 6060, RouteType: core.RouteRequest}
}

func TestForwardPorts(t *testing.T) {
	r := newRig(t, map[string]core.Val{})
	r.created(t, "c1", "10.99.0.2")
	cases := []struct {
		name      string
		ruri, du  string
		flags     int64
		wantSock  string
		wantDstTo string
	}{
		{"udp request: pc -> us", "sip:alice@10.99.0.2:31001", "", 0, "udp:10.99.0.1:5100", "sip:10.99.0.2:31001"},
		{"udp request to the contact port_uc still goes to port_us", "sip:alice@10.99.0.2:31000", "", 0, "udp:10.99.0.1:5100", "sip:10.99.0.2:31001"},
		{"tcp request: pc -> us", "sip:alice@10.99.0.2:31001;transport=tcp", "", 0, "tcp:10.99.0.1:5100", "sip:10.99.0.2:31001;transport=tcp"},
		{"tcp request 0x40: ps -> uc", "sip:alice@10.99.0.2:31001;transport=tcp", "", 0x40, "tcp:10.99.0.1:6100", "sip:10.99.0.2:31000;transport=tcp"},
		{"0x20 keeps $du", "sip:alice@10.99.0.2:31001", "sip:10.99.0.2:31001;x=1", 0x20, "udp:10.99.0.1:5100", "sip:10.99.0.2:31001;x=1"},
		{"0x04 looks up by $du", "sip:alice@ims.example", "sip:10.99.0.2:31001", 0x04, "udp:10.99.0.1:5100", "sip:10.99.0.2:31001"},
		{"flags above a byte are kept (0x140 = 0x100|0x40)", "sip:alice@10.99.0.2:31001;transport=tcp", "", 0x140, "tcp:10.99.0.1:6100", "sip:10.99.0.2:31000;transport=tcp"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			msg := mtRequest(t, r, c.ruri)
			msg.DstURI = c.du
			if got := r.call(t, msg, "ipsec_forward", core.Str("l"), core.Int(int(c.flags))); got != 1 {
				t.Fatalf("ipsec_forward = %d", got)
			}
			if msg.SendSocket == nil || msg.SendSocket.String() != c.wantSock || msg.DstURI != c.wantDstTo {
				t.Errorf("from %v to %q, want %s to %s", msg.SendSocket, msg.DstURI, c.wantSock, c.wantDstTo)
			}
		})
	}
	// No set for the target: -1, nothing forced.
	msg := mtRequest(t, r, "sip:bob@10.99.0.9:5060")
	if got := r.call(t, msg, "ipsec_forward", core.Str("l"), core.Int(0)); got != -1 || msg.SendSocket != nil {
		t.Errorf("unknown UE: %d %v", got, msg.SendSocket)
	}
}

func TestForwardReplies(t *testing.T) {
	r := newRig(t, map[string]core.Val{})
	r.created(t, "c1", "10.99.0.2")
	reply := func(via string) *core.Msg {
		res := parse(t, `SIP/2.0 200 OK
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKours
Via: `+via+`
From: <sip:alice@ims.example>;tag=a1
To: <sip:bob@ims.example>;tag=b1
Call-ID: mo1
CSeq: 1 INVITE`).(*sip.Response)
		return &core.Msg{Env: r.env, Res: res, Proto: "udp", SrcIP: "127.0.0.2", SrcPort: 6060, RouteType: core.RouteTmReply}
	}
	cases := []struct {
		name, via      string
		flags          int64
		wantSock, want string
	}{
		{"udp: pc -> us", "SIP/2.0/UDP 10.99.0.2:31001;branch=z9hG4bKue", 0, "udp:10.99.0.1:5100", "sip:10.99.0.2:31001"},
		{"udp: Via port_uc still gets port_us", "SIP/2.0/UDP 10.99.0.2:31000;branch=z9hG4bKue", 0, "udp:10.99.0.1:5100", "sip:10.99.0.2:31001"},
		{"udp 0x100: Via port_uc is used", "SIP/2.0/UDP 10.99.0.2:31000;branch=z9hG4bKue", 0x100, "udp:10.99.0.1:5100", "sip:10.99.0.2:31000"},
		{"tcp: ps -> uc on the UE's connection", "SIP/2.0/TCP 10.99.0.2:31001;branch=z9hG4bKue", 0, "tcp:10.99.0.1:6100", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			msg := reply(c.via)
			if got := r.call(t, msg, "ipsec_forward", core.Str("l"), core.Int(int(c.flags))); got != 1 {
				t.Fatalf("ipsec_forward = %d", got)
			}
			if msg.SendSocket == nil || msg.SendSocket.String() != c.wantSock || msg.DstURI != c.want {
				t.Errorf("from %v to %q, want %s to %q", msg.SendSocket, msg.DstURI, c.wantSock, c.want)
			}
		})
	}
}

func TestPlaintextToProtectedPortDropped(t *testing.T) {
	r := newRig(t, map[string]core.Val{})
	r.created(t, "c1", "10.99.0.2")
	req := func(local core.Socket, src string, port int) bool {
		m := mtRequest(t, r, "sip:pcscf.ims.example")
		m.Local, m.SrcIP, m.SrcPort, m.Proto = local, src, port, local.Proto
		return r.t.OnRequest(m)
	}
	ps := core.Socket{Proto: "udp", IP: "10.99.0.1", Port: 6100}
	pcTCP := core.Socket{Proto: "tcp", IP: "10.99.0.1", Port: 5100}
	cases := []struct {
		name  string
		local core.Socket
		src   string
		port  int
		drop  bool
	}{
		{"UE port_uc -> port_ps", ps, "10.99.0.2", 31000, false},
		{"UE port_us -> port_pc (tcp)", pcTCP, "10.99.0.2", 31001, false},
		{"UE other port -> port_ps", ps, "10.99.0.2", 40000, true},
		{"other host from port_uc -> port_ps", ps, "10.99.0.7", 31000, true},
		{"unprotected 5060 is not checked", core.Socket{Proto: "udp", IP: "10.99.0.1", Port: 5060}, "10.99.0.7", 40000, false},
	}
	dropped := 0
	for _, c := range cases {
		if got := req(c.local, c.src, c.port); got != c.drop {
			t.Errorf("%s: dropped %v, want %v", c.name, got, c.drop)
		}
		if c.drop {
			dropped++
		}
	}
	v, _ := r.rpc(t, "ipsec.stats")
	if n := v.(map[string]any)["plaintext_dropped"]; n != int64(dropped) {
		t.Errorf("plaintext_dropped %v, want %d", n, dropped)
	}
	// Once the set is gone, the port is not protected any more (closed).
	r.m.destroyMatching("10.99.0.2", "test")
	if req(ps, "10.99.0.2", 40000) {
		t.Error("dropped on a closed protected port")
	}
}

// A UDP request a UE sent port_uc -> port_ps is answered from port_pc
// (tm's 100 Trying, sl replies): ReplyFrom points the reply at SA C.
func TestReplyFromPortPC(t *testing.T) {
	r := newRig(t, map[string]core.Val{})
	r.created(t, "c1", "10.99.0.2")
	for _, c := range []struct {
		local core.Socket
		port  int
		want  string
	}{
		{core.Socket{Proto: "udp", IP: "10.99.0.1", Port: 6100}, 31000, "udp:10.99.0.1:5100"},
		{core.Socket{Proto: "tcp", IP: "10.99.0.1", Port: 6100}, 31000, ""}, // TCP answers on its connection
		{core.Socket{Proto: "udp", IP: "10.99.0.1", Port: 5060}, 5060, ""},  // unprotected
	} {
		m := mtRequest(t, r, "sip:pcscf.ims.example")
		m.Local, m.SrcIP, m.SrcPort, m.Proto = c.local, "10.99.0.2", c.port, c.local.Proto
		if r.t.OnRequest(m) {
			t.Fatalf("%s: dropped", c.local)
		}
		got := ""
		if m.ReplyFrom != nil {
			got = m.ReplyFrom.String()
		}
		if got != c.want {
			t.Errorf("request on %s: replies from %q, want %q", c.local, got, c.want)
		}
		if c.want != "" {
			if o := m.ReplyOutgoing(nil, core.OutReply); o.Arrival == nil || o.Arrival.String() != c.want {
				t.Errorf("ReplyOutgoing.Arrival %v, want %s", o.Arrival, c.want)
			}
		}
	}
}

package tm_test

import (
	"testing"

	"github.com/kamgo/kamgo/modules/core"
)

const sendSockScript = `
def ksr_request_route():
    if KSR.is_ACK():
        return
    if KSR.hdr.is_present("X-Sock") > 0:
        KSR.pv.seti("$shv(set)", KSR.corex.set_send_socket(KSR.hdr.get("X-Sock")))
    if KSR.hdr.is_present("X-Reply-Sock") > 0:
        KSR.tm.t_on_reply("rpl")
    if KSR.pv.get("$rU") == "sl":
        KSR.sl.sl_send_reply(403, "Forbidden")
        return
    KSR.tm.t_relay()

def rpl():
    if KSR.pv.get("$rs") == 200:
        KSR.corex.set_send_socket("udp:127.0.0.1:5100")
        KSR.setdsturi("sip:192.0.2.10:31001")
`

// TestSendSocket: a forced send socket (KSR.corex.set_send_socket, $fs)
// is what the branch's Via names and where the branch, its ACK, the
// 100 Trying, the relayed and the sl replies leave from.
func TestSendSocket(t *testing.T) {
	f := newFixture(t, sendSockScript)
	f.env.AddSocket(core.Socket{Proto: "udp", IP: "127.0.0.1", Port: 5100})
	const forced = "udp:127.0.0.1:5100"

	o, b := f.start(call{extra: "X-Sock: udp:127.0.0.1:5100\n"})
	if f.shv("set") != 1 {
		t.Fatalf("set_send_socket = %d", f.shv("set"))
	}
	if b.local != forced {
		t.Errorf("branch leaves from %q, want %s", b.local, forced)
	}
	if v := b.req().Via(); v.Port != 5100 || v.Host != "127.0.0.1" {
		t.Errorf("branch Via %s, want the forced socket's", v.Value())
	}
	if o[0].res() == nil || o[0].res().StatusCode != 100 || o[0].local != forced {
		t.Errorf("100 Trying from %q:\n%s", o[0].local, o[0])
	}
	r := f.reply(b, 486, "t1")
	ack, up := r.of(core.OutLocalRequest), r.of(core.OutRelayedReply)
	if len(ack) != 1 || !ack[0].isReq("ACK") || ack[0].local != forced {
		t.Errorf("hop-by-hop ACK not from the forced socket:\n%s", r)
	}
	if len(up) != 1 || up[0].local != forced {
		t.Errorf("relayed 486 not from the forced socket:\n%s", r)
	}

	// No forced socket: the transport picks (LocalSocket nil), Via 5060.
	_, b2 := f.start(call{user: "carol"})
	if b2.local != "" || b2.req().Via().Port != 5060 {
		t.Errorf("unforced branch: local %q Via %s", b2.local, b2.req().Via().Value())
	}

	// An unknown socket is refused (-1) and changes nothing.
	_, b3 := f.start(call{user: "dave", extra: "X-Sock: udp:127.0.0.1:5999\n"})
	if f.shv("set") != -1 || b3.local != "" {
		t.Errorf("unknown socket: set %d, local %q", f.shv("set"), b3.local)
	}

	// sl replies leave from it too.
	sl := f.request(call{user: "sl", method: "OPTIONS", extra: "X-Sock: udp:127.0.0.1:5100\n"}.raw(), "udp")
	if len(sl) != 1 || sl[0].res().StatusCode != 403 || sl[0].local != forced {
		t.Errorf("sl reply:\n%s (local %q)", sl, sl[0].local)
	}

	// Forced in the onreply route with $du: the 200 goes up from that
	// socket to the $du port (a P-CSCF answering a UE's port_us).
	_, b4 := f.start(call{user: "erin", method: "REGISTER", extra: "X-Reply-Sock: 1\n"})
	r = f.reply(b4, 200, "t4")
	up = r.of(core.OutRelayedReply)
	if len(up) != 1 || up[0].local != forced || up[0].dst.String() != "udp:192.0.2.10:31001" {
		t.Errorf("relayed 200: local %q dst %v\n%s", up[0].local, up[0].dst, r)
	}
}

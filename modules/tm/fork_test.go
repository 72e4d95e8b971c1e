package tm_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kamgo/kamgo/modules/core"
)

const forkScript = `
modparam("tm", "fr_timer", 2000)
modparam("tm", "fr_inv_timer", 8000)

def ksr_request_route():
    if KSR.is_CANCEL() or KSR.is_ACK():
        if KSR.tm.t_check_trans() > 0:
            KSR.tm.t_relay()
        return
    KSR.corex.append_branch_uri("sip:b@10.0.0.2:5060")
    KSR.corex.append_branch_uri_q("sip:c@10.0.0.3:5060", "0.5")
    if KSR.pv.get("$rU") == "withbr":
        KSR.tm.t_on_branch("br")
    KSR.pv.seti("$shv(set_br)", KSR.tm.t_is_set("branch_route"))
    KSR.pv.seti("$shv(set_fr)", KSR.tm.t_is_set("failure_route"))
    KSR.pv.seti("$shv(rc)", KSR.tm.t_relay())

def br():
    i = KSR.pv.get("$T_branch_idx")
    KSR.pv.seti("$shv(br" + str(i) + ")", 1)
    KSR.pv.sets("$shv(ru" + str(i) + ")", KSR.pv.get("$ru"))
    KSR.pv.seti("$shv(isbr)", KSR.tmx.t_is_branch_route())
`

// forked starts an INVITE that forks to bob@10.0.0.1, b@10.0.0.2 and c@10.0.0.3.
func forked(t *testing.T, f *fixture, c call) []sent {
	t.Helper()
	o := f.request(c.raw(), "udp")
	br := o.of(core.OutBranch)
	if len(br) != 3 {
		t.Fatalf("want 3 parallel branches, got %d:\n%s", len(br), o)
	}
	f.wantCodes("at once", o, 100)
	return br
}

func TestParallelFork(t *testing.T) {
	t.Run("three branches, each its R-URI, destination and index", func(t *testing.T) {
		f := newFixture(t, forkScript)
		br := forked(t, f, call{user: "withbr"})
		for i, want := range []struct{ ruri, dst string }{
			{"sip:withbr@10.0.0.1:5060", "udp:10.0.0.1:5060"},
			{"sip:b@10.0.0.2:5060", "udp:10.0.0.2:5060"},
			{"sip:c@10.0.0.3:5060", "udp:10.0.0.3:5060"},
		} {
			if got := br[i].req().Recipient.String(); got != want.ruri {
				t.Errorf("branch %d R-URI %s, want %s", i, got, want.ruri)
			}
			f.wantTo("branch", br[i], want.dst)
			if br[i].branch != i {
				t.Errorf("branch %d has index %d", i, br[i].branch)
			}
			if f.shv("br"+string(rune('0'+i))) != 1 {
				t.Errorf("branch route did not run for $T_branch_idx %d", i)
			}
			if got := f.env.Shv.Get("ru" + string(rune('0'+i))).Str; got != want.ruri {
				t.Errorf("branch route %d saw $ru %q, want %q", i, got, want.ruri)
			}
		}
		if br[0].viaBranch() == br[1].viaBranch() || br[1].viaBranch() == br[2].viaBranch() {
			t.Errorf("branches share a Via branch")
		}
		if f.shv("rc") != 1 || f.shv("set_br") != 1 || f.shv("set_fr") != -1 || f.shv("isbr") != 1 {
			t.Errorf("t_relay %d, t_is_set branch %d failure %d, t_is_branch_route %d", f.shv("rc"), f.shv("set_br"), f.shv("set_fr"), f.shv("isbr"))
		}
	})
	t.Run("first 2xx wins and the others are CANCELed", func(t *testing.T) {
		f := newFixture(t, forkScript)
		br := forked(t, f, call{})
		f.reply(br[0], 180, "t0")
		f.reply(br[1], 180, "t1")
		o := f.reply(br[1], 200, "t1")
		f.wantCodes("200", o, 200)
		cancels := o.requests("CANCEL")
		if len(cancels) != 1 || cancels[0].dst.String() != "udp:10.0.0.1:5060" || cancels[0].viaBranch() != br[0].viaBranch() {
			t.Fatalf("want one CANCEL to branch 0 (branch 2 has sent no provisional yet):\n%s", o)
		}
		// Branch 2 answers late with a provisional: its CANCEL goes now.
		o = f.reply(br[2], 180, "t2")
		if c := o.requests("CANCEL"); len(c) != 1 || c[0].viaBranch() != br[2].viaBranch() {
			t.Errorf("no CANCEL to branch 2 after its 180:\n%s", o)
		}
		if len(o.upstream()) != 0 {
			t.Errorf("a provisional after the 2xx went up:\n%s", o)
		}
		o = f.reply(br[0], 487, "t0")
		if len(o.upstream()) != 0 || len(o.requests("ACK")) != 1 {
			t.Errorf("487 of a CANCELed branch: want only our ACK:\n%s", o)
		}
	})
	t.Run("a 6xx CANCELs the rest and goes up once they end", func(t *testing.T) {
		f := newFixture(t, forkScript)
		br := forked(t, f, call{})
		f.reply(br[0], 180, "t0")
		f.reply(br[2], 183, "t2")
		o := f.reply(br[1], 603, "t1")
		if len(o.upstream()) != 0 {
			t.Errorf("the 603 went up before the other branches ended:\n%s", o)
		}
		if c := o.requests("CANCEL"); len(c) != 2 {
			t.Errorf("want CANCELs to branches 0 and 2:\n%s", o)
		}
		f.reply(br[0], 487, "t0")
		o = f.reply(br[2], 487, "t2")
		f.wantCodes("after all ended", o, 603)
	})
	t.Run("no 2xx: the best final reply after all branches end", func(t *testing.T) {
		f := newFixture(t, forkScript)
		br := forked(t, f, call{})
		if o := f.reply(br[0], 486, "t0"); len(o.upstream()) != 0 {
			t.Errorf("486 went up with branches pending:\n%s", o)
		}
		f.reply(br[1], 503, "t1")
		o := f.reply(br[2], 404, "t2")
		f.wantCodes("best", o, 404)
	})
}

// A branch route works on its branch's own request with the relaying
// message's module data: add_rr_param there changes that branch's
// Record-Route only (Kamailio), not the other branches'.
func TestBranchRouteAddRRParam(t *testing.T) {
	f := newFixture(t, `
def ksr_request_route():
    KSR.rr.record_route()
    KSR.corex.append_branch_uri("sip:b@10.0.0.2:5060")
    KSR.tm.t_on_branch("br")
    KSR.tm.t_relay()

def br():
    if KSR.pv.get("$T_branch_idx") == 1:
        KSR.pv.seti("$shv(rc)", KSR.rr.add_rr_param(";nat=yes"))
`)
	o := f.request(call{}.raw(), "udp")
	br := o.of(core.OutBranch)
	if len(br) != 2 {
		t.Fatalf("want 2 branches:\n%s", o)
	}
	rr := func(s sent) string {
		h := s.req().GetHeader("Record-Route")
		if h == nil {
			t.Fatalf("no Record-Route:\n%s", s)
		}
		return h.Value()
	}
	if f.shv("rc") != 1 {
		t.Errorf("add_rr_param returned %d", f.shv("rc"))
	}
	if got := rr(br[1]); !strings.Contains(got, ";nat=yes") {
		t.Errorf("branch 1 Record-Route %s, want ;nat=yes", got)
	}
	if got := rr(br[0]); strings.Contains(got, "nat=yes") {
		t.Errorf("branch 0 Record-Route %s got the other branch's param", got)
	}
	if n := len(br[1].req().GetHeaders("Record-Route")); n != 1 {
		t.Errorf("branch 1 has %d Record-Route headers, want 1", n)
	}
}

// Each branch carries its own branch flags: set for it before
// append_branch (the contact's cflags for registrar's lookup), seen by its
// branch route, its onreply route and the failure route it wins.
func TestBranchFlagsPerBranch(t *testing.T) {
	f := newFixture(t, `
def ksr_request_route():
    KSR.setbflag(6)
    KSR.corex.append_branch_uri("sip:b@10.0.0.2:5060")
    KSR.resetbflag(6)
    KSR.setbflag(7)
    KSR.tm.t_on_branch("br")
    KSR.tm.t_on_reply("onrep")
    KSR.tm.t_on_failure("fail")
    KSR.tm.t_relay()

def br():
    i = str(KSR.pv.get("$T_branch_idx"))
    KSR.pv.seti("$shv(br" + i + ")", KSR.pv.get("$bf"))
    if i == "0":
        KSR.setbflag(8)

def onrep():
    KSR.pv.seti("$shv(rep" + str(KSR.pv.get("$T_branch_idx")) + ")", KSR.pv.get("$bf"))

def fail():
    KSR.pv.seti("$shv(fail)", KSR.pv.get("$bf"))
    KSR.pv.seti("$shv(fail6)", KSR.isbflagset(6))
`)
	o := f.request(call{}.raw(), "udp")
	br := o.of(core.OutBranch)
	if len(br) != 2 {
		t.Fatalf("want 2 branches:\n%s", o)
	}
	if got := f.shv("br0"); got != 1<<7 {
		t.Errorf("branch route 0 saw $bf %d, want %d", got, 1<<7)
	}
	if got := f.shv("br1"); got != 1<<6 {
		t.Errorf("branch route 1 saw $bf %d, want %d", got, 1<<6)
	}
	f.reply(br[0], 180, "t0")
	f.reply(br[1], 180, "t1")
	if got := f.shv("rep0"); got != 1<<7|1<<8 {
		t.Errorf("onreply of branch 0 saw $bf %d, want %d (with the flag its branch route set)", got, 1<<7|1<<8)
	}
	if got := f.shv("rep1"); got != 1<<6 {
		t.Errorf("onreply of branch 1 saw $bf %d, want %d", got, 1<<6)
	}
	f.reply(br[0], 486, "t0")
	f.reply(br[1], 404, "t1") // the lowest 4xx wins: branch 1
	if got := f.shv("fail"); got != 1<<6 || f.shv("fail6") != 1 {
		t.Errorf("failure route saw $bf %d (isbflagset(6) %d), want the winning branch 1's %d", got, f.shv("fail6"), 1<<6)
	}
}

// rtpengine's set chosen in the request route (set_rtpengine_set, module
// data of the message) is the one rtpengine_manage uses in the branch
// route: the command goes to that set's engine. The engines are UDP
// sockets of the test that record what they get and never answer.
func TestBranchRouteKeepsRtpengineSet(t *testing.T) {
	var engines [2]*net.UDPConn
	for i := range engines {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		engines[i] = c
	}
	f := newFixture(t, fmt.Sprintf(`
modparam("rtpengine", "rtpengine_sock", "1 == udp:%s; 2 == udp:%s")
modparam("rtpengine", "setid_default", 1)
modparam("rtpengine", "rtpengine_tout_ms", 20)
modparam("rtpengine", "rtpengine_retr", 1)

def ksr_request_route():
    KSR.rtpengine.set_rtpengine_set(2)
    KSR.tm.t_on_branch("br")
    KSR.tm.t_relay()

def br():
    KSR.rtpengine.rtpengine_manage("")
`, engines[0].LocalAddr(), engines[1].LocalAddr()))
	o := f.request(call{method: "BYE"}.raw(), "udp")
	if len(o.of(core.OutBranch)) != 1 {
		t.Fatalf("BYE not relayed:\n%s", o)
	}
	got := func(c *net.UDPConn) string {
		buf := make([]byte, 4096)
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, _, _ := c.ReadFromUDP(buf)
		return string(buf[:n])
	}
	if s := got(engines[1]); !strings.Contains(s, "delete") {
		t.Errorf("set 2's engine got %q, want the delete of the branch route", s)
	}
	if s := got(engines[0]); s != "" {
		t.Errorf("set 1's engine (the default) got %q: the branch route lost set_rtpengine_set", s)
	}
}

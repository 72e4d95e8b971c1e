package xlog_test

import (
	"github.com/kamgo/kamgo/kamd/node"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/starlark/routetest"
	"log/slog"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/xlog"

	_ "github.com/kamgo/kamgo/modules/all"
)

const script = `
def ksr_request_route():
    u = KSR.pv.get("$rU")
    if u == "levels":
        KSR.xlog.xdbg("d $rm\n")
        KSR.xlog.xinfo("i $ru")
        KSR.xlog.xnotice("n $hdr(X-Foo)")
        KSR.xlog.xwarn("w $si:$sp")
        KSR.xlog.xerr("e $var(x) $$")
        KSR.xlog.xcrit("c $du")
        KSR.xlog.xalert("a $unknown")
        KSR.xlog.xlog("L_WARN", "x $fU")
        KSR.xlog.xlog("info", "y $ci")
    elif u == "badlevel":
        KSR.xlog.xlog("L_LOUD", "x")
    elif u == "evalx":
        KSR.pv.sets("$var(who)", "bob")
        KSR.pvx.evalx("$var(out)", "$var(who) from $si via $pr")
        KSR.info(KSR.pv.get("$var(out)"))
    elif u == "evalx_ro":
        KSR.pvx.evalx("$si", "x")
    KSR.sl.sl_send_reply(200, "OK")
`

func request(t *testing.T, h *routetest.Harness, user string) *routetest.Result {
	t.Helper()
	msg, err := routetest.ParseMessage("OPTIONS sip:" + user + "@example.com SIP/2.0\n" +
		"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-" + user + "\n" +
		"From: <sip:alice@example.com>;tag=1\nTo: <sip:" + user + "@example.com>\n" +
		"Call-ID: c-" + user + "\nCSeq: 1 OPTIONS\nX-Foo: bar\nContent-Length: 0\n")
	if err != nil {
		t.Fatal(err)
	}
	r, err := h.Request(msg.(*sip.Request), "192.0.2.10:5060", "udp")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestXlog(t *testing.T) {
	h, err := routetest.NewHarness(node.RouteTest, "x.star", []byte(script), routetest.HarnessOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	r := request(t, h, "levels")
	if r.Error() != "" {
		t.Fatal(r.Error())
	}
	var got []string
	for _, l := range r.Logs {
		if l.At == "" {
			continue
		}
		got = append(got, core.LevelName(l.Level)+" "+l.Message)
		if !strings.HasPrefix(l.At, "x.star:") {
			t.Errorf("%q: at %q", l.Message, l.At)
		}
	}
	want := []string{
		"dbg d OPTIONS",
		"info i sip:levels@example.com",
		"info n bar",
		"warn w 192.0.2.10:5060",
		"err e 0 $",
		"crit c <null>",
		"alert a $unknown",
		"warn x alice",
		"info y c-levels",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("logs:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if r := request(t, h, "badlevel"); !strings.Contains(r.Error(), `xlog: unknown level "L_LOUD"`) {
		t.Errorf("bad level: %q", r.Error())
	}
}

func TestParseLevel(t *testing.T) {
	for _, c := range []struct {
		in   string
		want slog.Level
		ok   bool
	}{
		{"L_DBG", slog.LevelDebug, true}, {"l_info", slog.LevelInfo, true}, {"notice", slog.LevelInfo, true},
		{"L_WARN", slog.LevelWarn, true}, {"err", slog.LevelError, true}, {"L_CRIT", slog.LevelError + 4, true},
		{"L_ALERT", xlog.LevelAlert, true}, {"L_BUG", xlog.LevelAlert, true}, {"L_X", 0, false}, {"", 0, false},
	} {
		l, ok := xlog.ParseLevel(c.in)
		if ok != c.ok || (ok && l != c.want) {
			t.Errorf("%q: %v %v", c.in, l, ok)
		}
	}
}

func TestEvalx(t *testing.T) {
	h, err := routetest.NewHarness(node.RouteTest, "x.star", []byte(script), routetest.HarnessOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	r := request(t, h, "evalx")
	if r.Error() != "" {
		t.Fatal(r.Error())
	}
	if got := r.Logs[len(r.Logs)-1].Message; got != "bob from 192.0.2.10 via udp" {
		t.Errorf("evalx: %q", got)
	}
	if r := request(t, h, "evalx_ro"); !strings.Contains(r.Error(), "read-only") {
		t.Errorf("evalx into $si: %q", r.Error())
	}
}

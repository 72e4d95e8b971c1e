package kx_test

import (
	"fmt"
	"github.com/kamgo/kamgo/kamd/node"
	"github.com/kamgo/kamgo/starlark/routetest"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"

	_ "github.com/kamgo/kamgo/modules/all"
)

// Each getter is compared with its value in a fixed message, and with the
// pseudo-variable it mirrors.
var getters = []struct{ fn, want, pv string }{
	{"get_ruri", `"sip:bob@example.com:5080;transport=tcp"`, "$ru"},
	{"get_ruser", `"bob"`, "$rU"},
	{"get_rhost", `"example.com"`, "$rd"},
	{"get_duri", "None", "$du"},
	{"get_nhuri", `"sip:bob@example.com:5080;transport=tcp"`, ""},
	{"get_furi", `"sip:alice@atlanta.example.com"`, "$fu"},
	{"get_fuser", `"alice"`, "$fU"},
	{"get_fhost", `"atlanta.example.com"`, "$fd"},
	{"get_turi", `"sip:bob@example.com"`, "$tu"},
	{"get_tuser", `"bob"`, "$tU"},
	{"get_thost", `"example.com"`, "$td"},
	{"get_ua", `"softphone/1.0"`, "$ua"},
	{"get_callid", `"kx-1@192.0.2.10"`, "$ci"},
	{"get_method", `"MESSAGE"`, "$rm"},
	{"get_body", `"hello\r\n"`, "$rb"},
	{"get_bodylen", "7", "$cl"},
	{"get_srcip", `"192.0.2.10"`, "$si"},
	{"get_srcport", "5062", "$sp"},
	{"get_rcvip", `"127.0.0.1"`, "$Ri"},
	{"get_rcvport", "5060", "$Rp"},
	{"get_proto", `"tcp"`, "$pr"},
	{"get_srcuri", `"sip:192.0.2.10:5062;transport=tcp"`, ""},
	{"get_status", "-1", ""},
	{"get_timestamp", fmt.Sprint(routetest.RouteTestEpoch.Unix()), ""},
}

func TestGetters(t *testing.T) {
	src := "def ksr_request_route():\n"
	for _, g := range getters {
		src += fmt.Sprintf("    KSR.info(%q + repr(KSR.kx.%s()))\n", g.fn+"=", g.fn)
		if g.pv != "" {
			src += fmt.Sprintf("    KSR.info(%q + repr(KSR.pv.get(%q)))\n", g.fn+"=", g.pv)
		}
	}
	src += "    KSR.info(\"msglen=\" + repr(KSR.kx.get_msglen()))\n"
	src += "    KSR.sl.sl_send_reply(200, \"OK\")\n"
	src += "\ndef ksr_reply_route():\n    KSR.info(\"status=\" + repr(KSR.kx.get_status()))\n"
	h, err := routetest.NewHarness(node.RouteTest, "kx.star", []byte(src), routetest.HarnessOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	raw := "MESSAGE sip:bob@example.com:5080;transport=tcp SIP/2.0\n" +
		"Via: SIP/2.0/TCP 192.0.2.10:5062;branch=z9hG4bK-kx\n" +
		"From: <sip:alice@atlanta.example.com>;tag=1\nTo: <sip:bob@example.com>\n" +
		"Call-ID: kx-1@192.0.2.10\nCSeq: 1 MESSAGE\nUser-Agent: softphone/1.0\nContent-Type: text/plain\n\nhello"
	msg, err := routetest.ParseMessage(raw)
	if err != nil {
		t.Fatal(err)
	}
	r, err := h.Request(msg.(*sip.Request), "192.0.2.10:5062", "tcp")
	if err != nil {
		t.Fatal(err)
	}
	if r.Error() != "" {
		t.Fatal(r.Error())
	}
	got := map[string][]string{}
	for _, l := range r.Logs {
		if k, v, ok := strings.Cut(l.Message, "="); ok && l.At != "" {
			got[k] = append(got[k], v)
		}
	}
	for _, g := range getters {
		vs := got[g.fn]
		if len(vs) == 0 || vs[0] != g.want {
			t.Errorf("%s() = %v, want %s", g.fn, vs, g.want)
		}
		if g.pv != "" && (len(vs) != 2 || vs[1] != vs[0]) {
			t.Errorf("%s() = %v differs from %s", g.fn, vs, g.pv)
		}
	}
	if n := got["msglen"]; len(n) != 1 || n[0] == "0" {
		t.Errorf("msglen %v", n)
	}
	res, err := routetest.ParseMessage("SIP/2.0 486 Busy Here\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-x\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-y\n" +
		"From: <sip:alice@example.com>;tag=1\nTo: <sip:bob@example.com>;tag=2\nCall-ID: r\nCSeq: 1 INVITE\n")
	if err != nil {
		t.Fatal(err)
	}
	rr, err := h.Reply(res.(*sip.Response), "192.0.2.20:5060", "udp")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, l := range rr.Logs {
		found = found || l.Message == "status=486"
	}
	if !found {
		t.Errorf("reply route logs %+v", rr.Logs)
	}
}

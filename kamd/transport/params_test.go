package transport

import (
	"strings"
	"testing"

	"github.com/kamgo/kamgo/modules/core"
)

// TestForwardKeepsHeaderParams: a valid INVITE whose From, To and Contact
// have a quoted parameter holding a space, and LWS around "=", is forwarded
// with them well formed. sipgo's writer quoted such values a second time
// (`;p=""x y""`) and wrote `;expires =" 60 "`; the sipgo re-parse oracle
// of the fuzz targets does not see it, sipgo reads both back.
func TestForwardKeepsHeaderParams(t *testing.T) {
	k := newFuzzKamd(t, "../../examples/kemi/route.star")
	var sent []string
	check := k.tr.sendHook
	k.tr.sendHook = func(o *core.Outgoing, data []byte) error {
		sent = append(sent, string(data))
		return check(o, data)
	}
	raw := "INVITE sip:bob@127.0.0.1 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-params\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: \"Al\" <sip:alice@127.0.0.1>;tag=a1;p=\"x y\"\r\n" +
		"To: <sip:bob@127.0.0.1>;q = \"a b\"\r\n" +
		"Call-ID: params@192.0.2.10\r\n" +
		"CSeq: 1 INVITE\r\n" +
		"Contact: <sip:alice@192.0.2.10:5070>;expires = 60 ; q = 0.5;+sip.instance=\"<urn:uuid:1>\"\r\n" +
		"Content-Length: 0\r\n\r\n"
	for _, proto := range []string{"udp", "tcp"} {
		sent = nil
		k.run(t, proto, []byte(raw))
		if len(sent) != 1 || !strings.HasPrefix(sent[0], "INVITE ") {
			t.Fatalf("%s: sent %q", proto, sent)
		}
		for _, want := range []string{
			"From: \"Al\" <sip:alice@127.0.0.1>;tag=a1;p=\"x y\"\r\n",
			"To: <sip:bob@127.0.0.1>;q=\"a b\"\r\n",
			"Contact: <sip:alice@192.0.2.10:5070>;expires=60;q=0.5;+sip.instance=\"<urn:uuid:1>\"\r\n",
		} {
			if !strings.Contains(sent[0], want) {
				t.Errorf("%s: forwarded without %q:\n%s", proto, want, sent[0])
			}
		}
	}
}

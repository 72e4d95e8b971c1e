package core

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// The allocation-free shortcuts on the hot path must give what the
// general code gives.

func TestParseHeaderTextMatchesSipgo(t *testing.T) {
	lines := []string{
		"X-KEMI: I came from KEMI at 127.0.0.1",
		"x-kemi:no space",
		"X-Long-Header-Name-Beyond-Thirty-Two-Bytes: v",
		"Subject:   padded   ",
		"s: compact subject",
		"Route: <sip:a.example;lr>",
		"ROUTE: <sip:a.example;lr>",
		"Contact: <sip:u@h:5070>;expires=60",
		"m: <sip:u@h>",
		"Max-Forwards: 10",
		"MAX-FORWARDS: 10",
		"Max-forwards: 10",
		"CSEQ: 1 INVITE",
		"Call-ID: abc",
		"i: abc",
		"Via: SIP/2.0/UDP h;branch=z9hG4bKx",
		"Content-Length: 0",
		"Expires: 60",
		"Record-Route: <sip:b;lr>",
	}
	for _, line := range lines {
		t.Run(line, func(t *testing.T) {
			got, err := ParseHeaderText(line + "\r\n")
			if err != nil {
				t.Fatal(err)
			}
			want, err := headerParser.ParseHeader(nil, []byte(line))
			if err != nil {
				t.Fatal(err)
			}
			if len(want) == 0 { // the fallback ParseHeaderText adds
				name, value, _ := strings.Cut(line, ":")
				want = append(want, sip.NewHeader(strings.TrimSpace(name), strings.TrimSpace(value)))
			}
			if len(got) != len(want) {
				t.Fatalf("%d headers, sipgo %d", len(got), len(want))
			}
			for i := range got {
				g := fmt.Sprintf("%T %s|%s", got[i], got[i].Name(), got[i].Value())
				w := fmt.Sprintf("%T %s|%s", want[i], want[i].Name(), want[i].Value())
				if g != w {
					t.Errorf("got %s, sipgo gives %s", g, w)
				}
			}
		})
	}
}

func TestProtoCase(t *testing.T) {
	for _, s := range []string{"udp", "UDP", "Udp", "tcp", "TCP", "tls", "TLS", "ws", "WS", "wss", "WSS", "sctp", "SCTP", "x-foo", ""} {
		if got, want := lowerProto(s), strings.ToLower(s); got != want {
			t.Errorf("lowerProto(%q) = %q, want %q", s, got, want)
		}
		if got, want := upperProto(s), strings.ToUpper(s); got != want {
			t.Errorf("upperProto(%q) = %q, want %q", s, got, want)
		}
	}
}

func TestNormHostMatchesNetIP(t *testing.T) {
	for _, h := range []string{"127.0.0.1", "10.0.0.255", "[127.0.0.1]", "1.2.3.4", "01.2.3.4", "1.2.3", "256.1.1.1",
		"::1", "[::1]", "::ffff:1.2.3.4", "[::FFFF:7F00:1]", "FE80::1", "fe80::1%eth0", "Example.COM", "host", ""} {
		want := strings.ToLower(strings.Trim(h, "[]"))
		if ip := net.ParseIP(want); ip != nil {
			want = ip.String()
		}
		if got := normHost(h); got != want {
			t.Errorf("normHost(%q) = %q, want %q", h, got, want)
		}
	}
}

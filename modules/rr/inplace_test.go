package rr

import (
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

// The in-place header edits (insertBefore's and removeHeaders' fast
// paths) must leave exactly what the general path (core.SetHeaders over a
// rebuilt list) leaves: the same text and the same typed header a
// getter returns.
func TestInPlaceEditsMatchGeneralPath(t *testing.T) {
	parse := func(t *testing.T, raw string) *sip.Request {
		t.Helper()
		m, err := sip.NewParser().ParseSIP([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		return m.(*sip.Request)
	}
	head := "INVITE sip:bob@example.com SIP/2.0\r\n"
	tail := "From: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
	rrHdr := func() []sip.Header {
		return []sip.Header{&sip.RecordRouteHeader{Address: sip.Uri{Scheme: "sip", Host: "10.0.0.1", UriParams: sip.HeaderParams{{K: "lr"}}}}}
	}
	double := func() []sip.Header {
		return append(rrHdr(), &sip.RecordRouteHeader{Address: sip.Uri{Scheme: "sip", Host: "10.0.0.2", UriParams: sip.HeaderParams{{K: "r2", V: "on"}, {K: "lr"}}}})
	}
	same := func(t *testing.T, fast, slow *sip.Request) {
		t.Helper()
		if fast.String() != slow.String() {
			t.Errorf("in place:\n%s\ngeneral path:\n%s", fast, slow)
		}
		if fast.RecordRoute() != nil && slow.RecordRoute() != nil && fast.RecordRoute().Value() != slow.RecordRoute().Value() ||
			(fast.RecordRoute() == nil) != (slow.RecordRoute() == nil) {
			t.Errorf("RecordRoute(): in place %v, general path %v", fast.RecordRoute(), slow.RecordRoute())
		}
		if fast.Route() != nil && slow.Route() != nil && fast.Route().Value() != slow.Route().Value() ||
			(fast.Route() == nil) != (slow.Route() == nil) {
			t.Errorf("Route(): in place %v, general path %v", fast.Route(), slow.Route())
		}
		if (fast.Via() == nil) != (slow.Via() == nil) || fast.Via() != nil && fast.Via().Value() != slow.Via().Value() {
			t.Errorf("Via(): in place %v, general path %v", fast.Via(), slow.Via())
		}
	}
	for _, tc := range []struct {
		name string
		raw  string
		add  func() []sip.Header
	}{
		{"one Via", head + "Via: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\n" + tail, rrHdr},
		{"two Vias, Max-Forwards between", head + "Via: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\nMax-Forwards: 70\r\nVia: SIP/2.0/UDP 5.6.7.8;branch=z9hG4bK2\r\n" + tail, rrHdr},
		{"double RR", head + "Via: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\n" + tail, double},
		{"compact Via", head + "v: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\n" + tail, double},
		{"Record-Route there", head + "Via: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\nRecord-Route: <sip:9.9.9.9;lr>\r\n" + tail, double},
		{"no Via", head + tail, rrHdr},
	} {
		t.Run("insertBefore/"+tc.name, func(t *testing.T) {
			fast, slow := parse(t, tc.raw), parse(t, tc.raw)
			insertBefore(fast, "record-route", tc.add())
			add := tc.add()
			old := core.Headers(slow)
			at, lastVia := -1, 0
			for i, h := range old {
				if at < 0 && headerIs(h, "record-route") {
					at = i
				}
				if headerIs(h, "via") {
					lastVia = i + 1
				}
			}
			if at < 0 {
				at = lastVia
			}
			core.SetHeaders(slow, append(append(append([]sip.Header(nil), old[:at]...), add...), old[at:]...))
			same(t, fast, slow)
		})
	}
	routeSet := "Route: <sip:10.0.0.1;r2=on;lr>\r\nRoute: <sip:10.0.0.2;r2=on;lr>\r\nRoute: <sip:9.9.9.9;lr>\r\n"
	for _, tc := range []struct {
		name string
		drop func(rts []*sip.RouteHeader) []sip.Header
		fast bool // the in-place path applies
	}{
		{"top Route", func(r []*sip.RouteHeader) []sip.Header { return []sip.Header{r[0]} }, true},
		{"top two Routes", func(r []*sip.RouteHeader) []sip.Header { return []sip.Header{r[0], r[1]} }, true},
		{"last Route", func(r []*sip.RouteHeader) []sip.Header { return []sip.Header{r[2]} }, false},
		{"second then first", func(r []*sip.RouteHeader) []sip.Header { return []sip.Header{r[1], r[0]} }, false},
	} {
		t.Run("removeHeaders/"+tc.name, func(t *testing.T) {
			raw := head + "Via: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\n" + routeSet + tail
			fast, slow := parse(t, raw), parse(t, raw)
			fr, err := routes(fast)
			if err != nil {
				t.Fatal(err)
			}
			sr, _ := routes(slow)
			// What removeFirst says it can do, then the general path's result.
			probe := parse(t, raw)
			pr, _ := routes(probe)
			if got := removeFirst(probe, tc.drop(pr)); got != tc.fast {
				t.Errorf("removeFirst took the in-place path: %v, want %v", got, tc.fast)
			}
			removeHeaders(fast, tc.drop(fr)...)
			drop := tc.drop(sr)
			var out []sip.Header
		outer:
			for _, h := range core.Headers(slow) {
				for _, d := range drop {
					if h == d {
						continue outer
					}
				}
				out = append(out, h)
			}
			core.SetHeaders(slow, out)
			same(t, fast, slow)
		})
	}
}

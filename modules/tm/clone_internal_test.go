package tm

import (
	"testing"

	"github.com/emiago/sipgo/sip"
)

// cloneReq must copy what sipgo's Clone copies: the same message, the same
// header a getter returns, and a copy no change to the original reaches
// (nor the other way round), whether a header went into the box or not.
func TestCloneReqIsADeepCopy(t *testing.T) {
	for _, raw := range []string{
		// One of each boxed header.
		"INVITE sip:bob@example.com;transport=udp SIP/2.0\r\n" +
			"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport\r\n" +
			"Record-Route: <sip:10.0.0.1;lr;ftag=a>\r\n" +
			"From: \"A\" <sip:a@example.com;user=phone>;tag=a\r\n" +
			"To: <sip:bob@example.com>\r\n" +
			"Call-ID: c1\r\nCSeq: 1 INVITE\r\nContact: <sip:a@192.0.2.1?X-H=1>;expires=60\r\nMax-Forwards: 70\r\n" +
			"Subject: s\r\nContent-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n",
		// More than the box holds: Vias, Record-Routes, params.
		"INVITE sip:bob@example.com SIP/2.0\r\n" +
			"v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;a=1;b=2;c=3;d=4;e=5\r\n" +
			"Via: SIP/2.0/TCP 192.0.2.2:5070;branch=z9hG4bK2;received=1.2.3.4;rport=9\r\n" +
			"Via: SIP/2.0/UDP 192.0.2.3;branch=z9hG4bK3\r\n" +
			"Record-Route: <sip:10.0.0.1;lr;r2=on>\r\nRecord-Route: <sip:10.0.0.2;lr>\r\n" +
			"Route: <sip:10.0.0.3;lr>\r\n" +
			"f: <sip:a@example.com>;tag=a;x=1;y=2\r\nt: <sip:bob@example.com>;tag=b\r\n" +
			"i: c2\r\nCSeq: 2 INVITE\r\nm: <sip:a@192.0.2.1>\r\nContact: <sip:b@192.0.2.1>\r\nl: 0\r\n\r\n",
	} {
		parse := func() *sip.Request {
			m, err := sip.NewParser().ParseSIP([]byte(raw))
			if err != nil {
				t.Fatal(err)
			}
			return m.(*sip.Request)
		}
		orig := parse()
		want := orig.Clone()
		got := cloneReq(orig)
		if got.String() != want.String() {
			t.Fatalf("cloneReq:\n%s\nsipgo's Clone:\n%s", got, want)
		}
		if got.Via().Value() != want.Via().Value() || got.From().Value() != want.From().Value() || got.To().Value() != want.To().Value() ||
			got.Contact().Value() != want.Contact().Value() || got.CSeq().Value() != want.CSeq().Value() ||
			got.RecordRoute().Value() != want.RecordRoute().Value() || got.CallID().Value() != want.CallID().Value() {
			t.Errorf("getters differ from sipgo's Clone's")
		}
		// Change every param list of the copy (in place and by append):
		// the original must not see it, and the copy must end as sipgo's
		// copy changed alike (no copy writes into another's params).
		before := orig.String()
		mutate(got)
		mutate(want)
		if got.String() != want.String() {
			t.Errorf("cloneReq's copy, changed:\n%s\nsipgo's, changed alike:\n%s", got, want)
		}
		if orig.String() != before {
			t.Errorf("changing the copy changed the original:\n%s\nwas:\n%s", orig, before)
		}
		// And the other way round.
		got = cloneReq(orig)
		copyText := got.String()
		orig.Via().Params.Add("branch", "again")
		orig.From().Params.Add("tag", "again")
		orig.CSeq().SeqNo = 77
		if got.String() != copyText {
			t.Errorf("changing the original changed the copy:\n%s\nwas:\n%s", got, copyText)
		}
	}
}

// mutate changes every param list of r, in place and by append.
func mutate(r *sip.Request) {
	for _, h := range r.Headers() {
		switch h := h.(type) {
		case *sip.ViaHeader:
			h.Params.Add("branch", "changed")
			h.Params = append(h.Params, sip.HeaderKV{K: "new", V: "1"})
		case *sip.FromHeader:
			h.Params.Add("tag", "changed")
			h.Address.UriParams = append(h.Address.UriParams, sip.HeaderKV{K: "new"})
		case *sip.ToHeader:
			h.Params = append(h.Params, sip.HeaderKV{K: "tag", V: "new"})
		case *sip.ContactHeader:
			h.Address.Host = "changed"
			h.Params = append(h.Params, sip.HeaderKV{K: "new"})
		case *sip.RecordRouteHeader:
			h.Address.UriParams.Add("lr", "changed")
			h.Address.UriParams = append(h.Address.UriParams, sip.HeaderKV{K: "new"})
		case *sip.CSeqHeader:
			h.SeqNo = 99
		}
	}
}

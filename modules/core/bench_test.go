package core

// Build/serialise-stage benchmarks: what the Sender gets and writes.
//
//	go test ./modules/core -run '^$' -bench . -benchmem

import (
	"bytes"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

const benchInvite = "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-1234-1-0\r\n" +
	"From: sipp <sip:sipp@127.0.0.1:5080>;tag=1234SIPpTag001\r\n" +
	"To: service <sip:service@127.0.0.1:5060>\r\n" +
	"Call-ID: 1-1234@127.0.0.1\r\n" +
	"CSeq: 1 INVITE\r\n" +
	"Contact: sip:sipp@127.0.0.1:5080\r\n" +
	"Max-Forwards: 70\r\n" +
	"Subject: Performance Test\r\n" +
	"Content-Type: application/sdp\r\n" +
	"Content-Length: 129\r\n\r\n" +
	"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"

const benchRegister = "REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-1234-1-0\r\n" +
	"Max-Forwards: 70\r\n" +
	"From: <sip:user1@127.0.0.1>;tag=1\r\n" +
	"To: <sip:user1@127.0.0.1>\r\n" +
	"Call-ID: 1-1234@127.0.0.1\r\n" +
	"CSeq: 1 REGISTER\r\n" +
	"Contact: <sip:user1@127.0.0.1:5090>\r\n" +
	"Expires: 3600\r\n" +
	"Content-Length: 0\r\n\r\n"

func benchReq(b *testing.B, raw string) *sip.Request {
	b.Helper()
	m, err := sip.NewParser().ParseSIP([]byte(raw))
	if err != nil {
		b.Fatal(err)
	}
	return m.(*sip.Request)
}

// serialiser writes like the transport's Sender: into a reused buffer.
type serialiser struct {
	buf bytes.Buffer
	n   int
}

func (s *serialiser) Send(o *Outgoing) error {
	s.buf.Reset()
	o.Msg.StringWrite(&s.buf)
	s.n += s.buf.Len()
	return nil
}

func benchEnv() (*Env, *serialiser) {
	s := &serialiser{}
	env := NewEnv(s)
	env.Sockets = []Socket{{Proto: "udp", IP: "127.0.0.1", Port: 5060}}
	return env, s
}

// BenchmarkForwardSerialise: the stateless forward path after routing:
// StatelessBranch + our Via prepended + serialise + Via popped.
func BenchmarkForwardSerialise(b *testing.B) {
	env, s := benchEnv()
	req := benchReq(b, benchInvite)
	m := &Msg{Env: env, Req: req, Proto: "udp", SrcIP: "127.0.0.1", SrcPort: 5080}
	dst := Target{Proto: "udp", Host: "127.0.0.1", Port: 5070}
	b.ReportAllocs()
	for b.Loop() {
		if err := m.SendRequest(req, dst, OutForward, StatelessBranch(req), 0); err != nil {
			b.Fatal(err)
		}
	}
	if s.n == 0 {
		b.Fatal("nothing written")
	}
}

// BenchmarkReplySerialise: the stateless reply path: BuildReply + serialise.
func BenchmarkReplySerialise(b *testing.B) {
	env, s := benchEnv()
	req := benchReq(b, benchRegister)
	m := &Msg{Env: env, Req: req, Proto: "udp", SrcIP: "127.0.0.1", SrcPort: 5090}
	b.ReportAllocs()
	for b.Loop() {
		if err := m.SendReply(200, "OK"); err != nil {
			b.Fatal(err)
		}
	}
	if s.n == 0 {
		b.Fatal("nothing written")
	}
}

// BenchmarkBuildReply: BuildReply alone (no serialisation).
func BenchmarkBuildReply(b *testing.B) {
	req := benchReq(b, benchRegister)
	b.ReportAllocs()
	for b.Loop() {
		_ = BuildReply(req, 200, "OK", nil)
	}
}

// BenchmarkSerialiseInvite: serialising a parsed INVITE, strings.Builder
// (sipgo's String) for comparison with the reused buffer above.
func BenchmarkSerialiseInvite(b *testing.B) {
	req := benchReq(b, benchInvite)
	b.ReportAllocs()
	for b.Loop() {
		var sb strings.Builder
		req.StringWrite(&sb)
	}
}

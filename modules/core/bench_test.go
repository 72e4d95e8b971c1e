package core

// Build/serialise-stage benchmarks: what the Sender gets and writes.
//
//	go test ./modules/core -run '^$' -bench . -benchmem

import (
	"bytes"
	"strings"
	"testing"

	"github.com/kamgo/kamgo/modules/moduletest/sippmsg"

	"github.com/emiago/sipgo/sip"
)

func benchReq(b testing.TB, raw string) *sip.Request {
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
	WriteMessage(&s.buf, o.Msg)
	s.n += s.buf.Len()
	return nil
}

func benchEnv() (*Env, *serialiser) {
	s := &serialiser{}
	env := NewEnv(s)
	env.SetSockets([]Socket{{Proto: "udp", IP: "127.0.0.1", Port: 5060}})
	return env, s
}

// BenchmarkForwardSerialise: the stateless forward path after routing:
// StatelessBranch + our Via prepended + serialise + Via popped.
func BenchmarkForwardSerialise(b *testing.B) {
	env, s := benchEnv()
	req := benchReq(b, sippmsg.Invite)
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
	req := benchReq(b, sippmsg.Register)
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
	req := benchReq(b, sippmsg.Register)
	b.ReportAllocs()
	for b.Loop() {
		_ = BuildReply(req, 200, "OK", nil)
	}
}

// BenchmarkSerialiseInvite: serialising a parsed INVITE, strings.Builder
// (sipgo's String) for comparison with the reused buffer above.
func BenchmarkSerialiseInvite(b *testing.B) {
	req := benchReq(b, sippmsg.Invite)
	b.ReportAllocs()
	for b.Loop() {
		var sb strings.Builder
		req.StringWrite(&sb)
	}
}

// BenchmarkDoor: kamd's checks before routing on a well-formed INVITE
// (WireProblem on its bytes, RequestRefusal on the parsed request).
func BenchmarkDoor(b *testing.B) {
	data := []byte(sippmsg.Invite)
	req := benchReq(b, sippmsg.Invite)
	b.ReportAllocs()
	for b.Loop() {
		if code, why := WireProblem(req, data, true); code != 0 {
			b.Fatal(why)
		}
		if code, why := RequestRefusal(req); code != 0 {
			b.Fatal(why)
		}
	}
}

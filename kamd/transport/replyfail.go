package transport

import (
	"bytes"
	"strconv"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

// maxUDPPayload is the largest datagram IPv4 can carry (65535 - 8 - 20);
// a reply beyond it cannot go over UDP at all.
const maxUDPPayload = 65507

// replyFailed handles a reply that could not be sent: it is never dropped
// silently. It is logged and counted (core:rpl_send_failed), and a final
// reply is replaced by a small 500 built from its own Via, From, To,
// Call-ID and CSeq, with a Warning that says why — so the client sees an
// error instead of retransmitting into silence (a 200 listing thousands
// of contacts over UDP). If that fails too (the connection is gone) the
// log is all there is.
func (t *Transport) replyFailed(o *core.Outgoing, res *sip.Response, size int, err error) {
	t.sendFailed.Inc()
	t.log.Warn("reply not sent", "code", res.StatusCode, "dst", o.Dst.String(), "bytes", size, "err", err)
	if res.StatusCode < 200 {
		return
	}
	small := sip.NewResponse(500, "Server Internal Error")
	small.SipVersion = res.SipVersion
	for _, name := range []string{"Via", "From", "To", "Call-ID", "CSeq"} {
		for _, h := range res.GetHeaders(name) {
			small.AppendHeader(sip.HeaderClone(h))
		}
	}
	small.AppendHeader(sip.NewHeader("Warning", `399 kamd "the `+strconv.Itoa(res.StatusCode)+` reply (`+strconv.Itoa(size)+` bytes) could not be sent"`))
	if sh := core.ServerHeader(); sh != "" {
		small.AppendHeader(sip.NewHeader("Server", sh))
	}
	cl := sip.ContentLengthHeader(0)
	small.AppendHeader(&cl)
	so := *o
	so.Msg = small
	var b bytes.Buffer
	small.StringWrite(&b)
	// Straight to sendBytes: the replacement is never replaced in turn.
	if err := t.sendBytes(&so, b.Bytes()); err != nil {
		t.log.Warn("replacement 500 not sent either", "dst", o.Dst.String(), "err", err)
		return
	}
	t.log.Info("sent 500 in place of a reply that could not be sent", "code", res.StatusCode, "dst", o.Dst.String(), "bytes", size)
}

// shedInvite answers a new INVITE (no To tag) 503 at once while tm's
// transaction table has no room for one (core.Env.ShedInvites): the
// flood costs a parse and a small reply, never a queue slot or a script
// run, so the requests still served (REGISTER, OPTIONS, in-dialog) are
// not starved. Counted with tm's own refusals (tm:refused_overload).
func (t *Transport) shedInvite(j job, req *sip.Request) bool {
	if !req.IsInvite() || req.Via() == nil || !t.shedding() {
		return false
	}
	if to := req.To(); to == nil || to.Params.Has("tag") {
		return false
	}
	if c, _ := core.RequestRefusal(req); c != 0 {
		return false // the door answers it
	}
	m := t.newMsg(j)
	m.Req = req
	if j.proto != "udp" {
		m.ForceRport()
	}
	m.FixVia()
	res := core.BuildReply(req, 503, "Service Unavailable", []sip.Header{sip.NewHeader("Retry-After", "5")})
	_ = t.Send(m.ReplyOutgoing(res, core.OutReply))
	t.shed.Inc()
	return true
}

// shedding reports whether new INVITEs are refused at the door: tm's
// table is full, or the worker queues overflowed in the last second
// (queueFull): then INVITEs, which start the most work, go first, and
// what still gets a queue slot is everything else.
func (t *Transport) shedding() bool {
	return t.env.ShedInvites.Load() || time.Now().UnixNano() < t.shedUntil.Load()
}

// queueFull notes a worker queue overflowing with a new INVITE (see shedding).
func (t *Transport) queueFull(j job) {
	if req, ok := j.msg.(*sip.Request); ok && req.IsInvite() {
		if to := req.To(); to != nil && !to.Params.Has("tag") {
			t.shedUntil.Store(time.Now().Add(time.Second).UnixNano())
		}
	}
}

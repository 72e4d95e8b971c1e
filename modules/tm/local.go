package tm

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

// Requests kamd originates itself (uac's REGISTERs, uac_req_send): a client
// transaction with no server side. Replies are matched by our Via branch in
// onReply like relayed ones, but go to the caller's Go callback instead of
// upstream.

var instances sync.Map // *core.Env -> *TM

// ErrNotLoaded is returned by Of when no tm was built for the Env.
var ErrNotLoaded = errors.New("tm: module not loaded")

// ErrStopped is returned by SendRequest once tm has stopped.
var ErrStopped = errors.New("tm: stopped")

// Of returns the tm instance built for env (an error if tm is not loaded).
func Of(env *core.Env) (*TM, error) {
	if v, ok := instances.Load(env); ok {
		return v.(*TM), nil
	}
	return nil, ErrNotLoaded
}

// LocalRequest is a request kamd itself originates, sent statefully by tm.
type LocalRequest struct {
	// Req is built by the caller: R-URI, From (with tag), To, Call-ID,
	// CSeq, Contact, Expires, body... tm adds its own top Via (branch),
	// Max-Forwards if absent, and Content-Length. tm sends a copy.
	Req *sip.Request
	// Dst is the next hop; the zero value resolves from Req's R-URI.
	Dst core.Target
	// Socket is an optional local socket "proto:ip:port" to send from
	// ("" = the first socket of the target's protocol).
	Socket string
	// OnReply gets every provisional and the final reply; the final exactly
	// once. A timeout (timer F / B) delivers a locally built 408 Request
	// Timeout, a failure to send a 503. It runs on the goroutine that
	// received the reply (or fired the timer): it must not block.
	OnReply func(res *sip.Response)
}

// SendRequest starts the client transaction for lr: it retransmits on UDP
// (T1 doubling, capped at T2 for non-INVITE), ends at fr_timer (Kamailio's timer F/B for requests it makes; 30 s by default, as 64*T1 nearly) with a 408
// (an INVITE that got a provisional waits fr_inv_timer instead, then is
// CANCELed), ACKs a negative final reply to an INVITE (a 2xx is the
// caller's to ACK) and hands every reply to lr.OnReply. It returns an error
// only if the request cannot be sent at all (bad request or target, no
// such local socket, tm stopped).
func (t *TM) SendRequest(lr *LocalRequest) error {
	if t.stopped.Load() {
		return ErrStopped
	}
	if lr == nil || lr.Req == nil {
		return errors.New("tm: SendRequest: no request")
	}
	req := lr.Req.Clone()
	cs, cid := req.CSeq(), req.CallID()
	if cs == nil || cid == nil || req.From() == nil || req.To() == nil {
		return errors.New("tm: SendRequest: the request needs From, To, Call-ID and CSeq")
	}
	if req.IsAck() || req.IsCancel() {
		return fmt.Errorf("tm: SendRequest: %s is not sent in its own transaction", req.Method)
	}
	dst := lr.Dst
	if dst.Host == "" {
		dst = core.TargetOf(&req.Recipient)
	}
	if dst.Proto == "" {
		dst.Proto = "udp"
	}
	if dst.Port == 0 {
		dst.Port = core.DefaultPort(dst.Proto)
	}
	sock, err := t.localSocket(lr.Socket, dst.Proto)
	if err != nil {
		return err
	}
	if t.env.IsLoop(dst) {
		return fmt.Errorf("tm: SendRequest to %s: %w", dst, core.ErrLoop)
	}
	if req.MaxForwards() == nil {
		mf := sip.MaxForwardsHeader(70)
		req.AppendHeader(&mf)
	}
	req.SetBody(req.Body()) // sets Content-Length
	if req.ContentLength() == nil {
		cl := sip.ContentLengthHeader(0)
		req.AppendHeader(&cl)
	}
	key := "local|" + string(*cid) + "|" + strconv.FormatUint(uint64(cs.SeqNo), 10) + "|" + string(req.Method)
	id := branchID(key, t.seq.Add(1))
	b := &branch{dst: dst, via: id + ".0"}
	req.PrependHeader(core.OurVia(sock, b.via))
	b.req, b.method = req, req.Method
	tx := &Tx{tm: t, key: key + "|" + id, id: id, local: lr, origin: &core.Msg{Env: t.env},
		invite: req.IsInvite(), branches: []*branch{b},
		frTimeout: time.Duration(t.frTimer.Load()) * time.Millisecond, frInv: time.Duration(t.frInvTimer.Load()) * time.Millisecond}
	b.tx = tx
	t.mu.Lock()
	t.txs[tx.key] = tx
	t.clients[id] = tx
	t.mu.Unlock()
	t.st.created.Inc()
	t.st.current.Inc()

	if err := tx.send(b); err != nil {
		t.env.Log.Warn("tm: cannot send local request", "method", string(req.Method), "dst", dst.String(), "err", err)
		// Delivered from a timer, never from inside SendRequest: the caller
		// may hold its own lock while it sends.
		tx.mu.Lock()
		tx.after(0, func() { tx.localFail(b, 503, "Service Unavailable") })
		tx.mu.Unlock()
		return nil
	}
	tx.mu.Lock()
	tx.armRetransmit(b)
	b.fr = tx.after(tx.frTimeout, func() { tx.localFail(b, 408, "Request Timeout") })
	tx.mu.Unlock()
	return nil
}

// localSocket picks the socket a local request leaves from.
func (t *TM) localSocket(spec, proto string) (core.Socket, error) {
	if spec == "" {
		sock, ok := t.env.SocketFor(proto)
		if !ok {
			return core.Socket{}, fmt.Errorf("tm: SendRequest: no %s socket", proto)
		}
		return sock, nil
	}
	want, err := core.ParseSocket(spec)
	if err != nil {
		return core.Socket{}, fmt.Errorf("tm: SendRequest: socket: %w", err)
	}
	if want.Proto != proto {
		return core.Socket{}, fmt.Errorf("tm: SendRequest: socket %s cannot send to a %s target", spec, proto)
	}
	for _, s := range t.env.Sockets() {
		if s.Proto == want.Proto && s.Port == want.Port && s.IP == want.IP {
			return s, nil
		}
	}
	return core.Socket{}, fmt.Errorf("tm: SendRequest: %s is not a local listen socket", spec)
}

// onLocalReply handles a reply to a request kamd originated.
func (tx *Tx) onLocalReply(b *branch, res *sip.Response) {
	code := res.StatusCode
	tx.mu.Lock()
	if b.final {
		// A retransmitted final (or one after our timeout): absorbed; a
		// negative INVITE final is ACKed again (RFC 3261 17.1.1.2).
		tx.mu.Unlock()
		if tx.invite && code >= 300 {
			tx.ackBranch(b, res)
		}
		return
	}
	if b.retr != nil && (code >= 200 || tx.invite) {
		b.retr.Stop()
	}
	b.code = code
	if code < 200 {
		if tx.invite && b.fr != nil {
			// Timer B ends with the first provisional; the callee may ring
			// for fr_inv_timer.
			b.fr.Stop()
			b.fr = tx.after(tx.frInv, func() { tx.localFail(b, 408, "Request Timeout") })
		}
		tx.mu.Unlock()
		tx.deliver(res)
		return
	}
	b.final = true
	if b.fr != nil {
		b.fr.Stop()
	}
	tx.mu.Unlock()
	if tx.invite && code >= 300 {
		tx.ackBranch(b, res)
	}
	tx.tm.st.codes[code/100].Inc()
	tx.deliver(res)
	tx.finishLocal()
}

// localFail ends a local transaction with a reply built here (408 on
// timeout, 503 when the request could not be sent).
func (tx *Tx) localFail(b *branch, code int, reason string) {
	tx.mu.Lock()
	if b.final || tx.deleted {
		tx.mu.Unlock()
		return
	}
	sendCancel := tx.invite && b.code > 0 && b.code < 200
	b.final, b.code = true, code
	b.timedOut = code == 408
	b.cancelled = b.cancelled || sendCancel
	if b.retr != nil {
		b.retr.Stop()
	}
	tx.mu.Unlock()
	if code == 408 {
		tx.tm.st.timeouts.Inc()
	}
	if sendCancel {
		tx.sendCancel(b)
	}
	tx.tm.st.rplGenerated.Inc()
	res := core.BuildReply(b.req, code, reason, nil)
	generated.Store(res, true)
	tx.deliver(res)
	generated.Delete(res)
	tx.finishLocal()
}

// generated holds the replies tm built itself while OnReply runs.
var generated sync.Map // *sip.Response -> bool

// Generated reports, inside OnReply, whether res was built by tm (the 408
// of timer F/B, the 503 of a send failure) rather than received:
// Kamailio's $uac_req(evtype) 2 versus 1.
func Generated(res *sip.Response) bool {
	_, ok := generated.Load(res)
	return ok
}

// FailedReply is, in a failure route, the final reply of the branch that
// failed (nil when it timed out or was not sent): uac_auth reads its
// challenge.
func FailedReply(m *core.Msg) *sip.Response {
	b, _ := m.Ext["tm.branch"].(*branch)
	tx, _ := m.Tx.(*Tx)
	if b == nil || tx == nil {
		return nil
	}
	tx.mu.Lock()
	defer tx.mu.Unlock()
	return b.reply
}

// deliver hands a reply to the caller's callback, shielding tm from a panic in it.
func (tx *Tx) deliver(res *sip.Response) {
	if tx.local.OnReply == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			tx.tm.env.Log.Error("tm: local request reply callback panicked", "panic", r, "code", res.StatusCode)
		}
	}()
	tx.local.OnReply(res)
}

// finishLocal keeps the finished transaction for wait_timer, so
// retransmitted finals are absorbed (and negative INVITE finals re-ACKed),
// then forgets it.
func (tx *Tx) finishLocal() {
	tx.mu.Lock()
	tx.finalSent = true
	tx.state = stCompleted
	tx.after(time.Duration(tx.tm.waitTimer.Load())*time.Millisecond, tx.release)
	tx.mu.Unlock()
}

package tm

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

var noSettings settings

// newTx creates and registers the transaction for m's request.
func (t *TM) newTx(m *core.Msg, key string) *Tx {
	origin := &core.Msg{Env: m.Env, Req: cloneReq(m.Req), Proto: m.Proto, SrcIP: m.SrcIP, SrcPort: m.SrcPort,
		Local: m.Local, ConnID: m.ConnID, Arrived: m.Arrived, SendSocket: m.SendSocket, ReplyFrom: m.ReplyFrom}
	s, _ := m.Ext["tm"].(*settings) // t_set_fr's, if any
	if s == nil {
		s = &noSettings
	}
	tx := &Tx{tm: t, key: key, id: branchID(key, t.seq.Add(1)), origin: origin, prog: m.Prog,
		up:        *origin.ReplyOutgoing(nil, core.OutReply),
		invite:    m.Req.IsInvite(),
		frTimeout: nz(s.fr, time.Duration(t.frTimer.Load())*time.Millisecond),
		frInv:     nz(s.frInv, time.Duration(t.frInvTimer.Load())*time.Millisecond)}
	tx.cost = txCost(m)
	t.txBytes.Add(tx.cost)
	if tx.invite {
		tx.dlg = dlgKey(m.Req)
	}
	tx.data = snapshotExt(m.Ext)
	t.mu.Lock()
	t.txs[key] = tx
	t.clients[tx.id] = tx
	if tx.dlg != "" {
		t.dlgs[tx.dlg] = tx
	}
	t.mu.Unlock()
	t.st.created.Inc()
	t.st.current.Inc()
	life := t.maxLife.Load()
	if tx.invite {
		life = t.maxInvLife.Load()
	}
	tx.mu.Lock()
	tx.after(time.Duration(life)*time.Millisecond, tx.expire)
	tx.mu.Unlock()
	m.Tx = tx
	return tx
}

// expire is max_inv_lifetime/max_noninv_lifetime: a transaction that has
// not finished by then is ended, so nothing lives forever (a t_newtran with
// no reply, a branch whose final reply never comes).
func (tx *Tx) expire() {
	tx.mu.Lock()
	if tx.deleted || tx.finalSent {
		tx.mu.Unlock()
		return
	}
	if len(tx.branches) == 0 {
		tx.mu.Unlock()
		tx.tm.env.Log.Warn("tm: transaction neither replied nor relayed before its lifetime ended; freed", "key", tx.key)
		tx.release()
		return
	}
	tx.onFailure = ""
	var cancels []*branch
	for _, b := range tx.branches {
		if b.final {
			continue
		}
		if tx.invite && b.code > 0 && b.code < 200 && !b.cancelled {
			b.cancelled = true
			cancels = append(cancels, b)
		}
		b.final, b.timedOut, b.code = true, true, 408
	}
	tx.mu.Unlock()
	for _, b := range cancels {
		tx.sendCancel(b)
	}
	tx.maybeComplete()
}

// release forgets the transaction after the wait timer.
func (tx *Tx) scheduleRelease() {
	if tx.deleted {
		return
	}
	// A finished transaction is kept only to absorb retransmissions (it
	// resends lastReply): drop the copies only routing needed, so the
	// thousands held through wait_timer stay small. The failure route
	// cannot run any more (a final reply went up).
	tx.relayReq = nil
	tx.origin.Req = nil // replies go to tx.up; no local reply can follow a final one
	for _, b := range tx.branches {
		if !b.final {
			continue
		}
		b.reply = nil // the winner, if any, lives on as lastReply
		if !tx.invite || (b.code >= 200 && b.code < 300) {
			// Nothing sends this branch's request again: no CANCEL or
			// retransmission once final, and only a negative INVITE
			// reply (retransmitted) is ACKed. With origin.Req gone, this
			// frees the request's headers (~2 KB per transaction).
			b.req = nil
		}
	}
	// What it holds now is a finished transaction's: the admission bound
	// counts that from here on (tx.cost is what release gives back).
	if fc := txFinishedCost(tx.cost); fc < tx.cost {
		tx.tm.txBytes.Add(fc - tx.cost)
		tx.cost = fc
	}
	if tx.invite && tx.lastCode >= 300 && tx.origin.Proto == "udp" && !tx.acked {
		// Timer H: wait for the ACK, whose arrival frees the transaction
		// sooner (onRequest): a timer of its own, stopped then.
		tx.after(64*T1, tx.release)
		return
	}
	tx.tm.reap.add(tx, time.Duration(tx.tm.waitTimer.Load())*time.Millisecond)
}

// releaseIfIdle frees a transaction that has no pending branch and sent
// no final reply (a failed t_relay): nothing else would ever free it.
func (tx *Tx) releaseIfIdle() bool {
	tx.mu.Lock()
	idle := !tx.pending() && !tx.finalSent
	if idle {
		tx.after(0, tx.release)
	}
	tx.mu.Unlock()
	return idle
}

func (tx *Tx) release() {
	tx.mu.Lock()
	if tx.deleted {
		tx.mu.Unlock()
		return
	}
	tx.deleted = true
	tx.stopTimers()
	tx.mu.Unlock()
	t := tx.tm
	t.mu.Lock()
	if t.txs[tx.key] == tx {
		delete(t.txs, tx.key)
	}
	delete(t.clients, tx.id)
	if tx.dlg != "" && t.dlgs[tx.dlg] == tx {
		delete(t.dlgs, tx.dlg)
	}
	t.mu.Unlock()
	t.st.freed.Inc()
	t.st.current.Add(-1)
	t.txBytes.Add(-tx.cost)
	if t.env.ShedInvites.Load() && t.roomForInvite() {
		t.env.ShedInvites.Store(false)
	}
}

func (t *TM) newtran(m *core.Msg) (core.Val, error) {
	if m.Req == nil {
		return core.Null, core.ErrNoRequest
	}
	if m.Tx != nil {
		return core.Int(-10), nil
	}
	if m.Req.IsAck() {
		return core.Int(-1), nil
	}
	key := txKey(m.Req, methodKey(m.Req))
	if tx := t.lookup(key); tx != nil {
		tx.retransmitLastReply()
		return core.Int(0), nil
	}
	if !t.admit(m) {
		return core.Int(-1), nil
	}
	t.newTx(m, key)
	return core.Int(1), nil
}

func (t *TM) checkTrans(m *core.Msg) core.Val {
	if m.Res != nil {
		_, tx, _ := t.matchReply(m.Res)
		return core.IntRet(tx != nil)
	}
	if m.Req == nil {
		return core.Int(-1)
	}
	tx := t.lookupReq(m.Req, methodKey(m.Req))
	switch {
	case tx == nil && m.Req.IsAck():
		// An ACK to a 2xx has its own branch: match it to the INVITE
		// transaction that relayed the 2xx (Kamailio's e2e ACK matching).
		inv := t.lookupDlg(m.Req)
		if inv != nil {
			inv.mu.Lock()
			ok := inv.sent2xx
			inv.mu.Unlock()
			if ok {
				return core.Int(1)
			}
		}
		return core.Int(-1)
	case tx == nil:
		return core.Int(-1)
	case m.Req.IsCancel():
		return core.Int(1)
	case m.Req.IsAck():
		tx.mu.Lock()
		neg := tx.lastCode >= 300
		tx.mu.Unlock()
		if neg {
			return core.Int(0)
		}
		return core.Int(1)
	}
	tx.retransmitLastReply()
	return core.Int(0)
}

// onRequest absorbs what tm owns before the script runs: retransmissions
// of requests with a transaction, ACKs to negative replies of ours, and
// CANCELs of a pending INVITE (which it propagates). Kamailio leaves this
// to t_check_trans() in the script; doing it here cannot be forgotten.
func (t *TM) onRequest(m *core.Msg) bool {
	if t.st.current.Value() == 0 {
		return false // no transaction at all (stateless scripts): nothing to match
	}
	req := m.Req
	tx := t.lookupReq(req, methodKey(req))
	if tx == nil {
		return false
	}
	switch {
	case req.IsAck():
		tx.mu.Lock()
		neg := tx.lastCode >= 300
		if neg && !tx.acked {
			// Timer G stops; keep absorbing ACK retransmissions for wait_timer (Timer I).
			tx.acked = true
			tx.after(time.Duration(t.waitTimer.Load())*time.Millisecond, tx.release)
		}
		tx.mu.Unlock()
		return neg // an ACK to a 2xx has its own branch and is routed by the script
	case req.IsCancel():
		t.cancel(m, tx)
		return true
	}
	tx.retransmitLastReply()
	return true
}

func (tx *Tx) isCanceled() bool {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	return tx.canceled
}

// cancel answers a CANCEL and propagates it to pending branches.
func (t *TM) cancel(m *core.Msg, tx *Tx) {
	_ = m.SendReply(200, "OK")
	t.st.canceled.Inc()
	tx.mu.Lock()
	if tx.finalSent {
		tx.mu.Unlock()
		return
	}
	tx.canceled = true
	todo := tx.cancelBranches()
	idle := !tx.pending() && !tx.inFailure
	tx.mu.Unlock()
	for _, b := range todo {
		tx.sendCancel(b)
	}
	if idle {
		// Nothing was relayed yet (or everything failed): answer 487 ourselves.
		_ = tx.Reply(m, 487, "Request Terminated")
	}
}

// cancelBranches marks the pending branches CANCELed and returns those a
// CANCEL may be sent to now. RFC 3261 9.1: no CANCEL before a provisional;
// like Kamailio (cancel_b_method 1) the INVITE keeps being retransmitted and
// the CANCEL goes out when the first provisional arrives, or the branch
// gives up at fr_timer. Called with tx.mu held.
func (tx *Tx) cancelBranches() []*branch {
	if !tx.invite {
		return nil
	}
	var todo []*branch
	for _, b := range tx.branches {
		if b.final || b.cancelled || b.cancelWait {
			continue
		}
		if b.code == 0 {
			b.cancelWait = true
			continue
		}
		b.cancelled = true
		todo = append(todo, b)
	}
	return todo
}

// hopRequest starts the CANCEL or ACK a branch sends hop by hop (RFC 3261
// 9.1, 17.1.1.3): the branch's Request-URI, top Via and Route set, and a
// fresh Max-Forwards; the caller adds From, To, Call-ID and CSeq.
func hopRequest(req *sip.Request, method sip.RequestMethod) *sip.Request {
	r := sip.NewRequest(method, *req.Recipient.Clone())
	r.SipVersion = req.SipVersion
	r.AppendHeader(sip.HeaderClone(req.Via()))
	for _, h := range req.GetHeaders("Route") {
		r.AppendHeader(sip.HeaderClone(h))
	}
	mf := sip.MaxForwardsHeader(70)
	r.AppendHeader(&mf)
	return r
}

func (tx *Tx) sendCancel(b *branch) {
	req := tx.reqOf(b)
	if req == nil {
		return // a finished branch (scheduleRelease)
	}
	c := hopRequest(req, sip.CANCEL)
	for _, name := range []string{"From", "To", "Call-ID"} {
		if h := req.GetHeader(name); h != nil {
			c.AppendHeader(sip.HeaderClone(h))
		}
	}
	cs := &sip.CSeqHeader{SeqNo: req.CSeq().SeqNo, MethodName: sip.CANCEL}
	c.AppendHeader(cs)
	c.SetBody(nil)
	if err := tx.tm.env.Sender.Send(&core.Outgoing{Kind: core.OutLocalRequest, Msg: c, Dst: b.dst, Branch: b.idx, LocalSocket: b.sock}); err != nil {
		tx.tm.env.Log.Warn("tm: cannot send CANCEL", "dst", b.dst.String(), "err", err)
	}
}

// relay is t_relay(): create the transaction if needed and add a branch.
func (t *TM) relay(m *core.Msg, to *core.Target) (core.Val, error) {
	if m.Req == nil {
		return core.Null, core.ErrNoRequest
	}
	req := m.Req
	if req.IsAck() {
		// ACKs to 2xx are end to end: forward statelessly.
		dst, err := nextHop(m, to)
		if err != nil {
			return core.Null, err
		}
		if err := m.SendRequest(req, dst, core.OutForward, core.StatelessBranch(req), 0); err != nil {
			if errors.Is(err, core.ErrLoop) {
				// An ACK whose R-URI names kamd (sipp's, for one) has nowhere to go.
				t.env.Log.Debug("tm: ACK not forwarded", "dst", dst.String(), "err", err)
				return core.Int(-1), nil
			}
			t.env.Log.Warn("tm: cannot forward ACK", "dst", dst.String(), "err", err)
			return core.Int(-1), nil
		}
		m.Forwarded = true
		return core.Int(1), nil
	}
	if req.IsCancel() {
		if tx := t.lookupReq(req, "INVITE"); tx != nil {
			t.cancel(m, tx)
			m.Forwarded = true
			return core.Int(1), nil
		}
	}
	tx, _ := m.Tx.(*Tx)
	if tx == nil {
		if old := t.lookupReq(req, methodKey(req)); old != nil {
			old.retransmitLastReply()
			return core.Int(0), nil
		}
	}
	// The destination first: an error must not leave a transaction behind.
	dst, err := nextHop(m, to)
	if err != nil {
		if tx != nil && m.RouteType != core.RouteFailure {
			tx.releaseIfIdle()
			m.Tx = nil
		}
		return core.Null, err
	}
	var dnsRest []core.Target
	if to == nil {
		dst, dnsRest = t.dnsHop(m, dst) // RFC 3263 (dns.go)
	}
	created := tx == nil
	if created {
		if !t.admit(m) {
			return core.Int(-1), nil // answered 503
		}
		tx = t.newTx(m, txKey(req, methodKey(req)))
	}
	tx.mu.Lock()
	if tx.finalSent || tx.got6xx || (tx.canceled && len(tx.branches) > 0) {
		// Like Kamailio (E_CANCELED): no new branches for a CANCELed
		// transaction, nor after a 6xx (T_6xx).
		tx.mu.Unlock()
		return core.Int(-1), nil
	}
	if m.RouteType != core.RouteFailure {
		tx.onFailure, tx.onReply, tx.onBranch = m.OnFailure, m.OnReply, m.OnBranch
		tx.flags = m.Flags
		tx.bflags = m.BFlags
		if !created { // newTx has just taken it
			tx.data = snapshotExt(m.Ext)
		}
		if created {
			// newTx has just cloned this very request: share the copy
			// (neither is changed afterwards; the failure route clones it).
			tx.relayReq = tx.origin.Req
		} else {
			tx.relayReq = cloneReq(req)
		}
	}
	// The next failure route sees the $du of the latest relay, so it can
	// tell which destination failed.
	tx.relayDst = m.DstURI
	tx.dnsNext = dnsRest
	if s, ok := m.Ext["tm"].(*settings); ok {
		tx.frInv, tx.frTimeout = nz(s.frInv, tx.frInv), nz(s.fr, tx.frTimeout)
	}
	firstSend := len(tx.branches) == 0 && tx.invite && tx.lastCode == 0
	// Read under the lock: a CANCEL handled while the 100 goes out may
	// answer 487 and drop the copy (addBranch then refuses the branch).
	origin := tx.origin.Req
	tx.mu.Unlock()
	if firstSend {
		// RFC 3261 16.2: a stateful proxy answers INVITE with 100 at once.
		tx.sendTrying()
	}
	// The destination set: the R-URI and every appended branch, in
	// parallel (append_branch, registrar lookup of several contacts).
	forks, ferr := forkTargets(m)
	if ferr != nil {
		t.env.Log.Warn("tm: branch not relayed", "err", ferr, "at", m.Pos())
	}
	m.ClearBranches() // consumed, like Kamailio's destination set after t_relay
	sent := 0
	from := req
	if created && m.RouteType != core.RouteFailure {
		// The transaction's copy of the request, as the script left it:
		// the branch can share its headers (addBranch).
		from = origin
	}
	err = tx.addBranch(m, from, dst)
	if err != nil {
		t.env.Log.Warn("tm: relay failed", "dst", dst.String(), "err", err, "at", m.Pos())
	} else {
		sent++
	}
	for _, f := range forks {
		if e := tx.addBranch(f.msg, f.req, f.dst); e != nil {
			t.env.Log.Warn("tm: relay of a branch failed", "dst", f.dst.String(), "uri", f.req.Recipient.String(), "err", e, "at", m.Pos())
			continue
		}
		sent++
	}
	if sent == 0 {
		if m.RouteType != core.RouteFailure && tx.releaseIfIdle() {
			// Like Kamailio, the script is expected to answer (sl_reply_error).
			m.Tx = nil
		}
		return core.Int(-1), nil
	}
	if err != nil {
		// The R-URI branch failed but others went out: a branch that could
		// not be sent counts as failed once the rest end.
		tx.maybeComplete()
	}
	m.Forwarded = true
	t.st.relayed.Add(int64(sent))
	return core.Int(1), nil
}

func nextHop(m *core.Msg, to *core.Target) (core.Target, error) {
	if to != nil {
		return *to, nil
	}
	return m.NextHop()
}

// addBranch runs the branch route (if any), then sends a new branch.
func (tx *Tx) addBranch(m *core.Msg, req *sip.Request, dst core.Target) error {
	tx.mu.Lock()
	if tx.finalSent || req == nil {
		// A CANCEL answered 487 while the branch was being prepared: no
		// branch after the final reply (Kamailio's E_CANCELED).
		tx.mu.Unlock()
		return errFinalSent
	}
	onBranch := tx.onBranch
	idx := len(tx.branches)
	// The transaction's own copy of the request is never changed: a branch
	// can send its headers behind our Via instead of copying them, unless
	// a script route could change the branch's request (branch route,
	// ksr_onsend_route) and with it the copy replies are built from.
	share := req == tx.origin.Req && onBranch == "" && !tx.tm.onsendRoute()
	tx.mu.Unlock()
	var breq *sip.Request
	if !share {
		breq = cloneReq(req)
	}
	if onBranch != "" && tx.tm.env.Router != nil {
		bm := &core.Msg{Env: m.Env, Req: breq, Proto: m.Proto, SrcIP: m.SrcIP, SrcPort: m.SrcPort, Local: m.Local,
			DstURI: m.DstURI, SendSocket: m.SendSocket, ViaPort: m.ViaPort, Flags: m.Flags, BFlags: m.BFlags, Tx: tx, Vars: m.Vars,
			Ext: branchExt(m.Ext, idx)}
		if err := tx.tm.env.Router.Run(tx.prog, onBranch, core.RouteBranch, bm); err != nil {
			tx.tm.env.Log.Error("tm: branch route failed", "route", onBranch, "err", err)
		}
		if bm.Dropped {
			return fmt.Errorf("branch dropped by %s", onBranch)
		}
		if bm.DstURI != m.DstURI {
			if d, err := bm.NextHop(); err == nil {
				dst = d
			}
		}
		m = bm
	}
	if tx.tm.env.IsLoop(dst) {
		return core.ErrLoop
	}
	// The forced send socket (set_send_socket, ipsec_forward) gives both
	// the branch's Via and the socket it, its CANCEL and its ACK leave from.
	sock, ok := m.SendSocketFor(dst.Proto)
	if !ok {
		return fmt.Errorf("no %s socket", dst.Proto)
	}
	b := &branch{tx: tx, idx: idx, dst: dst, via: tx.id + "." + strconv.Itoa(idx), sock: m.ForcedSocket(dst.Proto), bflags: m.BFlags}
	via := core.OurVia(sock, b.via)
	if m.ViaPort > 0 {
		via.Port = m.ViaPort
	}
	if share {
		breq = branchReq(req, via)
	} else {
		breq.PrependHeader(via)
	}
	b.req, b.method = breq, breq.Method
	tx.mu.Lock()
	tx.branches = append(tx.branches, b)
	b.dnsRest, tx.dnsNext = tx.dnsNext, nil
	tx.mu.Unlock()
	if err := tx.send(b); err != nil {
		tx.mu.Lock()
		b.final, b.code = true, 0
		tx.mu.Unlock()
		return err
	}
	tx.mu.Lock()
	tx.armBranch(b)
	tx.mu.Unlock()
	return nil
}

func (tx *Tx) send(b *branch) error {
	kind := core.OutBranch
	if tx.local != nil {
		kind = core.OutLocalRequest
	}
	req := tx.reqOf(b)
	if req == nil {
		return nil // finished meanwhile (scheduleRelease): nothing to resend
	}
	return tx.tm.env.Sender.Send(&core.Outgoing{Kind: kind, Msg: req, Dst: b.dst, Branch: b.idx, LocalSocket: b.sock})
}

// reqOf is b's request, read under the lock: scheduleRelease drops those
// of finished branches nothing sends again.
func (tx *Tx) reqOf(b *branch) *sip.Request {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	return b.req
}

// armBranch starts retransmission (UDP) and final-response timers. Called with tx.mu held.
func (tx *Tx) armBranch(b *branch) {
	b.frF = tx.tm.timerFunc(b.timeout) // fr_inv_timer re-arms it (onReply)
	tx.armRetransmit(b)
	b.fr = tx.arm(tx.frTimeout, b.frF)
}

// armRetransmit is timer A / E on UDP: T1 doubling, for non-INVITE capped
// at T2 (and T2 once a provisional came). Called with tx.mu held.
func (tx *Tx) armRetransmit(b *branch) {
	if b.dst.Proto == "udp" {
		b.retrIv = T1
		b.retrF = tx.tm.timerFunc(b.retransmit) // one function for every retransmission
		b.retr = tx.arm(b.retrIv, b.retrF)
	}
}

// retransmit is timer A / E firing: resend and arm the next one.
func (b *branch) retransmit() {
	tx := b.tx
	tx.mu.Lock()
	if b.final || tx.deleted || (tx.invite && b.code > 0) {
		tx.mu.Unlock()
		return
	}
	if b.retrIv < T2 || tx.invite {
		b.retrIv *= 2
	}
	if !tx.invite && (b.retrIv > T2 || b.code > 0) {
		b.retrIv = T2 // Timer E: T2 once a provisional came (RFC 3261 17.1.2.2)
	}
	b.retr = tx.arm(b.retrIv, b.retrF)
	tx.mu.Unlock()
	_ = tx.send(b)
}

// timeout is fr_timer / fr_inv_timer firing.
func (b *branch) timeout() { b.tx.branchTimeout(b) }

// branchTimeout is fr_timer / fr_inv_timer firing: the branch fails with 408.
func (tx *Tx) branchTimeout(b *branch) {
	tx.mu.Lock()
	if b.final || tx.deleted {
		tx.mu.Unlock()
		return
	}
	sendCancel := tx.invite && b.code > 0 && b.code < 200 && !b.cancelled
	b.cancelled = b.cancelled || sendCancel
	b.final, b.timedOut, b.code = true, true, 408
	tx.mu.Unlock()
	tx.tm.st.timeouts.Inc()
	if sendCancel {
		tx.sendCancel(b)
	}
	tx.maybeComplete()
}

func (tx *Tx) retransmitLastReply() {
	tx.mu.Lock()
	r := tx.lastReply
	if r == nil && tx.trying && tx.origin.Req != nil {
		r = core.BuildReply(tx.origin.Req, 100, "Trying", nil) // as sendTrying built it
	}
	tx.mu.Unlock()
	if r != nil {
		tx.sendUp(r, core.OutReply)
	}
}

// sendTrying sends our 100 Trying. A retransmission of the INVITE gets it
// again, built anew from the request (retransmitLastReply): an INVITE
// whose next hop has not answered yet (a flood towards a dead one) keeps
// no copy of it, ~0.9 KB.
func (tx *Tx) sendTrying() {
	res, err := tx.buildLocal(100, "Trying")
	if err != nil {
		return
	}
	if tx.relayUp(res, core.OutReply) != nil {
		return
	}
	tx.mu.Lock()
	if tx.lastReply == res { // no later provisional replaced it meanwhile
		tx.lastReply, tx.trying = nil, true
	}
	tx.mu.Unlock()
}

// sendUp sends a reply to the caller.
func (tx *Tx) sendUp(res *sip.Response, kind core.OutKind) {
	o := tx.up // computed from the request's Via and connection when it arrived
	o.Kind, o.Msg = kind, res
	if err := tx.tm.env.Sender.Send(&o); err != nil {
		tx.tm.env.Log.Warn("tm: cannot send reply", "dst", o.Dst.String(), "err", err)
		return
	}
	tx.tm.st.rplSent.Inc()
}

// sendLocal sends a locally generated reply upstream.
func (tx *Tx) sendLocal(code int, reason string, provisionalOK bool) error {
	res, err := tx.buildLocal(code, reason)
	if err != nil {
		return err
	}
	return tx.relayUp(res, core.OutReply)
}

// buildLocal builds a local reply to the request (counted as generated).
func (tx *Tx) buildLocal(code int, reason string) (*sip.Response, error) {
	req := tx.request()
	if req == nil {
		return nil, errFinalSent
	}
	res := core.BuildReply(req, code, reason, nil)
	tx.tm.st.rplGenerated.Inc()
	return res, nil
}

// request is the request as received, or nil once the transaction finished.
func (tx *Tx) request() *sip.Request {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	return tx.origin.Req
}

// Reply implements core.TxReplier: a stateful local reply (t_reply, and
// sl.send_reply when a transaction exists).
func (tx *Tx) Reply(m *core.Msg, code int, reason string) error {
	if code < 100 || code > 699 {
		return fmt.Errorf("invalid reply code %d (100-699)", code)
	}
	if err := core.CheckText("reason", reason); err != nil {
		return err
	}
	req := tx.request()
	if req == nil {
		return errFinalSent
	}
	res := core.BuildReply(req, code, reason, m.ReplyHeaders)
	m.ReplyHeaders = nil
	tx.tm.st.rplGenerated.Inc()
	if err := tx.relayUp(res, core.OutReply); err != nil {
		return err
	}
	m.ReplyCode = code
	if code >= 200 {
		m.Replied = true
		tx.cancelPending()
	}
	return nil
}

var errFinalSent = core.ErrFinalReplied

// relayUp sends a reply upstream and updates the transaction state.
func (tx *Tx) relayUp(res *sip.Response, kind core.OutKind) error {
	tx.mu.Lock()
	is2xx := res.StatusCode >= 200 && res.StatusCode < 300
	if tx.finalSent && !(is2xx && tx.invite && kind == core.OutRelayedReply) {
		// After a final reply only further relayed 2xx to an INVITE
		// (forking, RFC 3261 16.7 step 10) may go up; never a local one.
		code := tx.lastCode
		tx.mu.Unlock()
		return fmt.Errorf("%w (%d)", errFinalSent, code)
	}
	final := res.StatusCode >= 200
	if is2xx && tx.invite {
		tx.sent2xx = true
	}
	req := tx.origin.Req // scheduleRelease drops it below
	if final && !tx.finalSent {
		tx.finalSent = true
		tx.state = stCompleted
		tx.lastCode = res.StatusCode
		tx.lastReply = res
		tx.tm.st.codes[res.StatusCode/100].Inc()
		tx.scheduleRelease()
		if tx.invite && res.StatusCode >= 300 && tx.origin.Proto == "udp" {
			tx.retransmitFinal(res)
		}
	} else if !final && !tx.finalSent {
		tx.lastReply, tx.trying = res, false
		if tx.lastCode < res.StatusCode {
			tx.lastCode = res.StatusCode
		}
	}
	ev := &ReplyOut{Req: req, Res: res, Local: kind == core.OutReply, Flags: tx.flags, Data: tx.data, Canceled: tx.canceled}
	tx.mu.Unlock()
	tx.sendUp(res, kind)
	if req != nil && tx.local == nil {
		tx.tm.fireReplyOut(ev)
	}
	return nil
}

// retransmitFinal is Timer G: resend a negative final INVITE reply until
// the ACK comes. Called with tx.mu held.
func (tx *Tx) retransmitFinal(res *sip.Response) {
	interval := T1
	var g func()
	g = func() {
		tx.mu.Lock()
		if tx.acked || tx.deleted {
			tx.mu.Unlock()
			return
		}
		interval *= 2
		if interval > T2 {
			interval = T2
		}
		tx.after(interval, g)
		tx.mu.Unlock()
		tx.sendUp(res, core.OutReply)
	}
	tx.after(interval, g)
}

// cancelPending CANCELs branches still waiting after a final reply went up.
func (tx *Tx) cancelPending() {
	tx.mu.Lock()
	todo := tx.cancelBranches()
	tx.mu.Unlock()
	for _, b := range todo {
		tx.sendCancel(b)
	}
}

// matchReply finds the transaction and branch of a received reply by our Via branch.
func (t *TM) matchReply(res *sip.Response) (*branch, *Tx, bool) {
	v := res.Via()
	if v == nil {
		return nil, nil, false
	}
	id, _ := v.Params.Get("branch")
	dot := -1
	for i := len(id) - 1; i >= 0; i-- {
		if id[i] == '.' {
			dot = i
			break
		}
	}
	if dot < 0 {
		return nil, nil, false
	}
	idx, err := strconv.Atoi(id[dot+1:])
	if err != nil {
		return nil, nil, false
	}
	t.mu.Lock()
	tx := t.clients[id[:dot]]
	t.mu.Unlock()
	if tx == nil {
		return nil, nil, false
	}
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if idx < 0 || idx >= len(tx.branches) {
		return nil, nil, false
	}
	b := tx.branches[idx]
	if cs := res.CSeq(); cs == nil || (cs.MethodName != b.method && !(cs.MethodName == sip.CANCEL)) {
		return nil, nil, false
	}
	return b, tx, true
}

// onReply handles a reply for one of our branches.
func (t *TM) onReply(m *core.Msg) bool {
	res := m.Res
	b, tx, ok := t.matchReply(res)
	if !ok {
		return false
	}
	t.st.rplReceived.Inc()
	if res.CSeq().MethodName == sip.CANCEL {
		return true // the reply to our own CANCEL ends here
	}
	if tx.local != nil {
		tx.onLocalReply(b, res)
		return true
	}
	code := res.StatusCode
	tx.mu.Lock()
	if b.final {
		tx.mu.Unlock()
		if code >= 200 && code < 300 && tx.invite {
			// A 2xx after the branch gave up (or a 2xx retransmission) still goes up.
			core.PopTopVia(res)
			tx.sendUp(res, core.OutRelayedReply)
		} else if code >= 300 && tx.invite {
			tx.ackBranch(b, res)
		}
		return true
	}
	if b.code == 0 || code >= 200 {
		if b.retr != nil && (code >= 200 || tx.invite) {
			b.retr.Stop()
		}
	}
	b.code = code
	held := b.cancelWait && !b.cancelled && code < 200
	if held {
		b.cancelled = true
	}
	if code >= 100 && code < 200 && tx.invite && b.fr != nil {
		// A provisional moves an INVITE branch to fr_inv_timer.
		b.fr.Stop()
		b.fr = tx.arm(tx.frInv, b.frF)
	}
	if code >= 200 {
		b.final = true
		b.reply = res
		if b.fr != nil {
			b.fr.Stop()
		}
	}
	onReply, prog := tx.onReply, tx.prog
	flags, bflags := tx.flags, b.bflags
	tx.mu.Unlock()

	if held {
		tx.sendCancel(b)
	}
	if code >= 300 && tx.invite {
		tx.ackBranch(b, res)
	}
	if onReply != "" && t.env.Router != nil {
		m.Tx = tx
		m.ReplyCode = code
		// As in Kamailio, an onreply route sees the transaction's flags
		// and the reply's branch's flags.
		m.Flags, m.BFlags = flags, bflags
		m.SetExt("tm.bidx", b.idx)
		if err := t.env.Router.Run(prog, onReply, core.RouteTmReply, m); err != nil {
			t.env.Log.Error("tm: onreply route failed", "route", onReply, "err", err)
		}
		tx.replySocket(m)
		if code >= 300 && res.StatusCode >= 300 && res.StatusCode < 700 && res.StatusCode != code {
			// The route rewrote a negative final reply (ipsec_create turns
			// a 401 it cannot protect into a 500): tm goes by the new code.
			code = res.StatusCode
			tx.mu.Lock()
			b.code = code
			tx.mu.Unlock()
		}
		if m.Dropped && code < 200 {
			return true
		}
	}
	switch {
	case code == 100:
		// Hop by hop: we sent our own 100 already.
	case code < 200:
		core.PopTopVia(res)
		_ = tx.relayUp(res, core.OutRelayedReply)
	case code < 300:
		core.PopTopVia(res)
		_ = tx.relayUp(res, core.OutRelayedReply)
		tx.cancelPending()
	default:
		if code >= 600 && tx.invite {
			// RFC 3261 16.7 step 5: a 6xx ends the search; the other
			// branches are CANCELed and the best reply (the 6xx) goes up
			// once they have ended (Kamailio's T_6xx).
			tx.mu.Lock()
			tx.got6xx = true
			tx.mu.Unlock()
			tx.cancelPending()
		}
		tx.maybeComplete()
	}
	return true
}

// replySocket applies a send socket the onreply route forced on a reply
// (set_send_socket, ipsec_forward) to this and later replies upstream; a
// $du set with it gives their UDP destination (a P-CSCF answers a UE's
// protected port_us, not the Via's source).
func (tx *Tx) replySocket(m *core.Msg) {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	ls := m.ForcedSocket(tx.origin.Proto)
	if ls == nil {
		return
	}
	tx.up.LocalSocket = ls
	if m.DstURI != "" && tx.origin.Proto == "udp" {
		if u, err := core.ParseURI(m.DstURI); err == nil {
			if d := core.TargetOf(&u); d.Proto == "udp" {
				tx.up.Dst = d
			}
		}
	}
}

// ackBranch sends the hop-by-hop ACK for a negative INVITE reply (RFC 3261 17.1.1.3).
func (tx *Tx) ackBranch(b *branch, res *sip.Response) {
	req := tx.reqOf(b)
	if req == nil {
		return // a branch that ended with a 2xx (scheduleRelease)
	}
	ack := hopRequest(req, sip.ACK)
	if h := req.From(); h != nil {
		ack.AppendHeader(sip.HeaderClone(h))
	}
	if h := res.To(); h != nil {
		ack.AppendHeader(sip.HeaderClone(h))
	}
	if h := req.CallID(); h != nil {
		ack.AppendHeader(sip.HeaderClone(h))
	}
	ack.AppendHeader(&sip.CSeqHeader{SeqNo: req.CSeq().SeqNo, MethodName: sip.ACK})
	ack.SetBody(nil)
	if err := tx.tm.env.Sender.Send(&core.Outgoing{Kind: core.OutLocalRequest, Msg: ack, Dst: b.dst, Branch: b.idx, LocalSocket: b.sock}); err != nil {
		tx.tm.env.Log.Warn("tm: cannot send ACK", "dst", b.dst.String(), "err", err)
	}
}

// maybeComplete runs when a branch failed: once every branch is final,
// run the failure route (which may add branches) or relay the best reply.
func (tx *Tx) maybeComplete() {
	if tx.dnsFailover() {
		return
	}
	tx.mu.Lock()
	if tx.pending() || tx.finalSent || tx.inFailure || tx.deleted {
		tx.mu.Unlock()
		return
	}
	win, code := tx.best()
	var winReply *sip.Response
	if win != nil {
		winReply = win.reply
	}
	onFailure := tx.onFailure
	tx.onFailure = "" // armed once, like Kamailio: re-arm in the failure route
	tx.mu.Unlock()
	if win == nil {
		return
	}
	if onFailure != "" && tx.tm.env.Router != nil {
		tx.mu.Lock()
		tx.inFailure = true
		tx.mu.Unlock()
		if fm := tx.failureMsg(code, win); fm != nil {
			if err := tx.tm.env.Router.Run(tx.prog, onFailure, core.RouteFailure, fm); err != nil {
				tx.tm.env.Log.Error("tm: failure route failed", "route", onFailure, "err", err)
			}
			tx.mu.Lock()
			tx.flags = fm.Flags // setflag in the failure route counts (acc's missed-call flags)
			tx.mu.Unlock()
		}
		tx.mu.Lock()
		tx.inFailure = false
		done := tx.finalSent
		pending := tx.pending()
		tx.mu.Unlock()
		if done || pending {
			return
		}
		// The failure route neither replied nor relayed: send the winning reply.
		tx.mu.Lock()
		win, code = tx.best()
		winReply = win.reply
		tx.mu.Unlock()
	}
	tx.relayFinal(win, winReply, code)
}

// relayFinal sends the winning reply up (res is win's reply, read under the lock).
func (tx *Tx) relayFinal(win *branch, res *sip.Response, code int) {
	if res != nil && !win.timedOut {
		core.PopTopVia(res)
		if res.StatusCode == 503 {
			// RFC 3261 16.7: a 503 is not passed upstream as is.
			res.StatusCode, res.Reason = 500, "Server Internal Error"
		}
		_ = tx.relayUp(res, core.OutRelayedReply)
		return
	}
	reason := "Request Timeout"
	switch {
	case tx.isCanceled():
		// The caller CANCELed and the branch never answered: it gets the
		// 487 the callee would have sent.
		code, reason = 487, "Request Terminated"
	case code != 408:
		reason = "Server Internal Error"
		code = 500
	}
	_ = tx.sendLocal(code, reason, false)
}

// failureMsg is the message the failure route sees: the request as relayed.
func (tx *Tx) failureMsg(code int, win *branch) *core.Msg {
	tx.mu.Lock()
	req := tx.relayReq
	if req == nil {
		req = tx.origin.Req
	}
	flags, bflags := tx.flags, tx.bflags
	if win != nil {
		bflags = win.bflags // the failure route sees the winning branch's flags
	}
	du := tx.relayDst
	tx.mu.Unlock()
	if req == nil {
		return nil // finished meanwhile (a CANCEL answered 487): no failure route
	}
	o := tx.origin
	return &core.Msg{Env: o.Env, Req: cloneReq(req), Proto: o.Proto, SrcIP: o.SrcIP, SrcPort: o.SrcPort,
		Local: o.Local, ConnID: o.ConnID, Arrived: o.Arrived, Tx: tx, ReplyCode: code, Flags: flags, BFlags: bflags, DstURI: du,
		Ext: map[string]any{"tm.branch": win}}
}

func (t *TM) branchTest(m *core.Msg, f func(b *branch) bool) core.Val {
	b, _ := m.Ext["tm.branch"].(*branch)
	tx, _ := m.Tx.(*Tx)
	if b == nil || tx == nil {
		return core.Int(-1)
	}
	tx.mu.Lock()
	defer tx.mu.Unlock()
	return core.IntRet(f(b))
}

func (t *TM) anyBranch(m *core.Msg, f func(b *branch) bool) core.Val {
	tx, _ := m.Tx.(*Tx)
	if tx == nil {
		return core.Int(-1)
	}
	tx.mu.Lock()
	defer tx.mu.Unlock()
	for _, b := range tx.branches {
		if f(b) {
			return core.Int(1)
		}
	}
	return core.Int(-1)
}

// compileStatus anchors a t_check_status pattern; core's cache keeps it.
func compileStatus(s string) (*regexp.Regexp, error) {
	re, err := core.CompileRegex("^(?:" + s + ")$")
	if err != nil {
		return nil, fmt.Errorf("t_check_status: %v", err)
	}
	return re, nil
}

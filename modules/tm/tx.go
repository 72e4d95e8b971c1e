package tm

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

// RFC 3261 timer values.
var (
	T1 = 500 * time.Millisecond
	T2 = 4 * time.Second
)

// txState tracks where a transaction is.
type txState uint8

const (
	stProceeding txState = iota // waiting for final replies
	stCompleted                 // final reply sent upstream; absorbing retransmissions
)

// Tx is a tm transaction: the server side facing the caller plus the
// client branches it relayed to.
type Tx struct {
	tm  *TM
	key string
	id  string // branch prefix of our client branches
	dlg string // dlgKey of an INVITE

	mu        sync.Mutex
	origin    *core.Msg     // the request as received (Req dropped once finished)
	up        core.Outgoing // where replies to the caller go
	relayReq  *sip.Request  // the request as routed (failure route works on it)
	relayDst  string        // $du when it was relayed
	prog      any           // script version pinned for this transaction
	invite    bool
	state     txState
	branches  []*branch
	lastReply *sip.Response
	trying    bool // the last provisional is our 100 Trying, not kept (sendTrying)
	lastCode  int
	finalSent bool
	canceled  bool
	inFailure bool
	acked     bool
	sent2xx   bool // a 2xx went upstream (an e2e ACK may follow)
	onFailure string
	onReply   string
	onBranch  string
	frTimeout time.Duration
	frInv     time.Duration
	flags     uint64
	bflags    uint64 // branch flags at t_relay (KSR.setbflag), seen by branch and reply routes
	timers    []core.Timer
	timerBuf  [6]core.Timer // timers' first backing array: an INVITE arms about five
	deleted   bool
	// dnsNext: the DNS targets after the one the next branch goes to (dns.go).
	dnsNext []core.Target
	local   *LocalRequest  // set for a request kamd originated (no server side)
	data    map[string]any // Msg.Ext of the relaying message, for hooks (ReplyOut.Data)
	got6xx  bool           // a branch answered 6xx: the others are CANCELed, no new branches
	cost    int64          // estimated bytes, charged to tm.txBytes (limits.go)
}

type branch struct {
	tx        *Tx
	idx       int
	req       *sip.Request // with our Via on top, for retransmission, CANCEL and ACK (nil once not needed: scheduleRelease)
	method    sip.RequestMethod
	dst       core.Target
	via       string
	sock      *core.Socket // forced local socket, nil: the transport's choice
	bflags    uint64       // the branch's flags after its branch route ($bf in onreply and failure routes)
	code      int          // last reply code (0 none)
	final     bool
	timedOut  bool
	reply     *sip.Response // final reply
	cancelled bool          // a CANCEL was sent
	// cancelWait: the transaction was CANCELed before this branch got a
	// provisional; the CANCEL goes out with the first one.
	cancelWait bool
	retr       core.Timer
	fr         core.Timer
	retrIv     time.Duration // the next timer A / E interval
	// retrF and frF are what retr and fr run (timerFunc applied), made
	// once per branch: they are armed again and again.
	retrF, frF func()
	// dnsRest: the DNS targets to try if this branch fails (dns.go).
	dnsRest []core.Target
}

// txKey identifies the server transaction of a request (RFC 3261 17.2.3).
func txKey(req *sip.Request, method string) string {
	var buf [128]byte
	return string(appendTxKey(buf[:0], req, method))
}

// appendTxKey appends txKey's key to b: a lookup can index the map with
// it without allocating (lookupReq).
func appendTxKey(b []byte, req *sip.Request, method string) []byte {
	v := req.Via()
	if v == nil {
		return b
	}
	br, _ := v.Params.Get("branch")
	if strings.HasPrefix(br, "z9hG4bK") {
		b = append(append(append(b, br...), '|'), v.Host...) // branch|SentBy()|method
		if v.Port > 0 {
			b = strconv.AppendInt(append(b, ':'), int64(v.Port), 10)
		}
		return append(append(b, '|'), method...)
	}
	// RFC 2543 matching: Call-ID, From tag, CSeq number, top Via, R-URI.
	if c := req.CallID(); c != nil {
		b = append(b, *c...)
	}
	if f := req.From(); f != nil {
		t, _ := f.Params.Get("tag")
		b = append(append(b, '|'), t...)
	}
	if cs := req.CSeq(); cs != nil {
		b = strconv.AppendUint(append(b, '|'), uint64(cs.SeqNo), 10)
	}
	return append(append(append(append(b, '|'), v.Value()...), '|'), method...)
}

// dlgKey matches an end-to-end ACK (its own branch) to the INVITE
// transaction whose 2xx it acknowledges: Call-ID, From tag, CSeq number.
func dlgKey(req *sip.Request) string {
	var buf [128]byte
	return string(appendDlgKey(buf[:0], req))
}

func appendDlgKey(b []byte, req *sip.Request) []byte {
	c, f, cs := req.CallID(), req.From(), req.CSeq()
	if c == nil || f == nil || cs == nil {
		return b
	}
	tag, _ := f.Params.Get("tag")
	b = append(append(append(append(b, *c...), '|'), tag...), '|')
	return strconv.AppendUint(b, uint64(cs.SeqNo), 10)
}

// cloneReq is a deep copy of req: what sipgo's Clone makes, without what
// kamgo never reads (Clone computes the copy's transport, source and
// destination strings: eight allocations a transaction) and with the
// usual headers copied into one reqBox instead of two to four
// allocations each.
func cloneReq(req *sip.Request) *sip.Request {
	c := sip.NewRequest(req.Method, req.Recipient) // copies the URI's params
	c.SipVersion = req.SipVersion
	box := &reqBox{}
	for _, h := range req.Headers() {
		c.AppendHeader(box.clone(h))
	}
	c.SetBody(slices.Clone(req.Body()))
	return c
}

// reqBox holds cloneReq's copies of a request's usual headers and their
// params, sized for an initial request's (more go to allocations of their
// own). Each copy is what sip.HeaderClone makes of the header; a params
// list has no spare capacity (as after slices.Clone: append reallocates
// it), so none can write into another's.
type reqBox struct {
	via     [1]sip.ViaHeader
	from    sip.FromHeader
	to      sip.ToHeader
	contact sip.ContactHeader
	rr      [1]sip.RecordRouteHeader
	cseq    sip.CSeqHeader
	params  [8]sip.HeaderKV
	nvia    int
	nrr     int
	used    int   // of params
	has     uint8 // which single headers are taken
}

const (
	hasFrom = 1 << iota
	hasTo
	hasContact
	hasCSeq
)

// clone is sip.HeaderClone(h), in the box when there is room.
func (b *reqBox) clone(h sip.Header) sip.Header {
	switch h := h.(type) {
	case *sip.ViaHeader:
		if h == nil || b.nvia == len(b.via) {
			break
		}
		v := &b.via[b.nvia]
		b.nvia++
		*v = sip.ViaHeader{ProtocolName: h.ProtocolName, ProtocolVersion: h.ProtocolVersion, Transport: h.Transport,
			Host: h.Host, Params: b.params0(h.Params)}
		if h.Port > 0 { // as ViaHeader.Clone
			v.Port = h.Port
		}
		return v
	case *sip.FromHeader:
		if h == nil || b.has&hasFrom != 0 {
			break
		}
		b.has |= hasFrom
		b.from = sip.FromHeader{DisplayName: h.DisplayName, Address: b.uri(&h.Address), Params: b.params0(h.Params)}
		return &b.from
	case *sip.ToHeader:
		if h == nil || b.has&hasTo != 0 {
			break
		}
		b.has |= hasTo
		b.to = sip.ToHeader{DisplayName: h.DisplayName, Address: b.uri(&h.Address), Params: b.params0(h.Params)}
		return &b.to
	case *sip.ContactHeader:
		if h == nil || b.has&hasContact != 0 {
			break
		}
		b.has |= hasContact
		b.contact = sip.ContactHeader{DisplayName: h.DisplayName, Address: b.uri(&h.Address), Params: b.params0(h.Params)}
		return &b.contact
	case *sip.RecordRouteHeader:
		if h == nil || b.nrr == len(b.rr) {
			break
		}
		r := &b.rr[b.nrr]
		b.nrr++
		r.Address = b.uri(&h.Address)
		return r
	case *sip.CSeqHeader:
		if h == nil || b.has&hasCSeq != 0 {
			break
		}
		b.has |= hasCSeq
		b.cseq = sip.CSeqHeader{SeqNo: h.SeqNo, MethodName: h.MethodName}
		return &b.cseq
	}
	return sip.HeaderClone(h)
}

// uri is *u.Clone().
func (b *reqBox) uri(u *sip.Uri) sip.Uri {
	c := *u
	c.UriParams = b.params0(u.UriParams)
	c.Headers = b.params0(u.Headers)
	return c
}

// params0 is slices.Clone(ps) (nil stays nil), in the box when it fits.
func (b *reqBox) params0(ps sip.HeaderParams) sip.HeaderParams {
	if ps == nil {
		return nil
	}
	n := len(ps)
	if b.used+n > len(b.params) {
		return slices.Clone(ps)
	}
	out := b.params[b.used : b.used+n : b.used+n]
	b.used += n
	copy(out, ps)
	return out
}

// branchReq is the request a branch sends: via, then req's headers and
// body, shared with req, not copied. Only for a req that tm owns and no
// one changes any more (the transaction's copy of the request): a branch
// route, which may change its branch's request, and ksr_onsend_route get
// a deep copy instead (addBranch).
func branchReq(req *sip.Request, via sip.Header) *sip.Request {
	c := sip.NewRequest(req.Method, req.Recipient)
	c.SipVersion = req.SipVersion
	c.AppendHeader(via)
	for _, h := range req.Headers() {
		c.AppendHeader(h)
	}
	c.SetBody(req.Body())
	return c
}

func methodKey(req *sip.Request) string {
	m := string(req.Method)
	if m == "ACK" || m == "CANCEL" {
		return "INVITE"
	}
	return m
}

type noTimer struct{}

func (noTimer) Stop() bool { return false }

// after arms a timer that release stops. Called with t.mu held; a released
// transaction arms none.
func (t *Tx) after(d time.Duration, f func()) core.Timer {
	if t.deleted {
		return noTimer{}
	}
	return t.arm(d, t.tm.timerFunc(f))
}

// arm is after for a function timerFunc has made already.
func (t *Tx) arm(d time.Duration, f func()) core.Timer {
	if t.deleted {
		return noTimer{}
	}
	tm := t.tm.env.Clock.AfterFunc(d, f)
	if t.timers == nil {
		t.timers = t.timerBuf[:0]
	}
	t.timers = append(t.timers, tm)
	return tm
}

func (t *Tx) stopTimers() {
	for _, tm := range t.timers {
		tm.Stop()
	}
	t.timers = nil
	t.timerBuf = [len(t.timerBuf)]core.Timer{} // the fired timers' closures hold the branches
}

// pending reports whether any branch still waits for a final reply.
func (t *Tx) pending() bool {
	for _, b := range t.branches {
		if !b.final {
			return true
		}
	}
	return false
}

// rank orders final replies for best(): lower wins (RFC 3261 16.7 step 6,
// Kamailio's t_pick_branch): 6xx first, then the lowest class; in 4xx the
// replies that help a retry (401, 407, 415, 420, 484) first; 503 after any
// other 5xx; a branch that could not be sent (code 0) last.
func rank(c int) int {
	switch {
	case c >= 200 && c < 300:
		return 0
	case c >= 600:
		return 1000 + c%100
	case c == 401 || c == 407 || c == 415 || c == 420 || c == 484:
		return 4000
	case c == 503:
		return 5900
	case c >= 300:
		return c/100*1000 + c%100
	}
	return 9000
}

// best picks the reply to send upstream when all branches failed.
func (t *Tx) best() (*branch, int) {
	var win *branch
	for _, b := range t.branches {
		if !b.final {
			continue
		}
		if win == nil || rank(b.code) < rank(win.code) {
			win = b
		}
	}
	if win == nil {
		return nil, 0
	}
	return win, win.code
}

package nathelper

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/usrloc"
)

// pingBranch starts the Via branch of every keepalive, so their replies
// are recognised (and absorbed) by OnReply.
const pingBranch = "z9hG4bKnhp"

// pinger sends SIP keepalives (sipping) to registered contacts. One timer
// ticks every second; a contact is pinged on the tick given by its ruid's
// hash modulo natping_interval, so the pings of one interval are spread
// over it instead of leaving in one burst.
type pinger struct {
	n *NH

	mu      sync.Mutex
	timer   core.Timer
	tick    int64
	seq     uint64
	pending map[string]pendingPing // by Via branch
	seen    map[string]time.Time   // by ruid: last reply to a ping
	stopped bool

	sent, replies, expired *core.Counter
}

type pendingPing struct {
	ruid string
	at   time.Time
}

func newPinger(n *NH) *pinger {
	return &pinger{n: n, pending: map[string]pendingPing{}, seen: map[string]time.Time{},
		sent:    n.env.Stats.Counter("nathelper", "natping_sent"),
		replies: n.env.Stats.Counter("nathelper", "natping_replies"),
		expired: n.env.Stats.Counter("nathelper", "natping_expired")}
}

func (p *pinger) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = false
	if p.n.natpingInterval.Load() > 0 && p.timer == nil {
		p.timer = p.n.env.Clock.AfterFunc(time.Second, p.run)
	}
}

func (p *pinger) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
}

func (p *pinger) run() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.tick++
	tick := p.tick
	p.timer = p.n.env.Clock.AfterFunc(time.Second, p.run)
	p.mu.Unlock()
	p.round(tick)
}

// due is whether a contact's slice of the interval is this tick.
func due(ruid string, tick, interval int64) bool {
	return int64(usrloc.HashID(ruid))%interval == tick%interval
}

// round pings the contacts due at tick and expires those that have not
// answered for keepalive_timeout.
func (p *pinger) round(tick int64) {
	n := p.n
	interval := n.natpingInterval.Load()
	if interval <= 0 {
		return
	}
	u := usrloc.Of(n.env)
	if u == nil {
		return
	}
	now := u.Now()
	natFlag := u.NatBflag()
	sipFlag := n.sippingBflag.Load()
	timeout := time.Duration(n.keepaliveTimeout.Load()) * time.Second
	type target struct {
		d *usrloc.Domain
		c usrloc.Contact
	}
	var todo []target
	for _, d := range u.Domains() {
		d.AoRs(func(aor string, cs []usrloc.Contact) {
			for _, c := range cs {
				if !c.Valid(now) || !due(c.Ruid, tick, interval) {
					continue
				}
				if n.pingNatedOnly.Load() == 1 && (natFlag < 0 || c.CFlags&(1<<uint(natFlag)) == 0) {
					continue
				}
				if sipFlag >= 0 && c.CFlags&(1<<uint(sipFlag)) == 0 {
					continue
				}
				todo = append(todo, target{d, c})
			}
		})
	}
	p.mu.Lock()
	for b, pp := range p.pending {
		if now.Sub(pp.at) > time.Duration(interval+32)*time.Second {
			delete(p.pending, b)
		}
	}
	if tick%interval == 0 {
		// Once per interval, forget the replies of contacts that are gone
		// (unregistered, expired, no longer pinged): a live one answers
		// every interval, and one silent for longer than keepalive_timeout
		// is expired whether its entry is there or not.
		p.pruneSeen(now, timeout+time.Duration(interval)*time.Second)
	}
	p.mu.Unlock()
	for _, t := range todo {
		if timeout > 0 {
			p.mu.Lock()
			last := p.seen[t.c.Ruid]
			p.mu.Unlock()
			if t.c.LastModified.After(last) {
				last = t.c.LastModified
			}
			if now.Sub(last) > timeout {
				p.expire(t.d, t.c)
				continue
			}
		}
		if err := p.ping(t.c, now); err != nil {
			n.env.Log.Debug("nathelper: keepalive not sent", "contact", t.c.Contact, "err", err)
		}
	}
}

// pruneSeen drops the reply times older than maxAge; p.mu is held.
func (p *pinger) pruneSeen(now time.Time, maxAge time.Duration) {
	for ruid, at := range p.seen {
		if now.Sub(at) > maxAge {
			delete(p.seen, ruid)
		}
	}
}

func (p *pinger) expire(d *usrloc.Domain, c usrloc.Contact) {
	_, _ = d.Update(c.AoR, func(cs []usrloc.Contact) ([]usrloc.Contact, error) {
		out := cs[:0]
		for _, x := range cs {
			if x.Ruid != c.Ruid {
				out = append(out, x)
			}
		}
		return out, nil
	})
	p.mu.Lock()
	delete(p.seen, c.Ruid)
	p.mu.Unlock()
	p.expired.Inc()
	p.n.env.Log.Info("nathelper: contact removed, no reply to keepalives", "aor", c.AoR, "contact", c.Contact)
}

// pingDst is where a contact's keepalive goes: its received address, else
// its first Path hop, else the contact itself.
func pingDst(c *usrloc.Contact) (core.Target, error) {
	s := c.Received
	if s == "" && c.Path != "" {
		s = strings.TrimSpace(strings.SplitN(c.Path, ",", 2)[0])
		s = strings.TrimPrefix(s, "<")
		if i := strings.IndexByte(s, '>'); i >= 0 {
			s = s[:i]
		}
	}
	if s == "" {
		s = c.Contact
	}
	u, err := core.ParseURI(s)
	if err != nil {
		return core.Target{}, err
	}
	return core.TargetOf(&u), nil
}

// ping sends one keepalive (sipping_method, OPTIONS by default) statelessly.
func (p *pinger) ping(c usrloc.Contact, now time.Time) error {
	n := p.n
	dst, err := pingDst(&c)
	if err != nil {
		return err
	}
	var sock core.Socket
	var forced *core.Socket
	found := false
	for _, s := range n.env.Sockets() {
		if s.String() == c.Socket && s.Proto == dst.Proto {
			sock, found = s, true
			forced = &s
			break
		}
	}
	if !found {
		if sock, found = n.env.SocketFor(dst.Proto); !found {
			return errNoSocket(dst.Proto)
		}
	}
	ruri, err := core.ParseURI(c.Contact)
	if err != nil {
		return err
	}
	from, err := core.ParseURI(*n.sippingFrom.Load())
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.seq++
	id := strconv.FormatUint(p.seq, 36) + "." + strconv.FormatInt(now.UnixNano()%1e9, 36)
	branch := pingBranch + id
	p.pending[branch] = pendingPing{ruid: c.Ruid, at: now}
	p.mu.Unlock()

	meth := sip.RequestMethod(*n.sippingMethod.Load())
	req := sip.NewRequest(meth, ruri)
	req.AppendHeader(core.OurVia(sock, branch))
	fh := &sip.FromHeader{Address: from, Params: sip.NewParams()}
	fh.Params.Add("tag", "nh"+id)
	req.AppendHeader(fh)
	req.AppendHeader(&sip.ToHeader{Address: ruri, Params: sip.NewParams()})
	cid := sip.CallIDHeader("nhping-" + id + "@" + sock.Host())
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: meth})
	// No Max-Forwards: Kamailio's keepalive has none (a hop-by-hop
	// request), compared side by side in tests/natmedia_test.go.
	cl := sip.ContentLengthHeader(0)
	req.AppendHeader(&cl)
	if err := n.env.Sender.Send(&core.Outgoing{Kind: core.OutLocalRequest, Msg: req, Dst: dst, LocalSocket: forced}); err != nil {
		return err
	}
	p.sent.Inc()
	return nil
}

type errNoSocket string

func (e errNoSocket) Error() string { return "no " + string(e) + " socket to send keepalives from" }

// onReply absorbs the replies to keepalives: any reply proves the binding
// is alive (as in Kamailio, a 404 or 405 counts too).
func (p *pinger) onReply(m *core.Msg) bool {
	if m.Res == nil {
		return false
	}
	v := m.Res.Via()
	if v == nil {
		return false
	}
	b, _ := v.Params.Get("branch")
	if !strings.HasPrefix(b, pingBranch) {
		return false
	}
	p.mu.Lock()
	pp, ok := p.pending[b]
	if ok {
		delete(p.pending, b)
		p.seen[pp.ruid] = p.n.env.Clock.Now()
	}
	p.mu.Unlock()
	if ok {
		p.replies.Inc()
	}
	return true
}

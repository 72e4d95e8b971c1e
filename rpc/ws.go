package rpc

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// maxInflight bounds concurrently executing requests per websocket connection.
const maxInflight = 16

// wsConn is one websocket client. Exactly one goroutine (writeLoop) writes to
// the socket; everything else hands it messages through out (responses,
// events) or final (the last message before a drop).
type wsConn struct {
	s    *Server
	ws   *websocket.Conn
	role Role
	ip   string

	out   chan outMsg
	final chan []byte

	// Idleness, for IdleTimeout and eviction: the last time a message came
	// in, and the requests running now.
	lastActive atomic.Int64
	inflight   atomic.Int32
	// slotFreed: evicted, its slot already given back (under Server.mu).
	slotFreed bool

	ctx    context.Context
	cancel context.CancelFunc

	closeOnce sync.Once
	closeCode int
	closeText string
	dropped   atomic.Bool

	subMu         sync.Mutex
	topics        atomic.Pointer[topicSet]
	statsInterval time.Duration
	statsStop     chan struct{}
}

func newWSConn(s *Server, ws *websocket.Conn, role Role) *wsConn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &wsConn{
		s:      s,
		ws:     ws,
		role:   role,
		out:    make(chan outMsg, s.cfg.SendQueue),
		final:  make(chan []byte, 1),
		ctx:    ctx,
		cancel: cancel,
	}
	c.topics.Store(&topicSet{})
	c.lastActive.Store(time.Now().UnixNano())
	return c
}

// outMsg is a queued message: an event's bytes, or a reply whose budget is
// given back once written.
type outMsg struct {
	b     []byte
	reply *replyBuf
}

func (m outMsg) release() { m.reply.release() }

// idle: no subscription and no request in flight.
func (c *wsConn) idle() bool {
	t := c.topics.Load()
	return c.inflight.Load() == 0 && (t == nil || len(t.names) == 0)
}

func (c *wsConn) run() {
	done := make(chan struct{})
	go func() {
		c.writeLoop()
		close(done)
	}()
	c.readLoop()
	c.closeWith(websocket.CloseNormalClosure, "")
	c.s.hub.remove(c)
	c.stopStats()
	<-done
	// Replies still queued give their budget back.
	for {
		select {
		case m := <-c.out:
			m.release()
		default:
			return
		}
	}
}

func (c *wsConn) readLoop() {
	c.ws.SetReadLimit(c.s.cfg.MaxFrameBytes)
	c.ws.SetPongHandler(func(string) error {
		return c.ws.SetReadDeadline(time.Now().Add(c.s.pongWait))
	})
	ctx := context.WithValue(c.ctx, connKey, c)
	sem := make(chan struct{}, maxInflight)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c.ws.SetReadDeadline(time.Now().Add(c.s.pongWait))
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				c.s.log.Warn("rpc: websocket message too large, closing", "limit", c.s.cfg.MaxFrameBytes)
				c.closeWith(websocket.CloseMessageTooBig, "message too big")
			}
			return
		}
		c.lastActive.Store(time.Now().UnixNano())
		if typ == websocket.TextMessage && !utf8.Valid(data) {
			// RFC 6455 8.1: a text frame that is not UTF-8 fails the connection with 1007.
			c.s.log.Warn("rpc: websocket text frame with invalid UTF-8, closing")
			c.closeWith(websocket.CloseInvalidFramePayloadData, "invalid UTF-8 in text frame")
			return
		}
		select {
		case sem <- struct{}{}:
		case <-c.ctx.Done():
			return
		}
		c.inflight.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			defer func() {
				c.lastActive.Store(time.Now().UnixNano())
				c.inflight.Add(-1)
			}()
			if out, _ := c.s.handle(ctx, c.role, data); out != nil {
				c.send(out)
			}
		}()
	}
}

func (c *wsConn) writeLoop() {
	ping := time.NewTicker(c.s.pingPeriod)
	defer ping.Stop()
	idleCheck := make(<-chan time.Time)
	if c.s.cfg.IdleTimeout > 0 {
		t := time.NewTicker(max(min(c.s.cfg.IdleTimeout/4, time.Second), 10*time.Millisecond))
		defer t.Stop()
		idleCheck = t.C
	}
	defer c.ws.Close()
	for {
		select {
		case m := <-c.final:
			c.writeFinal(m)
			return
		default:
		}
		select {
		case m := <-c.final:
			c.writeFinal(m)
			return
		case m := <-c.out:
			c.ws.SetWriteDeadline(time.Now().Add(c.s.writeWait))
			err := c.write(m)
			m.release()
			if err != nil {
				c.closeWith(websocket.CloseAbnormalClosure, "")
				return
			}
		case <-idleCheck:
			if c.idle() && time.Since(time.Unix(0, c.lastActive.Load())) >= c.s.cfg.IdleTimeout {
				c.s.log.Debug("rpc: closing an idle websocket", "remote", c.ip)
				c.closeWith(websocket.CloseNormalClosure, "idle timeout")
			}
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.s.writeWait)); err != nil {
				c.closeWith(websocket.CloseAbnormalClosure, "")
				return
			}
		case <-c.ctx.Done():
			select {
			case m := <-c.final:
				c.writeFinal(m)
				return
			default:
			}
			c.writeClose()
			return
		}
	}
}

// write sends one queued message as a text frame (a reply chunk by chunk).
func (c *wsConn) write(m outMsg) error {
	if m.reply == nil {
		return c.ws.WriteMessage(websocket.TextMessage, m.b)
	}
	w, err := c.ws.NextWriter(websocket.TextMessage)
	if err != nil {
		return err
	}
	if _, err := m.reply.WriteTo(w); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

func (c *wsConn) writeFinal(m []byte) {
	c.ws.SetWriteDeadline(time.Now().Add(c.s.writeWait))
	if c.ws.WriteMessage(websocket.TextMessage, m) == nil {
		c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "slow consumer"), time.Now().Add(time.Second))
	}
}

func (c *wsConn) writeClose() {
	if c.closeCode == 0 || c.closeCode == websocket.CloseAbnormalClosure || c.closeCode == websocket.CloseMessageTooBig {
		return // nothing to send (1009 was already sent by the library)
	}
	c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(c.closeCode, c.closeText), time.Now().Add(time.Second))
}

// closeWith ends the connection; the first caller's close code wins.
func (c *wsConn) closeWith(code int, text string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeText = code, text
		c.cancel()
		// Make sure a writer stuck on a full socket or a reader waiting for
		// the peer wakes up even if the peer never cooperates.
		time.AfterFunc(c.s.dropGrace, func() { c.ws.Close() })
	})
}

// send queues a reply, waiting for room (backpressure on the caller).
func (c *wsConn) send(r *replyBuf) {
	select {
	case c.out <- outMsg{reply: r}:
	case <-c.ctx.Done():
		r.release()
	}
}

// sendEvent queues an event without blocking; a full queue drops the subscriber.
func (c *wsConn) sendEvent(m []byte) {
	if c.ctx.Err() != nil {
		return
	}
	select {
	case c.out <- outMsg{b: m}:
	default:
		c.drop("slow consumer")
	}
}

// drop disconnects a subscriber, sending it a final "dropped" event if possible.
func (c *wsConn) drop(reason string) {
	if !c.dropped.CompareAndSwap(false, true) {
		return
	}
	c.s.hub.remove(c)
	c.s.log.Warn("rpc: dropping event subscriber", "reason", reason)
	if m, err := eventMessage(TopicDropped, map[string]string{"reason": reason}, time.Now()); err == nil {
		select {
		case c.final <- m:
		default:
		}
	}
	c.closeWith(websocket.ClosePolicyViolation, reason)
}

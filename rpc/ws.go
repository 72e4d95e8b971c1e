package rpc

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

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

	out   chan []byte
	final chan []byte

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
		out:    make(chan []byte, s.cfg.SendQueue),
		final:  make(chan []byte, 1),
		ctx:    ctx,
		cancel: cancel,
	}
	c.topics.Store(&topicSet{})
	return c
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
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				c.s.log.Warn("rpc: websocket message too large, closing", "limit", c.s.cfg.MaxFrameBytes)
				c.closeWith(websocket.CloseMessageTooBig, "message too big")
			}
			return
		}
		select {
		case sem <- struct{}{}:
		case <-c.ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if out, _ := c.s.handle(ctx, c.role, data); out != nil {
				c.send(out)
			}
		}()
	}
}

func (c *wsConn) writeLoop() {
	ping := time.NewTicker(c.s.pingPeriod)
	defer ping.Stop()
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
			if err := c.ws.WriteMessage(websocket.TextMessage, m); err != nil {
				c.closeWith(websocket.CloseAbnormalClosure, "")
				return
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

// send queues a response, waiting for room (backpressure on the caller).
func (c *wsConn) send(m []byte) {
	select {
	case c.out <- m:
	case <-c.ctx.Done():
	}
}

// sendEvent queues an event without blocking; a full queue drops the subscriber.
func (c *wsConn) sendEvent(m []byte) {
	if c.ctx.Err() != nil {
		return
	}
	select {
	case c.out <- m:
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

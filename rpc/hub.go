package rpc

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Reserved topics.
const (
	// TopicStats is periodic: each subscriber gets the StatsSource snapshot
	// every interval seconds it chose (and once right away).
	TopicStats = "stats"
	// TopicDropped is sent by the server just before it disconnects a slow subscriber.
	TopicDropped = "dropped"
)

// Hub fans events out to websocket subscribers. Publish never blocks: a
// subscriber whose send queue is full is disconnected.
type Hub struct {
	mu    sync.RWMutex
	subs  map[*wsConn]struct{}
	stats atomic.Pointer[func() any]
	log   *slog.Logger
}

// Event is the params object of an "event" notification.
type Event struct {
	Topic string          `json:"topic"`
	Data  json.RawMessage `json:"data"`
	TS    time.Time       `json:"ts"`
}

type notification struct {
	JSONRPC string    `json:"jsonrpc"`
	Method  string    `json:"method"`
	Params  eventBody `json:"params"`
}

type eventBody struct {
	Topic string `json:"topic"`
	Data  any    `json:"data"`
	TS    string `json:"ts"`
}

// eventMessage encodes {"jsonrpc":"2.0","method":"event","params":{"topic","data","ts"}}.
// ts is RFC 3339 UTC with milliseconds.
func eventMessage(topic string, data any, ts time.Time) ([]byte, error) {
	return json.Marshal(notification{JSONRPC: "2.0", Method: "event",
		Params: eventBody{Topic: topic, Data: data, TS: ts.UTC().Format("2006-01-02T15:04:05.000Z07:00")}})
}

// Publish sends data (marshalled once to JSON) to every subscriber of topic.
// It never blocks and is cheap when nobody listens.
func (h *Hub) Publish(topic string, data any) {
	h.mu.RLock()
	if len(h.subs) == 0 {
		h.mu.RUnlock()
		return
	}
	var targets []*wsConn
	for c := range h.subs {
		if c.topics.Load().match(topic) {
			targets = append(targets, c)
		}
	}
	h.mu.RUnlock()
	if len(targets) == 0 {
		return
	}
	m, err := eventMessage(topic, data, time.Now())
	if err != nil {
		h.log.Error("rpc: cannot encode event", "topic", topic, "err", err)
		return
	}
	for _, c := range targets {
		c.sendEvent(m)
	}
}

// SetStatsSource sets the function producing the "stats" topic snapshot. It
// is called from subscriber goroutines and must be safe for concurrent use.
func (h *Hub) SetStatsSource(f func() any) {
	if f == nil {
		h.stats.Store(nil)
		return
	}
	h.stats.Store(&f)
}

// Subscribers returns the number of connections subscribed to at least one topic.
func (h *Hub) Subscribers() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.subs)
}

func (h *Hub) add(c *wsConn) {
	h.mu.Lock()
	h.subs[c] = struct{}{}
	h.mu.Unlock()
}

func (h *Hub) remove(c *wsConn) {
	h.mu.Lock()
	delete(h.subs, c)
	h.mu.Unlock()
}

func (h *Hub) snapshot() (data any, ok bool, err error) {
	f := h.stats.Load()
	if f == nil {
		return nil, false, nil
	}
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("stats source panic: %v", v)
		}
	}()
	return (*f)(), true, nil
}

// topicSet is an immutable set of subscribed topic patterns: exact names,
// "prefix.*" and "*" (every published topic; "stats" only when named).
type topicSet struct {
	names map[string]bool
}

func (t *topicSet) match(topic string) bool {
	if t == nil || len(t.names) == 0 {
		return false
	}
	if t.names[topic] {
		return true
	}
	if topic == TopicStats {
		return false
	}
	if t.names["*"] {
		return true
	}
	for p := range t.names {
		if pre, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(topic, pre) {
			return true
		}
	}
	return false
}

func (t *topicSet) list() []string {
	out := make([]string, 0, len(t.names))
	for n := range t.names {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (t *topicSet) with(add []string) *topicSet {
	n := &topicSet{names: map[string]bool{}}
	for k := range t.names {
		n.names[k] = true
	}
	for _, k := range add {
		n.names[k] = true
	}
	return n
}

func (t *topicSet) without(del []string) *topicSet {
	n := &topicSet{names: map[string]bool{}}
	if del == nil {
		return n
	}
	for k := range t.names {
		n.names[k] = true
	}
	for _, k := range del {
		delete(n.names, k)
	}
	return n
}

// statsLoop sends the stats snapshot right away and then every interval.
func (c *wsConn) statsLoop(interval time.Duration, stop chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		data, ok, err := c.s.hub.snapshot()
		if err != nil {
			c.s.log.Error("rpc: stats source failed", "err", err)
		} else if ok {
			if m, err := eventMessage(TopicStats, data, time.Now()); err == nil {
				c.sendEvent(m)
			} else {
				c.s.log.Error("rpc: cannot encode stats", "err", err)
			}
		}
		select {
		case <-t.C:
		case <-stop:
			return
		case <-c.ctx.Done():
			return
		}
	}
}

func (c *wsConn) stopStats() {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	if c.statsStop != nil {
		close(c.statsStop)
		c.statsStop = nil
	}
}

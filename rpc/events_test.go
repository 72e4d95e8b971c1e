package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func nextEvent(t *testing.T, ch <-chan Event, d time.Duration) Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("event channel closed")
		}
		return ev
	case <-time.After(d):
		t.Fatal("no event")
	}
	return Event{}
}

func TestEventsSubscribe(t *testing.T) {
	ts := startServer(t, Config{})
	ctx := context.Background()
	cl, err := Dial(ts.wsURL(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ch, err := cl.Subscribe(ctx, "uac.*", "reload")
	if err != nil {
		t.Fatal(err)
	}
	hub := ts.s.Hub()
	hub.Publish("usrloc.contact", map[string]string{"skip": "me"}) // not subscribed
	hub.Publish("uac.reg_state", map[string]any{"l_uuid": "1001", "state": "registered"})
	ev := nextEvent(t, ch, 5*time.Second)
	if ev.Topic != "uac.reg_state" || !jsonEqual(string(ev.Data), `{"l_uuid":"1001","state":"registered"}`) || time.Since(ev.TS) > time.Minute {
		t.Fatalf("event %+v", ev)
	}
	hub.Publish("reload", map[string]int{"version": 2})
	if ev := nextEvent(t, ch, 5*time.Second); ev.Topic != "reload" {
		t.Fatalf("event %+v", ev)
	}
	// Unsubscribe, then nothing arrives for that topic.
	res, err := cl.Call(ctx, "events.unsubscribe", []any{[]string{"reload"}})
	if err != nil || !jsonEqual(string(res), `{"topics":["uac.*"]}`) {
		t.Fatalf("unsubscribe: %s %v", res, err)
	}
	hub.Publish("reload", 1)
	hub.Publish("uac.x", []int{1})
	if ev := nextEvent(t, ch, 5*time.Second); ev.Topic != "uac.x" {
		t.Fatalf("event %+v", ev)
	}
	// Bad subscriptions.
	for _, params := range []any{[]any{[]string{}}, []any{[]string{"dropped"}}, []any{"stats", 0}, []any{42}} {
		var e *Error
		if _, err := cl.Call(ctx, "events.subscribe", params); !errors.As(err, &e) || e.Code != CodeInvalidParams {
			t.Errorf("subscribe %v: %v", params, err)
		}
	}
	// Over HTTP there is no connection to push to.
	hc, _ := Dial(ts.httpURL(), "")
	var e *Error
	if _, err := hc.Call(ctx, "events.subscribe", []any{"x"}); !errors.As(err, &e) || e.Code != CodeBadRequest {
		t.Errorf("subscribe over HTTP: %v", err)
	}
	if _, err := hc.Subscribe(ctx, "x"); err == nil {
		t.Error("Client.Subscribe over HTTP succeeded")
	}
}

func TestEventsStats(t *testing.T) {
	ts := startServer(t, Config{})
	n := 0
	ts.s.Hub().SetStatsSource(func() any { n++; return map[string]int{"uac:regtotal": 6} })
	cl, err := Dial(ts.wsURL(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ch, err := cl.SubscribeInterval(context.Background(), time.Second, "stats")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := 0; i < 2; i++ { // one right away, one a second later
		ev := nextEvent(t, ch, 5*time.Second)
		if ev.Topic != TopicStats || !jsonEqual(string(ev.Data), `{"uac:regtotal":6}`) {
			t.Fatalf("stats event %+v", ev)
		}
	}
	if el := time.Since(start); el < 800*time.Millisecond {
		t.Fatalf("two stats events within %v with a 1 s interval", el)
	}
	// "*" does not include the periodic stats topic but does include others.
	res, err := cl.Call(context.Background(), "events.subscribe", []any{[]string{"*"}})
	if err != nil || !jsonEqual(string(res), `{"topics":["*","stats"],"interval":1}`) {
		t.Fatalf("subscribe *: %s %v", res, err)
	}
}

// TestSlowSubscriberDropped: a subscriber that never reads is dropped while
// Publish stays non-blocking and a reading subscriber keeps getting events.
func TestSlowSubscriberDropped(t *testing.T) {
	ts := startServer(t, Config{SendQueue: 8}, func(s *Server) { s.dropGrace = 200 * time.Millisecond })
	hub := ts.s.Hub()

	// The slow one: a raw websocket that subscribes, then stops reading.
	slow := wsDial(t, ts.wsURL(), nil)
	if got := wsRoundTrip(t, slow, `{"jsonrpc":"2.0","method":"events.subscribe","params":[["big","marker"]],"id":1}`, 5*time.Second); !strings.Contains(got, `"result"`) {
		t.Fatalf("slow subscribe: %s", got)
	}
	// The fast one reads everything.
	fast, err := Dial(ts.wsURL(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	ch, err := fast.Subscribe(context.Background(), "big", "marker")
	if err != nil {
		t.Fatal(err)
	}
	markers := make(chan Event, 16)
	go func() {
		for ev := range ch {
			if ev.Topic != "big" {
				markers <- ev
			}
		}
		close(markers)
	}()
	if hub.Subscribers() != 2 {
		t.Fatalf("subscribers = %d", hub.Subscribers())
	}

	payload := strings.Repeat("x", 64<<10)
	var worst time.Duration
	deadline := time.Now().Add(30 * time.Second)
	for hub.Subscribers() > 1 {
		if time.Now().After(deadline) {
			t.Fatal("slow subscriber never dropped")
		}
		start := time.Now()
		hub.Publish("big", payload)
		worst = max(worst, time.Since(start))
		time.Sleep(time.Millisecond)
	}
	if worst > 200*time.Millisecond {
		t.Errorf("Publish blocked for %v", worst)
	}
	t.Logf("slowest Publish: %v", worst)

	hub.Publish("marker", map[string]bool{"after": true})
	select {
	case ev, ok := <-markers:
		if !ok || ev.Topic != "marker" {
			t.Fatalf("fast subscriber: %+v ok=%v", ev, ok)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("fast subscriber did not get the event after the drop")
	}

	// The slow connection is closed; it may find a final "dropped" event first.
	slow.SetReadDeadline(time.Now().Add(20 * time.Second))
	sawDropped := false
	for {
		_, msg, err := slow.ReadMessage()
		if err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("slow connection not closed")
			}
			if ce := (*websocket.CloseError)(nil); errors.As(err, &ce) && ce.Code != websocket.ClosePolicyViolation && ce.Code != websocket.CloseAbnormalClosure {
				t.Errorf("close code %d", ce.Code)
			}
			break
		}
		var n struct {
			Params Event `json:"params"`
		}
		if json.Unmarshal(msg, &n) == nil && n.Params.Topic == TopicDropped {
			sawDropped = jsonEqual(string(n.Params.Data), `{"reason":"slow consumer"}`)
		}
	}
	t.Logf("final dropped event delivered: %v", sawDropped)
}

// TestKeepalive: a peer that answers pings (by reading) stays connected; a
// peer that never reads stops answering pings and is disconnected.
func TestKeepalive(t *testing.T) {
	ts := startServer(t, Config{}, func(s *Server) {
		s.pingPeriod = 50 * time.Millisecond
		s.pongWait = 300 * time.Millisecond
		s.dropGrace = 100 * time.Millisecond
	})
	alive, err := Dial(ts.wsURL(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer alive.Close()
	silent := wsDial(t, ts.wsURL(), nil)
	time.Sleep(time.Second)
	if _, err := alive.Call(context.Background(), "test.void", nil); err != nil {
		t.Fatalf("reading client was disconnected: %v", err)
	}
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := silent.ReadMessage(); err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("silent client still connected")
			}
			break
		}
	}
}

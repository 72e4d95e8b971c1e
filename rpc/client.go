package rpc

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// ErrClosed is returned by calls on a closed client connection.
var ErrClosed = errors.New("rpc: connection closed")

// ErrTooManyConns wraps the error of a websocket handshake refused with HTTP
// 503 (the server's websocket caps); POST /RPC still works then.
var ErrTooManyConns = errors.New("rpc: too many websocket connections")

// Client calls a kamgo (or any JSON-RPC 2.0) server over a websocket
// (ws://, wss://) or HTTP POST (http://, https://). It is safe for concurrent use.
type Client struct {
	url   string
	token string

	hc *http.Client // HTTP mode

	ws      *websocket.Conn // websocket mode
	wmu     sync.Mutex
	mu      sync.Mutex
	pending map[string]chan *clientResponse
	nextID  atomic.Uint64
	events  chan Event
	done    chan struct{}
	quit    chan struct{} // closed by Close
	err     error
	closing atomic.Bool
}

type clientRequest struct {
	JSONRPC string `json:"jsonrpc"`
	Method  string `json:"method"`
	Params  any    `json:"params,omitempty"`
	ID      any    `json:"id,omitempty"`
}

type clientResponse struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
	Result json.RawMessage `json:"result"`
	Error  *Error          `json:"error"`
}

// Dial connects to url with an optional bearer token. A ws:// or wss:// URL
// opens a websocket (path "" means /ws); http:// or https:// uses POST
// requests (path "" means /RPC) and connects lazily on the first Call.
func Dial(url, token string) (*Client, error) {
	return DialContext(context.Background(), url, token)
}

// DialContext is Dial with a context bounding the websocket handshake.
func DialContext(ctx context.Context, rawurl, token string) (*Client, error) {
	return DialTLS(ctx, rawurl, token, nil)
}

// DialTLS is DialContext with the TLS settings for wss:// and https:// URLs
// (a CA for a self-signed server certificate, say); nil means the system's.
func DialTLS(ctx context.Context, rawurl, token string, tc *tls.Config) (*Client, error) {
	u, err := url.Parse(rawurl)
	if err != nil {
		return nil, fmt.Errorf("rpc: bad URL %q: %v", rawurl, err)
	}
	c := &Client{token: token, done: make(chan struct{}), quit: make(chan struct{})}
	switch u.Scheme {
	case "http", "https":
		if u.Path == "" || u.Path == "/" {
			u.Path = "/RPC"
		}
		c.url = u.String()
		c.hc = &http.Client{}
		if tc != nil {
			c.hc.Transport = &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}
		}
		return c, nil
	case "ws", "wss":
		if u.Path == "" || u.Path == "/" {
			u.Path = "/ws"
		}
		c.url = u.String()
	default:
		return nil, fmt.Errorf("rpc: unsupported URL scheme %q (want ws, wss, http or https)", u.Scheme)
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, Proxy: http.ProxyFromEnvironment, TLSClientConfig: tc}
	hdr := http.Header{}
	if token != "" {
		hdr.Set("Authorization", "Bearer "+token)
	}
	ws, resp, err := d.DialContext(ctx, c.url, hdr)
	if err != nil {
		if resp != nil {
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			msg := strings.TrimSpace(string(body))
			switch resp.StatusCode {
			case http.StatusUnauthorized:
				return nil, NewError(CodeUnauthorized, "Unauthorized")
			case http.StatusForbidden:
				if msg == "" {
					msg = "Forbidden"
				}
				return nil, NewError(CodeForbidden, msg)
			case http.StatusServiceUnavailable:
				return nil, fmt.Errorf("%w: websocket handshake with %s refused: HTTP %s: %s", ErrTooManyConns, c.url, resp.Status, msg)
			}
			return nil, fmt.Errorf("rpc: websocket handshake with %s failed: HTTP %s: %s", c.url, resp.Status, msg)
		}
		return nil, fmt.Errorf("rpc: cannot connect to %s: %w", c.url, err)
	}
	c.ws = ws
	c.pending = map[string]chan *clientResponse{}
	c.events = make(chan Event, 64)
	go c.readLoop()
	return c, nil
}

// URL returns the endpoint the client talks to.
func (c *Client) URL() string { return c.url }

// Close closes the connection. Pending calls fail with ErrClosed.
func (c *Client) Close() error {
	if c.ws == nil {
		return nil
	}
	if c.closing.CompareAndSwap(false, true) {
		close(c.quit)
		c.wmu.Lock()
		c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		c.wmu.Unlock()
		c.ws.Close()
	}
	<-c.done
	return nil
}

// Done is closed when a websocket connection ends (never, in HTTP mode).
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the websocket connection ended, once Done is closed.
func (c *Client) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

func (c *Client) readLoop() {
	var err error
	defer func() {
		if c.closing.Load() {
			err = ErrClosed
		}
		c.mu.Lock()
		c.err = err
		pend := c.pending
		c.pending = nil
		c.mu.Unlock()
		for _, ch := range pend {
			close(ch)
		}
		close(c.events)
		close(c.done)
	}()
	for {
		var data []byte
		_, data, err = c.ws.ReadMessage()
		if err != nil {
			return
		}
		data = bytes.TrimSpace(data)
		if len(data) > 0 && data[0] == '[' {
			var items []json.RawMessage
			if json.Unmarshal(data, &items) == nil {
				for _, it := range items {
					c.dispatch(it)
				}
			}
			continue
		}
		c.dispatch(data)
	}
}

func (c *Client) dispatch(data []byte) {
	var r clientResponse
	if json.Unmarshal(data, &r) != nil {
		return
	}
	if r.Method != "" && (len(r.ID) == 0 || isNull(r.ID)) {
		if r.Method != "event" {
			return
		}
		var ev Event
		if json.Unmarshal(r.Params, &ev) != nil {
			return
		}
		select { // the reader waits for the consumer: read the events channel
		case c.events <- ev:
		case <-c.quit:
		}
		return
	}
	key := idKey(r.ID)
	c.mu.Lock()
	ch := c.pending[key]
	delete(c.pending, key)
	c.mu.Unlock()
	if ch != nil {
		ch <- &r
	}
}

func idKey(id json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, id) != nil {
		return string(id)
	}
	return b.String()
}

// Call invokes method with params (nil, a slice for positional or a map/struct
// for named params) and returns the raw JSON result. A JSON-RPC error response
// is returned as *Error; anything else is a transport error.
func (c *Client) Call(ctx context.Context, method string, params any) (json.RawMessage, error) {
	id := c.nextID.Add(1)
	req, err := json.Marshal(clientRequest{JSONRPC: "2.0", Method: method, Params: params, ID: id})
	if err != nil {
		return nil, fmt.Errorf("rpc: cannot encode params: %w", err)
	}
	var r *clientResponse
	if c.hc != nil {
		r, err = c.post(ctx, req)
	} else {
		r, err = c.wsCall(ctx, strconv.FormatUint(id, 10), req)
	}
	if err != nil {
		return nil, err
	}
	if r.Error != nil {
		return nil, r.Error
	}
	if r.Result == nil {
		return nil, fmt.Errorf("rpc: response has neither result nor error")
	}
	return r.Result, nil
}

// Notify sends a notification (no response is expected or waited for).
func (c *Client) Notify(ctx context.Context, method string, params any) error {
	req, err := json.Marshal(clientRequest{JSONRPC: "2.0", Method: method, Params: params})
	if err != nil {
		return fmt.Errorf("rpc: cannot encode params: %w", err)
	}
	if c.hc != nil {
		_, err = c.post(ctx, req)
		return err
	}
	return c.write(ctx, req)
}

func (c *Client) write(ctx context.Context, msg []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	dl := time.Now().Add(10 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	c.ws.SetWriteDeadline(dl)
	if err := c.ws.WriteMessage(websocket.TextMessage, msg); err != nil {
		if c.closing.Load() {
			return ErrClosed
		}
		return fmt.Errorf("rpc: write: %w", err)
	}
	return nil
}

func (c *Client) wsCall(ctx context.Context, key string, req []byte) (*clientResponse, error) {
	ch := make(chan *clientResponse, 1)
	c.mu.Lock()
	if c.pending == nil {
		c.mu.Unlock()
		return nil, c.closedErr()
	}
	c.pending[key] = ch
	c.mu.Unlock()
	if err := c.write(ctx, req); err != nil {
		c.mu.Lock()
		delete(c.pending, key)
		c.mu.Unlock()
		return nil, err
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, c.closedErr()
		}
		return r, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, key)
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}

func (c *Client) closedErr() error {
	<-c.done
	if c.err == nil || errors.Is(c.err, ErrClosed) {
		return ErrClosed
	}
	return fmt.Errorf("rpc: connection lost: %w", c.err)
}

func (c *Client) post(ctx context.Context, req []byte) (*clientResponse, error) {
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(req))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		hr.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(hr)
	if err != nil {
		return nil, fmt.Errorf("rpc: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("rpc: reading response: %w", err)
	}
	if resp.StatusCode == http.StatusNoContent {
		return &clientResponse{Result: json.RawMessage("{}")}, nil
	}
	var r clientResponse
	if json.Unmarshal(body, &r) != nil || (r.Result == nil && r.Error == nil) {
		if resp.StatusCode == http.StatusUnauthorized {
			return nil, NewError(CodeUnauthorized, "Unauthorized")
		}
		return nil, fmt.Errorf("rpc: HTTP %s from %s: %s", resp.Status, c.url, strings.TrimSpace(string(truncate(body, 200))))
	}
	return &r, nil
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// Subscribe subscribes to topics (websocket only) and returns the channel of
// every event notification received on this connection; it is closed when
// the connection ends. A "dropped" event means the server disconnected us as
// a slow consumer. Keep reading the channel: while it is full, responses to
// further calls wait too.
func (c *Client) Subscribe(ctx context.Context, topics ...string) (<-chan Event, error) {
	return c.SubscribeInterval(ctx, 0, topics...)
}

// SubscribeInterval is Subscribe with the period of the "stats" topic
// (rounded to whole seconds; 0 keeps the server default).
func (c *Client) SubscribeInterval(ctx context.Context, interval time.Duration, topics ...string) (<-chan Event, error) {
	if c.ws == nil {
		return nil, errors.New("rpc: events need a websocket connection (ws:// or wss:// URL)")
	}
	if len(topics) == 0 {
		topics = []string{"*"}
	}
	params := []any{topics}
	if interval > 0 {
		secs := int((interval + time.Second/2) / time.Second)
		params = append(params, max(secs, 1))
	}
	if _, err := c.Call(ctx, "events.subscribe", params); err != nil {
		return nil, err
	}
	return c.events, nil
}

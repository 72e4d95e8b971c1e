package rtpengine

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// node is one rtpengine instance of a set (Kamailio's rtpp_node).
type node struct {
	url    string // as configured, without the weight: "udp:127.0.0.1:2223"
	set    int
	index  int
	weight int
	host   string // host:port
	family string // udp or udp6

	// guarded by engines.mu
	disabled  bool
	permanent bool      // disabled by rtpengine.enable(url, 0): never rechecked
	recheck   time.Time // when a disabled node is tried again
}

// parseSock parses rtpengine_sock: sets separated by ';', each
// "[setid ==] url[=weight] url[=weight]...", urls "udp:host:port" or
// "udp6:host:port" (Kamailio's syntax; unix sockets are not supported).
func parseSock(s string, defSet int) ([]*node, error) {
	var out []*node
	idx := 0
	for _, def := range strings.Split(s, ";") {
		def = strings.TrimSpace(def)
		if def == "" {
			continue
		}
		set := defSet
		if id, rest, ok := strings.Cut(def, "=="); ok {
			n, err := strconv.Atoi(strings.TrimSpace(id))
			if err != nil || n < 0 {
				return nil, fmt.Errorf("rtpengine_sock: invalid set id %q", strings.TrimSpace(id))
			}
			set, def = n, strings.TrimSpace(rest)
			if def == "" {
				return nil, fmt.Errorf("rtpengine_sock: set %d: empty rtpengine list", n)
			}
		}
		for _, u := range strings.Fields(def) {
			weight := 1
			if i := strings.LastIndexByte(u, '='); i > 0 {
				w, err := strconv.Atoi(u[i+1:])
				if err != nil || w < 0 {
					return nil, fmt.Errorf("rtpengine_sock: %q: invalid weight", u)
				}
				u, weight = u[:i], w
			}
			fam, hp, ok := strings.Cut(u, ":")
			if !ok || (fam != "udp" && fam != "udp6") {
				return nil, fmt.Errorf("rtpengine_sock: %q: want udp:host:port or udp6:host:port", u)
			}
			host, port, err := net.SplitHostPort(hp)
			if err != nil || host == "" {
				return nil, fmt.Errorf("rtpengine_sock: %q: want udp:host:port", u)
			}
			if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
				return nil, fmt.Errorf("rtpengine_sock: %q: invalid port", u)
			}
			out = append(out, &node{url: u, set: set, index: idx, weight: weight, host: hp, family: fam})
			idx++
		}
	}
	return out, nil
}

// client sends ng commands over one UDP socket and matches the answers
// by cookie; one reader goroutine hands each answer to its waiter.
type client struct {
	mu      sync.Mutex
	conns   map[string]*net.UDPConn // by family
	waiters map[string]chan []byte  // by cookie
	pid     int
	closed  bool
}

func newClient() *client {
	return &client{conns: map[string]*net.UDPConn{}, waiters: map[string]chan []byte{}, pid: os.Getpid()}
}

func (c *client) conn(family string) (*net.UDPConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("rtpengine: module stopped")
	}
	if conn := c.conns[family]; conn != nil {
		return conn, nil
	}
	nw := "udp4"
	if family == "udp6" {
		nw = "udp6"
	}
	conn, err := net.ListenUDP(nw, nil)
	if err != nil {
		return nil, err
	}
	c.conns[family] = conn
	go c.read(conn)
	return conn, nil
}

func (c *client) read(conn *net.UDPConn) {
	buf := make([]byte, 65536)
	for {
		n, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		cookie, body, ok := strings.Cut(string(buf[:n]), " ")
		if !ok {
			continue
		}
		c.mu.Lock()
		ch := c.waiters[cookie]
		delete(c.waiters, cookie)
		c.mu.Unlock()
		if ch != nil {
			ch <- []byte(body)
		}
	}
}

func (c *client) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for k, conn := range c.conns {
		conn.Close()
		delete(c.conns, k)
	}
}

var cookieSeq = func() *atomic.Uint64 {
	var a atomic.Uint64
	a.Store(uint64(time.Now().UnixNano()) & 0xffffffff)
	return &a
}()

var errTimeout = errors.New("timeout waiting for the rtpengine's answer")

// send sends one command to n and waits for its answer: retr attempts of
// tout each, one cookie for all (as Kamailio's send_rtpp_command).
func (c *client) send(n *node, cmd map[string]any, tout time.Duration, retr int) (map[string]any, error) {
	conn, err := c.conn(n.family)
	if err != nil {
		return nil, err
	}
	addr, err := net.ResolveUDPAddr(map[string]string{"udp": "udp4", "udp6": "udp6"}[n.family], n.host)
	if err != nil {
		return nil, err
	}
	// rtpengine answers a cookie it has seen with its cached answer: the
	// sequence is shared by every module instance of the process (a
	// reload builds a new one) and starts from the clock.
	cookie := fmt.Sprintf("0_%d_%d", c.pid, cookieSeq.Add(1))
	c.mu.Lock()
	ch := make(chan []byte, 1)
	c.waiters[cookie] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiters, cookie)
		c.mu.Unlock()
	}()
	pkt, err := Encode([]byte(cookie+" "), cmd)
	if err != nil {
		return nil, err
	}
	if retr < 1 {
		retr = 1
	}
	t := time.NewTimer(tout)
	defer t.Stop()
	for i := 0; i < retr; i++ {
		if _, err := conn.WriteToUDP(pkt, addr); err != nil {
			return nil, err
		}
		if i > 0 {
			t.Reset(tout)
		}
		select {
		case body := <-ch:
			v, err := Decode(body)
			if err != nil {
				return nil, err
			}
			d, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("rtpengine answer is not a dictionary")
			}
			return d, nil
		case <-t.C:
		}
	}
	return nil, errTimeout
}

package tests

// Issue 14, "SIP transports and transactions" and "Storage": each attack
// scaled down to seconds against a real kamd (docs/limits.md). The full
// 30-second figures come from the stress mode (hardening_stress_test.go,
// KAMGO_STRESS=1).

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
)

// hardenScript is kamd's default script (registrar, stateful relay) with
// extra config lines in front.
func hardenScript(t testing.TB, extra ...string) string {
	t.Helper()
	src, err := os.ReadFile("../kamd/default.star")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(extra, "\n") + "\n" + string(src)
}

// registerUDP sends one REGISTER for user from uac and returns the final reply.
func registerUDP(t testing.TB, k *Kamd, uac *UAC, user string, contacts ...string) received {
	t.Helper()
	if len(contacts) == 0 {
		contacts = []string{"<sip:" + user + "@" + uac.Local() + ">"}
	}
	callID := randToken() + "@kamgo.test"
	req := fmt.Sprintf("REGISTER sip:127.0.0.1:%d SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK%s;rport\r\nMax-Forwards: 70\r\n"+
		"From: <sip:%s@kamgo.test>;tag=%s\r\nTo: <sip:%s@kamgo.test>\r\nCall-ID: %s\r\nCSeq: 1 REGISTER\r\nContact: %s\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n",
		k.Port, uac.Local(), randToken(), user, randToken(), user, callID, strings.Join(contacts, ","))
	uac.Send(k.UDPAddr(), []byte(req))
	return uac.Final(callID, 5*time.Second)
}

// registerTCP does the same on a new TCP connection from ip.
func registerTCP(t testing.TB, k *Kamd, ip, user string) (int, error) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 3 * time.Second}
	c, err := d.Dial("tcp", k.Addr())
	if err != nil {
		return 0, err
	}
	defer c.Close()
	local := c.LocalAddr().String()
	req := fmt.Sprintf("REGISTER sip:127.0.0.1:%d SIP/2.0\r\nVia: SIP/2.0/TCP %s;branch=z9hG4bK%s;rport\r\nMax-Forwards: 70\r\n"+
		"From: <sip:%s@kamgo.test>;tag=%s\r\nTo: <sip:%s@kamgo.test>\r\nCall-ID: %s@kamgo.test\r\nCSeq: 1 REGISTER\r\nContact: <sip:%s@%s;transport=tcp>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n",
		k.Port, local, randToken(), user, randToken(), user, randToken(), user, local)
	if _, err := c.Write([]byte(req)); err != nil {
		return 0, err
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if n == 0 {
		return 0, fmt.Errorf("no reply: %v", err)
	}
	f := strings.Fields(string(buf[:n]))
	if len(f) < 2 {
		return 0, fmt.Errorf("reply %q", buf[:n])
	}
	return strconv.Atoi(f[1])
}

func dialFrom(t testing.TB, ip, to string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 3 * time.Second}
	c, err := d.Dial("tcp", to)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedWithin reports whether kamd closes c within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// TestHardenTCPConnections: tcp_accept_iplimit, tcp_msg_read_timeout
// against a slow-loris, and tcp_max_connections full of idle connections
// still letting a new client register.
func TestHardenTCPConnections(t *testing.T) {
	k := startKamd(t, hardenScript(t,
		`core_param("tcp_accept_iplimit", 5)`, `core_param("tcp_max_connections", 20)`,
		`core_param("tcp_msg_read_timeout", 1)`, `core_param("tcp_msg_data_timeout", 30)`))
	t.Run("per-IP limit", func(t *testing.T) {
		var cs []net.Conn
		for i := 0; i < 5; i++ {
			cs = append(cs, dialFrom(t, "127.0.0.10", k.Addr()))
		}
		sixth := dialFrom(t, "127.0.0.10", k.Addr())
		if !closedWithin(sixth, 5*time.Second) {
			t.Fatal("a 6th connection from one address stayed open with tcp_accept_iplimit 5")
		}
		for _, c := range cs {
			c.Close()
		}
		if code, err := registerTCP(t, k, "127.0.0.11", "iplimit"); code != 200 {
			t.Fatalf("another address: %d %v", code, err)
		}
	})
	t.Run("slow loris", func(t *testing.T) {
		c := dialFrom(t, "127.0.0.20", k.Addr())
		done := make(chan bool)
		go func() { done <- closedWithin(c, 10*time.Second) }()
		msg := "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.20:1;branch=z9hG4bKslow\r\n"
	drip:
		for i := 0; i < len(msg); i++ {
			if _, err := c.Write([]byte{msg[i]}); err != nil {
				break
			}
			select {
			case closed := <-done:
				if !closed {
					t.Fatal("not closed")
				}
				break drip
			case <-time.After(300 * time.Millisecond):
			}
			if i == len(msg)-1 {
				t.Fatal("a message dripping one byte per 300 ms was still read after 1 s of tcp_msg_read_timeout")
			}
		}
	})
	t.Run("global cap", func(t *testing.T) {
		for i := 0; i < 24; i++ { // 4 × 5 addresses fill the 20, 4 more evict
			dialFrom(t, "127.0.1."+strconv.Itoa(1+i/5), k.Addr())
		}
		if code, err := registerTCP(t, k, "127.0.2.1", "fresh"); code != 200 {
			t.Fatalf("a new client with tcp_max_connections full of idle connections: %d %v", code, err)
		}
	})
	k.Alive(t)
}

// TestHardenInviteFlood: INVITEs relayed statefully to a next hop that
// never answers fill max_transactions; the rest get 503 at once, while
// REGISTER probes (no transaction) and OPTIONS keep getting 200.
func TestHardenInviteFlood(t *testing.T) {
	hole, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	holePort := hole.LocalAddr().(*net.UDPAddr).Port
	k := startKamd(t, hardenScript(t, `modparam("tm", "max_transactions", 40)`))
	flood := newUAC(t)
	codes := map[int]int{}
	const n = 120
	for i := 0; i < n; i++ {
		flood.Send(k.UDPAddr(), buildRequest(flood.Local(), reqSpec{Method: "INVITE", RURI: "sip:dead@127.0.0.1:" + strconv.Itoa(holePort)}))
	}
	deadline := time.After(5 * time.Second)
	for codes[503] < n-40 {
		select {
		case <-deadline:
			t.Fatalf("after %d INVITEs to a dead next hop with max_transactions 40: replies %v, want %d 503s", n, codes, n-40)
		default:
		}
		r, ok := flood.Recv(time.Second)
		if ok && r.Res() != nil {
			codes[r.Res().StatusCode]++
		}
	}
	probe := newUAC(t)
	if r := registerUDP(t, k, probe, "probe"); r.Res().StatusCode != 200 {
		t.Fatalf("REGISTER probe during the flood: %d", r.Res().StatusCode)
	}
	if r := probe.Do(k, reqSpec{Method: "OPTIONS", RURI: "sip:127.0.0.1:" + strconv.Itoa(k.Port)}); r.Res().StatusCode != 200 {
		t.Fatalf("OPTIONS probe during the flood: %d", r.Res().StatusCode)
	}
	if codes[500] > 0 {
		t.Errorf("a 503'd INVITE also got a 500 from sl_reply_error: %v", codes)
	}
	k.Alive(t)
}

// TestHardenOversizeReply: a 200 that would list more contacts than a UDP
// datagram holds is replaced by a 500 the client sees; by default
// max_contacts (32) refuses such an AoR with 503 first.
func TestHardenOversizeReply(t *testing.T) {
	contacts := func(n int) []string {
		var cs []string
		for i := 0; i < n; i++ {
			cs = append(cs, fmt.Sprintf("<sip:d%d@127.0.0.1:%d>", i, 10000+i))
		}
		return cs
	}
	t.Run("max_contacts default", func(t *testing.T) {
		k := startKamd(t, hardenScript(t))
		uac := newUAC(t)
		if r := registerUDP(t, k, uac, "many", contacts(33)...); r.Res().StatusCode != 503 {
			t.Fatalf("33 contacts with the default max_contacts: %d, want 503", r.Res().StatusCode)
		}
		if r := registerUDP(t, k, uac, "some", contacts(32)...); r.Res().StatusCode != 200 {
			t.Fatalf("32 contacts: %d, want 200", r.Res().StatusCode)
		}
	})
	t.Run("reply too large for UDP", func(t *testing.T) {
		k := startKamd(t, hardenScript(t, `modparam("registrar", "max_contacts", 0)`))
		uac := newUAC(t)
		r := registerUDP(t, k, uac, "huge", contacts(1700)...)
		if r.Res().StatusCode != 500 || len(headerLines(r.Raw, "Warning")) != 1 {
			t.Fatalf("REGISTER whose 200 exceeds a datagram: got\n%s", r.Raw)
		}
		k.WaitLog(t, "reply not sent", 2*time.Second)
	})
}

// TestHardenCorruptDatabase: a database with 16 KB of garbage in the middle
// is refused at start, naming the file; --db-no-check skips the check.
func TestHardenCorruptDatabase(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kamgo.db")
	db, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE filler (id INTEGER PRIMARY KEY, v TEXT); CREATE INDEX filler_v ON filler(v)`); err != nil {
		t.Fatal(err)
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3000; i++ {
		if _, err := tx.Exec(`INSERT INTO filler (v) VALUES (?)`, strings.Repeat(strconv.Itoa(i), 20)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	db.Close()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) < 64<<10 {
		t.Fatalf("database only %d bytes", len(raw))
	}
	mid := len(raw) / 2 / 4096 * 4096
	copy(raw[mid:], bytes.Repeat([]byte("garbage!"), 2048))
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runKamdTimeout(t, 20*time.Second, "-l", "udp:127.0.0.1:0", "--rpc", "off", "--db", path)
	if code == 0 || !strings.Contains(stderr, path) || !strings.Contains(stderr, "corrupt") {
		t.Fatalf("kamd on a corrupt database: exit %d, stderr:\n%s", code, stderr)
	}
}

// runKamdTimeout runs kamd (which should refuse to start) and kills it
// after d if it does start.
func runKamdTimeout(t testing.TB, d time.Duration, args ...string) (string, string, int) {
	t.Helper()
	type res struct {
		o, e string
		c    int
	}
	ch := make(chan res, 1)
	go func() { o, e, c := runKamd(t, args...); ch <- res{o, e, c} }()
	select {
	case r := <-ch:
		return r.o, r.e, r.c
	case <-time.After(d):
		t.Fatalf("kamd %v did not exit within %v", args, d)
	}
	return "", "", 0
}

// TestHardenWriteThroughFailure: with db_mode 1 a REGISTER whose row cannot
// be written gets 500, never 200, and memory does not claim the binding.
func TestHardenWriteThroughFailure(t *testing.T) {
	k := startKamd(t, hardenScript(t))
	uac := newUAC(t)
	if r := registerUDP(t, k, uac, "alice"); r.Res().StatusCode != 200 {
		t.Fatalf("first REGISTER: %d", r.Res().StatusCode)
	}
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(k.Dir, "kamgo.db")+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`DROP TABLE location`); err != nil {
		t.Fatal(err)
	}
	r := registerUDP(t, k, uac, "bob")
	if r.Res().StatusCode != 500 {
		t.Fatalf("REGISTER whose write-through failed: %d, want 500\n%s", r.Res().StatusCode, r.Raw)
	}
	// bob is not in memory either: a call to him is 404, not relayed.
	call := uac.Do(k, reqSpec{Method: "INVITE", RURI: "sip:bob@127.0.0.1:" + strconv.Itoa(k.Port)})
	if call.Res().StatusCode != 404 {
		t.Fatalf("INVITE to the binding that was not saved: %d, want 404", call.Res().StatusCode)
	}
	k.Alive(t)
}

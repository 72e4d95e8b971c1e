package tests

import (
	"encoding/json"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

// smokeRegistrar is a minimal loopback registrar: it challenges a REGISTER
// without credentials (SHA-256 digest) and answers one with credentials
// 200, granting 60 s on the Contact.
type smokeRegistrar struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  []*sip.Request
}

func startSmokeRegistrar(t *testing.T) *smokeRegistrar {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &smokeRegistrar{conn: c}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			msg, err := sip.NewParser().ParseSIP(append([]byte(nil), buf[:n]...))
			req, ok := msg.(*sip.Request)
			if err != nil || !ok || req.Method != sip.REGISTER {
				continue
			}
			r.mu.Lock()
			r.got = append(r.got, req)
			r.mu.Unlock()
			var res *sip.Response
			if core.FirstHeader(req, "Authorization") == nil {
				res = core.BuildReply(req, 401, "Unauthorized", []sip.Header{
					sip.NewHeader("WWW-Authenticate", `Digest realm="smoke.test", nonce="n1", qop="auth", algorithm=SHA-256`)})
			} else {
				exp := "60"
				if e := core.FirstHeader(req, "Expires"); e != nil && e.Value() == "0" {
					exp = "0"
				}
				res = core.BuildReply(req, 200, "OK", []sip.Header{
					sip.NewHeader("Contact", req.Contact().Value()+";expires="+exp)})
			}
			c.WriteToUDP([]byte(res.String()), from)
		}
	}()
	return r
}

func (r *smokeRegistrar) port() int { return r.conn.LocalAddr().(*net.UDPAddr).Port }

// kamd registers a uacreg row (written with Kamailio's own DDL before kamd
// starts) to a registrar on loopback, with digest, and kamctl shows it
// registered; SIGTERM with reg_unregister_on_stop sends Expires: 0.
func TestUACRegSmoke(t *testing.T) {
	reg := startSmokeRegistrar(t)
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "uac.db")
	db, err := core.OpenDB(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	rp := strconv.Itoa(reg.port())
	for _, q := range []string{
		`CREATE TABLE uacreg (id INTEGER PRIMARY KEY NOT NULL, l_uuid VARCHAR(64) DEFAULT '' NOT NULL, l_username VARCHAR(64) DEFAULT '' NOT NULL, l_domain VARCHAR(64) DEFAULT '' NOT NULL, r_username VARCHAR(64) DEFAULT '' NOT NULL, r_domain VARCHAR(64) DEFAULT '' NOT NULL, realm VARCHAR(64) DEFAULT '' NOT NULL, auth_username VARCHAR(64) DEFAULT '' NOT NULL, auth_password VARCHAR(64) DEFAULT '' NOT NULL, auth_ha1 VARCHAR(128) DEFAULT '' NOT NULL, auth_proxy VARCHAR(255) DEFAULT '' NOT NULL, expires INTEGER DEFAULT 0 NOT NULL, flags INTEGER DEFAULT 0 NOT NULL, reg_delay INTEGER DEFAULT 0 NOT NULL, contact_addr VARCHAR(255) DEFAULT '' NOT NULL, socket VARCHAR(128) DEFAULT '' NOT NULL, CONSTRAINT uacreg_l_uuid_idx UNIQUE (l_uuid))`,
		`INSERT INTO version (table_name, table_version) values ('uacreg','5')`,
		`INSERT INTO uacreg (l_uuid, l_username, l_domain, r_username, r_domain, realm, auth_username, auth_password, auth_ha1, auth_proxy, expires) VALUES ('trunk1','alice','local.test','alice_r','127.0.0.1:` + rp + `','smoke.test','alice_a','secret','','sip:127.0.0.1:` + rp + `',120)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	script := func(int) string {
		return `modparam("uac", "reg_db_url", "sqlite:///` + strings.TrimPrefix(dbPath, "/") + `")
modparam("uac", "reg_unregister_on_stop", 1)

def ksr_request_route():
    KSR.sl.send_reply(404, "Not here")
`
	}
	// Cleanups run last-registered first: this check runs after kamd's
	// SIGTERM stop, which unregisters (reg_unregister_on_stop).
	t.Cleanup(func() {
		reg.mu.Lock()
		defer reg.mu.Unlock()
		last := reg.got[len(reg.got)-1]
		if e := core.FirstHeader(last, "Expires"); e == nil || e.Value() != "0" {
			t.Errorf("no un-REGISTER at shutdown; last REGISTER:\n%s", last)
		}
	})
	k := startRPCKamd(t, rpcKamdOpts{script: script})
	var rec map[string]any
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		res := runKamctl(t, nil, "-s", k.WS(), "--json", "uac.reg_dump")
		var recs []map[string]any
		if res.Code == 0 && json.Unmarshal([]byte(res.Stdout), &recs) == nil && len(recs) == 1 {
			rec = recs[0]
			if rec["state"] == "registered" {
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if rec["state"] != "registered" || rec["flags"] != 20.0 || rec["granted_expires"] != 60.0 || rec["auth_password"] != "***" {
		t.Fatalf("record: %v\nkamd log:\n%s", rec, k.Log())
	}
	reg.mu.Lock()
	first := reg.got[0]
	reg.mu.Unlock()
	if c := core.FirstHeader(first, "Contact").Value(); c != "<sip:trunk1@127.0.0.1:"+strconv.Itoa(k.Port)+">" {
		t.Errorf("Contact %q", c)
	}
	// State changes are events on the topic "uac".
	_, evs := subscribe(t, k, "uac")
	for _, cmd := range []string{"uac.reg_disable", "uac.reg_enable"} {
		if res := runKamctl(t, nil, "-s", k.WS(), cmd, "l_uuid", "trunk1"); res.Code != 0 {
			t.Fatalf("%s", res)
		}
	}
	var states []string
	for len(states) < 5 {
		select {
		case ev := <-evs:
			var d struct{ Event, L_uuid, State string }
			json.Unmarshal(ev.Data, &d)
			if ev.Topic != "uac" || d.Event != "reg_state" || d.L_uuid != "trunk1" {
				t.Fatalf("event %s %s", ev.Topic, ev.Data)
			}
			states = append(states, d.State)
		case <-time.After(10 * time.Second):
			t.Fatalf("events so far %v", states)
		}
	}
	if strings.Join(states, " ") != "unregistering disabled idle registering registered" {
		t.Errorf("events %v", states)
	}
	// kamcmd-style output.
	res := runKamctl(t, nil, "-s", k.WS(), "uac.reg_dump")
	if !strings.Contains(res.Stdout, "\tl_uuid: trunk1\n") || !strings.Contains(res.Stdout, "\tsocket: <null string>\n") {
		t.Errorf("kamctl readable:\n%s", res.Stdout)
	}
}

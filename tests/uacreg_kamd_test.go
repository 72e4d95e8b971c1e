package tests

// kamd with the uac module for the uac e2e tests: its uacreg table lives in
// its own SQLite file created here with Kamailio 5.6's DDL (table version
// 5), reached through reg_db_url in Kamailio's four-slash form, so the
// tests edit rows exactly as a user with the sqlite3 shell would. kamd can
// be stopped, killed with SIGKILL and started again on the same files.

import (
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// uacregDDL is utils/kamctl/db_sqlite/{standard,uac}-create.sql of 5.6.
const uacregDDL = `
CREATE TABLE version (id INTEGER PRIMARY KEY NOT NULL, table_name VARCHAR(32) NOT NULL,
  table_version INTEGER DEFAULT 0 NOT NULL, CONSTRAINT version_table_name_idx UNIQUE (table_name));
INSERT INTO version (table_name, table_version) values ('version','1');
CREATE TABLE uacreg (
    id INTEGER PRIMARY KEY NOT NULL,
    l_uuid VARCHAR(64) DEFAULT '' NOT NULL,
    l_username VARCHAR(64) DEFAULT '' NOT NULL,
    l_domain VARCHAR(64) DEFAULT '' NOT NULL,
    r_username VARCHAR(64) DEFAULT '' NOT NULL,
    r_domain VARCHAR(64) DEFAULT '' NOT NULL,
    realm VARCHAR(64) DEFAULT '' NOT NULL,
    auth_username VARCHAR(64) DEFAULT '' NOT NULL,
    auth_password VARCHAR(64) DEFAULT '' NOT NULL,
    auth_ha1 VARCHAR(128) DEFAULT '' NOT NULL,
    auth_proxy VARCHAR(255) DEFAULT '' NOT NULL,
    expires INTEGER DEFAULT 0 NOT NULL,
    flags INTEGER DEFAULT 0 NOT NULL,
    reg_delay INTEGER DEFAULT 0 NOT NULL,
    contact_addr VARCHAR(255) DEFAULT '' NOT NULL,
    socket VARCHAR(128) DEFAULT '' NOT NULL,
    CONSTRAINT uacreg_l_uuid_idx UNIQUE (l_uuid)
);
INSERT INTO version (table_name, table_version) values ('uacreg','5');
`

// uacRow is one uacreg row. Zero fields take the defaults in insert.
type uacRow struct {
	UUID, LUser, LDomain, RUser, RDomain, Realm, AuthUser, Password, HA1, Proxy string
	Expires, Flags, Delay                                                       int
	ContactAddr, Socket                                                         string
}

// uacKamd is a kamd (RPC on) running the uac module on Dir's files.
type uacKamd struct {
	*rpcKamd
	t       testing.TB
	Dir     string
	RegDB   string // the uacreg SQLite file
	db      *sql.DB
	params  string // extra script lines (modparams)
	port    int    // kept across restarts: it is in the Contact
	running bool
}

// newUACKamd creates the uacreg file with rows and starts kamd with the
// extra modparam lines params.
func newUACKamd(t testing.TB, params string, rows ...uacRow) *uacKamd {
	t.Helper()
	u := newUACKamdNoStart(t, params)
	u.insert(t, rows...)
	u.start(t)
	t.Cleanup(func() { u.stop(t) })
	return u
}

// newUACKamdNoStart creates the directory and the uacreg file.
func newUACKamdNoStart(t testing.TB, params string) *uacKamd {
	t.Helper()
	if kamctlBin == "" {
		t.Fatal("kamctl was not built")
	}
	u := &uacKamd{t: t, Dir: t.TempDir(), params: params}
	u.RegDB = filepath.Join(u.Dir, "uacreg.db")
	db, err := sql.Open("sqlite3", "file:"+u.RegDB+"?_busy_timeout=5000&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	u.db = db
	if _, err := db.Exec(uacregDDL); err != nil {
		t.Fatal(err)
	}
	return u
}

// newUACKamdRows is newUACKamd with n rows made by row, inserted in one
// transaction (for the benchmark's thousands).
func newUACKamdRows(t testing.TB, params string, n int, row func(i int) uacRow) *uacKamd {
	t.Helper()
	u := newUACKamdNoStart(t, params)
	tx, err := u.db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		r := row(i)
		if _, err := tx.Exec(`INSERT INTO uacreg (l_uuid, l_username, l_domain, r_username, r_domain, auth_username, auth_password, auth_proxy, expires)
			VALUES (?, ?, 'local.test', ?, ?, ?, 'pw', ?, ?)`, r.UUID, "l_"+r.UUID, r.UUID, r.RDomain, r.UUID, r.Proxy, r.Expires); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	u.start(t)
	t.Cleanup(func() { u.stop(t) })
	return u
}

// script is kamd's script: uac on the test file, short timers.
func (u *uacKamd) script(port int) string {
	return fmt.Sprintf(`
modparam("uac", "reg_db_url", "sqlite:///%s")
modparam("uac", "reg_contact_addr", "127.0.0.1:%d")
modparam("uac", "reg_retry_interval", 1)
modparam("uac", "reg_timer_interval", 1)
modparam("tm", "fr_timer", 2000)
%s
def ksr_request_route():
    KSR.sl.send_reply(404, "Not Here")
`, u.RegDB, port, u.params)
}

// start starts kamd (again) on the same files and SIP port.
func (u *uacKamd) start(t testing.TB) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		if u.port == 0 || attempt > 0 && u.rpcKamd == nil {
			u.port = freePort(t)
		}
		rport := freePort(t)
		kd := &Kamd{t: t, Port: u.port, Dir: u.Dir, log: &logBuffer{}, done: make(chan struct{}), Script: filepath.Join(u.Dir, "route.star")}
		if err := os.WriteFile(kd.Script, []byte(u.script(u.port)), 0o644); err != nil {
			t.Fatal(err)
		}
		p, rp := strconv.Itoa(u.port), strconv.Itoa(rport)
		kd.cmd = exec.Command(kamdBin, "-f", kd.Script, "--rpc", "127.0.0.1:"+rp, "--db", filepath.Join(u.Dir, "kamgo.db"),
			"-l", "udp:127.0.0.1:"+p, "-l", "tcp:127.0.0.1:"+p)
		kd.cmd.Dir = u.Dir
		kd.cmd.Env = cleanEnv()
		kd.cmd.Stdout, kd.cmd.Stderr = kd.log, kd.log
		if err := kd.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { kd.err = kd.cmd.Wait(); close(kd.done) }()
		want := []string{"rpc listening on 127.0.0.1:" + rp, "listening on udp:127.0.0.1:" + p}
		deadline := time.Now().Add(20 * time.Second)
		up, exited := false, false
		for !up && !exited && time.Now().Before(deadline) {
			up = strings.Contains(kd.Log(), want[0]) && strings.Contains(kd.Log(), want[1])
			select {
			case <-kd.done:
				exited = !up
			case <-time.After(20 * time.Millisecond):
			}
		}
		if up {
			u.rpcKamd = &rpcKamd{Kamd: kd, RPCPort: rport}
			u.running = true
			return
		}
		if !exited {
			_ = kd.cmd.Process.Kill()
			<-kd.done
		}
		if attempt < 2 && strings.Contains(kd.Log(), "address already in use") {
			continue
		}
		t.Fatalf("kamd did not start (%v):\n%s", kd.err, kd.Log())
	}
}

// stop ends kamd with SIGTERM and requires a clean exit.
func (u *uacKamd) stop(t testing.TB) {
	if !u.running {
		return
	}
	u.running = false
	kd := u.Kamd
	_ = kd.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-kd.done:
		if kd.err != nil {
			t.Errorf("kamd did not exit cleanly: %v", kd.err)
		}
	case <-time.After(15 * time.Second):
		_ = kd.cmd.Process.Kill()
		<-kd.done
		t.Errorf("kamd did not exit within 15s of SIGTERM")
	}
	if t.Failed() {
		t.Logf("kamd log:\n%s", kd.Log())
	}
}

// kill9 ends kamd with SIGKILL (no shutdown work at all).
func (u *uacKamd) kill9(t testing.TB) {
	t.Helper()
	if !u.running {
		t.Fatal("kamd is not running")
	}
	u.running = false
	_ = u.Kamd.cmd.Process.Signal(syscall.SIGKILL)
	<-u.Kamd.done
}

// insert adds rows to the uacreg table (the defaults make a row that
// registers without credentials problems: auth_proxy is required).
func (u *uacKamd) insert(t testing.TB, rows ...uacRow) {
	t.Helper()
	for _, r := range rows {
		def := func(s *string, v string) {
			if *s == "" {
				*s = v
			}
		}
		def(&r.LUser, "l_"+r.UUID)
		def(&r.LDomain, "local.test")
		def(&r.RUser, r.UUID)
		def(&r.AuthUser, r.RUser)
		if r.Password == "" && r.HA1 == "" {
			r.Password = "pw"
		}
		if r.Expires == 0 {
			r.Expires = 60
		}
		if _, err := u.db.Exec(`INSERT INTO uacreg (l_uuid, l_username, l_domain, r_username, r_domain, realm,
			auth_username, auth_password, auth_ha1, auth_proxy, expires, flags, reg_delay, contact_addr, socket)
			VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			r.UUID, r.LUser, r.LDomain, r.RUser, r.RDomain, r.Realm, r.AuthUser, r.Password, r.HA1, r.Proxy,
			r.Expires, r.Flags, r.Delay, r.ContactAddr, r.Socket); err != nil {
			t.Fatalf("insert %s: %v", r.UUID, err)
		}
	}
}

// exec runs SQL on the uacreg file.
func (u *uacKamd) exec(t testing.TB, q string, args ...any) {
	t.Helper()
	if _, err := u.db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// toRow is a row for user registering with reg (r_domain and auth_proxy
// are the registrar's address).
func toRow(uuid, addr string) uacRow {
	return uacRow{UUID: uuid, RDomain: addr, Proxy: "sip:" + addr}
}

// dump is kamctl --json uac.reg_dump, by l_uuid.
func (u *uacKamd) dump(t testing.TB) map[string]map[string]any {
	t.Helper()
	arr, ok := u.ctlJSON(t, "uac.reg_dump").([]any)
	if !ok {
		t.Fatalf("uac.reg_dump: want an array")
	}
	out := map[string]map[string]any{}
	for i, v := range arr {
		m := asObject(t, v, fmt.Sprintf("uac.reg_dump[%d]", i))
		id, _ := m["l_uuid"].(string)
		out[id] = m
	}
	return out
}

// waitRec polls reg_dump until the record uuid satisfies ok (what says
// what is awaited) and returns it.
func (u *uacKamd) waitRec(t testing.TB, uuid string, d time.Duration, what string, ok func(r map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(d)
	var last map[string]any
	for {
		last = u.dump(t)[uuid]
		if last != nil && ok(last) {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not %s after %v; record: %v", uuid, what, d, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitGone waits until reg_dump has no record uuid.
func (u *uacKamd) waitGone(t testing.TB, uuid string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		r, ok := u.dump(t)[uuid]
		if !ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still in reg_dump after %v: %v", uuid, d, r)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitState waits for the record's state.
func (u *uacKamd) waitState(t testing.TB, uuid, state string, d time.Duration) map[string]any {
	t.Helper()
	return u.waitRec(t, uuid, d, "in state "+state, func(r map[string]any) bool { return r["state"] == state })
}

// recInt is an integer field of a record (0 for null).
func recInt(t testing.TB, r map[string]any, k string) int64 {
	t.Helper()
	if r[k] == nil {
		return 0
	}
	return asInt(t, r[k], k)
}

// recStr is a string field of a record ("" for null).
func recStr(r map[string]any, k string) string {
	s, _ := r[k].(string)
	return s
}

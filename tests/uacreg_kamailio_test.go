package tests

// The shared Kamailio registrar for the uac interop tests: one Kamailio
// (Debian's kamailio + kamailio-sqlite-modules, which .ci/run installs)
// per test binary, started on first use on a free loopback port, with
// registrar/usrloc writing through to a SQLite location table and auth_db
// reading a subscriber table, both created here from Kamailio's own SQLite
// schema files. Tests add their own subscribers (auth_db reads the table
// on every request) and read the location table to see what Kamailio
// stored. runMain stops it after the last test.

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3" // to create and read Kamailio's SQLite file
)

// kamRealm is the realm the shared Kamailio challenges with.
const kamRealm = "kam.test"

// kamRefUUID is the uacreg row Kamailio's own uac module registers (with
// Kamailio itself).
const kamRefUUID = "kamref"

// kamailioRegistrar is the running shared Kamailio.
type kamailioRegistrar struct {
	Port    int
	RPCPort int // jsonrpcs over UDP datagrams
	Realm   string
	Dir     string
	DBPath  string
	db      *sql.DB
	cmd     *exec.Cmd
	log     *logBuffer
	done    chan struct{}
	err     error // Wait's result, valid after done is closed
}

var sharedKam struct {
	once    sync.Once
	k       *kamailioRegistrar
	missing string // why Kamailio cannot run here (tool not installed)
	err     error  // why it failed to start
}

// sharedKamailio returns the shared Kamailio, starting it on first use. A
// missing kamailio or db_sqlite module fails the test in CI and skips it
// elsewhere; a Kamailio that does not start fails it everywhere.
func sharedKamailio(t testing.TB) *kamailioRegistrar {
	t.Helper()
	sharedKam.once.Do(func() {
		bin, modDir, schemaDir, missing := findKamailio()
		if missing != "" {
			sharedKam.missing = missing
			return
		}
		sharedKam.k, sharedKam.err = startKamailio(bin, modDir, schemaDir)
	})
	if sharedKam.missing != "" {
		msg := sharedKam.missing + " (apt-get install -y kamailio kamailio-sqlite-modules)"
		if inCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if sharedKam.err != nil {
		t.Fatalf("shared Kamailio: %v", sharedKam.err)
	}
	k := sharedKam.k
	select {
	case <-k.done:
		t.Fatalf("shared Kamailio exited (%v); log:\n%s", k.err, k.log.String())
	default:
	}
	return k
}

// stopSharedKamailio stops the shared Kamailio if it was started.
func stopSharedKamailio() {
	if k := sharedKam.k; k != nil {
		k.stop()
		os.RemoveAll(k.Dir)
	}
}

// findKamailio locates the binary, the module directory and the SQLite
// schema files; missing says what is not installed.
func findKamailio() (bin, modDir, schemaDir, missing string) {
	bin, err := exec.LookPath("kamailio")
	if err != nil {
		if _, err := os.Stat("/usr/sbin/kamailio"); err != nil {
			return "", "", "", "kamailio not found in PATH or /usr/sbin"
		}
		bin = "/usr/sbin/kamailio"
	}
	mods, _ := filepath.Glob("/usr/lib/*/kamailio/modules/db_sqlite.so")
	more, _ := filepath.Glob("/usr/lib/kamailio/modules/db_sqlite.so")
	mods = append(mods, more...)
	if len(mods) == 0 {
		return "", "", "", "Kamailio's db_sqlite module not found (package kamailio-sqlite-modules)"
	}
	modDir = filepath.Dir(mods[0])
	for _, d := range []string{"/usr/share/kamailio/db_sqlite", "/usr/share/kamailio/sqlite"} {
		if _, err := os.Stat(filepath.Join(d, "usrloc-create.sql")); err == nil {
			return bin, modDir, d, ""
		}
	}
	return "", "", "", "Kamailio's SQLite schema (usrloc-create.sql) not found under /usr/share/kamailio"
}

// kamailioCfg is the registrar script: REGISTER is authenticated against
// the subscriber table and saved to the location table; anything else gets
// a 404 (the readiness probe uses OPTIONS). One UDP worker and a rare
// usrloc timer: Kamailio's db_sqlite sets no busy timeout, so two of its
// processes writing at once fail with "database is locked". Kamailio's own uac module
// registers the uacreg row kamRefUUID with itself, so that the tests can
// compare kamd's uac.reg_dump with Kamailio's (JSON-RPC over UDP, rpcPort).
func kamailioCfg(port, rpcPort int, modDir, dbURL string) string {
	p := strconv.Itoa(port)
	return `#!KAMAILIO
debug=2
log_stderror=yes
children=1
tcp_children=1
auto_aliases=no
listen=udp:127.0.0.1:` + p + `
listen=tcp:127.0.0.1:` + p + `
mpath="` + modDir + `/"
loadmodule "db_sqlite.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
loadmodule "uac.so"
loadmodule "jsonrpcs.so"
modparam("usrloc", "db_url", "` + dbURL + `")
modparam("uac", "reg_db_url", "` + dbURL + `")
modparam("uac", "reg_contact_addr", "127.0.0.1:` + p + `")
modparam("uac", "reg_timer_interval", 10)
modparam("uac", "restore_mode", "none")
modparam("jsonrpcs", "transport", 4)
modparam("jsonrpcs", "dgram_socket", "udp:127.0.0.1:` + strconv.Itoa(rpcPort) + `")
modparam("usrloc", "db_mode", 1)
modparam("usrloc", "timer_interval", 3600)
modparam("auth_db", "db_url", "` + dbURL + `")
modparam("auth_db", "calculate_ha1", 1)
modparam("auth_db", "password_column", "password")
request_route {
	if (method == "REGISTER") {
		if (!www_authorize("` + kamRealm + `", "subscriber")) {
			www_challenge("` + kamRealm + `", "1");
			exit;
		}
		if (!save("location")) {
			sl_reply_error();
		}
		exit;
	}
	if (method != "ACK") {
		sl_send_reply("404", "Not here");
	}
}
`
}

func startKamailio(bin, modDir, schemaDir string) (*kamailioRegistrar, error) {
	dir, err := os.MkdirTemp("", "kamgo-kamailio-")
	if err != nil {
		return nil, err
	}
	k := &kamailioRegistrar{Realm: kamRealm, Dir: dir, DBPath: filepath.Join(dir, "kamailio.db")}
	if err := k.createDB(schemaDir); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		if lastErr = k.launch(bin, modDir); lastErr == nil {
			return k, nil
		}
	}
	k.db.Close()
	os.RemoveAll(dir)
	return nil, lastErr
}

// createDB builds Kamailio's version, subscriber and location tables from
// its own schema files, in WAL mode so that the tests' reads never block
// Kamailio's writes.
func (k *kamailioRegistrar) createDB(schemaDir string) error {
	db, err := sql.Open("sqlite3", "file:"+k.DBPath+"?_busy_timeout=5000&_journal_mode=WAL")
	if err != nil {
		return err
	}
	k.db = db
	for _, f := range []string{"standard-create.sql", "auth_db-create.sql", "usrloc-create.sql", "uac-create.sql"} {
		b, err := os.ReadFile(filepath.Join(schemaDir, f))
		if err != nil {
			return err
		}
		if _, err := db.Exec(string(b)); err != nil {
			return fmt.Errorf("%s: %v", f, err)
		}
	}
	return nil
}

func (k *kamailioRegistrar) launch(bin, modDir string) error {
	k.Port, k.RPCPort = freePortNoT(), freePortNoT()
	if k.Port == 0 || k.RPCPort == 0 || k.Port == k.RPCPort {
		return errors.New("no free port")
	}
	// The reference row: Kamailio registers with itself as kamRefUUID.
	if _, err := k.db.Exec(`DELETE FROM uacreg; DELETE FROM subscriber WHERE username = ?`, kamRefUUID); err != nil {
		return err
	}
	if _, err := k.db.Exec(`INSERT INTO subscriber (username, domain, password) VALUES (?, ?, 'refpw')`, kamRefUUID, kamRealm); err != nil {
		return err
	}
	if _, err := k.db.Exec(`INSERT INTO uacreg (l_uuid, l_username, l_domain, r_username, r_domain, auth_username, auth_password, auth_proxy, expires)
		VALUES (?, 'ref', 'local.test', ?, ?, ?, 'refpw', ?, 3600)`, kamRefUUID, kamRefUUID, k.Addr(), kamRefUUID, "sip:"+k.Addr()); err != nil {
		return err
	}
	cfg := filepath.Join(k.Dir, "kamailio.cfg")
	// Kamailio's db_sqlite drops the URL's leading slash: four for an absolute path.
	if err := os.WriteFile(cfg, []byte(kamailioCfg(k.Port, k.RPCPort, modDir, "sqlite:///"+k.DBPath)), 0o644); err != nil {
		return err
	}
	k.log = &logBuffer{}
	k.done = make(chan struct{})
	k.cmd = exec.Command(bin, "-DD", "-E", "-f", cfg, "-Y", k.Dir, "-m", "32", "-M", "8")
	k.cmd.Dir = k.Dir
	k.cmd.Stdout, k.cmd.Stderr = k.log, k.log
	// Its own process group, so that stop reaches the children too.
	k.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := k.cmd.Start(); err != nil {
		return err
	}
	go func() {
		k.err = k.cmd.Wait()
		close(k.done)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-k.done:
			return fmt.Errorf("kamailio exited at start (%v); log:\n%s", k.err, k.log.String())
		default:
		}
		if k.probe() {
			return nil
		}
	}
	k.stop()
	return fmt.Errorf("kamailio did not answer OPTIONS within 20s; log:\n%s", k.log.String())
}

// probe sends an OPTIONS and reports whether Kamailio answered.
func (k *kamailioRegistrar) probe() bool {
	c, err := net.Dial("udp", k.Addr())
	if err != nil {
		return false
	}
	defer c.Close()
	lp := c.LocalAddr().(*net.UDPAddr).Port
	msg := fmt.Sprintf("OPTIONS sip:probe@%s SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-probe%d\r\n"+
		"From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:probe@%s>\r\nCall-ID: probe-%d@127.0.0.1\r\nCSeq: 1 OPTIONS\r\n"+
		"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n", k.Addr(), lp, time.Now().UnixNano(), k.Addr(), time.Now().UnixNano())
	if _, err := c.Write([]byte(msg)); err != nil {
		return false
	}
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	return err == nil && strings.HasPrefix(string(buf[:n]), "SIP/2.0 404")
}

func (k *kamailioRegistrar) stop() {
	select {
	case <-k.done:
		return
	default:
	}
	_ = syscall.Kill(-k.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-k.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-k.cmd.Process.Pid, syscall.SIGKILL)
		<-k.done
	}
}

// freePortNoT is freePort without a testing.TB (the shared Kamailio
// outlives any one test).
func freePortNoT() int {
	for i := 0; i < 200; i++ {
		p := 20000 + rand.IntN(12768)
		if !avoidPorts[p] && portFree(p) {
			return p
		}
	}
	return 0
}

// RPC calls a method over jsonrpcs' UDP datagram transport and returns
// the raw response object.
func (k *kamailioRegistrar) RPC(t testing.TB, method string, params ...any) []byte {
	t.Helper()
	m := map[string]any{"jsonrpc": "2.0", "method": method, "id": 1}
	// Kamailio 5.6 answers an array method called with "params": [] with
	// an empty array: send no params member at all then.
	if len(params) > 0 {
		m["params"] = params
	}
	req, _ := json.Marshal(m)
	c, err := net.Dial("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(k.RPCPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("Kamailio RPC %s: %v", method, err)
	}
	return buf[:n]
}

// Addr is "127.0.0.1:port".
func (k *kamailioRegistrar) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(k.Port)) }

// Log is Kamailio's output so far.
func (k *kamailioRegistrar) Log() string { return k.log.String() }

// AddUser adds a subscriber (in Kamailio's realm) with a clear-text
// password; auth_db computes the HA1.
func (k *kamailioRegistrar) AddUser(t testing.TB, user, password string) {
	t.Helper()
	if _, err := k.db.Exec(`INSERT OR REPLACE INTO subscriber (username, domain, password) VALUES (?, ?, ?)`, user, k.Realm, password); err != nil {
		t.Fatal(err)
	}
}

// kamLocation is one row of Kamailio's location table.
type kamLocation struct {
	Contact string
	Expires string // UTC "2006-01-02 15:04:05" (Kamailio stores a julian day)
	CallID  string
	CSeq    int
	Agent   string
}

// Locations reads the location rows of user.
func (k *kamailioRegistrar) Locations(t testing.TB, user string) []kamLocation {
	t.Helper()
	rows, err := k.db.Query(`SELECT contact, datetime(expires), callid, cseq, user_agent FROM location WHERE username = ? ORDER BY id`, user)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []kamLocation
	for rows.Next() {
		var l kamLocation
		if err := rows.Scan(&l.Contact, &l.Expires, &l.CallID, &l.CSeq, &l.Agent); err != nil {
			t.Fatal(err)
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// WaitLocation waits until user has a location row whose contact contains
// contact, and returns it.
func (k *kamailioRegistrar) WaitLocation(t testing.TB, user, contact string, d time.Duration) kamLocation {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		for _, l := range k.Locations(t, user) {
			if strings.Contains(l.Contact, contact) {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Kamailio's location table has no contact %q for %q after %v: %v\nKamailio log:\n%s", contact, user, d, k.Locations(t, user), k.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

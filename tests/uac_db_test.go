package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kamgo/kamgo/modules/core"
)

// uacDB writes a uacreg database with stmts (the version table exists).
func uacDB(t *testing.T, path string, stmts ...string) {
	t.Helper()
	db, err := core.OpenDB(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

const uacV5 = `CREATE TABLE uacreg (id INTEGER PRIMARY KEY NOT NULL, l_uuid VARCHAR(64) DEFAULT '' NOT NULL, l_username VARCHAR(64) DEFAULT '' NOT NULL, l_domain VARCHAR(64) DEFAULT '' NOT NULL, r_username VARCHAR(64) DEFAULT '' NOT NULL, r_domain VARCHAR(64) DEFAULT '' NOT NULL, realm VARCHAR(64) DEFAULT '' NOT NULL, auth_username VARCHAR(64) DEFAULT '' NOT NULL, auth_password VARCHAR(64) DEFAULT '' NOT NULL, auth_ha1 VARCHAR(128) DEFAULT '' NOT NULL, auth_proxy VARCHAR(255) DEFAULT '' NOT NULL, expires INTEGER DEFAULT 0 NOT NULL, flags INTEGER DEFAULT 0 NOT NULL, reg_delay INTEGER DEFAULT 0 NOT NULL, contact_addr VARCHAR(255) DEFAULT '' NOT NULL, socket VARCHAR(128) DEFAULT '' NOT NULL, CONSTRAINT uacreg_l_uuid_idx UNIQUE (l_uuid))`

// A uacreg table of a version kamd does not know stops kamd with a clear
// error (Kamailio silently loads nothing).
func TestUACRegUnknownVersionStopsKamd(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "uac.db")
	uacDB(t, path, uacV5, `INSERT INTO version (table_name, table_version) values ('uacreg','9')`)
	script := filepath.Join(dir, "route.star")
	os.WriteFile(script, []byte(`modparam("uac", "reg_db_url", "sqlite:///`+path+`")

def ksr_request_route():
    pass
`), 0o644)
	port := strconv.Itoa(freePort(t))
	out, errOut, code := runKamd(t, "-f", script, "-l", "udp:127.0.0.1:"+port, "--rpc", "off", "--db", filepath.Join(dir, "kamgo.db"))
	if code == 0 {
		t.Fatalf("kamd exited 0 with uacreg version 9\n%s%s", out, errOut)
	}
	if msg := out + errOut; !strings.Contains(msg, "table uacreg has version 9 in the version table, newer than the 5 this kamd knows") {
		t.Errorf("kamd's error does not say why:\n%s", msg)
	}
}

// A Kamailio 5.3/5.4 table (version 4, no contact_addr) in a file named by
// Kamailio's four-slash URL is migrated with a log line; bad rows show in
// reg_dump as state invalid with their reason while the good row goes on;
// a three-slash URL to a missing directory gets its file and tables.
func TestUACRegMigrationAndBadRows(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "old.db")
	v4 := strings.Replace(uacV5, "contact_addr VARCHAR(255) DEFAULT '' NOT NULL, ", "", 1)
	ins := func(uuid, user, ha1, proxy string) string {
		return `INSERT INTO uacreg (l_uuid, l_username, l_domain, r_username, r_domain, auth_username, auth_password, auth_ha1, auth_proxy, expires) VALUES ('` +
			uuid + `','` + user + `','local.test','r_` + uuid + `','127.0.0.1:9','a_` + uuid + `','pw','` + ha1 + `','` + proxy + `',120)`
	}
	uacDB(t, path, v4, `INSERT INTO version (table_name, table_version) values ('uacreg','4')`,
		ins("good", "alice", "", "sip:127.0.0.1:9"),
		ins("nouser", "", "", "sip:127.0.0.1:9"),
		ins("shortha1", "bob", "abcd", "sip:127.0.0.1:9"),
		ins("badproxy", "carol", "", "sip:127.0.0.1:9;transport=carrier-pigeon"))
	fresh := filepath.Join(dir, "new", "sub", "fresh.db")
	k := startRPCKamd(t, rpcKamdOpts{script: func(int) string {
		return `modparam("uac", "reg_db_url", "sqlite:////` + strings.TrimPrefix(path, "/") + `")

def ksr_request_route():
    pass
`
	}})
	if !strings.Contains(k.Log(), "uac: migrated the registrations table") || !strings.Contains(k.Log(), "from=4") {
		t.Errorf("no migration log line:\n%s", k.Log())
	}
	var recs []map[string]any
	if err := json.Unmarshal([]byte(k.ctlOK(t, "--json", "uac.reg_dump")), &recs); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"nouser":   "empty value not allowed for column 'l_username'",
		"shortha1": "auth_ha1 must be 32 hex characters",
		"badproxy": "unknown transport",
	}
	if len(recs) != 4 {
		t.Fatalf("%d records: %v", len(recs), recs)
	}
	for _, r := range recs {
		id := r["l_uuid"].(string)
		if w, bad := want[id]; bad {
			if r["state"] != "invalid" || !strings.Contains(r["last_reason"].(string), w) {
				t.Errorf("%s: state %v reason %q, want invalid with %q", id, r["state"], r["last_reason"], w)
			}
		} else if r["state"] == "invalid" || r["contact_addr"] != "127.0.0.1:"+strconv.Itoa(k.Port) {
			t.Errorf("good row: %v", r)
		}
	}
	if !strings.Contains(k.Log(), "invalid uacreg row") {
		t.Errorf("no log line for the bad rows:\n%s", k.Log())
	}

	// Wrong RPC params get Kamailio's codes and messages; kamd goes on.
	add := []string{"uac.reg_add", "good", "x", "local.test", "x_r", "127.0.0.1:9", ".", "x_a", "pw", ".", "sip:127.0.0.1:9", "60", "0", "0", ".", "."}
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"uac.reg_info", "l_uuid"}, 400, "Invalid Parameters"},
		{[]string{"uac.reg_info", "bogus", "x"}, 400, "Unsupported filter attribute"},
		{[]string{"uac.reg_info", "l_uuid", "123"}, 404, "Record not found"},
		{[]string{"uac.reg_enable", "r_username", "nobody"}, 404, "Record not found"},
		{[]string{"uac.reg_refresh"}, 400, "Invalid Parameters"},
		{[]string{"uac.reg_remove", "nope"}, 404, "Record not found"},
		{[]string{"uac.reg_active", "s:on"}, 500, "Missing parameter"},
		{[]string{"uac.reg_active"}, 500, "Missing parameter"},
		{add[:10], 400, "Invalid Parameters"},
		{add, 409, "uuid already exists"},
		{append(append([]string{}, add[:11]...), "s:sixty", "0", "0", ".", "."), 400, "Invalid Parameters"},
		{[]string{"uac.reg_dump", "5"}, 400, "secrets"},
	} {
		r := k.ctl(t, tc.args...)
		wantRPCError(t, r, tc.code)
		if !strings.Contains(r.Stdout+r.Stderr, tc.msg) {
			t.Errorf("%v: want %q: %s", tc.args, tc.msg, r)
		}
	}
	if out := k.ctlOK(t, "--json", "uac.reg_info", "l_uuid", "shortha1"); !strings.Contains(out, `"state": "invalid"`) && !strings.Contains(out, `"state":"invalid"`) {
		t.Errorf("reg_info of an invalid row: %s", out)
	}

	// kamd creates the file and its tables wherever the URL points.
	k2 := startRPCKamd(t, rpcKamdOpts{script: func(int) string {
		return `modparam("uac", "reg_db_url", "sqlite://` + fresh + `")

def ksr_request_route():
    pass
`
	}})
	if out := k2.ctlOK(t, "--json", "uac.reg_dump"); strings.TrimSpace(out) != "[]" {
		t.Errorf("fresh reg_dump: %s", out)
	}
	db, err := core.OpenDB(fresh)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v int
	if err := db.QueryRow(`SELECT table_version FROM version WHERE table_name='uacreg'`).Scan(&v); err != nil || v != 5 {
		t.Errorf("fresh db: version %d %v", v, err)
	}
}

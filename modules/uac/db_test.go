package uac

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

func TestSqlitePath(t *testing.T) {
	for _, tc := range []struct{ url, want, err string }{
		{"sqlite:////var/lib/kamailio/uac.db", "/var/lib/kamailio/uac.db", ""}, // Kamailio's form
		{"sqlite:///var/lib/kamailio/uac.db", "/var/lib/kamailio/uac.db", ""},  // the form
		{"sqlite://rel/uac.db", "rel/uac.db", ""},
		{"sqlite:///tmp/x.db?mode=rw", "/tmp/x.db", ""},
		{"mysql://kamailio:pw@localhost/kamailio", "", "only sqlite://"},
		{"sqlite://", "", "no file path"},
		{"sqlite://host:1/x.db", "", "host part"},
	} {
		got, err := sqlitePath(tc.url)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.url, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %q %v, want %q", tc.url, got, err, tc.want)
		}
	}
}

// With reg_db_url pointing at a file that does not exist, kamd creates it
// with Kamailio's version row and uacreg table (schema 5, exact DDL), for
// both the 4-slash and the 3-slash spelling.
func TestRegDBURLCreatesTheFile(t *testing.T) {
	for _, slashes := range []string{"sqlite:///", "sqlite:////"} {
		dir := t.TempDir()
		path := filepath.Join(dir, "new", "dir", "uac.db") // created too
		env := core.NewEnv(nil)
		mod := New(env)
		u := Of(env)
		u.send = nil
		for _, p := range mod.Params {
			if p.Name == "reg_db_url" {
				if err := p.Set(core.Str(slashes + strings.TrimPrefix(path, "/"))); err != nil {
					t.Fatal(err)
				}
			}
		}
		u.regContactAddr.Store("127.0.0.1:5060")
		u.send = fakeSend
		if err := mod.Init(); err != nil {
			t.Fatalf("%s: %v", slashes, err)
		}
		mod.Stop()
		db, err := sql.Open("sqlite3", path)
		if err != nil {
			t.Fatal(err)
		}
		var v int
		if err := db.QueryRow(`SELECT table_version FROM version WHERE table_name='uacreg'`).Scan(&v); err != nil || v != 5 {
			t.Errorf("%s: version %d %v", slashes, v, err)
		}
		var ddl string
		db.QueryRow(`SELECT sql FROM sqlite_master WHERE name='uacreg'`).Scan(&ddl)
		for _, col := range []string{"l_uuid VARCHAR(64) DEFAULT '' NOT NULL", "auth_ha1 VARCHAR(128) DEFAULT '' NOT NULL", "contact_addr VARCHAR(255)", "socket VARCHAR(128)", "UNIQUE (l_uuid)"} {
			if !strings.Contains(ddl, col) {
				t.Errorf("%s: DDL lacks %q:\n%s", slashes, col, ddl)
			}
		}
		// Kamailio's kamctl INSERT works unchanged.
		if _, err := db.Exec(`INSERT INTO uacreg (l_uuid, l_username, l_domain, r_username, r_domain, realm, auth_username, auth_password, auth_proxy, expires) VALUES ('a','b','c','d','e','','f','g','sip:h',60)`); err != nil {
			t.Error(err)
		}
		db.Close()
	}
}

// v3 and v4 tables are migrated to v5 on start (rows kept); a newer or
// unknown version stops kamd with a clear error.
func TestMigrations(t *testing.T) {
	v4 := `CREATE TABLE uacreg (id INTEGER PRIMARY KEY NOT NULL, l_uuid VARCHAR(64) DEFAULT '' NOT NULL, l_username VARCHAR(64) DEFAULT '' NOT NULL,
		l_domain VARCHAR(64) DEFAULT '' NOT NULL, r_username VARCHAR(64) DEFAULT '' NOT NULL, r_domain VARCHAR(64) DEFAULT '' NOT NULL,
		realm VARCHAR(64) DEFAULT '' NOT NULL, auth_username VARCHAR(64) DEFAULT '' NOT NULL, auth_password VARCHAR(64) DEFAULT '' NOT NULL,
		auth_ha1 VARCHAR(128) DEFAULT '' NOT NULL, auth_proxy VARCHAR(255) DEFAULT '' NOT NULL, expires INTEGER DEFAULT 0 NOT NULL,
		flags INTEGER DEFAULT 0 NOT NULL, reg_delay INTEGER DEFAULT 0 NOT NULL, socket VARCHAR(128) DEFAULT '' NOT NULL,
		CONSTRAINT l_uuid_idx UNIQUE (l_uuid))`
	v3 := strings.Replace(v4, ", socket VARCHAR(128) DEFAULT '' NOT NULL", "", 1)
	for _, tc := range []struct {
		version int
		ddl     string
		err     string
	}{
		{4, v4, ""}, {3, v3, ""}, {6, v4, "newer"}, {0, v4, "unknown version 0"},
	} {
		path := filepath.Join(t.TempDir(), "k.db")
		db, err := core.OpenDB(path)
		if err != nil {
			t.Fatal(err)
		}
		db.Exec(tc.ddl)
		db.Exec(`INSERT INTO version (table_name, table_version) VALUES ('uacreg', ?)`, tc.version)
		if _, err := db.Exec(`INSERT INTO uacreg (l_uuid, l_username, l_domain, r_username, r_domain, auth_username, auth_password, auth_proxy, expires) VALUES ('old','u','d','r','127.0.0.1','a','p','sip:127.0.0.1',60)`); err != nil {
			t.Fatal(err)
		}
		env := core.NewEnv(nil)
		env.DB = db
		mod := New(env)
		u := Of(env)
		u.send = fakeSend
		u.regContactAddr.Store("127.0.0.1:5060")
		err = mod.Init()
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("v%d: err %v, want %q", tc.version, err, tc.err)
			}
			db.Close()
			continue
		}
		if err != nil {
			t.Fatalf("v%d: %v", tc.version, err)
		}
		var v int
		db.QueryRow(`SELECT table_version FROM version WHERE table_name='uacreg'`).Scan(&v)
		recs := u.Dump(false)
		if v != 5 || len(recs) != 1 || recs[0].LUUID != "old" || recs[0].State != StateIdle {
			t.Errorf("v%d: version %d records %+v", tc.version, v, recs)
		}
		mod.Stop()
		db.Close()
	}
}

func TestBadRowsAreInvalidRecords(t *testing.T) {
	ok := row("ok")
	for _, tc := range []struct {
		edit   func(r *Row)
		reason string
	}{
		{func(r *Row) { r.LUsername = "" }, "empty value not allowed for column 'l_username'"},
		{func(r *Row) { r.AuthProxy = "" }, "empty value not allowed for column 'auth_proxy'"},
		{func(r *Row) { r.AuthPassword = "" }, "no password value provided"},
		{func(r *Row) { r.AuthPassword, r.AuthHA1 = "", "abcd" }, "auth_ha1 must be 32 hex characters"},
		{func(r *Row) { r.AuthHA1 = strings.Repeat("g", 32) }, "auth_ha1 must be 32 hex characters"},
		{func(r *Row) { r.AuthProxy = "sip:host;transport=carrier-pigeon" }, "unknown transport"},
		{func(r *Row) { r.AuthProxy = "sip:" }, "auth_proxy"},
		{func(r *Row) { r.Socket = "udp:nowhere" }, "socket"},
		{func(r *Row) { r.ContactAddr = "1.2.3.4\r\nX: y" }, "contact_addr"},
	} {
		bad := row("bad")
		tc.edit(&bad)
		h := newHarness(t, []Row{bad, ok})
		got := h.info("bad")
		if got.State != StateInvalid || !strings.Contains(got.LastReason, tc.reason) {
			t.Errorf("%q: state %s reason %q", tc.reason, got.State, got.LastReason)
		}
		h.clock.Advance(time.Second)
		if s := h.one(); !strings.Contains(hdr(s.req, "Contact"), "sip:ok@") {
			t.Errorf("the good row did not register")
		}
	}
}

func fakeSend(req *sip.Request, dst core.Target, sock string, onReply func(*sip.Response)) error {
	return nil
}

// Text in an INTEGER column (SQLite stores it as written) spoils only its
// row: it is invalid with the reason, the others load and register, and
// a reload does not fail.
func TestGarbledIntegerColumn(t *testing.T) {
	h := newHarness(t, []Row{row("ok")})
	h.registerAll()
	bad := row("bad")
	if err := insertRow(h.u.db, "uacreg", &bad); err != nil {
		t.Fatal(err)
	}
	for _, col := range []string{"expires", "flags", "reg_delay"} {
		if _, err := h.u.db.Exec(`UPDATE uacreg SET ` + col + `='12x' WHERE l_uuid='bad'`); err != nil {
			t.Fatal(err)
		}
		if _, err := h.rpc(true, "uac.reg_reload"); err != nil {
			t.Fatalf("%s: reload: %v", col, err)
		}
		got := h.info("bad")
		if got.State != StateInvalid || got.LastReason != "column '"+col+"' \"12x\" is not an integer" {
			t.Errorf("%s: %s %q", col, got.State, got.LastReason)
		}
		if h.info("ok").State != StateRegistered {
			t.Errorf("%s: the good row: %+v", col, h.info("ok"))
		}
		h.u.db.Exec(`UPDATE uacreg SET ` + col + `=0 WHERE l_uuid='bad'`)
	}
}

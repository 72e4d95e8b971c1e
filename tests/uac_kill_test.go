package tests

// kill -9 of kamd while registrations are in flight and while a reload
// is being applied: the next start has every row of the table.

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

func TestUACRegKill9(t *testing.T) {
	reg := newTestRegistrar(t, &regUser{NoAnswer: true}) // everything stays in flight
	var rows []uacRow
	for i := 0; i < 100; i++ {
		rows = append(rows, toRow(fmt.Sprintf("k%04d", i), reg.Addr()))
	}
	k := newUACKamd(t, "", rows...)
	reg.WaitRecords(t, "", 50, 10*time.Second)
	k.kill9(t)

	wantRows := func(n int) {
		t.Helper()
		d := k.dump(t)
		if len(d) != n {
			t.Fatalf("after restart reg_dump has %d records, the table %d rows", len(d), n)
		}
		for id, r := range d {
			if r["state"] == "invalid" {
				t.Errorf("%s: invalid after restart: %v", id, r)
			}
		}
		integrity(t, k.RegDB)
		integrity(t, filepath.Join(k.Dir, "kamgo.db"))
	}
	k.start(t)
	wantRows(100)

	// Kill during a reload that adds 2000 rows: once the reload is
	// applied and the new rows' REGISTERs are leaving (spread over seconds).
	k.exec(t, `INSERT INTO uacreg (l_uuid, l_username, l_domain, r_username, r_domain, auth_username, auth_password, auth_proxy, expires)
		WITH RECURSIVE c(i) AS (SELECT 100 UNION ALL SELECT i + 1 FROM c WHERE i < 2099)
		SELECT printf('k%04d', i), printf('l_k%04d', i), 'local.test', printf('k%04d', i), ?, printf('k%04d', i), 'pw', ?, 60 FROM c`,
		reg.Addr(), "sip:"+reg.Addr())
	done := make(chan ctlResult, 1)
	go func() { done <- runKamctl(t, nil, "-s", k.WS(), "uac.reg_reload") }()
	deadline := time.Now().Add(10 * time.Second)
	for !hasUser(reg, "k0100", "k0101", "k0102") {
		if time.Now().After(deadline) {
			t.Fatal("the reload's new rows sent nothing within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	k.kill9(t)
	<-done
	if n := reg.Count(""); n >= 2100 {
		t.Logf("every row had sent its REGISTER before the kill (%d)", n)
	}
	k.start(t)
	wantRows(2100)
}

// hasUser reports whether reg got a REGISTER from any of users.
func hasUser(reg *testRegistrar, users ...string) bool {
	for _, u := range users {
		if reg.Count(u) > 0 {
			return true
		}
	}
	return false
}

// integrity runs PRAGMA integrity_check on a SQLite file.
func integrity(t testing.TB, path string) {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var res string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&res); err != nil || res != "ok" {
		t.Errorf("%s: integrity_check %q %v", path, res, err)
	}
}

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
		rows = append(rows, toRow(fmt.Sprintf("k%03d", i), reg.Addr()))
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

	// Kill during a reload that adds 100 rows.
	for i := 100; i < 200; i++ {
		k.insert(t, toRow(fmt.Sprintf("k%03d", i), reg.Addr()))
	}
	done := make(chan ctlResult, 1)
	go func() { done <- runKamctl(t, nil, "-s", k.WS(), "uac.reg_reload") }()
	time.Sleep(30 * time.Millisecond)
	k.kill9(t)
	<-done
	k.start(t)
	wantRows(200)
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

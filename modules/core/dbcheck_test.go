package core

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckDB(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.db")
	db, err := OpenDB(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE filler (id INTEGER PRIMARY KEY, v TEXT); CREATE INDEX filler_v ON filler(v)`); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2000; i++ {
		if _, err := db.Exec(`INSERT INTO filler (v) VALUES (?)`, strings.Repeat("x", 60)+string(rune('a'+i%26))); err != nil {
			t.Fatal(err)
		}
	}
	if err := CheckDB(db, path); err != nil {
		t.Fatalf("a sound database: %v", err)
	}
	if _, err := db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mid := len(raw) / 2 / 4096 * 4096
	copy(raw[mid:], bytes.Repeat([]byte("garbage!"), 2048)) // 16 KB
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	db, err = OpenDB(path)
	if err != nil {
		if !strings.Contains(err.Error(), path) {
			t.Fatalf("open error does not name the file: %v", err)
		}
		t.Logf("refused at open: %v", err)
		return
	}
	defer db.Close()
	err = CheckDB(db, path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("CheckDB on 16 KB of garbage: %v", err)
	}
}

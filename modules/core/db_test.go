package core_test

import (
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kamgo/kamgo/modules/core"
)

func openTestDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := core.OpenDB(filepath.Join(t.TempDir(), "kamgo.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func tableVersion(t *testing.T, db *sql.DB, name string) int {
	t.Helper()
	var v int
	if err := db.QueryRow(`SELECT table_version FROM version WHERE table_name = ?`, name).Scan(&v); err != nil {
		t.Fatalf("version of %s: %v", name, err)
	}
	return v
}

func widgetSchema(version int, migrate func(tx *sql.Tx, from int) error) core.TableSchema {
	cols := "id INTEGER PRIMARY KEY NOT NULL, name VARCHAR(64) DEFAULT '' NOT NULL"
	if version >= 2 {
		cols += ", color VARCHAR(16) DEFAULT '' NOT NULL"
	}
	return core.TableSchema{Name: "widget", Version: version, Migrate: migrate,
		Create: []string{`CREATE TABLE IF NOT EXISTS widget (` + cols + `)`,
			`CREATE INDEX IF NOT EXISTS widget_name_idx ON widget (name)`}}
}

func TestEnsureTable(t *testing.T) {
	addColor := func(tx *sql.Tx, from int) error {
		if from != 1 {
			return errors.New("unexpected version")
		}
		_, err := tx.Exec(`ALTER TABLE widget ADD COLUMN color VARCHAR(16) DEFAULT '' NOT NULL`)
		return err
	}
	tests := []struct {
		name    string
		before  []core.TableSchema // applied first, must succeed
		setup   string             // SQL run after before
		schema  core.TableSchema
		wantErr string
		wantVer int
	}{
		{name: "fresh database creates table and row", schema: widgetSchema(1, nil), wantVer: 1},
		{name: "same version twice is a no-op", before: []core.TableSchema{widgetSchema(1, nil)}, schema: widgetSchema(1, nil), wantVer: 1},
		{name: "table without a version row gets one", setup: `CREATE TABLE widget (id INTEGER PRIMARY KEY NOT NULL, name VARCHAR(64))`, schema: widgetSchema(1, nil), wantVer: 1},
		{name: "older version migrates", before: []core.TableSchema{widgetSchema(1, nil)}, schema: widgetSchema(2, addColor), wantVer: 2},
		{name: "older version without migration is refused", before: []core.TableSchema{widgetSchema(1, nil)}, schema: widgetSchema(2, nil),
			wantErr: "table widget has version 1 in the version table, want 2", wantVer: 1},
		{name: "newer version is refused", before: []core.TableSchema{widgetSchema(2, nil)}, schema: widgetSchema(1, nil),
			wantErr: "newer than the 1 this kamd knows", wantVer: 2},
		{name: "failed migration changes nothing", before: []core.TableSchema{widgetSchema(1, nil)},
			schema: widgetSchema(2, func(*sql.Tx, int) error { return errors.New("boom") }), wantErr: "migrating from version 1 to 2: boom", wantVer: 1},
		{name: "bad table name", schema: core.TableSchema{Name: "w; DROP", Version: 1}, wantErr: "invalid table name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db := openTestDB(t)
			for _, s := range tc.before {
				if err := core.EnsureTable(db, s); err != nil {
					t.Fatalf("before: %v", err)
				}
			}
			if tc.setup != "" {
				if _, err := db.Exec(tc.setup); err != nil {
					t.Fatal(err)
				}
			}
			err := core.EnsureTable(db, tc.schema)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if tc.wantVer == 0 {
				return
			}
			if v := tableVersion(t, db, "widget"); v != tc.wantVer {
				t.Errorf("version row = %d, want %d", v, tc.wantVer)
			}
			// The table is usable at the version the row claims.
			q := `INSERT INTO widget (name) VALUES ('a')`
			if tc.wantVer >= 2 {
				q = `INSERT INTO widget (name, color) VALUES ('a', 'red')`
			}
			if _, err := db.Exec(q); err != nil {
				t.Errorf("table at version %d: %v", tc.wantVer, err)
			}
		})
	}
}

func TestValidSQLName(t *testing.T) {
	for s, want := range map[string]bool{"location": true, "_x1": true, "": false, "1a": false, "a-b": false, `a"`: false, strings.Repeat("a", 65): false} {
		if got := core.ValidSQLName(s); got != want {
			t.Errorf("ValidSQLName(%q) = %v, want %v", s, got, want)
		}
	}
}

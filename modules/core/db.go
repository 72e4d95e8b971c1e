package core

import (
	"database/sql"
	"fmt"
	"regexp"

	_ "github.com/mattn/go-sqlite3" // the SQLite driver
)

// OpenDB opens (creating if needed) kamd's SQLite file with the settings
// that avoid "database is locked": WAL, a busy timeout and BEGIN IMMEDIATE.
// It creates Kamailio's version table, where each module records its
// table versions.
func OpenDB(path string) (*sql.DB, error) {
	dsn := "file:" + path + "?_journal_mode=WAL&_synchronous=NORMAL&_busy_timeout=5000&_txlock=immediate&_foreign_keys=1"
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.SetMaxOpenConns(4)
	if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS version (
		id INTEGER PRIMARY KEY NOT NULL,
		table_name VARCHAR(32) NOT NULL,
		table_version INTEGER DEFAULT 0 NOT NULL,
		CONSTRAINT version_table_name_idx UNIQUE (table_name))`); err != nil {
		db.Close()
		return nil, fmt.Errorf("%s: create version table: %w", path, err)
	}
	return db, nil
}

// sqlNameRe is what a table or column name from a config may be: it is
// written into SQL unquoted, so nothing else is accepted.
var sqlNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// ValidSQLName reports whether s may be used as a table or column name.
func ValidSQLName(s string) bool { return sqlNameRe.MatchString(s) }

// TableSchema is one module table as Kamailio's version table knows it.
type TableSchema struct {
	Name    string // the table, and its table_name in the version table
	Version int    // the version this kamd reads and writes
	// Create holds CREATE TABLE/INDEX IF NOT EXISTS statements for the
	// current version; they run every time, so a dropped index comes back.
	Create []string
	// Migrate upgrades a table of an older version (from < Version) to the
	// current one inside the transaction; nil refuses older tables.
	Migrate func(tx *sql.Tx, from int) error
}

// EnsureTable brings s.Name to s.Version in one transaction: it reads the
// version row; if there is none it creates the table and inserts the row;
// if it is older it runs s.Migrate and updates the row; if it is newer it
// refuses, since this kamd cannot know that schema. The SQL is plain
// SELECT/INSERT/UPDATE (no INSERT OR IGNORE / ON CONFLICT) so it runs on
// PostgreSQL as on SQLite.
func EnsureTable(db *sql.DB, s TableSchema) error {
	if !ValidSQLName(s.Name) {
		return fmt.Errorf("invalid table name %q", s.Name)
	}
	tx, err := db.Begin()
	if err != nil {
		return fmt.Errorf("table %s: %w", s.Name, err)
	}
	defer tx.Rollback()
	var v int
	err = tx.QueryRow(`SELECT table_version FROM version WHERE table_name = ?`, s.Name).Scan(&v)
	found := err == nil
	switch {
	case err == sql.ErrNoRows:
	case err != nil:
		return fmt.Errorf("table %s: reading its version: %w", s.Name, err)
	case v > s.Version:
		return fmt.Errorf("table %s has version %d in the version table, newer than the %d this kamd knows", s.Name, v, s.Version)
	case v < s.Version && s.Migrate == nil:
		return fmt.Errorf("table %s has version %d in the version table, want %d (no migration from it)", s.Name, v, s.Version)
	case v < s.Version:
		if err := s.Migrate(tx, v); err != nil {
			return fmt.Errorf("table %s: migrating from version %d to %d: %w", s.Name, v, s.Version, err)
		}
	}
	for _, q := range s.Create {
		if _, err := tx.Exec(q); err != nil {
			return fmt.Errorf("table %s: create: %w", s.Name, err)
		}
	}
	switch {
	case !found:
		_, err = tx.Exec(`INSERT INTO version (table_name, table_version) VALUES (?, ?)`, s.Name, s.Version)
	case v != s.Version:
		_, err = tx.Exec(`UPDATE version SET table_version = ? WHERE table_name = ?`, s.Version, s.Name)
	}
	if err != nil {
		return fmt.Errorf("table %s: writing its version row: %w", s.Name, err)
	}
	return tx.Commit()
}

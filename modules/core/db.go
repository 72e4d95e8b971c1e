package core

import (
	"database/sql"
	"fmt"

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

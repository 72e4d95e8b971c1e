package core

import (
	"database/sql"
	"fmt"
	"strings"
)

// CheckDB runs SQLite's PRAGMA quick_check on an open database and returns
// an error naming the file when it finds corruption: kamd refuses to start
// on it rather than answer 200 to REGISTERs it cannot store. quick_check
// reads every page (O(N), seconds per GB); core_param("db_check", 0) or
// kamd --db-no-check skips it for huge files.
func CheckDB(db *sql.DB, path string) error {
	rows, err := db.Query(`PRAGMA quick_check`)
	if err != nil {
		return fmt.Errorf("database %s cannot be checked (PRAGMA quick_check: %v); it is damaged or not an SQLite file: restore it from a backup or move it away (kamd --db-no-check skips this check)", path, err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return fmt.Errorf("database %s: PRAGMA quick_check: %w", path, err)
		}
		if s != "ok" && len(problems) < 5 {
			problems = append(problems, s)
		}
	}
	if err := rows.Err(); err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return fmt.Errorf("database %s is corrupt (PRAGMA quick_check: %s); kamd will not start on it: restore it from a backup or move it away to start empty (kamd --db-no-check skips this check)", path, strings.Join(problems, "; "))
	}
	return nil
}

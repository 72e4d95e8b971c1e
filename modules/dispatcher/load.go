package dispatcher

import (
	"bufio"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kamgo/kamgo/modules/core"
)

// Kamailio's dispatcher table, version 4.
func dispatcherSchema(name string) core.TableSchema {
	return core.TableSchema{Name: name, Version: 4, Create: []string{
		`CREATE TABLE IF NOT EXISTS ` + name + ` (
			id INTEGER PRIMARY KEY NOT NULL,
			setid INTEGER DEFAULT 0 NOT NULL,
			destination VARCHAR(192) DEFAULT '' NOT NULL,
			flags INTEGER DEFAULT 0 NOT NULL,
			priority INTEGER DEFAULT 0 NOT NULL,
			attrs VARCHAR(128) DEFAULT '' NOT NULL,
			description VARCHAR(64) DEFAULT '' NOT NULL)`,
	}}
}

// load reads the destinations: list_file when set, else the table.
func (d *DS) load() (map[int]*Set, error) {
	if f := strp(&d.listFile); f != "" {
		return loadList(f)
	}
	db, own, err := d.openDB()
	if err != nil || db == nil {
		return map[int]*Set{}, err
	}
	if own {
		defer db.Close()
	}
	return loadTable(db, strp(&d.tableName))
}

// openDB: db_url's file, else kamd's database; neither is not an error
// (no destinations, as route tests without a database).
func (d *DS) openDB() (*sql.DB, bool, error) {
	url := strp(&d.dbURL)
	if url == "" {
		return d.env.DB, false, nil
	}
	rest, ok := strings.CutPrefix(url, "sqlite://")
	if !ok || rest == "" || rest == "/" {
		return nil, false, fmt.Errorf("dispatcher: db_url %q: want sqlite:///path.db", url)
	}
	if strings.HasPrefix(rest, "//") {
		rest = rest[1:]
	}
	if err := os.MkdirAll(filepath.Dir(rest), 0o750); err != nil {
		return nil, false, fmt.Errorf("dispatcher: db_url %q: %w", url, err)
	}
	db, err := core.OpenDB(rest)
	if err != nil {
		return nil, false, fmt.Errorf("dispatcher: db_url %q: %w", url, err)
	}
	return db, true, nil
}

func loadTable(db *sql.DB, table string) (map[int]*Set, error) {
	if !core.ValidSQLName(table) {
		return nil, fmt.Errorf("dispatcher: invalid table_name %q", table)
	}
	if err := core.EnsureTable(db, dispatcherSchema(table)); err != nil {
		return nil, fmt.Errorf("dispatcher: %w", err)
	}
	rows, err := db.Query(`SELECT id, setid, destination, flags, priority, attrs, description FROM ` + table + ` ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("dispatcher: %s: %w", table, err)
	}
	defer rows.Close()
	sets := map[int]*Set{}
	for rows.Next() {
		var id int64
		var setid, flags, prio int
		var dst, attrs, desc string
		if err := rows.Scan(&id, &setid, &dst, &flags, &prio, &attrs, &desc); err != nil {
			return nil, fmt.Errorf("dispatcher: %s: %w", table, err)
		}
		x, err := newDest(dst, flags, prio, attrs, desc)
		if err != nil {
			return nil, fmt.Errorf("dispatcher: %s row id %d: %w", table, id, err)
		}
		add(sets, setid, x)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("dispatcher: %s: %w", table, err)
	}
	finish(sets)
	return sets, nil
}

func add(sets map[int]*Set, id int, x *Dest) {
	s := sets[id]
	if s == nil {
		s = &Set{ID: id}
		sets[id] = s
	}
	s.Dests = append(s.Dests, x)
}

// loadList reads Kamailio's list file: "setid destination [flags
// [priority [attrs [description]]]]", # comments, blank lines.
func loadList(path string) (map[int]*Set, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("dispatcher: list_file: %w", err)
	}
	defer f.Close()
	sets, err := parseList(f.Name(), bufio.NewScanner(f))
	if err != nil {
		return nil, err
	}
	finish(sets)
	return sets, nil
}

func parseList(name string, sc *bufio.Scanner) (map[int]*Set, error) {
	sets := map[int]*Set{}
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fs := strings.Fields(line)
		if len(fs) < 2 {
			return nil, fmt.Errorf("dispatcher: %s:%d: want \"setid destination [flags [priority [attrs]]]\"", name, ln)
		}
		setid, err := strconv.Atoi(fs[0])
		if err != nil {
			return nil, fmt.Errorf("dispatcher: %s:%d: setid %q is not a number", name, ln, fs[0])
		}
		var flags, prio int
		var attrs, desc string
		if len(fs) > 2 {
			if flags, err = strconv.Atoi(fs[2]); err != nil {
				return nil, fmt.Errorf("dispatcher: %s:%d: flags %q is not a number", name, ln, fs[2])
			}
		}
		if len(fs) > 3 {
			if prio, err = strconv.Atoi(fs[3]); err != nil {
				return nil, fmt.Errorf("dispatcher: %s:%d: priority %q is not a number", name, ln, fs[3])
			}
		}
		if len(fs) > 4 {
			attrs = fs[4]
		}
		if len(fs) > 5 {
			desc = strings.Join(fs[5:], " ")
		}
		x, err := newDest(fs[1], flags, prio, attrs, desc)
		if err != nil {
			return nil, fmt.Errorf("dispatcher: %s:%d: %w", name, ln, err)
		}
		add(sets, setid, x)
	}
	return sets, sc.Err()
}

package uac

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kamgo/kamgo/modules/core"
)

// tableVersion is Kamailio 5.5–6.1's uacreg table version.
const tableVersion = 5

// createSQL is Kamailio's utils/kamctl/db_sqlite/uac-create.sql (version 5)
// with IF NOT EXISTS: the same columns, types, defaults and unique l_uuid,
// so rows written by kamctl, kamcli or plain SQL load unchanged.
func createSQL(table string) string {
	return `CREATE TABLE IF NOT EXISTS ` + table + ` (
    id INTEGER PRIMARY KEY NOT NULL,
    l_uuid VARCHAR(64) DEFAULT '' NOT NULL,
    l_username VARCHAR(64) DEFAULT '' NOT NULL,
    l_domain VARCHAR(64) DEFAULT '' NOT NULL,
    r_username VARCHAR(64) DEFAULT '' NOT NULL,
    r_domain VARCHAR(64) DEFAULT '' NOT NULL,
    realm VARCHAR(64) DEFAULT '' NOT NULL,
    auth_username VARCHAR(64) DEFAULT '' NOT NULL,
    auth_password VARCHAR(64) DEFAULT '' NOT NULL,
    auth_ha1 VARCHAR(128) DEFAULT '' NOT NULL,
    auth_proxy VARCHAR(255) DEFAULT '' NOT NULL,
    expires INTEGER DEFAULT 0 NOT NULL,
    flags INTEGER DEFAULT 0 NOT NULL,
    reg_delay INTEGER DEFAULT 0 NOT NULL,
    contact_addr VARCHAR(255) DEFAULT '' NOT NULL,
    socket VARCHAR(128) DEFAULT '' NOT NULL,
    CONSTRAINT ` + table + `_l_uuid_idx UNIQUE (l_uuid)
)`
}

// addedColumns are the columns each version added (uac.md §1.1), so an
// older table is brought to version 5 by adding what it lacks.
var addedColumns = []struct {
	version int
	ddl     []string
}{
	{2, []string{"flags INTEGER DEFAULT 0 NOT NULL", "reg_delay INTEGER DEFAULT 0 NOT NULL"}},
	{3, []string{"auth_ha1 VARCHAR(128) DEFAULT '' NOT NULL"}},
	{4, []string{"socket VARCHAR(128) DEFAULT '' NOT NULL"}},
	{5, []string{"contact_addr VARCHAR(255) DEFAULT '' NOT NULL"}},
}

func (u *UAC) schema(table string) core.TableSchema {
	return core.TableSchema{
		Name:    table,
		Version: tableVersion,
		Create:  []string{createSQL(table)},
		Migrate: func(tx *sql.Tx, from int) error {
			if from < 1 {
				return fmt.Errorf("unknown version %d", from)
			}
			for _, a := range addedColumns {
				if a.version <= from {
					continue
				}
				for _, col := range a.ddl {
					if _, err := tx.Exec(`ALTER TABLE ` + table + ` ADD COLUMN ` + col); err != nil {
						return err
					}
				}
			}
			u.env.Log.Info("uac: migrated the registrations table", "table", table, "from", from, "to", tableVersion)
			return nil
		},
	}
}

// sqlitePath turns reg_db_url into a file path. Kamailio's db_sqlite takes
// what follows "sqlite://" as the path, so an absolute path has four
// slashes (sqlite:////var/lib/x.db); the three-slash form
// (sqlite:///var/lib/x.db) that Kamailio refuses is accepted too, as an
// absolute path, since that is what a URL reader expects it to mean.
func sqlitePath(url string) (string, error) {
	rest, ok := strings.CutPrefix(url, "sqlite://")
	if !ok {
		return "", fmt.Errorf("reg_db_url %q: only sqlite:// URLs are supported (sqlite:///abs/path.db)", url)
	}
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		rest = rest[:i]
	}
	switch {
	case rest == "" || rest == "/":
		return "", fmt.Errorf("reg_db_url %q: no file path", url)
	case strings.HasPrefix(rest, "//"): // sqlite:////abs: Kamailio's absolute form
		rest = rest[1:]
	case strings.HasPrefix(rest, "/"): // sqlite:///abs
	default: // sqlite://rel/path: relative, as in Kamailio
		if strings.Contains(strings.SplitN(rest, "/", 2)[0], ":") {
			return "", fmt.Errorf("reg_db_url %q: a host part is not supported; use sqlite:///abs/path.db", url)
		}
	}
	return filepath.Clean(rest), nil
}

// openDB opens the uacreg database: kamd's own (env.DB) with no
// reg_db_url, else the file it names (created with its directory's
// directory if missing).
func (u *UAC) openDB() (db *sql.DB, own bool, err error) {
	url := u.regDBURL.Load()
	if url == "" {
		if u.env.DB == nil {
			return nil, false, fmt.Errorf("uac: no reg_db_url and kamd has no database (--db)")
		}
		return u.env.DB, false, nil
	}
	path, err := sqlitePath(url)
	if err != nil {
		return nil, false, fmt.Errorf("uac: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, false, fmt.Errorf("uac: reg_db_url %q: %w", url, err)
	}
	db, err = core.OpenDB(path)
	if err != nil {
		return nil, false, fmt.Errorf("uac: reg_db_url %q: %w", url, err)
	}
	return db, true, nil
}

// Row is one uacreg row (Kamailio's columns).
type Row struct {
	ID                                  int64
	LUUID, LUsername, LDomain           string
	RUsername, RDomain, Realm           string
	AuthUsername, AuthPassword, AuthHA1 string
	AuthProxy                           string
	Expires, Flags, RegDelay            int
	ContactAddr, Socket                 string
	// Garbled is why a column could not be read (text in an INTEGER
	// column: SQLite's affinity lets any tool store it); the row is then
	// invalid, never fatal for the others.
	Garbled string
}

const selectCols = `id, l_uuid, l_username, l_domain, r_username, r_domain, realm, auth_username, auth_password, auth_ha1, auth_proxy, expires, flags, reg_delay, contact_addr, socket`

// loadRows reads the table (all rows, or the one l_uuid). NULLs read as
// empty/0, as Kamailio leaves them unset.
func loadRows(db *sql.DB, table, uuid string) ([]Row, error) {
	q := `SELECT ` + selectCols + ` FROM ` + table
	var args []any
	if uuid != "" {
		q += ` WHERE l_uuid = ?`
		args = append(args, uuid)
	}
	q += ` ORDER BY id`
	rows, err := db.Query(q, args...)
	if err != nil {
		return nil, fmt.Errorf("uac: reading %s: %w", table, err)
	}
	defer rows.Close()
	var out []Row
	for rows.Next() {
		var r Row
		var s [12]sql.NullString
		var n [3]sql.NullString // scanned as text: a garbled value spoils only its row
		if err := rows.Scan(&r.ID, &s[0], &s[1], &s[2], &s[3], &s[4], &s[5], &s[6], &s[7], &s[8], &s[9], &n[0], &n[1], &n[2], &s[10], &s[11]); err != nil {
			return nil, fmt.Errorf("uac: reading %s: %w", table, err)
		}
		var num [3]int
		for i, name := range []string{"expires", "flags", "reg_delay"} {
			v := strings.TrimSpace(n[i].String)
			if v == "" {
				continue // NULL: unset, as Kamailio
			}
			x, err := strconv.ParseInt(v, 10, 32)
			if err != nil {
				if r.Garbled == "" {
					r.Garbled = fmt.Sprintf("column '%s' %q is not an integer", name, n[i].String)
				}
				continue
			}
			num[i] = int(x)
		}
		r.LUUID, r.LUsername, r.LDomain = s[0].String, s[1].String, s[2].String
		r.RUsername, r.RDomain, r.Realm = s[3].String, s[4].String, s[5].String
		r.AuthUsername, r.AuthPassword, r.AuthHA1, r.AuthProxy = s[6].String, s[7].String, s[8].String, s[9].String
		r.Expires, r.Flags, r.RegDelay = num[0], num[1], num[2]
		r.ContactAddr, r.Socket = s[10].String, s[11].String
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("uac: reading %s: %w", table, err)
	}
	return out, nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// checkRow applies Kamailio's load rules (uac.md §1.3) plus the checks a
// value written into a header needs; the error is the reason reg_dump
// shows for the invalid record.
func checkRow(r *Row) error {
	if r.Garbled != "" {
		return errors.New(r.Garbled)
	}
	for _, c := range []struct{ name, v string }{
		{"l_uuid", r.LUUID}, {"l_username", r.LUsername}, {"l_domain", r.LDomain},
		{"r_username", r.RUsername}, {"r_domain", r.RDomain}, {"auth_username", r.AuthUsername},
		{"auth_proxy", r.AuthProxy},
	} {
		if c.v == "" {
			return fmt.Errorf("empty value not allowed for column '%s'", c.name)
		}
	}
	for _, c := range []struct{ name, v string }{
		{"l_uuid", r.LUUID}, {"r_username", r.RUsername}, {"r_domain", r.RDomain}, {"realm", r.Realm},
		{"auth_username", r.AuthUsername}, {"auth_proxy", r.AuthProxy}, {"contact_addr", r.ContactAddr}, {"socket", r.Socket},
	} {
		if err := core.CheckText(c.name, c.v); err != nil {
			return err
		}
		if strings.ContainsAny(c.v, " <>\"") && c.name != "realm" {
			return fmt.Errorf("column '%s' %q: spaces, quotes and angle brackets are not allowed", c.name, c.v)
		}
	}
	if r.AuthPassword == "" && r.AuthHA1 == "" {
		return fmt.Errorf("no password value provided (auth_password and auth_ha1 are both empty)")
	}
	if r.AuthHA1 != "" && (len(r.AuthHA1) != 32 || !isHex(r.AuthHA1)) {
		return fmt.Errorf("auth_ha1 must be 32 hex characters (an MD5 HA1), got %d characters", len(r.AuthHA1))
	}
	if _, err := core.ParseURI("sip:" + r.RUsername + "@" + r.RDomain); err != nil {
		return fmt.Errorf("r_username@r_domain is not a SIP URI: %v", err)
	}
	if _, err := proxyTarget(r.AuthProxy); err != nil {
		return err
	}
	if r.Socket != "" {
		if _, err := core.ParseSocket(r.Socket); err != nil {
			return fmt.Errorf("socket: %v", err)
		}
	}
	if r.Expires < 0 {
		return fmt.Errorf("expires %d is negative", r.Expires)
	}
	if r.RegDelay < 0 {
		return fmt.Errorf("reg_delay %d is negative", r.RegDelay)
	}
	return nil
}

// proxyTarget parses auth_proxy (a SIP URI; "host[:port]" is taken as
// sip:host[:port]) into the next hop.
func proxyTarget(s string) (core.Target, error) {
	v := s
	if !strings.HasPrefix(strings.ToLower(v), "sip:") && !strings.HasPrefix(strings.ToLower(v), "sips:") {
		v = "sip:" + v
	}
	uri, err := core.ParseURI(v)
	if err != nil || uri.Host == "" {
		return core.Target{}, fmt.Errorf("auth_proxy %q is not a SIP URI", s)
	}
	t := core.TargetOf(&uri)
	switch t.Proto {
	case "udp", "tcp", "tls", "ws", "wss":
	default:
		return core.Target{}, fmt.Errorf("auth_proxy %q: unknown transport %q", s, t.Proto)
	}
	return t, nil
}

// insertRow writes a row (uac.reg_add does not: Kamailio's is memory only;
// tests and tools use it).
func insertRow(db *sql.DB, table string, r *Row) error {
	_, err := db.Exec(`INSERT INTO `+table+` (l_uuid, l_username, l_domain, r_username, r_domain, realm, auth_username, auth_password, auth_ha1, auth_proxy, expires, flags, reg_delay, contact_addr, socket) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		r.LUUID, r.LUsername, r.LDomain, r.RUsername, r.RDomain, r.Realm, r.AuthUsername, r.AuthPassword, r.AuthHA1, r.AuthProxy, r.Expires, r.Flags, r.RegDelay, r.ContactAddr, r.Socket)
	return err
}

// proxyTargetPort is proxyTarget plus whether the URI named a port (no
// SRV lookup then).
func proxyTargetPort(s string) (core.Target, bool) {
	t, _ := proxyTarget(s)
	v := s
	if !strings.HasPrefix(strings.ToLower(v), "sip:") && !strings.HasPrefix(strings.ToLower(v), "sips:") {
		v = "sip:" + v
	}
	uri, err := core.ParseURI(v)
	return t, err == nil && uri.Port != 0
}

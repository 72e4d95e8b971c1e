package usrloc

import (
	"database/sql"
	"strings"
	"time"

	"github.com/kamgo/kamgo/modules/core"
)

// TableVersion is the location table's version in Kamailio's version table.
const TableVersion = 9

// The SQL is kept narrow and portable (plain CREATE/INSERT/UPDATE/DELETE/
// SELECT, `?` placeholders, datetimes as "YYYY-MM-DD HH:MM:SS" UTC text) so
// a PostgreSQL backend needs only a placeholder rewrite and SERIAL for id.

const dbTime = "2006-01-02 15:04:05"

// permanentTime is what a permanent contact (expires 0) stores, as
// Kamailio's time 0.
const permanentTime = "1970-01-01 00:00:00"

func createSQL(t string) []string {
	return []string{
		`CREATE TABLE IF NOT EXISTS ` + t + ` (
    id INTEGER PRIMARY KEY NOT NULL,
    ruid VARCHAR(64) DEFAULT '' NOT NULL,
    username VARCHAR(64) DEFAULT '' NOT NULL,
    domain VARCHAR(64) DEFAULT NULL,
    contact VARCHAR(512) DEFAULT '' NOT NULL,
    received VARCHAR(128) DEFAULT NULL,
    path VARCHAR(512) DEFAULT NULL,
    expires TIMESTAMP DEFAULT '2030-05-28 21:32:15' NOT NULL,
    q REAL DEFAULT 1.0 NOT NULL,
    callid VARCHAR(255) DEFAULT 'Default-Call-ID' NOT NULL,
    cseq INTEGER DEFAULT 1 NOT NULL,
    last_modified TIMESTAMP DEFAULT '2000-01-01 00:00:01' NOT NULL,
    flags INTEGER DEFAULT 0 NOT NULL,
    cflags INTEGER DEFAULT 0 NOT NULL,
    user_agent VARCHAR(255) DEFAULT '' NOT NULL,
    socket VARCHAR(64) DEFAULT NULL,
    methods INTEGER DEFAULT NULL,
    instance VARCHAR(255) DEFAULT NULL,
    reg_id INTEGER DEFAULT 0 NOT NULL,
    server_id INTEGER DEFAULT 0 NOT NULL,
    connection_id INTEGER DEFAULT 0 NOT NULL,
    keepalive INTEGER DEFAULT 0 NOT NULL,
    partition INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT ` + t + `_ruid_idx UNIQUE (ruid))`,
		`CREATE INDEX IF NOT EXISTS ` + t + `_account_contact_idx ON ` + t + ` (username, domain, contact)`,
		`CREATE INDEX IF NOT EXISTS ` + t + `_expires_idx ON ` + t + ` (expires)`,
		`CREATE INDEX IF NOT EXISTS ` + t + `_connection_idx ON ` + t + ` (server_id, connection_id)`,
	}
}

const columns = `ruid, username, domain, contact, received, path, expires, q, callid, cseq, last_modified, flags, cflags, user_agent, socket, methods, instance, reg_id, server_id, connection_id, keepalive`

// ensureTable creates the table and its version row, or checks the version.
func (u *UL) ensureTable(t string) error {
	return core.EnsureTable(u.db, core.TableSchema{Name: t, Version: TableVersion, Create: createSQL(t)})
}

// loadDomain creates the table if needed and loads its unexpired rows;
// expired rows are deleted.
func (u *UL) loadDomain(d *Domain) error {
	if err := u.ensureTable(d.name); err != nil {
		return errorf("table %s: %v", d.name, err)
	}
	rows, err := u.db.Query(`SELECT ` + columns + ` FROM ` + d.name)
	if err != nil {
		return errorf("load %s: %v", d.name, err)
	}
	now := u.Now()
	var expired []string
	n := 0
	for rows.Next() {
		var (
			c                                     Contact
			user                                  string
			dom, received, path, socket, instance sql.NullString
			methods                               sql.NullInt64
			expires, modified                     any
			q                                     float64
		)
		if err := rows.Scan(&c.Ruid, &user, &dom, &c.Contact, &received, &path, &expires, &q, &c.CallID, &c.CSeq,
			&modified, &c.Flags, &c.CFlags, &c.UserAgent, &socket, &methods, &instance, &c.RegID, &c.ServerID, &c.ConnID, &c.Keepalive); err != nil {
			rows.Close()
			return errorf("load %s: %v", d.name, err)
		}
		c.Received, c.Path, c.Socket, c.Instance = received.String, path.String, socket.String, instance.String
		c.Methods = MethodsAll
		if methods.Valid {
			c.Methods = methods.Int64
		}
		c.Q = int(q*1000 + 0.5)
		if q < 0 {
			c.Q = -1
		}
		c.Expires = parseTime(expires)
		c.LastModified = parseTime(modified)
		if !c.Expires.IsZero() && c.Expires.Unix() <= 0 {
			c.Expires = time.Time{}
		}
		if !c.Valid(now) {
			expired = append(expired, c.Ruid)
			continue
		}
		c.AoR = user
		if u.UseDomain() && dom.String != "" {
			c.AoR = user + "@" + strings.ToLower(dom.String)
		}
		c.State = StateSync
		s := d.shard(c.AoR)
		s.mu.Lock()
		if s.recs == nil {
			s.recs = map[string]*record{}
		}
		r := s.recs[c.AoR]
		if r == nil {
			r = &record{aor: c.AoR}
			s.recs[c.AoR] = r
		}
		r.contacts = append(r.contacts, c)
		s.mu.Unlock()
		n++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return errorf("load %s: %v", d.name, err)
	}
	u.contacts.Add(int64(n))
	if len(expired) > 0 {
		if err := u.writeBatch(d.name, nil, nil, expired); err != nil {
			return err
		}
	}
	if n > 0 {
		u.env.Log.Info("usrloc: loaded contacts", "table", d.name, "contacts", n, "expired", len(expired))
	}
	return nil
}

func parseTime(v any) time.Time {
	switch x := v.(type) {
	case time.Time:
		if x.Unix() <= 0 {
			return time.Time{}
		}
		return x.UTC()
	case string:
		return parseTimeString(x)
	case []byte:
		return parseTimeString(string(x))
	case int64: // expires_type=1 style (unix seconds)
		if x <= 0 {
			return time.Time{}
		}
		return time.Unix(x, 0).UTC()
	}
	return time.Time{}
}

func parseTimeString(s string) time.Time {
	for _, layout := range []string{dbTime, time.RFC3339Nano, "2006-01-02T15:04:05Z"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			if t.Unix() <= 0 {
				return time.Time{}
			}
			return t
		}
	}
	return time.Time{}
}

func fmtExpires(t time.Time) string {
	if t.IsZero() {
		return permanentTime
	}
	return t.UTC().Format(dbTime)
}

func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// splitAoR gives the username and domain columns.
func (u *UL) splitAoR(aor string) (string, any) {
	if u.UseDomain() {
		if user, dom, ok := strings.Cut(aor, "@"); ok {
			return user, dom
		}
	}
	return aor, nil
}

func qFloat(q int) float64 {
	if q < 0 {
		return -1
	}
	return float64(q) / 1000
}

type execer interface {
	Exec(query string, args ...any) (sql.Result, error)
}

func (u *UL) insertRow(x execer, t string, c *Contact) error {
	user, dom := u.splitAoR(c.AoR)
	_, err := x.Exec(`INSERT INTO `+t+` (`+columns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.Ruid, user, dom, c.Contact, nullStr(c.Received), nullStr(c.Path), fmtExpires(c.Expires), qFloat(c.Q), c.CallID, c.CSeq,
		c.LastModified.UTC().Format(dbTime), c.Flags, c.CFlags, c.UserAgent, nullStr(c.Socket), c.Methods, nullStr(c.Instance),
		c.RegID, c.ServerID, c.ConnID, c.Keepalive)
	return err
}

func (u *UL) updateRow(x execer, t string, c *Contact) error {
	res, err := x.Exec(`UPDATE `+t+` SET contact = ?, received = ?, path = ?, expires = ?, q = ?, callid = ?, cseq = ?, last_modified = ?, flags = ?, cflags = ?, user_agent = ?, socket = ?, methods = ?, instance = ?, reg_id = ?, server_id = ?, connection_id = ?, keepalive = ? WHERE ruid = ?`,
		c.Contact, nullStr(c.Received), nullStr(c.Path), fmtExpires(c.Expires), qFloat(c.Q), c.CallID, c.CSeq,
		c.LastModified.UTC().Format(dbTime), c.Flags, c.CFlags, c.UserAgent, nullStr(c.Socket), c.Methods, nullStr(c.Instance),
		c.RegID, c.ServerID, c.ConnID, c.Keepalive, c.Ruid)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		// The row is gone (deleted by hand, or a flush raced): write it again.
		return u.insertRow(x, t, c)
	}
	return nil
}

// writeBatch applies inserts, updates and deletes in one transaction.
func (u *UL) writeBatch(t string, ins, upd []Contact, del []string) error {
	if u.db == nil {
		return nil
	}
	tx, err := u.db.Begin()
	if err != nil {
		return errorf("%s: %v", t, err)
	}
	defer tx.Rollback()
	for _, r := range del {
		if _, err := tx.Exec(`DELETE FROM `+t+` WHERE ruid = ?`, r); err != nil {
			return errorf("%s: delete: %v", t, err)
		}
	}
	for i := range ins {
		if err := u.insertRow(tx, t, &ins[i]); err != nil {
			return errorf("%s: insert: %v", t, err)
		}
	}
	for i := range upd {
		if err := u.updateRow(tx, t, &upd[i]); err != nil {
			return errorf("%s: update: %v", t, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return errorf("%s: commit: %v", t, err)
	}
	return nil
}

func (u *UL) writeThrough(t string, ins, upd, del []*Contact) error {
	if len(ins)+len(upd)+len(del) == 0 {
		return nil
	}
	var a, b []Contact
	var r []string
	for _, c := range ins {
		a = append(a, *c)
	}
	for _, c := range upd {
		b = append(b, *c)
	}
	for _, c := range del {
		r = append(r, c.Ruid)
	}
	return u.writeBatch(t, a, b, r)
}

func (u *UL) deleteExpired(gone []Expired) error {
	by := map[string][]string{}
	for _, g := range gone {
		by[g.Table] = append(by[g.Table], g.Ruid)
	}
	for t, r := range by {
		if err := u.writeBatch(t, nil, nil, r); err != nil {
			return err
		}
	}
	return nil
}

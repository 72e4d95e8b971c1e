// Package auth_db is Kamailio's auth_db module: digest authentication
// against the subscriber table (Kamailio's schema, version 7) in kamd's
// SQLite database. Nonces, challenges and the digest itself come from the
// auth module, reached through auth.Of(env).
package auth_db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/auth"
	"github.com/kamgo/kamgo/modules/core"
)

func init() { core.Register(New) }

// TableVersion is the subscriber table version Kamailio's auth_db expects.
const TableVersion = 7

// subscriberSchema is Kamailio's subscriber table.
var subscriberSchema = core.TableSchema{Name: "subscriber", Version: TableVersion, Create: []string{
	`CREATE TABLE IF NOT EXISTS subscriber (
			id INTEGER PRIMARY KEY NOT NULL,
			username VARCHAR(64) DEFAULT '' NOT NULL,
			domain VARCHAR(64) DEFAULT '' NOT NULL,
			password VARCHAR(64) DEFAULT '' NOT NULL,
			ha1 VARCHAR(128) DEFAULT '' NOT NULL,
			ha1b VARCHAR(128) DEFAULT '' NOT NULL,
			CONSTRAINT subscriber_account_idx UNIQUE (username, domain))`,
	`CREATE INDEX IF NOT EXISTS subscriber_username_idx ON subscriber (username)`,
}}

// CreateSchema creates Kamailio's subscriber table and its version row if
// missing, and refuses a table of another version.
func CreateSchema(db *sql.DB) error {
	if err := core.EnsureTable(db, subscriberSchema); err != nil {
		return fmt.Errorf("auth_db: %w", err)
	}
	return nil
}

// AddSubscriber stores a subscriber as kamctl add does: ha1 =
// H(username:domain:password), ha1b = H(username@domain:domain:password),
// with alg "MD5" or "SHA-256"; the password itself only if storePassword.
func AddSubscriber(ctx context.Context, db *sql.DB, alg, username, domain, password string, storePassword bool) error {
	for what, v := range map[string]string{"username": username, "domain": domain, "password": password} {
		if v == "" {
			return fmt.Errorf("empty %s", what)
		}
		if strings.ContainsAny(v, "\x00\r\n\t \"\\") {
			return fmt.Errorf("%s contains whitespace, a quote, a backslash or a control character", what)
		}
		if len(v) > 64 {
			return fmt.Errorf("%s is longer than 64 characters", what)
		}
	}
	if strings.Contains(domain, "@") || strings.Contains(username, "@") {
		return errors.New("username and domain must not contain '@'")
	}
	stored := ""
	if storePassword {
		stored = password
	}
	_, err := db.ExecContext(ctx, `INSERT INTO subscriber (username, domain, password, ha1, ha1b) VALUES (?, ?, ?, ?, ?)`,
		username, domain, stored, auth.HA1(alg, username, domain, password), auth.HA1(alg, username+"@"+domain, domain, password))
	return err
}

type config struct {
	calcHA1       bool
	passCol       string // "" is ha1, or password with calculate_ha1
	passCol2      string
	userCol       string
	domainCol     string
	useDomain     bool
	storePassword bool
}

// AuthDB is one auth_db instance.
type AuthDB struct {
	env *core.Env

	mu  sync.RWMutex
	cfg config

	dbMu sync.Mutex
	own  *sql.DB // opened here when the Env has a DBPath but no DB
}

// New builds the auth_db module.
func New(env *core.Env) *core.Module {
	d := &AuthDB{env: env}
	return core.ApplyDefaults(d.module())
}

func (d *AuthDB) conf() config {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.cfg
}

// db is the Env's database, or one opened from env.DBPath.
func (d *AuthDB) db() (*sql.DB, error) {
	if d.env.DB != nil {
		return d.env.DB, nil
	}
	d.dbMu.Lock()
	defer d.dbMu.Unlock()
	if d.own != nil {
		return d.own, nil
	}
	if d.env.DBPath == "" {
		return nil, errors.New("no database (kamd --db)")
	}
	db, err := core.OpenDB(d.env.DBPath)
	if err != nil {
		return nil, err
	}
	if err := CreateSchema(db); err != nil {
		db.Close()
		return nil, err
	}
	d.own = db
	return db, nil
}

func ident(what, s string) (string, error) {
	if !core.ValidSQLName(s) {
		return "", fmt.Errorf("invalid %s name %q (letters, digits, '_')", what, s)
	}
	return `"` + s + `"`, nil
}

// lookup returns the HA1 for the credentials from table: the ha1 column
// (ha1b when the username carries a domain), or H(username:realm:password)
// with calculate_ha1.
func (d *AuthDB) lookup(m *core.Msg, table string) auth.HA1Lookup {
	return func(c *auth.Cred, realm string) (string, int) {
		cfg := d.conf()
		col := cfg.passCol
		if col == "" {
			col = "ha1"
			if cfg.calcHA1 {
				col = "password"
			}
		}
		if c.Domain != "" && !cfg.calcHA1 {
			col = cfg.passCol2
		}
		fail := func(err error) (string, int) {
			d.env.Log.Error("auth_db: "+err.Error(), "table", table, "username", c.Username, "at", m.Pos())
			return "", auth.ErrGeneric
		}
		t, err := ident("table", table)
		if err != nil {
			return fail(err)
		}
		qc, err := ident("column", col)
		if err != nil {
			return fail(err)
		}
		uc, err := ident("column", cfg.userCol)
		if err != nil {
			return fail(err)
		}
		q := "SELECT " + qc + " FROM " + t + " WHERE " + uc + " = ?"
		args := []any{c.User}
		if cfg.useDomain {
			dc, err := ident("column", cfg.domainCol)
			if err != nil {
				return fail(err)
			}
			dom := c.Domain
			if dom == "" {
				dom = realm
			}
			q += " AND " + dc + " = ?"
			args = append(args, dom)
		}
		db, err := d.db()
		if err != nil {
			return fail(err)
		}
		var v sql.NullString
		err = db.QueryRowContext(context.Background(), q+" LIMIT 1", args...).Scan(&v)
		if errors.Is(err, sql.ErrNoRows) {
			return "", auth.ErrUserUnknown
		}
		if err != nil {
			return fail(fmt.Errorf("query: %w", err))
		}
		if !v.Valid || v.String == "" {
			return fail(fmt.Errorf("subscriber %s has no %s (NULL or empty)", c.Username, col))
		}
		if cfg.calcHA1 {
			return auth.HA1(c.Algorithm, c.Username, realm, v.String), 0
		}
		if why := auth.CheckHA1(c.Algorithm, v.String); why != "" {
			return fail(fmt.Errorf("subscriber %s: malformed %s column: %s", c.Username, col, why))
		}
		return v.String, 0
	}
}

func (d *AuthDB) authenticate(m *core.Msg, realm, table string, hf auth.HF, method string) (int, *auth.Cred) {
	a := auth.Of(m.Env)
	if a == nil {
		d.env.Log.Error("auth_db: the auth module is not loaded", "at", m.Pos())
		return auth.ErrGeneric, nil
	}
	if table == "" {
		d.env.Log.Error("auth_db: empty table name", "at", m.Pos())
		return auth.ErrGeneric, nil
	}
	return a.Authenticate(m, realm, hf, method, d.lookup(m, table))
}

// isSubscriber is Kamailio's is_subscriber: 1 found, -2 not found, -1 error.
func (d *AuthDB) isSubscriber(m *core.Msg, uri, table string, flags int) int {
	u, err := core.ParseURI(uri)
	if uri == "" || err != nil {
		d.env.Log.Error("auth_db: is_subscriber: invalid uri", "uri", uri, "at", m.Pos())
		return -1
	}
	cfg := d.conf()
	t, err := ident("table", table)
	if err != nil {
		d.env.Log.Error("auth_db: is_subscriber: "+err.Error(), "at", m.Pos())
		return -1
	}
	uc, err := ident("column", cfg.userCol)
	if err != nil {
		d.env.Log.Error("auth_db: is_subscriber: "+err.Error(), "at", m.Pos())
		return -1
	}
	q := "SELECT 1 FROM " + t + " WHERE " + uc + " = ?"
	args := []any{u.User}
	if flags&1 != 0 {
		dc, err := ident("column", cfg.domainCol)
		if err != nil {
			d.env.Log.Error("auth_db: is_subscriber: "+err.Error(), "at", m.Pos())
			return -1
		}
		q += " AND " + dc + " = ?"
		args = append(args, u.Host)
	}
	db, err := d.db()
	if err != nil {
		d.env.Log.Error("auth_db: "+err.Error(), "at", m.Pos())
		return -1
	}
	var one int
	err = db.QueryRow(q+" LIMIT 1", args...).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return -2
	}
	if err != nil {
		d.env.Log.Error("auth_db: is_subscriber: query failed", "err", err, "at", m.Pos())
		return -1
	}
	return 1
}

// auth_check flags
const (
	checkID      = 1
	checkSkipFwd = 2
)

func (d *AuthDB) module() *core.Module {
	s, i := core.ArgStr, core.ArgInt
	ret := func(rc int) (core.Val, error) { return core.Int(rc), nil }
	req := func(f func(m *core.Msg, a []core.Val) int) func(m *core.Msg, a []core.Val) (core.Val, error) {
		return func(m *core.Msg, a []core.Val) (core.Val, error) {
			if m.Req == nil {
				return core.Null, core.ErrNoRequest
			}
			return ret(f(m, a))
		}
	}
	// authWith is www_authenticate and proxy_authenticate: (realm, table)
	// against the header hf names and the request's own method.
	authWith := func(hf auth.HF) func(m *core.Msg, a []core.Val) (core.Val, error) {
		return req(func(m *core.Msg, a []core.Val) int {
			rc, _ := d.authenticate(m, a[0].Str, a[1].Str, hf, string(m.Req.Method))
			return rc
		})
	}
	strParam := func(name, def, doc string, field func(c *config) *string) core.Param {
		return core.Param{Name: name, Type: s, Default: core.Str(def), Doc: doc,
			Check: func(v core.Val) error {
				if !core.ValidSQLName(v.String()) && (def != "" || v.String() != "") {
					return fmt.Errorf("%s: invalid column name %q", name, v.String())
				}
				return nil
			},
			Set: func(v core.Val) error { d.mu.Lock(); *field(&d.cfg) = v.String(); d.mu.Unlock(); return nil },
			Get: func() core.Val { c := d.conf(); return core.Str(*field(&c)) }}
	}
	intParam := func(name string, doc string, field func(c *config) *bool) core.Param {
		return core.Param{Name: name, Type: i, Default: core.Int(0), Doc: doc,
			Check: func(v core.Val) error {
				if _, ok := v.AsInt(); !ok {
					return fmt.Errorf("%s must be an integer", name)
				}
				return nil
			},
			Set: func(v core.Val) error {
				n, _ := v.AsInt()
				d.mu.Lock()
				*field(&d.cfg) = n != 0
				d.mu.Unlock()
				return nil
			},
			Get: func() core.Val { c := d.conf(); return core.Int01(*field(&c)) }}
	}
	ignored := func(name, doc string) core.Param {
		var val atomic.Pointer[string] // kept only so the value reads back
		return core.Param{Name: name, Type: s, Default: core.Str(""), Doc: doc,
			Set: func(v core.Val) error { x := v.String(); val.Store(&x); return nil },
			Get: func() core.Val { return core.Str(*val.Load()) }}
	}
	codes := "1 ok, -1 error, -2 bad password, -3 unknown user, -4 stale nonce, -5 no credentials, -6 nonce reused"
	return &core.Module{
		Name:  "auth_db",
		Needs: []string{"auth"},
		Doc:   "digest authentication against the subscriber table",
		Params: []core.Param{
			intParam("calculate_ha1", "1: compute the HA1 from the plaintext password column (\"password\" unless password_column is set); 0: read the ha1 column (ha1b when the username has a domain)",
				func(c *config) *bool { return &c.calcHA1 }),
			strParam("password_column", "", "column with the HA1 (the plaintext password with calculate_ha1); \"\": ha1, or password with calculate_ha1", func(c *config) *string { return &c.passCol }),
			strParam("password_column_2", "ha1b", "column with H(user@domain:realm:password), for usernames with a domain", func(c *config) *string { return &c.passCol2 }),
			strParam("user_column", "username", "username column", func(c *config) *string { return &c.userCol }),
			strParam("domain_column", "domain", "domain column", func(c *config) *string { return &c.domainCol }),
			intParam("use_domain", "1: match the domain column too (the username's domain, else the realm); ID checks compare domains", func(c *config) *bool { return &c.useDomain }),
			intParam("store_password", "kamgo: 1 makes auth_db.subscriber_add store the plaintext password too; default 0 stores ha1 and ha1b only", func(c *config) *bool { return &c.storePassword }),
			ignored("db_url", "accepted for compatibility and ignored: kamgo uses its SQLite database (kamd --db)"),
			ignored("load_credentials", "accepted for compatibility and ignored: kamgo has no AVPs"),
		},
		Funcs: []core.Func{
			{Name: "auth_check", Args: []core.ArgType{s, s, i}, Ret: core.RetInt, Routes: core.RouteRequest,
				Doc: "(realm, table, flags) www_authenticate for REGISTER, proxy_authenticate otherwise; flags 1: auth user must match the To (REGISTER/PUBLISH, From==To too) or From user (-8), 2: skip that check for INVITE/BYE/PRACK/UPDATE/MESSAGE; ACK and CANCEL give 1; " + codes + ", -8 user mismatch",
				Fn: req(func(m *core.Msg, a []core.Val) int {
					if m.Req.Method == sip.ACK || m.Req.Method == sip.CANCEL {
						return auth.OK
					}
					rc, c := d.authenticate(m, a[0].Str, a[1].Str, auth.HFFor(m), string(m.Req.Method))
					if rc == auth.OK && a[2].Int&checkID != 0 {
						rc = auth.CheckIDs(m, c, d.conf().useDomain, a[2].Int&checkSkipFwd != 0)
					}
					return rc
				})},
			{Name: "www_authenticate", Args: []core.ArgType{s, s}, Ret: core.RetInt, Routes: core.RouteRequest,
				Doc: "(realm, table) verify the Authorization header; " + codes,
				Fn:  authWith(auth.WWW)},
			{Name: "www_authenticate_method", Args: []core.ArgType{s, s, s}, Ret: core.RetInt, Routes: core.RouteRequest,
				Doc: "(realm, table, method) www_authenticate with another method in the digest",
				Fn: req(func(m *core.Msg, a []core.Val) int {
					if a[2].Str == "" {
						d.env.Log.Error("auth_db: empty method", "at", m.Pos())
						return auth.ErrGeneric
					}
					rc, _ := d.authenticate(m, a[0].Str, a[1].Str, auth.WWW, a[2].Str)
					return rc
				})},
			{Name: "proxy_authenticate", Args: []core.ArgType{s, s}, Ret: core.RetInt, Routes: core.RouteRequest,
				Doc: "(realm, table) verify the Proxy-Authorization header (kamgo: Kamailio does not export it to KEMI); " + codes,
				Fn:  authWith(auth.Proxy)},
			{Name: "is_subscriber", Args: []core.ArgType{s, s, i}, Ret: core.RetInt,
				Doc: "(uri, table, flags) 1 if the URI's user is in table (flags 1: and its host in the domain column), -2 if not, -1 on error",
				Fn: func(m *core.Msg, a []core.Val) (core.Val, error) {
					return ret(d.isSubscriber(m, a[0].Str, a[1].Str, int(a[2].Int)))
				}},
		},
		RPC: d.rpc(),
		Init: func() error {
			if d.env.DB != nil {
				return CreateSchema(d.env.DB)
			}
			if d.env.DBPath != "" {
				_, err := d.db()
				return err
			}
			return nil
		},
		Stop: func() {
			d.dbMu.Lock()
			if d.own != nil {
				d.own.Close()
				d.own = nil
			}
			d.dbMu.Unlock()
		},
	}
}

func (d *AuthDB) rpc() []core.RPCMethod {
	str := func(args core.RPCArgs, i int, name string) (string, error) {
		if args.Len() <= i {
			return "", &core.RPCError{Code: 400, Message: "missing " + name}
		}
		return args.String(i)
	}
	return []core.RPCMethod{
		{Name: "auth_db.subscriber_add", ReadOnly: false,
			Doc:    "kamgo: add a subscriber (as kamctl add): stores ha1 and ha1b for realm = domain, and the password only with modparam store_password=1",
			Params: []core.RPCParam{{Name: "username", Type: "string"}, {Name: "domain", Type: "string"}, {Name: "password", Type: "string"}},
			Result: `{"username": s, "domain": s}`,
			Handler: func(ctx context.Context, args core.RPCArgs) (any, error) {
				var v [3]string
				for i, n := range []string{"username", "domain", "password"} {
					s, err := str(args, i, n)
					if err != nil {
						return nil, err
					}
					v[i] = s
				}
				db, err := d.db()
				if err != nil {
					return nil, &core.RPCError{Code: 500, Message: err.Error()}
				}
				alg := "MD5"
				if a := auth.Of(d.env); a != nil {
					alg = a.Algorithm()
				}
				if err := AddSubscriber(ctx, db, alg, v[0], v[1], v[2], d.conf().storePassword); err != nil {
					if strings.Contains(err.Error(), "UNIQUE") {
						return nil, &core.RPCError{Code: 409, Message: "subscriber " + v[0] + "@" + v[1] + " exists"}
					}
					if strings.HasPrefix(err.Error(), "empty") || strings.Contains(err.Error(), "contain") || strings.Contains(err.Error(), "longer") {
						return nil, &core.RPCError{Code: 400, Message: err.Error()}
					}
					return nil, &core.RPCError{Code: 500, Message: err.Error()}
				}
				return map[string]any{"username": v[0], "domain": v[1]}, nil
			}},
		{Name: "auth_db.subscriber_rm", ReadOnly: false,
			Doc:    "kamgo: remove a subscriber (as kamctl rm)",
			Params: []core.RPCParam{{Name: "username", Type: "string"}, {Name: "domain", Type: "string"}},
			Result: `{"removed": n}`,
			Handler: func(ctx context.Context, args core.RPCArgs) (any, error) {
				u, err := str(args, 0, "username")
				if err != nil {
					return nil, err
				}
				dom, err := str(args, 1, "domain")
				if err != nil {
					return nil, err
				}
				db, err := d.db()
				if err != nil {
					return nil, &core.RPCError{Code: 500, Message: err.Error()}
				}
				r, err := db.ExecContext(ctx, `DELETE FROM subscriber WHERE username = ? AND domain = ?`, u, dom)
				if err != nil {
					return nil, &core.RPCError{Code: 500, Message: err.Error()}
				}
				n, _ := r.RowsAffected()
				if n == 0 {
					return nil, &core.RPCError{Code: 404, Message: "subscriber " + u + "@" + dom + " not found"}
				}
				return map[string]any{"removed": n}, nil
			}},
		{Name: "auth_db.subscriber_list", ReadOnly: true,
			Doc:    "kamgo: list subscribers (id, username, domain; never passwords or HA1s), optionally of one domain",
			Params: []core.RPCParam{{Name: "domain", Type: "string", Optional: true}},
			Result: `[{"id": n, "username": s, "domain": s}, ...]`,
			Handler: func(ctx context.Context, args core.RPCArgs) (any, error) {
				db, err := d.db()
				if err != nil {
					return nil, &core.RPCError{Code: 500, Message: err.Error()}
				}
				q, qa := `SELECT id, username, domain FROM subscriber`, []any{}
				if args.Len() > 0 {
					dom, err := args.String(0)
					if err != nil {
						return nil, err
					}
					q += ` WHERE domain = ?`
					qa = append(qa, dom)
				}
				rows, err := db.QueryContext(ctx, q+` ORDER BY domain, username`, qa...)
				if err != nil {
					return nil, &core.RPCError{Code: 500, Message: err.Error()}
				}
				defer rows.Close()
				out := []map[string]any{}
				for rows.Next() {
					var id int64
					var u, dom sql.NullString
					if err := rows.Scan(&id, &u, &dom); err != nil {
						return nil, &core.RPCError{Code: 500, Message: err.Error()}
					}
					out = append(out, map[string]any{"id": id, "username": u.String, "domain": dom.String})
				}
				if err := rows.Err(); err != nil {
					return nil, &core.RPCError{Code: 500, Message: err.Error()}
				}
				return out, nil
			}},
	}
}

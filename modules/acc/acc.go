// Package acc is Kamailio's acc module: transactions accounted to the log
// and to the acc / missed_calls tables when the script sets the module's
// flags, explicit acc_log_request / acc_db_request, and CDRs from dialog.
package acc

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/dialog"
	"github.com/kamgo/kamgo/modules/tm"
)

func init() { core.Register(New) }

// Kamailio's table versions (db_sqlite/acc-create.sql).
const (
	AccVersion     = 5
	MissedVersion  = 4
	AccCdrsVersion = 2
)

func recordTable(name string, version int) core.TableSchema {
	return core.TableSchema{Name: name, Version: version, Create: []string{
		`CREATE TABLE IF NOT EXISTS ` + name + ` (
			id INTEGER PRIMARY KEY NOT NULL,
			method VARCHAR(16) DEFAULT '' NOT NULL,
			from_tag VARCHAR(128) DEFAULT '' NOT NULL,
			to_tag VARCHAR(128) DEFAULT '' NOT NULL,
			callid VARCHAR(255) DEFAULT '' NOT NULL,
			sip_code VARCHAR(3) DEFAULT '' NOT NULL,
			sip_reason VARCHAR(128) DEFAULT '' NOT NULL,
			time TIMESTAMP WITHOUT TIME ZONE NOT NULL)`,
		`CREATE INDEX IF NOT EXISTS ` + name + `_callid_idx ON ` + name + ` (callid)`,
	}}
}

func cdrsSchema(name string) core.TableSchema {
	return core.TableSchema{Name: name, Version: AccCdrsVersion, Create: []string{
		`CREATE TABLE IF NOT EXISTS ` + name + ` (
			id INTEGER PRIMARY KEY NOT NULL,
			start_time TIMESTAMP WITHOUT TIME ZONE DEFAULT '2000-01-01 00:00:00' NOT NULL,
			end_time TIMESTAMP WITHOUT TIME ZONE DEFAULT '2000-01-01 00:00:00' NOT NULL,
			duration REAL DEFAULT 0 NOT NULL)`,
		`CREATE INDEX IF NOT EXISTS ` + name + `_start_time_idx ON ` + name + ` (start_time)`,
	}}
}

// Acc is one acc module instance.
type Acc struct {
	env *core.Env
	db  *sql.DB

	logFlag, logMissedFlag, dbFlag, dbMissedFlag, failedFlag atomic.Int64
	cdrEnable, cdrLogEnable                                  atomic.Bool

	// Transaction records and CDRs are written by one goroutine in
	// batches (one SQLite commit for many rows): a synchronous insert per
	// reply held a worker for the commit and saturated the pool at 1000
	// calls/s. acc_db_request stays synchronous (its return code says
	// whether the row was written).
	qmu                              sync.RWMutex
	q                                chan job
	qDone                            chan struct{}
	closed                           bool
	logLevel                         atomic.Int64
	accTable, missedTable, cdrsTable atomic.Pointer[string]
}

// record is one accounting record: the columns of acc and missed_calls.
type record struct {
	method, fromTag, toTag, callID, code, reason string
	at                                           time.Time
}

// New builds the acc module.
func New(env *core.Env) *core.Module {
	a := &Acc{env: env}
	flag := func(name, doc string, dst *atomic.Int64) core.Param {
		return core.Param{Name: name, Type: core.ArgInt, Default: core.Int(-1), Doc: doc,
			Check: func(v core.Val) error {
				if v.Int < -1 || v.Int > 63 {
					return fmt.Errorf("%s %d: want a flag 0..63 (or -1, off)", name, v.Int)
				}
				return nil
			},
			Set: func(v core.Val) error { dst.Store(v.Int); return nil },
			Get: func() core.Val { return core.Int(int(dst.Load())) }}
	}
	boolP := func(name string, def int, doc string, dst *atomic.Bool) core.Param {
		return core.Param{Name: name, Type: core.ArgInt, Default: core.Int(def), Doc: doc, Check: core.Check01(name),
			Set: func(v core.Val) error { dst.Store(v.Int != 0); return nil },
			Get: func() core.Val { return core.Int01(dst.Load()) }}
	}
	table := func(name, def, doc string, dst *atomic.Pointer[string]) core.Param {
		return core.Param{Name: name, Type: core.ArgStr, Default: core.Str(def), Doc: doc, Static: true,
			Check: func(v core.Val) error {
				if v.Str != "" && !core.ValidSQLName(v.Str) {
					return fmt.Errorf("%s %q: not a table name", name, v.Str)
				}
				if v.Str == "" && name != "cdrs_table" {
					return fmt.Errorf("%s: empty", name)
				}
				return nil
			},
			Set: func(v core.Val) error { s := v.Str; dst.Store(&s); return nil },
			Get: func() core.Val { return core.Str(*dst.Load()) }}
	}
	s1 := []core.ArgType{core.ArgStr}
	return core.ApplyDefaults(&core.Module{
		Name:  "acc",
		Doc:   "accounting: transactions to the log and the acc / missed_calls tables, CDRs from dialog",
		Needs: []string{"tm", "dialog"},
		Params: []core.Param{
			flag("log_flag", "flag (setflag) that has a transaction's 2xx final reply logged (ACC: transaction answered)", &a.logFlag),
			flag("log_missed_flag", "flag that has a negative final reply logged as a missed call (ACC: call missed)", &a.logMissedFlag),
			flag("db_flag", "flag that has a transaction's 2xx final reply written to the acc table", &a.dbFlag),
			flag("db_missed_flag", "flag that has a negative final reply written to the missed_calls table", &a.dbMissedFlag),
			flag("failed_transaction_flag", "flag that has negative final replies accounted too (log_flag/db_flag records)", &a.failedFlag),
			{Name: "log_level", Type: core.ArgInt, Default: core.Int(1), Doc: "level of the ACC log lines: Kamailio's numbers (-1 err, 0 warn, 1 notice, 2 info, 3 dbg)",
				Check: func(v core.Val) error {
					if v.Int < -1 || v.Int > 3 {
						return fmt.Errorf("log_level %d: want -1..3", v.Int)
					}
					return nil
				},
				Set: func(v core.Val) error { a.logLevel.Store(v.Int); return nil },
				Get: func() core.Val { return core.Int(int(a.logLevel.Load())) }},
			table("db_table_acc", "acc", "table of accounted transactions", &a.accTable),
			table("db_table_missed_calls", "missed_calls", "table of missed calls", &a.missedTable),
			boolP("cdr_enable", 0, "1: a CDR (start, end, duration) for every answered dialog when it ends (needs dialog and dlg_manage)", &a.cdrEnable),
			boolP("cdr_log_enable", 1, "1: CDRs go to the log (ACC: CDR)", &a.cdrLogEnable),
			table("cdrs_table", "", "table CDRs are written to too (Kamailio's acc_cdrs); \"\": none", &a.cdrsTable),
		},
		Funcs: []core.Func{
			{Name: "acc_log_request", Args: s1, Ret: core.RetInt, Routes: core.RouteRequest | core.RouteFailure | core.RouteBranch,
				Doc: "(comment) log the current request now (ACC: request accounted); a comment \"404 Not here\" gives code and reason. 1 ok",
				Fn: func(m *core.Msg, args []core.Val) (core.Val, error) {
					r, err := requestRecord(m, args[0].Str)
					if err != nil {
						return core.Null, err
					}
					a.log("ACC: request accounted: ", r)
					return core.Int(1), nil
				}},
			{Name: "acc_db_request", Args: []core.ArgType{core.ArgStr, core.ArgStr}, Ret: core.RetInt, Routes: core.RouteRequest | core.RouteFailure | core.RouteBranch,
				Doc: "(comment, table) write the current request to table now (acc schema); 1 ok, -1 database error",
				Fn: func(m *core.Msg, args []core.Val) (core.Val, error) {
					if !core.ValidSQLName(args[1].Str) {
						return core.Null, fmt.Errorf("acc_db_request: %q is not a table name", args[1].Str)
					}
					r, err := requestRecord(m, args[0].Str)
					if err != nil {
						return core.Null, err
					}
					return core.IntRet(a.insert(args[1].Str, r) == nil), nil
				}},
		},
		Init:  a.init,
		Start: a.startWriter,
		Stop:  a.stop,
	})
}

func (a *Acc) init() error {
	t, err := tm.Of(a.env)
	if err != nil {
		return fmt.Errorf("acc: %w", err)
	}
	if a.env.DB != nil {
		a.db = a.env.DB
		schemas := []core.TableSchema{recordTable(*a.accTable.Load(), AccVersion), recordTable(*a.missedTable.Load(), MissedVersion)}
		if t := *a.cdrsTable.Load(); t != "" {
			schemas = append(schemas, cdrsSchema(t))
		}
		for _, s := range schemas {
			if err := core.EnsureTable(a.db, s); err != nil {
				return fmt.Errorf("acc: %w", err)
			}
		}
	} else if a.dbFlag.Load() >= 0 || a.dbMissedFlag.Load() >= 0 {
		a.env.Log.Warn("acc: db_flag/db_missed_flag set but kamd has no database (--db): records go nowhere")
	}
	t.OnReplyOut(a.onReplyOut)
	if a.cdrEnable.Load() {
		d := dialog.Of(a.env)
		if d == nil {
			return fmt.Errorf("acc: cdr_enable needs the dialog module")
		}
		d.OnEnd(a.cdr)
	}
	return nil
}

func flagSet(flags uint64, f int64) bool { return f >= 0 && flags&(1<<uint(f)) != 0 }

// onReplyOut accounts a transaction when its final reply goes upstream
// (Kamailio's TMCB_RESPONSE_OUT / TMCB_ON_FAILURE).
func (a *Acc) onReplyOut(ev *tm.ReplyOut) {
	code := ev.Res.StatusCode
	if code < 200 || ev.Req.IsCancel() {
		return
	}
	logF, dbF := flagSet(ev.Flags, a.logFlag.Load()), flagSet(ev.Flags, a.dbFlag.Load())
	logM, dbM := flagSet(ev.Flags, a.logMissedFlag.Load()), flagSet(ev.Flags, a.dbMissedFlag.Load())
	failed := code >= 300
	if failed && !flagSet(ev.Flags, a.failedFlag.Load()) {
		logF, dbF = false, false
	}
	if !logF && !dbF && !(failed && (logM || dbM)) {
		return
	}
	r := replyRecord(ev.Req, ev.Res, a.env.Clock.Now())
	if logF {
		a.log("ACC: transaction answered: ", r)
	}
	if dbF {
		a.enqueue(job{table: *a.accTable.Load(), r: r})
	}
	if failed && logM {
		a.log("ACC: call missed: ", r)
	}
	if failed && dbM {
		a.enqueue(job{table: *a.missedTable.Load(), r: r})
	}
}

func tag(p sip.HeaderParams) string {
	if p == nil {
		return ""
	}
	t, _ := p.Get("tag")
	return t
}

func baseRecord(req *sip.Request, at time.Time) record {
	r := record{method: string(req.Method), at: at}
	if f := req.From(); f != nil {
		r.fromTag = tag(f.Params)
	}
	if t := req.To(); t != nil {
		r.toTag = tag(t.Params)
	}
	if c := req.CallID(); c != nil {
		r.callID = string(*c)
	}
	return r
}

func replyRecord(req *sip.Request, res *sip.Response, at time.Time) record {
	r := baseRecord(req, at)
	if t := res.To(); t != nil && tag(t.Params) != "" {
		r.toTag = tag(t.Params)
	}
	r.code, r.reason = strconv.Itoa(res.StatusCode), res.Reason
	return r
}

// requestRecord is the record of acc_log_request / acc_db_request: a
// comment that starts with a three-digit code gives sip_code and
// sip_reason, else it is all reason (Kamailio's acc_comm).
func requestRecord(m *core.Msg, comment string) (record, error) {
	if m.Req == nil {
		return record{}, core.ErrNoRequest
	}
	if err := core.CheckText("acc comment", comment); err != nil {
		return record{}, err
	}
	r := baseRecord(m.Req, m.Env.Clock.Now())
	if len(comment) >= 3 && isDigits(comment[:3]) && (len(comment) == 3 || comment[3] == ' ') {
		r.code, r.reason = comment[:3], strings.TrimSpace(comment[3:])
	} else {
		r.reason = comment
	}
	return r, nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// level maps Kamailio's log_level numbers to slog.
func (a *Acc) level() slog.Level {
	switch a.logLevel.Load() {
	case -1:
		return slog.LevelError
	case 0:
		return slog.LevelWarn
	case 3:
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// log writes Kamailio's ACC line: "ACC: transaction answered:
// timestamp=...;method=...;from_tag=...;to_tag=...;call_id=...;code=...;reason=...".
func (a *Acc) log(prefix string, r record) {
	a.env.Log.Log(nil, a.level(), prefix+"timestamp="+strconv.FormatInt(r.at.Unix(), 10)+";method="+r.method+
		";from_tag="+r.fromTag+";to_tag="+r.toTag+";call_id="+r.callID+";code="+r.code+";reason="+r.reason)
}

const timeFormat = "2006-01-02 15:04:05"

func (a *Acc) insert(table string, r record) error {
	if a.db == nil {
		a.env.Log.Warn("acc: no database (kamd --db): record not written", "table", table, "call_id", r.callID)
		return fmt.Errorf("no database")
	}
	err := a.execJob(a.db, job{table: table, r: r})
	if err != nil {
		a.env.Log.Error("acc: cannot write the record", "table", table, "call_id", r.callID, "err", err)
	}
	return err
}

// cdr writes the CDR of an answered dialog that ended.
func (a *Acc) cdr(d dialog.Info) {
	dur := d.End.Sub(d.Start).Seconds()
	if dur < 0 {
		dur = 0
	}
	if a.cdrLogEnable.Load() {
		a.env.Log.Log(nil, a.level(), "ACC: CDR: start_time="+d.Start.UTC().Format(timeFormat)+";end_time="+d.End.UTC().Format(timeFormat)+
			";duration="+strconv.FormatFloat(dur, 'f', 3, 64)+";call_id="+d.CallID+";from_tag="+d.FromTag+";to_tag="+d.ToTag)
	}
	if t := *a.cdrsTable.Load(); t != "" && a.db != nil {
		a.enqueue(job{table: t, cdr: &cdrRow{start: d.Start, end: d.End, dur: dur, callID: d.CallID}})
	}
}

// job is one row for the writer: a record, or a CDR when cdr is set.
type job struct {
	table string
	r     record
	cdr   *cdrRow
}

type cdrRow struct {
	start, end time.Time
	dur        float64
	callID     string
}

const queueSize = 8192

// startWriter starts the goroutine that writes queued rows.
func (a *Acc) startWriter(_ context.Context) error {
	if a.db == nil {
		return nil
	}
	a.qmu.Lock()
	a.q, a.qDone, a.closed = make(chan job, queueSize), make(chan struct{}), false
	q, done := a.q, a.qDone
	a.qmu.Unlock()
	go a.writer(q, done)
	return nil
}

// enqueue hands a row to the writer; a full queue makes the caller wait
// (accounting is not dropped). Without a database the row is logged lost.
func (a *Acc) enqueue(j job) {
	a.qmu.RLock()
	defer a.qmu.RUnlock()
	if a.q == nil || a.closed {
		a.env.Log.Warn("acc: no database (kamd --db): record not written", "table", j.table, "call_id", j.r.callID)
		return
	}
	a.q <- j
}

// stop writes what is queued and ends the writer.
func (a *Acc) stop() {
	a.qmu.Lock()
	if a.q == nil || a.closed {
		a.qmu.Unlock()
		return
	}
	a.closed = true
	close(a.q)
	done := a.qDone
	a.qmu.Unlock()
	<-done
}

func (a *Acc) writer(q chan job, done chan struct{}) {
	defer close(done)
	batch := make([]job, 0, 256)
	for j := range q {
		batch = append(batch[:0], j)
	more:
		for len(batch) < cap(batch) {
			select {
			case j, ok := <-q:
				if !ok {
					break more
				}
				batch = append(batch, j)
			default:
				break more
			}
		}
		a.writeBatch(batch)
	}
}

// writeBatch writes rows in one transaction; if it fails, each row is
// tried alone so one bad row (a dropped table) does not lose the others.
func (a *Acc) writeBatch(batch []job) {
	tx, err := a.db.Begin()
	if err == nil {
		// One prepared statement per table and batch: SQLite compiles
		// each INSERT text once instead of once per row.
		stmts := map[string]*sql.Stmt{}
		for _, j := range batch {
			key := j.table
			if j.cdr != nil {
				key += "\x00cdr"
			}
			st := stmts[key]
			if st == nil {
				if st, err = tx.Prepare(insertSQL(j)); err != nil {
					break
				}
				stmts[key] = st
			}
			if _, err = st.Exec(jobArgs(j)...); err != nil {
				break
			}
		}
		if err == nil {
			err = tx.Commit()
		} else {
			_ = tx.Rollback()
		}
	}
	if err == nil {
		return
	}
	for _, j := range batch {
		if err := a.execJob(a.db, j); err != nil {
			a.env.Log.Error("acc: cannot write the record", "table", j.table, "call_id", j.r.callID, "err", err)
		}
	}
}

type execer interface {
	Exec(query string, args ...any) (sql.Result, error)
}

func (a *Acc) execJob(db execer, j job) error {
	_, err := db.Exec(insertSQL(j), jobArgs(j)...)
	return err
}

func insertSQL(j job) string {
	if j.cdr != nil {
		return `INSERT INTO ` + j.table + ` (start_time, end_time, duration) VALUES (?, ?, ?)`
	}
	return `INSERT INTO ` + j.table + ` (method, from_tag, to_tag, callid, sip_code, sip_reason, time) VALUES (?, ?, ?, ?, ?, ?, ?)`
}

func jobArgs(j job) []any {
	if c := j.cdr; c != nil {
		return []any{c.start.UTC().Format(timeFormat), c.end.UTC().Format(timeFormat), c.dur}
	}
	r := j.r
	return []any{r.method, r.fromTag, r.toTag, r.callID, r.code, r.reason, r.at.UTC().Format(timeFormat)}
}

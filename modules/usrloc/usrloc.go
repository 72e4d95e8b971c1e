// Package usrloc is Kamailio's usrloc module: the user location store the
// registrar writes and looks up. Contacts live in memory, indexed by AoR in
// sharded maps (one lock per shard); with db_mode 1 (write-through) or 2
// (write-back on the timer) they are kept in Kamailio's `location` table
// and loaded from it on start. One timer (env.Clock) removes expired
// contacts and, with db_mode 2, flushes changes.
package usrloc

import (
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kamgo/kamgo/modules/core"
)

func init() { core.Register(New) }

// DB modes (Kamailio's db_mode values).
const (
	NoDB         = 0
	WriteThrough = 1
	WriteBack    = 2
	DBOnly       = 3 // not implemented: refused at load
)

// Contact states, as ul.dump shows them.
const (
	StateNew   = "CS_NEW"
	StateSync  = "CS_SYNC"
	StateDirty = "CS_DIRTY"
)

// MethodsAll is the methods bitmask of a contact that did not say (Kamailio's ALL).
const MethodsAll = 0xFFFFFFFF

// Contact is one registered binding of an AoR.
type Contact struct {
	AoR      string
	Contact  string // the Contact URI as registered
	Received string // "sip:ip:port;transport=x" when the UA is behind NAT
	Path     string
	// Expires is when the binding ends; zero means permanent.
	Expires      time.Time
	Q            int // q × 1000; -1 unspecified
	CallID       string
	CSeq         int
	LastModified time.Time
	Flags        int
	CFlags       int
	UserAgent    string
	Socket       string // "udp:127.0.0.1:5060"
	Methods      int64
	Ruid         string
	Instance     string
	RegID        int
	ServerID     int
	ConnID       int
	Keepalive    int
	// State is CS_NEW, CS_SYNC or CS_DIRTY (set by usrloc).
	State string
}

// Valid is Kamailio's VALID_CONTACT: permanent or not yet expired.
func (c *Contact) Valid(now time.Time) bool {
	return c.Expires.IsZero() || c.Expires.After(now)
}

// ExpiresIn is the remaining lifetime in seconds (0 permanent or expired).
func (c *Contact) ExpiresIn(now time.Time) int {
	if c.Expires.IsZero() || !c.Expires.After(now) {
		return 0
	}
	return int((c.Expires.Sub(now) + time.Second - 1) / time.Second)
}

// CheckContact is what usrloc demands of a binding before storing it and
// what registrar demands before echoing one: every field that goes back
// into a SIP header (Contact, Received, Path, +sip.instance) holds no CR,
// LF or NUL, the Contact URI re-parses to itself, and the instance is a
// header param value (issue 16: a Contact with a bare LF was stored and
// split the 200's Contact header in two). The other text fields (Call-ID,
// User-Agent) hold no CR, LF or NUL either.
func CheckContact(c *Contact) error {
	for _, f := range [...]struct{ what, v string }{
		{"contact", c.Contact}, {"received", c.Received}, {"path", c.Path},
		{"instance", c.Instance}, {"call-id", c.CallID}, {"user agent", c.UserAgent},
	} {
		if err := core.CheckText(f.what, f.v); err != nil {
			return errorf("%v", err)
		}
	}
	u, err := core.ParseURI(c.Contact)
	if err != nil {
		return errorf("contact: %v", err)
	}
	if u.String() != c.Contact {
		return errorf("contact %q does not re-parse to itself", c.Contact)
	}
	if c.Instance != "" {
		if err := core.CheckParam("+sip.instance", c.Instance); err != nil {
			return errorf("%v", err)
		}
	}
	return nil
}

func sameAsOld(old []Contact, c *Contact) bool {
	for i := range old {
		if old[i].Ruid == c.Ruid {
			return old[i] == *c
		}
	}
	return false
}

type record struct {
	aor      string
	contacts []Contact
}

type shard struct {
	mu   sync.Mutex
	recs map[string]*record
}

// Domain is one location table (Kamailio's udomain): "location" by default.
type Domain struct {
	ul     *UL
	name   string
	shards []shard
}

// UL is the usrloc instance of one Env.
type UL struct {
	env *core.Env

	dbMode        atomic.Int64
	timerInterval atomic.Int64
	useDomain     atomic.Bool
	natBflag      atomic.Int64
	hashSize      atomic.Int64

	mu      sync.Mutex
	domains core.Ordered[*Domain] // in order of first use
	db      *sql.DB               // env.DB, or opened here from env.DBPath
	ownDB   bool

	inited atomic.Bool
	mode   atomic.Int64 // db_mode in effect (fixed at Init)

	contacts atomic.Int64 // contacts in memory (arms the timer)

	pmu      sync.Mutex
	pending  map[string][]string // db_mode 2: ruids to delete, by table
	flushMu  sync.Mutex          // serialises write-back flushes
	ruidBase string
	ruidSeq  atomic.Uint64

	tmu     sync.Mutex
	timer   core.Timer
	armed   bool
	stopped bool

	expiredCtr *core.Counter
	dbErrors   *core.Counter // usrloc:db_write_errors (write-through refused)
}

var instances core.PerEnv[*UL]

// Of returns the usrloc instance bound to env (nil if none was built).
func Of(env *core.Env) *UL { return instances.Of(env) }

// New builds the usrloc module.
func New(env *core.Env) *core.Module {
	u := &UL{env: env, pending: map[string][]string{}}
	u.ruidBase = fmt.Sprintf("uloc-%x-%x", env.Clock.Now().Unix(), rand.Uint32())
	u.expiredCtr = env.Stats.Counter("usrloc", "expired_contacts")
	u.dbErrors = env.Stats.Counter("usrloc", "db_write_errors")
	instances.Set(env, u)
	return core.ApplyDefaults(u.module())
}

func errorf(format string, a ...any) error { return fmt.Errorf("usrloc: "+format, a...) }

// Mode is the db_mode in effect.
func (u *UL) Mode() int {
	if u.inited.Load() {
		return int(u.mode.Load())
	}
	return int(u.dbMode.Load())
}

// UseDomain is the use_domain modparam: AoRs are user@domain, else user.
func (u *UL) UseDomain() bool { return u.useDomain.Load() }

// NatBflag is the nat_bflag modparam (-1 unset).
func (u *UL) NatBflag() int { return int(u.natBflag.Load()) }

// Now is the env clock.
func (u *UL) Now() time.Time { return u.env.Clock.Now() }

// AoR builds the AoR key from a URI's user and host, as use_domain says.
// The host is case-insensitive; the user is kept as is.
func (u *UL) AoR(user, host string) string {
	if u.UseDomain() {
		return user + "@" + strings.ToLower(host)
	}
	return user
}

// FixAoR normalises an AoR given by an operator ("alice@example.com",
// "sip:alice@example.com" or "alice"), as Kamailio's rpc_fix_aor.
func (u *UL) FixAoR(aor string) (string, error) {
	a := aor
	if l := strings.ToLower(a); strings.HasPrefix(l, "sip:") {
		a = a[4:]
	} else if strings.HasPrefix(l, "sips:") {
		a = a[5:]
	}
	user, host, ok := strings.Cut(a, "@")
	if u.UseDomain() {
		if !ok || host == "" {
			return "", errors.New("Domain missing in AOR")
		}
		if i := strings.IndexAny(host, ";?>"); i >= 0 {
			host = host[:i]
		}
		return user + "@" + strings.ToLower(host), nil
	}
	return user, nil
}

// Domain returns the named location table, creating it (and with a
// database its SQL table, loading its rows) on first use.
func (u *UL) Domain(name string) (*Domain, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if d, _ := u.domains.Get(name); d != nil {
		return d, nil
	}
	if !core.ValidSQLName(name) {
		return nil, errorf("invalid table name %q", name)
	}
	d := u.newDomain(name)
	if u.inited.Load() && u.Mode() != NoDB {
		if err := u.loadDomain(d); err != nil {
			return nil, err
		}
	}
	u.domains.Add(name, d, false)
	return d, nil
}

// FindDomain returns an existing table (nil if never used).
func (u *UL) FindDomain(name string) *Domain {
	u.mu.Lock()
	defer u.mu.Unlock()
	d, _ := u.domains.Get(name)
	return d
}

// Domains lists the tables in order of first use.
func (u *UL) Domains() []*Domain {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.domains.Values()
}

func (u *UL) newDomain(name string) *Domain {
	n := 1 << u.hashSize.Load()
	return &Domain{ul: u, name: name, shards: make([]shard, n)}
}

// Name is the table name.
func (d *Domain) Name() string { return d.name }

// Size is the number of hash slots.
func (d *Domain) Size() int { return len(d.shards) }

// HashID is the AoR's hash (ul.dump's HashID).
func HashID(aor string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(aor))
	return h.Sum32()
}

func (d *Domain) shard(aor string) *shard {
	return &d.shards[HashID(aor)%uint32(len(d.shards))]
}

// Get returns a copy of the AoR's contacts (expired ones included, as
// stored), or nil when the AoR has no record.
func (d *Domain) Get(aor string) []Contact {
	s := d.shard(aor)
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.recs[aor]
	if r == nil {
		return nil
	}
	return append([]Contact(nil), r.contacts...)
}

// Lookup returns the AoR's valid contacts, best first: highest q, then the
// most recently modified.
func (d *Domain) Lookup(aor string) []Contact {
	now := d.ul.Now()
	all := d.Get(aor)
	out := all[:0]
	for _, c := range all {
		if c.Valid(now) {
			out = append(out, c)
		}
	}
	SortContacts(out)
	return out
}

// SortContacts orders contacts by q, highest first (an unspecified q,
// -1, ranks lowest as in Kamailio), then the most recently modified first.
func SortContacts(cs []Contact) {
	sort.SliceStable(cs, func(i, j int) bool {
		if cs[i].Q != cs[j].Q {
			return cs[i].Q > cs[j].Q
		}
		return cs[i].LastModified.After(cs[j].LastModified)
	})
}

// Update changes an AoR's contacts atomically: fn gets a copy of the
// current contacts and returns the new list (or an error, leaving the
// record untouched). Contacts without a Ruid are new; a Ruid that is gone
// is deleted. With db_mode 1 the changes are written before Update
// returns (under the AoR's slot lock, never across network I/O); with
// db_mode 2 they are marked for the next flush.
//
// Contacts with FlMem in Flags are never written to the database.
func (d *Domain) Update(aor string, fn func(cs []Contact) ([]Contact, error)) ([]Contact, error) {
	u := d.ul
	s := d.shard(aor)
	s.mu.Lock()
	defer s.mu.Unlock()
	var old []Contact
	if r := s.recs[aor]; r != nil {
		old = r.contacts
	}
	next, err := fn(append([]Contact(nil), old...))
	if err != nil {
		return nil, err
	}
	for i := range next {
		// Unchanged old bindings (loaded from a database) are left alone.
		if !sameAsOld(old, &next[i]) {
			if err := CheckContact(&next[i]); err != nil {
				return nil, err
			}
		}
	}
	now := u.Now()
	oldBy := make(map[string]*Contact, len(old))
	for i := range old {
		oldBy[old[i].Ruid] = &old[i]
	}
	mode := u.Mode()
	var ins, upd []*Contact
	keep := make(map[string]bool, len(next))
	for i := range next {
		c := &next[i]
		c.AoR = aor
		o := c.Ruid != "" && oldBy[c.Ruid] != nil
		if !o {
			if c.Ruid == "" {
				c.Ruid = u.NewRuid()
			}
			if c.LastModified.IsZero() {
				c.LastModified = now
			}
			c.State = StateNew
			ins = append(ins, c)
		} else if prev := oldBy[c.Ruid]; !sameContact(prev, c) {
			if prev.State == StateNew && mode == WriteBack {
				c.State = StateNew
			} else {
				c.State = StateDirty
			}
			upd = append(upd, c)
		} else {
			c.State = prev.State
		}
		keep[c.Ruid] = true
	}
	var del []*Contact
	for i := range old {
		if !keep[old[i].Ruid] {
			del = append(del, &old[i])
		}
	}
	ins, upd, del = dbOnly(ins), dbOnly(upd), dbOnly(del)
	switch {
	case mode == WriteThrough:
		if err := u.writeThrough(d.name, ins, upd, del); err != nil {
			// Never claim a binding is saved when it is not: the record
			// stays as it was, and the caller (registrar: 500) says so.
			u.env.Log.Error("usrloc: write-through failed; the change is refused", "table", d.name, "aor", aor, "err", err)
			u.dbErrors.Inc()
			return nil, fmt.Errorf("usrloc: writing %s to table %s: %w", aor, d.name, err)
		}
		for _, c := range ins {
			c.State = StateSync
		}
		for _, c := range upd {
			c.State = StateSync
		}
	case mode == WriteBack:
		for _, c := range del {
			if c.State != StateNew {
				u.queueDelete(d.name, c.Ruid)
			}
		}
	}
	if s.recs == nil {
		s.recs = map[string]*record{}
	}
	u.contacts.Add(int64(len(next) - len(old)))
	if len(next) == 0 {
		delete(s.recs, aor)
	} else {
		s.recs[aor] = &record{aor: aor, contacts: next}
	}
	if len(next) > 0 || (mode == WriteBack && (len(del) > 0)) {
		u.arm()
	}
	return append([]Contact(nil), next...), nil
}

// FlMem marks a contact kept in memory only (Kamailio's FL_MEM).
const FlMem = 1

func dbOnly(cs []*Contact) []*Contact {
	out := cs[:0]
	for _, c := range cs {
		if c.Flags&FlMem == 0 {
			out = append(out, c)
		}
	}
	return out
}

// sameContact ignores State.
func sameContact(a, b *Contact) bool {
	x, y := *a, *b
	x.State, y.State = "", ""
	return x == y
}

// DeleteAoR removes every contact of the AoR; the number removed.
func (d *Domain) DeleteAoR(aor string) int {
	n := 0
	_, _ = d.Update(aor, func(cs []Contact) ([]Contact, error) {
		n = len(cs)
		return nil, nil
	})
	return n
}

// AoRs visits every record under its slot lock (contacts as stored).
func (d *Domain) AoRs(fn func(aor string, cs []Contact)) {
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		keys := make([]string, 0, len(s.recs))
		for k := range s.recs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fn(k, s.recs[k].contacts)
		}
		s.mu.Unlock()
	}
}

// NewRuid is a unique record id ("uloc-<start>-<rand>-<n>", as Kamailio's sruid).
func (u *UL) NewRuid() string {
	return fmt.Sprintf("%s-%d", u.ruidBase, u.ruidSeq.Add(1))
}

func (u *UL) queueDelete(table, ruid string) {
	u.pmu.Lock()
	u.pending[table] = append(u.pending[table], ruid)
	u.pmu.Unlock()
}

// ---- the timer: expiry and write-back ----

func (u *UL) arm() {
	u.tmu.Lock()
	defer u.tmu.Unlock()
	if u.armed || u.stopped {
		return
	}
	u.armed = true
	u.timer = u.env.Clock.AfterFunc(time.Duration(u.timerInterval.Load())*time.Second, u.tick)
}

func (u *UL) tick() {
	u.tmu.Lock()
	u.armed = false
	u.timer = nil
	u.tmu.Unlock()
	u.Sweep()
	if u.Mode() == WriteBack {
		if err := u.Flush(); err != nil {
			u.env.Log.Error("usrloc: write-back flush failed", "err", err)
		}
	}
	if u.contacts.Load() > 0 || u.hasPending() {
		u.arm()
	}
}

func (u *UL) hasPending() bool {
	u.pmu.Lock()
	defer u.pmu.Unlock()
	for _, p := range u.pending {
		if len(p) > 0 {
			return true
		}
	}
	return false
}

// Expired is one contact removed by the sweep.
type Expired struct {
	Table string
	Contact
}

// Sweep removes expired contacts now and emits a "usrloc" event
// {event: "contact-expired", table, aor, contact, ruid} for each.
func (u *UL) Sweep() []Expired {
	now := u.Now()
	mode := u.Mode()
	var gone []Expired
	for _, d := range u.Domains() {
		for i := range d.shards {
			s := &d.shards[i]
			s.mu.Lock()
			for aor, r := range s.recs {
				kept := r.contacts[:0:0]
				for _, c := range r.contacts {
					if c.Valid(now) {
						kept = append(kept, c)
						continue
					}
					gone = append(gone, Expired{Table: d.name, Contact: c})
					if mode == WriteBack && c.State != StateNew && c.Flags&FlMem == 0 {
						u.queueDelete(d.name, c.Ruid)
					}
				}
				u.contacts.Add(int64(len(kept) - len(r.contacts)))
				if len(kept) == 0 {
					delete(s.recs, aor)
				} else {
					r.contacts = kept
				}
			}
			s.mu.Unlock()
		}
	}
	if mode == WriteThrough && len(gone) > 0 {
		if err := u.deleteExpired(gone); err != nil { // FL_MEM rows are absent: no harm
			u.env.Log.Error("usrloc: deleting expired contacts failed", "err", err)
		}
	}
	for _, g := range gone {
		u.expiredCtr.Inc()
		u.env.Emit("usrloc", map[string]any{"event": "contact-expired", "table": g.Table, "aor": g.AoR, "contact": g.Contact.Contact, "ruid": g.Ruid})
	}
	return gone
}

// Flush writes pending changes to the database (db_mode 2; ul.flush).
func (u *UL) Flush() error {
	if u.Mode() == NoDB || u.db == nil {
		return nil
	}
	u.flushMu.Lock()
	defer u.flushMu.Unlock()
	type batch struct {
		ins, upd []Contact
		del      []string
	}
	work := map[string]*batch{}
	u.pmu.Lock()
	for t, p := range u.pending {
		work[t] = &batch{del: p}
	}
	u.pending = map[string][]string{}
	u.pmu.Unlock()
	for _, d := range u.Domains() {
		b := work[d.name]
		if b == nil {
			b = &batch{}
			work[d.name] = b
		}
		for i := range d.shards {
			s := &d.shards[i]
			s.mu.Lock()
			for _, r := range s.recs {
				for j := range r.contacts {
					c := &r.contacts[j]
					if c.Flags&FlMem != 0 {
						continue
					}
					switch c.State {
					case StateNew:
						b.ins = append(b.ins, *c)
					case StateDirty:
						b.upd = append(b.upd, *c)
					default:
						continue
					}
					c.State = StateSync
				}
			}
			s.mu.Unlock()
		}
	}
	var errs []error
	for t, b := range work {
		if len(b.ins)+len(b.upd)+len(b.del) == 0 {
			continue
		}
		if err := u.writeBatch(t, b.ins, b.upd, b.del); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (u *UL) stop() {
	u.tmu.Lock()
	u.stopped = true
	if u.timer != nil {
		u.timer.Stop()
		u.timer = nil
	}
	u.armed = false
	u.tmu.Unlock()
	if u.Mode() == WriteBack {
		if err := u.Flush(); err != nil {
			u.env.Log.Error("usrloc: flush on shutdown failed", "err", err)
		}
	}
	u.mu.Lock()
	if u.ownDB && u.db != nil {
		_ = u.db.Close()
		u.db = nil
	}
	u.mu.Unlock()
	instances.Drop(u.env, u)
}

// init opens the database side: tables, version rows, load.
func (u *UL) start() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.inited.Load() {
		return nil
	}
	mode := int(u.dbMode.Load())
	u.mode.Store(int64(mode))
	if mode != NoDB {
		u.db = u.env.DB
		if u.db == nil {
			if u.env.DBPath == "" {
				return errorf("db_mode %d needs a database (kamd --db)", mode)
			}
			db, err := core.OpenDB(u.env.DBPath)
			if err != nil {
				return errorf("%v", err)
			}
			u.db, u.ownDB = db, true
		}
	}
	if _, ok := u.domains.Get("location"); !ok {
		u.domains.Add("location", u.newDomain("location"), true)
	}
	if mode != NoDB {
		for _, d := range u.domains.Values() {
			if err := u.loadDomain(d); err != nil {
				return err
			}
		}
	}
	u.inited.Store(true)
	if u.contacts.Load() > 0 {
		u.arm() // takes tmu only
	}
	return nil
}

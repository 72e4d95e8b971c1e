package htable

import (
	"hash/maphash"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kamgo/kamgo/modules/core"
)

type item struct {
	val    core.Val
	expire time.Time // zero: never
}

func (it *item) expired(now time.Time) bool {
	return !it.expire.IsZero() && !now.Before(it.expire)
}

type shard struct {
	mu    sync.Mutex
	items map[string]*item
}

// Table is one named hash table: sharded maps, each behind its own mutex.
type Table struct {
	def    atomic.Pointer[TableDef]
	seed   maphash.Seed
	shards []shard
}

// Expired is an item removed because its expire time passed.
type Expired struct {
	Table, Key string
	Val        core.Val
}

func newTable(d *TableDef) *Table {
	t := &Table{seed: maphash.MakeSeed(), shards: make([]shard, d.slots())}
	for i := range t.shards {
		t.shards[i].items = map[string]*item{}
	}
	t.def.Store(d)
	return t
}

// Def is the table's current definition.
func (t *Table) Def() *TableDef { return t.def.Load() }

func (t *Table) shardOf(key string) *shard {
	return &t.shards[maphash.String(t.seed, key)%uint64(len(t.shards))]
}

func (t *Table) autoExpire(now time.Time) time.Time {
	if ae := t.Def().AutoExpire; ae > 0 {
		return now.Add(time.Duration(ae) * time.Second)
	}
	return time.Time{}
}

// lookup returns the live item under the shard lock (caller holds it); an
// expired item is removed and reported in *gone.
func (t *Table) lookup(s *shard, key string, now time.Time, gone *[]Expired) *item {
	it := s.items[key]
	if it == nil {
		return nil
	}
	if it.expired(now) {
		delete(s.items, key)
		*gone = append(*gone, Expired{Table: t.Def().Name, Key: key, Val: it.val})
		return nil
	}
	return it
}

// Get returns the value and whether the item exists.
func (t *Table) Get(key string, now time.Time, gone *[]Expired) (core.Val, time.Time, bool) {
	s := t.shardOf(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	it := t.lookup(s, key, now, gone)
	if it == nil {
		return core.Null, time.Time{}, false
	}
	return it.val, it.expire, true
}

// Set stores v. expire: nil applies the table's autoexpire (kept on update
// unless updateexpire=1); non-nil sets it (zero time: never). It reports
// whether the item now has an expire time.
func (t *Table) Set(key string, v core.Val, expire *time.Time, now time.Time, gone *[]Expired) bool {
	s := t.shardOf(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	it := t.lookup(s, key, now, gone)
	if it == nil {
		it = &item{expire: t.autoExpire(now)}
		s.items[key] = it
	} else if t.Def().UpdateExpire {
		it.expire = t.autoExpire(now)
	}
	if expire != nil {
		it.expire = *expire
	}
	it.val = v
	return !it.expire.IsZero()
}

// SetExpire changes an existing item's expire time; false if absent.
func (t *Table) SetExpire(key string, expire time.Time, now time.Time, gone *[]Expired) bool {
	s := t.shardOf(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	it := t.lookup(s, key, now, gone)
	if it == nil {
		return false
	}
	it.expire = expire
	return true
}

// Add adds delta to an int item atomically (a missing item starts from
// initval, else 0) and returns the new value; ok is false for a str item.
func (t *Table) Add(key string, delta int64, now time.Time, gone *[]Expired) (n int64, ok, expiring bool) {
	s := t.shardOf(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	it := t.lookup(s, key, now, gone)
	if it == nil {
		d := t.Def()
		start := int64(0)
		if d.HasInitVal {
			start = d.InitVal
		}
		it = &item{val: core.Val{Kind: core.KInt, Int: start + delta}, expire: t.autoExpire(now)}
		s.items[key] = it
		return it.val.Int, true, !it.expire.IsZero()
	}
	if it.val.Kind != core.KInt {
		return 0, false, false
	}
	it.val.Int += delta
	if t.Def().UpdateExpire {
		it.expire = t.autoExpire(now)
	}
	return it.val.Int, true, !it.expire.IsZero()
}

// Delete removes the item; false if it was absent.
func (t *Table) Delete(key string) bool {
	s := t.shardOf(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.items[key]
	delete(s.items, key)
	return ok
}

// Match is a name/value matcher for the *_name / *_value functions.
type Match func(s string) bool

// NewMatch builds a matcher: eq, ne, re (Go RE2), sw (starts with).
func NewMatch(op, arg string, allowed string) (Match, error) {
	if !strings.Contains(","+allowed+",", ","+op+",") {
		return nil, errorf("unsupported match operator %q (want one of %s)", op, allowed)
	}
	switch op {
	case "eq":
		return func(s string) bool { return s == arg }, nil
	case "ne":
		return func(s string) bool { return s != arg }, nil
	case "sw":
		return func(s string) bool { return strings.HasPrefix(s, arg) }, nil
	case "re":
		re, err := core.CompileRegex(arg)
		if err != nil {
			return nil, errorf("%v", err)
		}
		return re.MatchString, nil
	}
	return nil, errorf("unsupported match operator %q", op)
}

// RemoveMatching deletes items whose name (byValue=false) or printed value
// matches; it returns how many were removed.
func (t *Table) RemoveMatching(match Match, byValue bool) int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for k, it := range s.items {
			if subj, ok := it.subject(k, byValue); ok && match(subj) {
				delete(s.items, k)
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// subject is what a name or value match looks at: the item's name, or its
// value when byValue (false for an int item, which no value match sees).
func (it *item) subject(name string, byValue bool) (string, bool) {
	if !byValue {
		return name, true
	}
	return it.val.Str, it.val.Kind == core.KStr
}

// Any reports whether a live item's name (or str value) matches.
func (t *Table) Any(match Match, byValue bool, now time.Time) bool {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for k, it := range s.items {
			if it.expired(now) {
				continue
			}
			if subj, ok := it.subject(k, byValue); ok && match(subj) {
				s.mu.Unlock()
				return true
			}
		}
		s.mu.Unlock()
	}
	return false
}

// Reset empties the table.
func (t *Table) Reset() {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		clear(s.items)
		s.mu.Unlock()
	}
}

// Sweep removes expired items, appending them to gone; it reports whether
// items with an expire time remain.
func (t *Table) Sweep(now time.Time, gone *[]Expired) (expiring bool) {
	name := t.Def().Name
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for k, it := range s.items {
			if it.expire.IsZero() {
				continue
			}
			if it.expired(now) {
				delete(s.items, k)
				*gone = append(*gone, Expired{Table: name, Key: k, Val: it.val})
				continue
			}
			expiring = true
		}
		s.mu.Unlock()
	}
	return expiring
}

// Entry is one item as the RPC shows it.
type Entry struct {
	Name   string
	Val    core.Val
	Expire time.Time
}

// Slot lists the live items of shard i, sorted by name.
func (t *Table) Slot(i int, now time.Time) []Entry {
	s := &t.shards[i]
	s.mu.Lock()
	out := make([]Entry, 0, len(s.items))
	for k, it := range s.items {
		if !it.expired(now) {
			out = append(out, Entry{Name: k, Val: it.val, Expire: it.expire})
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

// Len counts items (expired ones not yet swept included) per shard.
func (t *Table) lens() []int {
	out := make([]int, len(t.shards))
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		out[i] = len(s.items)
		s.mu.Unlock()
	}
	return out
}

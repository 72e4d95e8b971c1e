package usrloc

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kamgo/kamgo/modules/core"
)

// AoRsFrom visits the records from slot shard on, starting in that slot at
// the AoR from (inclusive; "" = the slot's first), in ul.dump's order (slot,
// then AoR), under each slot's lock, until fn returns false.
func (d *Domain) AoRsFrom(shard int, from string, fn func(shard int, aor string, cs []Contact) bool) {
	for i := max(shard, 0); i < len(d.shards); i++ {
		s := &d.shards[i]
		s.mu.Lock()
		keys := make([]string, 0, len(s.recs))
		for k := range s.recs {
			if i != shard || k >= from {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			if !fn(i, k, s.recs[k].contacts) {
				s.mu.Unlock()
				return
			}
		}
		s.mu.Unlock()
	}
}

// Counts returns the number of AoRs and the most AoRs in one slot (ul.dump's
// Stats), without visiting the records.
func (d *Domain) Counts() (records, maxSlot int) {
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		n := len(s.recs)
		s.mu.Unlock()
		records += n
		maxSlot = max(maxSlot, n)
	}
	return records, maxSlot
}

// dumpCursor is where a paged ul.dump resumes: the first AoR not yet shown.
type dumpCursor struct {
	domain string
	shard  int
	aor    string
}

func (c dumpCursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(c.domain + "\x00" + strconv.Itoa(c.shard) + "\x00" + c.aor))
}

func parseDumpCursor(s string) (dumpCursor, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return dumpCursor{}, false
	}
	f := strings.SplitN(string(b), "\x00", 3)
	if len(f) != 3 {
		return dumpCursor{}, false
	}
	n, err := strconv.Atoi(f[1])
	if err != nil || n < 0 {
		return dumpCursor{}, false
	}
	return dumpCursor{domain: f[0], shard: n, aor: f[2]}, true
}

// ulDump is ul.dump's result. It writes itself AoR by AoR into the RPC
// reply (which aborts at its byte bound), so a large table never exists
// whole as Go values; with a limit it stops after that many AoRs and names
// where to resume ("Next").
type ulDump struct {
	u     *UL
	brief bool
	limit int // 0: every AoR
	from  *dumpCursor
	now   time.Time
}

// WriteJSON writes {"Domains": [...], "Next": cursor} (Next only when more remain).
func (x *ulDump) WriteJSON(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.str(`{"Domains":[`)
	count := 0
	var next *dumpCursor
	skipping := x.from != nil
	first := true
	for _, d := range x.u.Domains() {
		shard, from := 0, ""
		if skipping {
			if d.name != x.from.domain {
				continue
			}
			skipping = false
			shard, from = x.from.shard, x.from.aor
		}
		if !first {
			ew.str(",")
		}
		first = false
		ew.str(`{"Domain":{"Domain":`)
		ew.json(d.name)
		ew.str(`,"Size":` + strconv.Itoa(d.Size()) + `,"AoRs":[`)
		n := 0
		d.AoRsFrom(shard, from, func(sh int, aor string, cs []Contact) bool {
			if ew.err != nil {
				return false
			}
			if x.limit > 0 && count == x.limit {
				next = &dumpCursor{domain: d.name, shard: sh, aor: aor}
				return false
			}
			if n > 0 {
				ew.str(",")
			}
			n++
			count++
			if x.brief {
				ew.json(map[string]any{"AoR": aor})
				return true
			}
			var a dumpAoR
			a.Info.AoR, a.Info.HashID = aor, HashID(aor)
			a.Info.Contacts = make([]dumpContactItem, len(cs))
			for i := range cs {
				a.Info.Contacts[i].Contact = toDumpContact(&cs[i], x.now)
			}
			ew.json(&a)
			return true
		})
		recs, maxSlot := d.Counts()
		ew.str(`],"Stats":{"Records":` + strconv.Itoa(recs) + `,"Max-Slots":` + strconv.Itoa(maxSlot) + `}}}`)
		if next != nil || ew.err != nil {
			break
		}
	}
	ew.str("]")
	if next != nil {
		ew.str(`,"Next":`)
		ew.json(next.String())
	}
	ew.str("}")
	return ew.err
}

// MarshalJSON makes the dump a plain JSON value for callers outside RPC.
func (x *ulDump) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	err := x.WriteJSON(&b)
	return b.Bytes(), err
}

// errWriter keeps the first write error (the RPC reply's bound) and stops.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) str(s string) {
	if e.err == nil {
		_, e.err = io.WriteString(e.w, s)
	}
}

func (e *errWriter) json(v any) {
	if e.err != nil {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		e.err = err
		return
	}
	_, e.err = e.w.Write(b)
}

// hasArg reports whether optional param i was supplied (and not null).
func hasArg(a core.RPCArgs, i int) bool {
	if h, ok := a.(interface{ Has(int) bool }); ok {
		return h.Has(i)
	}
	return i < a.Len()
}

// dumpContact is DumpContact as a struct, for the dump's speed (no map per
// contact): the same members, in the order encoding/json gives the map's.
type dumpContact struct {
	Address       string  `json:"Address"`
	CFlags        int     `json:"CFlags"`
	CSeq          int     `json:"CSeq"`
	CallID        string  `json:"Call-ID"`
	Expires       any     `json:"Expires"`
	Flags         int     `json:"Flags"`
	Instance      string  `json:"Instance"`
	Keepalive     int     `json:"Keepalive"`
	LastKeepalive int     `json:"Last-Keepalive"`
	LastModified  int64   `json:"Last-Modified"`
	Methods       int64   `json:"Methods"`
	Path          string  `json:"Path"`
	Q             float64 `json:"Q"`
	Received      string  `json:"Received"`
	RegID         int     `json:"Reg-Id"`
	Ruid          string  `json:"Ruid"`
	ServerID      int     `json:"Server-Id"`
	Socket        string  `json:"Socket"`
	State         string  `json:"State"`
	ConnID        int     `json:"Tcpconn-Id"`
	UserAgent     string  `json:"User-Agent"`
}

type dumpContactItem struct {
	Contact dumpContact `json:"Contact"`
}

type dumpAoR struct {
	Info struct {
		AoR      string            `json:"AoR"`
		Contacts []dumpContactItem `json:"Contacts"`
		HashID   uint32            `json:"HashID"`
	} `json:"Info"`
}

func toDumpContact(c *Contact, now time.Time) dumpContact {
	return dumpContact{
		Address: c.Contact, CFlags: c.CFlags, CSeq: c.CSeq, CallID: c.CallID, Expires: dumpExpires(c, now),
		Flags: c.Flags, Instance: notSet(c.Instance), Keepalive: c.Keepalive, LastModified: c.LastModified.Unix(),
		Methods: c.Methods, Path: notSet(c.Path), Q: qFloat(c.Q), Received: notSet(c.Received), RegID: c.RegID,
		Ruid: notSet(c.Ruid), ServerID: c.ServerID, Socket: notSet(c.Socket), State: c.State, ConnID: c.ConnID,
		UserAgent: notSet(c.UserAgent),
	}
}

// dumpExpires is a contact's Expires as ul.dump shows it.
func dumpExpires(c *Contact, now time.Time) any {
	switch {
	case c.Expires.IsZero():
		return "permanent"
	case !c.Expires.After(now):
		return "expired"
	}
	return c.ExpiresIn(now)
}

// ContactCounts returns the number of AoRs and of contacts (expired ones not
// yet swept included), one slot lock at a time, without encoding anything:
// what /metrics exports at every scrape, which a full ul.dump cannot do on a
// large table (507 past rpc_max_response_bytes).
func (d *Domain) ContactCounts() (aors, contacts int) {
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		aors += len(s.recs)
		for _, r := range s.recs {
			contacts += len(r.contacts)
		}
		s.mu.Unlock()
	}
	return aors, contacts
}

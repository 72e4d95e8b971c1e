package usrloc_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/kamgo/kamgo/modules/usrloc"
	"github.com/kamgo/kamgo/starlark/routetest"
)

// TestWriteThroughFailureRefused: with db_mode 1, a change whose row cannot
// be written is refused (an error, counted) and memory keeps the record as
// it was: nothing claims a binding the database does not have.
func TestWriteThroughFailureRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ul.db")
	clock := routetest.NewFixedClock(time.Unix(1700000000, 0))
	n := start(t, path, clock, map[string]int{"db_mode": 1})
	n.add(t, "alice", "sip:alice@192.0.2.10", 600)
	if _, err := n.env.DB.Exec(`DROP TABLE location`); err != nil {
		t.Fatal(err)
	}
	d, err := n.ul.Domain("location")
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Update("alice", func(cs []usrloc.Contact) ([]usrloc.Contact, error) {
		return append(cs, usrloc.Contact{Contact: "sip:alice@192.0.2.11", Expires: clock.Now().Add(time.Hour), Q: -1,
			CallID: "c2", CSeq: 1, Methods: usrloc.MethodsAll}), nil
	})
	if err == nil {
		t.Fatal("Update succeeded although its row could not be written")
	}
	if got := d.Lookup("alice"); len(got) != 1 || got[0].Contact != "sip:alice@192.0.2.10" {
		t.Fatalf("memory after the failed write: %+v, want the one saved contact", got)
	}
	_, err = d.Update("bob", func(cs []usrloc.Contact) ([]usrloc.Contact, error) {
		return append(cs, usrloc.Contact{Contact: "sip:bob@192.0.2.12", Expires: clock.Now().Add(time.Hour), Q: -1,
			CallID: "c3", CSeq: 1, Methods: usrloc.MethodsAll}), nil
	})
	if err == nil || len(d.Lookup("bob")) != 0 {
		t.Fatalf("a new AoR whose write failed: err %v, memory %+v", err, d.Lookup("bob"))
	}
	if v := n.env.Stats.Counter("usrloc", "db_write_errors").Value(); v != 2 {
		t.Errorf("usrloc:db_write_errors = %d, want 2", v)
	}
}

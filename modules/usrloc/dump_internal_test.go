package usrloc

import (
	"encoding/json"
	"testing"
	"time"
)

// TestDumpContactStructSameJSON: the dump's struct encodes exactly as
// DumpContact's map (ul.lookup's), byte for byte.
func TestDumpContactStructSameJSON(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for _, c := range []Contact{
		{Contact: "sip:a@192.0.2.1", Expires: now.Add(90 * time.Second), Q: 500, CallID: "c<1>&", CSeq: 7, LastModified: now,
			Flags: 1, CFlags: 2, UserAgent: "UA \"x\"", Socket: "udp:127.0.0.1:5060", Methods: MethodsAll, Ruid: "r1",
			Instance: "<urn:uuid:1>", RegID: 1, ServerID: 2, ConnID: 3, Keepalive: 1, State: "CS_SYNC", Path: "<sip:p;lr>", Received: "sip:1.2.3.4:5"},
		{Contact: "sip:b@x", Q: -1, State: "CS_NEW"},
		{Contact: "sip:c@x", Expires: now.Add(-time.Second), Q: 1000, UserAgent: "é\u2028"},
	} {
		want, _ := json.Marshal(DumpContact(&c, now))
		got, _ := json.Marshal(dumpContactItem{Contact: toDumpContact(&c, now)})
		if string(got) != string(want) {
			t.Errorf("struct:\n%s\nmap:\n%s", got, want)
		}
	}
}

// BenchmarkDumpContact compares the dump's struct with the map per contact.
func BenchmarkDumpContact(b *testing.B) {
	now := time.Unix(1_800_000_000, 0)
	c := Contact{Contact: "sip:a@192.0.2.1:5070;transport=udp", Expires: now.Add(90 * time.Second), Q: 500, CallID: "dfjrewr12386fd6-343@kamailio.mi",
		CSeq: 7, LastModified: now, UserAgent: "SIP Router MI Server", Methods: MethodsAll, Ruid: "uloc-6b13fd08-bcbb22a6-206", State: "CS_SYNC", Path: "<sip:edge.example.net;lr>"}
	b.Run("map", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			json.Marshal(DumpContact(&c, now))
		}
	})
	b.Run("struct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			json.Marshal(dumpContactItem{Contact: toDumpContact(&c, now)})
		}
	})
}

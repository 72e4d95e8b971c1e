package permissions_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/kamgo/kamgo/kamd/node"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/starlark/routetest"

	_ "github.com/kamgo/kamgo/modules/all"
)

const script = `
modparam("permissions", "db_url", "sqlite://DB")
modparam("permissions", "peer_tag_avp", "$avp(peer)")

def ksr_request_route():
    if KSR.permissions.allow_source_address(1) > 0:
        KSR.sl.sl_send_reply(200, "Trusted " + str(KSR.pv.get("$var(peer)")))
        return
    g = KSR.permissions.allow_source_address_group()
    if g > 0:
        KSR.sl.sl_send_reply(202, "Group " + str(g))
        return
    if KSR.permissions.allow_address(3, "gw.example.com", 0) > 0:
        KSR.sl.sl_send_reply(403, "Domain ok but source not")
        return
    KSR.sl.sl_send_reply(403, "Forbidden")
`

const tests = `
def reason(src):
    r = route.request(sip.options(src = src))
    return "%d %s" % (r.replies[0].code, r.replies[0].reason)

def test_address_groups():
    assert.eq(reason("192.0.2.10:5060"), "200 Trusted gw-a")
    assert.eq(reason("192.0.2.10:5070"), "202 Group 2")  # port 5060 only in group 1; the /24 of group 2 takes any port
    assert.eq(reason("10.1.2.3:1234"), "200 Trusted 0")  # 10.0.0.0/8 in group 1, no tag
    assert.eq(reason("[2001:db8::7]:5060"), "202 Group 4")
    assert.eq(reason("198.51.100.1:5060"), "403 Domain ok but source not")

def test_dumps():
    # "table" is Kamailio's hash slot of the address (core_hash & 127)
    assert.eq(state.rpc("permissions.addressDump"), [
        {"table": 123, "group": 1, "item": {"ip": "192.0.2.10", "port": 5060, "tag": "gw-a"}},
    ])
    assert.eq(state.rpc("permissions.subnetDump"), [
        {"id": 0, "group": 1, "item": {"ip": "10.0.0.0", "mask": 8, "port": 0, "tag": ""}},
        {"id": 1, "group": 2, "item": {"ip": "192.0.2.0", "mask": 24, "port": 0, "tag": ""}},
        {"id": 2, "group": 4, "item": {"ip": "2001:db8::", "mask": 64, "port": 0, "tag": "v6"}},
    ])
    assert.eq(state.rpc("permissions.addressReload"), {})
`

func TestPermissionsRoutes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "perm.db")
	db, err := core.OpenDB(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE address (id INTEGER PRIMARY KEY NOT NULL, grp INTEGER DEFAULT 1 NOT NULL, ip_addr VARCHAR(50) NOT NULL,
		mask INTEGER DEFAULT 32 NOT NULL, port SMALLINT DEFAULT 0 NOT NULL, tag VARCHAR(64));
		INSERT INTO version (table_name, table_version) VALUES ('address', 6);
		INSERT INTO address (grp, ip_addr, mask, port, tag) VALUES (1, '192.0.2.10', 32, 5060, 'gw-a'), (1, '10.0.0.0', 8, 0, NULL),
		(2, '192.0.2.0', 24, 0, NULL), (3, 'gw.example.com', 32, 0, NULL), (4, '2001:db8::', 64, 0, 'v6')`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	src := strings.Replace(script, "DB", path, 1)
	rep, err := routetest.RunRouteTests(node.RouteTest, "p.star", []byte(src), "p_test.star", []byte(tests), routetest.RouteTestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range rep.Tests {
		if !tr.Passed {
			t.Errorf("%s (%s): %s\n%s", tr.Name, tr.FailPos, tr.Failure, tr.Output)
		}
	}
	if len(rep.Tests) != 2 {
		t.Errorf("ran %d tests", len(rep.Tests))
	}
}

func TestBadMask(t *testing.T) {
	path := filepath.Join(t.TempDir(), "perm.db")
	db, err := core.OpenDB(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE address (id INTEGER PRIMARY KEY NOT NULL, grp INTEGER DEFAULT 1 NOT NULL, ip_addr VARCHAR(50) NOT NULL,
		mask INTEGER DEFAULT 32 NOT NULL, port SMALLINT DEFAULT 0 NOT NULL, tag VARCHAR(64));
		INSERT INTO version (table_name, table_version) VALUES ('address', 6);
		INSERT INTO address (grp, ip_addr, mask) VALUES (1, '192.0.2.1', 40)`); err != nil {
		t.Fatal(err)
	}
	src := strings.Replace("modparam(\"permissions\", \"db_url\", \"sqlite://DB\")\ndef ksr_request_route():\n    pass\n", "DB", path, 1)
	_, err = routetest.NewHarness(node.RouteTest, "p.star", []byte(src), routetest.HarnessOptions{})
	if err == nil || !strings.Contains(err.Error(), "mask 40 out of range") {
		t.Fatalf("got %v", err)
	}
}

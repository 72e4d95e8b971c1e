package tests

// kamd's uac against a real Kamailio registrar (the shared one in
// uacreg_kamailio_test.go), and kamd's reg_dump records compared with
// Kamailio 5.6's.

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestUACRegKamailioInterop: kamd registers with Kamailio using digest;
// the contact lands in Kamailio's location table; a wrong password and a
// wrong realm fail visibly in kamd's status.
func TestUACRegKamailioInterop(t *testing.T) {
	kam := sharedKamailio(t)
	kam.AddUser(t, "kamgo-ok", "good")
	kam.AddUser(t, "kamgo-badpw", "good")
	ok, badpw, realm := toRow("kamgo-ok", kam.Addr()), toRow("kamgo-badpw", kam.Addr()), toRow("kamgo-realm", kam.Addr())
	ok.Password, ok.Realm = "good", kamRealm
	badpw.Password = "bad"
	realm.Password, realm.Realm, realm.AuthUser = "good", "other.test", "kamgo-ok"
	k := newUACKamd(t, "", ok, badpw, realm)

	r := k.waitState(t, "kamgo-ok", "registered", 10*time.Second)
	l := kam.WaitLocation(t, "kamgo-ok", "sip:kamgo-ok@127.0.0.1:", 5*time.Second)
	if l.CallID != recStr(r, "call_id") {
		t.Errorf("Kamailio stored Call-ID %q, kamd's status says %q", l.CallID, recStr(r, "call_id"))
	}
	if exp, err := time.Parse(time.DateTime, l.Expires); err != nil || time.Until(exp) < 30*time.Second {
		t.Errorf("Kamailio's location expiry %q (%v), want about 60s ahead", l.Expires, err)
	}

	r = k.waitState(t, "kamgo-badpw", "failed", 10*time.Second)
	if c := recInt(t, r, "last_code"); c != 401 && c != 403 {
		t.Errorf("wrong password: last_code %d, want 401 or 403", c)
	}
	if len(kam.Locations(t, "kamgo-badpw")) != 0 {
		t.Errorf("wrong password, yet Kamailio has a location")
	}
	r = k.waitState(t, "kamgo-realm", "failed", 10*time.Second)
	if !strings.Contains(recStr(r, "last_reason"), "realms do not match. requested realm: ["+kamRealm+"]") {
		t.Errorf("wrong realm: last_reason %q", recStr(r, "last_reason"))
	}

	// Unregister removes the contact from Kamailio's table.
	k.ctlOK(t, "uac.reg_unregister", "l_uuid", "kamgo-ok")
	deadline := time.Now().Add(10 * time.Second)
	for len(kam.Locations(t, "kamgo-ok")) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("Kamailio still has %v after uac.reg_unregister", kam.Locations(t, "kamgo-ok"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kamailio56Fields are the 18 fields of a Kamailio 5.6 reg_dump record,
// in order, with their JSON types for a row with realm and socket empty
// (reference uac.md §4.1).
var kamailio56Fields = []struct{ name, typ string }{
	{"l_uuid", "string"}, {"l_username", "string"}, {"l_domain", "string"}, {"r_username", "string"},
	{"r_domain", "string"}, {"realm", "null"}, {"auth_username", "string"}, {"auth_password", "string"},
	{"auth_ha1", "string"}, {"auth_proxy", "string"}, {"expires", "number"}, {"flags", "number"},
	{"diff_expires", "number"}, {"timer_expires", "number"}, {"reg_init", "number"}, {"reg_delay", "number"},
	{"contact_addr", "string"}, {"socket", "null"},
}

// orderedFields decodes the first object of a JSON array (or the object
// itself) into its keys in order and their JSON types.
func orderedFields(t testing.TB, raw []byte) (keys []string, types map[string]string) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	types = map[string]string{}
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("no object in %s: %v", raw, err)
		}
		if d, ok := tok.(json.Delim); ok && d == '{' {
			depth++
			break
		}
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		key := tok.(string)
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key)
		switch v.(type) {
		case nil:
			types[key] = "null"
		case string:
			types[key] = "string"
		case json.Number:
			types[key] = "number"
		case bool:
			types[key] = "bool"
		default:
			types[key] = "other"
		}
	}
	return keys, types
}

// TestUACRegDumpFields: kamd's reg_dump and reg_info records start with
// Kamailio 5.6's 18 fields, same names, order and JSON types, compared
// with the reference list and with a live Kamailio's uac.reg_dump; then
// the status fields kamd adds.
func TestUACRegDumpFields(t *testing.T) {
	kam := sharedKamailio(t)
	kam.AddUser(t, "kamgo-fields", "pw")
	row := toRow("kamgo-fields", kam.Addr())
	k := newUACKamd(t, "", row)
	k.waitState(t, "kamgo-fields", "registered", 10*time.Second)

	check := func(what string, keys []string, types map[string]string) {
		t.Helper()
		if len(keys) < 18 {
			t.Fatalf("%s: %d fields %v, want Kamailio's 18 first", what, len(keys), keys)
		}
		for i, f := range kamailio56Fields {
			if keys[i] != f.name || types[f.name] != f.typ {
				t.Errorf("%s: field %d is %s (%s), Kamailio 5.6 has %s (%s)", what, i+1, keys[i], types[keys[i]], f.name, f.typ)
			}
		}
	}
	keys, types := orderedFields(t, []byte(k.ctlOK(t, "--json", "uac.reg_dump")))
	check("kamd uac.reg_dump", keys, types)
	for _, f := range []struct{ name, typ string }{
		{"state", "string"}, {"last_code", "number"}, {"last_reason", "string"}, {"last_attempt", "number"},
		{"last_success", "number"}, {"next_refresh", "number"}, {"granted_expires", "number"},
		{"failures", "number"}, {"call_id", "string"}, {"cseq", "number"},
	} {
		if types[f.name] != f.typ {
			t.Errorf("kamd uac.reg_dump: status field %s is %q, want %s", f.name, types[f.name], f.typ)
		}
	}
	ikeys, itypes := orderedFields(t, []byte(k.ctlOK(t, "--json", "uac.reg_info", "l_uuid", "kamgo-fields")))
	check("kamd uac.reg_info", ikeys, itypes)

	// The live reference: Kamailio's own uac registered kamRefUUID (same
	// row shape) with itself.
	kam.WaitLocation(t, kamRefUUID, "sip:"+kamRefUUID+"@", 10*time.Second)
	var resp struct{ Result json.RawMessage }
	if err := json.Unmarshal(kam.RPC(t, "uac.reg_dump"), &resp); err != nil {
		t.Fatal(err)
	}
	kkeys, ktypes := orderedFields(t, resp.Result)
	if len(kkeys) != 18 {
		t.Fatalf("Kamailio's record has %d fields: %v", len(kkeys), kkeys)
	}
	for i, name := range kkeys {
		if keys[i] != name || types[name] != ktypes[name] {
			t.Errorf("field %d: kamd %s (%s), Kamailio %s (%s)", i+1, keys[i], types[keys[i]], name, ktypes[name])
		}
	}
	// Same flag bits for the same situation: INIT|ONLINE.
	var kr struct{ Result []map[string]any }
	_ = json.Unmarshal(kam.RPC(t, "uac.reg_dump"), &kr)
	mine := k.dump(t)["kamgo-fields"]
	if len(kr.Result) == 1 && kr.Result[0]["flags"] != 20.0 || recInt(t, mine, "flags") != 20 {
		t.Errorf("registered flags: Kamailio %v, kamd %v; want 20 (INIT|ONLINE) for both", kr.Result, mine["flags"])
	}
}

package tests

// Interop of the RPC result shapes of dispatcher, pike and permissions:
// a short-lived Kamailio 5.6 and kamd load the same destinations, address
// rows and flood, and their dispatcher.list, pike.top,
// permissions.addressDump and subnetDump must have the same fields and
// JSON types (values differ where the state does).

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const everydayKamCfg = `#!KAMAILIO
debug=2
log_stderror=yes
children=1
auto_aliases=no
listen=udp:127.0.0.1:PORT
mpath="MODDIR/"
loadmodule "db_sqlite.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "jsonrpcs.so"
loadmodule "dispatcher.so"
loadmodule "pike.so"
loadmodule "permissions.so"
modparam("jsonrpcs", "transport", 4)
modparam("jsonrpcs", "dgram_socket", "udp:127.0.0.1:RPCPORT")
modparam("dispatcher", "list_file", "LIST")
modparam("pike", "sampling_time_unit", 10)
modparam("pike", "reqs_density_per_unit", 3)
modparam("permissions", "db_url", "DBURL")
request_route {
	if (!pike_check_req()) { sl_send_reply("503", "Flood"); exit; }
	sl_send_reply("404", "Not here");
}
`

const everydayKamdScript = `
modparam("dispatcher", "list_file", "LIST")
modparam("pike", "sampling_time_unit", 10)
modparam("pike", "reqs_density_per_unit", 3)
modparam("permissions", "db_url", "sqlite://DBPATH")

def ksr_request_route():
    if KSR.pike.pike_check_req() < 0:
        KSR.sl.sl_send_reply(503, "Flood")
        return
    KSR.sl.sl_send_reply(404, "Not here")
`

const everydayList = "1 sip:127.0.0.1:5080 0 5 duid=gw1;weight=50\n1 sip:127.0.0.1:5082 8 0\n2 sip:127.0.0.1:5090;transport=tcp 0 0\n"

// shape renders a JSON value's structure: object keys with their shapes,
// an array's first element, and the scalar types.
func shape(v any) string {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		b.WriteString("{")
		for i, k := range keys {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString(k + ":" + shape(x[k]))
		}
		return b.String() + "}"
	case []any:
		if len(x) == 0 {
			return "[]"
		}
		return "[" + shape(x[0]) + "]"
	case json.Number, float64:
		return "num"
	case string:
		return "str"
	case bool:
		return "bool"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

func TestEverydayRPCShapesMatchKamailio(t *testing.T) {
	bin, modDir, schemaDir, missing := findKamailio()
	if missing == "" {
		if _, err := os.Stat(filepath.Join(modDir, "dispatcher.so")); err != nil {
			missing = "Kamailio's dispatcher module not found"
		}
	}
	if missing != "" {
		if inCI() {
			t.Fatal(missing)
		}
		t.Skip(missing)
	}
	dir := t.TempDir()
	list := filepath.Join(dir, "dispatcher.list")
	if err := os.WriteFile(list, []byte(everydayList), 0o644); err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(dir, "perm.db")
	db, err := sql.Open("sqlite3", "file:"+dbPath+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"standard-create.sql", "permissions-create.sql"} {
		b, err := os.ReadFile(filepath.Join(schemaDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(string(b)); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	if _, err := db.Exec(`INSERT INTO address (grp, ip_addr, mask, port, tag) VALUES (1, '192.0.2.10', 32, 5060, 'gw-a'), (2, '10.0.0.0', 8, 0, NULL), (3, '192.0.2.20', 32, 0, NULL)`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	// Kamailio.
	port, rpcPort := freePortNoT(), freePortNoT()
	cfg := strings.NewReplacer("PORT", strconv.Itoa(port), "RPCPORT", strconv.Itoa(rpcPort), "MODDIR", modDir, "LIST", list,
		"DBURL", "sqlite:///"+dbPath).Replace(everydayKamCfg)
	cfgPath := filepath.Join(dir, "kamailio.cfg")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	klog := &logBuffer{}
	cmd := exec.Command(bin, "-DD", "-E", "-f", cfgPath, "-Y", dir, "-m", "32", "-M", "8")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = klog, klog
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("kamailio log:\n%s", klog.String())
		}
	}()
	kam := &kamailioRegistrar{Port: port, RPCPort: rpcPort}
	ua := newUAC(t)
	deadline := time.Now().Add(20 * time.Second)
	for !kam.probe() {
		if time.Now().After(deadline) {
			t.Fatalf("kamailio did not start; log:\n%s", klog.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	k := startRPCKamd(t, rpcKamdOpts{script: func(int) string {
		return strings.NewReplacer("LIST", list, "DBPATH", dbPath).Replace(everydayKamdScript)
	}})
	// The same flood from the same UA to both: 6 OPTIONS (the probe above
	// counted one more at Kamailio from another port of 127.0.0.1).
	for i := 0; i < 6; i++ {
		for _, to := range []*net.UDPAddr{{IP: net.IPv4(127, 0, 0, 1), Port: port}, k.UDPAddr()} {
			cid := randToken() + "@kamgo.test"
			ua.Send(to, buildRequest(ua.Local(), reqSpec{Method: "OPTIONS", RURI: "sip:x@127.0.0.1", CallID: cid}))
			ua.Final(cid, 5*time.Second)
		}
	}
	kamRPC := func(method string, params ...any) any {
		var r struct {
			Result any `json:"result"`
			Error  any `json:"error"`
		}
		raw := kam.RPC(t, method, params...)
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.UseNumber()
		if err := dec.Decode(&r); err != nil || r.Error != nil {
			t.Fatalf("kamailio %s: %v %s", method, err, raw)
		}
		return r.Result
	}
	for _, c := range []struct {
		method string
		params []any
		exact  bool // same values too (state both sides share), else the same shape
	}{
		{"dispatcher.list", nil, true},
		{"pike.top", nil, false},
		{"pike.top", []any{"ALL"}, false},
		{"permissions.addressDump", nil, true},
		{"permissions.subnetDump", nil, true},
		{"dispatcher.ping_active", nil, true},
	} {
		args := []string{c.method}
		for _, p := range c.params {
			args = append(args, fmt.Sprint(p))
		}
		want := kamRPC(c.method, c.params...)
		got := k.ctlJSON(t, args...)
		b1, _ := json.Marshal(want)
		b2, _ := json.Marshal(got)
		if c.exact && string(b1) != string(b2) {
			t.Errorf("%v differs\nkamailio: %s\nkamd:     %s", args, b1, b2)
		}
		if shape(got) != shape(want) {
			t.Errorf("%v: shapes differ\nkamailio: %s\nkamd:     %s\nkamailio: %s\nkamd:     %s", args, shape(want), shape(got), b1, b2)
		}
	}
	// Both flagged the UA's address as the flood source.
	top := asObject(t, k.ctlJSON(t, "pike.top"), "pike.top")["list"].([]any)
	if len(top) != 1 || top[0].(map[string]any)["ip_addr"] != "127.0.0.1" || top[0].(map[string]any)["status"] != "HOT" {
		t.Errorf("kamd pike.top: %v", top)
	}
}

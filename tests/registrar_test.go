package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// regScript is examples/registrar/route.star with usrloc in write-through mode.
func regScript(t *testing.T) string {
	src, err := os.ReadFile(filepath.Join(repoRoot, "examples", "registrar", "route.star"))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(src), `modparam("usrloc", "db_mode", 0)`, `modparam("usrloc", "db_mode", 1)`, 1)
	if s == string(src) {
		t.Fatal("the example no longer sets db_mode 0")
	}
	return s
}

// startRegKamd starts kamd with RPC on dir's script and database; stop
// ends it (SIGTERM, clean exit) so another kamd can start on the same file.
func startRegKamd(t *testing.T, dir string) (k *rpcKamd, stop func()) {
	t.Helper()
	if kamctlBin == "" {
		t.Fatal("kamctl was not built")
	}
	for attempt := 0; ; attempt++ {
		port, rport := freePort(t), freePort(t)
		kd := &Kamd{t: t, Port: port, Dir: dir, log: &logBuffer{}, done: make(chan struct{}), Script: filepath.Join(dir, "route.star")}
		p, rp := strconv.Itoa(port), strconv.Itoa(rport)
		kd.cmd = exec.Command(kamdBin, "-f", kd.Script, "--rpc", "127.0.0.1:"+rp, "--db", filepath.Join(dir, "kamgo.db"),
			"-l", "udp:127.0.0.1:"+p, "-l", "tcp:127.0.0.1:"+p)
		kd.cmd.Dir = dir
		kd.cmd.Env = cleanEnv()
		kd.cmd.Stdout, kd.cmd.Stderr = kd.log, kd.log
		if err := kd.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { kd.err = kd.cmd.Wait(); close(kd.done) }()
		want := "rpc listening on 127.0.0.1:" + rp
		deadline := time.Now().Add(20 * time.Second)
		up := false
		for !up {
			if strings.Contains(kd.Log(), want) && strings.Contains(kd.Log(), "listening on udp:127.0.0.1:"+p) {
				up = true
				break
			}
			select {
			case <-kd.done:
			case <-time.After(20 * time.Millisecond):
			}
			select {
			case <-kd.done:
				if attempt < 2 && strings.Contains(kd.Log(), "address already in use") {
					break
				}
				t.Fatalf("kamd exited: %v\n%s", kd.err, kd.Log())
			default:
			}
			if kd.err != nil || time.Now().After(deadline) {
				break
			}
		}
		if !up {
			_ = kd.cmd.Process.Kill()
			<-kd.done
			if attempt < 2 && strings.Contains(kd.Log(), "address already in use") {
				continue
			}
			t.Fatalf("kamd did not start:\n%s", kd.Log())
		}
		stopped := false
		stop = func() {
			if stopped {
				return
			}
			stopped = true
			_ = kd.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-kd.done:
				if kd.err != nil {
					t.Errorf("kamd did not exit cleanly: %v\n%s", kd.err, kd.Log())
				}
			case <-time.After(15 * time.Second):
				_ = kd.cmd.Process.Kill()
				<-kd.done
				t.Errorf("kamd did not exit within 15s of SIGTERM")
			}
			if t.Failed() {
				t.Logf("kamd log:\n%s", kd.Log())
			}
		}
		t.Cleanup(stop)
		return &rpcKamd{Kamd: kd, RPCPort: rport}, stop
	}
}

// register sends a REGISTER for bob from the UAS's own socket (so the
// contact is where the UAS listens) and waits for the 200.
func register(t *testing.T, k *Kamd, uas *UAS, cseq int) *sip.Response {
	t.Helper()
	callID := "reg-" + randToken()
	local := uas.conn.LocalAddr().String()
	req := fmt.Sprintf("REGISTER sip:127.0.0.1:%d SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK%s;rport\r\nMax-Forwards: 70\r\n"+
		"From: <sip:bob@127.0.0.1>;tag=%s\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: %s\r\nCSeq: %d REGISTER\r\n"+
		"Contact: <sip:bob@%s>\r\nExpires: 600\r\nUser-Agent: kamgo-e2e\r\nContent-Length: 0\r\n\r\n",
		k.Port, local, randToken(), randToken(), callID, cseq, local)
	if _, err := uas.conn.WriteToUDP([]byte(req), k.UDPAddr()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range uas.Received() {
			if res := r.Res(); res != nil && res.CallID() != nil && string(*res.CallID()) == callID && res.StatusCode >= 200 {
				return res
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no final reply to the REGISTER")
	return nil
}

func callBob(t *testing.T, k *Kamd, uac *UAC) received {
	t.Helper()
	callID := "call-" + randToken()
	uac.Send(k.UDPAddr(), buildRequest(uac.Local(), reqSpec{Method: "INVITE", RURI: fmt.Sprintf("sip:bob@127.0.0.1:%d", k.Port), CallID: callID}))
	return uac.Final(callID, 10*time.Second)
}

func TestRegistrarEndToEnd(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "route.star"), []byte(regScript(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	uas := newUAS(t)
	uac := newUAC(t)
	k, stop := startRegKamd(t, dir)

	// Nobody registered yet: 404.
	if code := callBob(t, k.Kamd, uac).Res().StatusCode; code != 404 {
		t.Fatalf("call before REGISTER: %d, want 404", code)
	}
	res := register(t, k.Kamd, uas, 1)
	if res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d", res.StatusCode)
	}
	contact := "sip:bob@" + uas.conn.LocalAddr().String()
	if c := res.GetHeader("Contact"); c == nil || c.Value() != "<"+contact+">;expires=600" {
		t.Fatalf("200 Contact: %v", c)
	}
	// The call reaches the registered UA through kamd.
	if r := callBob(t, k.Kamd, uac); r.Res().StatusCode != 200 {
		t.Fatalf("call: %d", r.Res().StatusCode)
	}
	var inv *sip.Request
	for _, r := range uas.Received() {
		if q := r.Req(); q != nil && q.IsInvite() {
			inv = q
		}
	}
	if inv == nil || inv.Recipient.String() != contact {
		t.Fatalf("the UAS got no INVITE for %s: %v", contact, inv)
	}

	// Restart on the same database: the binding is still there.
	stop()
	k2, _ := startRegKamd(t, dir)
	dump := asObject(t, k2.ctlJSON(t, "ul.dump"), "ul.dump")
	doms := dump["Domains"].([]any)
	dom := asObject(t, asObject(t, doms[0], "domain")["Domain"], "Domain")
	aors := dom["AoRs"].([]any)
	if dom["Domain"] != "location" || len(aors) != 1 {
		t.Fatalf("ul.dump after restart: %v", dump)
	}
	info := asObject(t, asObject(t, aors[0], "aor")["Info"], "Info")
	c := asObject(t, asObject(t, info["Contacts"].([]any)[0], "c")["Contact"], "Contact")
	if info["AoR"] != "bob" || c["Address"] != contact || c["User-Agent"] != "kamgo-e2e" || c["State"] != "CS_SYNC" {
		t.Fatalf("ul.dump after restart: %v", info)
	}
	if r := callBob(t, k2.Kamd, uac); r.Res().StatusCode != 200 {
		t.Fatalf("call after restart: %d", r.Res().StatusCode)
	}
	// An operator removes it: calls get 404 again.
	k2.ctlOK(t, "ul.rm", "location", "bob")
	if code := callBob(t, k2.Kamd, uac).Res().StatusCode; code != 404 {
		t.Fatalf("call after ul.rm: %d", code)
	}
}

package ipsecrig

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The IMS P-CSCF IPsec suite needs kernel ESP, which this machine's and
// CI's kernel lack: TestIPsecUML boots user-mode Linux once (Debian
// package user-mode-linux, the host filesystem as its read-only root) and
// runs tests/ipsecrig inside it, where kamd is the P-CSCF in one network
// namespace and Go UE simulators with real xfrm SAs are in another. Each
// scenario of the VM run is reported here as a subtest.
//
// KAMGO_IPSEC_UML=1 (and CI=true, which .ci/run sets) makes a missing or
// failing UML a failure; elsewhere a machine without linux.uml skips.
//
// It lives in this package, not in tests/, so that its few minutes on a
// loaded machine count against its own test binary's timeout.

func inCI() bool { return os.Getenv("CI") == "true" }

func umlRequired() bool { return os.Getenv("KAMGO_IPSEC_UML") == "1" || inCI() }

func umlNeed(t *testing.T, format string, a ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, a...)
	if umlRequired() {
		t.Fatal(msg)
	}
	t.Skip(msg + " (KAMGO_IPSEC_UML=1 or CI=true makes this a failure)")
}

// umlModules are loaded before the tests (the kernel's own module
// requests then go to /bin/true: a modprobe run per crypto alias lookup
// costs about a second on a loaded one-CPU VM). stdrng (drbg,
// sha512; jitterentropy_rng does not load in UML) is what echainiv/seqiv
// draw IVs from;
// nfnetlink is one of the families a netlink.Handle opens.
const umlModules = "ipv6 nfnetlink xfrm_user esp4 veth authenc cbc ecb hmac sha1_generic md5 crypto_null echainiv seqiv aes_generic des_generic drbg sha512_generic"

// vmRun is the -run pattern of the VM suite: KAMGO_IPSEC_RUN narrows it
// (e.g. "TestVM/tcp") when working on one scenario.
func vmRun() string {
	if r := os.Getenv("KAMGO_IPSEC_RUN"); r != "" && !strings.ContainsAny(r, "'") {
		return r
	}
	return "^TestVM$"
}

func TestIPsecUML(t *testing.T) {
	if os.Getenv("KAMGO_IPSEC_VM") == "1" {
		t.Skip("inside the VM: TestVM is the suite")
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	repoRoot := filepath.Dir(filepath.Dir(wd))
	uml, err := exec.LookPath("linux.uml")
	if err != nil {
		umlNeed(t, "linux.uml not found: apt-get install -y user-mode-linux kmod")
	}
	if _, err := os.Stat("/usr/sbin/modprobe"); err != nil {
		umlNeed(t, "/usr/sbin/modprobe not found: apt-get install -y kmod")
	}
	mods, _ := filepath.Glob("/usr/lib/uml/modules/*")
	if len(mods) == 0 {
		umlNeed(t, "no /usr/lib/uml/modules/<version>: user-mode-linux is incomplete")
	}
	tshark, _ := exec.LookPath("tshark")
	if tshark == "" && inCI() {
		t.Fatal("tshark not found (apt-get install -y tshark)")
	}
	lab := t.TempDir()
	if k := os.Getenv("KAMGO_IPSEC_KEEP"); k != "" {
		lab = k
	}
	out := filepath.Join(lab, "out")
	for _, d := range []string{out, filepath.Join(lab, "umlroot", "lib")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/usr/lib/uml/modules", filepath.Join(lab, "umlroot", "lib", "modules")); err != nil {
		t.Fatal(err)
	}
	wrap := filepath.Join(lab, "modprobe-wrap")
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(wrap, "#!/bin/sh\necho \"$@\" >> /mnt/modreq.log\nexec /usr/sbin/modprobe -d "+lab+"/umlroot \"$@\"\n")
	// Static test binaries: the VM reads them over hostfs.
	build := func(outBin, pkg string) {
		cmd := exec.Command("go", "test", "-c", "-o", outBin, pkg)
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go test -c %s: %v\n%s", pkg, err, b)
		}
	}
	rig := filepath.Join(lab, "rig.test")
	modt := filepath.Join(lab, "mod.test")
	build(rig, "./tests/ipsecrig")
	build(modt, "./modules/ims_ipsec_pcscf")
	// kamd as CI builds it, without -race (the one-CPU VM; the module's
	// code is race-checked by its package tests).
	vmKamd := filepath.Join(lab, "kamd")
	kb := exec.Command("go", "build", "-o", vmKamd, "./kamd")
	kb.Dir = repoRoot
	if b, err := kb.CombinedOutput(); err != nil {
		t.Fatalf("go build kamd: %v\n%s", err, b)
	}
	script := filepath.Join(repoRoot, "examples", "ims_pcscf", "route.star")
	init := fmt.Sprintf(`#!/bin/bash
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t tmpfs tmpfs /run; mkdir -p /run/netns /run/kamgo
echo %[1]s/modprobe-wrap > /proc/sys/kernel/modprobe
mount -t hostfs -o %[2]s none /mnt
for m in %[3]s; do modprobe -d %[1]s/umlroot $m || echo "modprobe $m failed"; done > /mnt/modprobe.log 2>&1
echo /bin/true > /proc/sys/kernel/modprobe
ip link set lo up
cd %[4]s/modules/ims_ipsec_pcscf
KAMGO_IPSEC_KERNEL=1 PCSCF_REQUIRE_ESP=1 %[1]s/mod.test -test.v=test2json -test.run 'Netlink' > /mnt/mod.log 2>&1; echo $? > /mnt/mod.rc
cd %[4]s/tests/ipsecrig
start=$(date +%%s%%N)
KAMGO_IPSEC_VM=1 PCSCF_REQUIRE_ESP=1 KAMGO_KAMD_BIN=%[5]s KAMGO_IPSEC_SCRIPT=%[6]s KAMGO_IPSEC_OUT=/mnt \
  %[1]s/rig.test -test.v=test2json -test.timeout 200s -test.run '%[7]s'  > /mnt/rig.log 2>&1; echo $? > /mnt/rig.rc
echo $(( ($(date +%%s%%N) - start) / 1000000 )) > /mnt/rig.ms
sync
poweroff -f
`, lab, out, umlModules, repoRoot, vmKamd, script, vmRun())
	write(filepath.Join(lab, "init.sh"), init)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	var console bytes.Buffer
	cmd := exec.CommandContext(ctx, uml, "mem=1024M", "rootfstype=hostfs", "rootflags=/", "ro",
		"init="+filepath.Join(lab, "init.sh"), "con0=fd:0,fd:1", "con=null")
	cmd.Stdout, cmd.Stderr = &console, &console
	cmd.Env = append(os.Environ(), "TMPDIR="+lab)
	t0 := time.Now()
	runErr := cmd.Run()
	t.Logf("UML run: %v wall (%v)", time.Since(t0).Round(100*time.Millisecond), runErr)
	if ms, err := os.ReadFile(filepath.Join(out, "rig.ms")); err == nil {
		t.Logf("suite inside the VM: %s ms", strings.TrimSpace(string(ms)))
	}
	if _, err := os.Stat(filepath.Join(out, "rig.rc")); err != nil {
		tail := console.String()
		if len(tail) > 4000 {
			tail = tail[len(tail)-4000:]
		}
		mp, _ := os.ReadFile(filepath.Join(out, "modprobe.log"))
		umlNeed(t, "the UML run produced no result (%v); modprobe: %s\nconsole:\n%s", runErr, mp, tail)
	}
	if mp, _ := os.ReadFile(filepath.Join(out, "modprobe.log")); len(mp) > 0 {
		t.Errorf("modules missing in the VM:\n%s", mp)
	}
	report(t, "kernel", filepath.Join(out, "mod.log"))
	report(t, "vm", filepath.Join(out, "rig.log"))
	t.Run("tshark", func(t *testing.T) { checkESPCapture(t, tshark, out) })
	if b, err := os.ReadFile(filepath.Join(out, "ipsec_list.json")); err == nil && testing.Verbose() {
		t.Logf("ipsec.list in the VM:\n%s", b)
	}
}

// report turns a test2json-able log into subtests: each test's (and
// subtest's) pass, fail or skip, with its output.
func report(t *testing.T, name, logPath string) {
	t.Helper()
	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Errorf("%s: %v", name, err)
		return
	}
	cmd := exec.Command("go", "tool", "test2json")
	cmd.Stdin = bytes.NewReader(raw)
	js, err := cmd.Output()
	if err != nil {
		t.Errorf("%s: test2json: %v\n%s", name, err, raw)
		return
	}
	type ev struct{ Action, Test, Output string }
	outs := map[string]*strings.Builder{}
	result := map[string]string{}
	var order []string
	sc := bufio.NewScanner(bytes.NewReader(js))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var e ev
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.Test == "" {
			continue
		}
		if outs[e.Test] == nil {
			outs[e.Test] = &strings.Builder{}
			order = append(order, e.Test)
		}
		switch e.Action {
		case "output":
			outs[e.Test].WriteString(e.Output)
		case "pass", "fail", "skip":
			result[e.Test] = e.Action
		}
	}
	t.Run(name, func(t *testing.T) {
		if len(order) == 0 {
			t.Fatalf("no tests ran:\n%s", raw)
		}
		for _, n := range order {
			if strings.Count(n, "/") > 1 {
				continue
			}
			n := n
			t.Run(n, func(t *testing.T) {
				switch result[n] {
				case "pass":
					if testing.Verbose() {
						t.Log(strings.TrimRight(outs[n].String(), "\n"))
					}
				case "skip":
					msg := "skipped in the VM:\n" + outs[n].String()
					if umlRequired() {
						t.Fatal(msg)
					}
					t.Skip(msg)
				default:
					t.Errorf("%s (%s) in the VM:\n%s", n, result[n], outs[n])
				}
			})
		}
	})
}

// checkESPCapture decodes the happy path's capture with tshark's ESP-NULL
// heuristic: the first REGISTER and the 401 are plain SIP, the protected
// REGISTER rides spi_ps and its 200 spi_us, and nothing else of SIP
// between UE and P-CSCF is plain after the 401.
func checkESPCapture(t *testing.T, tshark, out string) {
	if tshark == "" {
		t.Skip("tshark not installed")
	}
	var f struct {
		SpiPS, SpiUS           uint32
		PortPS, PortPC, PortUS int
	}
	b, err := os.ReadFile(filepath.Join(out, "happy_udp.json"))
	if err != nil {
		t.Fatalf("no capture facts from the VM: %v", err)
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	f.SpiPS, f.SpiUS = uint32(m["spi_ps"].(float64)), uint32(m["spi_us"].(float64))
	f.PortPS, f.PortPC, f.PortUS = int(m["port_ps"].(float64)), int(m["port_pc"].(float64)), int(m["port_us"].(float64))
	pcap := filepath.Join(out, "happy_udp.pcap")
	cmd := exec.Command(tshark, "-n", "-r", pcap, "-o", "esp.enable_null_encryption_decode_heuristic:TRUE",
		"-d", fmt.Sprintf("udp.port==%d,sip", f.PortPS), "-d", fmt.Sprintf("udp.port==%d,sip", f.PortUS),
		"-Y", "sip", "-T", "fields", "-E", "separator=|", "-e", "esp.spi", "-e", "sip.Method", "-e", "sip.Status-Code", "-e", "sip.CSeq.method")
	o, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, o)
	}
	t.Logf("tshark (esp.spi|method|status|cseq):\n%s", o)
	var plainReg, plain401, espReg, esp200, espOptions, espTrying, plainAfter int
	seen401 := false
	for _, line := range strings.Split(strings.TrimSpace(string(o)), "\n") {
		p := strings.Split(line, "|")
		if len(p) < 4 {
			continue
		}
		spi, method, status := p[0], p[1], p[2]
		switch {
		case spi == "" && method == "REGISTER":
			plainReg++
		case spi == "" && status == "401":
			plain401++
			seen401 = true
		case spi == "":
			if seen401 {
				plainAfter++
			}
		case spi == fmt.Sprintf("0x%08x", f.SpiPS) && method == "REGISTER":
			espReg++
		case spi == fmt.Sprintf("0x%08x", f.SpiUS) && status == "200" && p[3] == "REGISTER":
			esp200++
		case spi == fmt.Sprintf("0x%08x", f.SpiUS) && method == "OPTIONS":
			espOptions++
		case spi == fmt.Sprintf("0x%08x", f.SpiUS) && status == "100":
			espTrying++
		}
	}
	// The UE retransmits its first REGISTER when the VM is slow (timer A):
	// each copy gets its 401, all plain.
	if plainReg < 1 || plain401 != plainReg || espReg != 1 || esp200 != 1 || espOptions != 1 || espTrying != 1 || plainAfter != 0 {
		t.Errorf("capture: plain REGISTER %d, plain 401 %d, ESP REGISTER %d, ESP 200 %d, ESP OPTIONS %d, ESP 100 Trying %d, plain SIP after the 401 %d; want n n 1 1 1 1 0",
			plainReg, plain401, espReg, esp200, espOptions, espTrying, plainAfter)
	}
}

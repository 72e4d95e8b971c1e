package tests

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func writeScript(t *testing.T, name, src string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckGoodScript(t *testing.T) {
	p := writeScript(t, "good.star", tutorialScript(5080))
	out, errOut, code := runKamd(t, "-c", "-f", p)
	if code != 0 {
		t.Fatalf("kamd -c -f good.star: exit %d, want 0\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}

func TestCheckBrokenScripts(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		line      int    // the line the error must name
		msg       string // a piece of the message
	}{
		{"syntax error", "def ksr_request_route():\n    KSR.sl.send_reply(200, \"OK\"\n", 3, ""},
		{"undefined failure callback", "def ksr_request_route():\n    KSR.tm.t_on_failure(\"nosuch\")\n    KSR.sl.send_reply(200, \"OK\")\n", 2, "nosuch"},
		{"unknown modparam module", "modparam(\"nosuchmod\", \"x\", 1)\n\ndef ksr_request_route():\n    KSR.sl.send_reply(200, \"OK\")\n", 1, "nosuchmod"},
		{"unknown PV", "def ksr_request_route():\n    x = 1\n    KSR.info(KSR.pv.get(\"$nosuch\"))\n", 3, "nosuch"},
		{"no request route", "def ksr_reply_route():\n    pass\n", 1, "ksr_request_route"},
		{"bad log_level", "\ncore_param(\"log_level\", \"bogus\")\ndef ksr_request_route():\n    pass\n", 2, "unknown log level"},
		{"unknown KSR module", "def ksr_request_route():\n    if False:\n        KSR.pikee.pike_check_req()\n", 3, "KSR has no module pikee (did you mean KSR.pike"},
		{"unknown KSR function", "def ksr_request_route():\n    KSR.sl.sl_send_replyy(200, \"OK\")\n", 2, "KSR.sl has no function sl_send_replyy (did you mean KSR.sl.sl_send_reply"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeScript(t, "bad.star", tc.src)
			out, errOut, code := runKamd(t, "-c", "-f", p)
			if code == 0 {
				t.Fatalf("kamd -c accepted a broken script (%s); stdout: %s", tc.name, out)
			}
			re := regexp.MustCompile(regexp.QuoteMeta(p) + `:(\d+):(\d+): \S`)
			m := re.FindStringSubmatch(errOut)
			if m == nil {
				t.Fatalf("stderr has no %q line:col: message:\n%s", p, errOut)
			}
			if m[1] != strconv.Itoa(tc.line) {
				t.Errorf("error names line %s, want %d:\n%s", m[1], tc.line, errOut)
			}
			if tc.msg != "" && !strings.Contains(errOut, tc.msg) {
				t.Errorf("error does not mention %q:\n%s", tc.msg, errOut)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	out, errOut, code := runKamd(t, "-v")
	if code != 0 || !regexp.MustCompile(`^kamd \S+`).MatchString(out) {
		t.Fatalf("kamd -v: exit %d, stdout %q, stderr %q; want exit 0 and \"kamd VERSION\"", code, out, errOut)
	}
}

func TestEmbeddedDefaultScript(t *testing.T) {
	k := startKamd(t, "")
	if !strings.Contains(k.Log(), "default.star") {
		t.Errorf("kamd without -f does not say it runs the embedded default script:\n%s", k.Log())
	}
	uac := newUAC(t)
	r := uac.Do(k, reqSpec{Method: "OPTIONS", RURI: "sip:" + k.Addr()})
	if res := r.Res(); res.StatusCode != 200 {
		t.Fatalf("OPTIONS to kamd itself with the default script: got %d %s, want 200", res.StatusCode, res.Reason)
	}
	r = uac.Do(k, reqSpec{Method: "REGISTER", RURI: "sip:" + k.Addr()})
	if res := r.Res(); res.StatusCode != 200 {
		t.Fatalf("REGISTER with the default script: got %d %s, want 200", res.StatusCode, res.Reason)
	}
}

func markerScript(marker string) string {
	return `
def ksr_request_route():
    KSR.hdr.append_to_reply("X-Version: ` + marker + `\r\n")
    KSR.sl.send_reply(200, "OK")
`
}

func TestReloadOnSIGHUP(t *testing.T) {
	k := startKamd(t, markerScript("one"))
	uac := newUAC(t)
	version := func() string {
		t.Helper()
		r := uac.Do(k, reqSpec{Method: "OPTIONS", RURI: "sip:" + k.Addr()})
		if res := r.Res(); res.StatusCode != 200 {
			t.Fatalf("got %d, want 200", res.StatusCode)
		}
		return strings.Join(headerLines(r.Raw, "X-Version"), ",")
	}
	if v := version(); v != "one" {
		t.Fatalf("X-Version %q before reload, want one", v)
	}
	k.Reload(t, markerScript("two"))
	if !strings.Contains(k.Log(), "script reloaded") {
		t.Fatalf("reload of a good script failed:\n%s", k.Log())
	}
	if v := version(); v != "two" {
		t.Fatalf("X-Version %q after SIGHUP, want two", v)
	}
	k.Reload(t, "def ksr_request_route(:\n")
	if !strings.Contains(k.Log(), "reload failed") {
		t.Fatalf("broken script on SIGHUP was not reported:\n%s", k.Log())
	}
	if !regexp.MustCompile(`route\.star:1:\d+`).MatchString(k.Log()) {
		t.Errorf("failed reload does not name route.star:line:col:\n%s", k.Log())
	}
	if v := version(); v != "two" {
		t.Fatalf("X-Version %q after a broken reload, want the old version (two) serving", v)
	}
}

// kamd -c checks a load()ed file as it checks the main script: a failure
// route it names must exist.
func TestCheckLoadedFile(t *testing.T) {
	p := writeScript(t, "main.star", "load(\"lib.star\", \"arm\")\ndef ksr_request_route():\n    arm()\n")
	lib := filepath.Join(filepath.Dir(p), "lib.star")
	if err := os.WriteFile(lib, []byte("def arm():\n    KSR.tm.t_on_failure(\"nope\")\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := runKamd(t, "-c", "-f", p)
	if code == 0 || !strings.Contains(errOut, lib+":2:25: callback \"nope\"") {
		t.Errorf("kamd -c on a loaded file naming a missing callback: exit %d\n%s", code, errOut)
	}
}

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runTestsOut(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := runTests(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestRouteTestsExamples(t *testing.T) {
	code, out, errs := runTestsOut(t, "../examples")
	if code != 0 {
		t.Fatalf("kamd test ../examples: exit %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(out, "ok  \t../examples/kemi/route.star") {
		t.Errorf("no ok line for the KEMI example:\n%s", out)
	}
	// The benchmark scripts are routing scripts too.
	if code, out, errs := runTestsOut(t, "../tests/bench"); code != 0 || !strings.Contains(out, "route_stateful.star") {
		t.Fatalf("kamd test ../tests/bench: exit %d\n%s%s", code, out, errs)
	}
}

func TestRouteTestsDefaultScript(t *testing.T) {
	code, out, errs := runTestsOut(t, "--default", "-v")
	if code != 0 {
		t.Fatalf("kamd test --default: exit %d\n%s%s", code, out, errs)
	}
	for _, want := range []string{"=== RUN   test_options_to_self_is_answered_200", "--- PASS: test_ack_to_self_is_never_answered", "PASS\n", "ok  \t" + DefaultScriptName} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func writeFixture(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, src := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const fixtureScript = "def ksr_request_route():\n    KSR.sl.send_reply(404, \"Not Found\")\n"

func TestRouteTestsFailingFixture(t *testing.T) {
	dir := writeFixture(t, map[string]string{
		"r.star": fixtureScript,
		"r_test.star": `
def test_passes():
    assert.eq(route.request(sip.options()).replies[0].code, 404)

def test_expects_200():
    r = route.request(sip.options())
    assert.eq(r.replies[0].code, 200, "OPTIONS is answered")
`,
	})
	script := filepath.Join(dir, "r.star")
	code, out, _ := runTestsOut(t, script)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, out)
	}
	for _, want := range []string{
		"--- FAIL: test_expects_200 (" + filepath.Join(dir, "r_test.star") + ":7)",
		"assert.eq: OPTIONS is answered", "got:  404", "want: 200", "\nFAIL\n", "FAIL\t" + script,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "test_passes") {
		t.Errorf("passing test reported without -v:\n%s", out)
	}
	// -run selects; the test file may be named directly; a DIR finds it.
	if code, out, _ := runTestsOut(t, "-run", "passes", script); code != 0 {
		t.Errorf("-run passes: exit %d\n%s", code, out)
	}
	if code, _, _ := runTestsOut(t, filepath.Join(dir, "r_test.star"), "-run=expects"); code != 1 {
		t.Errorf("test file named directly: exit %d, want 1", code)
	}
	if code, _, _ := runTestsOut(t, dir); code != 1 {
		t.Errorf("DIR: exit %d, want 1", code)
	}
}

func TestRouteTestsLoadAndUsageErrors(t *testing.T) {
	dir := writeFixture(t, map[string]string{
		"bad.star":      "def ksr_request_route():\n    x = (\n",
		"bad_test.star": "def test_x():\n    pass\n",
		"lonely.star":   fixtureScript,
	})
	code, out, errs := runTestsOut(t, filepath.Join(dir, "bad.star"))
	if code != 2 || !strings.Contains(errs, filepath.Join(dir, "bad.star")+":3:1:") {
		t.Errorf("broken script: exit %d, stderr %q, stdout %q", code, errs, out)
	}
	if code, _, errs := runTestsOut(t, filepath.Join(dir, "lonely.star")); code != 2 || !strings.Contains(errs, "no test file") {
		t.Errorf("script without tests: exit %d, stderr %q", code, errs)
	}
	if code, _, _ := runTestsOut(t); code != 2 {
		t.Errorf("no arguments: exit %d, want 2", code)
	}
	if code, _, _ := runTestsOut(t, "-run", "(", "x.star"); code != 2 {
		t.Errorf("bad regexp: exit %d, want 2", code)
	}
	if code, out, _ := runTestsOut(t, "-h"); code != 0 || !strings.Contains(out, "usage: kamd test") {
		t.Errorf("-h: exit %d, %q", code, out)
	}
}

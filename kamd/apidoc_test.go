package main

import (
	"os"
	"strings"
	"testing"
)

// The reference in docs/ is generated from the export tables; this fails
// when a module changed and the doc was not regenerated.
func TestAPIDocIsCurrent(t *testing.T) {
	var b strings.Builder
	apiDoc(&b)
	have, err := os.ReadFile("../docs/ksr-api.md")
	if err != nil {
		t.Fatalf("%v (generate it: go run ./kamd apidoc > docs/ksr-api.md)", err)
	}
	if string(have) != b.String() {
		t.Fatal("docs/ksr-api.md is out of date: run go run ./kamd apidoc > docs/ksr-api.md")
	}
	for _, want := range []string{"`KSR.tm.t_relay()`", "`KSR.sl.send_reply(int, str)`", "`KSR.pv.get(str)`", "`app_starlark.reload`", "`$ru`"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("reference lacks %s", want)
		}
	}
}

package starlark_test

import (
	"strings"
	"testing"

	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/starlark"
)

// tabletest is a module that exists only in this test binary: what it
// declares in its table (a callback-taking function, a PV) must be checked
// at load exactly as tm's and htable's are, with no name-based special case.
func init() {
	core.Register(func(env *core.Env) *core.Module {
		return &core.Module{Name: "tabletest", Doc: "test module",
			Funcs: []core.Func{
				{Name: "on_event", Args: []core.ArgType{core.ArgStr, core.ArgStr}, Ret: core.RetInt, CallbackArg: 2,
					Doc: "(what, callback)", Fn: func(*core.Msg, []core.Val) (core.Val, error) { return core.Int(1), nil }},
				{Name: "plain", Args: []core.ArgType{core.ArgStr}, Ret: core.RetInt,
					Doc: "(text)", Fn: func(*core.Msg, []core.Val) (core.Val, error) { return core.Int(1), nil }},
			},
			PVs: []core.PVDef{{Name: "tabletest", HasArg: true, Doc: "echoes its name",
				Get: func(_ *core.Msg, arg string) core.Val { return core.Str(arg) }}},
		}
	})
}

func TestTableDrivenLoadChecks(t *testing.T) {
	route := func(body string) string {
		return "def on_ok(msg):\n    pass\ndef ksr_request_route():\n    " + body + "\n"
	}
	for _, tc := range []struct {
		name, src, want string // want "" means the load succeeds
	}{
		{"unknown callback at the table's position", route(`KSR.tabletest.on_event("x", "nope")`), `s.star:4:33: callback "nope" is named here`},
		{"known callback", route(`KSR.tabletest.on_event("x", "on_ok")`), ""},
		{"other argument positions are not callbacks", route(`KSR.tabletest.on_event("nope", "on_ok")`), ""},
		{"function without CallbackArg", route(`KSR.tabletest.plain("nope")`), ""},
		{"alias of the module", "tt = KSR.tabletest\n" + route(`tt.on_event("x", "gone")`), `callback "gone"`},
		{"module PV literal is known", route(`KSR.pv.get("$tabletest(a)")`), ""},
		{"module PV literal misused", route(`KSR.pv.get("$tabletest")`), "needs a name"},
		{"tm callbacks still come from tm's table", route(`KSR.tm.t_on_branch("nope")`), `callback "nope"`},
		{"through modf, by native name", route(`KSR.x.modf("on_event", "x", "nope")`), `callback "nope"`},
		{"through modf, defined", route(`KSR.x.modf("t_on_failure", "on_ok")`), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eng := starlark.New(core.NewEnv(nil))
			_, err := eng.Compile("s.star", []byte(tc.src))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("load failed: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestPVsComeFromModuleTables(t *testing.T) {
	eng := starlark.New(core.NewEnv(nil))
	owner := map[string]string{}
	for _, p := range eng.PVs() {
		owner[p.Spec()] = p.Module
	}
	for spec, mod := range map[string]string{"$ru": "", "$tabletest(name)": "tabletest", "$sht(name)": "htable", "$au": "auth", "$ulc(name)": "registrar"} {
		if got, ok := owner[spec]; !ok || got != mod {
			t.Errorf("%s: module %q (listed %v), want %q", spec, got, ok, mod)
		}
	}
	// A PV is known to the Env whose modules declare it, not globally.
	if _, err := eng.Env.ParsePV("$tabletest(x)"); err != nil {
		t.Errorf("engine's Env: %v", err)
	}
	if _, err := core.NewEnv(nil).ParsePV("$tabletest(x)"); err == nil {
		t.Error("an Env without the module knows its PV")
	}
}

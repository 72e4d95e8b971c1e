package core_test

import (
	"strings"
	"testing"

	"github.com/kamgo/kamgo/modules/core"
)

func TestOrderModules(t *testing.T) {
	mods := func(spec ...string) []*core.Module { // "a:b,c" = a needs b and c
		var out []*core.Module
		for _, s := range spec {
			name, needs, _ := strings.Cut(s, ":")
			m := &core.Module{Name: name}
			if needs != "" {
				m.Needs = strings.Split(needs, ",")
			}
			out = append(out, m)
		}
		return out
	}
	for _, c := range []struct {
		in   []string
		want string // order, or the error
	}{
		{[]string{"a", "b", "c"}, "a b c"},
		{[]string{"registrar:usrloc", "tm", "usrloc"}, "usrloc registrar tm"},
		{[]string{"uac:tm", "auth_db:auth", "auth", "tm"}, "tm uac auth auth_db"},
		{[]string{"a:b", "b:c", "c"}, "c b a"},
		{[]string{"a:b,c", "b:c", "c"}, "c b a"},
		{[]string{"a:nope"}, "module a needs module nope, which is not loaded"},
		{[]string{"a:b", "b:a"}, "modules need each other in a circle: a → b → a"},
		{[]string{"x", "a:b", "b:c", "c:b"}, "modules need each other in a circle: b → c → b"},
	} {
		out, err := core.OrderModules(mods(c.in...))
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			var names []string
			for _, m := range out {
				names = append(names, m.Name)
			}
			got = strings.Join(names, " ")
		}
		if got != c.want {
			t.Errorf("%v: got %q, want %q", c.in, got, c.want)
		}
	}
}

func TestParseLogLevel(t *testing.T) {
	for in, want := range map[string]string{"L_ERR": "err", "error": "err", "DBG": "dbg", "debug": "dbg", "warning": "warn",
		"notice": "info", "crit": "crit", "l_alert": "alert"} {
		l, err := core.ParseLogLevel(in)
		if err != nil || core.LevelName(l) != want {
			t.Errorf("%s: %s %v, want %s", in, core.LevelName(l), err, want)
		}
	}
	if _, err := core.ParseLogLevel("bogus"); err == nil || !strings.Contains(err.Error(), `unknown log level "bogus"`) {
		t.Errorf("bogus: %v", err)
	}
}

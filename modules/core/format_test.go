package core

import "testing"

func TestExpandPV(t *testing.T) {
	m := &Msg{Env: NewEnv(nil), SrcIP: "192.0.2.10", SrcPort: 5062, Proto: "udp", Vars: map[string]Val{"x": Str("hello"), "n": Int(7)}}
	m.Env.Shv.Set("k", Str("shared"))
	for _, c := range []struct{ in, want string }{
		{"no pvs", "no pvs"},
		{"", ""},
		{"from $si:$sp", "from 192.0.2.10:5062"},
		{"$var(x) $var(n)!", "hello 7!"},
		{"[$shv(k)]", "[shared]"},
		{"$var(unset)", "0"},
		{"$du", "<null>"},
		{"cost $$5 or $5", "cost $5 or $5"},
		{"trailing $", "trailing $"},
		{"$unknown and $nope(x)", "$unknown and $nope(x)"},
		{"$si(x)", "192.0.2.10(x)"},
		{"$hdr", "$hdr"},
		{"$var(x", "$var(x"},
		{"$$$si", "$192.0.2.10"},
		{"a$pr$si", "audp192.0.2.10"},
	} {
		if got := ExpandPV(m, c.in); got != c.want {
			t.Errorf("ExpandPV(%q) = %q, want %q", c.in, got, c.want)
		}
		// the cached parse gives the same result
		if got := ExpandPV(m, c.in); got != c.want {
			t.Errorf("ExpandPV(%q) (cached) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestExpandPVNested(t *testing.T) {
	m := &Msg{Env: NewEnv(nil)}
	m.Env.SetModule(&Module{Name: "fmttest", PVs: []PVDef{{Name: "fmttest", HasArg: true, Get: func(m *Msg, arg string) Val { return Str("<" + arg + ">") }}}})
	if got, want := ExpandPV(m, "x $fmttest(a=>$hdr(X)) y"), "x <a=>$hdr(X)> y"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

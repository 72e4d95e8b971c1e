package all_test

import (
	"testing"

	_ "github.com/kamgo/kamgo/modules/all"
	"github.com/kamgo/kamgo/modules/core"
)

// Param.Default is the one place a default is written: a module built
// with no modparam must run with exactly that value. A module that also
// initialised its state with a second literal that differs fails here, as
// does a param without Get (its effective value could not be checked).
func TestParamDefaultsAreInEffect(t *testing.T) {
	env := core.NewEnv(nil)
	mods := core.BuildModules(env)
	n := 0
	for _, m := range mods {
		for _, p := range m.Params {
			name := m.Name + "." + p.Name
			if p.Get == nil {
				t.Errorf("%s: no Get, so its effective default cannot be checked", name)
				continue
			}
			if got := p.Get(); got != p.Default {
				t.Errorf("%s: in effect %v (%v), Default %v (%v)", name, got, got.Kind, p.Default, p.Default.Kind)
			}
			n++
		}
		if m.Stop != nil {
			m.Stop()
		}
	}
	if n < 30 {
		t.Errorf("checked %d params; the modules declare more", n)
	}
}

// A value set through the param must be what Get reads back, or the test
// above would pass for a Get that ignores the state.
func TestParamGetReadsSet(t *testing.T) {
	env := core.NewEnv(nil)
	for _, m := range core.BuildModules(env) {
		for _, p := range m.Params {
			if p.Get == nil || p.Set == nil || p.Default.Kind != core.KInt {
				continue
			}
			v := core.Int(int(p.Default.Int) + 1)
			if p.Default.Int == 1 { // likely a 0/1 flag: flip it
				v = core.Int(0)
			}
			if p.Check != nil && p.Check(v) != nil {
				continue
			}
			if err := p.Set(v); err != nil {
				continue
			}
			if got := p.Get(); got != v {
				t.Errorf("%s.%s: set %v, Get %v", m.Name, p.Name, v, got)
			}
		}
		if m.Stop != nil {
			m.Stop()
		}
	}
}

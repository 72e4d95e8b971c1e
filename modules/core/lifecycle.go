package core

import (
	"fmt"
	"strings"
)

// OrderModules sorts modules so that every module comes after the modules
// it Needs, keeping the given order among independent ones. Init and Start
// run in this order, Stop in reverse. A need naming no module in mods, or a
// cycle of needs, is an error.
func OrderModules(mods []*Module) ([]*Module, error) {
	byName := make(map[string]*Module, len(mods))
	for _, m := range mods {
		byName[m.Name] = m
	}
	for _, m := range mods {
		for _, n := range m.Needs {
			if byName[n] == nil {
				return nil, fmt.Errorf("module %s needs module %s, which is not loaded", m.Name, n)
			}
		}
	}
	const (
		unseen = iota
		visiting
		done
	)
	state := make(map[*Module]int, len(mods))
	out := make([]*Module, 0, len(mods))
	var path []string
	var visit func(m *Module) error
	visit = func(m *Module) error {
		switch state[m] {
		case done:
			return nil
		case visiting:
			i := 0
			for path[i] != m.Name {
				i++
			}
			return fmt.Errorf("modules need each other in a circle: %s → %s", strings.Join(path[i:], " → "), m.Name)
		}
		state[m] = visiting
		path = append(path, m.Name)
		for _, n := range m.Needs {
			if err := visit(byName[n]); err != nil {
				return err
			}
		}
		path = path[:len(path)-1]
		state[m] = done
		out = append(out, m)
		return nil
	}
	for _, m := range mods {
		if err := visit(m); err != nil {
			return nil, err
		}
	}
	return out, nil
}

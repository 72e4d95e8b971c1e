package core

import "sync"

// Ordered is a map by name that remembers the order names were added in:
// a module's registry that lists in definition order (htable's tables,
// usrloc's domains). The zero value is ready; it does no locking of its
// own, the owner's lock guards it.
type Ordered[T any] struct {
	m     map[string]T
	order []string
}

// Get returns the value under name (the zero T and false if none).
func (o *Ordered[T]) Get(name string) (T, bool) {
	v, ok := o.m[name]
	return v, ok
}

// Add sets name's value; a new name goes last, or first with front.
func (o *Ordered[T]) Add(name string, v T, front bool) {
	if o.m == nil {
		o.m = map[string]T{}
	}
	if _, ok := o.m[name]; !ok {
		if front {
			o.order = append([]string{name}, o.order...)
		} else {
			o.order = append(o.order, name)
		}
	}
	o.m[name] = v
}

// Names returns a copy of the names in order.
func (o *Ordered[T]) Names() []string { return append([]string(nil), o.order...) }

// Values returns the values in order.
func (o *Ordered[T]) Values() []T {
	out := make([]T, 0, len(o.order))
	for _, n := range o.order {
		out = append(out, o.m[n])
	}
	return out
}

// PerEnv maps an Env to the module instance built in it, so code that has
// only the Env (a pseudo-variable, another module's Go API) reaches that
// instance. Safe for concurrent use.
type PerEnv[T comparable] struct{ m sync.Map }

// Set records v as env's instance.
func (p *PerEnv[T]) Set(env *Env, v T) { p.m.Store(env, v) }

// Of returns env's instance (the zero T if none was built).
func (p *PerEnv[T]) Of(env *Env) T {
	v, _ := p.m.Load(env)
	t, _ := v.(T)
	return t
}

// Drop forgets env's instance if it is still v (a stopped instance must
// not drop its successor).
func (p *PerEnv[T]) Drop(env *Env, v T) { p.m.CompareAndDelete(env, v) }

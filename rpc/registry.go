package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Parameter types understood by Param.Type. The empty string means TypeAny.
const (
	TypeString = "string"
	TypeInt    = "int"
	TypeBool   = "bool"
	TypeFloat  = "float"
	TypeArray  = "array"
	TypeObject = "object"
	TypeAny    = "any"
)

// Param describes one parameter of a Method.
type Param struct {
	Name     string
	Type     string // TypeString, TypeInt, TypeBool, TypeFloat, TypeArray, TypeObject or TypeAny ("" = any)
	Doc      string
	Optional bool // may be omitted; optional params must follow the required ones
	// Variadic marks the last param as taking any number of values (zero or
	// more if Optional, else one or more), e.g. stats.get_statistics' names.
	// Given by name, its value may be one value or an array of values.
	Variadic bool
}

// Method is one RPC method. Handlers must return a JSON object or array (a
// struct, map or slice) or nil, which is sent as {} like Kamailio's void
// result; a scalar result is a programming error and is answered with -32603.
// Returning an *Error chooses the error code; any other error becomes 500.
type Method struct {
	Name     string
	Doc      string
	Params   []Param
	Result   string // one-line description of the result shape
	ReadOnly bool   // the read-only role may call it; otherwise admin only
	Handler  func(ctx context.Context, p Params) (any, error)
	// ParamError, when set, answers missing or wrongly typed params instead
	// of -32602 (a Kamailio-compatible method's own fault, e.g. uac's 400
	// "Invalid Parameters").
	ParamError *Error
}

// Role is what a token grants.
type Role string

const (
	RoleReadOnly Role = "ro"    // may call ReadOnly methods only
	RoleAdmin    Role = "admin" // may call everything
)

type ctxKey int

const (
	roleKey ctxKey = iota
	connKey
)

// RoleFromContext returns the caller's role inside a handler ("" outside one).
func RoleFromContext(ctx context.Context) Role {
	r, _ := ctx.Value(roleKey).(Role)
	return r
}

type registry struct {
	mu      sync.RWMutex
	methods map[string]*Method
}

func validateMethod(m *Method) error {
	if m.Name == "" || strings.ContainsAny(m.Name, " \t\r\n") {
		return fmt.Errorf("rpc: invalid method name %q", m.Name)
	}
	if m.Handler == nil {
		return fmt.Errorf("rpc: method %s has no handler", m.Name)
	}
	seen := map[string]bool{}
	optional := false
	for i, p := range m.Params {
		if p.Name == "" {
			return fmt.Errorf("rpc: method %s: param %d has no name", m.Name, i+1)
		}
		if seen[p.Name] {
			return fmt.Errorf("rpc: method %s: duplicate param %s", m.Name, p.Name)
		}
		seen[p.Name] = true
		switch p.Type {
		case "", TypeAny, TypeString, TypeInt, TypeBool, TypeFloat, TypeArray, TypeObject:
		default:
			return fmt.Errorf("rpc: method %s: param %s has unknown type %q", m.Name, p.Name, p.Type)
		}
		if optional && !p.Optional {
			return fmt.Errorf("rpc: method %s: required param %s follows an optional one", m.Name, p.Name)
		}
		optional = optional || p.Optional
		if p.Variadic && i != len(m.Params)-1 {
			return fmt.Errorf("rpc: method %s: only the last param may be variadic", m.Name)
		}
	}
	return nil
}

func (r *registry) register(m Method) error {
	if err := validateMethod(&m); err != nil {
		return err
	}
	m.Params = append([]Param(nil), m.Params...)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.methods == nil {
		r.methods = map[string]*Method{}
	}
	if _, dup := r.methods[m.Name]; dup {
		return fmt.Errorf("rpc: method %s already registered", m.Name)
	}
	r.methods[m.Name] = &m
	return nil
}

func (r *registry) lookup(name string) *Method {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.methods[name]
}

func (r *registry) names() []string {
	r.mu.RLock()
	out := make([]string, 0, len(r.methods))
	for n := range r.methods {
		out = append(out, n)
	}
	r.mu.RUnlock()
	sort.Strings(out)
	return out
}

// bindParams turns the request's params (absent, array or object) into
// positional Params checked against the method's declaration.
func bindParams(m *Method, raw json.RawMessage) (Params, *Error) {
	names := make([]string, len(m.Params))
	for i, p := range m.Params {
		names[i] = p.Name
	}
	var variadic *Param
	if n := len(m.Params); n > 0 && m.Params[n-1].Variadic {
		variadic = &m.Params[n-1]
	}
	var vals []json.RawMessage
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0 || isNull(raw):
	case raw[0] == '[':
		if err := json.Unmarshal(raw, &vals); err != nil {
			return Params{}, InvalidParamsf("%v", err)
		}
	case raw[0] == '{':
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &obj); err != nil {
			return Params{}, InvalidParamsf("%v", err)
		}
		for k := range obj {
			if !containsStr(names, k) {
				return Params{}, InvalidParamsf("unknown parameter %q", k)
			}
		}
		last := -1
		for i, p := range m.Params {
			if v, ok := obj[p.Name]; ok && !isNull(v) {
				last = i
			}
		}
		for i := 0; i <= last; i++ {
			p := m.Params[i]
			v, ok := obj[p.Name]
			if !ok {
				v = json.RawMessage("null")
			}
			if p.Variadic && jsonKind(v) == "array" {
				var more []json.RawMessage
				if err := json.Unmarshal(v, &more); err != nil {
					return Params{}, InvalidParamsf("%s: %v", p.Name, err)
				}
				vals = append(vals, more...)
				continue
			}
			vals = append(vals, v)
		}
	default:
		return Params{}, InvalidParamsf("params must be an array or an object")
	}
	// Arity.
	if variadic == nil && len(vals) > len(m.Params) {
		return Params{}, InvalidParamsf("too many parameters: %s takes at most %d, got %d", m.Name, len(m.Params), len(vals))
	}
	for i, p := range m.Params {
		if p.Optional {
			break
		}
		if i >= len(vals) || isNull(vals[i]) {
			return Params{}, InvalidParamsf("%s: missing", p.Name)
		}
	}
	// Types.
	for i, v := range vals {
		var p *Param
		if i < len(m.Params) {
			p = &m.Params[i]
		} else {
			p = variadic
		}
		if isNull(v) && p.Optional {
			continue
		}
		if !checkType(p.Type, v) {
			return Params{}, InvalidParamsf("%s: expected %s, got %s", p.Name, p.Type, jsonKind(v))
		}
	}
	if variadic != nil {
		for len(names) < len(vals) {
			names = append(names, variadic.Name)
		}
	}
	return Params{raw: vals, names: names}, nil
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

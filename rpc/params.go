package rpc

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
)

// Params gives a handler positional access to the call's parameters. Named
// parameters (a JSON object) have already been mapped to positions using the
// Method's Params names, so handlers never see the difference.
//
// Conversions are lenient where the meaning is unambiguous, as Kamailio's RPC
// layer is: String accepts a JSON number (its literal text, so kamctl's
// "1001" typed as a number still works), Int accepts a string holding an
// integer, Bool accepts true/false, 0/1 and "true"/"false"/"yes"/"no"/"on"/"off".
// Anything else yields an *Error with code -32602.
type Params struct {
	raw   []json.RawMessage
	names []string // names[i] for messages; may be shorter than raw
}

// ParamsOf builds Params from Go values (marshalled to JSON); handy to call a
// handler directly in tests.
func ParamsOf(values ...any) Params {
	p := Params{}
	for _, v := range values {
		b, err := json.Marshal(v)
		if err != nil {
			b = []byte("null")
		}
		p.raw = append(p.raw, b)
	}
	return p
}

// Len is the number of positional parameters supplied (trailing omitted
// optional parameters are not counted).
func (p Params) Len() int { return len(p.raw) }

// Has reports whether parameter i was supplied and is not JSON null.
func (p Params) Has(i int) bool {
	return i >= 0 && i < len(p.raw) && !isNull(p.raw[i])
}

// Raw returns parameter i as raw JSON, or an error if it is missing.
func (p Params) Raw(i int) (json.RawMessage, error) {
	if !p.Has(i) {
		return nil, p.missing(i)
	}
	return p.raw[i], nil
}

func (p Params) name(i int) string {
	if i < len(p.names) && p.names[i] != "" {
		return p.names[i]
	}
	return "#" + strconv.Itoa(i+1)
}

func (p Params) missing(i int) *Error {
	return InvalidParamsf("%s: missing", p.name(i))
}

func (p Params) wrong(i int, want string) *Error {
	return InvalidParamsf("%s: expected %s, got %s", p.name(i), want, jsonKind(p.raw[i]))
}

// String returns parameter i as a string.
func (p Params) String(i int) (string, error) { return param(p, i, "string", asString) }

// StringOr returns parameter i as a string, or def when it was not supplied.
func (p Params) StringOr(i int, def string) (string, error) { return paramOr(p, i, def, p.String) }

// Strings returns parameters from..Len()-1 as strings (for variadic methods).
func (p Params) Strings(from int) ([]string, error) {
	var out []string
	for i := from; i < len(p.raw); i++ {
		s, err := p.String(i)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Int returns parameter i as an int.
func (p Params) Int(i int) (int, error) { return param(p, i, "int", asInt) }

// IntOr returns parameter i as an int, or def when it was not supplied.
func (p Params) IntOr(i int, def int) (int, error) { return paramOr(p, i, def, p.Int) }

// Float returns parameter i as a float64.
func (p Params) Float(i int) (float64, error) { return param(p, i, "number", asFloat) }

// Bool returns parameter i as a bool.
func (p Params) Bool(i int) (bool, error) { return param(p, i, "bool", asBool) }

// BoolOr returns parameter i as a bool, or def when it was not supplied.
func (p Params) BoolOr(i int, def bool) (bool, error) { return paramOr(p, i, def, p.Bool) }

// param is the accessors' one shape: missing, of the wrong kind, or the value.
func param[T any](p Params, i int, want string, conv func(json.RawMessage) (T, bool)) (T, error) {
	var zero T
	if !p.Has(i) {
		return zero, p.missing(i)
	}
	v, ok := conv(p.raw[i])
	if !ok {
		return zero, p.wrong(i, want)
	}
	return v, nil
}

// paramOr is get's value, or def when parameter i was not supplied.
func paramOr[T any](p Params, i int, def T, get func(int) (T, error)) (T, error) {
	if !p.Has(i) {
		return def, nil
	}
	return get(i)
}

// Decode unmarshals parameter i into v (for "any", "array" and "object" params).
func (p Params) Decode(i int, v any) error {
	if !p.Has(i) {
		return p.missing(i)
	}
	if err := json.Unmarshal(p.raw[i], v); err != nil {
		return InvalidParamsf("%s: %v", p.name(i), err)
	}
	return nil
}

func isNull(b json.RawMessage) bool {
	return string(bytes.TrimSpace(b)) == "null"
}

func jsonKind(b json.RawMessage) string {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	default:
		return "number"
	}
}

func asString(b json.RawMessage) (string, bool) {
	switch jsonKind(b) {
	case "string":
		var s string
		if json.Unmarshal(b, &s) != nil {
			return "", false
		}
		return s, true
	case "number":
		return string(bytes.TrimSpace(b)), true
	}
	return "", false
}

// numText is the text of a number param: a JSON number, or a string
// holding one (kamcmd sends numbers as strings); trimmed.
func numText(b json.RawMessage) (string, bool) {
	switch jsonKind(b) {
	case "number":
		return string(bytes.TrimSpace(b)), true
	case "string":
		var text string
		if json.Unmarshal(b, &text) != nil {
			return "", false
		}
		return strings.TrimSpace(text), true
	}
	return "", false
}

func asInt(b json.RawMessage) (int, bool) {
	text, ok := numText(b)
	if !ok {
		return 0, false
	}
	if n, err := strconv.ParseInt(text, 10, 0); err == nil {
		return int(n), true
	}
	// Accept integral floats such as 5.0 or 1e3.
	f, err := strconv.ParseFloat(text, 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int(f), true
}

func asFloat(b json.RawMessage) (float64, bool) {
	text, ok := numText(b)
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(text, 64)
	return f, err == nil && !math.IsInf(f, 0) && !math.IsNaN(f)
}

func asBool(b json.RawMessage) (bool, bool) {
	var text string
	switch jsonKind(b) {
	case "bool":
		return bytes.Equal(bytes.TrimSpace(b), []byte("true")), true
	case "number":
		text = string(bytes.TrimSpace(b))
	case "string":
		if json.Unmarshal(b, &text) != nil {
			return false, false
		}
	default:
		return false, false
	}
	switch strings.ToLower(strings.TrimSpace(text)) {
	case "1", "true", "yes", "on":
		return true, true
	case "0", "false", "no", "off":
		return false, true
	}
	return false, false
}

// checkType reports whether raw JSON value b is acceptable for a declared param type.
func checkType(typ string, b json.RawMessage) bool {
	switch typ {
	case "", TypeAny:
		return true
	case TypeString:
		_, ok := asString(b)
		return ok
	case TypeInt:
		_, ok := asInt(b)
		return ok
	case TypeFloat:
		_, ok := asFloat(b)
		return ok
	case TypeBool:
		_, ok := asBool(b)
		return ok
	case TypeArray:
		return jsonKind(b) == "array"
	case TypeObject:
		return jsonKind(b) == "object"
	}
	return false
}

package core

import "strconv"

// Kind is the dynamic type of a Val, mirroring KEMI's xval.
type Kind uint8

const (
	KNull Kind = iota
	KInt
	KStr
	KBool
)

// Val is a KEMI value passed to and returned from exported functions. It is
// a plain struct so that calls through the export table do not allocate.
type Val struct {
	Kind Kind
	Int  int64
	Str  string
}

var Null = Val{}

func Int(i int) Val    { return Val{Kind: KInt, Int: int64(i)} }
func Str(s string) Val { return Val{Kind: KStr, Str: s} }
func Bool(b bool) Val {
	if b {
		return Val{Kind: KBool, Int: 1}
	}
	return Val{Kind: KBool}
}

func (v Val) IsNull() bool { return v.Kind == KNull }

// Truth is KEMI's int convention: > 0 is success.
func (v Val) Truth() bool { return v.Int > 0 }

// String renders the value as Kamailio would print it in a log line.
func (v Val) String() string {
	switch v.Kind {
	case KInt:
		return strconv.FormatInt(v.Int, 10)
	case KStr:
		return v.Str
	case KBool:
		if v.Int != 0 {
			return "true"
		}
		return "false"
	}
	return "<null>"
}

// AsInt converts like Kamailio's str2sint: strings that are not numbers give ok=false.
func (v Val) AsInt() (int64, bool) {
	switch v.Kind {
	case KInt, KBool:
		return v.Int, true
	case KStr:
		i, err := strconv.ParseInt(v.Str, 10, 64)
		return i, err == nil
	}
	return 0, false
}

// Int01 is a 0/1 flag param's value.
func Int01(b bool) Val {
	if b {
		return Int(1)
	}
	return Int(0)
}

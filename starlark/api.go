package starlark

import (
	"github.com/kamgo/kamgo/modules/core"
	sk "go.starlark.net/starlark"
	"go.starlark.net/syntax"
)

// What the route-test harness (starlark/routetest) shares with the engine.

// ParseFile parses src in the dialect of kamd scripts (route test files use it too).
func ParseFile(path string, src []byte) (*syntax.File, error) { return fileOptions.Parse(path, src, 0) }

// EvalError turns a Starlark runtime error into "file:line:col: message"
// with its backtrace (a *ScriptError); other errors are returned as is.
func EvalError(err error) error { return evalErr(err) }

// IsStepLimit reports whether a Starlark error message is the step limit.
func IsStepLimit(msg string) bool { return isStepLimit(msg) }

// FromVal converts a core value to Starlark.
func FromVal(v core.Val) sk.Value { return fromVal(v) }

// ToVal converts a Starlark str, int, bool or None to a core value.
func ToVal(v sk.Value) (core.Val, error) { return toVal(v) }

// LogScriptError logs a callback's error as the transport's runs do.
func (e *Engine) LogScriptError(name string, m *core.Msg, err error) { e.logScriptErr(name, m, err) }

package routetest

// assert.* for route tests, with a want/got diff on failure.

import (
	"errors"
	"fmt"
	"github.com/kamgo/kamgo/starlark"
	"strings"

	sk "go.starlark.net/starlark"
	"go.starlark.net/syntax"
)

// AssertionError is a failed assert.*: Note is the test's own message (if
// any), Msg what was wrong (a got/want pair or a diff).
type AssertionError struct{ Note, Msg string }

func (e *AssertionError) Error() string {
	if e.Note != "" {
		return e.Note + "\n" + e.Msg
	}
	return e.Msg
}

func failf(msg sk.String, format string, args ...any) error {
	return &AssertionError{Note: string(msg), Msg: fmt.Sprintf(format, args...)}
}

// show renders a value for a failure message: strings and messages with
// several lines as their text.
func show(v sk.Value) string {
	switch x := v.(type) {
	case *msgObj:
		return x.text
	case sk.String:
		return x.GoString()
	}
	return v.String()
}

func multiline(v sk.Value) (string, bool) {
	switch x := v.(type) {
	case *msgObj:
		return strings.TrimRight(strings.ReplaceAll(x.text, "\r\n", "\n"), "\n"), true
	case sk.String:
		s := strings.ReplaceAll(string(x), "\r\n", "\n")
		return s, strings.Contains(strings.TrimRight(s, "\n"), "\n")
	}
	return "", false
}

// diffValues explains how got differs from want.
func diffValues(got, want sk.Value) string {
	g, gm := multiline(got)
	w, wm := multiline(want)
	if gm || wm {
		if !gm {
			g = show(got)
		}
		if !wm {
			w = show(want)
		}
		return "diff (- want, + got):\n" + lineDiff(strings.Split(w, "\n"), strings.Split(g, "\n"))
	}
	return fmt.Sprintf("got:  %s\nwant: %s", show(got), show(want))
}

// lineDiff is a longest-common-subsequence diff of two short line lists.
func lineDiff(a, b []string) string {
	n, m := len(a), len(b)
	if n*m > 4_000_000 {
		return "- " + strings.Join(a, "\n- ") + "\n+ " + strings.Join(b, "\n+ ")
	}
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var sb strings.Builder
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			sb.WriteString("  " + a[i] + "\n")
			i++
			j++
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			sb.WriteString("- " + a[i] + "\n")
			i++
		default:
			sb.WriteString("+ " + b[j] + "\n")
			j++
		}
	}
	return strings.TrimRight(sb.String(), "\n")
}

func assertEq(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
	var got, want sk.Value
	var msg sk.String
	if err := sk.UnpackArgs(b.Name(), args, kw, "got", &got, "want", &want, "msg?", &msg); err != nil {
		return nil, err
	}
	eq, err := sk.Equal(got, want)
	if err != nil {
		return nil, err
	}
	if !eq {
		return nil, failf(msg, "%s", diffValues(got, want))
	}
	return sk.None, nil
}

func assertNe(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
	var got, other sk.Value
	var msg sk.String
	if err := sk.UnpackArgs(b.Name(), args, kw, "got", &got, "other", &other, "msg?", &msg); err != nil {
		return nil, err
	}
	eq, err := sk.Equal(got, other)
	if err != nil {
		return nil, err
	}
	if eq {
		return nil, failf(msg, "got %s, want anything else", show(got))
	}
	return sk.None, nil
}

func assertTruth(want bool) func(*sk.Thread, *sk.Builtin, sk.Tuple, []sk.Tuple) (sk.Value, error) {
	return func(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
		var cond sk.Value
		var msg sk.String
		if err := sk.UnpackArgs(b.Name(), args, kw, "cond", &cond, "msg?", &msg); err != nil {
			return nil, err
		}
		if bool(cond.Truth()) != want {
			return nil, failf(msg, "got %s, want a %s value", show(cond), map[bool]string{true: "true", false: "false"}[want])
		}
		return sk.None, nil
	}
}

var (
	assertTrue  = assertTruth(true)
	assertFalse = assertTruth(false)
)

func assertContains(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
	var container, item sk.Value
	var msg sk.String
	if err := sk.UnpackArgs(b.Name(), args, kw, "container", &container, "item", &item, "msg?", &msg); err != nil {
		return nil, err
	}
	if m, ok := container.(*msgObj); ok {
		container = sk.String(m.text)
	}
	in, err := sk.Binary(syntax.IN, item, container)
	if err != nil {
		return nil, err
	}
	if !in.Truth() {
		return nil, failf(msg, "%s\ndoes not contain %s", show(container), show(item))
	}
	return sk.None, nil
}

func assertFails(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
	var fn sk.Callable
	var want string
	if err := sk.UnpackArgs(b.Name(), args, kw, "fn", &fn, "substring?", &want); err != nil {
		return nil, err
	}
	_, err := sk.Call(th, fn, nil, nil)
	if err == nil {
		return nil, &AssertionError{Msg: fmt.Sprintf("%s did not fail; want an error containing %q", fn.Name(), want)}
	}
	var ee *sk.EvalError
	text := err.Error()
	if errors.As(err, &ee) {
		text = ee.Msg
	}
	if starlark.IsStepLimit(text) || strings.Contains(text, "computation cancelled") {
		return nil, err // the test's own step, time or memory limit is not caught
	}
	if !strings.Contains(text, want) {
		return nil, &AssertionError{Msg: fmt.Sprintf("%s failed with %q\nwant an error containing %q", fn.Name(), text, want)}
	}
	return sk.String(text), nil
}

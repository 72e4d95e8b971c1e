package routetest

// The route test runner: each test_* function of a *_test.star file runs
// against a fresh Harness (fresh env, modules, engine and script).

import (
	"errors"
	"fmt"
	"github.com/kamgo/kamgo/starlark"
	"regexp"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	sk "go.starlark.net/starlark"
)

// DefaultTestMaxSteps bounds one test function (its own code; the script's
// callbacks have the engine's limit).
const DefaultTestMaxSteps = 10_000_000

// testLimits bound a test file's top level and each setup and test
// function, as the script's runs are (starlark.Guard): the script's memory
// budget, and more time, since one test may route many messages.
var testLimits = starlark.Limits{MemBudget: starlark.DefaultMemBudgetMB << 20, TimeLimit: time.Minute}

// RouteTestOptions configure RunRouteTests.
type RouteTestOptions struct {
	// Run selects tests by name (all when nil), like go test -run.
	Run *regexp.Regexp
	// MaxSteps bounds each test function (DefaultTestMaxSteps if 0).
	MaxSteps uint64
	Harness  HarnessOptions
	// OnStart and OnDone, when set, are told about each test as it runs.
	OnStart func(name string)
	OnDone  func(TestResult)

	// Limits bound the test file's top level and each test function
	// (memory budget, wall clock); nil: the script's default budget and
	// one minute.
	Limits *starlark.Limits
}

// TestResult is the outcome of one test function.
type TestResult struct {
	Name     string
	Pos      string // where the test is defined (file:line)
	Passed   bool
	FailPos  string // file:line where it failed
	Failure  string // what failed, possibly several lines
	Output   string // what the test print()ed
	Duration time.Duration
}

// TestReport is the outcome of one test file.
type TestReport struct {
	Script   string
	TestFile string
	Tests    []TestResult
	Duration time.Duration
}

// Failed counts the failed tests.
func (r *TestReport) Failed() int {
	n := 0
	for _, t := range r.Tests {
		if !t.Passed {
			n++
		}
	}
	return n
}

// TestFileFor names the test file of a script: route.star → route_test.star.
func TestFileFor(script string) string { return strings.TrimSuffix(script, ".star") + "_test.star" }

// ScriptFor names the script a test file tests: x_test.star → x.star.
func ScriptFor(testFile string) string { return strings.TrimSuffix(testFile, "_test.star") + ".star" }

type testFn struct {
	name string
	fn   *sk.Function
}

// RunRouteTests loads the script and the test file and runs the selected
// test functions. A script or test file that does not load is an error
// ("file:line:col: message"); failing tests are not.
func RunRouteTests(wire Wiring, scriptPath string, scriptSrc []byte, testPath string, testSrc []byte, opts RouteTestOptions) (*TestReport, error) {
	start := time.Now()
	if opts.MaxSteps == 0 {
		opts.MaxSteps = DefaultTestMaxSteps
	}
	if opts.Limits == nil {
		opts.Limits = &testLimits
	}
	// Load once up front so a broken script is reported once, as a load error.
	h, err := NewHarness(wire, scriptPath, scriptSrc, opts.Harness)
	if err != nil {
		return nil, err
	}
	h.Close()

	f, err := starlark.ParseFile(testPath, testSrc)
	if err != nil {
		return nil, err
	}
	pre := testPredeclared()
	prog, err := sk.FileProgram(f, pre.Has)
	if err != nil {
		return nil, err
	}
	th := &sk.Thread{Name: "init " + testPath, Load: noLoad}
	th.SetMaxExecutionSteps(opts.MaxSteps)
	var globals sk.StringDict
	err = starlark.Guard(th, "test file", *opts.Limits, func() (err error) {
		globals, err = prog.Init(th, pre)
		return err
	})
	if err != nil {
		return nil, starlark.EvalError(err)
	}
	globals.Freeze()

	var tests []testFn
	var setup *sk.Function
	for name, v := range globals {
		fn, ok := v.(*sk.Function)
		if !ok {
			continue
		}
		if name == "setup" {
			setup = fn
		}
		if strings.HasPrefix(name, "test_") && (opts.Run == nil || opts.Run.MatchString(name)) {
			tests = append(tests, testFn{name, fn})
		}
	}
	sort.Slice(tests, func(i, j int) bool { return tests[i].fn.Position().Line < tests[j].fn.Position().Line })

	rep := &TestReport{Script: scriptPath, TestFile: testPath}
	for _, t := range tests {
		if opts.OnStart != nil {
			opts.OnStart(t.name)
		}
		res := runOne(wire, scriptPath, scriptSrc, testPath, t, setup, opts)
		rep.Tests = append(rep.Tests, res)
		if opts.OnDone != nil {
			opts.OnDone(res)
		}
	}
	rep.Duration = time.Since(start)
	return rep, nil
}

func noLoad(*sk.Thread, string) (sk.StringDict, error) {
	return nil, errors.New("load() is not available in test files")
}

func shortPos(p interface {
	Filename() string
}, line int32) string {
	return fmt.Sprintf("%s:%d", p.Filename(), line)
}

func runOne(wire Wiring, scriptPath string, scriptSrc []byte, testPath string, t testFn, setup *sk.Function, opts RouteTestOptions) (res TestResult) {
	start := time.Now()
	def := t.fn.Position()
	res = TestResult{Name: t.name, Pos: shortPos(def, def.Line)}
	c := &testCtx{}
	defer func() {
		if r := recover(); r != nil {
			res.Passed = false
			res.FailPos = res.Pos
			res.Failure = fmt.Sprintf("panic: %v\n%s", r, debug.Stack())
		}
		res.Output = c.out.String()
		res.Duration = time.Since(start)
	}()
	if t.fn.NumParams() > 0 {
		res.FailPos, res.Failure = res.Pos, "test functions take no parameters"
		return res
	}
	h, err := NewHarness(wire, scriptPath, scriptSrc, opts.Harness)
	if err != nil {
		res.FailPos, res.Failure = res.Pos, "loading the script: "+err.Error()
		return res
	}
	defer h.Close()
	c.h = h
	th := &sk.Thread{Name: t.name, Load: noLoad, Print: func(_ *sk.Thread, msg string) {
		c.out.WriteString(msg)
		c.out.WriteByte('\n')
	}}
	th.SetLocal(testCtxKey, c)
	th.SetMaxExecutionSteps(opts.MaxSteps)
	if setup != nil {
		if err = starlark.Guard(th, "setup", *opts.Limits, func() error { _, err := sk.Call(th, setup, nil, nil); return err }); err != nil {
			res.FailPos, res.Failure = failure(testPath, def.Filename(), err, c)
			res.Failure = "in setup: " + res.Failure
			return res
		}
	}
	if err = starlark.Guard(th, t.name, *opts.Limits, func() error { _, err := sk.Call(th, t.fn, nil, nil); return err }); err != nil {
		res.FailPos, res.Failure = failure(testPath, def.Filename(), err, c)
		if res.FailPos == "" {
			res.FailPos = res.Pos
		}
		return res
	}
	res.Passed = true
	return res
}

// failure explains a test's error: the assertion (or error) with the test
// file position it happened at, and what the last route did.
func failure(testPath, defFile string, err error, c *testCtx) (pos, text string) {
	var ee *sk.EvalError
	var ae *AssertionError
	var b strings.Builder
	if errors.As(err, &ee) {
		for i := len(ee.CallStack) - 1; i >= 0; i-- {
			fr := ee.CallStack[i]
			if fr.Pos.Filename() == defFile || fr.Pos.Filename() == testPath {
				pos = shortPos(fr.Pos, fr.Pos.Line)
				break
			}
		}
	}
	switch {
	case errors.As(err, &ae):
		name := "assertion"
		if ee != nil && len(ee.CallStack) > 0 {
			name = ee.CallStack[len(ee.CallStack)-1].Name
		}
		head := "failed"
		if ae.Note != "" {
			head = ae.Note
		}
		b.WriteString(name + ": " + head + "\n")
		b.WriteString(indent(ae.Msg, "    ") + "\n")
	case ee != nil:
		if starlark.IsStepLimit(ee.Msg) {
			b.WriteString("the test function exceeded its step limit\n")
		} else {
			b.WriteString("error: " + ee.Msg + "\n")
		}
		bt := strings.TrimRight(ee.Backtrace(), "\n")
		if i := strings.LastIndex(bt, "\nError"); i >= 0 {
			bt = bt[:i] // the message again
		}
		b.WriteString(indent(bt, "    ") + "\n")
	default:
		b.WriteString("error: " + err.Error() + "\n")
	}
	if c.last != nil {
		b.WriteString("last route: " + summarize(c.last) + "\n")
	}
	return pos, strings.TrimRight(b.String(), "\n")
}

func indent(s, prefix string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "\n")
}

package main

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/kamgo/kamgo/kamd/node"
	"github.com/kamgo/kamgo/starlark/routetest"
)

// The embedded default script's route tests (kamd test --default).
//
//go:embed default_test.star
var defaultTests []byte

// DefaultTestsName is how the embedded tests show up in output.
const DefaultTestsName = "<embedded>/default_test.star"

const testUsage = `usage: kamd test [-run REGEX] [-v] FILE.star | FILE_test.star | DIR ... 
       kamd test [-run REGEX] [-v] --default

Runs route tests: each test_* function of x_test.star runs against a fresh
kamd loaded with x.star, with a recorder instead of the network.
A DIR is searched recursively for *_test.star files. --default tests the
embedded default script. Exit status: 0 all passed, 1 a test failed,
2 usage or load error. See docs/route-tests.md.
`

type testArgs struct {
	paths    []string
	run      *regexp.Regexp
	verbose  bool
	embedded bool
}

func parseTestArgs(args []string) (*testArgs, error) {
	a := &testArgs{}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		name, val, hasVal := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			a.paths = append(a.paths, arg)
			continue
		}
		switch name {
		case "v":
			a.verbose = true
		case "default":
			a.embedded = true
		case "run":
			if !hasVal {
				if i+1 >= len(args) {
					return nil, errors.New("-run needs a regular expression")
				}
				i++
				val = args[i]
			}
			re, err := regexp.Compile(val)
			if err != nil {
				return nil, fmt.Errorf("-run: %v", err)
			}
			a.run = re
		case "h", "help":
			return nil, flagHelp
		default:
			return nil, fmt.Errorf("unknown flag %s", arg)
		}
	}
	if len(a.paths) == 0 && !a.embedded {
		return nil, errors.New("nothing to test: give a script, a test file, a directory or --default")
	}
	return a, nil
}

var flagHelp = errors.New("help")

// suite is one script with its test file.
type suite struct {
	script, tests       string
	scriptSrc, testsSrc []byte
}

// findSuites resolves the command line into script/test-file pairs.
func findSuites(a *testArgs) ([]suite, error) {
	var out []suite
	if a.embedded {
		out = append(out, suite{DefaultScriptName, DefaultTestsName, defaultScript, defaultTests})
	}
	for _, p := range a.paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if st.IsDir() {
			var found []string
			err := filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if d.IsDir() && path != p && strings.HasPrefix(d.Name(), ".") {
					return filepath.SkipDir
				}
				if !d.IsDir() && strings.HasSuffix(d.Name(), "_test.star") {
					found = append(found, path)
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			sort.Strings(found)
			for _, t := range found {
				out = append(out, suite{script: routetest.ScriptFor(t), tests: t})
			}
			continue
		}
		switch {
		case strings.HasSuffix(p, "_test.star"):
			out = append(out, suite{script: routetest.ScriptFor(p), tests: p})
		case strings.HasSuffix(p, ".star"):
			out = append(out, suite{script: p, tests: routetest.TestFileFor(p)})
		default:
			return nil, fmt.Errorf("%s: not a .star file or a directory", p)
		}
	}
	return out, nil
}

// runTests is `kamd test`: route unit tests (docs/route-tests.md).
func runTests(args []string, stdout, stderr io.Writer) int {
	a, err := parseTestArgs(args)
	if err != nil {
		if errors.Is(err, flagHelp) {
			fmt.Fprint(stdout, testUsage)
			return 0
		}
		fmt.Fprintf(stderr, "kamd test: %v\n%s", err, testUsage)
		return 2
	}
	suites, err := findSuites(a)
	if err != nil {
		fmt.Fprintln(stderr, "kamd test:", err)
		return 2
	}
	if len(suites) == 0 {
		fmt.Fprintf(stdout, "?   \t%s\t[no test files]\n", strings.Join(a.paths, " "))
		return 0
	}
	code := 0
	for _, s := range suites {
		if c := runSuite(s, a, stdout, stderr); c > code {
			code = c
		}
	}
	return code
}

func runSuite(s suite, a *testArgs, stdout, stderr io.Writer) int {
	start := time.Now()
	if s.scriptSrc == nil {
		var err error
		if s.testsSrc, err = os.ReadFile(s.tests); err != nil {
			fmt.Fprintf(stderr, "kamd test: %s: no test file: %v\n", s.script, err)
			fmt.Fprintf(stdout, "FAIL\t%s\t[no test file]\n", s.script)
			return 2
		}
		if s.scriptSrc, err = os.ReadFile(s.script); err != nil {
			fmt.Fprintf(stderr, "kamd test: %s tests %s, which cannot be read: %v\n", s.tests, s.script, err)
			fmt.Fprintf(stdout, "FAIL\t%s\t[load error]\n", s.script)
			return 2
		}
	}
	opts := routetest.RouteTestOptions{Run: a.run}
	if a.verbose {
		opts.OnStart = func(name string) { fmt.Fprintf(stdout, "=== RUN   %s\n", name) }
	}
	opts.OnDone = func(t routetest.TestResult) { printResult(stdout, t, a.verbose) }
	rep, err := routetest.RunRouteTests(node.RouteTest, s.script, s.scriptSrc, s.tests, s.testsSrc, opts)
	if err != nil {
		fmt.Fprintln(stderr, err)
		fmt.Fprintf(stdout, "FAIL\t%s\t[load error]\n", s.script)
		return 2
	}
	elapsed := fmt.Sprintf("%.3fs", time.Since(start).Seconds())
	if rep.Failed() > 0 {
		fmt.Fprintln(stdout, "FAIL")
		fmt.Fprintf(stdout, "FAIL\t%s\t%s\t(%d of %d tests failed)\n", s.script, elapsed, rep.Failed(), len(rep.Tests))
		return 1
	}
	fmt.Fprintln(stdout, "PASS")
	note := fmt.Sprintf("(%d tests)", len(rep.Tests))
	if len(rep.Tests) == 0 {
		note = "[no tests to run]"
	}
	fmt.Fprintf(stdout, "ok  \t%s\t%s\t%s\n", s.script, elapsed, note)
	return 0
}

func printResult(w io.Writer, t routetest.TestResult, verbose bool) {
	if t.Passed {
		if verbose {
			fmt.Fprintf(w, "--- PASS: %s (%.2fs)\n", t.Name, t.Duration.Seconds())
			printIndented(w, t.Output)
		}
		return
	}
	fmt.Fprintf(w, "--- FAIL: %s (%s)\n", t.Name, t.FailPos)
	printIndented(w, t.Failure)
	printIndented(w, t.Output)
}

func printIndented(w io.Writer, s string) {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return
	}
	for _, l := range strings.Split(s, "\n") {
		fmt.Fprintln(w, "    "+l)
	}
}

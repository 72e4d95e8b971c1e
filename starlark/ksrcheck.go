package starlark

// Load-time checks of literal KSR names (issue 13): a script that calls
// KSR.pike.pike_check_req on a kamd without pike must fail `kamd -c` and
// every load, with file:line:col and the nearest known names, instead of a
// Starlark "module has no .pike field or method" on the first live request.
// mod_init runs here too: before messages flow it may log, and a function
// that needs a message says so.

import (
	"fmt"
	"sort"
	"strings"

	"github.com/kamgo/kamgo/modules/core"
	"go.starlark.net/resolve"
	sk "go.starlark.net/starlark"
	"go.starlark.net/syntax"
)

// ksrNames is the KSR tree by name: "" holds the core functions.
type ksrNames struct {
	mods  map[string]map[string]bool // module -> function names
	where map[string][]string        // function -> modules defining it
	funcs map[string]*core.Func      // "mod.name" -> its table entry
}

func (e *Engine) ksrIndex() *ksrNames {
	e.ksrOnce.Do(func() {
		n := &ksrNames{mods: map[string]map[string]bool{}, where: map[string][]string{}, funcs: map[string]*core.Func{}}
		for _, mod := range e.Modules {
			if n.mods[mod.Name] == nil {
				n.mods[mod.Name] = map[string]bool{}
			}
			for i := range mod.Funcs {
				f := mod.Funcs[i].Name
				n.mods[mod.Name][f] = true
				n.funcs[mod.Name+"."+f] = &mod.Funcs[i]
				n.where[f] = append(n.where[f], mod.Name)
			}
		}
		e.ksrNames = n
	})
	return e.ksrNames
}

// checkKSRNames walks f (already resolved by FileProgram) for dotted
// chains starting at the predeclared KSR and for KSR.x.modf's literal
// native name; the first unknown name is the error.
func (e *Engine) checkKSRNames(f *syntax.File) error {
	n := e.ksrIndex()
	var firstErr error
	fail := func(pos syntax.Position, format string, args ...any) {
		if firstErr == nil {
			firstErr = fmt.Errorf("%s: %s", pos, fmt.Sprintf(format, args...))
		}
	}
	// inner marks KSR.mod nodes that are the X of a longer chain, so
	// KSR.nosuch.f reports a module and KSR.nosuch(...) a function.
	inner := map[*syntax.DotExpr]bool{}
	syntax.Walk(f, func(node syntax.Node) bool {
		if d, ok := node.(*syntax.DotExpr); ok {
			if x, ok := d.X.(*syntax.DotExpr); ok {
				inner[x] = true
			}
		}
		return true
	})
	// Globals bound once to a KSR module (sl = KSR.sl): sl.f is checked as
	// KSR.sl.f. Globals cannot be reassigned, so the binding is the module.
	aliases := map[*resolve.Binding]string{}
	for _, st := range f.Stmts {
		as, ok := st.(*syntax.AssignStmt)
		if !ok || as.Op != syntax.EQ {
			continue
		}
		lhs, ok1 := as.LHS.(*syntax.Ident)
		rhs, ok2 := as.RHS.(*syntax.DotExpr)
		if !ok1 || !ok2 || !isKSR(rhs.X) {
			continue
		}
		if b, ok := lhs.Binding.(*resolve.Binding); ok && b != nil && b.Scope == resolve.Global {
			if _, isMod := n.mods[rhs.Name.Name]; isMod && rhs.Name.Name != "" {
				aliases[b] = rhs.Name.Name
			}
		}
	}
	syntax.Walk(f, func(node syntax.Node) bool {
		if firstErr != nil {
			return false
		}
		switch d := node.(type) {
		case *syntax.DotExpr:
			if id, ok := d.X.(*syntax.Ident); ok {
				if b, ok := id.Binding.(*resolve.Binding); ok && aliases[b] != "" && !n.mods[aliases[b]][d.Name.Name] {
					mod := aliases[b]
					fail(d.Name.NamePos, "%s (KSR.%s) has no function %s%s", id.Name, mod, d.Name.Name, n.suggestFunc(d.Name.Name, mod))
					return true
				}
			}
			if isKSR(d.X) { // KSR.name
				name := d.Name.Name
				_, isMod := n.mods[name]
				isFn := n.mods[""][name]
				switch {
				case name == "":
				case inner[d] && !isMod && isFn:
					fail(d.Name.NamePos, "KSR.%s is a function, not a module", name)
				case inner[d] && !isMod:
					fail(d.Name.NamePos, "KSR has no module %s%s", name, didYouMean(name, n.moduleNames(), ""))
				case !inner[d] && !isMod && !isFn:
					fail(d.Name.NamePos, "KSR has no function %s%s", name, n.suggestFunc(name, ""))
				}
				return true
			}
			if x, ok := d.X.(*syntax.DotExpr); ok && isKSR(x.X) { // KSR.mod.name
				mod, name := x.Name.Name, d.Name.Name
				fns, isMod := n.mods[mod]
				if isMod && mod != "" && !fns[name] {
					fail(d.Name.NamePos, "KSR.%s has no function %s%s", mod, name, n.suggestFunc(name, mod))
				}
			}
		case *syntax.CallExpr: // KSR.x.modf("native", ...)
			e.checkArity(n, d, aliases, fail)
			fn, ok := d.Fn.(*syntax.DotExpr)
			if !ok || fn.Name.Name != "modf" || len(d.Args) == 0 {
				return true
			}
			if x, ok := fn.X.(*syntax.DotExpr); !ok || x.Name.Name != "x" || !isKSR(x.X) {
				return true
			}
			lit, ok := d.Args[0].(*syntax.Literal)
			if !ok || lit.Token != syntax.STRING {
				return true
			}
			if s, _ := lit.Value.(string); e.funcs[s] == nil {
				fail(lit.TokenPos, "KSR.x.modf: no module function %q%s", s, didYouMean(s, sortedKeys(e.funcs), ""))
			}
		}
		return true
	})
	return firstErr
}

// checkArity fails a literal call of a KSR function with the wrong number
// of arguments (KSR functions take exactly their table's arguments).
func (e *Engine) checkArity(n *ksrNames, call *syntax.CallExpr, aliases map[*resolve.Binding]string, fail func(syntax.Position, string, ...any)) {
	d, ok := call.Fn.(*syntax.DotExpr)
	if !ok {
		return
	}
	mod, found := "", false
	switch x := d.X.(type) {
	case *syntax.Ident:
		if isKSR(x) {
			found = true
		} else if b, ok := x.Binding.(*resolve.Binding); ok && aliases[b] != "" {
			mod, found = aliases[b], true
		}
	case *syntax.DotExpr:
		if isKSR(x.X) {
			mod, found = x.Name.Name, true
		}
	}
	if !found || (mod == "x" && d.Name.Name == "modf") {
		return
	}
	f := n.funcs[mod+"."+d.Name.Name]
	if f == nil {
		return
	}
	for _, a := range call.Args {
		switch a := a.(type) {
		case *syntax.UnaryExpr: // *args, **kwargs: unknown count
			if a.Op == syntax.STAR || a.Op == syntax.STARSTAR {
				return
			}
		}
	}
	if !f.ArityOK(len(call.Args)) {
		fail(call.Lparen, "%s takes %s arguments %s, got %d", ksrPath(mod, f.Name), f.ArityString(), typeList(f), len(call.Args))
	}
}

// isKSR reports whether x is the predeclared KSR (not a local shadowing it).
func isKSR(x syntax.Expr) bool {
	id, ok := x.(*syntax.Ident)
	if !ok || id.Name != "KSR" {
		return false
	}
	b, ok := id.Binding.(*resolve.Binding)
	return !ok || b == nil || b.Scope == resolve.Predeclared || b.Scope == resolve.Universal
}

func (n *ksrNames) moduleNames() []string {
	var out []string
	for m := range n.mods {
		if m != "" {
			out = append(out, m)
		}
	}
	sort.Strings(out)
	return out
}

// suggestFunc names where name really is (KSR.tm.sl_send_reply -> KSR.sl.sl_send_reply)
// or else the nearest names in mod.
func (n *ksrNames) suggestFunc(name, mod string) string {
	if elsewhere := n.where[name]; len(elsewhere) > 0 {
		var paths []string
		for _, m := range elsewhere {
			paths = append(paths, ksrPath(m, name))
		}
		return " (did you mean " + strings.Join(paths, " or ") + "?)"
	}
	var names []string
	for f := range n.mods[mod] {
		names = append(names, f)
	}
	if mod == "" {
		names = append(names, n.moduleNames()...)
	}
	sort.Strings(names)
	return didYouMean(name, names, mod)
}

func ksrPath(mod, name string) string {
	if mod == "" {
		return "KSR." + name
	}
	return "KSR." + mod + "." + name
}

// didYouMean lists up to three known names nearest to name (edit distance
// within about a third of its length, or sharing a prefix).
func didYouMean(name string, known []string, mod string) string {
	type cand struct {
		s string
		d int
	}
	var cs []cand
	limit := max(2, len(name)/3)
	for _, k := range known {
		d := editDistance(strings.ToLower(name), strings.ToLower(k))
		if d <= limit || (len(name) >= 4 && (strings.HasPrefix(k, name) || strings.HasPrefix(name, k) && len(k) >= 4)) {
			cs = append(cs, cand{k, d})
		}
	}
	if len(cs) == 0 {
		return ""
	}
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].d < cs[j].d })
	var out []string
	for i := 0; i < len(cs) && i < 3; i++ {
		if mod == "" && len(known) > 0 {
			out = append(out, "KSR."+cs[i].s)
		} else {
			out = append(out, ksrPath(mod, cs[i].s))
		}
	}
	return " (did you mean " + strings.Join(out, ", ") + "?)"
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// initSafe lists what mod_init may call: it runs once per load, before any
// message, so only logging and variables that need no message ($var,
// $shv) make sense there.
var initSafe = map[string]map[string]bool{
	"":     {"dbg": true, "info": true, "notice": true, "warn": true, "err": true, "crit": true, "log": true},
	"xlog": {"xdbg": true, "xinfo": true, "xnotice": true, "xwarn": true, "xerr": true, "xcrit": true, "xalert": true, "xlog": true},
	"pv":   nil, // checked per PV name: see initPV
}

// initCheck is the builtin wrapper's gate while mod_init runs: nil when
// mod/name may run without a message, else the error the script sees.
func initCheck(mod, name string, args sk.Tuple) error {
	if initSafe[mod][name] {
		return nil
	}
	if mod == "pv" && len(args) > 0 {
		if s, ok := args[0].(sk.String); ok && initPV(string(s)) {
			return nil
		}
	}
	return fmt.Errorf("%s needs a SIP message: %s runs once per load, before messages flow (logging, $var and $shv only)", ksrPath(mod, name), ModInit)
}

// initPV reports whether a PV can be used without a message.
func initPV(name string) bool {
	return strings.HasPrefix(name, "$shv(") || strings.HasPrefix(name, "$var(")
}

// runModInit calls mod_init with a message-less context, so KSR logging
// works there and other functions fail with initCheck's error.
func (e *Engine) runModInit(p *Program, fn *sk.Function) (err error) {
	th := &sk.Thread{Name: ModInit, Print: e.printer()}
	c := &callCtx{th: th, init: true}
	c.where = func() string { return th.CallFrame(1).Pos.String() }
	c.msg = &core.Msg{Env: e.Env, RouteType: core.RouteEvent, Prog: p, Where: c.where, Event: ModInit}
	th.SetLocal(ctxKey, c)
	th.SetMaxExecutionSteps(p.MaxSteps)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: panic: %v", ModInit, r)
		}
	}()
	err = guardLoad(th, ModInit, p.Limits, func() error {
		_, err := sk.Call(th, fn, nil, nil)
		return err
	})
	if err != nil {
		return evalErr(err)
	}
	return nil
}

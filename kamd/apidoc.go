package main

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/kamgo/kamgo/kamd/node"
)

// apiDoc renders the KSR and RPC reference from the export tables, so the
// docs cannot drift from the code (kamd apidoc > docs/ksr-api.md; a test
// checks the file is current).
func apiDoc(w io.Writer) {
	// The node the daemon would build from its embedded script, with RPC
	// off: its registry holds every method (kamd's table, the modules',
	// the rpc package's own).
	n, err := node.New(node.Options{Path: DefaultScriptName, Src: defaultScript, RPCAddr: "off", LogOutput: io.Discard, Version: Version})
	if err != nil {
		panic("apidoc: the embedded script does not load: " + err.Error())
	}
	eng := n.Engine
	fmt.Fprintln(w, "# KSR and RPC reference")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Generated from the modules' export tables by `go run ./kamd apidoc > docs/ksr-api.md`; do not edit.")
	fmt.Fprintln(w, "Return types follow KEMI: `int` (> 0 success, < 0 failure, 0 stop), `bool`, `xval` (str, int or None), `none`.")
	fmt.Fprintln(w, "Arguments are strict: a missing, extra or wrongly typed argument is a script error; `[str]` is an optional trailing argument (Kamailio's `f(a[, b])`).")
	fmt.Fprintln(w)
	mod := "\x00"
	for _, f := range eng.Funcs() {
		if f.Module != mod {
			mod = f.Module
			title := "KSR (core)"
			if mod != "" {
				title = "KSR." + mod
			}
			fmt.Fprintf(w, "\n## %s\n\n| function | returns | description |\n|---|---|---|\n", title)
		}
		args := f.Func.ParamsString()
		if f.Module == "x" && f.Func.Name == "modf" {
			args = "str, str..."
		} else if args == "none" {
			args = ""
		} else if f.Func.MinArgs > 0 {
			// Sig brackets the optional arguments; keep its list only.
			s := f.Func.Sig()
			args = s[strings.IndexByte(s, '(')+1 : strings.LastIndexByte(s, ')')]
		}
		fmt.Fprintf(w, "| `%s(%s)` | %s | %s |\n", f.Path(), args, f.Func.Ret, strings.ReplaceAll(f.Func.Doc, "|", "\\|"))
	}
	fmt.Fprintf(w, "\n## Module parameters (`modparam`)\n\n| module | name | type | default | description |\n|---|---|---|---|---|\n")
	for _, m := range eng.Modules {
		for _, p := range m.Params {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", m.Name, p.Name, p.Type, p.Default, p.Doc)
		}
	}
	fmt.Fprintf(w, "\n## Pseudo-variables\n\n| name | module | writable | description |\n|---|---|---|---|\n")
	for _, p := range eng.PVs() {
		rw := "no"
		if p.Def.Set != nil {
			rw = "yes"
		}
		fmt.Fprintf(w, "| `%s` | %s | %s | %s |\n", p.Spec(), moduleName(p.Module), rw, p.Def.Doc)
	}
	fmt.Fprintf(w, "\n## Event topics\n\nPublished to `events.subscribe` subscribers (see docs/rpc.md); `stats` is kamd's periodic snapshot.\n\n| topic | module |\n|---|---|\n")
	for _, m := range eng.Modules {
		for _, t := range m.Events {
			fmt.Fprintf(w, "| `%s` | %s |\n", t, moduleName(m.Name))
		}
	}
	fmt.Fprintf(w, "\n## RPC methods\n\nkamd's own (`core.*`, `stats.*`, `app_starlark.*`), the rpc server's (`system.*`, `events.*`, see docs/rpc.md) and the modules'.\n\n| method | role | params | result | description |\n|---|---|---|---|---|\n")
	type row struct{ name, role, params, result, doc string }
	var rows []row
	for _, name := range n.RPC.Methods() {
		m, _ := n.RPC.Method(name)
		var ps []string
		for _, p := range m.Params {
			s := p.Name
			if p.Optional {
				s += "?"
			}
			if p.Variadic {
				s += "..."
			}
			ps = append(ps, s)
		}
		rows = append(rows, row{m.Name, role(m.ReadOnly), strings.Join(ps, ", "), m.Result, strings.ReplaceAll(m.Doc, "|", "\\|")})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].name < rows[j].name })
	for _, r := range rows {
		fmt.Fprintf(w, "| `%s` | %s | %s | `%s` | %s |\n", r.name, r.role, r.params, strings.ReplaceAll(r.result, "|", "\\|"), r.doc)
	}
}

// moduleName shows the core module ("") as core.
func moduleName(m string) string {
	if m == "" {
		return "core"
	}
	return m
}

func role(ro bool) string {
	if ro {
		return "read-only"
	}
	return "admin"
}

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/kamgo/kamgo/rpc"
)

// pager describes a dump kamctl pages through itself, so that `kamctl
// ul.dump` prints every record while each reply stays small (kamd bounds a
// reply's size; see docs/rpc.md "Paging").
type pager struct {
	limitAt  int    // position of the limit param (the cursor follows it)
	pageSize int    // records asked per page
	next     string // member of a page holding the next cursor
	records  string // member holding the records ("" for ul.dump's Domains)
}

var pageable = map[string]pager{
	"ul.dump":      {limitAt: 1, pageSize: 500, next: "Next"},
	"uac.reg_dump": {limitAt: 1, pageSize: 1000, next: "next", records: "records"},
}

// paged prints a pageable dump page by page, holding one page at a time,
// in the shape the unpaged dump prints. ok is false when the caller gave
// paging params itself (then the method is called as typed).
func (a *app) paged(method string, params []any) (code int, ok bool) {
	pg, found := pageable[method]
	if !found || len(params) > pg.limitAt {
		return 0, false
	}
	base := append([]any(nil), params...)
	for len(base) < pg.limitAt {
		base = append(base, nil)
	}
	var out pageWriter
	if pg.records != "" {
		out = &arrayPages{a: a}
	} else {
		out = &domainPages{a: a}
	}
	cursor := ""
	size := pg.pageSize
	for first := true; ; first = false {
		p := append(append([]any(nil), base...), size)
		if cursor != "" {
			p = append(p, cursor)
		}
		res, err := a.call(method, p)
		var rerr *rpc.Error
		if first && errors.As(err, &rerr) && rerr.Code == rpc.CodeInvalidParams {
			return 0, false // a server without paging params: call it as typed
		}
		if errors.As(err, &rerr) && rerr.Code == rpc.CodeTooLarge && size > 1 {
			// Records larger than guessed (many contacts each): smaller pages.
			size = max(size/4, 1)
			continue
		}
		if err != nil {
			if !first {
				out.end()
			}
			return a.fail(err), true
		}
		var page map[string]json.RawMessage
		if json.Unmarshal(res, &page) != nil || (pg.records != "" && page[pg.records] == nil) {
			// Not a paged answer (a server without paging): print it whole.
			if first {
				return a.print(res), true
			}
			out.end()
			fmt.Fprintf(a.stderr, "kamctl: bad page from %s\n", method)
			return exitUsage, true
		}
		if err := out.page(page, pg.records); err != nil {
			fmt.Fprintf(a.stderr, "kamctl: bad page from %s: %v\n", method, err)
			return exitUsage, true
		}
		next := ""
		if raw, ok := page[pg.next]; ok && json.Unmarshal(raw, &next) != nil {
			next = ""
		}
		if next == "" {
			out.end()
			return exitOK, true
		}
		cursor = next
	}
}

type pageWriter interface {
	page(page map[string]json.RawMessage, records string) error
	end()
}

// arrayPages prints uac.reg_dump's pages as its unpaged array.
type arrayPages struct {
	a *app
	n int
}

func (p *arrayPages) page(page map[string]json.RawMessage, records string) error {
	var recs []json.RawMessage
	if err := json.Unmarshal(page[records], &recs); err != nil {
		return err
	}
	w := p.a.stdout
	for _, r := range recs {
		if p.a.json {
			if p.n == 0 {
				io.WriteString(w, "[\n  ")
			} else {
				io.WriteString(w, ",\n  ")
			}
			writeIndented(w, r, "  ")
		} else if err := printReadable(w, r); err != nil {
			return err
		}
		p.n++
	}
	return nil
}

func (p *arrayPages) end() {
	if !p.a.json {
		return
	}
	if p.n == 0 {
		io.WriteString(p.a.stdout, "[]\n")
		return
	}
	io.WriteString(p.a.stdout, "\n]\n")
}

// domainPages prints ul.dump's pages as one unpaged dump: a domain split
// over pages is printed once, its AoRs in page order, its Stats at its end.
type domainPages struct {
	a       *app
	started bool
	open    string          // the domain being printed
	stats   json.RawMessage // its Stats, printed when it ends
	aors    int             // AoRs printed in it
	doms    int             // domains printed
}

type dumpDomain struct {
	Domain string            `json:"Domain"`
	Size   json.RawMessage   `json:"Size"`
	AoRs   []json.RawMessage `json:"AoRs"`
	Stats  json.RawMessage   `json:"Stats"`
}

func (p *domainPages) page(page map[string]json.RawMessage, _ string) error {
	var doms []struct {
		Domain dumpDomain `json:"Domain"`
	}
	if err := json.Unmarshal(page["Domains"], &doms); err != nil {
		return err
	}
	w, js := p.a.stdout, p.a.json
	p.started = true
	for _, d := range doms {
		if p.doms == 0 {
			if js {
				io.WriteString(w, "{\n  \"Domains\": [")
			} else {
				io.WriteString(w, "{\n\tDomains: [\n")
			}
		}
		dd := d.Domain
		if !(p.doms > 0 && dd.Domain == p.open) {
			p.closeDomain()
			if js {
				if p.doms > 0 {
					io.WriteString(w, ",")
				}
				name, _ := json.Marshal(dd.Domain)
				fmt.Fprintf(w, "\n    {\n      \"Domain\": {\n        \"Domain\": %s,\n        \"Size\": %s,\n        \"AoRs\": [", name, dd.Size)
			} else {
				fmt.Fprintf(w, "\t\t{\n\t\t\tDomain: {\n\t\t\t\tDomain: %s\n\t\t\t\tSize: %s\n", dd.Domain, dd.Size)
			}
			p.open, p.aors = dd.Domain, 0
			p.doms++
		}
		for _, aor := range dd.AoRs {
			switch {
			case js:
				if p.aors > 0 {
					io.WriteString(w, ",")
				}
				io.WriteString(w, "\n          ")
				writeIndented(w, aor, strings.Repeat(" ", 10))
			default:
				if p.aors == 0 {
					io.WriteString(w, "\t\t\t\tAoRs: [\n")
				}
				v, err := decodeOrdered(aor)
				if err != nil {
					return err
				}
				printElem(w, v, 5)
			}
			p.aors++
		}
		p.stats = dd.Stats
	}
	return nil
}

func (p *domainPages) closeDomain() {
	if p.doms == 0 {
		return
	}
	w := p.a.stdout
	if p.a.json {
		if p.aors > 0 {
			io.WriteString(w, "\n        ")
		}
		io.WriteString(w, "],\n        \"Stats\": ")
		writeIndented(w, p.stats, strings.Repeat(" ", 8))
		io.WriteString(w, "\n      }\n    }")
		return
	}
	if p.aors == 0 {
		io.WriteString(w, "\t\t\t\tAoRs: []\n")
	} else {
		io.WriteString(w, "\t\t\t\t]\n")
	}
	if v, err := decodeOrdered(p.stats); err == nil && v.kind == 'o' {
		printMembers(w, &value{kind: 'o', keys: []string{"Stats"}, vals: []*value{v}}, 4)
	}
	io.WriteString(w, "\t\t\t}\n\t\t}\n")
}

func (p *domainPages) end() {
	if !p.started {
		return
	}
	if p.doms == 0 {
		if p.a.json {
			io.WriteString(p.a.stdout, "{\n  \"Domains\": []\n}\n")
		} else {
			io.WriteString(p.a.stdout, "{\n\tDomains: []\n}\n")
		}
		return
	}
	p.closeDomain()
	if p.a.json {
		if p.doms > 0 {
			io.WriteString(p.a.stdout, "\n  ")
		}
		io.WriteString(p.a.stdout, "]\n}\n")
		return
	}
	io.WriteString(p.a.stdout, "\t]\n}\n")
}

// writeIndented writes raw JSON indented by two spaces, its inner lines
// prefixed (it starts at the cursor).
func writeIndented(w io.Writer, raw json.RawMessage, prefix string) {
	var b bytes.Buffer
	if json.Indent(&b, raw, prefix, "  ") != nil {
		w.Write(raw)
		return
	}
	w.Write(b.Bytes())
}

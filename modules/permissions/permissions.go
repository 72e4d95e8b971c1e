// Package permissions is the address part of Kamailio's permissions
// module: the address table (groups of IP addresses and subnets with an
// optional port and tag) and allow_source_address/allow_address.
package permissions

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/kamgo/kamgo/modules/core"
)

func init() { core.Register(New) }

// Entry is one address table row.
type Entry struct {
	ID    int64
	Grp   int
	IP    string
	Mask  int
	Port  int
	Tag   string
	ipnet *net.IPNet
}

// Perm is one permissions instance.
type Perm struct {
	env                 *core.Env
	dbURL, table, tagPV atomic.Pointer[string]
	mu                  sync.RWMutex
	entries             []*Entry
}

var instances core.PerEnv[*Perm]

// Of returns the permissions module built for env.
func Of(env *core.Env) *Perm { return instances.Of(env) }

func strp(p *atomic.Pointer[string]) string {
	if s := p.Load(); s != nil {
		return *s
	}
	return ""
}

// New builds the permissions module.
func New(env *core.Env) *core.Module {
	p := &Perm{env: env}
	instances.Set(env, p)
	sp := func(name, def, doc string, v *atomic.Pointer[string], check func(core.Val) error) core.Param {
		return core.Param{Name: name, Type: core.ArgStr, Default: core.Str(def), Doc: doc, Check: check,
			Set: func(x core.Val) error { s := x.Str; v.Store(&s); return nil }, Get: func() core.Val { return core.Str(strp(v)) }}
	}
	return core.ApplyDefaults(&core.Module{
		Name: "permissions",
		Doc:  "IP address access lists (the address table)",
		Params: []core.Param{
			sp("db_url", "", "sqlite:///path.db holding the address table; empty: kamd's database (--db)", &p.dbURL, nil),
			sp("address_table", "address", "the address table", &p.table, func(v core.Val) error {
				if !core.ValidSQLName(v.Str) {
					return fmt.Errorf("invalid table name %q", v.Str)
				}
				return nil
			}),
			sp("peer_tag_avp", "", "a $var(name) or $shv(name) set to the matching row's tag (Kamailio: an AVP)", &p.tagPV, func(v core.Val) error {
				if v.Str != "" && !strings.HasPrefix(v.Str, "$var(") && !strings.HasPrefix(v.Str, "$avp(") {
					return fmt.Errorf("peer_tag_avp %q: want $var(name) (or $avp(name), kept as $var)", v.Str)
				}
				return nil
			}),
		},
		Funcs: []core.Func{
			{Name: "allow_source_address", Args: []core.ArgType{core.ArgInt}, Ret: core.RetInt,
				Doc: "(group) the source IP and port match an entry of the group; 1, -1", Fn: func(m *core.Msg, a []core.Val) (core.Val, error) {
					return p.allow(m, int(a[0].Int), m.SrcIP, m.SrcPort), nil
				}},
			{Name: "allow_address", Args: []core.ArgType{core.ArgInt, core.ArgStr, core.ArgInt}, Ret: core.RetInt,
				Doc: "(group, ip, port) the address and port match an entry of the group; 1, -1", Fn: func(m *core.Msg, a []core.Val) (core.Val, error) {
					return p.allow(m, int(a[0].Int), a[1].Str, int(a[2].Int)), nil
				}},
			{Name: "allow_source_address_group", Ret: core.RetInt,
				Doc: "the group of the first entry the source IP and port match, else -1", Fn: func(m *core.Msg, _ []core.Val) (core.Val, error) {
					return core.Int(p.group(m, m.SrcIP, m.SrcPort)), nil
				}},
			{Name: "allow_address_group", Args: []core.ArgType{core.ArgStr, core.ArgInt}, Ret: core.RetInt,
				Doc: "(ip, port) the group of the first entry matching, else -1", Fn: func(m *core.Msg, a []core.Val) (core.Val, error) {
					return core.Int(p.group(m, a[0].Str, int(a[1].Int))), nil
				}},
		},
		RPC: []core.RPCMethod{
			{Name: "permissions.addressReload", Doc: "Reload the address table.", Result: `{} (Kamailio prints \"Reload OK\"); 500 "Reload failed."`,
				Handler: func(ctx context.Context, _ core.RPCArgs) (any, error) {
					if err := p.Reload(); err != nil {
						p.env.Log.Error("permissions: reload failed", "err", err)
						return nil, &core.RPCError{Code: 500, Message: "Reload failed."}
					}
					return nil, nil
				}},
			{Name: "permissions.addressDump", Doc: "Dump the single addresses (mask 32 or 128) of the address table.", ReadOnly: true,
				Result: `[{"table": slot, "group", "item": {"ip", "port", "tag"}}]`, Handler: func(ctx context.Context, _ core.RPCArgs) (any, error) { return p.dump(false), nil }},
			{Name: "permissions.subnetDump", Doc: "Dump the subnets of the address table.", ReadOnly: true,
				Result: `[{"id": index, "group", "item": {"ip", "mask", "port", "tag"}}]`, Handler: func(ctx context.Context, _ core.RPCArgs) (any, error) { return p.dump(true), nil }},
		},
		Init: p.Reload,
	})
}

// Kamailio's address table, version 6.
func schema(name string) core.TableSchema {
	return core.TableSchema{Name: name, Version: 6, Create: []string{`CREATE TABLE IF NOT EXISTS ` + name + ` (
		id INTEGER PRIMARY KEY NOT NULL,
		grp INTEGER DEFAULT 1 NOT NULL,
		ip_addr VARCHAR(50) NOT NULL,
		mask INTEGER DEFAULT 32 NOT NULL,
		port SMALLINT DEFAULT 0 NOT NULL,
		tag VARCHAR(64))`}}
}

// Reload reads the address table (nothing when kamd has no database).
func (p *Perm) Reload() error {
	db, own, err := p.openDB()
	if err != nil || db == nil {
		return err
	}
	if own {
		defer db.Close()
	}
	table := strp(&p.table)
	if err := core.EnsureTable(db, schema(table)); err != nil {
		return fmt.Errorf("permissions: %w", err)
	}
	rows, err := db.Query(`SELECT id, grp, ip_addr, mask, port, tag FROM ` + table + ` ORDER BY id`)
	if err != nil {
		return fmt.Errorf("permissions: %s: %w", table, err)
	}
	defer rows.Close()
	var es []*Entry
	for rows.Next() {
		e := &Entry{}
		var tag sql.NullString
		if err := rows.Scan(&e.ID, &e.Grp, &e.IP, &e.Mask, &e.Port, &tag); err != nil {
			return fmt.Errorf("permissions: %s: %w", table, err)
		}
		e.Tag = tag.String
		ip := net.ParseIP(e.IP)
		if ip == nil {
			// Kamailio matches a non-IP as a domain name, strictly.
			es = append(es, e)
			continue
		}
		bits := 32
		if ip.To4() == nil {
			bits = 128
		} else {
			ip = ip.To4()
		}
		if e.Mask < 0 || e.Mask > bits {
			return fmt.Errorf("permissions: %s row id %d: mask %d out of range 0..%d", table, e.ID, e.Mask, bits)
		}
		e.ipnet = &net.IPNet{IP: ip.Mask(net.CIDRMask(e.Mask, bits)), Mask: net.CIDRMask(e.Mask, bits)}
		es = append(es, e)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("permissions: %s: %w", table, err)
	}
	p.mu.Lock()
	p.entries = es
	p.mu.Unlock()
	return nil
}

func (p *Perm) openDB() (*sql.DB, bool, error) {
	url := strp(&p.dbURL)
	if url == "" {
		return p.env.DB, false, nil
	}
	rest, ok := strings.CutPrefix(url, "sqlite://")
	if !ok || rest == "" || rest == "/" {
		return nil, false, fmt.Errorf("permissions: db_url %q: want sqlite:///path.db", url)
	}
	if strings.HasPrefix(rest, "//") {
		rest = rest[1:]
	}
	if err := os.MkdirAll(filepath.Dir(rest), 0o750); err != nil {
		return nil, false, fmt.Errorf("permissions: db_url %q: %w", url, err)
	}
	db, err := core.OpenDB(rest)
	if err != nil {
		return nil, false, fmt.Errorf("permissions: db_url %q: %w", url, err)
	}
	return db, true, nil
}

// match returns the first entry of grp (0: any) matching addr and port.
func (p *Perm) match(grp int, addr string, port int) *Entry {
	ip := net.ParseIP(core.BareHost(addr))
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, e := range p.entries {
		if (grp > 0 && e.Grp != grp) || (e.Port != 0 && e.Port != port) {
			continue
		}
		if e.ipnet != nil {
			if ip != nil && e.ipnet.Contains(ip) {
				return e
			}
		} else if ip == nil && strings.EqualFold(e.IP, addr) {
			return e
		}
	}
	return nil
}

func (p *Perm) setTag(m *core.Msg, e *Entry) {
	pv := strp(&p.tagPV)
	if pv == "" || e.Tag == "" {
		return
	}
	name := strings.TrimSuffix(pv[strings.IndexByte(pv, '(')+1:], ")")
	if m.Vars == nil {
		m.Vars = map[string]core.Val{}
	}
	m.Vars[name] = core.Str(e.Tag)
}

func (p *Perm) allow(m *core.Msg, grp int, addr string, port int) core.Val {
	if e := p.match(grp, addr, port); e != nil {
		p.setTag(m, e)
		return core.Int(1)
	}
	return core.Int(-1)
}

func (p *Perm) group(m *core.Msg, addr string, port int) int {
	if e := p.match(0, addr, port); e != nil {
		p.setTag(m, e)
		return e.Grp
	}
	return -1
}

// Kamailio 5.6's dump shapes: the address hash table's rows by slot
// ("table"), the subnet table's by index ("id").
type addrItem struct {
	IP   string `json:"ip"`
	Port int    `json:"port"`
	Tag  string `json:"tag"`
}

type addrRow struct {
	Table int      `json:"table"`
	Group int      `json:"group"`
	Item  addrItem `json:"item"`
}

type subnetItem struct {
	IP   string `json:"ip"`
	Mask int    `json:"mask"`
	Port int    `json:"port"`
	Tag  string `json:"tag"`
}

type subnetRow struct {
	ID    int        `json:"id"`
	Group int        `json:"group"`
	Item  subnetItem `json:"item"`
}

// permHashSize is Kamailio's PERM_HASH_SIZE: "table" is the address's slot.
const permHashSize = 128

// coreHash is Kamailio's core_hash over the address bytes (as C chars,
// signed), so "table" names the same slot as Kamailio's dump.
func coreHash(b []byte) uint32 {
	sc := func(c byte) uint32 { return uint32(int32(int8(c))) }
	var h, v uint32
	p := 0
	for ; p <= len(b)-4; p += 4 {
		v = sc(b[p])<<24 + sc(b[p+1])<<16 + sc(b[p+2])<<8 + sc(b[p+3])
		h += v ^ (v >> 3)
	}
	v = 0
	for ; p < len(b); p++ {
		v = v<<8 + sc(b[p])
	}
	h += v ^ (v >> 3)
	return h + (h >> 11) + (h >> 13) + (h >> 23)
}

func (p *Perm) dump(subnets bool) any {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if subnets {
		out := []subnetRow{}
		for _, e := range p.entries {
			if e.ipnet != nil {
				if ones, bits := e.ipnet.Mask.Size(); ones < bits {
					out = append(out, subnetRow{ID: len(out), Group: e.Grp, Item: subnetItem{IP: e.ipnet.IP.String(), Mask: e.Mask, Port: e.Port, Tag: e.Tag}})
				}
			}
		}
		return out
	}
	out := []addrRow{}
	for _, e := range p.entries {
		if e.ipnet == nil {
			continue
		}
		if ones, bits := e.ipnet.Mask.Size(); ones == bits {
			tag := e.Tag
			if tag == "" {
				tag = "NULL" // as Kamailio prints a NULL tag here (the subnet dump prints "")
			}
			out = append(out, addrRow{Table: int(coreHash(e.ipnet.IP) & (permHashSize - 1)), Group: e.Grp, Item: addrItem{IP: e.ipnet.IP.String(), Port: e.Port, Tag: tag}})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Table < out[j].Table })
	return out
}

package htable

import (
	"fmt"
	"strconv"
	"strings"
)

// TableDef is one modparam("htable", "htable", "name=>attr=v;...")
// definition. The DB attributes are parsed so that a future SQLite/DB
// backend can use them; today a non-empty dbtable is refused rather than
// silently not persisted.
type TableDef struct {
	Name         string
	Size         int   // bits: the table has 2^Size slots (Kamailio: 2..31, default 4)
	AutoExpire   int64 // seconds; 0 = items never expire
	HasInitVal   bool
	InitVal      int64
	UpdateExpire bool // an update restarts the item's autoexpire (default on)
	DBTable      string
	DBMode       int
	DMQReplicate int
	ColDelim     string
	ColNull      string
}

const defaultSizeBits = 4

// ParseTableDef parses Kamailio's table definition syntax:
//
//	name=>size=8;autoexpire=300;initval=0;updateexpire=1
//
// Unknown attributes and malformed values are errors.
func ParseTableDef(spec string) (*TableDef, error) {
	name, attrs, ok := strings.Cut(spec, "=>")
	name = strings.TrimSpace(name)
	if !ok {
		attrs = ""
	}
	if name == "" {
		return nil, fmt.Errorf("htable definition %q: missing table name (want name=>attr=value;...)", spec)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c == '_' || c == '-' || c == '.' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return nil, fmt.Errorf("htable definition %q: invalid table name %q", spec, name)
		}
	}
	d := &TableDef{Name: name, Size: defaultSizeBits, UpdateExpire: true}
	seen := map[string]bool{}
	for _, a := range strings.Split(attrs, ";") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		k, v, ok := strings.Cut(a, "=")
		k, v = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		if !ok {
			return nil, fmt.Errorf("htable %s: attribute %q has no value", name, a)
		}
		if seen[k] {
			return nil, fmt.Errorf("htable %s: attribute %q given twice", name, k)
		}
		seen[k] = true
		num := func(min, max int64) (int64, error) {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < min || n > max {
				return 0, fmt.Errorf("htable %s: %s=%q: want an integer in %d..%d", name, k, v, min, max)
			}
			return n, nil
		}
		var err error
		var n int64
		switch k {
		case "size":
			n, err = num(2, 31)
			d.Size = int(n)
		case "autoexpire":
			n, err = num(0, 1<<31-1)
			d.AutoExpire = n
		case "initval":
			n, err = num(-1<<63, 1<<63-1)
			d.InitVal, d.HasInitVal = n, true
		case "updateexpire":
			n, err = num(0, 1)
			d.UpdateExpire = n == 1
		case "dbtable":
			d.DBTable = v
		case "dbmode":
			n, err = num(0, 1)
			d.DBMode = int(n)
		case "dmqreplicate":
			n, err = num(0, 1)
			d.DMQReplicate = int(n)
		case "coldelim":
			d.ColDelim = v
		case "colnull":
			d.ColNull = v
		default:
			return nil, fmt.Errorf("htable %s: unknown attribute %q (known: size, autoexpire, initval, updateexpire, dbtable, dbmode, dmqreplicate, coldelim, colnull)", name, k)
		}
		if err != nil {
			return nil, err
		}
	}
	if d.DBTable != "" || d.DBMode != 0 {
		return nil, fmt.Errorf("htable %s: dbtable/dbmode: DB persistence is not supported yet (tables are in memory only)", name)
	}
	if d.DMQReplicate != 0 {
		return nil, fmt.Errorf("htable %s: dmqreplicate: DMQ replication is not supported", name)
	}
	return d, nil
}

// slots is the number of shards (each with its own lock); Kamailio's slot
// count 2^size, capped so that a huge size does not allocate millions of maps.
func (d *TableDef) slots() int {
	b := d.Size
	if b > 10 {
		b = 10
	}
	return 1 << b
}

package core

import (
	"fmt"
	"regexp"
	"sync"
	"sync/atomic"
)

// regexCacheLimit bounds CompileRegex's cache: scripts that build patterns
// dynamically compile the extra ones on every call instead of growing memory.
const regexCacheLimit = 1024

var regexCache boundedCache[*regexp.Regexp]

// CompileRegex compiles a script-supplied regular expression (Go RE2
// syntax, not PCRE) once and caches it; every module uses this one cache.
// The error names the expression.
func CompileRegex(expr string) (*regexp.Regexp, error) {
	if re, ok := regexCache.load(expr); ok {
		return re, nil
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, fmt.Errorf("invalid regular expression %q: %v", expr, err)
	}
	regexCache.store(expr, re, regexCacheLimit)
	return re, nil
}

// boundedCache memoises parses of script-supplied strings (regexes, PV
// names, xlog formats). It stops adding at its limit instead of evicting:
// the strings a script writes as literals are cached early, and only
// dynamically built ones beyond the limit pay for a parse each time.
type boundedCache[V any] struct {
	m sync.Map // string -> V
	n atomic.Int64
}

func (c *boundedCache[V]) load(k string) (V, bool) {
	v, ok := c.m.Load(k)
	if !ok {
		var zero V
		return zero, false
	}
	return v.(V), true
}

func (c *boundedCache[V]) store(k string, v V, limit int64) {
	if c.n.Load() < limit {
		if _, loaded := c.m.LoadOrStore(k, v); !loaded {
			c.n.Add(1)
		}
	}
}

// reset empties the cache (when what the parses depend on changes).
func (c *boundedCache[V]) reset() {
	c.m.Clear()
	c.n.Store(0)
}

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

var (
	regexCache  sync.Map // string -> *regexp.Regexp
	regexCached atomic.Int64
)

// CompileRegex compiles a script-supplied regular expression (Go RE2
// syntax, not PCRE) once and caches it; every module uses this one cache.
// The error names the expression.
func CompileRegex(expr string) (*regexp.Regexp, error) {
	if v, ok := regexCache.Load(expr); ok {
		return v.(*regexp.Regexp), nil
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, fmt.Errorf("invalid regular expression %q: %v", expr, err)
	}
	if regexCached.Load() < regexCacheLimit {
		if _, loaded := regexCache.LoadOrStore(expr, re); !loaded {
			regexCached.Add(1)
		}
	}
	return re, nil
}

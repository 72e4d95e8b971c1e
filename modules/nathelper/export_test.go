package nathelper

import (
	"time"

	"github.com/kamgo/kamgo/modules/core"
)

// Hooks for nathelper_test into the keepalive state, which has no other
// observable size.

func SeenForTest(env *core.Env) map[string]time.Time {
	p := Of(env).pinger
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]time.Time, len(p.seen))
	for k, v := range p.seen {
		out[k] = v
	}
	return out
}

func SetSeenForTest(env *core.Env, ruid string, at time.Time) {
	p := Of(env).pinger
	p.mu.Lock()
	p.seen[ruid] = at
	p.mu.Unlock()
}

func RoundForTest(env *core.Env, tick int64) { Of(env).pinger.round(tick) }

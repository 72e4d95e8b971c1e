package rpc

import (
	"errors"
	"io"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of the resource limits (see Config and docs/rpc.md "Limits").
const (
	DefaultMaxResponseBytes = 16 << 20
	DefaultMaxBatchBytes    = 32 << 20
	DefaultMemoryBudget     = 64 << 20
	DefaultMaxConnsPerIP    = 16
	DefaultAdminReserve     = 4
	DefaultIdleTimeout      = 60 * time.Second
	DefaultMaxHTTPInflight  = 64
	// DefaultIdleGrace is how long a new websocket may stay silent before a
	// newcomer at the cap may evict it.
	DefaultIdleGrace = 2 * time.Second
)

// Error codes of the limits, HTTP-like as Kamailio's own faults.
const (
	// CodeBusy: the memory all RPC replies may hold at once is in use; retry later.
	CodeBusy = 503
	// CodeTooLarge: a reply (or a batch's replies) would exceed its byte bound;
	// page the dump (limit/cursor) or ask for less.
	CodeTooLarge = 507
)

var (
	errRespTooLarge  = errors.New("rpc: response too large")
	errBatchTooLarge = errors.New("rpc: batch too large")
	errBusy          = errors.New("rpc: memory budget exhausted")
)

// budget is the memory all replies may hold at once (encoded and queued,
// until written to the socket). Reservations are in whole chunks.
type budget struct {
	max  int64
	used atomic.Int64
	// After a burst (a quarter of the budget or more in use since the last
	// release to the OS) and a quiet spell, the heap is handed back to the
	// OS so RSS falls back; never while replies keep coming (a forced GC
	// and scavenge would only add latency then).
	peak    atomic.Int64
	gen     atomic.Int64 // counts takes, to see a quiet spell
	pending atomic.Bool
}

// quietSpell is how long the budget must stay unused before the release.
var quietSpell = 5 * time.Second

func (b *budget) take(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.max {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			b.gen.Add(1)
			if u+n > b.peak.Load() {
				b.peak.Store(u + n)
			}
			return true
		}
	}
}

// force takes n even beyond the bound (small error replies always fit).
func (b *budget) force(n int64) { b.used.Add(n) }

func (b *budget) give(n int64) {
	if b.used.Add(-n) != 0 || b.peak.Load() < b.max/4 {
		return
	}
	if b.pending.CompareAndSwap(false, true) {
		b.afterQuiet(b.gen.Load())
	}
}

// afterQuiet releases the heap once the budget stayed unused for quietSpell
// since generation gen; it waits again while replies keep coming.
func (b *budget) afterQuiet(gen int64) {
	time.AfterFunc(quietSpell, func() {
		switch {
		case b.used.Load() != 0:
			b.pending.Store(false) // in use: the next idle moment starts over
		case b.gen.Load() != gen:
			b.afterQuiet(b.gen.Load())
		default:
			b.peak.Store(0)
			b.pending.Store(false)
			// Two collections: the first moves the pooled chunks to the
			// pool's victim cache, the second (FreeOSMemory's) drops them.
			runtime.GC()
			debug.FreeOSMemory()
		}
	})
}

// InUse returns the bytes the replies hold now.
func (b *budget) InUse() int64 { return b.used.Load() }

const chunkSize = 32 << 10

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, chunkSize); return &b }}

// replyBuf holds an encoded reply in fixed-size pooled chunks charged to
// the budget, so a reply is built whole (never sent partially) yet its
// memory is bounded while it is written: a Write beyond the response bound,
// the batch bound or the budget fails and the caller replaces what was
// written since its mark with an error.
type replyBuf struct {
	chunks [][]byte
	n      int64
	bud    *budget
	held   int64
	// batchMax bounds the bytes produced for the whole reply, dropped ones
	// included (so a batch of calls each over respMax stops early too: the
	// work, not only the memory, is bounded); respMax the bytes since mark.
	batchMax, respMax int64
	produced          int64
	mark              int64
	err               error
	force             bool
	// code is the error code of the last response written (0: a result).
	code int
}

// forced runs f with the bounds lifted: brackets, commas and error
// responses are small and must always be written.
func (b *replyBuf) forced(f func()) {
	saved := b.err
	b.err, b.force = nil, true
	f()
	b.err, b.force = saved, false
}

func newReplyBuf(bud *budget, respMax, batchMax int64) *replyBuf {
	return &replyBuf{bud: bud, respMax: respMax, batchMax: batchMax}
}

func (b *replyBuf) Write(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if !b.force {
		switch {
		case b.n-b.mark+int64(len(p)) > b.respMax:
			b.err = errRespTooLarge
		case b.produced+int64(len(p)) > b.batchMax:
			b.err = errBatchTooLarge
		}
		if b.err != nil {
			b.produced += int64(len(p)) // encoded, if dropped: work the batch caused
			return 0, b.err
		}
	}
	written := 0
	for len(p) > 0 {
		last := len(b.chunks) - 1
		if last < 0 || len(b.chunks[last]) == cap(b.chunks[last]) {
			if b.force {
				b.bud.force(chunkSize)
			} else if !b.bud.take(chunkSize) {
				b.err = errBusy
				return written, b.err
			}
			b.held += chunkSize
			c := chunkPool.Get().(*[]byte)
			b.chunks = append(b.chunks, (*c)[:0])
			last++
		}
		c := b.chunks[last]
		k := copy(c[len(c):cap(c)], p)
		b.chunks[last] = c[:len(c)+k]
		p = p[k:]
		written += k
		b.n += int64(k)
		b.produced += int64(k)
	}
	return written, nil
}

func (b *replyBuf) WriteString(s string) (int, error) { return b.Write([]byte(s)) }

func (b *replyBuf) WriteByte(c byte) error {
	_, err := b.Write([]byte{c})
	return err
}

// setMark starts a response: respMax counts from here.
func (b *replyBuf) setMark() { b.mark = b.n }

// truncate drops what was written after n (and the error).
func (b *replyBuf) truncate(n int64) {
	for len(b.chunks) > 0 {
		last := len(b.chunks) - 1
		start := b.n - int64(len(b.chunks[last]))
		if start >= n {
			b.putChunk(last)
			b.n = start
			continue
		}
		b.chunks[last] = b.chunks[last][:n-start]
		b.n = n
		break
	}
	b.err = nil
}

func (b *replyBuf) putChunk(i int) {
	c := b.chunks[i][:0]
	chunkPool.Put(&c)
	b.chunks = b.chunks[:i]
	b.bud.give(chunkSize)
	b.held -= chunkSize
}

// Len is the number of bytes written.
func (b *replyBuf) Len() int64 { return b.n }

// WriteTo writes the reply to w.
func (b *replyBuf) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for _, c := range b.chunks {
		k, err := w.Write(c)
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Bytes copies the reply out (tests, in-process calls).
func (b *replyBuf) Bytes() []byte {
	out := make([]byte, 0, b.n)
	for _, c := range b.chunks {
		out = append(out, c...)
	}
	return out
}

// release returns the chunks to the pool and their bytes to the budget.
func (b *replyBuf) release() {
	if b == nil {
		return
	}
	for len(b.chunks) > 0 {
		b.putChunk(len(b.chunks) - 1)
	}
	b.n = 0
}

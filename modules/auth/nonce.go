package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"sync"
)

// A nonce is kamgo's own: base64url(raw || mac) where raw is
//
//	version(1) | algorithm(1) | flags(1) | timestamp(8, Unix seconds) | id(8, random)
//
// and mac is HMAC-SHA-256(key, raw) cut to 16 bytes. Any node holding the
// same secret verifies it; nothing about it is stored until it is used.
const (
	nonceVersion = 1
	rawLen       = 3 + 8 + 8
	macLen       = 16
	nonceLen     = rawLen + macLen
)

// algorithm codes inside the nonce
const (
	algMD5    = 1
	algSHA256 = 2
)

// nonce flags: which qop the challenge offered (a response must then use one)
const (
	nfQopAuth    = 1
	nfQopAuthInt = 2
)

type nonce struct {
	alg   byte
	flags byte
	ts    int64
	id    uint64
}

func macOf(key, raw []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(raw)
	return h.Sum(nil)[:macLen]
}

func makeNonce(key []byte, n nonce) string {
	var b [nonceLen]byte
	b[0] = nonceVersion
	b[1] = n.alg
	b[2] = n.flags
	binary.BigEndian.PutUint64(b[3:11], uint64(n.ts))
	binary.BigEndian.PutUint64(b[11:19], n.id)
	copy(b[rawLen:], macOf(key, b[:rawLen]))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// parseNonce decodes and authenticates a nonce; ok is false for anything
// this node (or one sharing its secret) did not issue.
func parseNonce(key []byte, s string) (n nonce, ok bool) {
	if len(s) != base64.RawURLEncoding.EncodedLen(nonceLen) {
		return n, false
	}
	var b [nonceLen]byte
	if k, err := base64.RawURLEncoding.Decode(b[:], []byte(s)); err != nil || k != nonceLen {
		return n, false
	}
	if !hmac.Equal(b[rawLen:], macOf(key, b[:rawLen])) || b[0] != nonceVersion {
		return n, false
	}
	return nonce{alg: b[1], flags: b[2], ts: int64(binary.BigEndian.Uint64(b[3:11])), id: binary.BigEndian.Uint64(b[11:19])}, true
}

func randomID() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("auth: crypto/rand failed: " + err.Error())
	}
	return binary.BigEndian.Uint64(b[:])
}

func randomKey() []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		panic("auth: crypto/rand failed: " + err.Error())
	}
	return k
}

// trackResult is the tracker's verdict on a nonce use.
type trackResult uint8

const (
	trackOK      trackResult = iota
	trackReused              // nc did not increase, or a one-time nonce came back
	trackEvicted             // too old to be remembered: treat as stale
)

// tracker remembers the highest nc seen per nonce, for at most size
// nonces (FIFO). A nonce that is not remembered is accepted (another node
// may have issued it) unless it is older than the newest nonce the tracker
// had to forget, which closes the replay window eviction would open.
type tracker struct {
	mu   sync.Mutex
	size int
	m    map[uint64]tEntry
	ring []uint64
	head int
	n    int
	low  int64 // nonces issued at or before low and not in m are stale
}

type tEntry struct {
	nc uint32
	ts int64
}

func newTracker(size int, low int64) *tracker {
	return &tracker{size: size, m: make(map[uint64]tEntry), ring: make([]uint64, size), low: low}
}

func (t *tracker) verdict(id uint64, ts int64, nc uint32, once bool) (tEntry, bool, trackResult) {
	e, ok := t.m[id]
	switch {
	case ok && (once || nc <= e.nc):
		return e, ok, trackReused
	case !ok && ts <= t.low:
		return e, ok, trackEvicted
	}
	return e, ok, trackOK
}

// check says whether a use would be accepted, without recording it.
func (t *tracker) check(id uint64, ts int64, nc uint32, once bool) trackResult {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, _, r := t.verdict(id, ts, nc, once)
	return r
}

// use records a use atomically; expired entries (issued before
// expiredBefore) are dropped first.
func (t *tracker) use(id uint64, ts int64, nc uint32, once bool, expiredBefore int64) trackResult {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok, r := t.verdict(id, ts, nc, once)
	if r != trackOK {
		return r
	}
	if ok {
		e.nc = nc
		t.m[id] = e
		return trackOK
	}
	for t.n > 0 {
		h := t.ring[t.head]
		he, present := t.m[h]
		if present && he.ts >= expiredBefore && t.n < t.size {
			break
		}
		if present && he.ts >= expiredBefore && he.ts > t.low {
			t.low = he.ts // forgotten while still valid
		}
		delete(t.m, h)
		t.head = (t.head + 1) % t.size
		t.n--
	}
	t.ring[(t.head+t.n)%t.size] = id
	t.n++
	t.m[id] = tEntry{nc: nc, ts: ts}
	return trackOK
}

func (t *tracker) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

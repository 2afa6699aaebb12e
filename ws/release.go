package ws

import (
	"runtime/debug"
	"sync"
	"time"
)

// burstRelease hands memory back to the system once a burst of new
// connections has settled. Each handshake leaves garbage behind (the HTTP
// server's buffers, the request, the upgrade), and each reader's first
// command a grown stack: hundreds of connections at once (a page reload on
// every panel after a restart) raise the heap's goal and the resident
// pages by megabytes that the idle connections no longer use, and that
// the runtime would keep for minutes. One collection and scavenge, a few
// ms, after the burst gives them back. A server-wide timer, armed only
// during a burst: an idle connection costs nothing here.
type burstRelease struct {
	mu     sync.Mutex
	joins  int       // since the last release
	last   time.Time // the newest join
	armed  bool
	quiet  time.Duration
	min    int
	free   func() // debug.FreeOSMemory; tests count calls
	closed bool
	// now and after are the clock: time.Now and time.AfterFunc, a fake
	// one in tests.
	now   func() time.Time
	after func(time.Duration, func())
}

const (
	// burstJoins is the smallest burst worth a collection.
	burstJoins = 64
	// burstQuiet is how long no connection must have joined.
	burstQuiet = time.Second
)

func newBurstRelease() *burstRelease {
	return &burstRelease{quiet: burstQuiet, min: burstJoins, free: debug.FreeOSMemory,
		now: time.Now, after: func(d time.Duration, f func()) { time.AfterFunc(d, f) }}
}

// joined records one new connection.
func (b *burstRelease) joined() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.joins++
	b.last = b.now()
	if b.joins >= b.min && !b.armed && !b.closed {
		b.armed = true
		b.after(b.quiet, b.settle)
	}
}

func (b *burstRelease) settle() {
	b.mu.Lock()
	if b.closed {
		b.armed = false
		b.mu.Unlock()
		return
	}
	if wait := b.quiet - b.now().Sub(b.last); wait > 0 {
		b.after(wait, b.settle) // still arriving
		b.mu.Unlock()
		return
	}
	b.joins, b.armed = 0, false
	b.mu.Unlock()
	b.free()
}

// stop lets no further release run.
func (b *burstRelease) stop() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}

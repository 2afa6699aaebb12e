package ws

import (
	"net/netip"
	"sync"
	"time"
)

// limiter slows down addresses that keep sending wrong tokens. After
// freeFailures each further one makes the address wait failDelay, then
// twice as long, up to maxFailDelay; a success, or forgetFailures without
// one, clears it.
// While it waits, its attempts are refused unchecked (429), so waiting is
// the only way forward. State is a bounded map checked on each attempt:
// no timers, no goroutine per address.
type limiter struct {
	t *tuning // limiterSize, freeFailures, failDelay, maxFailDelay, forgetFailures

	mu sync.Mutex
	m  map[netip.Addr]*strikes
}

type strikes struct {
	n     int
	last  time.Time // last failure
	until time.Time // attempts refused before this
}

func newLimiter(t *tuning) *limiter {
	return &limiter{t: t, m: make(map[netip.Addr]*strikes)}
}

// wait returns how long addr must still wait before its next attempt.
func (l *limiter) wait(addr netip.Addr, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.m[addr]
	if st == nil {
		return 0
	}
	return max(0, st.until.Sub(now))
}

// fail records a failure and returns the wait it imposes.
func (l *limiter) fail(addr netip.Addr, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.m[addr]
	if st != nil && l.forgotten(st, now) {
		st.n = 0
	}
	if st == nil {
		if len(l.m) >= l.t.limiterSize {
			l.evict(now)
		}
		st = &strikes{}
		l.m[addr] = st
	}
	st.n++
	st.last = now
	if st.n <= l.t.freeFailures {
		return 0
	}
	d := l.t.maxFailDelay
	if shift := st.n - l.t.freeFailures - 1; shift < 30 {
		d = min(l.t.failDelay<<shift, d)
	}
	st.until = now.Add(d)
	return d
}

// forgive clears addr after a success.
func (l *limiter) forgive(addr netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, addr)
}

// evict makes room: entries that are forgotten go; when none is, the one
// whose last failure is oldest does.
func (l *limiter) evict(now time.Time) {
	var oldest netip.Addr
	var oldestAt time.Time
	for a, st := range l.m {
		if l.forgotten(st, now) {
			delete(l.m, a)
			continue
		}
		if oldestAt.IsZero() || st.last.Before(oldestAt) {
			oldest, oldestAt = a, st.last
		}
	}
	if len(l.m) >= l.t.limiterSize {
		delete(l.m, oldest)
	}
}

// forgotten reports whether a long quiet spell has cleared st.
func (l *limiter) forgotten(st *strikes, now time.Time) bool {
	return now.Sub(st.last) > l.t.forgetFailures && !now.Before(st.until)
}

func (l *limiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// pendingSlots counts, per address (clientAddr), the connections waiting
// for their auth frame: one address gets maxPendingAddr of the maxPending
// slots, so that it cannot hold them all.
type pendingSlots struct {
	t *tuning // maxPendingAddr

	mu sync.Mutex
	m  map[netip.Addr]int
}

func newPendingSlots(t *tuning) *pendingSlots {
	return &pendingSlots{t: t, m: make(map[netip.Addr]int)}
}

// take reserves a slot for addr; false when it holds its share.
func (p *pendingSlots) take(addr netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m[addr] >= p.t.maxPendingAddr {
		return false
	}
	p.m[addr]++
	return true
}

func (p *pendingSlots) release(addr netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m[addr] <= 1 {
		delete(p.m, addr) // the map holds only addresses with a slot
		return
	}
	p.m[addr]--
}

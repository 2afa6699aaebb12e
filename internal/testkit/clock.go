package testkit

import (
	"sort"
	"sync"
	"time"
)

// Clock is time that moves only when told (a wall clock that can step, a
// monotonic one, and timers). Timers due at or before
// an Advance fire in that call, in order, from the test's goroutine; a
// timer set with d <= 0 fires at once in its own goroutine, as
// time.AfterFunc does.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	mono   time.Duration
	timers []*Timer
}

// Timer is a timer of a Clock, set with AfterFunc.
type Timer struct {
	c      *Clock
	at     time.Duration // on the monotonic clock
	f      func()
	active bool
}

// NewClock returns a Clock at a fixed date.
func NewClock() *Clock { return NewClockAt(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)) }

// NewClockAt returns a Clock whose wall clock reads wall.
func NewClockAt(wall time.Time) *Clock { return &Clock{now: wall} }

// Now is the wall clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Mono is the time since the clock was made; Step does not move it.
func (c *Clock) Mono() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mono
}

// Step sets the wall clock by d, as NTP does; the monotonic clock and the
// timers do not move.
func (c *Clock) Step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// AfterFunc arms a timer that runs f once the clock has moved by d.
func (c *Clock) AfterFunc(d time.Duration, f func()) *Timer {
	t := &Timer{c: c, f: f}
	t.Reset(d)
	return t
}

// Stop disarms t and reports whether it was armed.
func (t *Timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.active = false
	return was
}

// Reset arms t to fire d from now and reports whether it was armed.
func (t *Timer) Reset(d time.Duration) bool {
	c := t.c
	c.mu.Lock()
	was := t.active
	if d <= 0 {
		t.active = false
		c.mu.Unlock()
		go t.f()
		return was
	}
	t.at = c.mono + d
	if !t.active {
		t.active = true
		c.timers = append(c.timers, t)
	}
	c.mu.Unlock()
	return was
}

// Advance moves the clock by d and runs every timer that came due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mono += d
	now := c.mono
	var due []*Timer
	keep := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case !t.active:
		case t.at <= now:
			t.active = false
			due = append(due, t)
		default:
			keep = append(keep, t)
		}
	}
	c.timers = keep
	c.mu.Unlock()
	sort.SliceStable(due, func(i, j int) bool { return due[i].at < due[j].at })
	for _, t := range due {
		t.f()
	}
}

// Pending counts armed timers: a test waits for a goroutine to arm its
// timer before advancing past it.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if t.active {
			n++
		}
	}
	return n
}

package gpio

import (
	"context"
	"time"
)

// Clock is the time source of everything the board schedules by itself:
// max_on and pulse ends, interlock dead time, failsafe, sensor intervals
// and simulated presses. Tests inject a fake one to fire those without
// sleeping. Input debounce is not on it: it runs on the pin's own
// WaitForEdge timeouts, which are physical time.
type Clock interface {
	// Now is the wall clock, for readings' ts. It may step (a Pi has no
	// RTC: NTP sets it some time after boot); time.Now's monotonic
	// reading keeps Now().Sub right across a step.
	Now() time.Time
	// Mono is time since an arbitrary origin that never steps: sensor
	// intervals and max_interval heartbeats are measured on it.
	Mono() time.Duration
	// AfterFunc calls f in its own goroutine after d, like time.AfterFunc.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is what Clock.AfterFunc returns; *time.Timer implements it.
type Timer interface {
	Stop() bool
	Reset(d time.Duration) bool
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// monoOrigin is the origin of systemClock.Mono.
var monoOrigin = time.Now()

func (systemClock) Mono() time.Duration { return time.Since(monoOrigin) }

func (systemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// sleep waits d on the clock, or until ctx ends.
func sleep(ctx context.Context, c Clock, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	done := make(chan struct{})
	t := c.AfterFunc(d, func() { close(done) })
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	}
}

// ticker is a reusable wake-up on a Clock: one timer, one channel, no
// allocation per tick, so a sensor polled every 10ms costs nothing but the
// read.
type ticker struct {
	C     chan struct{}
	timer Timer
}

func newTicker(c Clock, first time.Duration) *ticker {
	t := &ticker{C: make(chan struct{}, 1)}
	t.timer = c.AfterFunc(first, t.fire)
	return t
}

func (t *ticker) fire() {
	select {
	case t.C <- struct{}{}:
	default: // a wake-up is already pending; one is enough
	}
}

func (t *ticker) reset(d time.Duration) { t.timer.Reset(d) }

func (t *ticker) stop() { t.timer.Stop() }

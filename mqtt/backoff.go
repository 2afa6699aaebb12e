package mqtt

import "time"

// backoff is a retry pause that doubles from min up to max.
type backoff struct {
	min, max, cur time.Duration
}

// next returns the pause to wait now and doubles the one after.
func (b *backoff) next() time.Duration {
	if b.cur < b.min {
		b.cur = b.min
	}
	d := b.cur
	b.cur = min(2*b.cur, b.max)
	return d
}

// reset starts again from min after a success.
func (b *backoff) reset() { b.cur = b.min }

// latch remembers that a lasting problem was logged, so that it is logged
// once when it starts and once when it ends, not at every occurrence.
type latch struct{ on bool }

// raise reports whether the problem is new.
func (l *latch) raise() bool {
	was := l.on
	l.on = true
	return !was
}

// lower reports whether the problem had been raised.
func (l *latch) lower() bool {
	was := l.on
	l.on = false
	return was
}

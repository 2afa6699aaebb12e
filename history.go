package pibridge

import "time"

// Point is one history sample: Unix milliseconds and the value as a number
// (true is 1, false 0), the shape charts want.
type Point struct {
	T int64
	V float64
}

// history is a bounded ring of points for one signal. Samples closer than
// step to the previous point replace it, so a 10 ms sensor and a 10 s sensor
// both fit an hour (or more) in the same bounded memory. The ring's array
// grows as points arrive, up to capacity: a bridge that has just started,
// or a signal that rarely changes, does not hold an hour of zeroed points
// (3600 of them per signal by default).
type history struct {
	points   []Point // len(points) < capacity only while start == 0
	capacity int
	start    int // index of the oldest point
	n        int
	step     int64 // ms
}

// historyChunk is the first array a history allocates: one KiB of points.
const historyChunk = 64

func newHistory(capacity int, step time.Duration) *history {
	return &history{capacity: capacity, step: step.Milliseconds()}
}

func (h *history) add(p Point) {
	if h.n > 0 {
		last := &h.points[(h.start+h.n-1)%len(h.points)]
		// Never back in time: a reading stamped just before a step of the
		// clock was seen, but added after the re-dating, joins the last
		// point instead of breaking the order since relies on.
		p.T = max(p.T, last.T)
		if p.T/h.step == last.T/h.step {
			// One point per step: the newest value of the step wins.
			*last = p
			return
		}
	}
	if h.n < h.capacity {
		if h.n == len(h.points) {
			h.grow()
		}
		h.points[(h.start+h.n)%len(h.points)] = p
		h.n++
		return
	}
	h.points[h.start] = p
	h.start = (h.start + 1) % len(h.points)
}

// grow doubles the array, never past capacity, so that the final one is
// exactly capacity long and the ring wraps there. Until then the ring has
// not wrapped (start is 0), so the points copy over in order.
func (h *history) grow() {
	size := min(max(2*len(h.points), historyChunk), h.capacity)
	points := make([]Point, h.n, size)
	copy(points, h.points[:h.n])
	h.points = points[:size]
}

// since appends the points at or after t (Unix ms), oldest first.
func (h *history) since(dst []Point, t int64) []Point {
	// Binary search the first point ≥ t; the ring is in time order.
	lo, hi := 0, h.n
	for lo < hi {
		m := (lo + hi) / 2
		if h.points[(h.start+m)%len(h.points)].T < t {
			lo = m + 1
		} else {
			hi = m
		}
	}
	for i := lo; i < h.n; i++ {
		dst = append(dst, h.points[(h.start+i)%len(h.points)])
	}
	return dst
}

// shift moves every point by d ms: the wall clock stepped by d, and the
// points were stamped by the clock before the step.
func (h *history) shift(d int64) {
	for i := range h.n {
		h.points[(h.start+i)%len(h.points)].T += d
	}
}

// History is the same ring for a reader that does not own a Core: a
// gateway keeps one per signal of every device it follows. It is not safe
// for concurrent use; its owner locks.
type History struct{ h *history }

// NewHistory returns a ring of at most capacity points, one per step.
func NewHistory(capacity int, step time.Duration) *History {
	return &History{newHistory(max(capacity, 1), max(step, time.Millisecond))}
}

// Add records a point; a point within the step of the previous one replaces it.
func (h *History) Add(p Point) { h.h.add(p) }

// Since appends the points at or after t (Unix ms), oldest first.
func (h *History) Since(dst []Point, t int64) []Point { return h.h.since(dst, t) }

// Len is the number of points held.
func (h *History) Len() int { return h.h.n }

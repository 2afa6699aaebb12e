package pibridge

import "time"

// Point is one history sample: Unix milliseconds and the value as a number
// (true is 1, false 0), the shape charts want.
type Point struct {
	T int64
	V float64
}

// history is a fixed ring of points for one signal. Samples closer than
// step to the previous point replace it, so a 10 ms sensor and a 10 s sensor
// both fit an hour (or more) in the same bounded memory.
type history struct {
	points []Point
	start  int // index of the oldest point
	n      int
	step   int64 // ms
}

func newHistory(capacity int, step time.Duration) *history {
	return &history{points: make([]Point, capacity), step: step.Milliseconds()}
}

func (h *history) add(p Point) {
	if h.n > 0 {
		last := &h.points[(h.start+h.n-1)%len(h.points)]
		if p.T/h.step == last.T/h.step {
			// One point per step: the newest value of the step wins.
			*last = p
			return
		}
	}
	if h.n < len(h.points) {
		h.points[(h.start+h.n)%len(h.points)] = p
		h.n++
		return
	}
	h.points[h.start] = p
	h.start = (h.start + 1) % len(h.points)
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

package pibridge

import (
	"reflect"
	"testing"
	"time"
)

// The ring gives the same points whether its array is still growing,
// just grown to capacity, or wrapping: the newest capacity points, one per
// step, oldest first.
func TestHistoryGrowsLikeAFixedRing(t *testing.T) {
	for _, capacity := range []int{1, 2, historyChunk - 1, historyChunk, historyChunk + 1, 3 * historyChunk, 3600} {
		h := newHistory(capacity, time.Second)
		var all []Point
		for i := range 2*capacity + 5 {
			// Two samples per step: the second replaces the first.
			h.add(Point{T: int64(i) * 1000, V: float64(i)})
			h.add(Point{T: int64(i)*1000 + 500, V: float64(i) + 0.5})
			all = append(all, Point{T: int64(i)*1000 + 500, V: float64(i) + 0.5})
			want := all[max(0, len(all)-capacity):]
			if got := h.since(nil, 0); !reflect.DeepEqual(got, want) {
				t.Fatalf("capacity %d after %d steps: %d points %v…, want %d points %v…",
					capacity, i+1, len(got), got[:min(len(got), 3)], len(want), want[:min(len(want), 3)])
			}
			if len(h.points) > capacity {
				t.Fatalf("capacity %d: array of %d points", capacity, len(h.points))
			}
		}
		if len(h.points) != capacity {
			t.Errorf("capacity %d: full ring's array has %d points", capacity, len(h.points))
		}
	}
}

// An idle signal costs a chunk, not an hour of points.
func TestHistoryStartsSmall(t *testing.T) {
	h := newHistory(3600, time.Second)
	if len(h.points) != 0 {
		t.Errorf("new history holds an array of %d points", len(h.points))
	}
	h.add(Point{T: 1000, V: 1})
	if len(h.points) != historyChunk {
		t.Errorf("after one point: array of %d points, want %d", len(h.points), historyChunk)
	}
}

package pibridge

import "testing"

// TestRing: first in, first out across wrap-around and growth; a drained
// ring keeps a small buffer and drops a large one; steady use allocates
// nothing.
func TestRing(t *testing.T) {
	var q Ring
	next, want := uint64(1), uint64(1)
	for _, tc := range []struct {
		push, pop int
		dropped   bool // the drained ring gave its buffer back
	}{{10, 7, false}, {20, 15, false}, {3000, 3008, true}, {5, 5, false}} {
		for range tc.push {
			q.Push(Reading{Seq: next})
			next++
		}
		for range tc.pop {
			if got := q.At(0).Seq; got != want {
				t.Fatalf("front seq %d, want %d", got, want)
			}
			q.PopFront()
			want++
		}
		if q.Len() != int(next-want) {
			t.Fatalf("Len %d, want %d", q.Len(), next-want)
		}
		if (q.buf == nil) != tc.dropped {
			t.Errorf("after %d in, %d out: %d slots kept", tc.push, tc.pop, len(q.buf))
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		for range ringKeep {
			q.Push(Reading{Seq: 1})
		}
		for range ringKeep {
			q.PopFront()
		}
	}); n != 0 {
		t.Errorf("%v allocations a round of %d readings once grown, want 0", n, ringKeep)
	}
}

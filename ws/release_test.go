package ws

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestBurstRelease: memory is handed back once per burst of at least
// min joins, after the joins have stopped for quiet; fewer joins, or a
// stopped server, release nothing.
func TestBurstRelease(t *testing.T) {
	for _, tc := range []struct {
		name  string
		joins int
		stop  bool
		want  int64
	}{
		{"below the burst size", 7, false, 0},
		{"a burst", 8, false, 1},
		{"a long burst", 40, false, 1},
		{"server stopped", 40, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var freed atomic.Int64
			var at atomic.Int64 // when the release ran
			b := &burstRelease{quiet: 50 * time.Millisecond, min: 8, free: func() { at.Store(time.Now().UnixNano()); freed.Add(1) }}
			var lastJoin time.Time
			for range tc.joins {
				lastJoin = time.Now() // before: the join's own clock reads no earlier
				b.joined()
				time.Sleep(2 * time.Millisecond) // joins spread over longer than quiet in the long burst
			}
			if tc.stop {
				b.stop()
			}
			deadline := time.Now().Add(2 * time.Second)
			for freed.Load() < tc.want && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond) // polling a counter
			}
			time.Sleep(150 * time.Millisecond) // no second release may follow
			if got := freed.Load(); got != tc.want {
				t.Fatalf("%d releases, want %d", got, tc.want)
			}
			if tc.want == 1 && time.Unix(0, at.Load()).Before(lastJoin.Add(b.quiet)) {
				t.Fatal("released before the burst had settled")
			}
		})
	}
}

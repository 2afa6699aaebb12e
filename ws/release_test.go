package ws

import (
	"testing"
	"time"

	"pibridge/internal/testkit"
)

// TestBurstRelease: memory is handed back once per burst of at least
// min joins, after the joins have stopped for quiet; fewer joins, or a
// stopped server, release nothing. The clock is the test kit's: the
// timers fire as the test moves it.
func TestBurstRelease(t *testing.T) {
	const quiet, step = 50 * time.Millisecond, 2 * time.Millisecond
	for _, tc := range []struct {
		name  string
		joins int
		stop  bool
		want  int
	}{
		{"below the burst size", 7, false, 0},
		{"a burst", 8, false, 1},
		{"a long burst", 40, false, 1}, // its joins span longer than quiet
		{"server stopped", 40, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := testkit.NewClock()
			var released []time.Time // when each release ran
			b := &burstRelease{quiet: quiet, min: 8,
				free:  func() { released = append(released, clock.Now()) },
				now:   clock.Now,
				after: func(d time.Duration, f func()) { clock.AfterFunc(d, f) }}
			var lastJoin time.Time
			for range tc.joins {
				b.joined()
				lastJoin = clock.Now()
				clock.Advance(step)
			}
			if tc.stop {
				b.stop()
			}
			// Ten times quiet, in steps: a release and any second one
			// would have run by the end.
			for range 10 * quiet / step {
				clock.Advance(step)
			}
			if len(released) != tc.want {
				t.Fatalf("%d releases, want %d", len(released), tc.want)
			}
			if tc.want == 1 && released[0].Before(lastJoin.Add(quiet)) {
				t.Fatalf("released %v after the last join, before the burst had settled (quiet %v)", released[0].Sub(lastJoin), quiet)
			}
		})
	}
}

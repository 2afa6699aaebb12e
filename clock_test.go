package pibridge

import (
	"testing"
	"time"

	"pibridge/internal/testkit"
)

// TestClockStepKeepsHistoryInOrder: a board boots with a wrong clock, takes
// readings, and the clock is set (forward, as NTP does after a power cut,
// or back). The history stays in time order and is re-dated by the step,
// so the points before it appear where they happened; readings' ts is the
// wall clock as it was; the step is counted; slewing is not a step.
func TestClockStepKeepsHistoryInOrder(t *testing.T) {
	boot := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC) // the last time saved before the power cut
	for _, tt := range []struct {
		name  string
		step  time.Duration
		steps uint64
	}{
		{"NTP sets the clock forward", 9 * 24 * time.Hour, 1},
		{"the clock is set back", -time.Hour, 1},
		{"slewing by 0.5 s is no step", 500 * time.Millisecond, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clk := testkit.NewClockAt(boot)
			c, err := New(Options{Device: Device{ID: "t"}, Signals: testSignals, StateDir: t.TempDir(),
				Now: clk.Now, Mono: clk.Mono,
				KernelClock: func() (bool, bool, time.Duration) { return false, true, 16 * time.Second }})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for i := range 3 {
				c.Emit("air.temperature", Number(float64(20+i)), time.Time{})
				clk.Advance(2 * time.Second)
			}
			clk.Step(tt.step)
			c.Emit("air.temperature", Number(23), time.Time{})
			r, _ := c.Latest("air.temperature")
			if want := clk.Now(); !r.TS.Equal(want) {
				t.Errorf("ts after the step = %v, want the wall clock %v", r.TS, want)
			}
			clk.Advance(2 * time.Second)
			c.Emit("air.temperature", Number(24), time.Time{})

			pts, err := c.History("air.temperature", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if len(pts) != 5 {
				t.Fatalf("history has %d points of the last minute, want all 5: %v", len(pts), pts)
			}
			shift := time.Duration(0)
			if tt.steps > 0 {
				shift = tt.step
			}
			for i, p := range pts {
				// Point i was taken 2 s after the one before it; the ones
				// before the step are re-dated by it.
				want := boot.Add(time.Duration(i) * 2 * time.Second).Add(shift)
				if i >= 3 {
					want = boot.Add(time.Duration(i) * 2 * time.Second).Add(tt.step)
				}
				if p.T != want.UnixMilli() {
					t.Errorf("point %d at %v, want %v", i, time.UnixMilli(p.T).UTC(), want)
				}
				if i > 0 && p.T < pts[i-1].T {
					t.Errorf("point %d goes back in time: %v after %v", i, p.T, pts[i-1].T)
				}
			}
			cs := c.ClockState()
			if cs.Steps != tt.steps {
				t.Errorf("steps = %d, want %d", cs.Steps, tt.steps)
			}
			if tt.steps > 0 && cs.LastStep != tt.step {
				t.Errorf("last step = %v, want %v", cs.LastStep, tt.step)
			}
			if cs.Synced || cs.String() != "unsynced" {
				t.Errorf("clock state %+v (%s), want unsynced as the kernel says", cs, cs)
			}
		})
	}
}

// TestHistoryNeverGoesBack: a point stamped before a step was re-dated
// (taken by the board just before, added just after) joins the last point
// instead of breaking the order.
func TestHistoryNeverGoesBack(t *testing.T) {
	h := newHistory(10, time.Second)
	h.add(Point{T: 10_000, V: 1})
	h.add(Point{T: 12_000, V: 2})
	h.add(Point{T: 5_000, V: 3})
	got := h.since(nil, 0)
	if len(got) != 2 || got[1] != (Point{T: 12_000, V: 3}) {
		t.Errorf("points %v, want the late one merged into the last: [{10000 1} {12000 3}]", got)
	}
}

func TestAppendClock(t *testing.T) {
	for _, tt := range []struct {
		s    ClockState
		want string
	}{
		{ClockState{Synced: true, Known: true}, `"clock":{"synced":true}`},
		{ClockState{Known: true}, `"clock":{"synced":false}`},
	} {
		if got := string(AppendClock(nil, tt.s)); got != tt.want {
			t.Errorf("AppendClock(%+v) = %s, want %s", tt.s, got, tt.want)
		}
	}
}

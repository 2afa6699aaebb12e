package gpio

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/conn/v3/physic"

	"pibridge"
)

// fakeClock is a Clock that moves only when told. Timers due at or before
// an Advance fire in that call, in order, from the test's goroutine; a
// timer set with d <= 0 fires at once in its own goroutine, as
// time.AfterFunc does.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	mono   time.Duration
	timers []*fakeTimer
}

type fakeTimer struct {
	c      *fakeClock
	at     time.Duration // on the monotonic clock
	f      func()
	active bool
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 11, 25, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Mono() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mono
}

// Step sets the wall clock by d, as NTP does; the monotonic clock and the
// timers do not move.
func (c *fakeClock) Step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	t := &fakeTimer{c: c, f: f}
	t.Reset(d)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.active = false
	return was
}

func (t *fakeTimer) Reset(d time.Duration) bool {
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
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mono += d
	now := c.mono
	var due []*fakeTimer
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
func (c *fakeClock) Pending() int {
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

// reading is one emitted value.
type reading struct {
	name string
	v    pibridge.Value
	ts   time.Time
}

// recorder is a pibridge.Emitter that keeps everything.
type recorder struct {
	mu   sync.Mutex
	all  []reading
	hook func(reading) // called under mu
}

func (r *recorder) Emit(name string, v pibridge.Value, ts time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rd := reading{name, v, ts}
	r.all = append(r.all, rd)
	if r.hook != nil {
		r.hook(rd)
	}
}

// of returns the values emitted for one signal, in order.
func (r *recorder) of(name string) []pibridge.Value {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []pibridge.Value
	for _, rd := range r.all {
		if rd.name == name {
			out = append(out, rd.v)
		}
	}
	return out
}

// times returns the ts of the readings of one signal, in order.
func (r *recorder) times(name string) []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []time.Time
	for _, rd := range r.all {
		if rd.name == name {
			out = append(out, rd.ts)
		}
	}
	return out
}

func (r *recorder) last(name string) (pibridge.Value, bool) {
	vs := r.of(name)
	if len(vs) == 0 {
		return pibridge.Value{}, false
	}
	return vs[len(vs)-1], true
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.all)
}

// eventually polls cond until it holds or a deadline passes: the one way
// these tests wait for another goroutine.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// running is a Board under Run with a recorder, stopped at cleanup.
type running struct {
	*Board
	rec  *recorder
	stop func() // cancels Run and waits for it
}

// start opens cfg and runs it until the test ends. It returns once Run has
// emitted the initial state of every input, output and pwm.
func start(t *testing.T, cfg Config, o Options) *running {
	t.Helper()
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	b, err := Open(cfg, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, rec) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("Run did not return within 5s of its context ending")
			}
			if err := b.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	initial := len(cfg.Inputs) + len(cfg.Outputs) + len(cfg.PWM)
	eventually(t, "the initial readings", func() bool { return b.running() && rec.count() >= initial })
	return &running{Board: b, rec: rec, stop: stop}
}

// writeFile writes a fixture file under root, making its directories.
func writeFile(t *testing.T, root, path, content string) {
	t.Helper()
	p := filepath.Join(root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func simPinOf(t *testing.T, b *Board, name string) *gpiotest.Pin {
	t.Helper()
	e := b.byName[name]
	switch {
	case e.in != nil && e.in.sim != nil:
		return e.in.sim
	case e.out != nil && e.out.sim != nil:
		return e.out.sim
	case e.pwm != nil && e.pwm.sim != nil:
		return e.pwm.sim
	}
	t.Fatalf("%s has no simulated pin", name)
	return nil
}

// pwmOf returns the duty and frequency a simulated pwm pin was last set to.
func pwmOf(t *testing.T, b *Board, name string) (pgpio.Duty, physic.Frequency) {
	t.Helper()
	p := simPinOf(t, b, name)
	p.Lock()
	defer p.Unlock()
	return p.D, p.F
}

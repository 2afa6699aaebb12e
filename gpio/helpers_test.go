package gpio

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/conn/v3/physic"

	"pibridge"
	"pibridge/internal/testkit"
)

// fakeClock is the kit's clock as a gpio Clock.
type fakeClock struct{ *testkit.Clock }

func newFakeClock() fakeClock { return fakeClock{testkit.NewClock()} }

func (c fakeClock) AfterFunc(d time.Duration, f func()) Timer { return c.Clock.AfterFunc(d, f) }

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
	testkit.Eventually(t, 5*time.Second, what, cond)
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
	stopRun := testkit.Start(t, 5*time.Second, func(ctx context.Context) error { return b.Run(ctx, rec) })
	var once sync.Once
	stop := func() {
		once.Do(func() {
			stopRun()
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

// demoConfig is the board of the built-in demo, read from the file the
// bridge embeds: the tests run the board that `bridge` with no -config runs.
func demoConfig(t testing.TB) Config {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "cmd", "bridge", "demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c Config // the other sections of the file are not the board's
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("demo.yaml: %v", err)
	}
	return c
}

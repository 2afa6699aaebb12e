package pibridge

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"pibridge/internal/testkit"
)

// fakeActuator applies commands by emitting them, as a board does.
type fakeActuator struct {
	core *Core
	mu   sync.Mutex
	sets []string
	fail error
}

func (a *fakeActuator) Set(_ context.Context, name string, v Value) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return a.fail
	}
	if v.IsToggle() {
		r, _ := a.core.Latest(name)
		v = Bool(!r.Value.Bool())
	}
	a.sets = append(a.sets, name+"="+v.String())
	a.core.Emit(name, v, time.Time{})
	return nil
}

func (a *fakeActuator) Pulse(_ context.Context, name string, d time.Duration) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sets = append(a.sets, name+" pulse "+d.String())
	a.core.Emit(name, Bool(true), time.Time{})
	return nil
}

var testSignals = []Signal{
	{Name: "button", Kind: KindInput},
	{Name: "led", Kind: KindOutput},
	{Name: "bell", Kind: KindOutput, Pulse: 3 * time.Second},
	{Name: "fan", Kind: KindPWM},
	{Name: "air.temperature", Kind: KindSensor, Unit: "°C"},
}

func newTestCore(t *testing.T, dir string) (*Core, *fakeActuator) {
	t.Helper()
	c, err := New(Options{Device: Device{ID: "t"}, Signals: testSignals, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	a := &fakeActuator{core: c}
	c.SetActuator(a)
	return c, a
}

func TestExecuteValidates(t *testing.T) {
	c, a := newTestCore(t, t.TempDir())
	tests := []struct {
		cmd     Command
		wantErr string
		is      error
		want    string // the actuator call
	}{
		{cmd: Command{Name: "led", Value: Bool(true)}, want: "led=true"},
		{cmd: Command{Name: "led", Value: Number(0)}, want: "led=false"},
		{cmd: Command{Name: "led", Value: Toggle()}, want: "led=true"},
		{cmd: Command{Name: "fan", Value: Number(0.5)}, want: "fan=0.5"},
		{cmd: Command{Name: "led", Op: OpPulse, For: time.Second}, want: "led pulse 1s"},
		{cmd: Command{Name: "nope", Value: Bool(true)}, wantErr: "nope: no such signal", is: ErrUnknownSignal},
		{cmd: Command{Name: "air.temperature", Value: Number(1)}, wantErr: "air.temperature: not writable: it is a sensor", is: ErrNotWritable},
		{cmd: Command{Name: "button", Value: Bool(true)}, wantErr: "button: not writable: it is an input", is: ErrNotWritable},
		{cmd: Command{Name: "led", Value: Number(0.5)}, wantErr: "led: bad value 0.5: an output takes on, off, true, false, 1, 0 or toggle", is: ErrBadValue},
		{cmd: Command{Name: "fan", Value: Bool(true)}, wantErr: "fan: bad value true: a pwm takes a number from 0 to 1", is: ErrBadValue},
		{cmd: Command{Name: "fan", Value: Number(1.5)}, wantErr: "fan: bad value 1.5: a pwm takes a number from 0 to 1", is: ErrBadValue},
		{cmd: Command{Name: "fan", Value: Toggle()}, wantErr: `fan: bad value "toggle": a pwm takes a number from 0 to 1`, is: ErrBadValue},
		{cmd: Command{Name: "fan", Op: OpPulse, For: time.Second}, wantErr: "fan: bad value: only outputs can be pulsed", is: ErrBadValue},
		{cmd: Command{Name: "led", Op: OpPulse, For: 2 * time.Hour}, wantErr: "led: bad value: pulse length 2h0m0s must be above 0 and at most 1h0m0s", is: ErrBadValue},
		{cmd: Command{Name: "bell", Op: OpPulse}, want: "bell pulse 3s"},
		{cmd: Command{Name: "bell", Op: OpPulse, For: time.Second}, want: "bell pulse 1s"},
		{cmd: Command{Name: "led", Op: OpPulse}, wantErr: `led: bad value: pulse length is missing (want e.g. "500ms"; or give the output a default, outputs[].pulse)`, is: ErrBadValue},
	}
	for _, tt := range tests {
		a.sets = nil
		r, err := c.Execute(context.Background(), tt.cmd)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr || !errors.Is(err, tt.is) {
				t.Errorf("%+v: err = %v, want %q (%v)", tt.cmd, err, tt.wantErr, tt.is)
			}
			if len(a.sets) != 0 {
				t.Errorf("%+v: rejected command reached the actuator: %v", tt.cmd, a.sets)
			}
			continue
		}
		if err != nil {
			t.Errorf("%+v: %v", tt.cmd, err)
			continue
		}
		if len(a.sets) != 1 || a.sets[0] != tt.want {
			t.Errorf("%+v: actuator got %v, want %s", tt.cmd, a.sets, tt.want)
		}
		if r.Name != tt.cmd.Name || r.Seq == 0 {
			t.Errorf("%+v: echo %+v", tt.cmd, r)
		}
	}
	a.fail = ErrConflict
	if _, err := c.Execute(context.Background(), Command{Name: "led", Value: Bool(true)}); !errors.Is(err, ErrConflict) || err.Error() != "led: conflict" {
		t.Errorf("actuator error = %v, want led: conflict", err)
	}
}

type recorder struct {
	mu   sync.Mutex
	seqs []uint64
}

func (r *recorder) Deliver(x Reading) {
	r.mu.Lock()
	r.seqs = append(r.seqs, x.Seq)
	r.mu.Unlock()
}

func TestFanoutOrderAndSnapshotJoin(t *testing.T) {
	c, _ := newTestCore(t, t.TempDir())
	c.Emit("air.temperature", Number(20), time.Time{})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				c.Emit("air.temperature", Number(float64(i)), time.Time{})
			}
		}()
	}
	rec := &recorder{}
	snap, cancel := c.Subscribe(rec)
	wg.Wait()
	cancel()
	c.Emit("air.temperature", Number(1), time.Time{}) // after cancel: not delivered

	if len(snap) != 1 {
		t.Fatalf("snapshot has %d readings, want 1", len(snap))
	}
	// The subscriber must see every seq after the snapshot's, in order, none missing.
	next := snap[0].Seq + 1
	for _, s := range rec.seqs {
		if s != next {
			t.Fatalf("got seq %d, want %d (gap or reorder)", s, next)
		}
		next++
	}
	if last, _ := c.Latest("air.temperature"); next != last.Seq {
		t.Fatalf("subscriber stopped at %d, last emitted %d", next-1, last.Seq)
	}
}

func TestSeqPersistsAndNeverRepeats(t *testing.T) {
	dir := t.TempDir()
	c, _ := newTestCore(t, dir)
	for i := 0; i < 10; i++ {
		c.Emit("button", Bool(i%2 == 0), time.Time{})
	}
	last, _ := c.Latest("button")
	if last.Seq != 10 {
		t.Fatalf("seq after 10 readings = %d, want 10", last.Seq)
	}
	// A crash (no Close): the restart continues past the leased block.
	crashed, _ := newTestCore(t, dir)
	crashed.Emit("button", Bool(true), time.Time{})
	r, _ := crashed.Latest("button")
	if r.Seq <= last.Seq {
		t.Fatalf("seq after crash = %d, repeats ≤ %d", r.Seq, last.Seq)
	}
	// A clean stop: the restart continues with no gap.
	if err := crashed.Close(); err != nil {
		t.Fatal(err)
	}
	clean, _ := newTestCore(t, dir)
	clean.Emit("button", Bool(true), time.Time{})
	r2, _ := clean.Latest("button")
	if r2.Seq != r.Seq+1 {
		t.Fatalf("seq after clean restart = %d, want %d", r2.Seq, r.Seq+1)
	}
}

func TestSeqFileCorrupt(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "seq"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{StateDir: dir}); err == nil {
		t.Fatal("a corrupt seq file must be reported, not silently reset (seq would repeat)")
	}
}

func TestHistoryBoundedAndOrdered(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	c, err := New(Options{Signals: testSignals, StateDir: t.TempDir(), HistorySize: 100, HistoryStep: time.Second,
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	// 10 readings a second for 300 s: one point per second, the last 100 kept.
	start := now.Add(-300 * time.Second)
	for i := 0; i < 3000; i++ {
		c.Emit("air.temperature", Number(float64(i)), start.Add(time.Duration(i)*100*time.Millisecond))
	}
	all, _ := c.History("air.temperature", time.Hour)
	if len(all) != 100 {
		t.Fatalf("history holds %d points, want 100", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i].T-all[i-1].T != 1000 {
			t.Fatalf("points %d and %d are %d ms apart, want 1000", i-1, i, all[i].T-all[i-1].T)
		}
	}
	if last := all[len(all)-1]; last.V != 2999 {
		t.Fatalf("newest point = %v, want 2999 (newest value of the step)", last.V)
	}
	recent, _ := c.History("air.temperature", 10*time.Second)
	if len(recent) != 10 {
		t.Fatalf("last 10 s = %d points, want 10", len(recent))
	}
	if _, err := c.History("nope", time.Minute); !errors.Is(err, ErrUnknownSignal) {
		t.Fatalf("unknown signal: %v", err)
	}
}

// BenchmarkEmit: "direct" is a core without a journal (the reservation
// written inline every 4,096 readings); "journal" hands each reading to
// the journal's goroutine, which records and delivers it.
func BenchmarkEmit(b *testing.B) {
	for _, journal := range []bool{false, true} {
		b.Run(map[bool]string{false: "direct", true: "journal"}[journal], func(b *testing.B) {
			c, err := New(Options{Signals: testSignals, StateDir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			if journal {
				jr, err := c.AttachJournal(discardJournal{})
				if err != nil {
					b.Fatal(err)
				}
				testkit.Start(b, 5*time.Second, jr.Run)
			}
			defer c.Close()
			c.Subscribe(discard{})
			ts := time.Now()
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				c.Emit("air.temperature", Number(float64(i)), ts)
			}
		})
	}
}

type discardJournal struct{}

func (discardJournal) LastSeq() uint64  { return 0 }
func (discardJournal) Record([]Reading) {}

type discard struct{}

func (discard) Deliver(Reading) {}

// gateActuator holds every Set until release is closed.
type gateActuator struct {
	entered chan struct{}
	release chan struct{}
}

func (a *gateActuator) Set(ctx context.Context, _ string, _ Value) error {
	a.entered <- struct{}{}
	select {
	case <-a.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (a *gateActuator) Pulse(ctx context.Context, name string, _ time.Duration) error {
	return a.Set(ctx, name, Value{})
}

// Beyond MaxCommands in flight, Execute refuses at once with ErrBusy
// rather than queueing without bound; the bound frees as commands end.
func TestExecuteBusyBeyondMaxCommands(t *testing.T) {
	const max = 3
	c, err := New(Options{Device: Device{ID: "t"}, Signals: testSignals, StateDir: t.TempDir(), MaxCommands: max})
	if err != nil {
		t.Fatal(err)
	}
	a := &gateActuator{entered: make(chan struct{}, max+1), release: make(chan struct{})}
	c.SetActuator(a)
	var observed []error
	var mu sync.Mutex
	c.ObserveCommands(func(_ Command, err error) { mu.Lock(); observed = append(observed, err); mu.Unlock() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, max)
	for range max {
		go func() {
			_, err := c.Execute(ctx, Command{Name: "led", Op: OpSet, Value: Bool(true)})
			done <- err
		}()
		<-a.entered
	}
	for _, cmd := range []Command{
		{Name: "led", Op: OpSet, Value: Bool(true), ID: "x"},
		{Name: "led", Op: OpPulse, For: time.Second},
	} {
		start := time.Now()
		_, err := c.Execute(ctx, cmd)
		if !errors.Is(err, ErrBusy) {
			t.Fatalf("command %d over the bound: err %v, want ErrBusy", max+1, err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("busy refusal took %s, want at once", took)
		}
		if want := "led: busy"; len(err.Error()) < len(want) || err.Error()[:len(want)] != want {
			t.Errorf("error %q does not start with %q", err, want)
		}
	}
	close(a.release)
	for range max {
		if err := <-done; err != nil {
			t.Errorf("a command within the bound failed: %v", err)
		}
	}
	if _, err := c.Execute(ctx, Command{Name: "led", Op: OpSet, Value: Bool(false)}); err != nil {
		t.Errorf("after the bound freed: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	var busy int
	for _, err := range observed {
		if errors.Is(err, ErrBusy) {
			busy++
		}
	}
	if busy != 2 {
		t.Errorf("observer saw %d busy refusals, want 2", busy)
	}
}

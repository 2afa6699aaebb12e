package gpio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/host/v3"

	"pibridge"
)

var ctx = context.Background()

func on(b bool) pibridge.Value { return pibridge.Bool(b) }

func TestDemoSignals(t *testing.T) {
	demo := demoConfig(t)
	if err := demo.Validate(); err != nil {
		t.Fatalf("demo.yaml does not validate: %v", err)
	}
	pin := func(name string, k pibridge.Kind, p string) pibridge.Signal {
		return pibridge.Signal{Name: name, Kind: k, Pin: p, Source: "simulated"}
	}
	sensor := func(name, unit, class, source string) pibridge.Signal {
		return pibridge.Signal{Name: name, Kind: pibridge.KindSensor, Unit: unit, Source: source, DeviceClass: class}
	}
	air := "bme280 i2c 1 0x76 on GPIO2/GPIO3 (simulated)"
	relay := pin("relay", pibridge.KindOutput, "GPIO23")
	relay.Pulse = 2 * time.Second
	want := func(cpuSource string) []pibridge.Signal {
		return []pibridge.Signal{
			pin("button", pibridge.KindInput, "GPIO17"),
			pin("door", pibridge.KindInput, "GPIO27"),
			pin("led", pibridge.KindOutput, "GPIO22"),
			relay,
			pin("fan", pibridge.KindPWM, "GPIO18"),
			sensor("air.temperature", "°C", "temperature", air),
			sensor("air.humidity", "%", "humidity", air),
			sensor("air.pressure", "hPa", "pressure", air),
			sensor("cpu.temperature", "°C", "temperature", cpuSource),
		}
	}
	withZone := t.TempDir()
	writeFile(t, withZone, "sys/class/thermal/thermal_zone0/temp", "48312\n")
	tests := []struct {
		name, root, cpuSource string
	}{
		{"real thermal zone", withZone, "cpu_temp /sys/class/thermal/thermal_zone0/temp"},
		{"no thermal zone", t.TempDir(), "cpu_temp (simulated)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Open(demoConfig(t), Options{SysRoot: tt.root, Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if got := b.Signals(); !reflect.DeepEqual(got, want(tt.cpuSource)) {
				t.Errorf("Signals():\n%v\nwant\n%v", got, want(tt.cpuSource))
			}
		})
	}
}

// The demo emits the initial state of its pins, reads the real CPU
// temperature when there is one, simulates the air sensor within plausible
// bounds, and presses the button now and then through the real input path.
func TestDemoRuns(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root, "sys/class/thermal/thermal_zone0/temp", "48312\n")
	clock := newFakeClock()
	r := start(t, demoConfig(t), Options{SysRoot: root, Clock: clock})

	for name, want := range map[string]pibridge.Value{
		"button": on(false), "door": on(false), "led": on(false), "relay": on(false), "fan": pibridge.Number(0),
	} {
		if got := r.rec.of(name); len(got) != 1 || got[0] != want {
			t.Errorf("%s initial readings = %v, want [%v]", name, got, want)
		}
	}
	eventually(t, "the first sensor readings", func() bool {
		return len(r.rec.of("cpu.temperature")) == 1 && len(r.rec.of("air.pressure")) == 1
	})
	if v, _ := r.rec.last("cpu.temperature"); v.Float() != 48.31 {
		t.Errorf("cpu.temperature = %v, want 48.31 from the thermal zone", v)
	}
	// Timers armed: the two sensors' next reads and the two inputs' next
	// simulated presses.
	eventually(t, "the timers", func() bool { return clock.Pending() == 4 })
	clock.Advance(7 * time.Second * 13 / 10) // the button's longest gap
	eventually(t, "a simulated press", func() bool { v, _ := r.rec.last("button"); return v.Bool() })
	if lvl := simPinOf(t, r.Board, "button").Read(); lvl != pgpio.Low {
		t.Errorf("pressed button (pull-up, inverted) pin = %v, want Low", lvl)
	}
	eventually(t, "the release timer", func() bool { return clock.Pending() == 4 })
	clock.Advance(350 * time.Millisecond)
	eventually(t, "the release", func() bool { return len(r.rec.of("button")) == 3 })

	bounds := map[string][2]float64{"air.temperature": {10, 35}, "air.humidity": {20, 80}, "air.pressure": {980, 1040}}
	for name, lim := range bounds {
		vs := r.rec.of(name)
		if len(vs) < 2 {
			t.Errorf("%s: %d readings after 9s, want one a second", name, len(vs))
		}
		for _, v := range vs {
			if v.Float() < lim[0] || v.Float() > lim[1] {
				t.Errorf("%s = %v, outside %v", name, v, lim)
			}
		}
	}
}

func outputsConfig() Config {
	return Config{
		Board: BoardSim,
		Inputs: []InputConfig{
			{Name: "button", Pin: "GPIO17", Pull: "up", Invert: true},
		},
		Outputs: []OutputConfig{
			{Name: "led", Pin: "GPIO22"},
			{Name: "inv", Pin: "P1_16", Invert: true}, // GPIO23
			{Name: "relay", Pin: "GPIO24", MaxOn: ms(10 * 60 * 1000)},
			{Name: "lamp", Pin: "GPIO25", Initial: "on", Safe: "on"},
		},
		PWM: []PWMConfig{
			{Name: "fan", Pin: "GPIO18", Frequency: Frequency(25 * physic.KiloHertz), Initial: 0.25, Safe: 0.1},
		},
	}
}

func TestSetOutputs(t *testing.T) {
	r := start(t, outputsConfig(), Options{Clock: newFakeClock()})
	steps := []struct {
		name  string
		v     pibridge.Value
		want  bool
		level pgpio.Level
	}{
		{"led", on(true), true, pgpio.High},
		{"led", on(true), true, pgpio.High}, // unchanged, still confirmed
		{"led", pibridge.Toggle(), false, pgpio.Low},
		{"led", pibridge.Toggle(), true, pgpio.High},
		{"led", on(false), false, pgpio.Low},
		{"inv", on(true), true, pgpio.Low},
		{"inv", pibridge.Toggle(), false, pgpio.High},
		{"lamp", on(false), false, pgpio.Low},
	}
	for i, s := range steps {
		before := len(r.rec.of(s.name))
		if err := r.Set(ctx, s.name, s.v); err != nil {
			t.Fatalf("step %d: Set(%s, %v): %v", i, s.name, s.v, err)
		}
		// Set returns after the reading was emitted: no waiting here.
		got := r.rec.of(s.name)
		if len(got) != before+1 || got[len(got)-1] != on(s.want) {
			t.Errorf("step %d: Set(%s, %v) readings %v, want one more ending in %v", i, s.name, s.v, got, s.want)
		}
		if lvl := simPinOf(t, r.Board, s.name).Read(); lvl != s.level {
			t.Errorf("step %d: %s pin = %v, want %v", i, s.name, lvl, s.level)
		}
		if v, ok := r.Level(s.name); !ok || v != on(s.want) {
			t.Errorf("step %d: Level(%s) = %v, want %v", i, s.name, v, s.want)
		}
	}
}

func TestInitialLevels(t *testing.T) {
	b, err := Open(outputsConfig(), Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// Before Run: outputs are at their initial state already.
	for name, want := range map[string]pgpio.Level{"led": pgpio.Low, "inv": pgpio.High, "lamp": pgpio.High, "button": pgpio.High} {
		if lvl := simPinOf(t, b, name).Read(); lvl != want {
			t.Errorf("%s pin = %v, want %v", name, lvl, want)
		}
	}
	if d, f := pwmOf(t, b, "fan"); d != pgpio.DutyMax/4 || f != 25*physic.KiloHertz {
		t.Errorf("fan = %v at %v, want 25%% at 25kHz", d, f)
	}
	if err := b.Set(ctx, "led", on(true)); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Set before Run = %v, want ErrNotRunning", err)
	}
}

func TestPWM(t *testing.T) {
	r := start(t, outputsConfig(), Options{Clock: newFakeClock()})
	for _, duty := range []float64{0.5, 1, 0, 0.333} {
		if err := r.Set(ctx, "fan", pibridge.Number(duty)); err != nil {
			t.Fatal(err)
		}
		d, f := pwmOf(t, r.Board, "fan")
		if want := pgpio.Duty(math.Round(duty * float64(pgpio.DutyMax))); d != want || f != 25*physic.KiloHertz {
			t.Errorf("fan %v: pin duty %d at %v, want %d at 25kHz", duty, d, f, want)
		}
		if v, _ := r.rec.last("fan"); v != pibridge.Number(duty) {
			t.Errorf("fan reading %v, want %v", v, duty)
		}
		if v, _ := r.Level("fan"); math.Abs(v.Float()-duty) > 1e-6 {
			t.Errorf("Level(fan) = %v, want %v", v, duty)
		}
	}
}

func TestCommandErrors(t *testing.T) {
	r := start(t, outputsConfig(), Options{Clock: newFakeClock()})
	tests := []struct {
		name string
		do   func() error
		want error
	}{
		{"unknown", func() error { return r.Set(ctx, "nope", on(true)) }, pibridge.ErrUnknownSignal},
		{"input", func() error { return r.Set(ctx, "button", on(true)) }, pibridge.ErrNotWritable},
		{"number to output", func() error { return r.Set(ctx, "led", pibridge.Number(0.5)) }, pibridge.ErrBadValue},
		{"bool to pwm", func() error { return r.Set(ctx, "fan", on(true)) }, pibridge.ErrBadValue},
		{"pwm above 1", func() error { return r.Set(ctx, "fan", pibridge.Number(1.5)) }, pibridge.ErrBadValue},
		{"pulse pwm", func() error { return r.Pulse(ctx, "fan", time.Second) }, pibridge.ErrNotWritable},
		{"pulse unknown", func() error { return r.Pulse(ctx, "nope", time.Second) }, pibridge.ErrUnknownSignal},
		{"pulse zero", func() error { return r.Pulse(ctx, "led", 0) }, pibridge.ErrBadValue},
		{"pulse beyond max_on", func() error { return r.Pulse(ctx, "relay", 11*time.Minute) }, pibridge.ErrBadValue},
		{"drive output", func() error { return r.DriveInput("led", true) }, nil},
	}
	for _, tt := range tests {
		err := tt.do()
		if tt.want == nil && err == nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%s: error %v, want %v", tt.name, err, tt.want)
		}
	}
}

// max_on and pulse ends run on the injected clock: no sleeping.
func TestMaxOnAndPulse(t *testing.T) {
	clock := newFakeClock()
	r := start(t, outputsConfig(), Options{Clock: clock})
	levels := func(name string) []bool {
		var out []bool
		for _, v := range r.rec.of(name) {
			out = append(out, v.Bool())
		}
		return out
	}
	expect := func(step, name string, want ...bool) {
		t.Helper()
		if got := levels(name); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %s readings %v, want %v", step, name, got, want)
		}
		if lvl := simPinOf(t, r.Board, name).Read(); lvl != pgpio.Level(want[len(want)-1]) {
			t.Errorf("%s: %s pin %v, want %v", step, name, lvl, want[len(want)-1])
		}
	}

	must(t, r.Set(ctx, "relay", on(true)))
	clock.Advance(9*time.Minute + 59*time.Second)
	expect("before max_on", "relay", false, true)
	clock.Advance(time.Second)
	expect("at max_on", "relay", false, true, false)

	// max_on counts from switching on; a later "on" does not extend it.
	must(t, r.Set(ctx, "relay", on(true)))
	clock.Advance(5 * time.Minute)
	must(t, r.Set(ctx, "relay", on(true)))
	clock.Advance(5 * time.Minute)
	expect("max_on from first on", "relay", false, true, false, true, true, false)

	// A pulse returns with the output on; the off comes by timer.
	must(t, r.Pulse(ctx, "led", 500*time.Millisecond))
	expect("pulse started", "led", false, true)
	clock.Advance(499 * time.Millisecond)
	expect("pulse running", "led", false, true)
	clock.Advance(time.Millisecond)
	expect("pulse ended", "led", false, true, false)

	// Set on during a pulse keeps the output on.
	must(t, r.Pulse(ctx, "led", 500*time.Millisecond))
	must(t, r.Set(ctx, "led", on(true)))
	clock.Advance(time.Second)
	expect("pulse cancelled by on", "led", false, true, false, true, true)

	// A pulse on an output that is on ends it after the pulse.
	must(t, r.Pulse(ctx, "led", 200*time.Millisecond))
	clock.Advance(200 * time.Millisecond)
	expect("pulse on an on output", "led", false, true, false, true, true, true, false)

	// Off during a pulse; the stale timer does nothing later.
	must(t, r.Pulse(ctx, "led", 200*time.Millisecond))
	must(t, r.Set(ctx, "led", pibridge.Toggle()))
	clock.Advance(time.Second)
	expect("pulse cut short", "led", false, true, false, true, true, true, false, true, false)

	// A pulse beyond the remaining max_on ends at max_on.
	must(t, r.Set(ctx, "relay", on(true)))
	clock.Advance(5 * time.Minute)
	must(t, r.Pulse(ctx, "relay", 8*time.Minute))
	clock.Advance(5 * time.Minute)
	expect("max_on wins over pulse", "relay", false, true, false, true, true, false, true, true, false)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestFailsafe(t *testing.T) {
	clock := newFakeClock()
	cfg := Config{Board: BoardSim, Outputs: []OutputConfig{
		{Name: "pump", Pin: "GPIO27", FailsafeAfter: ms(60_000)},
		{Name: "led", Pin: "GPIO22"},
	}}
	r := start(t, cfg, Options{Clock: clock})
	must(t, r.Set(ctx, "pump", on(true)))
	must(t, r.Set(ctx, "led", on(true)))

	// Nobody connected since Run started: safe after failsafe_after.
	clock.Advance(59 * time.Second)
	if v, _ := r.Level("pump"); !v.Bool() {
		t.Fatal("pump went safe early")
	}
	clock.Advance(time.Second)
	if v, _ := r.Level("pump"); v.Bool() {
		t.Fatal("pump still on after failsafe_after unreachable")
	}
	if v, _ := r.rec.last("pump"); v.Bool() {
		t.Error("failsafe not emitted")
	}
	if v, _ := r.Level("led"); !v.Bool() {
		t.Error("led has no failsafe_after but went off")
	}

	// Online: no failsafe however long.
	r.SetOnline(true)
	must(t, r.Set(ctx, "pump", on(true)))
	clock.Advance(time.Hour)
	if v, _ := r.Level("pump"); !v.Bool() {
		t.Fatal("pump went safe while online")
	}
	// Offline again: the clock starts anew.
	r.SetOnline(false)
	clock.Advance(59 * time.Second)
	r.SetOnline(true)
	r.SetOnline(false)
	clock.Advance(59 * time.Second)
	if v, _ := r.Level("pump"); !v.Bool() {
		t.Fatal("failsafe counted across a reconnect")
	}
	clock.Advance(time.Second)
	if v, _ := r.Level("pump"); v.Bool() {
		t.Fatal("pump still on after a second outage")
	}
}

func TestHalt(t *testing.T) {
	r := start(t, outputsConfig(), Options{Clock: newFakeClock()})
	must(t, r.Set(ctx, "led", on(true)))
	must(t, r.Set(ctx, "inv", on(true)))
	must(t, r.Set(ctx, "lamp", on(false)))
	must(t, r.Set(ctx, "fan", pibridge.Number(0.9)))
	before := r.rec.count()
	must(t, r.Halt())
	if got := r.rec.count() - before; got != 5 {
		t.Errorf("Halt emitted %d readings, want 5 (every output and pwm)", got)
	}
	check := func(when string) {
		t.Helper()
		for name, want := range map[string]pgpio.Level{"led": pgpio.Low, "inv": pgpio.High, "relay": pgpio.Low, "lamp": pgpio.High} {
			if lvl := simPinOf(t, r.Board, name).Read(); lvl != want {
				t.Errorf("%s: %s pin %v, want %v", when, name, lvl, want)
			}
		}
		if d, _ := pwmOf(t, r.Board, "fan"); d != toDuty(0.1) {
			t.Errorf("%s: fan duty %v, want 10%%", when, d)
		}
	}
	check("after Halt")

	// Run drives safe states when its context ends, and emits them.
	must(t, r.Set(ctx, "led", on(true)))
	must(t, r.Set(ctx, "fan", pibridge.Number(0.9)))
	r.stop()
	check("after Run")
	if v, _ := r.rec.last("led"); v.Bool() {
		t.Error("the safe state at shutdown was not emitted")
	}
	if err := r.Set(ctx, "led", on(true)); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Set after Run = %v, want ErrNotRunning", err)
	}
	if err := r.Run(ctx, r.rec); err == nil {
		t.Error("a second Run did not fail")
	}
}

func interlockConfig(wait time.Duration) Config {
	return Config{Board: BoardSim, Outputs: []OutputConfig{
		{Name: "up", Pin: "GPIO5", Interlock: "blind", InterlockWait: pibridge.Duration(wait)},
		{Name: "down", Pin: "GPIO6", Interlock: "blind", InterlockWait: pibridge.Duration(wait)},
		{Name: "other", Pin: "GPIO13"},
	}}
}

// hookedPin is a gpiotest.Pin that reports every level it is driven to.
// Out runs with the output's lock held, so the hook sees one pin's levels
// in order.
type hookedPin struct {
	*gpiotest.Pin
	hook func(name string, l pgpio.Level)
}

func (p hookedPin) Out(l pgpio.Level) error {
	if err := p.Pin.Out(l); err != nil {
		return err
	}
	p.hook(p.N, l)
	return nil
}

// 50 goroutines command both sides of an interlock at once; a pin hook
// checks after every pin change that the two are never on together and
// that the dead time was kept.
func TestInterlockConcurrent(t *testing.T) {
	const wait = 2 * time.Millisecond
	var (
		mu         sync.Mutex
		high       = map[string]bool{}
		fell       = map[string]time.Time{}
		violations []string
		ons        int
	)
	hook := func(pin string, l pgpio.Level) {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		other := map[string]string{"GPIO5": "GPIO6", "GPIO6": "GPIO5"}[pin]
		if other == "" {
			return
		}
		if l == pgpio.High && !high[pin] {
			ons++
			if high[other] {
				violations = append(violations, fmt.Sprintf("%s on while %s on", pin, other))
			}
			if f, ok := fell[other]; ok && now.Sub(f) < wait {
				violations = append(violations, fmt.Sprintf("%s on %v after %s went off", pin, now.Sub(f), other))
			}
		}
		if l == pgpio.Low && high[pin] {
			fell[pin] = now
		}
		high[pin] = l == pgpio.High
	}
	openPin := func(name string) (pgpio.PinIO, error) {
		return hookedPin{newSimPin(name), hook}, nil
	}
	r := start(t, interlockConfig(wait), Options{OpenPin: openPin})

	var wg sync.WaitGroup
	for g := range 50 {
		wg.Go(func() {
			for i := range 20 {
				name := [2]string{"up", "down"}[(g+i)%2]
				var err error
				switch (g*7 + i) % 5 {
				case 0, 1:
					err = r.Set(ctx, name, on(true))
				case 2:
					err = r.Set(ctx, name, pibridge.Toggle())
				case 3:
					err = r.Set(ctx, name, on(false))
				case 4:
					err = r.Pulse(ctx, name, time.Millisecond)
				}
				if err != nil {
					t.Errorf("%s: %v", name, err)
				}
			}
		})
	}
	wg.Wait()
	r.stop()
	mu.Lock()
	defer mu.Unlock()
	for _, v := range violations {
		t.Error(v)
	}
	if ons < 50 {
		t.Errorf("only %d switch-ons: the test did not exercise the interlock", ons)
	}
	// Every change was emitted: the readings of each side alternate or
	// repeat, and the last matches the pin.
	for _, name := range []string{"up", "down"} {
		if v, _ := r.rec.last(name); v.Bool() {
			t.Errorf("%s: last reading on after shutdown", name)
		}
	}
}

// The interlock switches the partner off (emitting it) and waits the dead
// time on the clock; Halt during that wait cancels the switch-on.
func TestInterlockWaitAndHalt(t *testing.T) {
	clock := newFakeClock()
	r := start(t, interlockConfig(200*time.Millisecond), Options{Clock: clock})
	must(t, r.Set(ctx, "up", on(true)))

	res := make(chan error, 1)
	go func() { res <- r.Set(ctx, "down", on(true)) }()
	eventually(t, "up switched off by the interlock", func() bool {
		v, _ := r.rec.last("up")
		return !v.Bool() && clock.Pending() == 1
	})
	if v, _ := r.Level("down"); v.Bool() {
		t.Fatal("down on before the dead time")
	}
	clock.Advance(200 * time.Millisecond)
	must(t, <-res)
	if up, _ := r.Level("up"); up.Bool() {
		t.Fatal("both on")
	}
	if down, _ := r.Level("down"); !down.Bool() {
		t.Fatal("down not on")
	}

	// Now up again, but Halt comes during the wait.
	go func() { res <- r.Set(ctx, "up", on(true)) }()
	eventually(t, "down switched off by the interlock", func() bool {
		v, _ := r.rec.last("down")
		return !v.Bool() && clock.Pending() == 1
	})
	must(t, r.Halt())
	clock.Advance(200 * time.Millisecond)
	if err := <-res; !errors.Is(err, pibridge.ErrConflict) {
		t.Errorf("switch-on across a Halt = %v, want ErrConflict", err)
	}
	if up, _ := r.Level("up"); up.Bool() {
		t.Error("up went on after Halt")
	}

	// A context that ends during the wait stops the command too.
	must(t, r.Set(ctx, "down", on(true)))
	cctx, cancel := context.WithCancel(ctx)
	go func() { res <- r.Set(cctx, "up", on(true)) }()
	eventually(t, "the wait", func() bool { return clock.Pending() == 1 })
	cancel()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled wait = %v", err)
	}
	if up, _ := r.Level("up"); up.Bool() {
		t.Error("up went on after its context ended")
	}
}

// On the sim board a driven input goes through gpiotest's EdgesChan and
// WaitForEdge: each change is one reading.
func TestInputs(t *testing.T) {
	cfg := Config{Board: BoardSim, Inputs: []InputConfig{
		{Name: "button", Pin: "GPIO17", Pull: "up", Invert: true},
	}}
	tests := []struct {
		name  string
		drive []bool
		want  []bool // readings, initial first
	}{
		{"press", []bool{true}, []bool{false, true}},
		{"press and release", []bool{true, false}, []bool{false, true, false}},
		{"press, release, press", []bool{true, false, true}, []bool{false, true, false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := start(t, cfg, Options{})
			for i, v := range tt.drive {
				must(t, r.DriveInput("button", v))
				eventually(t, "the change", func() bool { return len(r.rec.of("button")) == i+2 })
			}
			r.stop() // waits for the input goroutine: nothing more can come
			var got []bool
			for _, v := range r.rec.of("button") {
				got = append(got, v.Bool())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("readings %v, want %v", got, tt.want)
			}
		})
	}
}

// Run publishes every input's state first, as the pin reads with its pull
// and invert applied, before any edge.
func TestInputFirstState(t *testing.T) {
	tests := []struct {
		pull   string
		line   pgpio.Level // what the world drives, for pull none
		invert bool
		want   bool
	}{
		{"up", pgpio.Low, false, true},
		{"up", pgpio.Low, true, false},
		{"down", pgpio.High, false, false},
		{"down", pgpio.High, true, true},
		{"none", pgpio.High, false, true},
		{"none", pgpio.Low, true, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("pull %s line %v invert %v", tt.pull, tt.line, tt.invert), func(t *testing.T) {
			openPin := func(name string) (pgpio.PinIO, error) {
				p := newSimPin(name)
				p.L = tt.line // In sets it from the pull, except with none
				return p, nil
			}
			cfg := Config{Board: BoardPeriph, Inputs: []InputConfig{{Name: "door", Pin: "GPIO27", Pull: tt.pull, Invert: tt.invert}}}
			r := start(t, cfg, Options{OpenPin: openPin, Clock: newFakeClock()})
			if got := r.rec.of("door"); len(got) != 1 || got[0] != on(tt.want) {
				t.Errorf("first readings %v, want [%v]", got, tt.want)
			}
		})
	}
}

// scriptedPin is a gpiotest.Pin whose WaitForEdge the test answers, as the
// kernel and the passing time would: an edge to a level, or the timeout
// running out with the line quiet. A burst of bounces is then scripted
// exactly, and the test sees every wait the input asks for, so it checks
// that each debounce window is the configured one. Nothing sleeps.
type scriptedPin struct {
	*gpiotest.Pin
	waits   chan time.Duration
	answers chan *pgpio.Level // nil: the timeout ran out
	done    chan struct{}     // closed: every wait times out at once
}

func newScriptedPin(name string) *scriptedPin {
	return &scriptedPin{
		Pin:   newSimPin(name),
		waits: make(chan time.Duration), answers: make(chan *pgpio.Level), done: make(chan struct{}),
	}
}

func (p *scriptedPin) WaitForEdge(timeout time.Duration) bool {
	select {
	case p.waits <- timeout:
	case <-p.done:
		return false
	}
	select {
	case l := <-p.answers:
		if l == nil {
			return false
		}
		p.Pin.Out(*l) // the line moved; gpiotest's own WaitForEdge does this too
		return true
	case <-p.done:
		return false
	}
}

// step is one WaitForEdge: the timeout the input must ask for, and the
// answer: an edge to a level, or quiet.
type step struct {
	wait time.Duration
	edge *pgpio.Level
}

func TestDebounceScripted(t *testing.T) {
	const debounce = 20 * time.Millisecond
	low, high := pgpio.Low, pgpio.High
	edge := func(l pgpio.Level) *pgpio.Level { return &l }
	press := edge(low) // pull-up, button to ground, invert: low is pressed
	release := edge(high)
	bounces := func(n int) []step {
		var s []step
		for i := range n {
			s = append(s, step{debounce, [2]*pgpio.Level{release, press}[i%2]})
		}
		return s
	}
	tests := []struct {
		name     string
		debounce time.Duration
		script   []step
		want     []bool // readings, the first state first
	}{
		{"press", debounce, []step{{edgeSlice, press}, {debounce, nil}}, []bool{false, true}},
		{"bouncing press is one change", debounce, []step{
			{edgeSlice, press}, {debounce, release}, {debounce, press}, {debounce, release}, {debounce, press}, {debounce, nil},
		}, []bool{false, true}},
		{"bounce that settles back is no change", debounce, []step{
			{edgeSlice, press}, {debounce, release}, {debounce, press}, {debounce, release}, {debounce, nil},
		}, []bool{false}},
		{"press then release, each settled", debounce, []step{
			{edgeSlice, press}, {debounce, nil}, {edgeSlice, release}, {debounce, release}, {debounce, nil},
		}, []bool{false, true, false}},
		{"without debounce every edge counts", 0, []step{
			{edgeSlice, press}, {edgeSlice, release}, {edgeSlice, press},
		}, []bool{false, true, false, true}},
		// An edge the kernel lost (periph/conn#40): the periodic read after
		// a quiet edgeSlice finds the new level and debounces it.
		{"lost edge found by the periodic read", debounce, []step{
			{edgeSlice, nil}, {debounce, nil},
		}, []bool{false, true}},
		// A line that never stops bouncing is read after 64 windows.
		{"endless bouncing", debounce, append([]step{{edgeSlice, press}}, bounces(64)...), []bool{false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newScriptedPin("GPIO17")
			cfg := Config{Board: BoardPeriph, Inputs: []InputConfig{
				{Name: "button", Pin: "GPIO17", Pull: "up", Invert: true, Debounce: pibridge.Duration(tt.debounce)},
			}}
			r := start(t, cfg, Options{OpenPin: func(string) (pgpio.PinIO, error) { return p, nil }})
			t.Cleanup(func() { close(p.done) }) // before start's cleanup stops Run
			if tt.name == "lost edge found by the periodic read" {
				p.Out(low) // moved while nobody was waiting, and no edge came
			}
			next := func() time.Duration {
				t.Helper()
				select {
				case d := <-p.waits:
					return d
				case <-time.After(5 * time.Second):
					t.Fatal("the input did not wait for an edge")
					return 0
				}
			}
			for i, s := range tt.script {
				if d := next(); d != s.wait {
					t.Fatalf("step %d: WaitForEdge(%v), want WaitForEdge(%v)", i, d, s.wait)
				}
				p.answers <- s.edge
			}
			// The next wait is a quiet edgeSlice: everything the script
			// caused has been emitted by now.
			if d := next(); d != edgeSlice {
				t.Fatalf("after the script: WaitForEdge(%v), want %v", d, edgeSlice)
			}
			var got []bool
			for _, v := range r.rec.of("button") {
				got = append(got, v.Bool())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("readings %v, want %v", got, tt.want)
			}
		})
	}
}

// A gpiotest.Pin without EdgesChan refuses edge detection, like a driver
// that cannot deliver edges: the input polls it.
func TestInputPolling(t *testing.T) {
	openPin := func(name string) (pgpio.PinIO, error) {
		n, _ := pinNumber(name)
		return &gpiotest.Pin{N: name, Num: n}, nil
	}
	cfg := Config{Board: BoardSim, Inputs: []InputConfig{{Name: "door", Pin: "GPIO27", Pull: "down", Debounce: ms(20)}}}
	r := start(t, cfg, Options{OpenPin: openPin, PollInterval: time.Millisecond})
	if r.inputs[0].edges {
		t.Fatal("input thinks it has edges")
	}
	must(t, r.DriveInput("door", true))
	eventually(t, "the polled change", func() bool { v, _ := r.rec.last("door"); return v.Bool() })
	must(t, r.DriveInput("door", false))
	eventually(t, "the polled change back", func() bool { return len(r.rec.of("door")) == 3 })
}

type nopEmitter struct{}

func (nopEmitter) Emit(string, pibridge.Value, time.Time) {}

// Commands cost no allocation: a Pi Zero runs this for years.
func TestSetAllocs(t *testing.T) {
	b, err := Open(outputsConfig(), Options{Logger: testLogger(t), Clock: newFakeClock()})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { b.Run(cctx, nopEmitter{}); close(done) }()
	t.Cleanup(func() { cancel(); <-done; b.Close() })
	eventually(t, "Run", b.running)
	for _, tt := range []struct {
		name string
		v    pibridge.Value
	}{
		{"led", pibridge.Toggle()},
		{"relay", pibridge.Toggle()}, // with its max_on timer
		{"fan", pibridge.Number(0.5)},
	} {
		if n := testing.AllocsPerRun(100, func() { b.Set(ctx, tt.name, tt.v) }); n != 0 {
			t.Errorf("Set(%s) allocates %v times", tt.name, n)
		}
	}
}

// Board periph starts periph's host drivers and logs each one that
// loaded, was skipped (here, on a machine that is not a Pi, most) or
// failed, with a one-line summary first.
func TestHostInitLogged(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b, err := Open(Config{Board: BoardPeriph}, Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	must(t, b.Close())
	state, err := host.Init() // the same state again: Init runs once per process
	if err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	want := []string{fmt.Sprintf(`msg="periph host drivers" loaded=[] skipped=%d failed=%d`, len(state.Skipped), len(state.Failed))}
	if len(state.Loaded) > 0 {
		want[0] = `msg="periph host drivers" loaded=[`
	}
	for _, d := range state.Loaded {
		want = append(want, fmt.Sprintf(`msg="periph driver loaded" driver=%s`, d))
	}
	for _, f := range state.Skipped {
		want = append(want, fmt.Sprintf(`msg="periph driver skipped" driver=%s`, f.D))
	}
	for _, f := range state.Failed {
		want = append(want, fmt.Sprintf(`msg="periph driver failed" driver=%s`, f.D))
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("log lacks %q:\n%s", w, out)
		}
	}
	if len(state.Loaded)+len(state.Skipped)+len(state.Failed) == 0 {
		t.Error("host.Init reported no drivers at all")
	}
}

// noPWMPin is a pin whose driver has no PWM, like periph's gpioioctl lines
// on a Pi 5, or bcm283x without /dev/mem.
type noPWMPin struct{ *gpiotest.Pin }

func (noPWMPin) PWM(pgpio.Duty, physic.Frequency) error { return errors.New("PWM() not implemented") }

// A pin without PWM still opens, goes safe and takes 0 and 1 as plain
// levels; any other duty is a bad value naming the pin, with the driver's
// words (a 400 over HTTP, not a 500).
func TestPWMWithoutDriver(t *testing.T) {
	var pin noPWMPin
	openPin := func(name string) (pgpio.PinIO, error) {
		pin = noPWMPin{newSimPin(name)}
		return pin, nil
	}
	cfg := Config{Board: BoardPeriph, PWM: []PWMConfig{{Name: "fan", Pin: "GPIO18", Safe: 1}}}
	r := start(t, cfg, Options{OpenPin: openPin, Clock: newFakeClock()})
	steps := []struct {
		duty  float64
		level pgpio.Level
		err   string
	}{
		{1, pgpio.High, ""},
		{0.5, pgpio.High, "PWM() not implemented"},
		{0, pgpio.Low, ""},
	}
	for _, s := range steps {
		err := r.Set(ctx, "fan", pibridge.Number(s.duty))
		if s.err == "" && err != nil || s.err != "" && (!errors.Is(err, pibridge.ErrBadValue) || !strings.Contains(err.Error(), s.err) || !strings.Contains(err.Error(), "GPIO18")) {
			t.Errorf("Set(fan, %v) = %v, want error %q", s.duty, err, s.err)
		}
		if lvl := pin.Read(); lvl != s.level {
			t.Errorf("after Set(fan, %v): pin %v, want %v", s.duty, lvl, s.level)
		}
	}
	if got, want := r.rec.of("fan"), []pibridge.Value{pibridge.Number(0), pibridge.Number(1), pibridge.Number(0)}; !reflect.DeepEqual(got, want) {
		t.Errorf("readings %v, want %v", got, want)
	}
	must(t, r.Halt())
	if lvl := pin.Read(); lvl != pgpio.High {
		t.Errorf("safe 1: pin %v, want High", lvl)
	}
}

func TestRunningWhileRunOnly(t *testing.T) {
	b, err := Open(Config{Board: BoardSim, Outputs: []OutputConfig{{Name: "led", Pin: "GPIO22"}}}, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if b.Running() {
		t.Fatal("Running before Run")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, &recorder{}) }()
	eventually(t, "Running once Run started", b.Running)
	if err := b.Set(ctx, "led", on(true)); err != nil {
		t.Fatalf("Set while Running: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if b.Running() {
		t.Fatal("Running after Run returned")
	}
	b.Close()
}

package gpio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2creg"
	"periph.io/x/conn/v3/onewire"
	"periph.io/x/conn/v3/onewire/onewirereg"
	"periph.io/x/host/v3"

	"pibridge"
)

// Options tune a Board beyond its Config; the zero value is production.
type Options struct {
	Logger *slog.Logger
	// Clock drives max_on, pulses, interlock waits, failsafe, sensor
	// intervals and simulated presses. Default: the system clock.
	Clock Clock
	// SysRoot is put in front of the /sys paths that cpu_temp reads, and a
	// ds18b20 read through the kernel's w1_therm files, so tests point them
	// at fixture files. Default "/".
	SysRoot string
	// OpenPin opens a GPIO by its normalised name ("GPIO17"). Default:
	// gpioreg.ByName after host.Init on board periph, periph's test double
	// gpiotest.Pin on board sim.
	OpenPin func(name string) (pgpio.PinIO, error)
	// OpenI2C opens an I²C bus by its config name ("1"). Default:
	// i2creg.Open on board periph. Tests pass an i2ctest.Playback.
	OpenI2C func(name string) (i2c.BusCloser, error)
	// OpenOneWire opens a 1-Wire bus by its onewire_bus name ("" is the
	// first one). Default: onewirereg.Open after host.Init on board
	// periph, which on a Pi finds the kernel's w1 masters through netlink
	// (periph.io/x/host/v3/netlink). Tests pass an onewiretest.Playback.
	OpenOneWire func(name string) (onewire.BusCloser, error)
	// PollInterval is how often an input without edge detection is read.
	// Default 10ms.
	PollInterval time.Duration
	// Seed makes the simulation repeatable; 0 picks a random one.
	Seed uint64
	// Keep is the board this one replaces, after its HandOver: the
	// outputs and pwm it handed over are taken as they are, their pins
	// never written while changing hands.
	Keep *Board
	// SimBusy lists pins that fail to open on board sim as if another
	// process held them: a way to test what happens when a pin cannot open.
	SimBusy []string
}

// ErrNotRunning is returned by commands while Run is not active: without
// Run there is no Emitter to confirm them through.
var ErrNotRunning = errors.New("the board is not running")

// edgeSlice bounds one WaitForEdge on sysfs and memory-mapped pins so an
// input goroutine notices that its context ended, and re-reads the pin: on
// some kernels their edges get lost (sysfs WaitForEdge broke with Linux
// 6.6, periph/conn#40), and a periodic read puts the input right again.
// GPIO character device lines (periph's gpioioctl) queue every edge in the
// kernel, so they wait with no timeout (0 to gpioioctl; -1 would be an
// already-passed deadline, which spins) and cost nothing while idle; as
// their Halt is undone by a WaitForEdge that starts after it, shutdown
// repeats it until the goroutine has returned (haltInputs). Simulated pins
// lose no edges and are woken at shutdown (input.wake), so they wait
// without a timeout too (simEdgeWait).
const edgeSlice = 250 * time.Millisecond

// lineEdgeWait is WaitForEdge's "no timeout" for gpioioctl lines.
const lineEdgeWait time.Duration = 0

// simEdgeWait is WaitForEdge's "no timeout" for gpiotest pins.
const simEdgeWait time.Duration = -1

// Board is a set of pins and sensors, real or simulated. Its methods are
// safe for concurrent use. Run makes it live; Set and Pulse need Run.
type Board struct {
	cfg     Config // defaulted
	sim     bool
	log     *slog.Logger
	clock   Clock
	sysRoot string
	poll    time.Duration
	seed    uint64
	keep    *Board // the board handing its pins over, during Open only

	signals []pibridge.Signal
	inputs  []*input
	outputs []*output
	pwms    []*pwmOut
	sensors []*sensor
	byName  map[string]entity

	emitter atomic.Pointer[emitterBox] // set while Run is active
	ran     atomic.Bool

	link linkState // failsafe bookkeeping; see SetOnline

	busMu   sync.Mutex // guards both bus maps
	buses   map[string]i2c.BusCloser
	open    func(string) (i2c.BusCloser, error)
	w1Buses map[string]onewire.BusCloser
	openW1  func(string) (onewire.BusCloser, error)
}

type emitterBox struct{ pibridge.Emitter }

// entity is what a signal name refers to; exactly one field is set, except
// for a sensor quantity, which points at its sensor.
type entity struct {
	in  *input
	out *output
	pwm *pwmOut
	sen *sensor
}

// New opens the board described by cfg with default Options.
func New(cfg Config, log *slog.Logger) (*Board, error) {
	return Open(cfg, Options{Logger: log})
}

// Open validates cfg, opens every pin (on board periph after host.Init,
// whose loaded, skipped and failed drivers it logs) and drives outputs and
// pwm to their initial state at once. Sensors are opened by Run, and a
// sensor that is missing or failing is retried there, so a loose wire
// never keeps the outputs from working.
func Open(cfg Config, o Options) (*Board, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Board{
		cfg:     cfg.withDefaults(),
		log:     o.Logger,
		clock:   o.Clock,
		sysRoot: o.SysRoot,
		poll:    o.PollInterval,
		seed:    o.Seed,
		keep:    o.Keep,
		byName:  map[string]entity{},
		buses:   map[string]i2c.BusCloser{},
		open:    o.OpenI2C,
		w1Buses: map[string]onewire.BusCloser{},
		openW1:  o.OpenOneWire,
	}
	b.sim = b.cfg.Board == BoardSim
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.clock == nil {
		b.clock = systemClock{}
	}
	if b.sysRoot == "" {
		b.sysRoot = "/"
	}
	if b.poll <= 0 {
		b.poll = 10 * time.Millisecond
	}
	if b.seed == 0 {
		b.seed = rand.Uint64()
	}
	openPin := o.OpenPin
	if openPin == nil && b.sim {
		openPin = openSim(o.SimBusy)
	}
	needHost := !b.sim && (openPin == nil || b.open == nil && b.hasI2C() || b.openW1 == nil && b.hasOneWire())
	if needHost {
		if err := b.initHost(); err != nil {
			return nil, err
		}
	}
	if openPin == nil {
		openPin = func(name string) (pgpio.PinIO, error) {
			p := gpioreg.ByName(name)
			if p == nil {
				// The kernel names some header lines by function (ID_SDA,
				// SDA1, SPI_MOSI…): take the line by its offset instead.
				p = headerLine(name)
			}
			if p == nil {
				return nil, fmt.Errorf("pin %s not found: is this a Raspberry Pi, and may this user open /dev/gpiochip*?", name)
			}
			return p, nil
		}
	}
	if b.open == nil {
		b.open = i2creg.Open
	}
	if b.openW1 == nil {
		b.openW1 = onewirereg.Open
	}
	err := b.openPins(openPin)
	if err != nil {
		b.returnKept()
	}
	b.keep = nil
	if err != nil {
		b.Close()
		if errors.Is(err, syscall.EBUSY) || strings.Contains(err.Error(), syscall.EBUSY.Error()) {
			err = fmt.Errorf("%w: the line is in use by another process (is another bridge running on these pins?)", err)
		}
		return nil, err
	}
	if err := b.openSensors(); err != nil {
		b.Close()
		return nil, err
	}
	b.signals = b.cfg.Signals()
	for i := range b.signals {
		s := &b.signals[i]
		if e := b.byName[s.Name]; e.sen != nil {
			s.Source = e.sen.source
		}
	}
	return b, nil
}

func (b *Board) hasI2C() bool {
	for _, s := range b.cfg.Sensors {
		if sensorTypes[s.Type].i2c {
			return true
		}
	}
	return false
}

// hasOneWire reports whether a sensor reads through periph's 1-Wire buses.
func (b *Board) hasOneWire() bool {
	for _, s := range b.cfg.Sensors {
		if sensorTypes[s.Type].onewire && s.OnewireBus != OnewireSysfs {
			return true
		}
	}
	return false
}

// initHost loads periph's host drivers and logs what it found: on a
// machine that is not a Pi everything is skipped, and the pins fail to
// open next with a clearer message.
func (b *Board) initHost() error {
	state, err := host.Init()
	if err != nil {
		return fmt.Errorf("periph host drivers: %w", err)
	}
	loaded := make([]string, len(state.Loaded))
	for i, d := range state.Loaded {
		loaded[i] = d.String()
	}
	b.log.Info("periph host drivers", "loaded", loaded, "skipped", len(state.Skipped), "failed", len(state.Failed))
	for _, d := range state.Loaded {
		b.log.Info("periph driver loaded", "driver", d.String())
	}
	for _, f := range state.Skipped {
		b.log.Debug("periph driver skipped", "driver", f.D.String(), "reason", f.Err)
	}
	for _, f := range state.Failed {
		b.log.Warn("periph driver failed", "driver", f.D.String(), "err", f.Err)
	}
	return nil
}

func (b *Board) openPins(openPin func(string) (pgpio.PinIO, error)) error {
	// open also returns the pin as a *gpiotest.Pin when it is one (board
	// sim): DriveInput moves those, and Level reads outputs back from them.
	open := func(what, name, pin string) (pgpio.PinIO, *gpiotest.Pin, error) {
		n, _ := NormalizePin(pin) // valid: Validate passed
		p, err := openPin(n)
		if err != nil {
			return nil, nil, fmt.Errorf("%s %s: %w", what, name, err)
		}
		sp, _ := p.(*gpiotest.Pin)
		if r, ok := p.(*simPin); ok {
			sp = r.Pin
		}
		return p, sp, nil
	}
	for _, c := range b.cfg.Inputs {
		p, sp := b.keptInput(c)
		var err error
		if p == nil {
			p, sp, err = open("input", c.Name, c.Pin)
		}
		if err != nil {
			return err
		}
		in, err := newInput(b, c, p, sp)
		if err != nil {
			return err
		}
		b.inputs = append(b.inputs, in)
		b.byName[c.Name] = entity{in: in}
	}
	groups := map[string]*interlockGroup{}
	for _, c := range b.cfg.Outputs {
		o := b.keptOutput(c)
		if o == nil {
			p, sp, err := open("output", c.Name, c.Pin)
			if err != nil {
				return err
			}
			p = asLineOutput(p)
			if o, err = newOutput(b, c, p, sp); err != nil {
				return err
			}
		}
		if c.Interlock != "" {
			g := groups[c.Interlock]
			if g == nil {
				g = &interlockGroup{name: c.Interlock}
				groups[c.Interlock] = g
			}
			g.members = append(g.members, o)
			g.wait = max(g.wait, c.InterlockWait.D())
			o.group = g
		}
		b.outputs = append(b.outputs, o)
		b.byName[c.Name] = entity{out: o}
	}
	for _, c := range b.cfg.PWM {
		w := b.keptPWM(c)
		if w == nil {
			p, sp, err := open("pwm", c.Name, c.Pin)
			if err != nil {
				return err
			}
			p = asLineOutput(p)
			if w, err = newPWM(b, c, p, sp); err != nil {
				return err
			}
		}
		b.pwms = append(b.pwms, w)
		b.byName[c.Name] = entity{pwm: w}
	}
	return nil
}

// Signals returns the board's signals in config order: inputs, outputs,
// pwm, then sensor quantities ("air.temperature").
func (b *Board) Signals() []pibridge.Signal {
	return append([]pibridge.Signal(nil), b.signals...)
}

// emit hands a value to Run's Emitter; nothing happens while Run is not
// active. It is called with the pin's lock held so that readings of one
// signal leave in the order its pin moved; the Emitter must not block,
// which the core's does not.
func (b *Board) emit(name string, v pibridge.Value) {
	if e := b.emitter.Load(); e != nil {
		e.Emit(name, v, b.clock.Now())
	}
}

func (b *Board) running() bool { return b.emitter.Load() != nil }

// Running reports whether Run is active: from the moment it has its
// Emitter (commands work from then on) until it returns. The bridge tells
// systemd it is ready only then.
func (b *Board) Running() bool { return b.running() }

// Run emits the current state of every input, output and pwm, then watches
// the inputs (edges with debounce, or polling where the pin has no edge
// detection), reads each sensor on its own interval in its own goroutine,
// runs the simulated presses of the sim board and the failsafe timers.
// When ctx ends it stops its goroutines, drives every output and pwm to
// its safe state (emitting those readings: a safe shutdown must not
// depend on the caller remembering Halt), and returns nil. Run may be
// called once.
func (b *Board) Run(ctx context.Context, emit pibridge.Emitter) error {
	if !b.ran.CompareAndSwap(false, true) {
		return errors.New("gpio: Run called twice")
	}
	b.emitter.Store(&emitterBox{emit})
	defer b.emitter.Store(nil)

	for _, in := range b.inputs {
		in.last = in.read()
		b.emit(in.name, pibridge.Bool(in.last))
	}
	for _, o := range b.outputs {
		o.mu.Lock()
		b.emit(o.name, pibridge.Bool(o.on))
		o.mu.Unlock()
	}
	for _, w := range b.pwms {
		w.mu.Lock()
		b.emit(w.name, pibridge.Number(w.duty))
		w.mu.Unlock()
	}

	var wg sync.WaitGroup
	for _, in := range b.inputs {
		wg.Go(func() { in.run(ctx) })
		if b.sim && in.sim != nil && in.simulate > 0 {
			wg.Go(func() { in.simulatePresses(ctx) })
		} else if in.simulate > 0 {
			b.log.Info("simulate is ignored on board periph", "input", in.name)
		}
	}
	for _, s := range b.sensors {
		wg.Go(func() { s.run(ctx) })
	}
	b.startFailsafe()

	<-ctx.Done()
	b.stopFailsafe()
	// Outputs go safe at once, before the inputs and sensors are waited
	// for (a sensor read may take a while); the Halt after the wait undoes
	// a command that was in flight meanwhile.
	if err := b.Halt(); err != nil {
		b.log.Error("safe state not reached", "err", err)
	}
	for _, in := range b.inputs {
		if in.sim != nil {
			in.wake()
		}
	}
	stopped := make(chan struct{})
	go b.haltInputs(stopped)
	wg.Wait()
	close(stopped)
	if err := b.Halt(); err != nil {
		b.log.Error("outputs not all safe at shutdown", "err", err)
	}
	return nil
}

// haltInputs wakes the inputs that wait for edges with no timeout, again
// and again until stopped is closed: a Halt that lands just before
// WaitForEdge starts is undone by it.
func (b *Board) haltInputs(stopped <-chan struct{}) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		for _, in := range b.inputs {
			if in.edges && in.sim == nil && in.edgeWait() == lineEdgeWait {
				in.pin.Halt()
			}
		}
		select {
		case <-stopped:
			return
		case <-t.C:
		}
	}
}

// Set moves an output (v: Bool or Toggle) or a pwm (v: Number 0..1). It
// returns once the pin has moved and the reading has been emitted, and
// emits even when nothing changed: that reading confirms the command.
// Switching on a member of an interlock group first switches the others
// off and waits out the group's interlock_wait.
func (b *Board) Set(ctx context.Context, name string, v pibridge.Value) error {
	e, ok := b.byName[name]
	switch {
	case !ok:
		return pibridge.ErrUnknownSignal
	case e.out != nil:
		if !v.IsBool() && !v.IsToggle() {
			return fmt.Errorf("%w %s: an output takes on, off or toggle", pibridge.ErrBadValue, v)
		}
		if !b.running() {
			return ErrNotRunning
		}
		return e.out.command(ctx, v, 0)
	case e.pwm != nil:
		if !v.IsNumber() || !(v.Float() >= 0 && v.Float() <= 1) {
			return fmt.Errorf("%w %s: a pwm takes a number from 0 to 1", pibridge.ErrBadValue, v)
		}
		if !b.running() {
			return ErrNotRunning
		}
		return e.pwm.set(v.Float())
	}
	return pibridge.ErrNotWritable
}

// Pulse switches an output on for d, honouring its interlock. It returns
// once the output is on and that reading has been emitted; the off comes
// later from a timer and is emitted then. A pulse on an output that is
// already on ends it after d; Set on or off cancels a pending pulse end.
// A pulse longer than the output's max_on is refused.
func (b *Board) Pulse(ctx context.Context, name string, d time.Duration) error {
	e, ok := b.byName[name]
	switch {
	case !ok:
		return pibridge.ErrUnknownSignal
	case e.out == nil:
		return fmt.Errorf("%w: only outputs can be pulsed", pibridge.ErrNotWritable)
	case d <= 0 || d > pibridge.MaxPulse:
		return fmt.Errorf("%w: pulse length %s must be above 0 and at most %s", pibridge.ErrBadValue, d, pibridge.MaxPulse)
	case e.out.maxOn > 0 && d > e.out.maxOn:
		return fmt.Errorf("%w: pulse %s is longer than max_on %s", pibridge.ErrBadValue, d, e.out.maxOn)
	case !b.running():
		return ErrNotRunning
	}
	return e.out.command(ctx, pibridge.Bool(true), d)
}

// Halt drives every output and pwm to its safe state right away (outputs
// that are safe off first), whatever commands are in flight: a command
// waiting for an interlock fails instead of switching on afterwards. While
// Run is active the safe states are emitted, changed or not.
func (b *Board) Halt() error {
	var errs []error
	for pass := 0; pass < 2; pass++ {
		for _, o := range b.outputs {
			if o.safe == (pass == 1) {
				if err := o.goSafe(true); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", o.name, err))
				}
			}
		}
	}
	for _, w := range b.pwms {
		if err := w.goSafe(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", w.name, err))
		}
	}
	return errors.Join(errs...)
}

// Level reports a pin's state with invert undone: inputs as read from the
// pin; outputs and pwm as the simulated pin holds them, or on hardware as
// last driven (reading an output back is not safe everywhere: periph's
// gpioioctl turns the line into an input on Read). Sensors report false.
func (b *Board) Level(name string) (pibridge.Value, bool) {
	e, ok := b.byName[name]
	switch {
	case !ok:
		return pibridge.Value{}, false
	case e.in != nil:
		return pibridge.Bool(e.in.read()), true
	case e.out != nil:
		return pibridge.Bool(e.out.level()), true
	case e.pwm != nil:
		return pibridge.Number(e.pwm.level()), true
	}
	return pibridge.Value{}, false
}

// DriveInput changes a simulated input as if the world had: the pin's level
// moves and the input goroutine sees it through WaitForEdge and debounce,
// as on hardware. on is the input's value, before invert.
func (b *Board) DriveInput(name string, on bool) error {
	e, ok := b.byName[name]
	if !ok || e.in == nil {
		return fmt.Errorf("%s: not an input", name)
	}
	if e.in.sim == nil {
		return fmt.Errorf("%s: only inputs of the sim board can be driven", name)
	}
	e.in.drive(pgpio.Level(on != e.in.invert))
	return nil
}

// Close drives outputs safe and releases the buses. Call it after Run has
// returned (or instead of Run).
func (b *Board) Close() error {
	err := b.Halt()
	b.busMu.Lock()
	defer b.busMu.Unlock()
	for name, bus := range b.buses {
		if e := bus.Close(); e != nil {
			err = errors.Join(err, fmt.Errorf("i2c bus %s: %w", name, e))
		}
		delete(b.buses, name)
	}
	for name, bus := range b.w1Buses {
		if e := bus.Close(); e != nil {
			err = errors.Join(err, fmt.Errorf("1-wire bus %q: %w", name, e))
		}
		delete(b.w1Buses, name)
	}
	return err
}

// bus opens an I²C bus once and shares it between the sensors on it.
func (b *Board) bus(name string) (i2c.Bus, error) {
	b.busMu.Lock()
	defer b.busMu.Unlock()
	if bus, ok := b.buses[name]; ok {
		return bus, nil
	}
	// periph's registry knows buses by number or name, not device path.
	bus, err := b.open(strings.TrimPrefix(name, "/dev/i2c-"))
	if err != nil {
		return nil, fmt.Errorf("i2c bus %s: %w", name, err)
	}
	b.buses[name] = bus
	return bus, nil
}

// onewireBus opens a 1-Wire bus once and shares it between the sensors on
// it. periph's netlink bus serialises transactions itself, and each
// sensor addresses its own ROM, so sensors on one bus interleave safely.
func (b *Board) onewireBus(name string) (onewire.Bus, error) {
	b.busMu.Lock()
	defer b.busMu.Unlock()
	if bus, ok := b.w1Buses[name]; ok {
		return bus, nil
	}
	bus, err := b.openW1(name)
	if err != nil {
		what := "no 1-Wire bus"
		if name != "" {
			what = fmt.Sprintf("1-wire bus %q", name)
		}
		return nil, fmt.Errorf("%s: %w (is dtoverlay=w1-gpio in /boot/firmware/config.txt?)", what, err)
	}
	b.w1Buses[name] = bus
	return bus, nil
}

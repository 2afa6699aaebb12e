package pibridge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Device identifies the bridge to clients.
type Device struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version string `json:"version"`
}

// Actuator moves outputs. Set and Pulse return once the pin has moved (or
// failed to) and the resulting reading has been emitted.
type Actuator interface {
	Set(ctx context.Context, name string, v Value) error
	Pulse(ctx context.Context, name string, d time.Duration) error
}

// Emitter receives values from the hardware side; the core stamps them with
// seq and, when ts is zero, the time.
type Emitter interface {
	Emit(name string, v Value, ts time.Time)
}

// Subscriber receives every reading in seq order. Deliver is called with the
// core's lock held, so it must not block: queue and return.
type Subscriber interface {
	Deliver(Reading)
}

// Journal keeps every reading on disk for the consumers that must not lose
// one (the MQTT outbox), and tells after a crash where seq stopped. The
// core hands readings to it through a bounded queue and one goroutine of
// its own (JournalRunner.Run), so a disk that stalls holds up no Emit,
// fan-out or command.
type Journal interface {
	// LastSeq is the highest seq the journal kept from earlier runs (0:
	// none). It is asked once, when the journal is attached.
	LastSeq() uint64
	// Record keeps the readings of batch, in order (seq order, at most
	// 256 of them): one write for them all when it can. It may wait for
	// the disk. It is called from one goroutine, with no lock of the
	// core's held, and must not keep batch, which is reused.
	Record(batch []Reading)
}

// Op is what a command asks for.
type Op uint8

const (
	OpSet Op = iota
	OpPulse
)

// Command is a request from a client, whichever door it came through.
type Command struct {
	ID     string // echoed in the ack; may be empty
	Name   string
	Op     Op
	Value  Value         // OpSet
	For    time.Duration // OpPulse
	Source string        // "ws", "mqtt", "http": for logs and metrics
}

// Errors a command can fail with; adapters map them to status codes.
var (
	ErrUnknownSignal = errors.New("no such signal")
	ErrNotWritable   = errors.New("not writable")
	// ErrConflict is for actuators refusing a command for a reason of state,
	// such as an interlock that cannot be honoured.
	ErrConflict = errors.New("conflict")
	// ErrNotReady is for commands that arrive before the board runs.
	ErrNotReady = errors.New("outputs are not ready yet")
	// ErrRetained is for MQTT commands delivered because they were
	// retained: possibly hours old, never carried out.
	ErrRetained = errors.New("retained command ignored")
	// ErrBusy refuses a command at once when too many are already waiting:
	// the client gets an answer and may try again, instead of silence.
	ErrBusy = errors.New("busy: too many commands waiting, try again")
)

// DefaultMaxCommands bounds the commands being carried out at once, all
// doors together, unless Options.MaxCommands says otherwise.
const DefaultMaxCommands = 64

// Options configure a Core.
type Options struct {
	Device   Device
	Signals  []Signal
	StateDir string // where the seq counter lives
	// BootID identifies the running kernel, to tell a crash (same boot:
	// the journal has every record) from a power loss; "" reads
	// /proc/sys/kernel/random/boot_id. Tests set it.
	BootID string
	// DiskGate, when set, is called by the journal's goroutine before each
	// disk write: the fault suite's stalling disk. Nil in the bridge
	// unless PIBRIDGE_FAULT_DISK_STALL is set.
	DiskGate func()
	// HistorySize points per signal, one per HistoryStep at most: the
	// defaults keep one hour at one point a second, 16 bytes a point.
	HistorySize int
	HistoryStep time.Duration
	// MaxCommands bounds the commands in Execute at once (waiting for an
	// interlock or a pin's lock included); beyond it Execute fails with
	// ErrBusy at once. Default DefaultMaxCommands.
	MaxCommands int
	Now         func() time.Time
	// Mono is the monotonic clock (time since an arbitrary origin), which
	// tells a step of Now from time passing. Default: the runtime's; none
	// when Now is set without it (tests with a fake wall clock).
	Mono func() time.Duration
	// KernelClock says whether the wall clock is synchronised. Default:
	// adjtimex on Linux.
	KernelClock KernelClock
	Logger      *slog.Logger
}

// Core holds the latest state, the history and the subscribers, and routes
// commands to the Actuator. Every method is safe for concurrent use.
type Core struct {
	device  Device
	signals []Signal
	index   map[string]int
	now     func() time.Time
	log     *slog.Logger
	kclock  KernelClock

	actuator atomic.Pointer[actuatorBox]
	observer atomic.Pointer[func(Command, error)]
	subs     atomic.Pointer[[]*subscription]
	emitted  atomic.Uint64
	inFlight atomic.Int64 // commands in Execute, bounded by maxCmds
	maxCmds  int64
	lastEmit atomic.Int64 // unix ns of the last reading, for liveness checks

	ahead    atomic.Uint64 // readings shown before the journal had them
	overflow atomic.Uint64 // readings the journal's queue had no room for

	mu        sync.Mutex // guards everything below; held for a reading's bookkeeping only
	state     []Reading
	history   []*history
	seqPath   string
	boot      string
	gate      func()
	prev      seqFile // state_dir/seq as the previous run left it
	prevFound bool
	resolved  bool    // run, next and limit are set
	run       RunInfo // how this run's seqs join the previous run's
	next      uint64  // the next seq to hand out
	limit     uint64  // seqs below limit are reserved on disk
	leaseFail time.Time
	jr        *journalRun // nil without a journal
	seqErrs   uint64
	clock     *clockWatch
}

type actuatorBox struct{ Actuator }

// subscription skips readings below from: they were emitted before the
// subscriber joined, so its snapshot has them.
type subscription struct {
	Subscriber
	from uint64
}

// New returns a core for the given signals. Signal names must be unique and
// valid; configuration has checked them, New checks again because a core
// with two signals of one name would route commands wrongly.
func New(o Options) (*Core, error) {
	if o.HistorySize <= 0 {
		o.HistorySize = 3600
	}
	if o.HistoryStep <= 0 {
		o.HistoryStep = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
		if o.Mono == nil {
			origin := time.Now()
			o.Mono = func() time.Duration { return time.Since(origin) }
		}
	}
	if o.KernelClock == nil {
		o.KernelClock = kernelClock
	}
	if o.MaxCommands <= 0 {
		o.MaxCommands = DefaultMaxCommands
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	path := seqPath(o.StateDir)
	prev, found, err := readSeqFile(path)
	if err != nil {
		return nil, err
	}
	if o.BootID == "" {
		o.BootID = bootID()
	}
	c := &Core{
		device:    o.Device,
		signals:   append([]Signal(nil), o.Signals...),
		index:     make(map[string]int, len(o.Signals)),
		now:       o.Now,
		log:       o.Logger,
		seqPath:   path,
		boot:      o.BootID,
		gate:      o.DiskGate,
		prev:      prev,
		prevFound: found,
		state:     make([]Reading, len(o.Signals)),
		history:   make([]*history, len(o.Signals)),
		maxCmds:   int64(o.MaxCommands),
		kclock:    o.KernelClock,
		clock:     newClockWatch(o.Now, o.Mono),
	}
	for i, s := range c.signals {
		if _, dup := c.index[s.Name]; dup {
			return nil, fmt.Errorf("signal %q is defined twice", s.Name)
		}
		c.index[s.Name] = i
		c.history[i] = newHistory(o.HistorySize, o.HistoryStep)
	}
	c.subs.Store(&[]*subscription{})
	return c, nil
}

// SetActuator routes commands to a; until it is set, commands fail.
func (c *Core) SetActuator(a Actuator) { c.actuator.Store(&actuatorBox{a}) }

func (c *Core) Device() Device      { return c.device }
func (c *Core) Signals() []Signal   { return c.signals }
func (c *Core) Emitted() uint64     { return c.emitted.Load() }
func (c *Core) LastEmit() time.Time { return time.Unix(0, c.lastEmit.Load()) }

// Signal returns the named signal.
func (c *Core) Signal(name string) (Signal, bool) {
	i, ok := c.index[name]
	if !ok {
		return Signal{}, false
	}
	return c.signals[i], true
}

// Emit records a new value: it assigns the next seq, updates state and
// history, and hands the reading to the journal and to every subscriber.
// Unknown names are dropped and logged: they are a wiring bug, not a
// client's mistake.
//
// With a journal, subscribers get the reading once the journal has it, so
// that nothing is seen that a crash would forget; if the journal's write
// takes longer than stallAfter (the disk stalls), they get it without
// waiting. No disk I/O happens here then.
func (c *Core) Emit(name string, v Value, ts time.Time) {
	i, ok := c.index[name]
	if !ok {
		c.log.Error("reading for an unknown signal dropped", "signal", name)
		return
	}
	if ts.IsZero() {
		ts = c.now()
	}
	ts = ts.UTC()
	sig := &c.signals[i]
	c.mu.Lock()
	if !c.resolved {
		c.resolveLocked(0, false)
	}
	seq := c.next
	c.next++
	r := Reading{Name: sig.Name, Value: v, Unit: sig.Unit, TS: ts, Seq: seq}
	c.state[i] = r
	if step := c.clock.check(); step != 0 {
		c.clockStepped(step)
	}
	c.history[i].add(Point{T: ts.UnixMilli(), V: v.Float()})
	var err error
	if jr := c.jr; jr != nil {
		c.handOffLocked(jr, r)
	} else {
		if seq >= c.limit {
			// No journal (tests, or after it was detached at shutdown):
			// the reservation is written here.
			c.limit = seq + seqLease
			if err = writeSeqFile(c.seqPath, c.leaseLocked()); err != nil {
				c.seqErrs++
			}
		}
		c.deliverLocked(r)
	}
	c.mu.Unlock()
	c.emitted.Add(1)
	c.lastEmit.Store(ts.UnixNano())
	if err != nil {
		c.log.Warn("seq reservation not saved; seq stays unique in this run", "err", err)
	}
}

func (c *Core) deliverLocked(r Reading) {
	for _, s := range *c.subs.Load() {
		if r.Seq >= s.from {
			s.Deliver(r)
		}
	}
}

// Subscribe adds s to the fan-out and returns the function that removes it.
// The snapshot it also returns and the readings s receives afterwards join
// without a gap or an overlap: nothing is emitted between the two.
func (c *Core) Subscribe(s Subscriber) (snapshot []Reading, cancel func()) {
	c.mu.Lock()
	sub := &subscription{Subscriber: s, from: c.next}
	snapshot = c.stateLocked()
	old := *c.subs.Load()
	next := append(append(make([]*subscription, 0, len(old)+1), old...), sub)
	c.subs.Store(&next)
	c.mu.Unlock()
	return snapshot, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		old := *c.subs.Load()
		next := make([]*subscription, 0, len(old))
		for _, o := range old {
			if o != sub {
				next = append(next, o)
			}
		}
		c.subs.Store(&next)
	}
}

// State returns the latest reading of every signal that has one, in signal order.
func (c *Core) State() []Reading {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stateLocked()
}

func (c *Core) stateLocked() []Reading {
	out := make([]Reading, 0, len(c.state))
	for _, r := range c.state {
		if !r.TS.IsZero() {
			out = append(out, r)
		}
	}
	return out
}

// Latest returns the latest reading of one signal.
func (c *Core) Latest(name string) (Reading, bool) {
	i, ok := c.index[name]
	if !ok {
		return Reading{}, false
	}
	c.mu.Lock()
	r := c.state[i]
	c.mu.Unlock()
	return r, !r.TS.IsZero()
}

// History returns the points of a signal from the last `since`.
func (c *Core) History(name string, since time.Duration) ([]Point, error) {
	i, ok := c.index[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, ErrUnknownSignal)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if step := c.clock.check(); step != 0 {
		c.clockStepped(step)
	}
	from := c.now().Add(-since).UnixMilli()
	return c.history[i].since(nil, from), nil
}

// ObserveCommands calls f after every command with its outcome, refused
// ones included, whichever door it came through (for metrics). f must be
// quick: it runs on the caller's goroutine.
func (c *Core) ObserveCommands(f func(Command, error)) { c.observer.Store(&f) }

// Refused records a command that its door refused before Execute (a value
// that does not parse, a retained MQTT command), so the command counters see
// every refusal, not only the core's own.
func (c *Core) Refused(cmd Command, err error) {
	if f := c.observer.Load(); f != nil {
		(*f)(cmd, err)
	}
}

// Execute validates a command and hands it to the actuator. It returns the
// signal's reading after the command: the echo that confirms it.
// Errors name the signal: "pump: …".
func (c *Core) Execute(ctx context.Context, cmd Command) (r Reading, err error) {
	if f := c.observer.Load(); f != nil {
		defer func() { (*f)(cmd, err) }()
	}
	if c.inFlight.Add(1) > c.maxCmds {
		c.inFlight.Add(-1)
		return Reading{}, fmt.Errorf("%s: %w", Clip(cmd.Name), ErrBusy)
	}
	defer c.inFlight.Add(-1)
	return c.execute(ctx, cmd)
}

func (c *Core) execute(ctx context.Context, cmd Command) (Reading, error) {
	sig, v, err := c.validate(cmd)
	if err != nil {
		return Reading{}, err
	}
	box := c.actuator.Load()
	if box == nil {
		return Reading{}, fmt.Errorf("%s: %w", sig.Name, ErrNotReady)
	}
	switch cmd.Op {
	case OpPulse:
		err = box.Pulse(ctx, sig.Name, cmp.Or(cmd.For, sig.Pulse))
	default:
		err = box.Set(ctx, sig.Name, v)
	}
	if err != nil {
		return Reading{}, fmt.Errorf("%s: %w", sig.Name, err)
	}
	r, _ := c.Latest(sig.Name)
	return r, nil
}

// validate checks a command against its signal and returns the value in
// the signal's own form: a bool (or toggle) for outputs, a number for pwm.
func (c *Core) validate(cmd Command) (Signal, Value, error) {
	sig, err := c.CheckWritable(cmd.Name)
	if err != nil {
		return sig, Value{}, err
	}
	if cmd.Op == OpPulse {
		if sig.Kind != KindOutput {
			return sig, Value{}, fmt.Errorf("%s: %w: only outputs can be pulsed", sig.Name, ErrBadValue)
		}
		d := cmp.Or(cmd.For, sig.Pulse)
		if d == 0 {
			return sig, Value{}, fmt.Errorf("%s: %w: pulse length is missing (want e.g. \"500ms\"; or give the output a default, outputs[].pulse)", sig.Name, ErrBadValue)
		}
		if d < 0 || d > MaxPulse {
			return sig, Value{}, fmt.Errorf("%s: %w: pulse length %s must be above 0 and at most %s", sig.Name, ErrBadValue, d, MaxPulse)
		}
		return sig, Value{}, nil
	}
	v := cmd.Value
	switch sig.Kind {
	case KindOutput:
		switch {
		case v.IsBool(), v.IsToggle():
			return sig, v, nil
		case v.IsNumber() && (v.Float() == 0 || v.Float() == 1):
			return sig, Bool(v.Float() == 1), nil
		}
		return sig, Value{}, fmt.Errorf("%s: %w %s: an output takes on, off, true, false, 1, 0 or toggle", sig.Name, ErrBadValue, v)
	case KindPWM:
		if v.IsNumber() && v.Float() >= 0 && v.Float() <= 1 {
			return sig, v, nil
		}
		return sig, Value{}, fmt.Errorf("%s: %w %s: a pwm takes a number from 0 to 1", sig.Name, ErrBadValue, v)
	}
	return sig, Value{}, fmt.Errorf("%s: %w", sig.Name, ErrNotWritable)
}

// CheckWritable refuses a command on name before its value is even read:
// an unknown signal, or one that is not writable. Doors that parse values
// themselves call it first so clients get the same words from every door.
func (c *Core) CheckWritable(name string) (Signal, error) {
	sig, ok := c.Signal(name)
	if !ok {
		return sig, fmt.Errorf("%s: %w", Clip(name), ErrUnknownSignal)
	}
	if !sig.Kind.Writable() {
		return sig, fmt.Errorf("%s: %w: it is %s", sig.Name, ErrNotWritable, article(sig.Kind))
	}
	return sig, nil
}

func article(k Kind) string {
	if k == KindInput {
		return "an input"
	}
	return "a " + k.String()
}

// Close detaches the journal (after it has written what waits) and saves
// the exact next seq, so a clean restart continues without a gap and says
// so (RunInfo.Clean).
func (c *Core) Close() error {
	c.mu.Lock()
	jr := c.jr
	c.mu.Unlock()
	if jr != nil {
		c.detach(jr)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.resolved {
		return nil // nothing was emitted: the file stays as it was
	}
	return writeSeqFile(c.seqPath, seqFile{clean: true, n: c.next, boot: c.boot})
}

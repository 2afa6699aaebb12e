package gpio

import (
	"context"
	"fmt"
	"sync"
	"time"

	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/conn/v3/physic"

	"pibridge"
)

// output is one digital output.
//
// Locking: mu guards the state below and is held while the pin moves and
// the reading is emitted, so commands, timer ends, failsafe and Halt on
// one output are serialised and toggle is race-free; it is never held
// across a wait. Commands on an interlocked output also hold the group's
// mu, across the interlock wait (no longer: a command behind it waits for
// that dead time anyway), so the group's commands are serialised and only
// a holder of the group lock ever switches a member on. Turning off never
// needs the group lock, so timers, failsafe and Halt are never held up by
// a waiting command. Order: group.mu, then one output's mu at a time.
type output struct {
	b       *Board
	name    string
	pin     pgpio.PinIO
	sim     *gpiotest.Pin // pin, when simulated: level reads it back
	invert  bool
	safe    bool
	maxOn   time.Duration
	fsAfter time.Duration
	group   *interlockGroup

	mu       sync.Mutex
	on       bool
	lastOff  time.Time // when it last went from on to off: interlock dead time
	pulseEnd time.Time // zero: no pulse running
	maxOnEnd time.Time // zero: off, or no max_on
	timer    Timer     // fires at the earlier of pulseEnd and maxOnEnd
	// epoch counts safe-state drives (Halt, failsafe); an interlock
	// command that waited across one gives up instead of switching on.
	epoch uint64
	fs    Timer // failsafe timer, armed while the bridge is unreachable
	// handed: the pin belongs to the next board (HandOver); this one
	// never writes it again.
	handed bool
}

// interlockGroup is a set of outputs of which at most one is on.
type interlockGroup struct {
	name    string
	mu      sync.Mutex
	members []*output
	wait    time.Duration // the longest interlock_wait of the members
}

func newOutput(b *Board, c OutputConfig, p pgpio.PinIO, sp *gpiotest.Pin) (*output, error) {
	initial, _ := parseOnOff(c.Initial)
	safe, _ := parseOnOff(c.Safe)
	o := &output{
		b: b, name: c.Name, pin: p, sim: sp, invert: c.Invert, safe: safe,
		maxOn: c.MaxOn.D(), fsAfter: c.FailsafeAfter.D(),
	}
	if err := p.Out(o.pinLevel(initial)); err != nil {
		return nil, fmt.Errorf("output %s: %s: %w", c.Name, p.Name(), err)
	}
	o.mu.Lock()
	o.on = initial
	if initial {
		o.startMaxOnLocked(b.clock.Now())
	}
	o.mu.Unlock()
	return o, nil
}

func (o *output) pinLevel(on bool) pgpio.Level { return pgpio.Level(on != o.invert) }

// level reports the output's state as the pin holds it.
func (o *output) level() bool {
	if o.sim != nil {
		return (o.sim.Read() == pgpio.High) != o.invert
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.on
}

// command carries out Set (pulse 0) or Pulse (pulse > 0, v on).
func (o *output) command(ctx context.Context, v pibridge.Value, pulse time.Duration) error {
	if g := o.group; g != nil {
		g.mu.Lock()
		defer g.mu.Unlock()
	}
	o.mu.Lock()
	want := v.Bool()
	if v.IsToggle() {
		want = !o.on
	}
	if !want {
		defer o.mu.Unlock()
		return o.switchLocked(false, true)
	}
	if o.on || o.group == nil {
		defer o.mu.Unlock()
		return o.switchOnLocked(pulse)
	}
	epoch := o.epoch
	o.mu.Unlock()

	// Interlock: the others go off first (each reading emitted), then the
	// dead time since the last of them went off runs out.
	var until time.Time
	for _, p := range o.group.members {
		if p == o {
			continue
		}
		p.mu.Lock()
		var err error
		if p.on {
			err = p.switchLocked(false, true)
			if err == nil {
				o.b.log.Debug("interlock: switched off", "output", p.name, "for", o.name, "group", o.group.name)
			}
		}
		if t := p.lastOff.Add(o.group.wait); t.After(until) {
			until = t
		}
		p.mu.Unlock()
		if err != nil {
			return fmt.Errorf("%w: interlock partner %s did not switch off: %v", pibridge.ErrConflict, p.name, err)
		}
	}
	if d := until.Sub(o.b.clock.Now()); d > 0 {
		if err := sleep(ctx, o.b.clock, d); err != nil {
			return err
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.epoch != epoch {
		return fmt.Errorf("%w: outputs went to their safe state while waiting for the interlock", pibridge.ErrConflict)
	}
	return o.switchOnLocked(pulse)
}

// switchOnLocked switches on (or keeps on) and sets when the output goes
// off by itself: after pulse if one is given; a plain on cancels a running
// pulse. max_on counts from when the output went on, not from the command.
func (o *output) switchOnLocked(pulse time.Duration) error {
	now := o.b.clock.Now()
	if !o.on {
		if err := o.pin.Out(o.pinLevel(true)); err != nil {
			return err
		}
		o.on = true
		o.startMaxOnLocked(now)
	}
	o.pulseEnd = time.Time{}
	if pulse > 0 {
		o.pulseEnd = now.Add(pulse)
	}
	o.armLocked(now)
	o.b.emit(o.name, pibridge.Bool(true))
	return nil
}

func (o *output) startMaxOnLocked(now time.Time) {
	if o.maxOn > 0 {
		o.maxOnEnd = now.Add(o.maxOn)
		o.armLocked(now)
	}
}

// switchLocked drives the pin to on and emits when emit is set or the state
// changed. It clears the pulse and max_on deadlines.
func (o *output) switchLocked(on, emit bool) error {
	if err := o.pin.Out(o.pinLevel(on)); err != nil {
		return err
	}
	now := o.b.clock.Now()
	changed := o.on != on
	if o.on && !on {
		o.lastOff = now
	}
	o.on = on
	o.pulseEnd, o.maxOnEnd = time.Time{}, time.Time{}
	o.armLocked(now)
	if emit || changed {
		o.b.emit(o.name, pibridge.Bool(on))
	}
	return nil
}

// armLocked points the one timer at the earliest deadline, or stops it.
func (o *output) armLocked(now time.Time) {
	due := o.dueLocked()
	if due.IsZero() {
		if o.timer != nil {
			o.timer.Stop()
		}
		return
	}
	d := due.Sub(now)
	if o.timer == nil {
		o.timer = o.b.clock.AfterFunc(d, o.expire)
	} else {
		o.timer.Reset(d)
	}
}

func (o *output) dueLocked() time.Time {
	switch {
	case o.pulseEnd.IsZero():
		return o.maxOnEnd
	case o.maxOnEnd.IsZero() || o.pulseEnd.Before(o.maxOnEnd):
		return o.pulseEnd
	}
	return o.maxOnEnd
}

// expire runs on the timer. It checks the deadline again under the lock:
// a command may have moved it after the timer had already fired.
func (o *output) expire() {
	o.mu.Lock()
	defer o.mu.Unlock()
	due := o.dueLocked()
	if !o.on || due.IsZero() || o.handed {
		return
	}
	now := o.b.clock.Now()
	if now.Before(due) {
		o.timer.Reset(due.Sub(now))
		return
	}
	maxOn := due.Equal(o.maxOnEnd)
	if err := o.switchLocked(false, false); err != nil {
		o.b.log.Error("output did not switch off", "output", o.name, "err", err)
		o.timer.Reset(time.Second) // try again: an output stuck on is worth the noise
		return
	}
	if maxOn {
		o.b.log.Warn("output switched off: on for max_on", "output", o.name, "max_on", o.maxOn)
	} else {
		o.b.log.Debug("pulse ended", "output", o.name)
	}
}

// goSafe drives the safe state now, whatever is in flight, and emits it
// when emit is set or the state changed.
func (o *output) goSafe(emit bool) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.handed {
		return nil
	}
	o.epoch++
	return o.switchLocked(o.safe, emit)
}

// pwmOut is one PWM output. mu serialises duty changes and their readings.
type pwmOut struct {
	b    *Board
	name string
	pin  pgpio.PinIO
	sim  *gpiotest.Pin // pin, when simulated: level reads it back
	freq Frequency
	safe float64
	mu   sync.Mutex
	duty float64
	// noPWM is the pin driver's refusal of PWM, once seen: duty 0 and 1
	// are then driven as plain levels. periph.io needs /dev/mem (root) for
	// PWM on a Pi 0–4 and has no PWM on a Pi 5; the pin, the outputs and
	// the safe state must still work there.
	noPWM  error
	handed bool // as output.handed
}

func newPWM(b *Board, c PWMConfig, p pgpio.PinIO, sp *gpiotest.Pin) (*pwmOut, error) {
	w := &pwmOut{b: b, name: c.Name, pin: p, sim: sp, freq: c.Frequency, safe: c.Safe}
	if err := w.drive(c.Initial); err != nil {
		return nil, fmt.Errorf("pwm %s: %s: %w", c.Name, p.Name(), err)
	}
	if w.noPWM != nil {
		b.log.Warn("pwm: the pin driver refuses PWM; 0 and 1 work as off and on, other duty cycles fail",
			"pwm", c.Name, "pin", p.Name(), "err", w.noPWM)
	}
	return w, nil
}

func toDuty(f float64) pgpio.Duty {
	return pgpio.Duty(f*float64(pgpio.DutyMax) + 0.5)
}

func (w *pwmOut) drive(f float64) error {
	err := w.pin.PWM(toDuty(f), w.freqOrDefault())
	if err != nil && (f == 0 || f == 1) {
		w.noPWM = err
		err = w.pin.Out(pgpio.Level(f == 1))
	} else if err != nil {
		// The pin cannot do this duty cycle here: the command is refused, not the bridge broken.
		return fmt.Errorf("%w: %s has no PWM here, only 0 and 1 work (%v)", pibridge.ErrBadValue, w.pin.Name(), err)
	}
	if err != nil {
		return err
	}
	w.duty = f
	return nil
}

// freqOrDefault returns the configured frequency; 0 lets periph's driver
// pick the pin's preferred one.
func (w *pwmOut) freqOrDefault() physic.Frequency { return physic.Frequency(w.freq) }

func (w *pwmOut) set(f float64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.drive(f); err != nil {
		return err
	}
	w.b.emit(w.name, pibridge.Number(f))
	return nil
}

func (w *pwmOut) goSafe() error {
	w.mu.Lock()
	handed := w.handed
	w.mu.Unlock()
	if handed {
		return nil
	}
	return w.set(w.safe)
}

func (w *pwmOut) level() float64 {
	if w.sim != nil {
		w.sim.Lock()
		d := w.sim.D
		w.sim.Unlock()
		return float64(d) / float64(pgpio.DutyMax)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.duty
}

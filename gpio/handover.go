package gpio

import (
	"fmt"
	"reflect"
	"slices"
	"sync"
	"syscall"

	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/conn/v3/physic"
)

// handable is an output or a pwm as the hand-over sees it.
type handable[P any] interface {
	label() string
	line() pgpio.PinIO
	// setHanded marks whether the pin belongs to the next board now.
	setHanded(bool)
	// giveBack marks a part taken over handed again and drops its timers.
	giveBack()
	// takeOver builds b's part from this handed one, or returns the zero
	// P when it is not handed.
	takeOver(b *Board) P
}

// HandOver prepares b to give its unchanged outputs and pwm to the board
// that will open next's config with Options.Keep set to b: an output or
// pwm whose name and whole config are the same in next is skipped by b's
// Halt, Close and timers from now on, so stopping b leaves its pin exactly
// as it is. The others still go to their safe state when b stops. It
// returns the names handed over. Call it before ending b's Run.
func (b *Board) HandOver(next Config) []string {
	next = next.withDefaults()
	sameBoard := next.Board == b.cfg.Board
	kept := handOver(b.outputs, b.cfg.Outputs, next.Outputs, sameBoard, nil)
	return handOver(b.pwms, b.cfg.PWM, next.PWM, sameBoard, kept)
}

// handOver marks each of parts (configured by cfgs) handed when next holds
// its config unchanged, and appends the names handed to kept.
func handOver[P handable[P], C any](parts []P, cfgs, next []C, sameBoard bool, kept []string) []string {
	for i, p := range parts {
		same := sameBoard && slices.ContainsFunc(next, func(c C) bool { return reflect.DeepEqual(c, cfgs[i]) })
		p.setHanded(same)
		if same {
			kept = append(kept, p.label())
		}
	}
	return kept
}

// TakeBack undoes HandOver, so that Close drives every output safe again:
// for when no board could take the pins over.
func (b *Board) TakeBack() {
	for _, o := range b.outputs {
		o.setHanded(false)
	}
	for _, w := range b.pwms {
		w.setHanded(false)
	}
}

// returnKept marks the outputs and pwm taken from Keep as handed again
// when Open fails, so that its Close leaves their pins as they are and
// another board can take them over from Keep.
func (b *Board) returnKept() {
	if b.keep == nil {
		return
	}
	returnTo(b.outputs, b.keep.outputs)
	returnTo(b.pwms, b.keep.pwms)
}

// returnTo marks each of parts on a pin of prev handed again.
func returnTo[P handable[P]](parts, prev []P) {
	for _, p := range parts {
		if slices.ContainsFunc(prev, func(q P) bool { return q.line() == p.line() }) {
			p.giveBack()
		}
	}
}

// keptIndex returns the index of the config equal to c among the first n
// of prev (the parts prev's board opened), or -1.
func keptIndex[C any](prev []C, n int, c C) int {
	return slices.IndexFunc(prev[:min(n, len(prev))], func(p C) bool { return reflect.DeepEqual(p, c) })
}

// keptInput returns prev's pin of an input of the same config, so a
// simulated input keeps the level it was driven to.
func (b *Board) keptInput(c InputConfig) (pgpio.PinIO, *gpiotest.Pin) {
	if b.keep == nil {
		return nil, nil
	}
	if i := keptIndex(b.keep.cfg.Inputs, len(b.keep.inputs), c); i >= 0 {
		return b.keep.inputs[i].pin, b.keep.inputs[i].sim
	}
	return nil, nil
}

// kept takes over prev's handed part of config c for b, or returns the
// zero P.
func kept[P handable[P], C any](b *Board, prev []P, prevCfg []C, c C) P {
	if i := keptIndex(prevCfg, len(prev), c); i >= 0 {
		return prev[i].takeOver(b)
	}
	var none P
	return none
}

// keptOutput takes over prev's handed output of the same config: the pin,
// its state and its deadlines move to o, and the pin is not written.
func (b *Board) keptOutput(c OutputConfig) *output {
	if b.keep == nil {
		return nil
	}
	return kept(b, b.keep.outputs, b.keep.cfg.Outputs, c)
}

// keptPWM is keptOutput for a pwm.
func (b *Board) keptPWM(c PWMConfig) *pwmOut {
	if b.keep == nil {
		return nil
	}
	return kept(b, b.keep.pwms, b.keep.cfg.PWM, c)
}

func (o *output) label() string     { return o.name }
func (o *output) line() pgpio.PinIO { return o.pin }
func (w *pwmOut) label() string     { return w.name }
func (w *pwmOut) line() pgpio.PinIO { return w.pin }

func (o *output) setHanded(h bool) {
	o.mu.Lock()
	o.handed = h
	o.mu.Unlock()
}

func (o *output) giveBack() {
	o.setHanded(true)
	if o.timer != nil {
		o.timer.Stop()
	}
}

func (w *pwmOut) setHanded(h bool) {
	w.mu.Lock()
	w.handed = h
	w.mu.Unlock()
}

func (w *pwmOut) giveBack() { w.setHanded(true) }

// takeOver moves o's pin, state and deadlines to a new output of b without
// writing the pin.
func (o *output) takeOver(b *Board) *output {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.handed {
		return nil
	}
	if o.timer != nil {
		o.timer.Stop()
	}
	n := &output{b: b, name: o.name, pin: o.pin, sim: o.sim, invert: o.invert, safe: o.safe,
		maxOn: o.maxOn, fsAfter: o.fsAfter,
		on: o.on, lastOff: o.lastOff, pulseEnd: o.pulseEnd, maxOnEnd: o.maxOnEnd}
	n.mu.Lock()
	n.armLocked(b.clock.Now())
	n.mu.Unlock()
	return n
}

func (w *pwmOut) takeOver(b *Board) *pwmOut {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.handed {
		return nil
	}
	return &pwmOut{b: b, name: w.name, pin: w.pin, sim: w.sim, freq: w.freq, safe: w.safe, duty: w.duty, noPWM: w.noPWM}
}

// simPin is a pin of the sim board that logs every level and duty cycle
// written to it, so tests can tell that a pin was never touched.
type simPin struct {
	*gpiotest.Pin
	mu     sync.Mutex
	writes int
}

func (p *simPin) Out(l pgpio.Level) error {
	p.mu.Lock()
	p.writes++
	p.mu.Unlock()
	return p.Pin.Out(l)
}

func (p *simPin) PWM(d pgpio.Duty, f physic.Frequency) error {
	p.mu.Lock()
	p.writes++
	p.mu.Unlock()
	return p.Pin.PWM(d, f)
}

// PinWrites reports how many times the pin behind an output or pwm of the
// sim board has been written (Out or PWM) since it was first opened,
// across boards that took it over; false for other signals and boards.
func (b *Board) PinWrites(name string) (int, bool) {
	e, ok := b.byName[name]
	var p pgpio.PinIO
	switch {
	case !ok:
		return 0, false
	case e.out != nil:
		p = e.out.pin
	case e.pwm != nil:
		p = e.pwm.pin
	}
	sp, ok := p.(*simPin)
	if !ok {
		return 0, false
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.writes, true
}

// openSim opens a pin of the sim board; a pin listed in busy fails as a
// line held by another process would.
func openSim(busy []string) func(string) (pgpio.PinIO, error) {
	return func(name string) (pgpio.PinIO, error) {
		for _, b := range busy {
			if n, _ := NormalizePin(b); n == name {
				return nil, fmt.Errorf("pin %s: %w", name, syscall.EBUSY)
			}
		}
		return &simPin{Pin: newSimPin(name)}, nil
	}
}

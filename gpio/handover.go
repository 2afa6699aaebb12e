package gpio

import (
	"fmt"
	"reflect"
	"sync"
	"syscall"

	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/conn/v3/physic"
)

// HandOver prepares b to give its unchanged outputs and pwm to the board
// that will open next's config with Options.Keep set to b: an output or
// pwm whose name and whole config are the same in next is skipped by b's
// Halt, Close and timers from now on, so stopping b leaves its pin exactly
// as it is. The others still go to their safe state when b stops. It
// returns the names handed over. Call it before ending b's Run.
func (b *Board) HandOver(next Config) []string {
	next = next.withDefaults()
	nextOut := map[string]OutputConfig{}
	for _, c := range next.Outputs {
		nextOut[c.Name] = c
	}
	nextPWM := map[string]PWMConfig{}
	for _, c := range next.PWM {
		nextPWM[c.Name] = c
	}
	var kept []string
	for i, o := range b.outputs {
		c, ok := nextOut[o.name]
		same := ok && reflect.DeepEqual(c, b.cfg.Outputs[i]) && next.Board == b.cfg.Board
		o.mu.Lock()
		o.handed = same
		o.mu.Unlock()
		if same {
			kept = append(kept, o.name)
		}
	}
	for i, w := range b.pwms {
		c, ok := nextPWM[w.name]
		same := ok && reflect.DeepEqual(c, b.cfg.PWM[i]) && next.Board == b.cfg.Board
		w.mu.Lock()
		w.handed = same
		w.mu.Unlock()
		if same {
			kept = append(kept, w.name)
		}
	}
	return kept
}

// TakeBack undoes HandOver, so that Close drives every output safe again:
// for when no board could take the pins over.
func (b *Board) TakeBack() {
	for _, o := range b.outputs {
		o.mu.Lock()
		o.handed = false
		o.mu.Unlock()
	}
	for _, w := range b.pwms {
		w.mu.Lock()
		w.handed = false
		w.mu.Unlock()
	}
}

// returnKept marks the outputs and pwm taken from Keep as handed again
// when Open fails, so that its Close leaves their pins as they are and
// another board can take them over from Keep.
func (b *Board) returnKept() {
	if b.keep == nil {
		return
	}
	for _, o := range b.outputs {
		for _, p := range b.keep.outputs {
			if p.pin == o.pin {
				o.mu.Lock()
				o.handed = true
				o.mu.Unlock()
				if o.timer != nil {
					o.timer.Stop()
				}
			}
		}
	}
	for _, w := range b.pwms {
		for _, p := range b.keep.pwms {
			if p.pin == w.pin {
				w.mu.Lock()
				w.handed = true
				w.mu.Unlock()
			}
		}
	}
}

// keptInput returns prev's pin of an input of the same config, so a
// simulated input keeps the level it was driven to.
func (b *Board) keptInput(c InputConfig) (pgpio.PinIO, *gpiotest.Pin) {
	if b.keep == nil {
		return nil, nil
	}
	for i, p := range b.keep.inputs {
		if p.name == c.Name && reflect.DeepEqual(b.keep.cfg.Inputs[i], c) {
			return p.pin, p.sim
		}
	}
	return nil, nil
}

// keptOutput takes over prev's handed output of the same config: the pin,
// its state and its deadlines move to o, and the pin is not written.
func (b *Board) keptOutput(c OutputConfig) *output {
	if b.keep == nil {
		return nil
	}
	for i, p := range b.keep.outputs {
		if p.name != c.Name || !reflect.DeepEqual(b.keep.cfg.Outputs[i], c) {
			continue
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.handed {
			return nil
		}
		if p.timer != nil {
			p.timer.Stop()
		}
		o := &output{b: b, name: c.Name, pin: p.pin, sim: p.sim, invert: p.invert, safe: p.safe,
			maxOn: p.maxOn, fsAfter: p.fsAfter,
			on: p.on, lastOff: p.lastOff, pulseEnd: p.pulseEnd, maxOnEnd: p.maxOnEnd}
		o.mu.Lock()
		o.armLocked(b.clock.Now())
		o.mu.Unlock()
		return o
	}
	return nil
}

// keptPWM is keptOutput for a pwm.
func (b *Board) keptPWM(c PWMConfig) *pwmOut {
	if b.keep == nil {
		return nil
	}
	for i, p := range b.keep.pwms {
		if p.name != c.Name || !reflect.DeepEqual(b.keep.cfg.PWM[i], c) {
			continue
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.handed {
			return nil
		}
		return &pwmOut{b: b, name: c.Name, pin: p.pin, sim: p.sim, freq: p.freq, safe: p.safe, duty: p.duty, noPWM: p.noPWM}
	}
	return nil
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

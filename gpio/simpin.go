package gpio

import (
	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
)

// newSimPin returns a pin of the simulated board: periph's own test double,
// so outputs and pwm go through Out and PWM, and inputs through In and
// WaitForEdge, exactly as on hardware. EdgesChan holds one pending edge,
// like the kernel's: edges that pile up between two WaitForEdge calls merge
// into one (see pushEdge). Clock stays nil: WaitForEdge then sets the real
// clock on first use, which is safe because only the input's goroutine
// calls it, and right because debounce is physical time.
func newSimPin(name string) *gpiotest.Pin {
	n, _ := pinNumber(name)
	return &gpiotest.Pin{N: name, Num: n, EdgesChan: make(chan pgpio.Level, 1)}
}

// drive moves a simulated input's line to l as the world would: the pin's
// level changes and, if it did, an edge goes to EdgesChan, so the input
// goroutine sees it through WaitForEdge and debounce. It never blocks.
func (in *input) drive(l pgpio.Level) {
	p := in.sim
	p.Lock()
	defer p.Unlock()
	if l == in.driven {
		return
	}
	in.driven = l
	p.L = l
	pushEdge(p, l)
}

// wake makes a waiting WaitForEdge return, so the input goroutine, which
// waits without a timeout, notices that its context ended. If the
// goroutine is not waiting yet, the edge stays queued and its next wait
// returns at once. The edge carries the driven level, so it cannot move
// the pin.
func (in *input) wake() {
	p := in.sim
	p.Lock()
	defer p.Unlock()
	pushEdge(p, in.driven)
}

// pushEdge queues an edge to level l, in place of the oldest pending one if
// the channel is full. gpiotest's WaitForEdge sets L from the edge it
// receives, so the newest level must be queued last: dropped behind an
// older pending edge, it would leave the pin at that older level. The
// caller holds p's lock, so edges queue in the order their levels were
// set. It never blocks; a pin without EdgesChan (an input that polls)
// takes no edges.
func pushEdge(p *gpiotest.Pin, l pgpio.Level) {
	select {
	case p.EdgesChan <- l:
		return
	default:
	}
	select {
	case <-p.EdgesChan:
	default: // the input goroutine took it meanwhile
	}
	select {
	case p.EdgesChan <- l:
	default: // unbuffered, and nobody waiting
	}
}

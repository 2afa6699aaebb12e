package gpio

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"pibridge"
)

// input is one digital input. last is owned by Run until the input's
// goroutine starts, then by that goroutine alone.
type input struct {
	b        *Board
	name     string
	pin      pgpio.PinIO
	sim      *gpiotest.Pin // pin, when simulated: drive moves it
	driven   pgpio.Level   // the level drive last set; guarded by sim's lock
	invert   bool
	debounce time.Duration
	simulate time.Duration
	edges    bool // the pin delivers edges; otherwise it is polled
	last     bool
}

var pulls = map[string]pgpio.Pull{"up": pgpio.PullUp, "down": pgpio.PullDown, "none": pgpio.Float}

func newInput(b *Board, c InputConfig, p pgpio.PinIO, sp *gpiotest.Pin) (*input, error) {
	in := &input{
		b: b, name: c.Name, pin: p, sim: sp, invert: c.Invert,
		debounce: c.Debounce.D(), simulate: c.Simulate.D(),
	}
	pull := pulls[c.Pull]
	if err := p.In(pull, pgpio.BothEdges); err != nil {
		// Not every driver delivers edges (or may, for this user): poll.
		if err2 := p.In(pull, pgpio.NoEdge); err2 != nil {
			return nil, fmt.Errorf("input %s: %s: %w", c.Name, p.Name(), err2)
		}
		b.log.Info("input has no edge detection; polling it", "input", c.Name, "pin", p.Name(), "every", b.poll, "reason", err)
	} else {
		in.edges = true
	}
	if sp != nil {
		in.driven = sp.Read() // as the pull left it
	}
	return in, nil
}

// read returns the input's value: the pin level with invert applied.
func (in *input) read() bool { return (in.pin.Read() == pgpio.High) != in.invert }

// update emits the input's value if it differs from the last one emitted.
func (in *input) update() {
	if v := in.read(); v != in.last {
		in.last = v
		in.b.emit(in.name, pibridge.Bool(v))
	}
}

func (in *input) run(ctx context.Context) {
	if in.edges {
		in.runEdges(ctx)
	} else {
		in.runPolling(ctx)
	}
}

// edgeWait is the timeout of one WaitForEdge while the input is quiet.
func (in *input) edgeWait() time.Duration {
	switch {
	case in.sim != nil:
		return simEdgeWait
	case isLine(in.pin):
		return lineEdgeWait
	}
	return edgeSlice
}

func (in *input) runEdges(ctx context.Context) {
	wait := in.edgeWait()
	for ctx.Err() == nil {
		if !in.pin.WaitForEdge(wait) && in.read() == in.last {
			continue // quiet; a change without an edge is a lost edge and goes on below
		}
		if ctx.Err() != nil {
			return
		}
		in.settle(ctx)
		in.update()
	}
}

// settle returns once the pin has had no edge for the debounce time, so a
// bouncing contact gives one change. A line that never stops bouncing is
// read after 64 windows all the same.
func (in *input) settle(ctx context.Context) {
	if in.debounce <= 0 {
		return
	}
	for i := 0; i < 64 && ctx.Err() == nil && in.pin.WaitForEdge(in.debounce); i++ {
	}
}

// runPolling reads the pin every poll interval; a new level counts once it
// has held for the debounce time.
func (in *input) runPolling(ctx context.Context) {
	t := time.NewTicker(in.b.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		v := in.read()
		if v == in.last {
			continue
		}
		held := true
		for end := time.Now().Add(in.debounce); held && time.Now().Before(end); {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			held = in.read() == v
		}
		if held {
			in.update()
		}
	}
}

// simulatePresses presses a simulated input briefly about every simulate
// interval (±30%), through the pin, so debounce and edges are exercised as
// if a person did it.
func (in *input) simulatePresses(ctx context.Context) {
	rng := rand.New(rand.NewPCG(in.b.seed, nameHash(in.name)))
	press := min(max(in.simulate/20, 100*time.Millisecond), 2*time.Second)
	for {
		d := time.Duration(float64(in.simulate) * (0.7 + 0.6*rng.Float64()))
		if sleep(ctx, in.b.clock, d) != nil {
			return
		}
		in.drive(pgpio.Level(!in.invert))
		if sleep(ctx, in.b.clock, press) != nil {
			return
		}
		in.drive(pgpio.Level(in.invert))
	}
}

// nameHash is FNV-1a: it gives every simulated thing its own random stream
// from one seed.
func nameHash(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

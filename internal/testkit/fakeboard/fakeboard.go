// Package fakeboard is the tests' board: an Actuator that applies commands
// by emitting them and records every call. It is apart from testkit, which
// the root package's own tests use too.
package fakeboard

import (
	"context"
	"sync"
	"time"

	"pibridge"
)

// Actuator applies commands by emitting the new value, as a board does
// once a pin has moved, and records every call as "set NAME VALUE" or
// "pulse NAME DURATION".
type Actuator struct {
	Core *pibridge.Core
	// Refuse, when set, may refuse a Set of a signal (after it is
	// recorded): a conflict, or waiting for ctx as a stuck output does.
	Refuse func(ctx context.Context, name string) error

	mu    sync.Mutex
	calls []string
}

// New returns an Actuator installed as core's.
func New(core *pibridge.Core) *Actuator {
	a := &Actuator{Core: core}
	core.SetActuator(a)
	return a
}

func (a *Actuator) record(call string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, call)
}

// Calls returns the calls so far.
func (a *Actuator) Calls() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.calls...)
}

// Set records the call and emits v (a toggle flips the latest value).
func (a *Actuator) Set(ctx context.Context, name string, v pibridge.Value) error {
	a.record("set " + name + " " + v.String())
	if a.Refuse != nil {
		if err := a.Refuse(ctx, name); err != nil {
			return err
		}
	}
	if v.IsToggle() {
		r, _ := a.Core.Latest(name)
		v = pibridge.Bool(!r.Value.Bool())
	}
	a.Core.Emit(name, v, time.Time{})
	return nil
}

// Pulse records the call and emits on, then off.
func (a *Actuator) Pulse(_ context.Context, name string, d time.Duration) error {
	a.record("pulse " + name + " " + d.String())
	a.Core.Emit(name, pibridge.Bool(true), time.Time{})
	a.Core.Emit(name, pibridge.Bool(false), time.Time{})
	return nil
}

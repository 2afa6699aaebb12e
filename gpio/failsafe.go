package gpio

import (
	"sync"
	"time"
)

// linkState is the failsafe's view of the world: can anyone reach us?
type linkState struct {
	mu     sync.Mutex // guards these and every output's fs timer
	online bool
	since  time.Time // when the bridge became unreachable
	armed  bool      // Run is active
}

// SetOnline tells the board whether anybody can reach the bridge: cmd/bridge
// calls it with true while an MQTT broker is connected or a panel is open,
// and false when neither is. An output with failsafe_after goes to its safe
// state once the bridge has been unreachable that long, and stays there
// until commanded again.
//
// Until the first call the bridge counts as unreachable from the start of
// Run: a bridge that never gets a connection is exactly the case the
// failsafe is for.
func (b *Board) SetOnline(online bool) {
	l := &b.link
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.online == online {
		return
	}
	l.online = online
	if !l.armed {
		return
	}
	if online {
		b.stopFailsafeLocked()
	} else {
		b.armFailsafeLocked()
	}
}

func (b *Board) startFailsafe() {
	l := &b.link
	l.mu.Lock()
	defer l.mu.Unlock()
	l.armed = true
	if !l.online {
		b.armFailsafeLocked()
	}
}

func (b *Board) stopFailsafe() {
	l := &b.link
	l.mu.Lock()
	defer l.mu.Unlock()
	l.armed = false
	b.stopFailsafeLocked()
}

func (b *Board) armFailsafeLocked() {
	b.link.since = b.clock.Now()
	for _, o := range b.outputs {
		if o.fsAfter <= 0 {
			continue
		}
		if o.fs == nil {
			o.fs = b.clock.AfterFunc(o.fsAfter, func() { b.failsafe(o) })
		} else {
			o.fs.Reset(o.fsAfter)
		}
	}
}

func (b *Board) stopFailsafeLocked() {
	for _, o := range b.outputs {
		if o.fs != nil {
			o.fs.Stop()
		}
	}
}

// failsafe runs on an output's timer. It checks again under the lock: the
// bridge may have come back just as the timer fired.
func (b *Board) failsafe(o *output) {
	l := &b.link
	l.mu.Lock()
	offline := l.armed && !l.online
	since := l.since
	l.mu.Unlock()
	if !offline || b.clock.Now().Sub(since) < o.fsAfter {
		return
	}
	b.log.Warn("failsafe: no broker and no panel, output to its safe state",
		"output", o.name, "unreachable_for", o.fsAfter, "safe", onOff(o.safe))
	if err := o.goSafe(false); err != nil {
		b.log.Error("failsafe: output did not reach its safe state", "output", o.name, "err", err)
	}
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

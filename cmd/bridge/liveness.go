package main

import (
	"sync"
	"time"
)

// probeTimeout is how long the core's lock may take to answer before the
// core counts as stuck. Emit holds the lock for microseconds; the longest
// legitimate hold is the fsync that extends the seq lease (once every 4096
// readings), which a slow SD card stretches to some hundred milliseconds.
const probeTimeout = time.Second

// coreProbe says whether the core is alive, for the systemd watchdog,
// /healthz and /metrics alike.
//
// Alive means: the core's lock can be taken within the timeout. Emit does
// all of a reading's work under that lock (seq, state, history and the
// hand-off to every subscriber), so a subscriber whose Deliver blocks, or a
// seq write hanging on a failing SD card, holds it, and every later
// reading from every sensor and pin queues up behind it: the bridge looks
// up but is deaf and dumb, the state worth a restart. The age of the last
// reading (Core.LastEmit) is no test: a bridge with only inputs and
// outputs may emit nothing for hours and be perfectly well.
//
// The probe calls lock (Core.State, which takes the lock) on a goroutine
// of its own, so a stuck lock costs the caller the timeout, not forever.
// At most one such goroutine exists whatever the number of callers: a
// check while one is in flight waits for that one. It ends when the lock
// comes free; if it never does, systemd's watchdog ends the process.
type coreProbe struct {
	lock    func()
	timeout time.Duration

	mu      sync.Mutex
	pending chan struct{} // closed once the probe in flight got the lock; nil when none is in flight
}

func newCoreProbe(lock func(), timeout time.Duration) *coreProbe {
	return &coreProbe{lock: lock, timeout: timeout}
}

// Alive reports whether the lock answered within the timeout.
func (p *coreProbe) Alive() bool {
	p.mu.Lock()
	done := p.pending
	if done == nil {
		done = make(chan struct{})
		p.pending = done
		go func() {
			p.lock()
			p.mu.Lock()
			p.pending = nil
			p.mu.Unlock()
			close(done)
		}()
	}
	p.mu.Unlock()
	t := time.NewTimer(p.timeout)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

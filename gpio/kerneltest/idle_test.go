package kerneltest

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// wakeups returns how often the bridge's threads were switched in (their
// voluntary and involuntary context switches, summed) so far.
func (b *bridgeProc) wakeups(t *testing.T) int {
	t.Helper()
	out := b.r.sh(t, "cat /proc/"+b.pid+"/task/*/status | sed -n 's/.*ctxt_switches:[[:space:]]*//p'")
	n := 0
	for _, f := range strings.Fields(out) {
		v, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("ctxt_switches: %q", out)
		}
		n += v
	}
	return n
}

// idleRate measures the bridge's wake-ups per second while nothing happens.
func idleRate(t *testing.T, r *rig, name, body string) float64 {
	t.Helper()
	b := r.startBridge(t, name, config(name, body))
	defer b.term(t)
	time.Sleep(time.Second) // let start-up settle before measuring
	w0, t0 := b.wakeups(t), time.Now()
	time.Sleep(4 * time.Second) // the measurement window
	w1, t1 := b.wakeups(t), time.Now()
	return float64(w1-w0) / t1.Sub(t0).Seconds()
}

// TestIdleInputsDoNotWake: inputs waiting for edges on a kernel that
// delivers them cost no periodic wake-ups: a bridge with three idle inputs
// wakes about as often as one without inputs.
func TestIdleInputsDoNotWake(t *testing.T) {
	r := getRig(t)
	r.chip(t, "rp1")
	base := idleRate(t, r, "idle0", "outputs:\n  - {name: pump, pin: GPIO22}\n")
	with := idleRate(t, r, "idle3", `outputs:
  - {name: pump, pin: GPIO22}
inputs:
  - {name: door,   pin: GPIO17, pull: up}
  - {name: rain,   pin: GPIO27, pull: up}
  - {name: motion, pin: GPIO16, pull: down}
`)
	t.Logf("idle wake-ups: %.1f/s without inputs, %.1f/s with three inputs", base, with)
	if with > base+2 {
		t.Errorf("three idle inputs add %.1f wake-ups/s (%.1f/s against %.1f/s without): they wake periodically instead of waiting for edges", with-base, with, base)
	}
}

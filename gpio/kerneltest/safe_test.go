package kerneltest

import (
	"fmt"
	"strings"
	"testing"
)

// glitchConfig has outputs whose pin must never leave one level: an
// active-low relay that stays off (pin high), a lamp that starts and stays
// on (high), and a pump that starts and stays off (low).
var glitchConfig = config("glitch", `outputs:
  - {name: relay, pin: GPIO25, invert: true, initial: off, safe: off}
  - {name: lamp,  pin: GPIO26, initial: on, safe: on}
  - {name: pump,  pin: GPIO22, initial: off, safe: off}
`)

// glitchAllowed is the only level each line of glitchConfig may be set to.
var glitchAllowed = map[int]int{25: 1, 26: 1, 22: 0}

// TestNoWrongLevelGlitch reads the kernel's gpio tracepoints while the
// bridge starts and applies initial, stops on SIGTERM, and while
// -safe-state runs: any value set on a line that its config never asked
// for (a relay clicking on for a moment) fails the test. The simulated
// pulls are set against the wanted levels, so a line that floats or
// returns to its input state shows too.
func TestNoWrongLevelGlitch(t *testing.T) {
	r := getRig(t)
	r.chip(t, "rp1")
	r.pull(t, 25, "down")
	r.pull(t, 26, "down")
	r.pull(t, 22, "up")
	r.traceOn(t)
	b := r.startBridge(t, "glitch", glitchConfig)
	b.term(t)
	out, err := r.shErr("bridge -safe-state -config /etc/glitch.yaml 2>&1")
	evs := r.traceOff(t)
	if err != nil {
		t.Fatalf("-safe-state: %v\n%s", err, out)
	}
	var bad []event
	for line, want := range glitchAllowed {
		s := sets(evs, line)
		if len(s) == 0 {
			t.Errorf("line %d: the trace has no value set at all:\n%s", line, dump(evs))
		}
		for _, e := range s {
			if e.val != want {
				bad = append(bad, e)
			}
		}
	}
	if len(bad) > 0 {
		t.Errorf("outputs were set to levels their config never asks for (want line 25=1, 26=1, 22=0):\n%sfull trace:\n%s", dump(bad), dump(evs))
	}
	t.Logf("trace:\n%s", dump(evs))
}

// TestStopDrivesSafe: SIGTERM and -safe-state drive every output to its
// safe level (seen in the trace as the last value set before the line is
// released), and after the process exits gpio-sim returns a released line
// to its pull: nothing holds the safe level once the bridge is gone.
func TestStopDrivesSafe(t *testing.T) {
	r := getRig(t)
	r.chip(t, "rp1")
	cfg := config("stop", `outputs:
  - {name: pump,  pin: GPIO22, initial: off, safe: off}
  - {name: light, pin: GPIO23, initial: off, safe: on}
  - {name: relay, pin: GPIO24, invert: true, safe: off}
`)
	// Pulls opposite to the safe levels: after exit the lines read these.
	pulls := map[int]string{22: "up", 23: "down", 24: "down"}
	safe := map[int]int{22: 0, 23: 1, 24: 1}
	for l, p := range pulls {
		r.pull(t, l, p)
	}
	b := r.startBridge(t, "stop", cfg)
	// -check warns about the outputs whose safe level a released line
	// does not keep: light and relay (high on a pulled-down line).
	check := r.sh(t, "bridge -check -config /etc/stop.yaml")
	for name, want := range map[string]bool{"light": true, "relay": true, "pump": false} {
		if got := strings.Contains(check, "warning: outputs["); !got || strings.Contains(check, "] "+name+": safe") != want {
			t.Errorf("-check: warning for %s = %v, want %v:\n%s", name, !want, want, check)
		}
	}
	for _, s := range []string{"pump", "relay"} {
		if code, body := r.post(t, s, "on"); code != 200 {
			t.Fatalf("POST %s on: %d %s", s, code, body)
		}
	}
	for _, stop := range []struct {
		name string
		run  func()
	}{
		{"SIGTERM", func() { b.term(t) }},
		{"-safe-state", func() {
			if out, err := r.shErr("bridge -safe-state -config /etc/stop.yaml 2>&1"); err != nil {
				t.Fatalf("-safe-state: %v\n%s", err, out)
			}
		}},
	} {
		r.traceOn(t)
		stop.run()
		evs := r.traceOff(t)
		for l, want := range safe {
			s := sets(evs, l)
			if len(s) == 0 || s[len(s)-1].val != want {
				t.Errorf("%s: line %d: want its last value set to be the safe level %d, trace:\n%s", stop.name, l, want, dump(evs))
			}
		}
		var after []string
		for l, p := range pulls {
			got := r.level(t, l)
			after = append(after, fmt.Sprintf("line %d (pull-%s) reads %d", l, p, got))
			if want := map[string]int{"up": 1, "down": 0}[p]; got != want {
				t.Errorf("%s: after exit line %d reads %d; gpio-sim returned released lines to their pull until now (pull-%s = %d)", stop.name, l, got, p, want)
			}
		}
		t.Logf("%s: after exit %s", stop.name, strings.Join(after, ", "))
	}
}

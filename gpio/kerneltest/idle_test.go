package kerneltest

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// wakeups returns how often the threads of process pid were switched in
// (their voluntary and involuntary context switches, summed) so far.
func (r *rig) wakeups(t *testing.T, pid string) int {
	t.Helper()
	out := r.sh(t, "cat /proc/"+pid+"/task/*/status | sed -n 's/.*ctxt_switches:[[:space:]]*//p'")
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

// TestIdleInputsDoNotWake: inputs waiting for edges on a kernel that
// delivers them cost no periodic wake-ups. Two bridges run side by side
// over the same window (so host load hits both alike): one with three idle
// inputs, one without inputs; the first must not wake measurably more.
// Inputs that wake every 250 ms to re-read their pin cost 40 wake-ups/s
// more here.
func TestIdleInputsDoNotWake(t *testing.T) {
	r := getRig(t)
	r.chip(t, "rp1")
	with := r.startBridge(t, "idle3", config("idle3", `outputs:
  - {name: pump, pin: GPIO22}
inputs:
  - {name: door,   pin: GPIO17, pull: up}
  - {name: rain,   pin: GPIO27, pull: up}
  - {name: motion, pin: GPIO16, pull: down}
`))
	defer with.term(t)
	r.writeConfig(t, "idle0", config("idle0", "outputs:\n  - {name: lamp, pin: GPIO23}\n"))
	base := &bridgeProc{r: r, name: "idle0", pid: strings.TrimSpace(r.sh(t,
		"mkdir -p /scratch/idle0 && PIBRIDGE_STATE_DIR=/scratch/idle0 PIBRIDGE_HTTP_LISTEN=127.0.0.1:9090 PIBRIDGE_MQTT_EMBEDDED_LISTEN=127.0.0.1:9884 "+
			"bridge -config /etc/idle0.yaml >/scratch/idle0.log 2>&1 </dev/null & echo $!"))}
	t.Cleanup(base.kill)
	defer base.term(t)
	r.sh(t, "i=0; until wget -q -O /dev/null http://127.0.0.1:9090/healthz; do i=$((i+1)); [ $i -lt 600 ] || exit 1; sleep 0.1; done")
	// Sample both every half second and take the median rate: a periodic
	// slice shows in every interval, the bridges' occasional bursts of
	// work (every few seconds, alike with or without inputs) do not.
	var baseRates, withRates []float64
	b0, w0, t0 := r.wakeups(t, base.pid), r.wakeups(t, with.pid), time.Now()
	for range 12 {
		time.Sleep(500 * time.Millisecond) // one sampling interval
		b1, w1, t1 := r.wakeups(t, base.pid), r.wakeups(t, with.pid), time.Now()
		s := t1.Sub(t0).Seconds()
		baseRates = append(baseRates, float64(b1-b0)/s)
		withRates = append(withRates, float64(w1-w0)/s)
		b0, w0, t0 = b1, w1, t1
	}
	baseRate, withRate := median(baseRates), median(withRates)
	t.Logf("idle wake-ups (median of 12 half-second intervals): %.1f/s without inputs, %.1f/s with three inputs", baseRate, withRate)
	if withRate > baseRate+6 {
		t.Errorf("three idle inputs add %.1f wake-ups/s (%.1f/s against %.1f/s without): they wake periodically instead of waiting for edges", withRate-baseRate, withRate, baseRate)
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

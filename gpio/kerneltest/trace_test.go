package kerneltest

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// event is one gpio tracepoint line: the kernel setting a line's value
// (op "set", val the level) or direction ("in"/"out", val the error code).
type event struct {
	at   time.Duration // since boot
	line int           // offset on the live chip
	op   string
	val  int
	raw  string
}

var traceLine = regexp.MustCompile(`\s(\d+)\.(\d+): gpio_(?:value|direction): (\d+) +(set|get|in|out) \(?(-?\d+)\)?`)

// traceOn clears the kernel's trace buffer and enables the gpio events.
func (r *rig) traceOn(t *testing.T) { r.sh(t, "chip trace on") }

// traceOff stops the gpio events and returns those of the live chip.
func (r *rig) traceOff(t *testing.T) []event {
	t.Helper()
	out := r.sh(t, "chip trace off")
	base, err := strconv.Atoi(strings.TrimSpace(r.sh(t, "chip base")))
	if err != nil {
		t.Fatalf("chip base: %v", err)
	}
	var evs []event
	for _, l := range strings.Split(out, "\n") {
		m := traceLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		sec, _ := strconv.Atoi(m[1])
		frac := (m[2] + "000000")[:6]
		us, _ := strconv.Atoi(frac)
		g, _ := strconv.Atoi(m[3])
		v, _ := strconv.Atoi(m[5])
		evs = append(evs, event{
			at:   time.Duration(sec)*time.Second + time.Duration(us)*time.Microsecond,
			line: g - base, op: m[4], val: v, raw: strings.TrimSpace(l),
		})
	}
	return evs
}

// sets returns the "set" events of one line.
func sets(evs []event, line int) []event {
	var s []event
	for _, e := range evs {
		if e.line == line && e.op == "set" {
			s = append(s, e)
		}
	}
	return s
}

func dump(evs []event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  line %d: %s\n", e.line, e.raw)
	}
	return b.String()
}

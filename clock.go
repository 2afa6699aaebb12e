package pibridge

import (
	"strconv"
	"sync/atomic"
	"time"
)

// ClockState says whether readings' ts can be trusted. A Raspberry Pi has
// no battery-backed clock: after a power cut it boots with the last saved
// time (or 1970) and NTP steps the clock later, or never on a LAN without
// a time server (README "Time on a board without a clock").
type ClockState struct {
	// Synced: the kernel says a time source disciplines the clock
	// (adjtimex: STA_UNSYNC clear, not TIME_ERROR).
	Synced bool `json:"clock_synced"`
	// Known is false where the kernel cannot be asked (not Linux); Synced
	// is then true, as nothing better is known.
	Known bool `json:"-"`
	// MaxError is the kernel's bound on the clock's error; 0 when unknown.
	MaxError time.Duration `json:"-"`
	// Steps counts the wall clock's jumps against the monotonic clock
	// seen since the start; LastStep is the latest (negative: backwards).
	Steps    uint64        `json:"-"`
	LastStep time.Duration `json:"-"`
}

// String is "synced", "unsynced" or "unknown", as /healthz says it.
func (s ClockState) String() string {
	switch {
	case !s.Known:
		return "unknown"
	case s.Synced:
		return "synced"
	}
	return "unsynced"
}

// AppendClock appends `"clock":{"synced":…}` for the hello and meta.
func AppendClock(b []byte, s ClockState) []byte {
	b = append(b, `"clock":{"synced":`...)
	b = strconv.AppendBool(b, s.Synced)
	return append(b, '}')
}

// KernelClock asks the kernel whether its clock is synchronised; see
// clock_linux.go.
type KernelClock func() (synced, known bool, maxError time.Duration)

// stepThreshold is the smallest jump of the wall clock against the
// monotonic one that counts as a step: NTP's slewing moves it 0.5 ms a
// second at most, so between two readings it stays far below.
const stepThreshold = time.Second

// clockWatch detects steps of the wall clock: the wall clock and the
// monotonic clock advance together except when the wall clock is set. It
// is used under the core's lock.
type clockWatch struct {
	now    func() time.Time
	mono   func() time.Duration // never steps; nil: no step detection
	offset time.Duration        // wall − monotonic at the last check

	steps    atomic.Uint64
	lastStep atomic.Int64
}

func newClockWatch(now func() time.Time, mono func() time.Duration) *clockWatch {
	w := &clockWatch{now: now, mono: mono}
	if mono != nil {
		w.offset = w.current()
	}
	return w
}

func (w *clockWatch) current() time.Duration {
	return time.Duration(w.now().Round(0).UnixNano()) - w.mono()
}

// check returns how far the wall clock has jumped since the last check; 0
// when it has not.
func (w *clockWatch) check() time.Duration {
	if w.mono == nil {
		return 0
	}
	off := w.current()
	step := off - w.offset
	if step > -stepThreshold && step < stepThreshold {
		return 0
	}
	w.offset = off
	w.steps.Add(1)
	w.lastStep.Store(int64(step))
	return step
}

// clockStepped re-dates the history by a step of the wall clock, under
// c.mu: the points before it were stamped by the clock that was wrong, so
// charts stay in order and show them at the right time once NTP has set
// the clock (README "Time on a board without a clock").
func (c *Core) clockStepped(step time.Duration) {
	for _, h := range c.history {
		h.shift(step.Milliseconds())
	}
	c.log.Warn("the wall clock stepped; history re-dated", "step", step.String(), "synced", c.ClockState().Synced)
}

// ClockState says whether the wall clock is synchronised and how often it
// has stepped; /healthz, the hello and meta carry it.
func (c *Core) ClockState() ClockState {
	synced, known, maxErr := c.kclock()
	return ClockState{
		Synced: synced, Known: known, MaxError: maxErr,
		Steps: c.clock.steps.Load(), LastStep: time.Duration(c.clock.lastStep.Load()),
	}
}

package gpio

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"pibridge"
)

// sensorDriver reads one sensor: one value per quantity into dst. A driver
// is used by one goroutine only.
type sensorDriver interface {
	read(ctx context.Context, dst []float64) error
	close() error
}

// maxBackoff bounds the wait between attempts on a failing sensor.
const maxBackoff = time.Minute

// StaleAfterFailures is how many failed attempts in a row make a sensor
// stale: one failure is a glitch worth a retry, three (with backoff, about
// seven intervals without a reading) mean the last values no longer
// describe the world.
const StaleAfterFailures = 3

// sensor is one configured sensor and its goroutine's state.
type sensor struct {
	b        *Board
	name     string
	typ      string
	source   string
	interval time.Duration
	qs       []quantity
	names    []string // signal names, per quantity
	gates    []gate
	vals     []float64
	open     func() (sensorDriver, error)
	drv      sensorDriver

	// Health, read by SensorStats from any goroutine.
	reads   atomic.Uint64
	errs    atomic.Uint64
	lastDur atomic.Int64
	failing atomic.Bool
	stale   atomic.Bool
	errMu   sync.Mutex
	lastErr string
}

// SensorStat is one sensor's health, for metrics: like a node_exporter
// collector, each sensor succeeds or fails on its own.
type SensorStat struct {
	Name    string
	Type    string
	Signals []string // the signals it yields ("air.temperature", …)
	Reads   uint64   // successful reads
	Errors  uint64   // failed reads, including failed opens
	Failing bool     // the last attempt failed
	// Stale: the last StaleAfterFailures attempts failed, so the latest
	// readings of Signals are old news. The board emits nothing for it;
	// it clears with the next good read, which is emitted whatever
	// min_delta says.
	Stale        bool
	LastError    string        // the last failure's message, kept after recovery
	LastDuration time.Duration // of the last attempt
}

// SensorStats returns every sensor's health, in config order.
func (b *Board) SensorStats() []SensorStat {
	out := make([]SensorStat, len(b.sensors))
	for i, s := range b.sensors {
		s.errMu.Lock()
		msg := s.lastErr
		s.errMu.Unlock()
		out[i] = SensorStat{
			Name: s.name, Type: s.typ, Signals: append([]string(nil), s.names...),
			Reads: s.reads.Load(), Errors: s.errs.Load(), Failing: s.failing.Load(), Stale: s.stale.Load(),
			LastError: msg, LastDuration: time.Duration(s.lastDur.Load()),
		}
	}
	return out
}

// Stale reports whether a sensor signal ("air.temperature") or a whole
// sensor ("air") is stale: its sensor failed StaleAfterFailures times in a
// row and has not read since. Other names are never stale.
func (b *Board) Stale(name string) bool {
	if e := b.byName[name]; e.sen != nil {
		return e.sen.stale.Load()
	}
	for _, s := range b.sensors {
		if s.name == name {
			return s.stale.Load()
		}
	}
	return false
}

// StaleSignals lists the signals of every stale sensor, in config order;
// nil when all are fresh. cmd/bridge can put it in /healthz and /metrics.
func (b *Board) StaleSignals() []string {
	var out []string
	for _, s := range b.sensors {
		if s.stale.Load() {
			out = append(out, s.names...)
		}
	}
	return out
}

// gate decides which readings are emitted: all of them, unless min_delta or
// max_interval is set; then one that moved by more than min_delta since the
// last emitted value, or any once max_interval has passed since then.
// Times are on the monotonic clock (Clock.Mono), so that a step of the
// wall clock neither delays a heartbeat nor sends one early.
type gate struct {
	minDelta    float64
	maxInterval time.Duration
	last        float64
	at          time.Duration
	seen        bool
}

func (g *gate) pass(v float64, now time.Duration) bool {
	ok := !g.seen ||
		g.minDelta == 0 && g.maxInterval == 0 ||
		math.Abs(v-g.last) > g.minDelta ||
		g.maxInterval > 0 && now-g.at >= g.maxInterval
	if ok {
		g.last, g.at, g.seen = v, now, true
	}
	return ok
}

func (b *Board) openSensors() error {
	for _, c := range b.cfg.Sensors {
		s := &sensor{
			b: b, name: c.Name, typ: c.Type, source: sensorSource(c),
			interval: c.Interval.D(), qs: sensorQuantities(c),
		}
		for _, q := range s.qs {
			n := c.Name
			if q.name != "" {
				n += "." + q.name
			}
			s.names = append(s.names, n)
			s.gates = append(s.gates, gate{minDelta: c.MinDelta, maxInterval: c.MaxInterval.D()})
		}
		s.vals = make([]float64, len(s.qs))
		if err := b.chooseDriver(s, c); err != nil {
			return fmt.Errorf("sensor %s: %w", c.Name, err)
		}
		b.sensors = append(b.sensors, s)
		for _, n := range s.names {
			b.byName[n] = entity{sen: s}
		}
	}
	return nil
}

// chooseDriver picks real or simulated reading. On the sim board every
// hardware sensor is simulated, except cpu_temp, which reads the machine's
// own thermal zone where there is one: the demo then shows a real number.
func (b *Board) chooseDriver(s *sensor, c SensorConfig) error {
	simulated := func() {
		seed := nameHash(c.Name)
		s.open = func() (sensorDriver, error) { return newWalk(b.seed, seed, c, s.qs, s.interval), nil }
	}
	switch {
	case c.Type == TypeSim:
		simulated()
	case c.Type == TypeCPUTemp:
		p, _ := thermalPath(c.ThermalZone)
		path := b.sysPath(p)
		s.open = func() (sensorDriver, error) { return openMilliFile(path, false) }
		if b.sim {
			if d, err := s.open(); err == nil {
				d.close()
				b.log.Info("cpu_temp reads the real thermal zone", "sensor", c.Name, "path", path)
			} else {
				b.log.Info("cpu_temp is simulated: no thermal zone to read", "sensor", c.Name, "err", err)
				s.source = "cpu_temp (simulated)"
				simulated()
			}
		}
	case b.sim:
		s.source += " (simulated)"
		simulated()
	case c.Type == TypeDS18B20:
		s.open = func() (sensorDriver, error) { return b.openDS18B20(c) }
	case c.Type == TypeBME280 || c.Type == TypeBMP280:
		s.open = func() (sensorDriver, error) { return b.openBMx280(c) }
	case c.Type == TypeADS1115:
		s.open = func() (sensorDriver, error) { return b.openADS1115(c) }
	default:
		return fmt.Errorf("type %s is not supported on board %s", c.Type, b.cfg.Board)
	}
	return nil
}

// sysPath puts the board's sysfs root in front of an absolute path.
func (b *Board) sysPath(p string) string {
	if b.sysRoot == "/" {
		return p
	}
	return b.sysRoot + p
}

// run reads the sensor every interval until ctx ends. A failure is retried
// with exponential backoff (interval, 2×, 4×, … up to a minute) and logged
// with backoff too (on the 1st, 2nd, 4th, 8th… failure in a row, or when the
// message changes); it never touches the other sensors. The
// StaleAfterFailures-th failure in a row marks the sensor stale.
func (s *sensor) run(ctx context.Context) {
	defer func() {
		if s.drv != nil {
			s.drv.close()
			s.drv = nil
		}
	}()
	clock := s.b.clock
	t := newTicker(clock, 0)
	defer t.stop()
	fails := 0
	lastMsg := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := clock.Mono()
		began := time.Now()
		err := s.readOnce(ctx)
		s.lastDur.Store(int64(time.Since(began)))
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			fails++
			msg := err.Error()
			s.errMu.Lock()
			s.lastErr = msg
			s.errMu.Unlock()
			s.failing.Store(true)
			if fails == StaleAfterFailures {
				s.stale.Store(true)
			}
			s.errs.Add(1) // last, as reads: the count implies the rest
			retry := s.backoff(fails)
			if fails&(fails-1) == 0 || msg != lastMsg {
				s.b.log.Warn("sensor read failed", "sensor", s.name, "err", err, "failures", fails, "retry_in", retry)
			}
			if fails == StaleAfterFailures {
				s.b.log.Warn("sensor stale: its signals keep their last reading until it reads again",
					"sensor", s.name, "signals", s.names, "failures", fails)
			}
			lastMsg = msg
			t.reset(retry)
			continue
		}
		if fails > 0 {
			s.b.log.Info("sensor recovered", "sensor", s.name, "after_failures", fails)
			fails, lastMsg = 0, ""
		}
		if s.stale.Swap(false) {
			// The first reading after an outage goes out even if it is
			// within min_delta of the last: it is what makes the value fresh.
			for i := range s.gates {
				s.gates[i].seen = false
			}
		}
		now := clock.Mono()
		for i, v := range s.vals {
			if s.gates[i].pass(v, now) {
				s.b.emit(s.names[i], pibridge.Number(v))
			}
		}
		// Counted once its readings are out, so that whoever sees the
		// count also finds the values.
		s.failing.Store(false)
		s.reads.Add(1)
		t.reset(max(s.interval-(now-start), 0))
	}
}

func (s *sensor) backoff(fails int) time.Duration {
	d := s.interval
	for i := 1; i < fails && d < maxBackoff; i++ {
		d *= 2
	}
	return max(s.interval, min(d, maxBackoff))
}

// readOnce opens the driver if needed and reads. A driver that failed is
// closed and opened afresh next time, so a sensor that was unplugged and
// plugged back in is found again. A panic in a driver is an error of that
// sensor, not the end of the bridge and its outputs.
func (s *sensor) readOnce(ctx context.Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.b.log.Error("sensor driver panicked", "sensor", s.name, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("driver panic: %v", r)
			s.drv = nil
		}
	}()
	if s.drv == nil {
		d, err := s.open()
		if err != nil {
			return err
		}
		s.drv = d
	}
	if err = s.drv.read(ctx, s.vals); err == nil {
		for i, v := range s.vals {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				err = fmt.Errorf("%s: not a number", s.qs[i].name)
				break
			}
			s.vals[i] = round(v, s.qs[i].digits)
		}
	}
	if err != nil {
		s.drv.close()
		s.drv = nil
	}
	return err
}

var pow10 = [...]float64{1, 10, 100, 1e3, 1e4, 1e5, 1e6}

// round keeps the decimals a sensor can honestly give: a reading of
// 21.431999999 tells more than the BME280 knows and costs bytes on the wire.
func round(v float64, digits int) float64 {
	if digits <= 0 || digits >= len(pow10) {
		return v
	}
	p := pow10[digits]
	return math.Round(v*p) / p
}

var errNoDevice = errors.New("no such device")

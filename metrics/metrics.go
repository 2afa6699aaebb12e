// Package metrics serves the bridge's numbers at /metrics in the Prometheus
// text format, written by hand: client_golang would cost the Pi Zero build
// 2.3 MB of binary.
package metrics

import (
	"errors"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"pibridge"
)

// WS is what the WebSocket and REST side reports.
type WS struct {
	Clients      int
	SlowClosed   uint64 // clients closed (1008) because they could not keep up
	AuthFailures uint64
}

// Sensor is one sensor's health, as the board keeps it.
type Sensor struct {
	Name, Type   string
	Reads        uint64 // successful reads
	Errors       uint64 // failed reads and opens
	Failing      bool   // the last attempt failed
	Stale        bool
	LastDuration time.Duration // of the last attempt
}

// Options say where the numbers come from. Every getter is optional; a nil
// one leaves its families out.
type Options struct {
	Version string
	// Core is counted as a subscriber: pibridge_readings_total per signal.
	Core    *pibridge.Core
	MQTT    func() pibridge.MQTTStats
	WS      func() WS
	Sensors func() []Sensor
	// Alive reports whether the core is alive (see cmd/bridge's probe):
	// pibridge_core_alive. It may take a moment when the core is stuck.
	Alive func() bool
}

// Metrics holds the bridge's counters and writes every family at a scrape.
// Each Metrics is independent: there is no global registry.
type Metrics struct {
	o        Options
	readings map[string]*atomic.Uint64 // written by Deliver; the map itself never changes
	signals  []string                  // readings' keys, sorted

	mu       sync.Mutex
	commands map[[3]string]uint64 // signal, op, result
	bySource map[[2]string]uint64 // source, result

	scrapes  [3]atomic.Uint64 // by scrapeCodes
	inFlight atomic.Int32
	cancel   func()
}

// maxInFlight bounds concurrent scrapes: /metrics needs no token (README: HTTP),
// so a flood of them must not pile up on a Pi Zero. More get a 503.
const maxInFlight = 4

// scrapeCodes are the status codes promhttp_metric_handler_requests_total
// counts, as promhttp did.
var scrapeCodes = [3]int{http.StatusOK, http.StatusInternalServerError, http.StatusServiceUnavailable}

// New sets up the counters and, when o.Core is set, subscribes to it.
// Call Close to unsubscribe.
func New(o Options) *Metrics {
	m := &Metrics{
		o:        o,
		readings: map[string]*atomic.Uint64{},
		commands: map[[3]string]uint64{},
		bySource: map[[2]string]uint64{},
		cancel:   func() {},
	}
	for _, src := range []string{"ws", "http", "mqtt"} {
		for _, res := range []string{"ok", "refused", "error"} {
			m.bySource[[2]string{src, res}] = 0
		}
	}
	if o.Core != nil {
		for _, s := range o.Core.Signals() {
			// Made up front: Deliver only adds, and every signal shows up
			// at 0 before its first reading.
			m.readings[s.Name] = new(atomic.Uint64)
			m.signals = append(m.signals, s.Name)
			if s.Kind.Writable() {
				ops := []string{"set"}
				if s.Kind == pibridge.KindOutput {
					ops = append(ops, "pulse")
				}
				for _, op := range ops {
					m.commands[[3]string{s.Name, op, "ok"}] = 0
					m.commands[[3]string{s.Name, op, "error"}] = 0
				}
			}
		}
		slices.Sort(m.signals)
		_, m.cancel = o.Core.Subscribe(m)
	}
	return m
}

// Deliver counts a reading. It is called under the core's lock: one map
// read and one atomic add, never a block.
func (m *Metrics) Deliver(r pibridge.Reading) {
	if c := m.readings[r.Name]; c != nil {
		c.Add(1)
	}
}

// ObserveCommand counts a command that reached an output: op is "set" or
// "pulse", err its outcome.
func (m *Metrics) ObserveCommand(signal, op string, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.mu.Lock()
	m.commands[[3]string{signal, op, result}]++
	m.mu.Unlock()
}

// ObserveCommandSource counts any command by its door and outcome; it fits
// pibridge.Core.ObserveCommands.
func (m *Metrics) ObserveCommandSource(cmd pibridge.Command, err error) {
	result := "ok"
	switch {
	case errors.Is(err, pibridge.ErrUnknownSignal), errors.Is(err, pibridge.ErrNotWritable), errors.Is(err, pibridge.ErrBadValue),
		errors.Is(err, pibridge.ErrRetained), errors.Is(err, pibridge.ErrBusy):
		result = "refused"
	case err != nil:
		result = "error"
	}
	source := cmd.Source
	if source == "" {
		source = "other"
	}
	m.mu.Lock()
	m.bySource[[2]string{source, result}]++
	m.mu.Unlock()
}

// Handler serves every family in the text format (version 0.0.4), which
// every Prometheus scraper accepts whatever else it asks for, and counts
// its own scrapes (promhttp_metric_handler_requests_total).
func (m *Metrics) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m.inFlight.Add(1) > maxInFlight {
			m.inFlight.Add(-1)
			m.scrapes[2].Add(1)
			http.Error(w, "Limit of concurrent requests reached ("+strconv.Itoa(maxInFlight)+"), try again later.", http.StatusServiceUnavailable)
			return
		}
		body := m.AppendText(nil)
		m.inFlight.Add(-1)
		// Counted before the body goes out, so that a scraper that got
		// its answer finds it counted in the next.
		m.scrapes[0].Add(1)
		w.Header().Set("Content-Type", ContentType)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})
}

// Close stops counting readings.
func (m *Metrics) Close() { m.cancel() }

// AppendText appends every family to b in the text exposition format,
// sorted by name as client_golang's registry did.
func (m *Metrics) AppendText(b []byte) []byte {
	var fs families
	m.pibridge(&fs)
	goRuntime(&fs)
	process(&fs)
	m.handlerFamilies(&fs)
	return fs.appendText(b)
}

func (m *Metrics) pibridge(fs *families) {
	o := m.o
	fs.add("pibridge_build_info", "Always 1; the labels say which build runs.", gauge).
		sample(1, "goarch", runtime.GOARCH, "goversion", runtime.Version(), "version", o.Version)

	r := fs.add("pibridge_readings_total", "Readings the core emitted, by signal.", counter)
	for _, name := range m.signals {
		r.sample(float64(m.readings[name].Load()), "signal", name)
	}

	m.mu.Lock()
	cmds := make([][3]string, 0, len(m.commands))
	for k := range m.commands {
		cmds = append(cmds, k)
	}
	srcs := make([][2]string, 0, len(m.bySource))
	for k := range m.bySource {
		srcs = append(srcs, k)
	}
	// Samples in label-name order (op, result, signal; result, source),
	// as client_golang wrote them.
	slices.SortFunc(cmds, func(a, b [3]string) int {
		return slices.Compare([]string{a[1], a[2], a[0]}, []string{b[1], b[2], b[0]})
	})
	slices.SortFunc(srcs, func(a, b [2]string) int {
		return slices.Compare([]string{a[1], a[0]}, []string{b[1], b[0]})
	})
	c := fs.add("pibridge_output_commands_total", "Commands that reached an output or pwm (set or pulse), by signal and result (ok or error). Commands the core refused before (unknown signal, bad value) are not counted here.", counter)
	for _, k := range cmds {
		c.sample(float64(m.commands[k]), "op", k[1], "result", k[2], "signal", k[0])
	}
	s := fs.add("pibridge_commands_total", "Every command, by the door it came through (ws, http, mqtt) and result: ok, refused (unknown signal, not writable, bad value) or error (the output could not do it).", counter)
	for _, k := range srcs {
		s.sample(float64(m.bySource[k]), "result", k[1], "source", k[0])
	}
	m.mu.Unlock()

	if core := o.Core; core != nil {
		last := 0.0
		if t := core.LastEmit(); t.UnixNano() > 0 {
			last = float64(t.UnixNano()) / 1e9
		}
		fs.add("pibridge_core_last_reading_timestamp_seconds", "When the core emitted its last reading (0: none yet).", gauge).sample(last)
		fs.add("pibridge_core_readings_emitted_total", "Readings the core emitted since the start, all signals.", counter).sample(float64(core.Emitted()))
		ahead, overflow := core.JournalStats()
		fs.add("pibridge_disk_writer_ahead_total", "Readings shown on the WebSocket before the disk writer had them in the outbox's log (a write took over 5 ms: the disk stalls). Shown in seq order all the same.", counter).sample(float64(ahead))
		fs.add("pibridge_disk_writer_overflow_total", "Readings the disk writer's queue (4096) had no room for during a long stall: shown on the WebSocket, never logged, never published on MQTT.", counter).sample(float64(overflow))
	}
	if o.Alive != nil {
		fs.add("pibridge_core_alive", "1 when the core's lock answers a probe in time (readings can be emitted), 0 when it is stuck.", gauge).sample(b2f(o.Alive()))
	}
	if o.MQTT != nil {
		s := o.MQTT()
		fs.add("pibridge_mqtt_connected", "1 while the MQTT client is connected to a broker.", gauge).sample(b2f(s.Connected))
		fs.add("pibridge_mqtt_outbox_readings", "Readings waiting in the outbox for the broker.", gauge).sample(float64(s.Queued))
		fs.add("pibridge_mqtt_outbox_dropped_total", "Readings dropped from a full outbox, oldest first.", counter).sample(float64(s.Dropped))
		fs.add("pibridge_mqtt_published_total", "Readings the broker acknowledged.", counter).sample(float64(s.Published))
		fs.add("pibridge_mqtt_connects_total", "Successful connections to a broker, the first included.", counter).sample(float64(s.Connects))
		fs.add("pibridge_mqtt_commands_total", "Commands received on /set and /pulse topics.", counter).sample(float64(s.Commands))
		fs.add("pibridge_mqtt_commands_dropped_total", "Commands refused busy because the MQTT command queue was full (each answered with a busy ack).", counter).sample(float64(s.CommandsDropped))
		fs.add("pibridge_mqtt_acks_dropped_total", "Acks not published: their queue was full (busy refusals only), or there was no connection.", counter).sample(float64(s.AcksDropped))
		fs.add("pibridge_mqtt_outbox_failing", "1 while the disk outbox cannot write (disk full or read-only): readings wait in memory, a bounded number.", gauge).sample(b2f(s.OutboxFailing))
		fs.add("pibridge_mqtt_outbox_log_write_failures_total", "Readings whose write to the outbox's log failed: kept in memory only, a crash would lose them.", counter).sample(float64(s.OutboxLogFailures))
		fs.add("pibridge_mqtt_outbox_replayed_total", "Readings replayed from the outbox's log at start (some may go out twice).", counter).sample(float64(s.OutboxReplayed))
	}
	if o.WS != nil {
		s := o.WS()
		fs.add("pibridge_ws_clients", "WebSocket clients connected now.", gauge).sample(float64(s.Clients))
		fs.add("pibridge_ws_slow_clients_closed_total", "WebSocket clients closed (1008) because they could not keep up.", counter).sample(float64(s.SlowClosed))
		fs.add("pibridge_http_auth_failures_total", "Wrong tokens presented (bearer, WebSocket auth frame or panel login).", counter).sample(float64(s.AuthFailures))
	}
	if o.Sensors != nil {
		sensors := o.Sensors()
		reads := fs.add("pibridge_sensor_reads_total", "Successful reads, per sensor.", counter)
		errs := fs.add("pibridge_sensor_errors_total", "Failed reads and opens, per sensor.", counter)
		up := fs.add("pibridge_sensor_up", "1 when the sensor's last attempt succeeded, 0 when it failed or none was made yet.", gauge)
		stale := fs.add("pibridge_sensor_stale", "1 when the sensor failed often enough in a row that its last values are old news.", gauge)
		dur := fs.add("pibridge_sensor_read_duration_seconds", "How long the sensor's last attempt took, successful or not.", gauge)
		for _, s := range sensors {
			reads.sample(float64(s.Reads), "sensor", s.Name, "type", s.Type)
			errs.sample(float64(s.Errors), "sensor", s.Name, "type", s.Type)
			up.sample(b2f(s.Reads > 0 && !s.Failing), "sensor", s.Name, "type", s.Type)
			stale.sample(b2f(s.Stale), "sensor", s.Name, "type", s.Type)
			dur.sample(s.LastDuration.Seconds(), "sensor", s.Name, "type", s.Type)
		}
	}
}

// handlerFamilies are promhttp's own: the scrape being served is in flight
// and not yet counted.
func (m *Metrics) handlerFamilies(fs *families) {
	fs.add("promhttp_metric_handler_errors_total", "Total number of internal errors encountered by the promhttp metric handler.", counter).
		sample(0, "cause", "encoding").
		sample(0, "cause", "gathering")
	fs.add("promhttp_metric_handler_requests_in_flight", "Current number of scrapes being served.", gauge).
		sample(float64(m.inFlight.Load()))
	f := fs.add("promhttp_metric_handler_requests_total", "Total number of scrapes by HTTP status code.", counter)
	for i, code := range scrapeCodes {
		f.sample(float64(m.scrapes[i].Load()), "code", strconv.Itoa(code))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

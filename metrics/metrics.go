// Package metrics serves the bridge's numbers at /metrics in the Prometheus
// text format: readings per signal, MQTT, WebSocket, commands, sensors.
//
// It knows the core (it counts readings as a subscriber) and nothing of
// gpio, mqtt or ws: cmd/bridge hands it small getters that return the plain
// structs below, and a custom Collector calls each getter once per scrape.
// On the hot path there is one atomic add per reading (Deliver, under the
// core's lock); a command that reached an output costs a label lookup.
package metrics

import (
	"errors"
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"pibridge"
)

// MQTT is what the MQTT client reports.
type MQTT struct {
	Connected       bool
	Queued          int    // readings waiting in the outbox
	Dropped         uint64 // readings dropped from a full outbox
	Published       uint64 // readings the broker acknowledged
	Connects        uint64
	Commands        uint64 // commands received on /set and /pulse
	CommandsDropped uint64 // commands dropped because the command queue was full
}

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
	MQTT    func() MQTT
	WS      func() WS
	Sensors func() []Sensor
	// Alive reports whether the core is alive (see cmd/bridge's probe):
	// pibridge_core_alive. It may take a moment when the core is stuck.
	Alive func() bool
}

// Metrics is the bridge's registry. It is its own: nothing is registered
// with client_golang's global default registry.
type Metrics struct {
	reg      *prometheus.Registry
	readings map[string]prometheus.Counter // written by Deliver; the map itself never changes
	commands *prometheus.CounterVec
	bySource *prometheus.CounterVec
	cancel   func()
}

// New builds the registry and, when o.Core is set, subscribes to it. Call
// Close to unsubscribe.
func New(o Options) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), readings: map[string]prometheus.Counter{}, cancel: func() {}}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "pibridge_build_info",
			Help:        "Always 1; the labels say which build runs.",
			ConstLabels: prometheus.Labels{"version": o.Version, "goversion": runtime.Version(), "goarch": runtime.GOARCH},
		}, func() float64 { return 1 }),
	)
	readings := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pibridge_readings_total",
		Help: "Readings the core emitted, by signal.",
	}, []string{"signal"})
	m.commands = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pibridge_output_commands_total",
		Help: "Commands that reached an output or pwm (set or pulse), by signal and result (ok or error). Commands the core refused before (unknown signal, bad value) are not counted here.",
	}, []string{"signal", "op", "result"})
	m.bySource = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pibridge_commands_total",
		Help: "Every command, by the door it came through (ws, http, mqtt) and result: ok, refused (unknown signal, not writable, bad value) or error (the output could not do it).",
	}, []string{"source", "result"})
	for _, src := range []string{"ws", "http", "mqtt"} {
		for _, res := range []string{"ok", "refused", "error"} {
			m.bySource.WithLabelValues(src, res)
		}
	}
	m.reg.MustRegister(readings, m.commands, m.bySource)
	if o.Core != nil {
		for _, s := range o.Core.Signals() {
			// Children made up front: Deliver only adds, and every signal
			// shows up at 0 before its first reading.
			m.readings[s.Name] = readings.WithLabelValues(s.Name)
			if s.Kind.Writable() {
				ops := []string{"set"}
				if s.Kind == pibridge.KindOutput {
					ops = append(ops, "pulse")
				}
				for _, op := range ops {
					m.commands.WithLabelValues(s.Name, op, "ok")
					m.commands.WithLabelValues(s.Name, op, "error")
				}
			}
		}
		_, m.cancel = o.Core.Subscribe(m)
	}
	m.reg.MustRegister(&collector{o: o})
	return m
}

// Deliver counts a reading. It is called under the core's lock: one map
// read and one atomic add, never a block.
func (m *Metrics) Deliver(r pibridge.Reading) {
	if c := m.readings[r.Name]; c != nil {
		c.Inc()
	}
}

// ObserveCommand counts a command that reached an output: op is "set" or
// "pulse", err its outcome.
func (m *Metrics) ObserveCommand(signal, op string, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.commands.WithLabelValues(signal, op, result).Inc()
}

// ObserveCommandSource counts any command by its door and outcome; it fits
// pibridge.Core.ObserveCommands.
func (m *Metrics) ObserveCommandSource(cmd pibridge.Command, err error) {
	result := "ok"
	switch {
	case errors.Is(err, pibridge.ErrUnknownSignal), errors.Is(err, pibridge.ErrNotWritable), errors.Is(err, pibridge.ErrBadValue):
		result = "refused"
	case err != nil:
		result = "error"
	}
	source := cmd.Source
	if source == "" {
		source = "other"
	}
	m.bySource.WithLabelValues(source, result).Inc()
}

// Handler serves the registry in the text format (or protobuf/OpenMetrics
// when a scraper asks for it), counting its own scrapes
// (promhttp_metric_handler_requests_total).
func (m *Metrics) Handler() http.Handler {
	return promhttp.InstrumentMetricHandler(m.reg, promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		Registry:      m.reg, // promhttp_metric_handler_errors_total
		ErrorHandling: promhttp.ContinueOnError,
		// /metrics needs no token (SPEC §6): keep a flood of scrapes from
		// piling up on a Pi Zero.
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
}

// Registry is the registry itself, for tests and for Gather.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Close stops counting readings.
func (m *Metrics) Close() { m.cancel() }

var (
	descCoreAlive = prometheus.NewDesc("pibridge_core_alive",
		"1 when the core's lock answers a probe in time (readings can be emitted), 0 when it is stuck.", nil, nil)
	descLastReading = prometheus.NewDesc("pibridge_core_last_reading_timestamp_seconds",
		"When the core emitted its last reading (0: none yet).", nil, nil)
	descEmitted = prometheus.NewDesc("pibridge_core_readings_emitted_total",
		"Readings the core emitted since the start, all signals.", nil, nil)

	descMQTTConnected = prometheus.NewDesc("pibridge_mqtt_connected",
		"1 while the MQTT client is connected to a broker.", nil, nil)
	descOutboxDepth = prometheus.NewDesc("pibridge_mqtt_outbox_readings",
		"Readings waiting in the outbox for the broker.", nil, nil)
	descOutboxDropped = prometheus.NewDesc("pibridge_mqtt_outbox_dropped_total",
		"Readings dropped from a full outbox, oldest first.", nil, nil)
	descPublished = prometheus.NewDesc("pibridge_mqtt_published_total",
		"Readings the broker acknowledged.", nil, nil)
	descConnects = prometheus.NewDesc("pibridge_mqtt_connects_total",
		"Successful connections to a broker, the first included.", nil, nil)
	descMQTTCommands = prometheus.NewDesc("pibridge_mqtt_commands_total",
		"Commands received on /set and /pulse topics.", nil, nil)
	descMQTTCommandsDropped = prometheus.NewDesc("pibridge_mqtt_commands_dropped_total",
		"Commands dropped because the command queue was full.", nil, nil)

	descWSClients = prometheus.NewDesc("pibridge_ws_clients",
		"WebSocket clients connected now.", nil, nil)
	descWSSlow = prometheus.NewDesc("pibridge_ws_slow_clients_closed_total",
		"WebSocket clients closed (1008) because they could not keep up.", nil, nil)
	descAuthFailures = prometheus.NewDesc("pibridge_http_auth_failures_total",
		"Wrong tokens presented (bearer, WebSocket auth frame or panel login).", nil, nil)

	sensorLabels    = []string{"sensor", "type"}
	descSensorReads = prometheus.NewDesc("pibridge_sensor_reads_total",
		"Successful reads, per sensor.", sensorLabels, nil)
	descSensorErrors = prometheus.NewDesc("pibridge_sensor_errors_total",
		"Failed reads and opens, per sensor.", sensorLabels, nil)
	descSensorUp = prometheus.NewDesc("pibridge_sensor_up",
		"1 when the sensor's last attempt succeeded, 0 when it failed or none was made yet.", sensorLabels, nil)
	descSensorStale = prometheus.NewDesc("pibridge_sensor_stale",
		"1 when the sensor failed often enough in a row that its last values are old news.", sensorLabels, nil)
	descSensorDuration = prometheus.NewDesc("pibridge_sensor_read_duration_seconds",
		"How long the sensor's last attempt took, successful or not.", sensorLabels, nil)
)

// collector reads the getters at scrape time, each once.
type collector struct{ o Options }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	if c.o.Core != nil {
		ch <- descLastReading
		ch <- descEmitted
	}
	if c.o.Alive != nil {
		ch <- descCoreAlive
	}
	if c.o.MQTT != nil {
		for _, d := range []*prometheus.Desc{descMQTTConnected, descOutboxDepth, descOutboxDropped, descPublished, descConnects, descMQTTCommands, descMQTTCommandsDropped} {
			ch <- d
		}
	}
	if c.o.WS != nil {
		ch <- descWSClients
		ch <- descWSSlow
		ch <- descAuthFailures
	}
	if c.o.Sensors != nil {
		for _, d := range []*prometheus.Desc{descSensorReads, descSensorErrors, descSensorUp, descSensorStale, descSensorDuration} {
			ch <- d
		}
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	if core := c.o.Core; core != nil {
		last := 0.0
		if t := core.LastEmit(); t.UnixNano() > 0 {
			last = float64(t.UnixNano()) / 1e9
		}
		gauge(descLastReading, last)
		counter(descEmitted, core.Emitted())
	}
	if c.o.Alive != nil {
		gauge(descCoreAlive, b2f(c.o.Alive()))
	}
	if c.o.MQTT != nil {
		s := c.o.MQTT()
		gauge(descMQTTConnected, b2f(s.Connected))
		gauge(descOutboxDepth, float64(s.Queued))
		counter(descOutboxDropped, s.Dropped)
		counter(descPublished, s.Published)
		counter(descConnects, s.Connects)
		counter(descMQTTCommands, s.Commands)
		counter(descMQTTCommandsDropped, s.CommandsDropped)
	}
	if c.o.WS != nil {
		s := c.o.WS()
		gauge(descWSClients, float64(s.Clients))
		counter(descWSSlow, s.SlowClosed)
		counter(descAuthFailures, s.AuthFailures)
	}
	if c.o.Sensors != nil {
		for _, s := range c.o.Sensors() {
			counter(descSensorReads, s.Reads, s.Name, s.Type)
			counter(descSensorErrors, s.Errors, s.Name, s.Type)
			gauge(descSensorUp, b2f(s.Reads > 0 && !s.Failing), s.Name, s.Type)
			gauge(descSensorStale, b2f(s.Stale), s.Name, s.Type)
			gauge(descSensorDuration, s.LastDuration.Seconds(), s.Name, s.Type)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

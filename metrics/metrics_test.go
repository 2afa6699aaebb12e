package metrics

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"pibridge"
)

func newCore(t *testing.T) *pibridge.Core {
	t.Helper()
	core, err := pibridge.New(pibridge.Options{
		Device: pibridge.Device{ID: "t", Name: "t"},
		Signals: []pibridge.Signal{
			{Name: "door", Kind: pibridge.KindInput},
			{Name: "pump", Kind: pibridge.KindOutput},
			{Name: "fan", Kind: pibridge.KindPWM},
			{Name: "air.temperature", Kind: pibridge.KindSensor, Unit: "°C"},
		},
		StateDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { core.Close() })
	return core
}

// scrape fetches the handler's text output and parses it the way
// Prometheus does.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); expfmt.ResponseFormat(resp.Header).FormatType() != expfmt.TypeTextPlain {
		t.Fatalf("Content-Type %q: want the text format", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// value returns the value of the sample of family name whose labels
// include want.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no family %s", name)
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Untyped != nil:
			return m.Untyped.GetValue()
		}
	}
	t.Fatalf("%s has no sample with labels %v", name, want)
	return 0
}

func TestFamiliesAndValues(t *testing.T) {
	core := newCore(t)
	alive := true
	m := New(Options{
		Version: "v1.2.3",
		Core:    core,
		MQTT: func() MQTT {
			return MQTT{Connected: true, Queued: 7, Dropped: 3, Published: 42, Connects: 2, Commands: 5, CommandsDropped: 1}
		},
		WS: func() WS { return WS{Clients: 4, SlowClosed: 2, AuthFailures: 9} },
		Sensors: func() []Sensor {
			return []Sensor{
				{Name: "air", Type: "bme280", Reads: 10, Errors: 1, LastDuration: 1500 * time.Microsecond},
				{Name: "water", Type: "ds18b20", Errors: 4, Failing: true, Stale: true, LastDuration: 750 * time.Millisecond},
			}
		},
		Alive: func() bool { return alive },
	})
	defer m.Close()
	core.Emit("air.temperature", pibridge.Number(21.5), time.Time{})
	core.Emit("air.temperature", pibridge.Number(21.6), time.Time{})
	core.Emit("pump", pibridge.Bool(true), time.Time{})
	m.ObserveCommand("pump", "set", nil)
	m.ObserveCommand("pump", "pulse", errors.New("interlock"))

	fams := scrape(t, m.Handler())
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"pibridge_build_info", map[string]string{"version": "v1.2.3"}, 1},
		{"pibridge_readings_total", map[string]string{"signal": "air.temperature"}, 2},
		{"pibridge_readings_total", map[string]string{"signal": "pump"}, 1},
		{"pibridge_readings_total", map[string]string{"signal": "door"}, 0},
		{"pibridge_core_readings_emitted_total", nil, 3},
		{"pibridge_core_alive", nil, 1},
		{"pibridge_mqtt_connected", nil, 1},
		{"pibridge_mqtt_outbox_readings", nil, 7},
		{"pibridge_mqtt_outbox_dropped_total", nil, 3},
		{"pibridge_mqtt_published_total", nil, 42},
		{"pibridge_mqtt_connects_total", nil, 2},
		{"pibridge_mqtt_commands_total", nil, 5},
		{"pibridge_mqtt_commands_dropped_total", nil, 1},
		{"pibridge_ws_clients", nil, 4},
		{"pibridge_ws_slow_clients_closed_total", nil, 2},
		{"pibridge_http_auth_failures_total", nil, 9},
		{"pibridge_output_commands_total", map[string]string{"signal": "pump", "op": "set", "result": "ok"}, 1},
		{"pibridge_output_commands_total", map[string]string{"signal": "pump", "op": "pulse", "result": "error"}, 1},
		{"pibridge_output_commands_total", map[string]string{"signal": "fan", "op": "set", "result": "ok"}, 0},
		{"pibridge_sensor_reads_total", map[string]string{"sensor": "air", "type": "bme280"}, 10},
		{"pibridge_sensor_errors_total", map[string]string{"sensor": "water"}, 4},
		{"pibridge_sensor_up", map[string]string{"sensor": "air"}, 1},
		{"pibridge_sensor_up", map[string]string{"sensor": "water"}, 0},
		{"pibridge_sensor_stale", map[string]string{"sensor": "water"}, 1},
		{"pibridge_sensor_read_duration_seconds", map[string]string{"sensor": "air"}, 0.0015},
		{"pibridge_sensor_read_duration_seconds", map[string]string{"sensor": "water"}, 0.75},
	}
	for _, tt := range tests {
		if got := value(t, fams, tt.name, tt.labels); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	for _, mm := range fams["pibridge_output_commands_total"].GetMetric() {
		l := map[string]string{}
		for _, p := range mm.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		if l["signal"] == "door" || l["signal"] == "air.temperature" {
			t.Errorf("read-only signal %s has a command counter", l["signal"])
		}
		if l["signal"] == "fan" && l["op"] == "pulse" {
			t.Errorf("pwm fan has a pulse counter")
		}
	}
	if last := value(t, fams, "pibridge_core_last_reading_timestamp_seconds", nil); time.Since(time.Unix(int64(last), 0)) > time.Minute {
		t.Errorf("last reading timestamp %v is not recent", last)
	}
	for _, f := range []string{"go_goroutines", "process_resident_memory_bytes", "promhttp_metric_handler_requests_total"} {
		if fams[f] == nil {
			t.Errorf("no family %s", f)
		}
	}

	alive = false
	if got := value(t, scrape(t, m.Handler()), "pibridge_core_alive", nil); got != 0 {
		t.Errorf("pibridge_core_alive = %v with a stuck core, want 0", got)
	}
}

// TestOwnRegistry: nothing lands in client_golang's global registry, so
// two bridges in one process (tests) never collide.
func TestOwnRegistry(t *testing.T) {
	a := New(Options{Version: "a", Core: newCore(t)})
	b := New(Options{Version: "b", Core: newCore(t)})
	defer a.Close()
	defer b.Close()
	if value(t, scrape(t, b.Handler()), "pibridge_build_info", map[string]string{"version": "b"}) != 1 {
		t.Fatal("build info of b missing")
	}
}

// TestDeliverConcurrent counts readings from many goroutines (run with
// -race), and stops counting after Close.
func TestDeliverConcurrent(t *testing.T) {
	core := newCore(t)
	m := New(Options{Core: core})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				core.Emit("fan", pibridge.Number(0.5), time.Time{})
			}
		})
	}
	wg.Wait()
	m.Close()
	core.Emit("fan", pibridge.Number(0.5), time.Time{})
	if got := value(t, scrape(t, m.Handler()), "pibridge_readings_total", map[string]string{"signal": "fan"}); got != 800 {
		t.Fatalf("fan readings = %v, want 800", got)
	}
}

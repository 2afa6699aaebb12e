package metrics

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"pibridge"
	"pibridge/internal/promtest"
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
func scrape(t *testing.T, h http.Handler) promtest.Families {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	return promtest.Get(t, srv.URL)
}

func TestFamiliesAndValues(t *testing.T) {
	core := newCore(t)
	alive := true
	m := New(Options{
		Version: "v1.2.3",
		Core:    core,
		MQTT: func() pibridge.MQTTStats {
			return pibridge.MQTTStats{Connected: true, Queued: 7, Dropped: 3, Published: 42, Connects: 2, Commands: 5, CommandsDropped: 1, AcksDropped: 4,
				OutboxFailing: true, OutboxLogFailures: 6, OutboxReplayed: 11}
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
		{"pibridge_mqtt_acks_dropped_total", nil, 4},
		{"pibridge_mqtt_outbox_failing", nil, 1},
		{"pibridge_mqtt_outbox_log_write_failures_total", nil, 6},
		{"pibridge_mqtt_outbox_replayed_total", nil, 11},
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
		if got := promtest.Value(t, fams, tt.name, tt.labels); got != tt.want {
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
	if last := promtest.Value(t, fams, "pibridge_core_last_reading_timestamp_seconds", nil); time.Since(time.Unix(int64(last), 0)) > time.Minute {
		t.Errorf("last reading timestamp %v is not recent", last)
	}
	for _, f := range []string{"go_goroutines", "process_resident_memory_bytes", "promhttp_metric_handler_requests_total"} {
		if fams[f] == nil {
			t.Errorf("no family %s", f)
		}
	}

	alive = false
	if got := promtest.Value(t, scrape(t, m.Handler()), "pibridge_core_alive", nil); got != 0 {
		t.Errorf("pibridge_core_alive = %v with a stuck core, want 0", got)
	}
}

// TestOwnRegistry: every Metrics is its own, so two bridges in one
// process (tests) never collide.
func TestOwnRegistry(t *testing.T) {
	a := New(Options{Version: "a", Core: newCore(t)})
	b := New(Options{Version: "b", Core: newCore(t)})
	defer a.Close()
	defer b.Close()
	if promtest.Value(t, scrape(t, b.Handler()), "pibridge_build_info", map[string]string{"version": "b"}) != 1 {
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
	if got := promtest.Value(t, scrape(t, m.Handler()), "pibridge_readings_total", map[string]string{"signal": "fan"}); got != 800 {
		t.Fatalf("fan readings = %v, want 800", got)
	}
}

// wantFamilies is every family client_golang's registry, its Go and
// process collectors and promhttp served before the exposition was
// written by hand, with its type and label names: dashboards and alerts
// written against them keep working.
var wantFamilies = map[string]struct {
	typ    dto.MetricType
	labels string
}{
	"go_gc_duration_seconds":                        {dto.MetricType_SUMMARY, ""},
	"go_gc_gogc_percent":                            {dto.MetricType_GAUGE, ""},
	"go_gc_gomemlimit_bytes":                        {dto.MetricType_GAUGE, ""},
	"go_goroutines":                                 {dto.MetricType_GAUGE, ""},
	"go_info":                                       {dto.MetricType_GAUGE, "version"},
	"go_memstats_alloc_bytes":                       {dto.MetricType_GAUGE, ""},
	"go_memstats_alloc_bytes_total":                 {dto.MetricType_COUNTER, ""},
	"go_memstats_buck_hash_sys_bytes":               {dto.MetricType_GAUGE, ""},
	"go_memstats_frees_total":                       {dto.MetricType_COUNTER, ""},
	"go_memstats_gc_sys_bytes":                      {dto.MetricType_GAUGE, ""},
	"go_memstats_heap_alloc_bytes":                  {dto.MetricType_GAUGE, ""},
	"go_memstats_heap_idle_bytes":                   {dto.MetricType_GAUGE, ""},
	"go_memstats_heap_inuse_bytes":                  {dto.MetricType_GAUGE, ""},
	"go_memstats_heap_objects":                      {dto.MetricType_GAUGE, ""},
	"go_memstats_heap_released_bytes":               {dto.MetricType_GAUGE, ""},
	"go_memstats_heap_sys_bytes":                    {dto.MetricType_GAUGE, ""},
	"go_memstats_last_gc_time_seconds":              {dto.MetricType_GAUGE, ""},
	"go_memstats_mallocs_total":                     {dto.MetricType_COUNTER, ""},
	"go_memstats_mcache_inuse_bytes":                {dto.MetricType_GAUGE, ""},
	"go_memstats_mcache_sys_bytes":                  {dto.MetricType_GAUGE, ""},
	"go_memstats_mspan_inuse_bytes":                 {dto.MetricType_GAUGE, ""},
	"go_memstats_mspan_sys_bytes":                   {dto.MetricType_GAUGE, ""},
	"go_memstats_next_gc_bytes":                     {dto.MetricType_GAUGE, ""},
	"go_memstats_other_sys_bytes":                   {dto.MetricType_GAUGE, ""},
	"go_memstats_stack_inuse_bytes":                 {dto.MetricType_GAUGE, ""},
	"go_memstats_stack_sys_bytes":                   {dto.MetricType_GAUGE, ""},
	"go_memstats_sys_bytes":                         {dto.MetricType_GAUGE, ""},
	"go_sched_gomaxprocs_threads":                   {dto.MetricType_GAUGE, ""},
	"go_threads":                                    {dto.MetricType_GAUGE, ""},
	"process_cpu_seconds_total":                     {dto.MetricType_COUNTER, ""},
	"process_max_fds":                               {dto.MetricType_GAUGE, ""},
	"process_network_receive_bytes_total":           {dto.MetricType_COUNTER, ""},
	"process_network_transmit_bytes_total":          {dto.MetricType_COUNTER, ""},
	"process_open_fds":                              {dto.MetricType_GAUGE, ""},
	"process_resident_memory_bytes":                 {dto.MetricType_GAUGE, ""},
	"process_start_time_seconds":                    {dto.MetricType_GAUGE, ""},
	"process_virtual_memory_bytes":                  {dto.MetricType_GAUGE, ""},
	"process_virtual_memory_max_bytes":              {dto.MetricType_GAUGE, ""},
	"promhttp_metric_handler_errors_total":          {dto.MetricType_COUNTER, "cause"},
	"promhttp_metric_handler_requests_in_flight":    {dto.MetricType_GAUGE, ""},
	"promhttp_metric_handler_requests_total":        {dto.MetricType_COUNTER, "code"},
	"pibridge_build_info":                           {dto.MetricType_GAUGE, "goarch,goversion,version"},
	"pibridge_commands_total":                       {dto.MetricType_COUNTER, "result,source"},
	"pibridge_core_alive":                           {dto.MetricType_GAUGE, ""},
	"pibridge_core_last_reading_timestamp_seconds":  {dto.MetricType_GAUGE, ""},
	"pibridge_core_readings_emitted_total":          {dto.MetricType_COUNTER, ""},
	"pibridge_disk_writer_ahead_total":              {dto.MetricType_COUNTER, ""},
	"pibridge_disk_writer_overflow_total":           {dto.MetricType_COUNTER, ""},
	"pibridge_http_auth_failures_total":             {dto.MetricType_COUNTER, ""},
	"pibridge_mqtt_commands_dropped_total":          {dto.MetricType_COUNTER, ""},
	"pibridge_mqtt_acks_dropped_total":              {dto.MetricType_COUNTER, ""},
	"pibridge_mqtt_commands_total":                  {dto.MetricType_COUNTER, ""},
	"pibridge_mqtt_connected":                       {dto.MetricType_GAUGE, ""},
	"pibridge_mqtt_connects_total":                  {dto.MetricType_COUNTER, ""},
	"pibridge_mqtt_outbox_dropped_total":            {dto.MetricType_COUNTER, ""},
	"pibridge_mqtt_outbox_failing":                  {dto.MetricType_GAUGE, ""},
	"pibridge_mqtt_outbox_log_write_failures_total": {dto.MetricType_COUNTER, ""},
	"pibridge_mqtt_outbox_replayed_total":           {dto.MetricType_COUNTER, ""},
	"pibridge_mqtt_outbox_readings":                 {dto.MetricType_GAUGE, ""},
	"pibridge_mqtt_published_total":                 {dto.MetricType_COUNTER, ""},
	"pibridge_output_commands_total":                {dto.MetricType_COUNTER, "op,result,signal"},
	"pibridge_readings_total":                       {dto.MetricType_COUNTER, "signal"},
	"pibridge_sensor_errors_total":                  {dto.MetricType_COUNTER, "sensor,type"},
	"pibridge_sensor_read_duration_seconds":         {dto.MetricType_GAUGE, "sensor,type"},
	"pibridge_sensor_reads_total":                   {dto.MetricType_COUNTER, "sensor,type"},
	"pibridge_sensor_stale":                         {dto.MetricType_GAUGE, "sensor,type"},
	"pibridge_sensor_up":                            {dto.MetricType_GAUGE, "sensor,type"},
	"pibridge_ws_clients":                           {dto.MetricType_GAUGE, ""},
	"pibridge_ws_slow_clients_closed_total":         {dto.MetricType_COUNTER, ""},
}

// TestSameFamilies: the hand-written exposition parses with Prometheus'
// own parser and carries exactly the families above, each with its type,
// its label names and a help text; the Go and process families hold
// plausible values.
func TestSameFamilies(t *testing.T) {
	m := New(Options{
		Version: "v1", Core: newCore(t),
		MQTT:    func() pibridge.MQTTStats { return pibridge.MQTTStats{} },
		WS:      func() WS { return WS{} },
		Sensors: func() []Sensor { return []Sensor{{Name: "air", Type: "bme280"}} },
		Alive:   func() bool { return true },
	})
	defer m.Close()
	fams := scrape(t, m.Handler())
	for name, want := range wantFamilies {
		f := fams[name]
		if f == nil {
			t.Errorf("no family %s", name)
			continue
		}
		if f.GetType() != want.typ {
			t.Errorf("%s is a %v, want a %v", name, f.GetType(), want.typ)
		}
		if f.GetHelp() == "" {
			t.Errorf("%s has no help", name)
		}
		for _, mm := range f.GetMetric() {
			var names []string
			for _, l := range mm.GetLabel() {
				names = append(names, l.GetName())
			}
			if got := strings.Join(names, ","); got != want.labels {
				t.Errorf("%s labelled %q, want %q", name, got, want.labels)
			}
		}
	}
	for name := range fams {
		if _, ok := wantFamilies[name]; !ok {
			t.Errorf("unexpected family %s", name)
		}
	}
	gc := fams["go_gc_duration_seconds"].GetMetric()[0].GetSummary()
	if len(gc.GetQuantile()) != 5 || gc.GetQuantile()[4].GetQuantile() != 1 {
		t.Errorf("go_gc_duration_seconds quantiles %v, want 0, 0.25, 0.5, 0.75, 1", gc.GetQuantile())
	}
	for _, c := range []struct {
		name     string
		min, max float64
	}{
		{"go_goroutines", 1, 1e6},
		{"go_threads", 1, 1e5},
		{"go_memstats_heap_alloc_bytes", 1, 1 << 40},
		{"go_memstats_sys_bytes", 1 << 20, 1 << 40},
		{"go_gc_gogc_percent", -1, 1e6},
		{"process_resident_memory_bytes", 1 << 20, 1 << 40},
		{"process_open_fds", 3, 1e6},
		{"process_max_fds", 3, 1 << 63},
		{"process_start_time_seconds", float64(time.Now().Add(-24 * time.Hour).Unix()), float64(time.Now().Unix() + 1)},
	} {
		if v := promtest.Value(t, fams, c.name, nil); v < c.min || v > c.max {
			t.Errorf("%s = %v, want within [%v, %v]", c.name, v, c.min, c.max)
		}
	}
}

// TestLabelEscaping: a label value with a quote, a backslash and a newline
// comes back from the parser as it was.
func TestLabelEscaping(t *testing.T) {
	const odd = "v\"1\\2\n3"
	m := New(Options{Version: odd})
	if got := promtest.Value(t, scrape(t, m.Handler()), "pibridge_build_info", map[string]string{"version": odd}); got != 1 {
		t.Fatalf("build info = %v", got)
	}
}

// TestScrapeLimit: a fifth scrape while four are in flight gets a 503, as
// promhttp's MaxRequestsInFlight did, and both outcomes are counted.
func TestScrapeLimit(t *testing.T) {
	entered := make(chan struct{}, maxInFlight)
	release := make(chan struct{})
	var wg sync.WaitGroup
	m := New(Options{Alive: func() bool {
		select {
		case <-release:
			return true
		default:
		}
		entered <- struct{}{}
		<-release
		return true
	}})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	codes := make(chan int, maxInFlight)
	for range maxInFlight {
		wg.Go(func() {
			resp, err := http.Get(srv.URL)
			if err != nil {
				t.Error(err)
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		})
	}
	for range maxInFlight {
		<-entered
	}
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	close(release)
	wg.Wait()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("fifth scrape: %s, want 503", resp.Status)
	}
	for range maxInFlight {
		if c := <-codes; c != http.StatusOK {
			t.Errorf("a scrape within the limit: %d", c)
		}
	}
	fams := scrape(t, m.Handler())
	for code, want := range map[string]float64{"200": maxInFlight, "503": 1, "500": 0} {
		if got := promtest.Value(t, fams, "promhttp_metric_handler_requests_total", map[string]string{"code": code}); got != want {
			t.Errorf("requests_total{code=%q} = %v, want %v", code, got, want)
		}
	}
	if got := promtest.Value(t, fams, "promhttp_metric_handler_requests_in_flight", nil); got != 1 {
		t.Errorf("in flight during a scrape = %v, want 1 (itself)", got)
	}
}

// TestEmptyFamiliesLeftOut: without a core there are no signals, and the
// per-signal families are left out, as client_golang left out a vector
// without children, rather than shown as a bare HELP and TYPE.
func TestEmptyFamiliesLeftOut(t *testing.T) {
	text := string(New(Options{Version: "v"}).AppendText(nil))
	for _, name := range []string{"pibridge_readings_total", "pibridge_output_commands_total"} {
		if strings.Contains(text, name) {
			t.Errorf("family %s shown without a sample", name)
		}
	}
	if !strings.Contains(text, "\npibridge_commands_total{") {
		t.Error("pibridge_commands_total, made up front per door, is missing")
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"pibridge"
	"pibridge/internal/promtest"
	"pibridge/internal/testkit"
)

// TestCoreProbe: alive while the lock is free, not alive while it is held,
// one waiting goroutine however often it is asked, alive again once free.
func TestCoreProbe(t *testing.T) {
	var mu sync.Mutex
	var waiting atomic.Int32
	p := newCoreProbe(func() {
		waiting.Add(1)
		mu.Lock()
		mu.Unlock()
		waiting.Add(-1)
	}, 50*time.Millisecond)
	if !p.Alive() {
		t.Fatal("not alive with the lock free")
	}
	mu.Lock()
	for range 3 {
		if p.Alive() {
			t.Fatal("alive with the lock held")
		}
	}
	if n := waiting.Load(); n != 1 {
		t.Fatalf("%d goroutines wait for the lock, want 1", n)
	}
	mu.Unlock()
	eventually(t, 5*time.Second, "not alive again after the lock came free", p.Alive)
}

// TestWatchdogPetsOnlyWhileAlive drives the watchdog loop tick by tick:
// each tick asks alive once, and pets exactly when the answer is yes. The
// channels are unbuffered, so a pet that should not happen blocks the loop
// and shows up in a select instead of the next step.
func TestWatchdogPetsOnlyWhileAlive(t *testing.T) {
	ticks := make(chan time.Time)
	answers := make(chan bool)
	pets := make(chan struct{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- watchdog(ctx, ticks, func() bool { return <-answers }, func() { pets <- struct{}{} }, slog.New(slog.DiscardHandler))
	}()
	timeout := time.After(10 * time.Second)
	for i, alive := range []bool{true, true, false, false, true, false} {
		select {
		case ticks <- time.Now():
		case <-pets:
			t.Fatalf("tick %d: petted after a tick whose answer was no", i)
		case <-timeout:
			t.Fatal("watchdog loop stopped taking ticks")
		}
		answers <- alive
		if alive {
			select {
			case <-pets:
			case <-timeout:
				t.Fatalf("tick %d: no pet although the core is alive", i)
			}
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-pets:
		t.Fatal("petted after the last tick, whose answer was no")
	case <-timeout:
		t.Fatal("watchdog loop did not return when its context ended")
	}
}

// notifySocket is a fake systemd notify socket: every datagram the bridge
// sends arrives on msgs.
type notifySocket struct {
	path string
	msgs chan string
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	n := &notifySocket{path: filepath.Join(t.TempDir(), "notify"), msgs: make(chan string, 1024)}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	return n
}

// await returns the first message that starts with prefix, skipping others.
func (n *notifySocket) await(t *testing.T, prefix string, within time.Duration) string {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case m := <-n.msgs:
			if strings.HasPrefix(m, prefix) {
				return m
			}
		case <-deadline:
			t.Fatalf("no %q on the notify socket within %v", prefix, within)
		}
	}
}

// blocker is a core subscriber whose Deliver blocks until released: the
// core's Emit path stuck with its lock held.
type blocker struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (b *blocker) Deliver(pibridge.Reading) {
	b.once.Do(func() { close(b.entered) })
	<-b.release
}

func getHealth(t *testing.T, addr string) (int, healthReport) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h healthReport
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, h
}

// TestSystemdNotifyAndStuckCore runs the demo as systemd would, with a fake
// NOTIFY_SOCKET and a 200 ms WatchdogSec: READY=1 arrives, WATCHDOG=1
// keeps coming while the core is alive, stops while its Emit path is stuck
// (and /healthz says degraded, /metrics pibridge_core_alive 0), resumes
// once it is free, and STOPPING=1 arrives at shutdown.
func TestSystemdNotifyAndStuckCore(t *testing.T) {
	sock := listenNotify(t)
	b := startDemoEnv(t, map[string]string{
		"NOTIFY_SOCKET": sock.path,
		"WATCHDOG_USEC": "200000",
		"WATCHDOG_PID":  strconv.Itoa(os.Getpid()),
	})

	ready := sock.await(t, "READY=1", 10*time.Second)
	if !strings.Contains(ready, "STATUS=panel on "+b.http) {
		t.Errorf("READY message %q has no STATUS with the panel address", ready)
	}
	sock.await(t, "WATCHDOG=1", 5*time.Second)
	if code, h := getHealth(t, b.http); code != http.StatusOK || h.Status != "ok" || h.Core != "ok" {
		t.Fatalf("/healthz = %d %+v with a live core", code, h)
	}

	// Stick the core: the next Emit blocks in Deliver with the lock held.
	stuck := &blocker{entered: make(chan struct{}), release: make(chan struct{})}
	_, cancel := b.core.Subscribe(stuck)
	go b.core.Emit("air.temperature", pibridge.Number(20), time.Time{})
	<-stuck.entered
	released := false
	release := func() {
		if !released {
			released = true
			close(stuck.release)
			cancel()
		}
	}
	defer release()

	code, h := getHealth(t, b.http) // takes probeTimeout
	if code != http.StatusServiceUnavailable || h.Status != "degraded" || h.Core != "stuck" {
		t.Fatalf("/healthz = %d %+v with a stuck core, want 503 degraded", code, h)
	}
	if v := promtest.Value(t, scrapeMetrics(t, b.http), "pibridge_core_alive", nil); v != 0 {
		t.Errorf("pibridge_core_alive = %v with a stuck core", v)
	}
	// Every pet sent before the probe gave up is in the socket by now;
	// from here on, none may come while the core stays stuck.
	for len(sock.msgs) > 0 {
		<-sock.msgs
	}
	window := time.After(3 * probeTimeout / 2)
quiet:
	for {
		select {
		case m := <-sock.msgs:
			if strings.HasPrefix(m, "WATCHDOG=1") {
				t.Fatal("WATCHDOG=1 while the core is stuck")
			}
		case <-window:
			break quiet
		}
	}

	release()
	sock.await(t, "WATCHDOG=1", 5*time.Second)
	eventually(t, 5*time.Second, "/healthz not ok again after the core came free", func() bool {
		code, h := getHealth(t, b.http)
		return code == http.StatusOK && h.Core == "ok"
	})

	b.stop()
	sock.await(t, "STOPPING=1", 5*time.Second)
	if err := <-b.done; err != nil {
		t.Fatalf("run: %v", err)
	}
	b.done <- nil // for the cleanup
}

func scrapeMetrics(t *testing.T, addr string) promtest.Families {
	t.Helper()
	return promtest.Get(t, "http://"+addr+"/metrics")
}

// TestMetricsScrape scrapes /metrics of the running demo bridge after some
// traffic and checks the families and values that traffic must show.
func TestMetricsScrape(t *testing.T) {
	b := startDemo(t)
	ws := dialWS(t, b.http)
	ws.Send(t, `{"type":"set","id":"m1","name":"led","value":true}`)
	ws.waitFor(t, "ack m1", func(f testkit.Frame) bool { return f.ID == "m1" })
	ws.Send(t, `{"type":"pulse","id":"m2","name":"relay","for":"11m"}`) // longer than max_on: the board refuses
	ws.waitFor(t, "ack m2", func(f testkit.Frame) bool { return f.ID == "m2" })
	ws.Send(t, `{"type":"set","id":"m3","name":"nope","value":true}`)
	ws.waitFor(t, "ack m3", func(f testkit.Frame) bool { return f.ID == "m3" })
	ws.Send(t, `{"type":"set","id":"m4","name":"led","value":"maybe"}`)
	ws.waitFor(t, "ack m4", func(f testkit.Frame) bool { return f.ID == "m4" })
	// Refused by the MQTT door before the core sees it: a value that does
	// not parse. Its ack keeps the id.
	mq := watchMQTT(t, b.mqtt, "pibridge/demo/ack")
	mq.publish(t, "pibridge/demo/led/set", `{"value":"x","id":"q1"}`, false)
	eventually(t, 10*time.Second, "no refusal ack q1 on MQTT", func() bool {
		return mq.find(func(topic string, p []byte, _ bool) bool {
			return bytes.Contains(p, []byte(`"id":"q1"`)) && bytes.Contains(p, []byte(`"ok":false`))
		})
	})
	eventually(t, 10*time.Second, "no sensor read yet", func() bool {
		for _, s := range b.board.SensorStats() {
			if s.Reads == 0 {
				return false
			}
		}
		return true
	})

	fams := scrapeMetrics(t, b.http)
	if v := promtest.Value(t, fams, "pibridge_build_info", map[string]string{"version": version}); v != 1 {
		t.Errorf("pibridge_build_info = %v", v)
	}
	for name := range demoSignals {
		if _, err := promtest.Find(fams, "pibridge_readings_total", map[string]string{"signal": name}); err != nil {
			t.Error(err)
		}
	}
	if v := promtest.Value(t, fams, "pibridge_readings_total", map[string]string{"signal": "led"}); v < 2 {
		t.Errorf("led readings = %v: the initial state and the set's echo make 2", v)
	}
	checks := []struct {
		name   string
		labels map[string]string
		ok     func(float64) bool
		want   string
	}{
		{"pibridge_core_alive", nil, is(1), "1"},
		{"pibridge_core_readings_emitted_total", nil, atLeast(len(demoSignals)), "a reading per signal at least"},
		{"pibridge_mqtt_connected", nil, is(1), "1"},
		{"pibridge_mqtt_outbox_readings", nil, atLeast(0), "present"},
		{"pibridge_mqtt_outbox_dropped_total", nil, is(0), "0"},
		{"pibridge_mqtt_outbox_failing", nil, is(0), "0"},
		{"pibridge_mqtt_outbox_log_write_failures_total", nil, is(0), "0"},
		{"pibridge_mqtt_outbox_replayed_total", nil, is(0), "0 (a fresh state dir)"},
		{"pibridge_mqtt_published_total", nil, atLeast(1), "≥ 1"},
		{"pibridge_mqtt_connects_total", nil, is(1), "1"},
		{"pibridge_ws_clients", nil, is(1), "1"},
		{"pibridge_ws_slow_clients_closed_total", nil, is(0), "0"},
		{"pibridge_http_auth_failures_total", nil, is(0), "0"},
		{"pibridge_output_commands_total", map[string]string{"signal": "led", "op": "set", "result": "ok"}, is(1), "1"},
		{"pibridge_output_commands_total", map[string]string{"signal": "relay", "op": "pulse", "result": "error"}, is(1), "1"},
		{"pibridge_output_commands_total", map[string]string{"signal": "fan", "op": "set", "result": "ok"}, is(0), "0"},
		{"pibridge_commands_total", map[string]string{"source": "ws", "result": "ok"}, is(1), "1"},
		{"pibridge_commands_total", map[string]string{"source": "ws", "result": "refused"}, is(3), "3 (the pulse beyond max_on, the unknown signal, a value that does not parse)"},
		{"pibridge_commands_total", map[string]string{"source": "ws", "result": "error"}, is(0), "0"},
		{"pibridge_commands_total", map[string]string{"source": "mqtt", "result": "ok"}, is(0), "0"},
		{"pibridge_commands_total", map[string]string{"source": "mqtt", "result": "refused"}, is(1), "1 (a value that does not parse)"},
		{"pibridge_sensor_reads_total", map[string]string{"sensor": "air", "type": "bme280"}, atLeast(1), "≥ 1"},
		{"pibridge_sensor_up", map[string]string{"sensor": "air"}, is(1), "1"},
		{"pibridge_sensor_up", map[string]string{"sensor": "cpu", "type": "cpu_temp"}, is(1), "1"},
		{"pibridge_sensor_errors_total", map[string]string{"sensor": "cpu"}, is(0), "0"},
		{"pibridge_sensor_stale", map[string]string{"sensor": "air"}, is(0), "0"},
		{"pibridge_sensor_read_duration_seconds", map[string]string{"sensor": "air"}, atLeast(0), "present"},
		{"go_goroutines", nil, atLeast(1), "≥ 1"},
		{"process_resident_memory_bytes", nil, atLeast(1), "≥ 1"},
	}
	for _, c := range checks {
		v, err := promtest.Find(fams, c.name, c.labels)
		if err != nil {
			t.Error(err)
			continue
		}
		if !c.ok(v) {
			t.Errorf("%s%v = %v, want %s", c.name, c.labels, v, c.want)
		}
	}
	if fams["pibridge_readings_total"].GetType() != dto.MetricType_COUNTER || fams["pibridge_ws_clients"].GetType() != dto.MetricType_GAUGE {
		t.Error("wrong metric types: readings must be a counter, clients a gauge")
	}
}

func is(want float64) func(float64) bool { return func(v float64) bool { return v == want } }
func atLeast(n int) func(float64) bool   { return func(v float64) bool { return v >= float64(n) } }

// TestMetricsAndHealthzNeedNoToken: with a token set, /metrics and /healthz
// still answer without one, while /api/state refuses; the wrong
// token shows in pibridge_http_auth_failures_total.
func TestMetricsAndHealthzNeedNoToken(t *testing.T) {
	const token = "metrics-test-token-0123456789abcdef"
	b := panelBridge(t, t, freeAddr(t), freeAddr(t), t.TempDir(), "-config", panelConfig(t, token, ""))
	for _, bearer := range []string{"", "wrong-token"} {
		req, _ := http.NewRequest("GET", "http://"+b.http+"/api/state", nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("/api/state with token %q: %s, want 401", bearer, resp.Status)
		}
	}
	if code, h := getHealth(t, b.http); code != http.StatusOK || h.Status != "ok" {
		t.Fatalf("/healthz without a token: %d %+v", code, h)
	}
	if v := promtest.Value(t, scrapeMetrics(t, b.http), "pibridge_http_auth_failures_total", nil); v != 1 {
		t.Errorf("pibridge_http_auth_failures_total = %v after one wrong token (a missing one is no failure)", v)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"pibridge"
	"pibridge/gpio"
	"pibridge/internal/testkit"
)

var freeAddr = testkit.FreeAddr

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, within, what, cond)
}

// bridgeUnderTest is the demo bridge started through run on free ports.
type bridgeUnderTest struct {
	http, mqtt string
	board      *gpio.Board
	core       *pibridge.Core
	stop       context.CancelFunc
	done       chan error
	logs       *syncBuffer
}

type syncBuffer = testkit.LockedBuffer

func startDemo(t *testing.T) *bridgeUnderTest {
	t.Helper()
	return startDemoEnv(t, nil)
}

// startDemoEnv starts the demo with extra environment variables for run.
func startDemoEnv(t *testing.T, extra map[string]string) *bridgeUnderTest {
	t.Helper()
	b := &bridgeUnderTest{http: freeAddr(t), mqtt: freeAddr(t), done: make(chan error, 1), logs: &syncBuffer{}}
	env := map[string]string{
		"PIBRIDGE_HTTP_LISTEN":          b.http,
		"PIBRIDGE_MQTT_EMBEDDED_LISTEN": b.mqtt,
		"PIBRIDGE_STATE_DIR":            t.TempDir(),
	}
	maps.Copy(env, extra)
	ready := make(chan struct{})
	started = func(board *gpio.Board, core *pibridge.Core) {
		b.board, b.core = board, core
		close(ready)
	}
	t.Cleanup(func() { started = nil })
	ctx, cancel := context.WithCancel(context.Background())
	b.stop = cancel
	go func() {
		b.done <- run(ctx, []string{"-log-level", "debug"}, func(k string) string { return env[k] }, io.Discard, b.logs)
	}()
	select {
	case <-ready:
	case err := <-b.done:
		t.Fatalf("run ended before starting: %v\n%s", err, b.logs)
	case <-time.After(10 * time.Second):
		t.Fatalf("bridge did not start\n%s", b.logs)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-b.done:
		case <-time.After(10 * time.Second):
			t.Errorf("bridge did not stop")
		}
		if t.Failed() {
			t.Logf("bridge log:\n%s", b.logs)
		}
	})
	eventually(t, 10*time.Second, "/healthz never reported MQTT connected", func() bool {
		resp, err := http.Get("http://" + b.http + "/healthz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var h healthReport
		return json.NewDecoder(resp.Body).Decode(&h) == nil && h.Status == "ok" && h.MQTT == "connected"
	})
	return b
}

// mqttWatcher is an independent paho subscriber recording everything.
type mqttWatcher struct {
	client paho.Client
	mu     sync.Mutex
	msgs   []paho.Message
}

func watchMQTT(t *testing.T, addr, filter string) *mqttWatcher {
	t.Helper()
	w := &mqttWatcher{}
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(fmt.Sprintf("watcher-%d", time.Now().UnixNano())).
		SetConnectTimeout(5 * time.Second)
	w.client = paho.NewClient(opts)
	if tok := w.client.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("watcher connect: %v", tok.Error())
	}
	tok := w.client.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		w.mu.Lock()
		w.msgs = append(w.msgs, m)
		w.mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("watcher subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { w.client.Disconnect(100) })
	return w
}

func (w *mqttWatcher) find(match func(topic string, payload []byte, retained bool) bool) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, m := range w.msgs {
		if match(m.Topic(), m.Payload(), m.Retained()) {
			return true
		}
	}
	return false
}

func (w *mqttWatcher) publish(t *testing.T, topic, payload string, retained bool) {
	t.Helper()
	tok := w.client.Publish(topic, 1, retained, payload)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// wsClient is a /ws connection past its hello, read by the kit.
type wsClient struct {
	*testkit.Frames
	hello map[string]any
}

func dialWS(t *testing.T, addr string) *wsClient {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", nil)
	if err != nil {
		t.Fatalf("dial /ws: %v (%v)", err, resp)
	}
	c := &wsClient{}
	if err := conn.ReadJSON(&c.hello); err != nil {
		conn.Close()
		t.Fatalf("reading hello: %v", err)
	}
	c.Frames = testkit.ReadFrames(t, conn)
	return c
}

// waitFor returns the first frame that matches.
func (c *wsClient) waitFor(t *testing.T, what string, match func(testkit.Frame) bool) testkit.Frame {
	t.Helper()
	return c.Await(t, 5*time.Second, "WebSocket never got "+what, match)
}

func pinLevel(t *testing.T, b *bridgeUnderTest, name string) bool {
	t.Helper()
	v, ok := b.board.Level(name)
	if !ok {
		t.Fatalf("no pin for %s", name)
	}
	return v.Bool()
}

var demoSignals = map[string]string{
	"button": "input", "door": "input", "led": "output", "relay": "output", "fan": "pwm",
	"air.temperature": "sensor", "air.humidity": "sensor", "air.pressure": "sensor", "cpu.temperature": "sensor",
}

func TestDemoEndToEnd(t *testing.T) {
	b := startDemo(t)
	watcher := watchMQTT(t, b.mqtt, "pibridge/demo/#")
	watcherLab := watchMQTT(t, b.mqtt, "lab/#")

	// Every signal has a state before the test looks at hello.
	eventually(t, 10*time.Second, "not every demo signal has a reading", func() bool {
		return len(b.core.State()) == len(demoSignals)
	})
	ws := dialWS(t, b.http)

	t.Run("hello lists every demo signal with state", func(t *testing.T) {
		if ws.hello["type"] != "hello" || ws.hello["protocol"] != float64(1) {
			t.Fatalf("first frame is not a hello: %v", ws.hello)
		}
		dev, _ := ws.hello["device"].(map[string]any)
		if dev["id"] != "demo" || dev["name"] != "pibridge demo" {
			t.Fatalf("device = %v", dev)
		}
		sigs, _ := ws.hello["signals"].([]any)
		got := map[string]string{}
		for _, s := range sigs {
			m := s.(map[string]any)
			got[m["name"].(string)] = m["kind"].(string)
			if writable := m["kind"] == "output" || m["kind"] == "pwm"; m["writable"] != writable {
				t.Errorf("%v: writable = %v", m["name"], m["writable"])
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(demoSignals) {
			t.Fatalf("hello signals = %v, want %v", got, demoSignals)
		}
		state, _ := ws.hello["state"].(map[string]any)
		for name := range demoSignals {
			r, ok := state[name].(map[string]any)
			if !ok || r["seq"] == nil || r["ts"] == nil || r["value"] == nil {
				t.Errorf("hello state[%s] = %v", name, state[name])
			}
		}
	})

	t.Run("readings arrive on both sides with the same seq", func(t *testing.T) {
		r := ws.waitFor(t, "an air.temperature reading", func(f testkit.Frame) bool {
			return f.Type == "reading" && f.Name == "air.temperature"
		})
		eventually(t, 5*time.Second, fmt.Sprintf("MQTT never carried seq %d", r.Seq), func() bool {
			return watcher.find(func(topic string, p []byte, _ bool) bool {
				var m testkit.Frame
				return topic == "pibridge/demo/air/temperature" &&
					json.Unmarshal(p, &m) == nil && m.Seq == r.Seq && string(m.Value) == string(r.Value) && m.Unit == "°C"
			})
		})
		// State topics are retained: a newcomer gets the latest at once.
		late := watchMQTT(t, b.mqtt, "pibridge/demo/led")
		eventually(t, 5*time.Second, "no retained led state for a new subscriber", func() bool {
			return late.find(func(_ string, p []byte, retained bool) bool {
				return retained && bytes.Contains(p, []byte(`"seq":`))
			})
		})
	})

	t.Run("WebSocket set moves the pin, is acked and echoed on MQTT", func(t *testing.T) {
		if pinLevel(t, b, "led") {
			t.Fatal("led starts on; the demo says initial off")
		}
		ws.Send(t, `{"type":"set","id":"c1","name":"led","value":true}`)
		ack := ws.waitFor(t, "ack c1", func(f testkit.Frame) bool { return f.Type == "ack" && f.ID == "c1" })
		if ack.OK == nil || !*ack.OK {
			t.Fatalf("ack = %+v", ack)
		}
		if !pinLevel(t, b, "led") {
			t.Fatal("led pin is still low after an acked set")
		}
		eventually(t, 5*time.Second, "no led echo on MQTT", func() bool {
			return watcher.find(func(topic string, p []byte, _ bool) bool {
				return topic == "pibridge/demo/led" && bytes.Contains(p, []byte(`"value":true`))
			})
		})
	})

	t.Run("MQTT set is echoed on the WebSocket and acked on MQTT", func(t *testing.T) {
		watcher.publish(t, "pibridge/demo/led/set", `{"value":"off","id":"m1"}`, false)
		ws.waitFor(t, "led off echo", func(f testkit.Frame) bool {
			return f.Type == "reading" && f.Name == "led" && string(f.Value) == "false"
		})
		if pinLevel(t, b, "led") {
			t.Fatal("led pin still high after MQTT off")
		}
		eventually(t, 5*time.Second, "no MQTT ack for m1", func() bool {
			return watcher.find(func(topic string, p []byte, retained bool) bool {
				return topic == "pibridge/demo/ack" && !retained && string(p) == `{"id":"m1","name":"led","ok":true}`
			})
		})
		watcher.publish(t, "pibridge/demo/fan/set", "0.25", false)
		eventually(t, 5*time.Second, "fan duty not set from MQTT", func() bool {
			v, _ := b.board.Level("fan")
			return v.Float() == 0.25
		})
	})

	t.Run("bad commands are refused with a clear error and move nothing", func(t *testing.T) {
		before := map[string]bool{"led": pinLevel(t, b, "led"), "relay": pinLevel(t, b, "relay")}
		tests := []struct{ msg, id, wantErr string }{
			{`{"type":"set","id":"b1","name":"nope","value":true}`, "b1", "nope: no such signal"},
			{`{"type":"set","id":"b2","name":"air.temperature","value":1}`, "b2", "air.temperature: not writable: it is a sensor"},
			{`{"type":"set","id":"b3","name":"button","value":true}`, "b3", "button: not writable: it is an input"},
			{`{"type":"set","id":"b4","name":"led","value":0.5}`, "b4", "led: bad value 0.5: an output takes on, off, true, false, 1, 0 or toggle"},
			{`{"type":"set","id":"b5","name":"relay","value":"maybe"}`, "b5", `bad value "maybe": want on, off, true, false, toggle or a number`},
			{`{"type":"set","id":"b6","name":"fan","value":2}`, "b6", "fan: bad value 2: a pwm takes a number from 0 to 1"},
		}
		for _, tt := range tests {
			ws.Send(t, tt.msg)
			reply := ws.waitFor(t, "reply "+tt.id, func(f testkit.Frame) bool { return f.ID == tt.id })
			if (reply.OK != nil && *reply.OK) || !strings.Contains(reply.Error, tt.wantErr) {
				t.Errorf("%s: reply %+v, want error containing %q", tt.msg, reply, tt.wantErr)
			}
			if n := ws.Count(func(f testkit.Frame) bool { return f.ID == tt.id }); n != 1 {
				t.Errorf("%s: %d replies, want exactly 1", tt.msg, n)
			}
		}
		watcher.publish(t, "pibridge/demo/air/set", `{"value":1,"id":"mb1"}`, false)
		eventually(t, 5*time.Second, "no MQTT ack refusing a sensor write", func() bool {
			return watcher.find(func(topic string, p []byte, _ bool) bool {
				var a struct {
					ID    string `json:"id"`
					OK    bool   `json:"ok"`
					Error string `json:"error"`
				}
				return topic == "pibridge/demo/ack" && json.Unmarshal(p, &a) == nil && a.ID == "mb1" && !a.OK && a.Error != ""
			})
		})
		for name, level := range before {
			if pinLevel(t, b, name) != level {
				t.Errorf("%s moved on a refused command", name)
			}
		}
	})

	t.Run("MQTT passthrough inside bridge_allow, refused outside", func(t *testing.T) {
		ws.Send(t, `{"type":"subscribe","id":"s1","topics":["lab/#"]}`)
		if ack := ws.waitFor(t, "ack s1", func(f testkit.Frame) bool { return f.ID == "s1" }); ack.OK == nil || !*ack.OK {
			t.Fatalf("subscribe inside bridge_allow refused: %+v", ack)
		}
		watcherLab.publish(t, "lab/bench/temp", "19.5", false)
		ws.waitFor(t, "the MQTT message as a frame", func(f testkit.Frame) bool {
			return f.Type == "mqtt" && f.Topic == "lab/bench/temp" && f.Payload == "19.5"
		})
		ws.Send(t, `{"type":"publish","id":"p1","topic":"lab/lamp/set","payload":"on","retain":false}`)
		if ack := ws.waitFor(t, "ack p1", func(f testkit.Frame) bool { return f.ID == "p1" }); ack.OK == nil || !*ack.OK {
			t.Fatalf("publish inside bridge_allow refused: %+v", ack)
		}
		eventually(t, 5*time.Second, "the browser's publish on MQTT", func() bool {
			return watcherLab.find(func(topic string, p []byte, _ bool) bool { return topic == "lab/lamp/set" && string(p) == "on" })
		})
		for _, msg := range []string{
			`{"type":"subscribe","id":"s2","topics":["#"]}`,
			`{"type":"publish","id":"p2","topic":"pibridge/demo/relay/set","payload":"on"}`,
		} {
			ws.Send(t, msg)
		}
		for _, id := range []string{"s2", "p2"} {
			reply := ws.waitFor(t, "reply "+id, func(f testkit.Frame) bool { return f.ID == id })
			if reply.OK != nil && *reply.OK {
				t.Errorf("%s outside bridge_allow accepted", id)
			}
		}
		if pinLevel(t, b, "relay") {
			t.Fatal("relay moved by a publish outside bridge_allow")
		}
	})

	t.Run("SIGTERM: safe state, offline, exit 0 within 5 s", func(t *testing.T) {
		ws.Send(t, `{"type":"set","id":"on","name":"relay","value":true}`)
		ws.waitFor(t, "ack on", func(f testkit.Frame) bool { return f.ID == "on" })
		if !pinLevel(t, b, "relay") {
			t.Fatal("relay not on")
		}
		start := time.Now()
		b.stop()
		select {
		case err := <-b.done:
			if err != nil {
				t.Fatalf("run returned %v", err)
			}
			b.done <- nil // for the cleanup
		case <-time.After(5 * time.Second):
			t.Fatal("bridge still running 5 s after SIGTERM")
		}
		t.Logf("stopped in %v", time.Since(start))
		if pinLevel(t, b, "relay") {
			t.Error("relay still on after shutdown; safe is off")
		}
		// The broker forwards the retained offline before it closes.
		eventually(t, 3*time.Second, "no offline status on MQTT", func() bool {
			return watcher.find(func(topic string, p []byte, _ bool) bool {
				return topic == "pibridge/demo/status" && string(p) == "offline"
			})
		})
	})
}

// TestFailsafe: with no broker and no panel an output with failsafe_after
// goes to its safe state by itself; while the broker is connected it does
// not, which shows that run keeps the board told who is there.
func TestFailsafe(t *testing.T) {
	for _, tt := range []struct {
		name      string
		broker    bool
		wantSafed bool
	}{
		{name: "nobody there", broker: false, wantSafed: true},
		{name: "broker connected", broker: true, wantSafed: false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mqttAddr := freeAddr(t)
			broker := fmt.Sprintf("tcp://%s", mqttAddr)
			if tt.broker {
				broker = "embedded"
			}
			cfg := filepath.Join(t.TempDir(), "config.yaml")
			yaml := fmt.Sprintf(`device: {id: fs}
board: sim
http: {listen: %q}
mqtt: {broker: %q, embedded_listen: %q}
outputs:
  - {name: pump, pin: GPIO22, initial: on, safe: off, failsafe_after: 500ms}
`, freeAddr(t), broker, mqttAddr)
			if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			var board *gpio.Board
			ready := make(chan struct{})
			started = func(b *gpio.Board, _ *pibridge.Core) { board = b; close(ready) }
			t.Cleanup(func() { started = nil })
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			logs := &syncBuffer{}
			go func() {
				done <- run(ctx, []string{"-config", cfg}, envOf(map[string]string{"PIBRIDGE_STATE_DIR": t.TempDir()}), io.Discard, logs)
			}()
			t.Cleanup(func() {
				cancel()
				<-done
				if t.Failed() {
					t.Logf("bridge log:\n%s", logs)
				}
			})
			<-ready
			pumpOn := func() bool { v, _ := board.Level("pump"); return v.Bool() }
			if tt.wantSafed {
				eventually(t, 10*time.Second, "pump never reached its safe state with nobody connected", func() bool { return !pumpOn() })
				return
			}
			// Nothing is to happen here, so the test watches for a window
			// of three failsafe periods.
			until := time.Now().Add(1500 * time.Millisecond)
			for time.Now().Before(until) {
				if !pumpOn() {
					t.Fatal("pump went to its safe state although the broker was connected")
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

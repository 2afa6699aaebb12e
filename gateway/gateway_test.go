package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"pibridge/internal/promtest"
	"pibridge/internal/testkit"
)

// fakeDevice is a device made of MQTT messages: retained meta, status and
// readings, and an answer to every /set with an ack and the echo.
type fakeDevice struct {
	id  string
	c   paho.Client
	mu  sync.Mutex
	seq uint64
	set map[string]string // last value set per signal
}

const fakeMeta = `{"device":{"id":"%s","name":"Fake %s","version":"v1"},"signals":[{"name":"led","kind":"output","writable":true},{"name":"air.temperature","kind":"sensor","unit":"°C","writable":false}],"run":{"first_seq":1,"previous_last_seq":0,"clean":true}}`

func startFakeDevice(t *testing.T, broker, id string) *fakeDevice {
	t.Helper()
	f := &fakeDevice{id: id, set: map[string]string{}}
	opts := paho.NewClientOptions().AddBroker("tcp://"+broker).SetClientID("fake-"+id).
		SetWill("pibridge/"+id+"/status", "offline", 1, true)
	f.c = paho.NewClient(opts)
	if tok := f.c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("fake %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { f.c.Disconnect(50) })
	commands := make(chan paho.Message, 256)
	tok := f.c.Subscribe("pibridge/"+id+"/+/set", 1, func(_ paho.Client, m paho.Message) { commands <- m })
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-commands:
				f.answer(m)
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	f.pub(t, "meta", fmt.Sprintf(fakeMeta, id, id), true)
	f.pub(t, "status", "online", true)
	f.reading(t, "air/temperature", "21.5")
	return f
}

func (f *fakeDevice) pub(t *testing.T, tail, payload string, retained bool) {
	t.Helper()
	if tok := f.c.Publish("pibridge/"+f.id+"/"+tail, 1, retained, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", tail, tok.Error())
	}
}

func (f *fakeDevice) reading(t *testing.T, tail, value string) {
	f.mu.Lock()
	f.seq++
	p := fmt.Sprintf(`{"value":%s,"ts":"%s","seq":%d}`, value, time.Now().UTC().Format("2006-01-02T15:04:05.000Z"), f.seq)
	f.mu.Unlock()
	f.pub(t, tail, p, true)
}

func (f *fakeDevice) answer(m paho.Message) {
	var cmd struct {
		Value json.RawMessage
		ID    string
	}
	json.Unmarshal(m.Payload(), &cmd)
	name := strings.TrimSuffix(strings.TrimPrefix(m.Topic(), "pibridge/"+f.id+"/"), "/set")
	f.mu.Lock()
	f.set[name] = string(cmd.Value)
	f.seq++
	echo := fmt.Sprintf(`{"value":%s,"ts":"%s","seq":%d}`, cmd.Value, time.Now().UTC().Format("2006-01-02T15:04:05.000Z"), f.seq)
	f.mu.Unlock()
	f.c.Publish("pibridge/"+f.id+"/"+name, 1, true, echo)
	f.c.Publish("pibridge/"+f.id+"/ack", 1, false, fmt.Sprintf(`{"id":%q,"name":%q,"ok":true}`, cmd.ID, name))
}

// testConfig is Defaults, as the wiring derives it, on a free loopback
// port with one broker.
func testConfig(broker, token, readToken string) Config {
	c := Defaults()
	c.Derive(DefaultTopicPrefix)
	c.HTTP.Listen, c.HTTP.Token, c.HTTP.ReadToken = "127.0.0.1:0", token, readToken
	c.MQTT.Brokers = []string{broker}
	return c
}

func startGateway(t *testing.T, broker string) (*Gateway, func()) {
	t.Helper()
	g, err := New(testConfig("tcp://"+broker, "none", ""), Deps{})
	if err != nil {
		t.Fatal(err)
	}
	stop := testkit.Start(t, 10*time.Second, g.Run)
	return g, stop
}

// TestGatewayConcurrent runs the gateway in this process (under -race)
// with fake devices: browsers sending commands at the same time each get
// exactly their acks, a status change reaches the fleet socket, a meta
// change closes the device's browsers with 1012, and Run ends with every
// connection closed.
func TestGatewayConcurrent(t *testing.T) {
	mosq := testkit.RunMosquitto(t, testkit.MosquittoOptions{})
	devs := []*fakeDevice{startFakeDevice(t, mosq.Addr, "d1"), startFakeDevice(t, mosq.Addr, "d2")}
	g, stop := startGateway(t, mosq.Addr)
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()
	testkit.Eventually(t, 10*time.Second, "two online devices", func() bool {
		n := 0
		for _, d := range g.Devices() {
			if d.Online {
				n++
			}
		}
		return n == 2
	})
	base := "ws://" + g.Addr().String()
	fleet, _, err := websocket.DefaultDialer.Dial(base+"/fleet/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	var first testkit.Frame
	if err := fleet.ReadJSON(&first); err != nil || first.Type != "fleet" || len(first.Devices) != 2 {
		t.Fatalf("fleet first frame %+v (%v)", first, err)
	}

	const browsers, perBrowser = 4, 20
	conns := make([]*websocket.Conn, browsers)
	var wg sync.WaitGroup
	for b := range browsers {
		c, _, err := websocket.DefaultDialer.Dial(base+"/d/d1/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		conns[b] = c
		var hello map[string]any
		if err := c.ReadJSON(&hello); err != nil || hello["type"] != "hello" || hello["run"] == nil {
			t.Fatalf("hello %v (%v); want the meta's run in it", hello, err)
		}
		wg.Go(func() {
			for i := range perBrowser {
				c.WriteJSON(map[string]any{"type": "set", "id": fmt.Sprintf("b%d-%d", b, i), "name": "led", "value": i%2 == 0})
			}
			acks := map[string]bool{}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			for len(acks) < perBrowser {
				var f testkit.Frame
				if err := c.ReadJSON(&f); err != nil {
					t.Errorf("browser %d: %v after %d acks", b, err, len(acks))
					return
				}
				if f.Type == "ack" {
					if !strings.HasPrefix(f.ID, fmt.Sprintf("b%d-", b)) || f.OK == nil || !*f.OK || acks[f.ID] {
						t.Errorf("browser %d got ack %+v", b, f)
					}
					acks[f.ID] = true
				}
			}
		})
	}
	wg.Wait()

	devs[1].pub(t, "status", "offline", true)
	fleet.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		var f testkit.Frame
		if err := fleet.ReadJSON(&f); err != nil {
			t.Fatalf("fleet socket: %v before d2 went offline", err)
		}
		if f.Type == "device" && f.ID == "d2" && f.Status == "offline" {
			break
		}
	}

	devs[0].pub(t, "meta", strings.Replace(fmt.Sprintf(fakeMeta, "d1", "d1"), `"v1"`, `"v2"`, 1), true)
	for b, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				if !websocket.IsCloseError(err, websocket.CloseServiceRestart) {
					t.Errorf("browser %d after a meta change: %v; want close 1012", b, err)
				}
				break
			}
		}
		c.Close()
	}
	fams := promtest.Get(t, "http://"+g.Addr().String()+"/metrics")
	if got := promtest.Value(t, fams, "pibridge_gateway_commands_total", map[string]string{"result": "ok"}); got != browsers*perBrowser {
		t.Errorf("commands ok = %v; want %d", got, browsers*perBrowser)
	}
	if got := promtest.Value(t, fams, "pibridge_gateway_devices", map[string]string{"status": "online"}); got != 1 {
		t.Errorf("devices online = %v; want 1 (d2 went offline)", got)
	}
	stop()
	stopped = true
	fleet.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := fleet.ReadMessage(); err != nil {
			if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
				t.Errorf("fleet socket at shutdown: %v; want 1001", err)
			}
			break
		}
	}
}

// TestConfigValidate names every bad field of the section.
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		edit func(*Config)
		want string
	}{
		{func(*Config) {}, ""},
		{func(c *Config) { c.TopicPrefix = "$SYS" }, `gateway.topic_prefix: "$SYS": must not start with $`},
		{func(c *Config) { c.TopicPrefix = "a//b" }, `gateway.topic_prefix: "a//b": must not start or end with / or hold an empty level`},
		{func(c *Config) { c.History = 1 }, "gateway.history: 1ns: must be from 1m to 24h0m0s"},
		{func(c *Config) { c.MaxDevices = -2 }, "gateway.max_devices: -2: must not be negative"},
		// An explicit zero is a value like any other, not "the default".
		{func(c *Config) { c.History, c.CommandTimeout, c.MaxDevices, c.Name = 0, 0, 0, "" }, "gateway.name: must not be empty\n" +
			"gateway.history: 0s: must be from 1m to 24h0m0s\ngateway.command_timeout: 0s: must be from 10ms to 1m0s\ngateway.max_devices: 0: must be at least 1"},
		{func(c *Config) { c.TopicPrefix = "" }, `gateway.topic_prefix: "": must not be empty`},
	} {
		c := Defaults()
		c.Derive(DefaultTopicPrefix)
		tc.edit(&c)
		err := c.Validate()
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("%+v: %q; want %q", c, got, tc.want)
		}
	}
	noBroker := testConfig("", "none", "")
	noBroker.MQTT.Brokers = nil
	if _, err := New(noBroker, Deps{}); err == nil || !strings.Contains(err.Error(), "mqtt.broker") {
		t.Errorf("New without brokers: %v; want an error naming mqtt.broker", err)
	}
}

// TestHandleOrder feeds the device table directly: retained topics arrive
// in any order, an ack counts only from the device commanded, and an
// empty retained meta removes the device.
func TestHandleOrder(t *testing.T) {
	g, err := New(testConfig("tcp://127.0.0.1:1", "none", ""), Deps{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.ln.Close() })
	msg := func(topic, payload string, retained bool) {
		g.handle(inMsg{topic: topic, payload: []byte(payload), retained: retained})
	}

	msg("pibridge/d3/status", "online", true)
	msg("pibridge/d3/air/temperature", `{"value":21.5,"unit":"°C","ts":"2026-01-01T00:00:00.000Z","seq":4}`, true)
	if len(g.Devices()) != 0 {
		t.Fatalf("listed before its meta: %+v", g.Devices())
	}
	msg("pibridge/d3/meta", fmt.Sprintf(fakeMeta, "d3", "d3"), true)
	list := g.Devices()
	if len(list) != 1 || !list[0].Online || list[0].Signals != 2 || list[0].Version != "v1" {
		t.Fatalf("after the meta: %+v; want d3 online with 2 signals", list)
	}
	d := g.deviceByID("d3")
	d.mu.Lock()
	hello := string(d.helloLocked(false))
	d.mu.Unlock()
	if !strings.Contains(hello, `"state":{"air.temperature":{"value":21.5,"unit":"°C","ts":"2026-01-01T00:00:00.000Z","seq":4}}`) {
		t.Errorf("hello %s lacks the reading that came before the meta", hello)
	}

	ch := make(chan ackJSON, 1)
	g.pending["gw-x-1"] = pendingCommand{device: "d3", ch: ch}
	msg("pibridge/d9/ack", `{"id":"gw-x-1","name":"led","ok":true}`, false)
	select {
	case a := <-ch:
		t.Fatalf("another device's ack %+v answered the command", a)
	default:
	}
	msg("pibridge/d3/ack", `{"id":"gw-x-1","name":"led","ok":false,"error":"led: busy"}`, false)
	select {
	case a := <-ch:
		if a.OK || a.Error != "led: busy" {
			t.Errorf("ack %+v", a)
		}
	default:
		t.Fatal("the device's own ack did not answer the command")
	}

	msg("pibridge/d3/meta", "", true)
	if g.deviceByID("d3") != nil || len(g.Devices()) != 0 {
		t.Errorf("still listed after an empty retained meta: %+v", g.Devices())
	}
}

// TestShutdownWithPendingAuth: a socket still waiting for its auth frame
// does not hold Run for its 10 s; it is told 1001 or 4401 and Run returns.
func TestShutdownWithPendingAuth(t *testing.T) {
	g, err := New(testConfig("tcp://127.0.0.1:1", "s3cret-token", ""), Deps{})
	if err != nil {
		t.Fatal(err)
	}
	stop := testkit.Start(t, 5*time.Second, g.Run)
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+g.Addr().String()+"/fleet/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	testkit.Eventually(t, 5*time.Second, "the socket was not tracked", func() bool { return g.nconns.Load() == 1 })
	start := time.Now()
	stop() // fails the test when Run has not returned within 5 s
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Run took %v to return", d)
	}
}

// TestReadToken: the read token sees a device (hello says readonly, as a
// bridge's does) and cannot command it; the control token can.
func TestReadToken(t *testing.T) {
	g, err := New(testConfig("tcp://127.0.0.1:1", "control-token", "viewer-token"), Deps{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() { cancel(); <-done }()
	g.inbox <- inMsg{topic: "pibridge/d1/meta", payload: []byte(fmt.Sprintf(fakeMeta, "d1", "d1")), retained: true}
	g.inbox <- inMsg{topic: "pibridge/d1/status", payload: []byte("online"), retained: true}
	testkit.Eventually(t, 5*time.Second, "d1 listed", func() bool { return g.deviceByID("d1") != nil })
	for _, tc := range []struct {
		token    string
		readonly bool
		errPart  string
	}{
		{"viewer-token", true, "read-only access"},
		{"control-token", false, "not connected to the broker"},
	} {
		h := http.Header{"Authorization": {"Bearer " + tc.token}}
		conn, _, err := websocket.DefaultDialer.Dial("ws://"+g.Addr().String()+"/d/d1/ws", h)
		if err != nil {
			t.Fatal(err)
		}
		var hello map[string]any
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if err := conn.ReadJSON(&hello); err != nil {
			t.Fatal(err)
		}
		if ro, _ := hello["readonly"].(bool); ro != tc.readonly {
			t.Errorf("%s: hello readonly = %v; want %v", tc.token, hello["readonly"], tc.readonly)
		}
		conn.WriteJSON(map[string]any{"type": "set", "id": "r1", "name": "led", "value": true})
		var ack testkit.Frame
		if err := conn.ReadJSON(&ack); err != nil || ack.Type != "ack" || ack.OK == nil || *ack.OK || !strings.Contains(ack.Error, tc.errPart) {
			t.Errorf("%s: ack %+v (%v); want ok:false with %q", tc.token, ack, err, tc.errPart)
		}
		conn.Close()
	}
}

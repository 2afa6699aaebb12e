package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"pibridge/gateway"
	"pibridge/internal/harness"
	"pibridge/internal/testkit"
	"pibridge/web/paneltest"
)

const gatewayToken = "fleet-secret-token"

// fleetBridge is a sim board for the gateway tests: one output, one pwm,
// one fast sensor.
func fleetBridge(id, broker string) string {
	return fmt.Sprintf(`device: {id: %s, name: "Board %s"}
board: sim
mqtt: {broker: tcp://%s, homeassistant: {discovery: false}}
outputs:
  - {name: led, pin: GPIO22}
pwm:
  - {name: fan, pin: GPIO18}
sensors:
  - {name: t1, type: sim, interval: 100ms}
`, id, id, broker)
}

type fleetUnderTest struct {
	mosq    *testkit.Mosquitto
	bridges map[string]*harness.Daemon
	gw      *harness.Daemon
	spec    harness.DaemonSpec
}

// startFleet starts mosquitto, n real bridge processes and a real gateway
// process whose broker list begins with a dead node, so that it has to
// fail over to reach the fleet.
func startFleet(t *testing.T, n int) *fleetUnderTest {
	t.Helper()
	bin := hostBridge(t)
	mosq := testkit.RunMosquitto(t, testkit.MosquittoOptions{})
	f := &fleetUnderTest{mosq: mosq, bridges: map[string]*harness.Daemon{},
		spec: harness.DaemonSpec{Bin: bin, Procs: 1, Scratch: t.TempDir()}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("board-%d", i)
		d, err := f.spec.Start(ctx, id, fleetBridge(id, mosq.Addr))
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		t.Cleanup(func() { d.Stop() })
		f.bridges[id] = d
	}
	dead := testkit.FreeAddr(t)
	gw, err := f.spec.Start(ctx, "gateway", fmt.Sprintf(`gateway: {name: "Test fleet", command_timeout: 1s}
http: {token: %s}
mqtt: {broker: [tcp://%s, tcp://%s]}
`, gatewayToken, dead, mosq.Addr))
	if err != nil {
		t.Fatalf("gateway: %v", err)
	}
	t.Cleanup(func() {
		if err := gw.Stop(); err != nil {
			t.Errorf("gateway exit: %v\n%s", err, harness.Tail(gw.LogPath))
		}
		if t.Failed() {
			t.Logf("gateway log:\n%s", harness.Tail(gw.LogPath))
		}
	})
	f.gw = gw
	return f
}

func authed(r *http.Request) *http.Request {
	r.Header.Set("Authorization", "Bearer "+gatewayToken)
	return r
}

func getJSON(t *testing.T, url string, token bool, into any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token {
		authed(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if into != nil && resp.StatusCode == 200 {
		if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
	}
	return resp.StatusCode
}

type fleetDevice struct {
	ID, Name, Version, Status string
	Online                    bool
	Signals                   int
	LastReading               string `json:"last_reading"`
	Type                      string
}

func (f *fleetUnderTest) devices(t *testing.T) map[string]fleetDevice {
	var list struct{ Devices []fleetDevice }
	if code := getJSON(t, f.gw.HTTPURL+"/api/devices", true, &list); code != 200 {
		t.Fatalf("/api/devices: %d", code)
	}
	out := map[string]fleetDevice{}
	for _, d := range list.Devices {
		out[d.ID] = d
	}
	return out
}

func (f *fleetUnderTest) awaitOnline(t *testing.T, want map[string]bool) {
	t.Helper()
	eventually(t, 15*time.Second, fmt.Sprintf("gateway never listed %v", want), func() bool {
		got := f.devices(t)
		for id, online := range want {
			if d, ok := got[id]; !ok || d.Online != online {
				return false
			}
		}
		return true
	})
}

// dialGateway opens a WebSocket on the gateway with the bearer token.
func dialGateway(t *testing.T, f *fleetUnderTest, path string) (*websocket.Conn, map[string]any) {
	t.Helper()
	h := http.Header{"Authorization": {"Bearer " + gatewayToken}}
	conn, resp, err := websocket.DefaultDialer.Dial("ws://"+f.gw.HTTPAddr+path, h)
	if err != nil {
		t.Fatalf("dial %s: %v (%v)", path, err, resp)
	}
	t.Cleanup(func() { conn.Close() })
	var first map[string]any
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := conn.ReadJSON(&first); err != nil {
		t.Fatalf("%s: first frame: %v", path, err)
	}
	return conn, first
}

func deviceState(t *testing.T, d *harness.Daemon, name string) string {
	t.Helper()
	var st struct {
		State map[string]struct {
			Value json.RawMessage
		}
	}
	if code := getJSON(t, d.HTTPURL+"/api/state", false, &st); code != 200 {
		t.Fatalf("device /api/state: %d", code)
	}
	return string(st.State[name].Value)
}

// TestGatewayFleet runs real bridges and a real gateway on one mosquitto:
// discovery from retained meta and status, the fleet socket, the device
// protocol through the gateway moving real (sim) pins, REST commands,
// history from the gateway's ring, an offline device refused at once,
// and the gateway's own auth.
func TestGatewayFleet(t *testing.T) {
	f := startFleet(t, 3)
	f.awaitOnline(t, map[string]bool{"board-1": true, "board-2": true, "board-3": true})
	got := f.devices(t)
	if d := got["board-2"]; d.Name != "Board board-2" || d.Signals != 3 || d.Version == "" {
		t.Errorf("board-2 listed as %+v; want its name, version and 3 signals", d)
	}

	t.Run("fleet socket", func(t *testing.T) {
		conn, first := dialGateway(t, f, "/fleet/ws")
		if first["type"] != "fleet" || len(first["devices"].([]any)) != 3 {
			t.Fatalf("first frame %v; want type fleet with 3 devices", first)
		}
		fr := testkit.ReadFrames(t, conn)
		// Readings arrive every 100 ms: last seen changes reach the page.
		fr.Await(t, 5*time.Second, "a device frame", func(w testkit.Frame) bool { return w.Type == "device" })
	})

	t.Run("device socket moves pins", func(t *testing.T) {
		conn, hello := dialGateway(t, f, "/d/board-1/ws")
		dev, _ := hello["device"].(map[string]any)
		if hello["type"] != "hello" || hello["protocol"] != float64(1) || dev["id"] != "board-1" || len(hello["signals"].([]any)) != 3 {
			t.Fatalf("hello %v; want protocol 1 for board-1 with 3 signals", hello)
		}
		fr := testkit.ReadFrames(t, conn)
		fr.Await(t, 5*time.Second, "a reading", func(w testkit.Frame) bool { return w.Type == "reading" && w.Name == "t1" })
		for i, tc := range []struct {
			msg, name, want string
			ok              bool
			errPart         string
		}{
			{`{"type":"set","id":"c1","name":"led","value":true}`, "led", "true", true, ""},
			{`{"type":"set","id":"c2","name":"fan","value":0.25}`, "fan", "0.25", true, ""},
			{`{"type":"set","id":"c3","name":"led","value":"toggle"}`, "led", "false", true, ""},
			{`{"type":"set","id":"c4","name":"fan","value":7}`, "fan", "0.25", false, "0 to 1"},
			{`{"type":"set","id":"c5","name":"t1","value":1}`, "", "", false, "not writable"},
			{`{"type":"set","id":"c6","name":"nope","value":1}`, "", "", false, "no such signal"},
			{`{"type":"pulse","id":"c7","name":"led","for":"50ms"}`, "", "", true, ""},
		} {
			if err := conn.WriteMessage(websocket.TextMessage, []byte(tc.msg)); err != nil {
				t.Fatal(err)
			}
			id := fmt.Sprintf("c%d", i+1)
			ack := fr.Await(t, 5*time.Second, "ack "+id, func(w testkit.Frame) bool { return w.Type == "ack" && w.ID == id })
			if ack.OK == nil || *ack.OK != tc.ok || !strings.Contains(ack.Error, tc.errPart) {
				t.Errorf("%s: ack %+v; want ok=%v with %q", tc.msg, ack, tc.ok, tc.errPart)
			}
			if tc.name != "" {
				if got := deviceState(t, f.bridges["board-1"], tc.name); got != tc.want {
					t.Errorf("%s: the device's own state says %s=%s; want %s", tc.msg, tc.name, got, tc.want)
				}
			}
		}
		conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"history","id":"h1","name":"t1","since":"1m"}`))
		fr.Await(t, 5*time.Second, "history h1", func(w testkit.Frame) bool { return w.Type == "history" && w.ID == "h1" && w.Name == "t1" })
		var h struct{ Points [][2]float64 }
		if code := getJSON(t, f.gw.HTTPURL+"/d/board-1/api/history?name=t1&since=1m", true, &h); code != 200 || len(h.Points) == 0 {
			t.Errorf("/d/board-1/api/history: %d with %d points; want 200 with some", code, len(h.Points))
		}
		conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"bogus","id":"x1"}`))
		fr.Await(t, 5*time.Second, "an error for an unknown type", func(w testkit.Frame) bool { return w.Type == "error" && w.ID == "x1" })
	})

	t.Run("REST command", func(t *testing.T) {
		req, _ := http.NewRequest("POST", f.gw.HTTPURL+"/d/board-2/api/signals/led", strings.NewReader("on"))
		resp, err := http.DefaultClient.Do(authed(req))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"value":true`)) {
			t.Errorf("POST led on: %d %s; want 200 with the new reading", resp.StatusCode, body)
		}
		if got := deviceState(t, f.bridges["board-2"], "led"); got != "true" {
			t.Errorf("board-2 led is %s after the gateway's command; want true", got)
		}
		var st struct {
			State map[string]any
		}
		if code := getJSON(t, f.gw.HTTPURL+"/d/board-2/api/state", true, &st); code != 200 || st.State["led"] == nil {
			t.Errorf("/d/board-2/api/state: %d %v", code, st)
		}
	})

	t.Run("auth and host", func(t *testing.T) {
		for _, tc := range []struct {
			path  string
			token bool
			host  string
			want  int
		}{
			{"/api/devices", false, "", 401},
			{"/d/board-1/api/state", false, "", 401},
			{"/api/devices", true, "evil.example", 421},
			{"/d/nosuch/api/state", true, "", 404},
			{"/healthz", false, "", 200},
			{"/metrics", false, "", 200},
			{"/d/board-1/", false, "", 200}, // the panel's files: the login form is in them
			{"/", false, "", 200},
		} {
			req, _ := http.NewRequest("GET", f.gw.HTTPURL+tc.path, nil)
			if tc.token {
				authed(req)
			}
			if tc.host != "" {
				req.Host = tc.host
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("GET %s (token %v, host %q): %d; want %d", tc.path, tc.token, tc.host, resp.StatusCode, tc.want)
			}
		}
		// The first-frame auth of README "HTTP": a wrong token closes with 4401.
		conn, _, err := websocket.DefaultDialer.Dial("ws://"+f.gw.HTTPAddr+"/d/board-1/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"auth","token":"wrong"}`))
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err = conn.ReadMessage()
		if !websocket.IsCloseError(err, 4401) {
			t.Errorf("wrong first-frame token: %v; want close 4401", err)
		}
		conn2, _, err := websocket.DefaultDialer.Dial("ws://"+f.gw.HTTPAddr+"/d/board-1/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn2.Close()
		conn2.WriteMessage(websocket.TextMessage, []byte(`{"type":"auth","token":"`+gatewayToken+`"}`))
		var hello map[string]any
		conn2.SetReadDeadline(time.Now().Add(5 * time.Second))
		if err := conn2.ReadJSON(&hello); err != nil || hello["type"] != "hello" {
			t.Errorf("right first-frame token: %v %v; want the hello", err, hello)
		}
	})

	t.Run("offline refused at once", func(t *testing.T) {
		conn, _ := dialGateway(t, f, "/d/board-3/ws")
		fr := testkit.ReadFrames(t, conn)
		if err := f.bridges["board-3"].Stop(); err != nil {
			t.Fatalf("board-3 exit: %v", err)
		}
		f.awaitOnline(t, map[string]bool{"board-3": false})
		conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"set","id":"o1","name":"led","value":true}`))
		ack := fr.Await(t, 5*time.Second, "ack o1", func(w testkit.Frame) bool { return w.Type == "ack" && w.ID == "o1" })
		// "offline", not command_timeout's "did not answer": refused before
		// anything was sent, which no timing bound needs to show.
		if ack.OK == nil || *ack.OK || !strings.Contains(ack.Error, "offline") {
			t.Errorf("command to an offline device: %+v; want ok:false \"offline\"", ack)
		}
	})
}

// TestGatewayDeviceLifecycle drives the gateway with a device made of
// bare MQTT messages: a command nobody answers gets "device did not
// answer" after command_timeout, and an empty retained meta removes the
// device.
func TestGatewayDeviceLifecycle(t *testing.T) {
	f := startFleet(t, 0)
	opts := paho.NewClientOptions().AddBroker("tcp://" + f.mosq.Addr).SetClientID("ghost")
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(100)
	pub := func(topic, payload string, retained bool) {
		t.Helper()
		if tok := c.Publish(topic, 1, retained, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	pub("pibridge/ghost/meta", `{"device":{"id":"ghost","name":"Ghost","version":"v9"},"signals":[{"name":"led","kind":"output","writable":true}]}`, true)
	pub("pibridge/ghost/status", "online", true)
	pub("pibridge/ghost/led", `{"value":false,"ts":"2026-01-01T00:00:00.000Z","seq":7}`, true)
	f.awaitOnline(t, map[string]bool{"ghost": true})

	conn, hello := dialGateway(t, f, "/d/ghost/ws")
	state, _ := hello["state"].(map[string]any)
	if led, _ := state["led"].(map[string]any); led["seq"] != float64(7) {
		t.Errorf("hello state %v; want led at seq 7 from the retained reading", state)
	}
	fr := testkit.ReadFrames(t, conn)
	start := time.Now()
	conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"set","id":"g1","name":"led","value":true}`))
	ack := fr.Await(t, 5*time.Second, "ack g1", func(w testkit.Frame) bool { return w.Type == "ack" && w.ID == "g1" })
	if el := time.Since(start); ack.OK == nil || *ack.OK || ack.Error != "led: device did not answer" || el < time.Second || el > 3*time.Second {
		t.Errorf("unanswered command: %+v after %v; want ok:false \"led: device did not answer\" after command_timeout (1s)", ack, el)
	}
	// The device answers a command of its own id only; a stray ack changes nothing.
	pub("pibridge/ghost/ack", `{"id":"someone-else","name":"led","ok":true}`, false)

	pub("pibridge/ghost/meta", "", true)
	eventually(t, 5*time.Second, "ghost still listed after its meta was cleared", func() bool {
		_, listed := f.devices(t)["ghost"]
		return !listed
	})
	eventually(t, 5*time.Second, "the device socket stayed open after the device was removed", func() bool {
		return websocket.IsCloseError(fr.Err(), websocket.CloseGoingAway)
	})
	pub("pibridge/ghost/status", "", true)
}

// TestGatewayConfig: a gateway: section with a board's keys, or with bad
// values of its own, is a config error naming each field; a good one
// passes -check.
func TestGatewayConfig(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{
			name: "board keys",
			yaml: "gateway: {}\nboard: sim\nmqtt: {broker: tcp://a:1883}\noutputs:\n  - {name: led, pin: GPIO22}\nsensors:\n  - {name: t, type: sim}\n",
			want: []string{
				"board: a gateway owns no pin: remove board, or the gateway: section to run a bridge",
				"outputs: a gateway owns no pin: remove outputs, or the gateway: section to run a bridge",
				"sensors: a gateway owns no pin: remove sensors, or the gateway: section to run a bridge",
			},
		},
		{
			name: "own fields",
			yaml: "gateway: {history: 10s, command_timeout: 2m, topic_prefix: \"a/#\", max_devices: -1, colour: red}\nmqtt: {broker: [embedded]}\n",
			want: []string{
				"gateway.colour: unknown key (line 1)",
				"mqtt.broker: a gateway follows the fleet's broker: list its nodes, not embedded",
				`gateway.topic_prefix: "a/#": must not contain +, # or NUL`,
				"gateway.history: 10s: must be from 1m to 24h0m0s",
				"gateway.command_timeout: 2m0s: must be from 10ms to 1m0s",
				"gateway.max_devices: -1: must not be negative",
			},
		},
		{
			name: "explicit zeros",
			yaml: "gateway: {history: 0s, max_devices: 0, name: \"\"}\nmqtt: {broker: tcp://a:1883}\n",
			want: []string{
				"gateway.name: must not be empty",
				"gateway.history: 0s: must be from 1m to 24h0m0s",
				"gateway.max_devices: 0: must be at least 1",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.yaml")
			os.WriteFile(path, []byte(tc.yaml), 0o600)
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), []string{"-check", "-config", path}, envOf(map[string]string{"PIBRIDGE_STATE_DIR": t.TempDir()}), &stdout, &stderr)
			if code := exitStatus(err, &stderr); code != 2 {
				t.Fatalf("exit status %d, want 2 (err %v)", code, err)
			}
			var want []string
			for _, w := range tc.want {
				want = append(want, "config: "+w)
			}
			if got := strings.TrimSpace(stderr.String()); got != strings.Join(want, "\n") {
				t.Fatalf("stderr:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
			}
		})
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(path, []byte("gateway: {name: Greenhouse fleet}\nmqtt: {broker: [tcp://n1:1883, tcp://n2:1883]}\n"), 0o600)
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"-check", "-config", path}, envOf(map[string]string{"PIBRIDGE_STATE_DIR": t.TempDir()}), &stdout, &stderr); err != nil {
		t.Fatalf("valid gateway config: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "tcp://n1:1883, tcp://n2:1883") || !strings.Contains(stdout.String(), "configuration is valid") {
		t.Errorf("-check output:\n%s", stdout.String())
	}
}

// TestGatewayInChromium opens the fleet page and one device's panel
// through the gateway in headless Chromium (strict CSP, no console error):
// the token from the URL fragment signs in, the fleet lists every device
// live, search filters, and the panel under /d/<id>/ moves the device's
// pin. PIBRIDGE_SCREENSHOTS=1 writes docs/fleet-desktop.png.
func TestGatewayInChromium(t *testing.T) {
	f := startFleet(t, 3)
	f.awaitOnline(t, map[string]bool{"board-1": true, "board-2": true, "board-3": true})
	br := paneltest.Start(t, 2*time.Minute)
	br.SetViewport(t, paneltest.Desktop)
	br.Navigate(t, f.gw.HTTPURL+"/#token="+gatewayToken)
	br.WaitFor(t, `document.querySelectorAll('#devices tbody tr').length === 3`)
	br.WaitFor(t, `document.querySelector('#conn').dataset.state === 'online'`)
	if got := br.Text(t, "#counts"); got != "3 of 3 online" {
		t.Errorf("counts %q; want 3 of 3 online", got)
	}
	if got := br.Text(t, "#fleet-name"); got != "Test fleet" {
		t.Errorf("fleet name %q", got)
	}
	br.WaitFor(t, `/s ago$/.test(document.querySelector('tr[data-id="board-1"] td.age').textContent)`)
	if os.Getenv("PIBRIDGE_SCREENSHOTS") == "1" {
		br.Screenshot(t, filepath.Join("..", "..", "docs", "fleet-desktop.png"))
	}
	br.Keys(t, "#search", "board-2")
	br.WaitFor(t, `[...document.querySelectorAll('#devices tbody tr')].filter(r => !r.hidden).map(r => r.dataset.id).join() === 'board-2'`)

	// A device goes away: its row says offline without a reload.
	if err := f.bridges["board-3"].Stop(); err != nil {
		t.Fatal(err)
	}
	br.WaitFor(t, `document.querySelector('tr[data-id="board-3"] td.status').dataset.status === 'offline'`)

	br.Navigate(t, f.gw.HTTPURL+"/d/board-1/")
	br.WaitFor(t, `pibridge.state.status === 'live'`)
	if got := br.Text(t, "#device-name"); got != "Board board-1" {
		t.Errorf("panel device name %q", got)
	}
	br.WaitFor(t, `document.querySelector('[data-signal="led"] .value').textContent === 'OFF'`)
	br.Click(t, tileSel("led", ".switch"))
	br.WaitFor(t, `document.querySelector('[data-signal="led"]').dataset.state === 'confirmed'`)
	eventually(t, 5*time.Second, "board-1's led did not move", func() bool { return deviceState(t, f.bridges["board-1"], "led") == "true" })
	if os.Getenv("PIBRIDGE_SCREENSHOTS") == "1" {
		br.Screenshot(t, filepath.Join("..", "..", "docs", "fleet-device.png"))
	}

	// Signed out, the fleet page shows the panel's sign-in form (login.js,
	// served by the gateway) and it signs in again.
	br.AllowNetworkErrors(true) // the 401s and the refused handshake
	br.Navigate(t, f.gw.HTTPURL+"/")
	if !paneltest.Eval[bool](t, br, `fetch('api/logout', {method: 'POST'}).then((r) => r.ok)`) {
		t.Fatal("logout refused")
	}
	br.Navigate(t, f.gw.HTTPURL+"/")
	br.WaitFor(t, `!document.querySelector('#login-panel').hidden`)
	if got := br.Text(t, "#login-panel p"); got != "This gateway needs its access token." {
		t.Errorf("login text %q", got)
	}
	paneltest.Eval[bool](t, br, `(document.querySelector('#token').value = 'wrong', document.querySelector('#login button').click(), true)`)
	br.WaitFor(t, `document.querySelector('#login-error').textContent !== ''`)
	paneltest.Eval[bool](t, br, `(document.querySelector('#token').value = '`+gatewayToken+`', document.querySelector('#login button').click(), true)`)
	br.WaitFor(t, `document.querySelectorAll('#devices tbody tr').length === 3 && document.querySelector('#login-panel').hidden`)
	br.AllowNetworkErrors(false)
}

// TestGatewayDefaultsAreTheFiles: a gateway file without http: runs with
// the same listen address and client limit as a gateway built in code
// from gateway.Defaults.
func TestGatewayDefaultsAreTheFiles(t *testing.T) {
	cfg, err := loadSource([]byte("gateway: {}\nmqtt: {broker: tcp://n1:1883}\n"), envOf(map[string]string{"PIBRIDGE_STATE_DIR": t.TempDir()}))
	if err != nil {
		t.Fatal(err)
	}
	got, want := cfg.Gateway.HTTP, gateway.Defaults().HTTP
	if got.Listen != want.Listen || got.MaxClients != want.MaxClients {
		t.Fatalf("from a file: listen %q, max clients %d; gateway.Defaults: %q, %d", got.Listen, got.MaxClients, want.Listen, want.MaxClients)
	}
}

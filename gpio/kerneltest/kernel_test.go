package kerneltest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// config returns a bridge config on board periph with the given inputs,
// outputs and pwm sections; HTTP and the embedded broker listen on the
// guest ports the rig forwards.
func config(id, body string) string {
	return fmt.Sprintf(`device: {id: %s, name: "kernel rig"}
board: periph
http: {listen: "0.0.0.0:%d", token: none}
mqtt: {broker: embedded, embedded_listen: "0.0.0.0:%d", homeassistant: {discovery: false}}
%s`, id, guestBridgePort, guestMQTTPort, body)
}

// TestInputs: inputs on gpio-sim lines. The kernel sees the configured
// bias (gpio-sim follows it), pull changes make edges the bridge reports,
// a burst of edges gives one reading, and a glitch shorter than the
// debounce gives none.
func TestInputs(t *testing.T) {
	r := getRig(t)
	r.chip(t, "rp1")
	b := r.startBridge(t, "inputs", config("inputs", `inputs:
  - {name: door,   pin: GPIO17, pull: up, invert: true, debounce: 50ms}
  - {name: motion, pin: GPIO16, pull: down, debounce: 250ms}
  - {name: rain,   pin: P1_13,  pull: up, invert: true}
`))
	defer b.term(t)
	for _, tt := range []struct {
		line int
		pull string
	}{{17, "pull-up"}, {16, "pull-down"}, {27, "pull-up"}} {
		if got := strings.TrimSpace(r.sh(t, fmt.Sprintf("cat $(cat /run/simchip)/sim_gpio%d/pull", tt.line))); got != tt.pull {
			t.Errorf("line %d: the kernel has bias %s, want %s (the config's pull)", tt.line, got, tt.pull)
		}
	}
	r.waitState(t, "door", false, "door with pull-up and invert")
	r.waitState(t, "rain", false, "rain on P1_13 with pull-up and invert")
	r.waitState(t, "motion", false, "motion with pull-down")

	n := r.readings(t, "door")
	r.pull(t, 17, "down")
	r.waitState(t, "door", true, "door after its line went low")
	if got := r.readings(t, "door") - n; got != 1 {
		t.Errorf("one edge: %d door readings, want 1", got)
	}
	r.pull(t, 27, "down")
	r.waitState(t, "rain", true, "rain (P1_13) after its line went low")

	// 41 edges in a burst, ending high: one reading, false.
	n = r.readings(t, "door")
	r.sh(t, "chip pulls 17 up 20; chip pull 17 up")
	r.waitState(t, "door", false, "door after a burst ending high")
	// A marker edge through the same debounce: any second reading for the
	// burst comes before the marker's.
	r.pull(t, 17, "down")
	r.waitState(t, "door", true, "door after the marker edge")
	if got := r.readings(t, "door") - n; got != 2 {
		t.Errorf("burst of 41 edges, then one: %d door readings, want 2", got)
	}

	// A 30ms high glitch, long enough to read without debounce, shorter
	// than motion's 250ms debounce: no reading.
	n = r.readings(t, "motion")
	r.sh(t, "chip glitch 16 up 30")
	// The wait is what is tested: nothing comes within twice the debounce.
	// A marker edge would not do: a lone reading "true" for the glitch
	// would hide the marker's.
	time.Sleep(600 * time.Millisecond)
	if got := r.readings(t, "motion") - n; got != 0 {
		t.Errorf("sub-debounce glitch: %d motion readings, want 0", got)
	}
	if v := r.state(t, "motion"); v != false {
		t.Errorf("motion after a glitch: %v, want false", v)
	}
	r.pull(t, 16, "up")
	r.waitState(t, "motion", true, "motion after a steady high")
}

// TestOutputs: initial and invert as the kernel sees them, commands,
// max_on, a pulse over MQTT and the interlock wait, timed by the gpio
// tracepoints.
func TestOutputs(t *testing.T) {
	r := getRig(t)
	r.chip(t, "rp1")
	b := r.startBridge(t, "outputs", config("outputs", `outputs:
  - {name: pump,  pin: GPIO22, initial: off, safe: off, max_on: 2s}
  - {name: light, pin: GPIO23, initial: on, safe: on, invert: true}
  - {name: bell,  pin: GPIO24, pulse: 1s}
  - {name: up,    pin: GPIO5,  interlock: blind, interlock_wait: 500ms}
  - {name: down,  pin: GPIO6,  interlock: blind, interlock_wait: 500ms}
`))
	defer b.term(t)
	r.waitLevel(t, 22, 0, "pump initial off")
	r.waitLevel(t, 23, 0, "light initial on, inverted")

	for _, tt := range []struct {
		signal, body string
		line, level  int
	}{
		{"light", `off`, 23, 1},
		{"light", `on`, 23, 0},
		{"pump", `on`, 22, 1},
	} {
		if code, body := r.post(t, tt.signal, tt.body); code != 200 {
			t.Fatalf("POST %s %s: %d %s", tt.signal, tt.body, code, body)
		}
		if got := r.level(t, tt.line); got != tt.level {
			t.Errorf("after %s %s: line %d reads %d, want %d", tt.signal, tt.body, tt.line, got, tt.level)
		}
	}
	r.waitLevel(t, 22, 0, "pump after max_on 2s")
	r.waitState(t, "pump", false, "pump after max_on")

	// The embedded broker listens beyond loopback, so it asks for the
	// password it generated into the state directory at start.
	password := strings.TrimSpace(r.sh(t, "cat /scratch/"+b.name+"/mqtt-password"))
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + r.mqtt).SetClientID("rig").
		SetUsername("pibridge").SetPassword(password))
	if tok := c.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtt connect to the guest's embedded broker: %v", tok.Error())
	}
	defer c.Disconnect(100)

	r.traceOn(t)
	if tok := c.Publish("pibridge/outputs/bell/pulse", 1, false, "1s"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish pulse: %v", tok.Error())
	}
	r.waitState(t, "bell", true, "bell pulsing")
	r.waitState(t, "bell", false, "bell after its pulse")
	if code, body := r.post(t, "up", `on`); code != 200 {
		t.Fatalf("POST up on: %d %s", code, body)
	}
	if code, body := r.post(t, "down", `on`); code != 200 {
		t.Fatalf("POST down on: %d %s", code, body)
	}
	evs := r.traceOff(t)
	bell := sets(evs, 24)
	if len(bell) != 2 || bell[0].val != 1 || bell[1].val != 0 {
		t.Fatalf("bell pulse: want set 1 then set 0 on line 24, trace:\n%s", dump(evs))
	}
	if d := bell[1].at - bell[0].at; d < 950*time.Millisecond || d > 2500*time.Millisecond {
		t.Errorf("bell pulse of 1s lasted %s in the kernel", d)
	}
	up, down := sets(evs, 5), sets(evs, 6)
	if len(up) != 2 || up[1].val != 0 || len(down) != 1 || down[0].val != 1 {
		t.Fatalf("interlock: want up on, up off, then down on; trace:\n%s", dump(evs))
	}
	if d := down[0].at - up[1].at; d < 500*time.Millisecond {
		t.Errorf("interlock_wait 500ms: down went on %s after up went off", d)
	}
	if got := r.level(t, 5); got != 0 {
		t.Errorf("up reads %d after down on, want 0", got)
	}
}

// TestFailsafe: an output with failsafe_after goes to its safe level when
// nobody can reach the bridge (an unreachable broker, no panel).
func TestFailsafe(t *testing.T) {
	r := getRig(t)
	r.chip(t, "rp1")
	b := r.startBridge(t, "failsafe", fmt.Sprintf(`device: {id: failsafe, name: "kernel rig"}
board: periph
http: {listen: "0.0.0.0:%d", token: none}
mqtt: {broker: "tcp://127.0.0.1:9", homeassistant: {discovery: false}}
outputs:
  - {name: heater, pin: GPIO20, initial: on, safe: off, failsafe_after: 3s}
`, guestBridgePort))
	defer b.term(t)
	r.waitLevel(t, 20, 0, "heater after failsafe_after 3s unreachable")
	r.waitState(t, "heater", false, "heater after the failsafe")
}

// TestSecondBridgeRefused: a second bridge on pins the first one holds
// does not start, and says which pin is taken.
func TestSecondBridgeRefused(t *testing.T) {
	r := getRig(t)
	r.chip(t, "rp1")
	body := `inputs:
  - {name: door, pin: GPIO17, pull: up}
outputs:
  - {name: pump, pin: GPIO22}
`
	b := r.startBridge(t, "first", config("first", body))
	defer b.term(t)
	r.writeConfig(t, "second", config("second", body))
	out, err := r.shErr("PIBRIDGE_STATE_DIR=/scratch/second PIBRIDGE_HTTP_LISTEN=127.0.0.1:9080 PIBRIDGE_MQTT_EMBEDDED_LISTEN=127.0.0.1:9883 timeout 60 bridge -config /etc/second.yaml 2>&1")
	if err == nil {
		t.Fatalf("a second bridge on the same pins started:\n%s", out)
	}
	t.Logf("second bridge: %s", out[strings.LastIndex(out, "bridge:"):])
	if !strings.Contains(out, "GPIO17") || !strings.Contains(out, "in use") {
		t.Errorf("second bridge: want an error naming GPIO17 and saying it is in use, got:\n%s", out)
	}
}

// TestPWMWithoutPWM: a duty cycle on a line without a PWM driver is
// refused with a 4xx naming the pin; 0 and 1 still drive it.
func TestPWMWithoutPWM(t *testing.T) {
	r := getRig(t)
	r.chip(t, "rp1")
	b := r.startBridge(t, "pwm", config("pwm", `pwm:
  - {name: fan, pin: GPIO18, frequency: 25kHz, initial: 0, safe: 0}
`))
	defer b.term(t)
	code, body := r.post(t, "fan", `0.5`)
	t.Logf("POST fan 0.5: %d %s", code, body)
	if code < 400 || code > 499 || !strings.Contains(body, "GPIO18") {
		t.Errorf("POST fan 0.5 on a line without PWM: %d %s, want a 4xx naming GPIO18", code, body)
	}
	if code, body := r.post(t, "fan", `1`); code != 200 {
		t.Fatalf("POST fan 1: %d %s", code, body)
	}
	if got := r.level(t, 18); got != 1 {
		t.Errorf("fan 1: line 18 reads %d", got)
	}
}

package mqtt

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	pibridge "pibridge"
)

// testHost is a Raspberry Pi's device tree, as the kernel shows it.
var testHost = fstest.MapFS{
	"proc/device-tree/model":         {Data: []byte("Raspberry Pi 4 Model B Rev 1.4\x00")},
	"proc/device-tree/serial-number": {Data: []byte("10000000abcdef01\x00")},
}

const panelURL = "http://pi.local:8080/"

func perEntity(c *Config) { c.HomeAssistant.PerEntity = true }

// haClient is a client with the test Pi's device tree and a panel URL.
func haClient(t *testing.T, core *pibridge.Core, addr string, edit func(*Config), stale func(string) bool) (*Client, func()) {
	t.Helper()
	c := newTestClientOpts(t, core, "tcp://"+addr, func(c *Config) {
		c.HomeAssistant.ConfigurationURL = panelURL
		if edit != nil {
			edit(c)
		}
	}, func(o *Options) { o.Host, o.Stale = testHost, stale })
	return c, runClient(t, c)
}

// goldenComponents are testSignals' components, keyed and ordered as the
// device config has them.
var goldenComponents = []string{
	`"air_humidity":{"p":"sensor","name":"air.humidity","unique_id":"pibridge_dev1_air_humidity","state_topic":"pibridge/dev1/air/humidity","value_template":"{{ value_json.value }}","device_class":"humidity","unit_of_measurement":"%","state_class":"measurement","availability":[{"topic":"pibridge/dev1/status"},{"topic":"pibridge/dev1/air/humidity/available"}],"availability_mode":"all","qos":1}`,
	`"air_temperature":{"p":"sensor","name":"air.temperature","unique_id":"pibridge_dev1_air_temperature","state_topic":"pibridge/dev1/air/temperature","value_template":"{{ value_json.value }}","device_class":"temperature","unit_of_measurement":"°C","state_class":"measurement","availability":[{"topic":"pibridge/dev1/status"},{"topic":"pibridge/dev1/air/temperature/available"}],"availability_mode":"all","qos":1}`,
	`"cpu":{"p":"sensor","name":"cpu","unique_id":"pibridge_dev1_cpu","state_topic":"pibridge/dev1/cpu","value_template":"{{ value_json.value }}","device_class":"temperature","unit_of_measurement":"°C","state_class":"measurement","availability":[{"topic":"pibridge/dev1/status"},{"topic":"pibridge/dev1/cpu/available"}],"availability_mode":"all","qos":1}`,
	`"door":{"p":"binary_sensor","name":"door","unique_id":"pibridge_dev1_door","state_topic":"pibridge/dev1/door","value_template":"{{ 'ON' if value_json.value else 'OFF' }}","availability":[{"topic":"pibridge/dev1/status"}],"qos":1}`,
	`"fan":{"p":"number","name":"fan","unique_id":"pibridge_dev1_fan","state_topic":"pibridge/dev1/fan","value_template":"{{ value_json.value }}","command_topic":"pibridge/dev1/fan/set","min":0,"max":1,"step":0.01,"mode":"slider","availability":[{"topic":"pibridge/dev1/status"}],"qos":1}`,
	`"pump":{"p":"switch","name":"pump","unique_id":"pibridge_dev1_pump","state_topic":"pibridge/dev1/pump","value_template":"{{ 'on' if value_json.value else 'off' }}","command_topic":"pibridge/dev1/pump/set","payload_on":"on","payload_off":"off","state_on":"on","state_off":"off","availability":[{"topic":"pibridge/dev1/status"}],"qos":1}`,
	`"pump_pulse":{"p":"button","name":"pump pulse","unique_id":"pibridge_dev1_pump_pulse","command_topic":"pibridge/dev1/pump/pulse","payload_press":"30s","availability":[{"topic":"pibridge/dev1/status"}],"qos":1}`,
	`"stuck":{"p":"switch","name":"stuck","unique_id":"pibridge_dev1_stuck","state_topic":"pibridge/dev1/stuck","value_template":"{{ 'on' if value_json.value else 'off' }}","command_topic":"pibridge/dev1/stuck/set","payload_on":"on","payload_off":"off","state_on":"on","state_off":"off","availability":[{"topic":"pibridge/dev1/status"}],"qos":1}`,
}

// goldenDevice is the device config for testSignals with components
// (in key order), byte for byte.
func goldenDevice(components ...string) string {
	return `{"dev":{"identifiers":["pibridge_dev1"],"name":"Test Pi","manufacturer":"pibridge","model":"pibridge",` +
		`"sw_version":"1.2.3","hw_version":"Raspberry Pi 4 Model B Rev 1.4","serial_number":"10000000abcdef01","configuration_url":"http://pi.local:8080/"},` +
		`"o":{"name":"pibridge","sw_version":"1.2.3","support_url":"http://pi.local:8080/"},` +
		`"cmps":{` + strings.Join(components, ",") + `}}`
}

// waitSession waits until the bridge has finished a connection's
// discovery: sensor availability is published after it.
func waitSession(w *watcher, from int) []msg {
	w.t.Helper()
	return w.waitFor("the session's availability", func(ms []msg) bool {
		for _, m := range ms[min(from, len(ms)):] {
			if m.Topic == base+"/cpu/available" && !m.Retained {
				return true
			}
		}
		return false
	})[from:]
}

// discoveryOnly keeps the live messages under the discovery prefix.
func discoveryOnly(ms []msg, prefix string) []msg {
	var out []msg
	for _, m := range ms {
		if strings.HasPrefix(m.Topic, prefix+"/") && !m.Retained && m.Topic != prefix+"/status" {
			out = append(out, m)
		}
	}
	return out
}

func checkSequence(t *testing.T, got, want []msg) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d discovery messages, want %d; got:\n%s", len(got), len(want), dump(got))
		return
	}
	for i := range want {
		if got[i].Topic != want[i].Topic || got[i].Payload != want[i].Payload {
			t.Errorf("message %d:\n got  %s %s\n want %s %s", i, got[i].Topic, got[i].Payload, want[i].Topic, want[i].Payload)
		}
	}
}

// testHADeviceConfig checks the device config byte for byte, under a
// custom discovery prefix, and the answer to Home Assistant's birth
// message on its own status topic (not <prefix>/status).
func testHADeviceConfig(t *testing.T, addr string) {
	core, _ := newCore(t)
	core.Emit("cpu", pibridge.Number(41), time.Time{})
	w := watch(t, addr, "ha-custom/#", "homeassistant/#", base+"/cpu", base+"/cpu/available")
	haClient(t, core, addr, func(c *Config) { c.HomeAssistant.Prefix = "ha-custom" }, nil)
	ms := discoveryOnly(waitSession(w, 0), "ha-custom")
	checkSequence(t, ms, []msg{{Topic: "ha-custom/device/dev1/config", Payload: goldenDevice(goldenComponents...)}})
	if len(w.on("homeassistant/device/dev1/config")) > 0 {
		t.Errorf("published under the default prefix too")
	}

	states := len(w.on(base + "/cpu"))
	w.publish("homeassistant/status", "online", false)
	w.waitFor("discovery and the states again", func(ms []msg) bool {
		return len(w.on("ha-custom/device/dev1/config")) == 2 && len(w.on(base+"/cpu")) > states
	})
	again := w.on("ha-custom/device/dev1/config")[1]
	if again.Payload != goldenDevice(goldenComponents...) {
		t.Errorf("device config after the birth message differs:\n%s", again.Payload)
	}
}

// oldEntity is a per-entity config as earlier versions published it.
func oldEntity(name, object, component string) string {
	return `{"name":"` + name + `","unique_id":"pibridge_dev1_` + object + `","state_topic":"pibridge/dev1/` + name +
		`","value_template":"{{ value_json.value }}","availability_topic":"pibridge/dev1/status","payload_available":"online","payload_not_available":"offline","qos":1,` +
		`"device":{"identifiers":["pibridge_dev1"],"name":"Test Pi","model":"pibridge","manufacturer":"pibridge","sw_version":"1.0.0"},"origin":{"name":"pibridge","sw_version":"1.0.0"}}`
}

// testHAMigration starts the bridge where an earlier version left
// per-entity configs: each entity still configured is marked for
// migration, the device config follows, then every old config of ours is
// emptied, in that order. Another program's entity under the node id
// stays, and the next start does it no more.
func testHAMigration(t *testing.T, addr string) {
	w := watch(t, addr, "homeassistant/#", base+"/cpu/available")
	foreign := `{"name":"other","unique_id":"zigbee_0x1234"}`
	seeds := map[string]string{
		"homeassistant/switch/dev1/pump/config":      oldEntity("pump", "pump", "switch"),
		"homeassistant/sensor/dev1/cpu/config":       oldEntity("cpu", "cpu", "sensor"),
		"homeassistant/switch/dev1/old_relay/config": oldEntity("old_relay", "old_relay", "switch"), // removed since
		"homeassistant/switch/dev1/fan/config":       oldEntity("fan", "fan", "switch"),             // a number now
		"homeassistant/sensor/dev1/other/config":     foreign,
	}
	for topic, p := range seeds {
		w.publish(topic, p, true)
	}
	w.sync()
	from := len(w.all())

	core, _ := newCore(t)
	_, stop := haClient(t, core, addr, nil, nil)
	migrate := `{"migrate_discovery": true}`
	checkSequence(t, discoveryOnly(waitSession(w, from), "homeassistant"), []msg{
		{Topic: "homeassistant/sensor/dev1/cpu/config", Payload: migrate},
		{Topic: "homeassistant/switch/dev1/pump/config", Payload: migrate},
		{Topic: "homeassistant/device/dev1/config", Payload: goldenDevice(goldenComponents...)},
		{Topic: "homeassistant/sensor/dev1/cpu/config"},
		{Topic: "homeassistant/switch/dev1/fan/config"},
		{Topic: "homeassistant/switch/dev1/old_relay/config"},
		{Topic: "homeassistant/switch/dev1/pump/config"},
	})
	checkRetained(t, addr, map[string]string{
		"homeassistant/device/dev1/config":       goldenDevice(goldenComponents...),
		"homeassistant/sensor/dev1/other/config": foreign,
	})

	// One time only: the next start publishes the device config alone.
	stop()
	from = len(w.all())
	haClient(t, core, addr, nil, nil)
	checkSequence(t, discoveryOnly(waitSession(w, from), "homeassistant"), []msg{
		{Topic: "homeassistant/device/dev1/config", Payload: goldenDevice(goldenComponents...)},
	})
}

// checkRetained checks what a fresh subscriber to homeassistant/# gets.
func checkRetained(t *testing.T, addr string, want map[string]string) {
	t.Helper()
	late := watch(t, addr, "homeassistant/#")
	got := map[string]string{}
	for _, m := range late.all() {
		got[m.Topic] = m.Payload
	}
	for topic, p := range want {
		if got[topic] != p {
			t.Errorf("retained %s = %q, want %q", topic, got[topic], p)
		}
	}
	for topic := range got {
		if _, ok := want[topic]; !ok {
			t.Errorf("retained %s left over: %q", topic, got[topic])
		}
	}
}

// testHARemovedComponent starts the bridge where its previous device
// config had a component it no longer has: the component is reduced to
// its platform once, which makes Home Assistant delete it, and left out
// on the next start. A component already reduced is left out at once.
func testHARemovedComponent(t *testing.T, addr string) {
	w := watch(t, addr, "homeassistant/#", base+"/cpu/available")
	oldRelay := `"old_relay":{"p":"switch","name":"old_relay","unique_id":"pibridge_dev1_old_relay","state_topic":"pibridge/dev1/old_relay","value_template":"{{ value_json.value }}","availability":[{"topic":"pibridge/dev1/status"}],"qos":1}`
	previous := slices.Concat(goldenComponents[:5], []string{`"gone_before":{"p":"sensor"}`, oldRelay}, goldenComponents[5:])
	w.publish("homeassistant/device/dev1/config", goldenDevice(previous...), true)
	w.sync()
	from := len(w.all())

	core, _ := newCore(t)
	_, stop := haClient(t, core, addr, nil, nil)
	reduced := slices.Concat(goldenComponents[:5], []string{`"old_relay":{"p":"switch"}`}, goldenComponents[5:])
	checkSequence(t, discoveryOnly(waitSession(w, from), "homeassistant"), []msg{
		{Topic: "homeassistant/device/dev1/config", Payload: goldenDevice(reduced...)},
	})
	stop()
	from = len(w.all())
	haClient(t, core, addr, nil, nil)
	checkSequence(t, discoveryOnly(waitSession(w, from), "homeassistant"), []msg{
		{Topic: "homeassistant/device/dev1/config", Payload: goldenDevice(goldenComponents...)},
	})
}

// testHARollback starts with per_entity where a device config of ours is
// retained: the way back is the migration backwards.
func testHARollback(t *testing.T, addr string) {
	w := watch(t, addr, "homeassistant/#", base+"/cpu/available")
	w.publish("homeassistant/device/dev1/config", goldenDevice(goldenComponents...), true)
	w.sync()
	from := len(w.all())
	core, _ := newCore(t)
	haClient(t, core, addr, perEntity, nil)
	ms := discoveryOnly(waitSession(w, from), "homeassistant")
	if len(ms) != testEntities+2 {
		t.Fatalf("%d messages, want %d:\n%s", len(ms), testEntities+2, dump(ms))
	}
	first, last := ms[0], ms[len(ms)-1]
	if first.Topic != "homeassistant/device/dev1/config" || first.Payload != `{"migrate_discovery": true}` {
		t.Errorf("first %s %q, want the migration mark on the device config", first.Topic, first.Payload)
	}
	if last.Topic != "homeassistant/device/dev1/config" || last.Payload != "" {
		t.Errorf("last %s %q, want the device config emptied", last.Topic, last.Payload)
	}
	for _, m := range ms[1 : len(ms)-1] {
		if !strings.HasSuffix(m.Topic, "/config") || !strings.Contains(m.Payload, `"unique_id":"pibridge_dev1_`) {
			t.Errorf("between: %s %q, want a per-entity config", m.Topic, m.Payload)
		}
	}
}

// haView evaluates availability as Home Assistant does, from the retained
// messages a fresh subscriber gets (Home Assistant after a restart): an
// entity with availability mode all is available when every topic of its
// list says online.
type haView struct {
	retained map[string]string
	cmps     map[string]struct {
		StateTopic       string `json:"state_topic"`
		AvailabilityMode string `json:"availability_mode"`
		Availability     []struct {
			Topic string `json:"topic"`
		} `json:"availability"`
	}
}

func restartHA(t *testing.T, addr string) haView {
	t.Helper()
	fresh := watch(t, addr, "homeassistant/#", base+"/#")
	v := haView{retained: map[string]string{}}
	for _, m := range fresh.all() {
		if m.Retained {
			v.retained[m.Topic] = m.Payload
		}
	}
	var dev struct {
		Cmps json.RawMessage `json:"cmps"`
	}
	if err := json.Unmarshal([]byte(v.retained["homeassistant/device/dev1/config"]), &dev); err != nil {
		t.Fatalf("device config: %v", err)
	}
	if err := json.Unmarshal(dev.Cmps, &v.cmps); err != nil {
		t.Fatal(err)
	}
	return v
}

func (v haView) available(id string) bool {
	c := v.cmps[id]
	if len(c.Availability) == 0 {
		return true
	}
	for _, a := range c.Availability {
		if v.retained[a.Topic] != "online" {
			if c.AvailabilityMode == "all" || len(c.Availability) == 1 {
				return false
			}
		} else if c.AvailabilityMode == "any" {
			return true
		}
	}
	return c.AvailabilityMode != "any"
}

// testHARestartStale plays Home Assistant restarts: with the bridge
// running and one sensor stale, only that sensor's entities are
// unavailable (with an old value retained); with the bridge stopped,
// every entity is. A sensor that recovers is available only once its new
// reading is out.
func testHARestartStale(t *testing.T, addr string) {
	var mu sync.Mutex
	staleSet := map[string]bool{}
	stale := func(name string) bool { mu.Lock(); defer mu.Unlock(); return staleSet[name] }
	setStale := func(up bool, names ...string) {
		mu.Lock()
		for _, n := range names {
			staleSet[n] = up
		}
		mu.Unlock()
	}
	core, _ := newCore(t)
	for _, s := range testSignals {
		switch s.Kind {
		case pibridge.KindSensor, pibridge.KindPWM:
			core.Emit(s.Name, pibridge.Number(0.5), time.Time{})
		default:
			core.Emit(s.Name, pibridge.Bool(true), time.Time{})
		}
	}
	w := watch(t, addr, base+"/#")
	_, stop := haClient(t, core, addr, nil, stale)
	w.waitFor("every sensor available", func([]msg) bool {
		for _, topic := range []string{"air/temperature", "air/humidity", "cpu"} {
			if av := w.on(base + "/" + topic + "/available"); len(av) == 0 || av[len(av)-1].Payload != "online" {
				return false
			}
		}
		return true
	})

	setStale(true, "air.temperature", "air.humidity")
	// last reads the watcher once: it may receive between two reads.
	last := func(topic string) string {
		ms := w.on(base + "/" + topic)
		if len(ms) == 0 {
			return ""
		}
		return ms[len(ms)-1].Payload
	}
	w.waitFor("the stale sensor offline", func([]msg) bool {
		return last("air/temperature/available") == "offline" && last("air/humidity/available") == "offline"
	})
	v := restartHA(t, addr)
	for _, id := range []string{"air_temperature", "air_humidity"} {
		if v.available(id) {
			t.Errorf("%s available after a restart of Home Assistant, with its sensor stale", id)
		}
		if v.retained[v.cmps[id].StateTopic] == "" {
			t.Errorf("%s: no retained value: the test shows nothing", id)
		}
	}
	for _, id := range []string{"cpu", "door", "fan", "pump", "stuck"} {
		if !v.available(id) {
			t.Errorf("%s unavailable, with the bridge running and its signal fresh", id)
		}
	}

	// Recovery: the new reading comes first, then online.
	from := len(w.all())
	setStale(false, "air.temperature", "air.humidity")
	core.Emit("air.temperature", pibridge.Number(21), time.Time{})
	core.Emit("air.humidity", pibridge.Number(40), time.Time{})
	ms := w.waitFor("air.temperature online", func([]msg) bool {
		return last("air/temperature/available") == "online"
	})[from:]
	reading := slices.IndexFunc(ms, func(m msg) bool { return m.Topic == base+"/air/temperature" })
	online := slices.IndexFunc(ms, func(m msg) bool { return m.Topic == base+"/air/temperature/available" })
	if reading < 0 || reading > online {
		t.Errorf("online before the fresh reading:\n%s", dump(ms))
	}

	stop()
	v = restartHA(t, addr)
	if v.retained[base+"/status"] != "offline" {
		t.Fatalf("status %q after the bridge stopped", v.retained[base+"/status"])
	}
	for id := range v.cmps {
		if v.available(id) {
			t.Errorf("%s available with the bridge stopped: its retained %q would show as current", id, v.retained[v.cmps[id].StateTopic])
		}
	}
	if len(v.cmps) != testEntities {
		t.Errorf("%d components, want %d", len(v.cmps), testEntities)
	}
}

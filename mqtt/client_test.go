package mqtt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	pibridge "pibridge"
)

const base = "pibridge/dev1"

// TestClient runs the client against the embedded broker and a real
// mosquitto.
func TestClient(t *testing.T) {
	tests := []struct {
		name string
		fn   func(t *testing.T, addr string)
	}{
		{"readings, status and meta", testReadings},
		{"commands", testCommands},
		{"rejected commands", testRejectedCommands},
		{"retained command moves nothing", testRetainedCommand},
		{"command sent while away moves nothing", testStaleQueuedCommand},
		{"commands keep their order", testCommandOrder},
		{"outage: queued readings arrive in order", testOutage},
		{"queue_max drops the oldest", testQueueOverflow},
		{"home assistant per-entity discovery", testHomeAssistant},
		{"home assistant per-entity: removed entities", testHomeAssistantRemoved},
		{"removed signals: retained topics cleared", func(t *testing.T, addr string) { testRemovedSignals(t, addr, nil) }},
		{"removed signals, discovery off", func(t *testing.T, addr string) {
			testRemovedSignals(t, addr, func(c *Config) { c.HomeAssistant.Discovery = false })
		}},
		{"home assistant device config", testHADeviceConfig},
		{"home assistant migration", testHAMigration},
		{"home assistant removed component", testHARemovedComponent},
		{"home assistant back to per-entity", testHARollback},
		{"home assistant restart: stale and stopped", testHARestartStale},
		{"stopping sends what is queued, then offline", testStopFlushes},
	}
	for _, kind := range brokerKinds {
		t.Run(kind.name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) { tt.fn(t, kind.start(t)) })
			}
		})
	}
	// The same against mosquitto with the outbox on disk.
	t.Run("mosquitto, disk outbox", func(t *testing.T) {
		t.Setenv(outboxEnv, "disk")
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) { tt.fn(t, startMosquitto(t)) })
		}
	})
}

// reading is a reading payload decoded strictly.
type reading struct {
	Value json.RawMessage `json:"value"`
	Unit  string          `json:"unit"`
	TS    string          `json:"ts"`
	Seq   uint64          `json:"seq"`
}

func decodeReading(t *testing.T, m msg) reading {
	t.Helper()
	var r reading
	dec := json.NewDecoder(strings.NewReader(m.Payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("%s: %q: %v", m.Topic, m.Payload, err)
	}
	if r.Seq == 0 || len(r.Value) == 0 {
		t.Fatalf("%s: %q: value or seq missing", m.Topic, m.Payload)
	}
	if _, err := time.Parse(pibridge.TimeFormat, r.TS); err != nil || !strings.HasSuffix(r.TS, "Z") {
		t.Fatalf("%s: ts %q is not RFC 3339 UTC with milliseconds", m.Topic, r.TS)
	}
	return r
}

// isReadingTopic reports whether topic is a signal's state topic.
func isReadingTopic(topic string) bool {
	rest, ok := strings.CutPrefix(topic, base+"/")
	if !ok {
		return false
	}
	switch rest {
	case "status", "meta", "ack":
		return false
	}
	return !strings.HasSuffix(rest, "/set") && !strings.HasSuffix(rest, "/pulse") && !strings.HasSuffix(rest, "/available")
}

func readingSeqs(t *testing.T, ms []msg) []uint64 {
	t.Helper()
	var seqs []uint64
	for _, m := range ms {
		if isReadingTopic(m.Topic) {
			seqs = append(seqs, decodeReading(t, m).Seq)
		}
	}
	return seqs
}

func payloads(ms []msg) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Payload
	}
	return out
}

func testReadings(t *testing.T, addr string) {
	core, _ := newCore(t)
	core.Emit("air.temperature", pibridge.Number(19.5), time.Time{}) // before the client: sent as state
	w := watch(t, addr, base+"/#")
	c, stop := startClient(t, core, "tcp://"+addr, nil)

	w.waitFor("online, meta and the state", func(ms []msg) bool {
		return len(w.on(base+"/status")) > 0 && len(w.on(base+"/meta")) > 0 && len(w.on(base+"/air/temperature")) > 0
	})
	if got := payloads(w.on(base + "/status")); !reflect.DeepEqual(got, []string{"online"}) {
		t.Errorf("status = %q, want [online]", got)
	}
	if !c.Connected() {
		t.Error("Connected() = false while connected")
	}
	const n = 50
	for i := 0; i < n; i++ {
		core.Emit("air.temperature", pibridge.Number(20+float64(i)/10), time.Time{})
		if i%10 == 0 {
			core.Emit("door", pibridge.Bool(i%20 == 0), time.Time{})
		}
	}
	last := core.Emitted()
	ms := w.waitFor("every reading", func(ms []msg) bool {
		seqs := readingSeqs(t, ms)
		return len(seqs) > 0 && seqs[len(seqs)-1] == last
	})
	seqs := readingSeqs(t, ms)
	if len(seqs) != int(last) {
		t.Errorf("got %d readings, want %d: %v", len(seqs), last, seqs)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("seqs out of order or missing at %d: %v", i, seqs)
		}
	}
	temps := w.on(base + "/air/temperature")
	if r := decodeReading(t, temps[0]); string(r.Value) != "19.5" || r.Unit != "°C" || r.Seq != 1 {
		t.Errorf("first reading %q, want value 19.5 °C seq 1", temps[0].Payload)
	}
	if r := decodeReading(t, w.on(base + "/door")[0]); string(r.Value) != "true" || r.Unit != "" {
		t.Errorf("door reading %q, want value true and no unit", w.on(base + "/door")[0].Payload)
	}
	eventually(t, "an empty outbox", func() bool { return c.Queued() == 0 })
	if s := c.Stats(); s.Published != uint64(n+5) || s.Dropped != 0 || s.Connects != 1 {
		t.Errorf("stats = %+v, want %d published, none dropped, one connect", s, n+5)
	}

	// Retained: a newcomer gets the last reading, flagged retained.
	late := watch(t, addr, base+"/air/temperature", base+"/meta")
	got := late.waitFor("retained reading and meta", func(ms []msg) bool { return len(ms) == 2 })
	for _, m := range got {
		if !m.Retained {
			t.Errorf("%s not retained", m.Topic)
		}
		if m.Topic == base+"/air/temperature" {
			if r := decodeReading(t, m); r.Seq != last || string(r.Value) != "24.9" {
				t.Errorf("retained reading %q, want the last (24.9, seq %d)", m.Payload, last)
			}
		}
	}

	// meta: the hello's device and signals.
	var meta struct {
		Device  map[string]string `json:"device"`
		Signals []map[string]any  `json:"signals"`
	}
	if err := json.Unmarshal([]byte(w.on(base + "/meta")[0].Payload), &meta); err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"id": "dev1", "name": "Test Pi", "version": "1.2.3"}; !reflect.DeepEqual(meta.Device, want) {
		t.Errorf("meta device = %v, want %v", meta.Device, want)
	}
	if len(meta.Signals) != len(testSignals) {
		t.Fatalf("meta has %d signals, want %d", len(meta.Signals), len(testSignals))
	}
	wantFan := map[string]any{"name": "fan", "kind": "pwm", "writable": true, "min": 0.0, "max": 1.0}
	if !reflect.DeepEqual(meta.Signals[3], wantFan) {
		t.Errorf("meta fan = %v, want %v", meta.Signals[3], wantFan)
	}

	stop()
	w.waitFor("offline", func([]msg) bool { return len(w.on(base+"/status")) == 2 })
	if got := payloads(w.on(base + "/status")); !reflect.DeepEqual(got, []string{"online", "offline"}) {
		t.Errorf("status = %q, want [online offline]", got)
	}
	if c.Connected() {
		t.Error("Connected() = true after Run returned")
	}
	st := watch(t, addr, base+"/status")
	if m := st.waitFor("retained status", func(ms []msg) bool { return len(ms) == 1 })[0]; m.Payload != "offline" || !m.Retained {
		t.Errorf("retained status = %+v, want offline", m)
	}
}

// acks returns the ack payloads received.
func acks(w *watcher) []string { return payloads(w.on(base + "/ack")) }

func waitAck(w *watcher, id string) string {
	w.t.Helper()
	var found string
	w.waitFor("ack "+id, func([]msg) bool {
		for _, a := range acks(w) {
			if strings.Contains(a, `"id":"`+id+`"`) {
				found = a
				return true
			}
		}
		return false
	})
	return found
}

func waitOnline(w *watcher) {
	w.t.Helper()
	w.waitFor("online", func([]msg) bool {
		st := w.on(base + "/status")
		return len(st) > 0 && st[len(st)-1].Payload == "online"
	})
}

func testCommands(t *testing.T, addr string) {
	core, act := newCore(t)
	w := watch(t, addr, base+"/#")
	startClient(t, core, "tcp://"+addr, nil)
	waitOnline(w)

	w.publish(base+"/pump/set", `{"value":"on","id":"c1"}`, false)
	if got := waitAck(w, "c1"); got != `{"id":"c1","name":"pump","ok":true}` {
		t.Errorf("ack = %s", got)
	}
	pump := w.waitFor("echo", func([]msg) bool { return len(w.on(base+"/pump")) == 1 })
	_ = pump
	if r := decodeReading(t, w.on(base + "/pump")[0]); string(r.Value) != "true" {
		t.Errorf("echo %q, want value true", w.on(base + "/pump")[0].Payload)
	}

	w.publish(base+"/pump/set", "off", false) // no id: no ack, only the echo
	w.publish(base+"/fan/set", `{"value":0.25,"id":"c2"}`, false)
	waitAck(w, "c2")
	w.publish(base+"/pump/pulse", `{"for":"50ms","id":"c3"}`, false)
	waitAck(w, "c3")
	w.publish(base+"/pump/pulse", `{"id":"c4"}`, false) // pump's own length
	waitAck(w, "c4")
	w.publish(base+"/pump/set", "toggle", false)
	w.waitFor("every echo", func([]msg) bool { return len(w.on(base+"/pump")) == 7 })

	want := []string{"set pump true", "set pump false", "set fan 0.25", "pulse pump 50ms", "pulse pump 30s", `set pump "toggle"`}
	if got := act.Calls(); !reflect.DeepEqual(got, want) {
		t.Errorf("actuator calls = %q, want %q", got, want)
	}
	if got := acks(w); len(got) != 4 {
		t.Errorf("acks = %q, want four (commands without id are not acked when they succeed)", got)
	}
	var values []string
	for _, m := range w.on(base + "/pump") {
		values = append(values, string(decodeReading(t, m).Value))
	}
	if want := []string{"true", "false", "true", "false", "true", "false", "true"}; !reflect.DeepEqual(values, want) {
		t.Errorf("pump echoes = %v, want %v", values, want)
	}
}

func testRejectedCommands(t *testing.T, addr string) {
	core, act := newCore(t)
	w := watch(t, addr, base+"/ack")
	startClient(t, core, "tcp://"+addr, nil)
	status := watch(t, addr, base+"/status")
	waitOnline(status)

	tests := []struct {
		topic, payload string
		ack            string
	}{
		{"nosuch/set", `{"value":true,"id":"r1"}`, `{"id":"r1","name":"nosuch","ok":false,"error":"nosuch: no such signal"}`},
		{"nosuch/set", `banana`, `{"name":"nosuch","ok":false,"error":"nosuch: no such signal"}`},
		{"door/set", `{"value":"on","id":"r2"}`, `{"id":"r2","name":"door","ok":false,"error":"door: not writable: it is an input"}`},
		{"cpu/set", `1`, `{"name":"cpu","ok":false,"error":"cpu: not writable: it is a sensor"}`},
		{"air/temperature/set", `{"value":1,"id":"r6"}`, `{"id":"r6","name":"air.temperature","ok":false,"error":"air.temperature: not writable: it is a sensor"}`},
		{"door/pulse", `1s`, `{"name":"door","ok":false,"error":"door: not writable: it is an input"}`},
		{"pump/set", `banana`, `{"name":"pump","ok":false,"error":"pump: bad value \"banana\": want on, off, true, false, toggle or a number"}`},
		{"pump/set", `{"value":2,"id":"r3"}`, `{"id":"r3","name":"pump","ok":false,"error":"pump: bad value 2: an output takes on, off, true, false, 1, 0 or toggle"}`},
		{"pump/set", `{"id":"r4"}`, `{"id":"r4","name":"pump","ok":false,"error":"pump: bad value: \"value\" is missing"}`},
		{"fan/set", `1.5`, `{"name":"fan","ok":false,"error":"fan: bad value 1.5: a pwm takes a number from 0 to 1"}`},
		{"fan/pulse", `{"for":"1s","id":"r5"}`, `{"id":"r5","name":"fan","ok":false,"error":"fan: bad value: only outputs can be pulsed"}`},
		{"pump/pulse", `forever`, `{"name":"pump","ok":false,"error":"pump: bad value: pulse length \"forever\": want a duration like \"500ms\""}`},
		{"pump/pulse", `2h`, `{"name":"pump","ok":false,"error":"pump: bad value: pulse length 2h0m0s: must be above 0 and at most 1h0m0s"}`},
		{"stuck/pulse", `{"id":"r7"}`, `{"id":"r7","name":"stuck","ok":false,"error":"stuck: bad value: pulse length is missing (want e.g. \"500ms\"; or give the output a default, outputs[].pulse)"}`},
		{"pump/set", strings.Repeat("1", 2000), `{"name":"pump","ok":false,"error":"pump: bad value: payload over 1024 bytes"}`},
	}
	for _, tt := range tests {
		w.publish(base+"/"+tt.topic, tt.payload, false)
	}
	// The actuator refusing is a failure too, and it is acked with the reason.
	w.publish(base+"/stuck/set", `{"value":true,"id":"r9"}`, false)
	waitAck(w, "r9")
	got := acks(w)
	want := make([]string, 0, len(tests)+1)
	for _, tt := range tests {
		want = append(want, tt.ack)
	}
	want = append(want, `{"id":"r9","name":"stuck","ok":false,"error":"stuck: conflict: interlock with pump"}`)
	if len(got) != len(want) {
		t.Fatalf("got %d acks, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%s %q:\n got  %s\n want %s", tests[min(i, len(tests)-1)].topic, tests[min(i, len(tests)-1)].payload, got[i], want[i])
		}
		if !json.Valid([]byte(got[i])) {
			t.Errorf("ack %s is not JSON", got[i])
		}
	}
	if calls := act.Calls(); !reflect.DeepEqual(calls, []string{"set stuck true"}) {
		t.Errorf("actuator calls = %q, want only the stuck one", calls)
	}
}

func testRetainedCommand(t *testing.T, addr string) {
	core, act := newCore(t)
	w := watch(t, addr, base+"/ack")
	// Left over from some earlier mistake: a retained "on".
	w.publish(base+"/pump/set", "on", true)
	w.publish(base+"/pump/pulse", `{"for":"1s","id":"old"}`, true)
	w.sync() // both are retained and forwarded (to nobody) before the bridge subscribes
	startClient(t, core, "tcp://"+addr, nil)

	w.waitFor("the refusals", func([]msg) bool { return len(acks(w)) == 2 })
	w.publish(base+"/pump/set", `{"value":"off","id":"live"}`, false)
	waitAck(w, "live")
	if calls := act.Calls(); !reflect.DeepEqual(calls, []string{"set pump false"}) {
		t.Errorf("actuator calls = %q, want only the live command", calls)
	}
	got := acks(w)
	sort.Strings(got[:2]) // the two retained messages may come in either order
	want := []string{
		`{"id":"old","name":"pump","ok":false,"error":"pump: retained command ignored: publish commands without the retain flag"}`,
		`{"name":"pump","ok":false,"error":"pump: retained command ignored: publish commands without the retain flag"}`,
		`{"id":"live","name":"pump","ok":true}`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("acks:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// testStaleQueuedCommand checks that the persistent session does not keep
// commands for the bridge while it is away: they would be stale on return.
func testStaleQueuedCommand(t *testing.T, addr string) {
	core, act := newCore(t)
	w := watch(t, addr, base+"/ack", base+"/status")
	_, stop := startClient(t, core, "tcp://"+addr, nil)
	waitOnline(w)
	stop()
	w.waitFor("offline", func([]msg) bool { return len(w.on(base+"/status")) == 2 })

	w.publish(base+"/pump/set", `{"value":"on","id":"while-away"}`, false)
	w.sync()                                 // forwarded (or kept) before the bridge returns
	startClient(t, core, "tcp://"+addr, nil) // same client id, same session
	w.waitFor("online again", func([]msg) bool { return len(w.on(base+"/status")) == 3 })
	w.publish(base+"/pump/set", `{"value":"off","id":"now"}`, false)
	waitAck(w, "now")
	if calls := act.Calls(); !reflect.DeepEqual(calls, []string{"set pump false"}) {
		t.Errorf("actuator calls = %q, want only the command sent while connected", calls)
	}
}

func testCommandOrder(t *testing.T, addr string) {
	core, act := newCore(t)
	w := watch(t, addr, base+"/ack", base+"/status")
	startClient(t, core, "tcp://"+addr, nil)
	waitOnline(w)
	const n = 40
	var want []string
	for i := 0; i < n; i++ {
		v := []string{"on", "off"}[i%2]
		w.client.Publish(base+"/pump/set", 1, false, fmt.Sprintf(`{"value":%q,"id":"o%d"}`, v, i))
		want = append(want, "set pump "+map[string]string{"on": "true", "off": "false"}[v])
	}
	w.waitFor("every ack", func([]msg) bool { return len(acks(w)) == n })
	if got := act.Calls(); !reflect.DeepEqual(got, want) {
		t.Errorf("commands executed out of order:\n got  %q\n want %q", got, want)
	}
	if last, _ := core.Latest("pump"); last.Value.Bool() {
		t.Error("pump is on after on/off/…/off")
	}
}

// testOutage starts the client while the broker is unreachable, queues
// readings, then makes the broker reachable; later it cuts the connection
// in the middle of a run and restores it.
func testOutage(t *testing.T, addr string) {
	core, _ := newCore(t)
	w := watch(t, addr, base+"/#")
	px := newProxy(t, addr) // nothing listens there yet
	c, _ := startClient(t, core, "tcp://"+px.addr, nil)

	const n = 30
	for i := 0; i < n; i++ {
		core.Emit("cpu", pibridge.Number(float64(40+i)), time.Time{})
	}
	awaitJournal(t, core)
	if q := c.Queued(); q != n {
		t.Errorf("Queued() = %d with the broker away, want %d", q, n)
	}
	if c.Connected() {
		t.Error("Connected() = true with no broker")
	}
	px.start(t)
	ms := w.waitFor("the queued readings", func(ms []msg) bool { return len(readingSeqs(t, ms)) >= n })
	if seqs := readingSeqs(t, ms); !slices.Equal(seqs, seqRange(1, n)) {
		t.Errorf("after the outage got seqs %v, want 1..%d in order, once each", seqs, n)
	}
	eventually(t, "an empty outbox", func() bool { return c.Queued() == 0 })

	// Cut the connection mid-run: the broker publishes the will.
	px.stop()
	eventually(t, "the client to notice", func() bool { return !c.Connected() })
	w.waitFor("the will", func([]msg) bool {
		st := w.on(base + "/status")
		return len(st) > 0 && st[len(st)-1].Payload == "offline"
	})
	for i := 0; i < n; i++ {
		core.Emit("cpu", pibridge.Number(float64(70+i)), time.Time{})
	}
	px.start(t)
	w.waitFor("online again", func([]msg) bool {
		st := w.on(base + "/status")
		return len(st) > 0 && st[len(st)-1].Payload == "online"
	})
	ms = w.waitFor("the readings of the second outage", func(ms []msg) bool {
		seqs := readingSeqs(t, ms)
		return len(seqs) > 0 && seqs[len(seqs)-1] == 2*n
	})
	// At least once, in order of first arrival.
	var firsts []uint64
	seen := map[uint64]bool{}
	for _, s := range readingSeqs(t, ms) {
		if !seen[s] {
			seen[s] = true
			firsts = append(firsts, s)
		}
	}
	if !slices.Equal(firsts, seqRange(1, 2*n)) {
		t.Errorf("got seqs %v, want 1..%d", readingSeqs(t, ms), 2*n)
	}
	if st := c.Stats(); st.Connects != 2 {
		t.Errorf("Connects = %d, want 2", st.Connects)
	}
}

func seqRange(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

func testQueueOverflow(t *testing.T, addr string) {
	core, _ := newCore(t)
	w := watch(t, addr, base+"/#")
	px := newProxy(t, addr)
	c, _ := startClient(t, core, "tcp://"+px.addr, func(c *Config) { c.QueueMax = 5 })
	for i := 0; i < 12; i++ {
		core.Emit("cpu", pibridge.Number(float64(i)), time.Time{})
	}
	awaitJournal(t, core)
	if s := c.Stats(); s.Queued != 5 || s.Dropped != 7 {
		t.Errorf("Queued %d, Dropped %d; want 5 and 7", s.Queued, s.Dropped)
	}
	px.start(t)
	ms := w.waitFor("the kept readings", func(ms []msg) bool { return slices.Contains(readingSeqs(t, ms), 12) })
	if seqs := readingSeqs(t, ms); !slices.Equal(seqs, seqRange(8, 12)) {
		t.Errorf("got seqs %v, want the newest five, 8..12", seqs)
	}
}

// discoveryConfigs returns the discovery configs among ms.
func discoveryConfigs(ms []msg) []msg {
	var out []msg
	for _, m := range ms {
		if strings.HasSuffix(m.Topic, "/config") {
			out = append(out, m)
		}
	}
	return out
}

// testHomeAssistant checks every per-entity discovery config field by
// field, and the answer to Home Assistant's birth message.
func testHomeAssistant(t *testing.T, addr string) {
	core, _ := newCore(t)
	core.Emit("cpu", pibridge.Number(41), time.Time{})
	w := watch(t, addr, "homeassistant/#", base+"/cpu")
	startClient(t, core, "tcp://"+addr, perEntity)
	ms := discoveryConfigs(w.waitFor("discovery", func(ms []msg) bool { return len(discoveryConfigs(ms)) == testEntities }))
	got := map[string]map[string]any{}
	for _, m := range ms {
		if !json.Valid([]byte(m.Payload)) || bytes.Contains([]byte(m.Payload), []byte(`\u`)) {
			t.Errorf("%s: not JSON, or escaped characters: %s", m.Topic, m.Payload)
		}
		var v map[string]any
		json.Unmarshal([]byte(m.Payload), &v)
		got[m.Topic] = v
	}
	common := func(name, object, state string) map[string]any {
		return map[string]any{
			"name":           name,
			"unique_id":      "pibridge_dev1_" + object,
			"state_topic":    "pibridge/dev1/" + state,
			"value_template": "{{ value_json.value }}",
			"availability":   []any{map[string]any{"topic": "pibridge/dev1/status"}},
			"qos":            1.0,
			"device": map[string]any{"identifiers": []any{"pibridge_dev1"}, "name": "Test Pi",
				"model": "pibridge", "manufacturer": "pibridge", "sw_version": "1.2.3"},
			"origin": map[string]any{"name": "pibridge", "sw_version": "1.2.3"},
		}
	}
	with := func(m map[string]any, kv ...any) map[string]any {
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	switchOf := func(name string) map[string]any {
		return with(common(name, name, name),
			"value_template", "{{ 'on' if value_json.value else 'off' }}",
			"command_topic", "pibridge/dev1/"+name+"/set",
			"payload_on", "on", "payload_off", "off", "state_on", "on", "state_off", "off")
	}
	buttonOf := func(name, pulse string) map[string]any {
		b := with(common(name+" pulse", name+"_pulse", ""),
			"command_topic", "pibridge/dev1/"+name+"/pulse", "payload_press", pulse)
		delete(b, "state_topic") // a button has no state
		delete(b, "value_template")
		return b
	}
	sensorOf := func(name, object, state, class, unit string) map[string]any {
		return with(common(name, object, state), "device_class", class, "unit_of_measurement", unit,
			"state_class", "measurement", "availability_mode", "all",
			"availability", []any{map[string]any{"topic": "pibridge/dev1/status"}, map[string]any{"topic": "pibridge/dev1/" + state + "/available"}})
	}
	want := map[string]map[string]any{
		"homeassistant/binary_sensor/dev1/door/config": with(common("door", "door", "door"),
			"value_template", "{{ 'ON' if value_json.value else 'OFF' }}"),
		"homeassistant/switch/dev1/pump/config":       switchOf("pump"),
		"homeassistant/switch/dev1/stuck/config":      switchOf("stuck"),
		"homeassistant/button/dev1/pump_pulse/config": buttonOf("pump", "30s"),
		"homeassistant/number/dev1/fan/config": with(common("fan", "fan", "fan"),
			"command_topic", "pibridge/dev1/fan/set", "min", 0.0, "max", 1.0, "step", 0.01, "mode", "slider"),
		"homeassistant/sensor/dev1/air_temperature/config": sensorOf("air.temperature", "air_temperature", "air/temperature", "temperature", "°C"),
		"homeassistant/sensor/dev1/air_humidity/config":    sensorOf("air.humidity", "air_humidity", "air/humidity", "humidity", "%"),
		"homeassistant/sensor/dev1/cpu/config":             sensorOf("cpu", "cpu", "cpu", "temperature", "°C"),
	}
	for topic, wantFields := range want {
		gotFields, ok := got[topic]
		if !ok {
			t.Errorf("no discovery on %s", topic)
			continue
		}
		for k, v := range wantFields {
			if !reflect.DeepEqual(gotFields[k], v) {
				t.Errorf("%s: %s = %#v, want %#v", topic, k, gotFields[k], v)
			}
		}
		for k := range gotFields {
			if _, expected := wantFields[k]; !expected {
				t.Errorf("%s: unexpected field %s = %#v", topic, k, gotFields[k])
			}
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d configs, want %d", len(got), len(want))
	}

	// Home Assistant restarts: discovery again, then the states, after a
	// short random pause; a retained birth message does not count.
	states := len(w.on(base + "/cpu"))
	w.publish("homeassistant/status", "online", true)
	w.publish("homeassistant/status", "online", false)
	asked := time.Now()
	w.waitFor("discovery and the states again", func(ms []msg) bool {
		return len(discoveryConfigs(ms)) == 2*testEntities && len(w.on(base+"/cpu")) > states
	})
	if d := time.Since(asked); d < testTiming.haDelayMin {
		t.Errorf("answered the birth message after %s, before the %s pause", d, testTiming.haDelayMin)
	}
	w.sync()
	if n := len(discoveryConfigs(w.all())); n != 2*testEntities {
		t.Errorf("%d configs after one live birth message, want %d (the retained one must not count)", n, 2*testEntities)
	}
	w.publish("homeassistant/status", "", true) // clear the retained birth message for the next test
}

// testHomeAssistantRemoved starts the bridge where an earlier
// configuration had entities it no longer has: their retained configs are
// emptied, so Home Assistant drops them. Another program's entity under
// the same node id is left alone.
func testHomeAssistantRemoved(t *testing.T, addr string) {
	w := watch(t, addr, "homeassistant/#")
	old := `{"name":"old relay","unique_id":"pibridge_dev1_old_relay","state_topic":"pibridge/dev1/old_relay"}`
	w.publish("homeassistant/switch/dev1/old_relay/config", old, true)
	// The fan used to be an output: its switch config must go, the new number stays.
	w.publish("homeassistant/switch/dev1/fan/config", `{"name":"fan","unique_id":"pibridge_dev1_fan"}`, true)
	foreign := `{"name":"other","unique_id":"zigbee_0x1234"}`
	w.publish("homeassistant/sensor/dev1/other/config", foreign, true)
	w.sync()

	core, _ := newCore(t)
	startClient(t, core, "tcp://"+addr, perEntity)
	w.waitFor("the old configs emptied", func(ms []msg) bool {
		cleared := 0
		for _, m := range ms {
			if m.Payload == "" && (m.Topic == "homeassistant/switch/dev1/old_relay/config" || m.Topic == "homeassistant/switch/dev1/fan/config") {
				cleared++
			}
		}
		return cleared == 2
	})
	// What is retained now: our configs and the foreign one.
	late := watch(t, addr, "homeassistant/+/dev1/+/config")
	late.sync()
	var topics []string
	for _, m := range late.all() {
		topics = append(topics, m.Topic)
		if m.Topic == "homeassistant/sensor/dev1/other/config" && m.Payload != foreign {
			t.Errorf("foreign entity changed: %q", m.Payload)
		}
	}
	sort.Strings(topics)
	want := []string{
		"homeassistant/binary_sensor/dev1/door/config",
		"homeassistant/button/dev1/pump_pulse/config",
		"homeassistant/number/dev1/fan/config",
		"homeassistant/sensor/dev1/air_humidity/config",
		"homeassistant/sensor/dev1/air_temperature/config",
		"homeassistant/sensor/dev1/cpu/config",
		"homeassistant/sensor/dev1/other/config",
		"homeassistant/switch/dev1/pump/config",
		"homeassistant/switch/dev1/stuck/config",
	}
	if !reflect.DeepEqual(topics, want) {
		t.Errorf("retained configs:\n got  %q\n want %q", topics, want)
	}
}

// testStopFlushes stops the client right after readings are emitted, as
// cmd/bridge does after putting outputs in their safe state: they still
// reach the broker, before `offline`.
func testStopFlushes(t *testing.T, addr string) {
	core, _ := newCore(t)
	w := watch(t, addr, base+"/#")
	_, stop := startClient(t, core, "tcp://"+addr, nil)
	waitOnline(w)
	const n = 10
	for i := 0; i < n; i++ {
		core.Emit("pump", pibridge.Bool(i%2 == 1), time.Time{})
	}
	stop()
	ms := w.waitFor("offline", func([]msg) bool {
		st := w.on(base + "/status")
		return len(st) > 0 && st[len(st)-1].Payload == "offline"
	})
	if seqs := readingSeqs(t, ms); !slices.Equal(seqs, seqRange(1, n)) {
		t.Errorf("before offline got seqs %v, want 1..%d", seqs, n)
	}
	if last := ms[len(ms)-1]; last.Topic != base+"/status" || last.Payload != "offline" {
		t.Errorf("last message %s %q, want offline after the readings", last.Topic, last.Payload)
	}
}

// testRemovedSignals starts the bridge where the previous run (its
// retained meta) had signals it no longer has: their retained state and
// availability are emptied; everything else retained stays.
func testRemovedSignals(t *testing.T, addr string, edit func(*Config)) {
	w := watch(t, addr, base+"/#")
	w.publish(base+"/meta", `{"device":{"id":"dev1"},"signals":[`+
		`{"name":"door","kind":"input"},{"name":"old_relay","kind":"output"},`+
		`{"name":"soil.a0","kind":"sensor","unit":"V"},{"name":"cpu","kind":"sensor"},{"name":"a/#","kind":"output"}]}`, true)
	removed := map[string]string{
		base + "/old_relay":         `{"value":true,"ts":"2026-12-01T00:00:00.000Z","seq":7}`,
		base + "/soil/a0":           `{"value":1.2,"unit":"V","ts":"2026-12-01T00:00:00.000Z","seq":8}`,
		base + "/soil/a0/available": "online",
	}
	kept := map[string]string{
		base + "/notes":       "not a signal of ours: kept",
		base + "/door":        `{"value":false,"ts":"2026-12-01T00:00:00.000Z","seq":6}`,
		base + "/old_relay/x": "below a removed signal, not its topic: kept",
	}
	for topic, payload := range removed {
		w.publish(topic, payload, true)
	}
	for topic, payload := range kept {
		w.publish(topic, payload, true)
	}
	w.sync()

	core, _ := newCore(t)
	startClient(t, core, "tcp://"+addr, edit)
	w.waitFor("the removed signals' topics emptied", func([]msg) bool {
		for topic := range removed {
			ms := w.on(topic)
			if len(ms) == 0 || ms[len(ms)-1].Payload != "" {
				return false
			}
		}
		return true
	})
	late := watch(t, addr, base+"/#")
	late.sync()
	retained := map[string]string{}
	for _, m := range late.all() {
		retained[m.Topic] = m.Payload
	}
	for topic := range removed {
		if p, ok := retained[topic]; ok {
			t.Errorf("%s still retained: %q", topic, p)
		}
	}
	for topic, payload := range kept {
		if retained[topic] != payload {
			t.Errorf("%s = %q, want %q kept", topic, retained[topic], payload)
		}
	}
	if !strings.HasPrefix(retained[base+"/meta"], `{"device":{"id":"dev1"`) || strings.Contains(retained[base+"/meta"], "old_relay") {
		t.Errorf("meta = %q, want this run's", retained[base+"/meta"])
	}
	w.publish(base+"/notes", "", true) // leave the broker as found
	w.publish(base+"/door", "", true)
	w.publish(base+"/old_relay/x", "", true)
}

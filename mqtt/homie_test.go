package mqtt

import (
	"strings"
	"testing"
	"time"

	pibridge "pibridge"
)

func TestHomieNames(t *testing.T) {
	tests := []struct {
		name    string
		signals []pibridge.Signal
		want    []string // node/prop per signal
		err     string
	}{
		{"mapping", testSignals, []string{"inputs/door", "outputs/pump", "outputs/stuck", "pwm/fan", "air/temperature", "air/humidity", "sensors/cpu"}, ""},
		{"underscore", []pibridge.Signal{{Name: "hot_water.flow_rate", Kind: pibridge.KindSensor}, {Name: "my_pump", Kind: pibridge.KindOutput}},
			[]string{"hot-water/flow-rate", "outputs/my-pump"}, ""},
		{"collision after _ → -", []pibridge.Signal{{Name: "a_b", Kind: pibridge.KindOutput}, {Name: "a-b", Kind: pibridge.KindOutput}},
			nil, `signals a_b and a-b both map to Homie node "outputs" property "a-b"`},
		{"collision with a kind node", []pibridge.Signal{{Name: "cpu", Kind: pibridge.KindSensor}, {Name: "sensors.cpu", Kind: pibridge.KindSensor}},
			nil, `signals cpu and sensors.cpu both map to Homie node "sensors" property "cpu"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			props, err := homieProps("homie/5/d", tt.signals)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range props {
				if got := p.node + "/" + p.prop; got != tt.want[i] {
					t.Errorf("%s: %s, want %s", p.signal.Name, got, tt.want[i])
				}
			}
		})
	}
}

// TestHomieCollisionStopsStart: New names both signals.
func TestHomieCollisionStopsStart(t *testing.T) {
	core, err := pibridge.New(pibridge.Options{Device: pibridge.Device{ID: "d"}, StateDir: t.TempDir(),
		Signals: []pibridge.Signal{{Name: "a_b", Kind: pibridge.KindOutput}, {Name: "a-b", Kind: pibridge.KindOutput}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { core.Close() })
	cfg := testConfig(core, DefaultBroker)
	cfg.Homie.Enabled = true
	_, err = New(Options{Core: core, Config: cfg})
	if err == nil || !strings.Contains(err.Error(), "signals a_b and a-b both map") {
		t.Fatalf("New: %v, want the collision naming both signals", err)
	}
}

func TestHomieDescription(t *testing.T) {
	props, err := homieProps("homie/5/dev1", testSignals)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	dev := pibridge.Device{ID: "dev1", Name: "Test Pi"}
	b, err := homieDescribe(dev, props, dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"homie":"5.0","version":1,"name":"Test Pi","nodes":{` +
		`"air":{"name":"air","properties":{"humidity":{"name":"air.humidity","datatype":"float","unit":"%"},"temperature":{"name":"air.temperature","datatype":"float","unit":"°C"}}},` +
		`"inputs":{"name":"Inputs","properties":{"door":{"name":"door","datatype":"boolean"}}},` +
		`"outputs":{"name":"Outputs","properties":{"pump":{"name":"pump","datatype":"boolean","settable":true},"stuck":{"name":"stuck","datatype":"boolean","settable":true}}},` +
		`"pwm":{"name":"PWM","properties":{"fan":{"name":"fan","datatype":"float","format":"0:1","settable":true}}},` +
		`"sensors":{"name":"Sensors","properties":{"cpu":{"name":"cpu","datatype":"float","unit":"°C"}}}}}`
	if string(b) != want {
		t.Errorf("description:\n got  %s\n want %s", b, want)
	}
	// Unchanged: same version; changed: a higher one.
	if again, _ := homieDescribe(dev, props, dir, time.Now()); string(again) != want {
		t.Errorf("unchanged description got a new version: %s", again)
	}
	changed, _ := homieDescribe(pibridge.Device{ID: "dev1", Name: "Renamed"}, props, dir, time.Now())
	if !strings.Contains(string(changed), `"version":2`) {
		t.Errorf("changed description: %s, want version 2", changed)
	}
}

func TestParseHomie(t *testing.T) {
	out := homieProp{signal: pibridge.Signal{Name: "pump", Kind: pibridge.KindOutput}}
	pwm := homieProp{signal: pibridge.Signal{Name: "fan", Kind: pibridge.KindPWM}}
	tests := []struct {
		p       homieProp
		payload string
		want    string // value's JSON, "" for an error
	}{
		{out, "true", "true"}, {out, "false", "false"},
		{out, "on", ""}, {out, "TRUE", ""}, {out, "1", ""}, {out, "", ""},
		{pwm, "0.5", "0.5"}, {pwm, "1", "1"}, {pwm, "5e-1", "0.5"},
		{pwm, "-", ""}, {pwm, " 0.5", ""}, {pwm, "NaN", ""}, {pwm, "+0.5", ""}, {pwm, "0.5.1", ""},
	}
	for _, tt := range tests {
		v, err := parseHomie(tt.p, []byte(tt.payload))
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("%s %q: accepted as %s", tt.p.signal.Name, tt.payload, v)
		case tt.want != "" && (err != nil || v.String() != tt.want):
			t.Errorf("%s %q: %v %v, want %s", tt.p.signal.Name, tt.payload, v, err, tt.want)
		}
	}
}

// TestHomieSet runs a Homie set through the command path against both
// brokers: accepted, $target carries the exact payload before the value;
// refused by the actuator's interlock, the refusal goes to $log/warn and
// P/D/ack, and nothing moves.
func TestHomieSet(t *testing.T) {
	for _, kind := range brokerKinds {
		t.Run(kind.name, func(t *testing.T) {
			addr := kind.start(t)
			core, act := newCore(t)
			w := watch(t, addr, "homie/5/#", base+"/ack")
			startClient(t, core, "tcp://"+addr, func(c *Config) { c.Homie.Enabled = true })
			w.waitFor("ready", func([]msg) bool {
				st := w.on("homie/5/dev1/$state")
				return len(st) > 0 && st[len(st)-1].Payload == "ready"
			})
			if st := w.on("homie/5/dev1/$state"); st[0].Payload != "init" {
				t.Errorf("first $state %q, want init", st[0].Payload)
			}

			from := len(w.all())
			w.publish("homie/5/dev1/pwm/fan/set", "0.50", false)
			ms := w.waitFor("fan's value", func([]msg) bool { return len(w.on("homie/5/dev1/pwm/fan")) > 0 })[from:]
			target := -1
			for i, m := range ms {
				if m.Topic == "homie/5/dev1/pwm/fan/$target" && m.Payload == "0.50" && target < 0 {
					target = i
				}
				if m.Topic == "homie/5/dev1/pwm/fan" && (target < 0 || target > i || m.Payload != "0.5") {
					t.Errorf("value %q at %d, $target \"0.50\" at %d:\n%s", m.Payload, i, target, dump(ms))
				}
			}

			w.publish("homie/5/dev1/outputs/stuck/set", "true", false)
			w.waitFor("the refusal", func([]msg) bool {
				return len(w.on("homie/5/dev1/$log/warn")) > 0 && len(w.on(base+"/ack")) > 0
			})
			if lw := w.on("homie/5/dev1/$log/warn")[0].Payload; !strings.Contains(lw, "interlock with pump") {
				t.Errorf("$log/warn %q", lw)
			}
			if ack := w.on(base + "/ack")[0].Payload; !strings.Contains(ack, `"name":"stuck","ok":false`) {
				t.Errorf("ack %q", ack)
			}
			if len(w.on("homie/5/dev1/outputs/stuck/$target")) > 0 {
				t.Errorf("$target published for a refused set")
			}
			calls := act.Calls()
			if len(calls) != 2 || calls[0] != "set fan 0.5" || calls[1] != "set stuck true" {
				t.Errorf("actuator calls %q", calls)
			}
		})
	}
}

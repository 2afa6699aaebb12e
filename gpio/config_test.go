package gpio

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	"periph.io/x/conn/v3/onewire"

	"pibridge"
	"pibridge/internal/strictyaml"
)

func TestNormalizePin(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{in: "GPIO17", want: "GPIO17"},
		{in: "gpio17", want: "GPIO17"},
		{in: "GPIO0", want: "GPIO0"},
		{in: "GPIO27", want: "GPIO27"},
		{in: "P1_11", want: "GPIO17"},
		{in: "p1_12", want: "GPIO18"},
		{in: "P1_3", want: "GPIO2"},
		{in: "P1_40", want: "GPIO21"},
		{in: "P1_27", want: "GPIO0"},
		{in: "GPIO28", err: `"GPIO28": no such pin`},
		{in: "GPIO99", err: `"GPIO99": no such pin`},
		{in: "GPIOx", err: `"GPIOx": no such pin`},
		{in: "P1_2", err: `"P1_2" is 5V power, not a GPIO`},
		{in: "P1_1", err: `"P1_1" is 3.3V power, not a GPIO`},
		{in: "P1_6", err: `"P1_6" is ground, not a GPIO`},
		{in: "P1_0", err: `"P1_0": no such pin (the header has P1_1 to P1_40)`},
		{in: "P1_41", err: `"P1_41": no such pin (the header has P1_1 to P1_40)`},
		{in: "17", err: `"17": ambiguous; write GPIO17 for the BCM number or P1_17 for the header pin`},
		{in: "", err: `missing (want e.g. GPIO17 or P1_11)`},
		{in: "LED0", err: `"LED0": no such pin`},
	}
	for _, tt := range tests {
		got, err := NormalizePin(tt.in)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("NormalizePin(%q) error = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("NormalizePin(%q) = %q, %v, want %q", tt.in, got, err, tt.want)
		}
	}
}

// The header map has each of GPIO0..GPIO27 exactly once, and the power and
// ground pins of the real header.
func TestHeaderMap(t *testing.T) {
	seen := map[int]int{}
	var v33, v5, gnd []int
	for pin := 1; pin <= 40; pin++ {
		switch g := header40[pin]; g {
		case hdr3V3:
			v33 = append(v33, pin)
		case hdr5V:
			v5 = append(v5, pin)
		case hdrGND:
			gnd = append(gnd, pin)
		default:
			if prev, dup := seen[int(g)]; dup {
				t.Errorf("GPIO%d on P1_%d and P1_%d", g, prev, pin)
			}
			seen[int(g)] = pin
		}
	}
	for g := 0; g <= MaxGPIO; g++ {
		if _, ok := seen[g]; !ok {
			t.Errorf("GPIO%d is not on the header map", g)
		}
	}
	check := func(what string, got, want []int) {
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s pins = %v, want %v", what, got, want)
		}
	}
	check("3.3V", v33, []int{1, 17})
	check("5V", v5, []int{2, 4})
	check("ground", gnd, []int{6, 9, 14, 20, 25, 30, 34, 39})
	// Spot checks against the pinout printed on every Pi header diagram.
	for pin, g := range map[int]int{7: 4, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 32: 12, 33: 13, 35: 19, 40: 21} {
		if int(header40[pin]) != g {
			t.Errorf("P1_%d = GPIO%d, want GPIO%d", pin, header40[pin], g)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // every problem, in order
	}{
		{"demo is valid", demoConfig(t), nil},
		{"empty is valid", Config{}, nil},
		{"unknown pin", Config{Outputs: []OutputConfig{{Name: "a", Pin: "GPIO2"}, {Name: "b", Pin: "GPIO99"}}},
			[]string{`outputs[1].pin: "GPIO99": no such pin`}},
		{"power pin", Config{Inputs: []InputConfig{{Name: "a", Pin: "P1_2"}}},
			[]string{`inputs[0].pin: "P1_2" is 5V power, not a GPIO`}},
		{"missing pin", Config{Inputs: []InputConfig{{Name: "a"}}},
			[]string{`inputs[0].pin: missing (want e.g. GPIO17 or P1_11)`}},
		{"bad name", Config{Inputs: []InputConfig{{Name: "a/b", Pin: "GPIO4"}}},
			[]string{`inputs[0].name: "a/b": only a-z, 0-9, _ and - are allowed (found '/')`}},
		{"empty and reserved names", Config{Inputs: []InputConfig{{Pin: "GPIO4"}, {Name: "status", Pin: "GPIO5"}}},
			[]string{`inputs[0].name: must not be empty`, `inputs[1].name: "status" is reserved`}},
		{"long name", Config{PWM: []PWMConfig{{Name: strings.Repeat("x", 33), Pin: "GPIO18"}}},
			[]string{`pwm[0].name: "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" is longer than 32 characters`}},
		{"duplicate names across sections", Config{
			Inputs:  []InputConfig{{Name: "door", Pin: "GPIO4"}, {Name: "led", Pin: "GPIO5"}},
			Outputs: []OutputConfig{{Name: "led", Pin: "GPIO6"}},
			Sensors: []SensorConfig{{Name: "door", Type: "sim"}},
		}, []string{
			`outputs[0].name: "led" is already used by inputs[1]`,
			`sensors[0].name: "door" is already used by inputs[0]`,
		}},
		{"duplicate pins after normalisation", Config{
			Inputs:  []InputConfig{{Name: "a", Pin: "GPIO17"}},
			Outputs: []OutputConfig{{Name: "b", Pin: "P1_11"}, {Name: "c", Pin: "gpio17"}},
			PWM:     []PWMConfig{{Name: "d", Pin: "GPIO17"}},
		}, []string{
			`outputs[0].pin: "P1_11" is GPIO17, already used by inputs[0]`,
			`outputs[1].pin: "gpio17" is already used by inputs[0]`,
			`pwm[0].pin: "GPIO17" is already used by inputs[0]`,
		}},
		{"i2c bus 1 takes GPIO2 and GPIO3", Config{
			Inputs:  []InputConfig{{Name: "a", Pin: "P1_3"}},
			Sensors: []SensorConfig{{Name: "air", Type: "bme280"}},
		}, []string{`inputs[0].pin: "P1_3" is GPIO2, already used by i2c bus 1 (sensors[0])`}},
		{"i2c bus 0 takes GPIO0 and GPIO1", Config{
			Inputs:  []InputConfig{{Name: "a", Pin: "P1_27"}, {Name: "b", Pin: "GPIO2"}},
			Sensors: []SensorConfig{{Name: "air", Type: "bme280", I2CBus: "/dev/i2c-0"}},
		}, []string{`inputs[0].pin: "P1_27" is GPIO0, already used by i2c bus 0 (sensors[0])`}},
		{"1-wire takes GPIO4", Config{
			Inputs:  []InputConfig{{Name: "a", Pin: "P1_7"}},
			Sensors: []SensorConfig{{Name: "water", Type: "ds18b20", Address: "28-0316a2791eff"}},
		}, []string{`inputs[0].pin: "P1_7" is GPIO4, already used by 1-wire (sensors[0])`}},
		{"sensors share their bus", Config{
			Outputs: []OutputConfig{{Name: "a", Pin: "GPIO17"}},
			Sensors: []SensorConfig{
				{Name: "air", Type: "bme280"},
				{Name: "soil", Type: "ads1115", I2CBus: "I2C1"},
				{Name: "w1", Type: "ds18b20", Address: "28-0316a2791eff"},
				{Name: "w2", Type: "ds18b20", Address: "28-0316a2791e00", OnewirePin: "P1_7"},
			},
		}, nil},
		{"onewire_pin moves the bus, none takes no pin", Config{
			Inputs:  []InputConfig{{Name: "a", Pin: "GPIO4"}},
			Outputs: []OutputConfig{{Name: "b", Pin: "GPIO17"}},
			Sensors: []SensorConfig{
				{Name: "w1", Type: "ds18b20", Address: "28-0316a2791eff", OnewirePin: "GPIO17"},
				{Name: "w2", Type: "ds18b20", Address: "28-0316a2791e00", OnewireBus: "OneWire2", OnewirePin: "none"},
			},
		}, []string{`outputs[0].pin: "GPIO17" is already used by 1-wire (sensors[0])`}},
		{"1-wire and i2c on one pin", Config{Sensors: []SensorConfig{
			{Name: "w1", Type: "ds18b20", Address: "28-0316a2791eff", OnewirePin: "GPIO2"},
			{Name: "air", Type: "bme280"},
			{Name: "w2", Type: "ds18b20", Address: "28-0316a2791e00", OnewirePin: "P1_5"},
			{Name: "w3", Type: "ds18b20", Address: "28-0316a2791e01", OnewirePin: "GPIO99"},
		}}, []string{
			`sensors[1].i2c_bus: i2c bus 1 is on GPIO2 and GPIO3; GPIO2 is already used by 1-wire (sensors[0])`,
			`sensors[2].onewire_pin: GPIO3, the 1-Wire bus, is already used by i2c bus 1 (sensors[1])`,
			`sensors[3].onewire_pin: "GPIO99": no such pin (or none for a bus that is not on a GPIO)`,
		}},
		{"an overlay's i2c bus has unknown pins", Config{
			Inputs:  []InputConfig{{Name: "a", Pin: "GPIO2"}, {Name: "b", Pin: "GPIO4"}},
			Sensors: []SensorConfig{{Name: "air", Type: "bme280", I2CBus: "3"}},
		}, nil},
		{"pwm needs a hardware PWM pin", Config{PWM: []PWMConfig{
			{Name: "a", Pin: "GPIO17"}, {Name: "b", Pin: "P1_16"}, {Name: "c", Pin: "P1_33"},
			{Name: "d", Pin: "GPIO12"}, {Name: "e", Pin: "GPIO18"}, {Name: "f", Pin: "GPIO19"},
		}}, []string{
			`pwm[0].pin: "GPIO17" has no hardware PWM; use GPIO12, GPIO13, GPIO18 or GPIO19`,
			`pwm[1].pin: "P1_16" (GPIO23) has no hardware PWM; use GPIO12, GPIO13, GPIO18 or GPIO19`,
		}},
		{"1-wire fields", Config{Sensors: []SensorConfig{
			{Name: "a", Type: "ds18b20", Address: "01-0316a2791eff", OnewireBus: "a/b"},
			{Name: "b", Type: "ds18b20", Address: "10-0316a2791eff", OnewireBus: "netlink-w1-master 1"},
			{Name: "c", Type: "bme280", OnewirePin: "GPIO4"},
		}}, []string{
			`sensors[0].address: "01-0316a2791eff": family 01 is not a thermometer (a DS18B20's id starts with 28-)`,
			`sensors[0].onewire_bus: "a/b": want empty, sysfs, or a periph.io 1-Wire bus name or number`,
			`sensors[2].onewire_pin: not used by a bme280 sensor`,
		}},
		{"enums", Config{
			Board:   "raspi",
			Inputs:  []InputConfig{{Name: "a", Pin: "GPIO4", Pull: "sideways"}},
			Outputs: []OutputConfig{{Name: "b", Pin: "GPIO5", Initial: "maybe", Safe: "1"}},
		}, []string{
			`board: "raspi": want periph or sim`,
			`inputs[0].pull: "sideways": want up, down or none`,
			`outputs[0].initial: "maybe": want on or off`,
			`outputs[0].safe: "1": want on or off`,
		}},
		{"durations", Config{
			Inputs: []InputConfig{{Name: "a", Pin: "GPIO4", Debounce: ms(2000), Simulate: ms(10)}},
			Outputs: []OutputConfig{
				{Name: "b", Pin: "GPIO5", MaxOn: ms(1000), Pulse: ms(2000)},
				{Name: "c", Pin: "GPIO6", Pulse: ms(2 * 3600 * 1000)},
				{Name: "d", Pin: "GPIO7", Safe: "on", MaxOn: ms(1000)},
			},
		}, []string{
			`inputs[0].debounce: 2s: at most 1s`,
			`inputs[0].simulate: 10ms: at least 1s`,
			`outputs[0].pulse: 2s is longer than max_on 1s`,
			`outputs[1].pulse: 2h0m0s: at most 1h0m0s`,
			`outputs[2].max_on: an output that is safe: on cannot have max_on`,
		}},
		{"interlock", Config{Outputs: []OutputConfig{
			{Name: "up", Pin: "GPIO5", Interlock: "blind", Safe: "on"},
			{Name: "down", Pin: "GPIO6", Interlock: "blind", Initial: "on"},
			{Name: "alone", Pin: "GPIO7", Interlock: "solo"},
			{Name: "wait", Pin: "GPIO8", InterlockWait: ms(200)},
			{Name: "bad", Pin: "GPIO9", Interlock: "a b"},
		}}, []string{
			`outputs[0].safe: an interlocked output must be safe: off`,
			`outputs[1].initial: an interlocked output must start off`,
			`outputs[3].interlock_wait: needs interlock (the group this output belongs to)`,
			`outputs[4].interlock: "a b": only a-z, 0-9, _ and - are allowed (found ' ')`,
			`outputs[2].interlock: "solo": no other output is in this group`,
		}},
		{"pwm duty range", Config{PWM: []PWMConfig{{Name: "fan", Pin: "GPIO18", Initial: 1.5, Safe: -0.1}}},
			[]string{`pwm[0].initial: 1.5: must be from 0 to 1`, `pwm[0].safe: -0.1: must be from 0 to 1`}},
		{"sensor types", Config{Sensors: []SensorConfig{
			{Name: "a", Type: "sim"}, {Name: "b"}, {Name: "c", Type: "foo"},
		}}, []string{
			`sensors[1].type: missing (want bme280, bmp280, ds18b20, ads1115, cpu_temp or sim)`,
			`sensors[2].type: "foo": unknown sensor type (want bme280, bmp280, ds18b20, ads1115, cpu_temp or sim)`,
		}},
		{"sensor fields", Config{Sensors: []SensorConfig{
			{Name: "a", Type: "ads1115", Channels: []int{0, 4, 0}, Interval: ms(1)},
			{Name: "b", Type: "bme280", Address: "0x48", Unit: "K"},
			{Name: "c", Type: "ds18b20", I2CBus: "1"},
			{Name: "d", Type: "ds18b20", Address: "../../etc"},
			{Name: "e", Type: "cpu_temp", Address: "0x76", ThermalZone: "zone9"},
			{Name: "f", Type: "sim", Interval: ms(5000), MaxInterval: ms(1000), MinDelta: -1, Channels: []int{1}},
			{Name: "g", Type: "bmp280", Address: "banana"},
		}}, []string{
			`sensors[0].interval: 1ms: at least 10ms`,
			`sensors[0].channels[1]: 4: the ADS1115 has channels 0 to 3`,
			`sensors[0].channels[2]: 0 is listed twice`,
			`sensors[1].unit: not used by a bme280 sensor`,
			`sensors[1].address: 0x48: a bme280 answers on 0x76 to 0x77`,
			`sensors[2].i2c_bus: not used by a ds18b20 sensor`,
			`sensors[2].address: missing (the 1-Wire id, e.g. "28-0316a2791eff")`,
			`sensors[3].address: "../../etc": not a 1-Wire id (want e.g. "28-0316a2791eff")`,
			`sensors[4].address: not used by a cpu_temp sensor`,
			`sensors[4].thermal_zone: "zone9": want a zone name like thermal_zone0 or a path under /sys/`,
			`sensors[5].max_interval: 1s is shorter than interval 5s`,
			`sensors[5].min_delta: -1: must be 0 or more`,
			`sensors[5].channels: not used by a sim sensor`,
			`sensors[6].address: "banana": not an I²C address (want e.g. 0x76)`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.cfg.clone()
			err := tt.cfg.Validate()
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Validate() problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if !reflect.DeepEqual(before, tt.cfg.clone()) {
				t.Errorf("Validate changed the config")
			}
		})
	}
}

// file is how cmd/bridge composes its YAML: Config inlined, decoded with
// KnownFields.
type file struct {
	Device struct {
		ID string `yaml:"id"`
	} `yaml:"device"`
	Config `yaml:",inline"`
}

func decodeStrict(t *testing.T, src string) (file, error) {
	t.Helper()
	var f file
	err := strictyaml.Unmarshal([]byte(src), &f)
	return f, err
}

func TestYAML(t *testing.T) {
	src := `
device: {id: greenhouse}
board: periph
inputs:
  - {name: door, pin: GPIO17, pull: up, invert: true, debounce: 20ms}
outputs:
  - {name: pump, pin: GPIO27, initial: off, safe: off, max_on: 10m, pulse: 30s, invert: false, failsafe_after: 60s}
  - {name: up,   pin: GPIO5,  interlock: blind, interlock_wait: 200ms}
  - {name: down, pin: GPIO6,  interlock: blind, interlock_wait: 200ms}
pwm:
  - {name: fan, pin: GPIO18, frequency: 25kHz, initial: 0, safe: 0}
sensors:
  - {name: air,   type: bme280,  i2c_bus: "1", address: 0x76, interval: 5s}
  - {name: water, type: ds18b20, onewire_bus: "", address: "28-0316a2791eff", interval: 10s}
  - {name: soil,  type: ads1115, i2c_bus: 1, address: 0x48, channels: [0, 1], interval: 1s}
  - {name: cpu,   type: cpu_temp, interval: 10s}
  - {name: t1, type: sim, interval: 10ms, unit: "°C", min_delta: 0.5, max_interval: 1m}
`
	f, err := decodeStrict(t, src)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(); err != nil {
		t.Fatalf("README example: %v", err)
	}
	c := f.Config
	if got := c.PWM[0].Frequency; got.Hz() != 25000 || got.String() != "25kHz" {
		t.Errorf("frequency = %v (%g Hz)", got, got.Hz())
	}
	if a, err := c.Sensors[0].Address.I2C(); err != nil || a != 0x76 {
		t.Errorf("bme280 address = %#x, %v", a, err)
	}
	if c.Sensors[2].I2CBus != "1" || c.Outputs[0].Initial != "off" || c.Outputs[1].InterlockWait.D().String() != "200ms" {
		t.Errorf("decoded %+v", c)
	}
	want := []pibridge.Signal{
		{Name: "door", Kind: pibridge.KindInput, Pin: "GPIO17"},
		{Name: "pump", Kind: pibridge.KindOutput, Pin: "GPIO27", Pulse: 30 * time.Second},
		{Name: "up", Kind: pibridge.KindOutput, Pin: "GPIO5"},
		{Name: "down", Kind: pibridge.KindOutput, Pin: "GPIO6"},
		{Name: "fan", Kind: pibridge.KindPWM, Pin: "GPIO18"},
		{Name: "air.temperature", Kind: pibridge.KindSensor, Unit: "°C", Source: "bme280 i2c 1 0x76 on GPIO2/GPIO3", DeviceClass: "temperature"},
		{Name: "air.humidity", Kind: pibridge.KindSensor, Unit: "%", Source: "bme280 i2c 1 0x76 on GPIO2/GPIO3", DeviceClass: "humidity"},
		{Name: "air.pressure", Kind: pibridge.KindSensor, Unit: "hPa", Source: "bme280 i2c 1 0x76 on GPIO2/GPIO3", DeviceClass: "pressure"},
		{Name: "water.temperature", Kind: pibridge.KindSensor, Unit: "°C", Source: "ds18b20 1-wire 28-0316a2791eff on GPIO4", DeviceClass: "temperature"},
		{Name: "soil.a0", Kind: pibridge.KindSensor, Unit: "V", Source: "ads1115 i2c 1 0x48 on GPIO2/GPIO3", DeviceClass: "voltage"},
		{Name: "soil.a1", Kind: pibridge.KindSensor, Unit: "V", Source: "ads1115 i2c 1 0x48 on GPIO2/GPIO3", DeviceClass: "voltage"},
		{Name: "cpu.temperature", Kind: pibridge.KindSensor, Unit: "°C", Source: "cpu_temp /sys/class/thermal/thermal_zone0/temp", DeviceClass: "temperature"},
		{Name: "t1", Kind: pibridge.KindSensor, Unit: "°C", Source: "sim", DeviceClass: "temperature"},
	}
	if got := c.Signals(); !reflect.DeepEqual(got, want) {
		t.Errorf("Signals():\n%v\nwant\n%v", got, want)
	}
}

// Bad frequencies and addresses do not stop decoding: they are reported
// together with unknown keys, each at its field path.
func TestYAMLErrorsContinue(t *testing.T) {
	src := `
pwm:
  - {name: fan, pin: GPIO18, frequency: fast}
  - {name: fan2, pin: GPIO19, frequency: -5Hz}
  - {name: fan3, pin: GPIO12, frequency: 1kHz, colour: red}
sensors:
  - {name: a, type: bme280, address: [1, 2]}
`
	f, err := decodeStrict(t, src)
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, want := range []string{
		`pwm[0].frequency: "fast": not a frequency`,
		`pwm[1].frequency: "-5Hz": a frequency must be above 0`,
		`pwm[2].colour: unknown key (line 5)`,
		`sensors[0].address: want an address such as 0x76`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if f.PWM[2].Frequency.Hz() != 1000 {
		t.Errorf("decoding stopped early: %+v", f.PWM)
	}
}

func TestDefaults(t *testing.T) {
	c := Config{
		Inputs:  []InputConfig{{Name: "a", Pin: "GPIO17"}},
		Outputs: []OutputConfig{{Name: "b", Pin: "GPIO5"}},
		Sensors: []SensorConfig{{Name: "s", Type: "ads1115"}, {Name: "c", Type: "cpu_temp"}, {Name: "w", Type: "ds18b20", Address: "28-0316a2791eff"}},
	}
	c.Derive()
	if c.Board != "periph" || c.Inputs[0].Pull != "none" || c.Outputs[0].Initial != "off" || c.Outputs[0].Safe != "off" {
		t.Errorf("defaults: %+v", c)
	}
	s := c.Sensors[0]
	if s.Interval.D() != DefaultInterval || s.I2CBus != "1" || s.Address != "0x48" || !reflect.DeepEqual(s.Channels, []int{0}) {
		t.Errorf("ads1115 defaults: %+v", s)
	}
	if c.Sensors[1].ThermalZone != "thermal_zone0" {
		t.Errorf("cpu_temp defaults: %+v", c.Sensors[1])
	}
	if w := c.Sensors[2]; w.OnewirePin != "GPIO4" || w.OnewireBus != "" {
		t.Errorf("ds18b20 defaults: %+v", w)
	}
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
}

func TestThermalPath(t *testing.T) {
	for in, want := range map[string]string{
		"":                                    "/sys/class/thermal/thermal_zone0/temp",
		"thermal_zone2":                       "/sys/class/thermal/thermal_zone2/temp",
		"/sys/class/hwmon/hwmon0/temp1_input": "/sys/class/hwmon/hwmon0/temp1_input",
		"/etc/passwd":                         "",
		"/sys/../etc/passwd":                  "",
		"thermal_zone":                        "",
	} {
		got, err := thermalPath(in)
		if got != want || (err == nil) != (want != "") {
			t.Errorf("thermalPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// A 1-Wire id as the kernel writes it is periph's 64-bit ROM address with
// the CRC added: periph's own ds18b20 test sensor is 0x740000070e41ac28.
func TestOneWireAddress(t *testing.T) {
	tests := []struct {
		id   Address
		want onewire.Address
		err  string
	}{
		{id: "28-0000070e41ac", want: 0x740000070e41ac28},
		{id: "28-0316a2791eff", want: 0xb00316a2791eff28},
		{id: "10-0316a2791eff", want: 0x550316a2791eff10},
		{id: "28-0316A2791EFF", err: `"28-0316A2791EFF": not a 1-Wire id (want e.g. "28-0316a2791eff")`},
		{id: "0x76", err: `"0x76": not a 1-Wire id (want e.g. "28-0316a2791eff")`},
	}
	for _, tt := range tests {
		got, err := tt.id.OneWire()
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("%s: error %v, want %q", tt.id, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s = %#x, %v; want %#x", tt.id, uint64(got), err, uint64(tt.want))
		}
	}
}

// deploy/raspi/config.example.yaml shows every hardware feature, validates,
// and opens on the sim board. (cmd/bridge's tests run -check on it too.)
func TestExampleConfig(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "deploy", "raspi", "config.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Device   yaml.Node `yaml:"device"`
		StateDir string    `yaml:"state_dir"`
		HTTP     yaml.Node `yaml:"http"`
		MQTT     yaml.Node `yaml:"mqtt"`
		Config   `yaml:",inline"`
	}
	if err := strictyaml.Unmarshal(src, &f); err != nil {
		t.Fatal(err)
	}
	c := f.Config
	if err := c.Validate(); err != nil {
		t.Fatalf("invalid: %v", err)
	}
	used := map[string]bool{"board periph": c.Board == BoardPeriph}
	for _, in := range c.Inputs {
		used["pull "+in.Pull] = true
		used["input invert"] = used["input invert"] || in.Invert
		used["debounce"] = used["debounce"] || in.Debounce > 0
	}
	for _, o := range c.Outputs {
		used["initial "+o.Initial] = used["initial "+o.Initial] || o.Initial != ""
		used["safe "+o.Safe] = used["safe "+o.Safe] || o.Safe != ""
		used["output invert"] = used["output invert"] || o.Invert
		used["max_on"] = used["max_on"] || o.MaxOn > 0
		used["pulse"] = used["pulse"] || o.Pulse > 0
		used["interlock"] = used["interlock"] || o.Interlock != ""
		used["interlock_wait"] = used["interlock_wait"] || o.InterlockWait > 0
		used["failsafe_after"] = used["failsafe_after"] || o.FailsafeAfter > 0
	}
	for _, w := range c.PWM {
		used["frequency"] = used["frequency"] || w.Frequency > 0
	}
	for _, s := range c.Sensors {
		used[s.Type] = true
		used["min_delta"] = used["min_delta"] || s.MinDelta > 0
		used["max_interval"] = used["max_interval"] || s.MaxInterval > 0
		used["channels"] = used["channels"] || len(s.Channels) > 1
		used["onewire_bus sysfs"] = used["onewire_bus sysfs"] || s.OnewireBus == OnewireSysfs
	}
	for _, feature := range []string{
		"board periph", "pull up", "pull down", "input invert", "debounce",
		"initial on", "initial off", "safe on", "safe off", "output invert", "max_on", "pulse",
		"interlock", "interlock_wait", "failsafe_after", "frequency",
		TypeBME280, TypeBMP280, TypeDS18B20, TypeADS1115, TypeCPUTemp, TypeSim,
		"min_delta", "max_interval", "channels", "onewire_bus sysfs",
	} {
		if !used[feature] {
			t.Errorf("the example does not show %s", feature)
		}
	}

	c.Board = BoardSim
	b, err := Open(c, Options{Logger: testLogger(t), SysRoot: t.TempDir()})
	if err != nil {
		t.Fatalf("Open on the sim board: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Error(err)
	}
}

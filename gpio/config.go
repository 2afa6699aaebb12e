package gpio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"
	"periph.io/x/conn/v3/onewire"
	"periph.io/x/conn/v3/physic"

	"pibridge"
)

// Config is the hardware part of the bridge's YAML file; cmd/bridge inlines
// it, so its fields are the top-level keys board, inputs, outputs, pwm and
// sensors.
//
// Its defaults are per item and most depend on the item's type (a
// sensor's address, bus, channels), so they are derived after decoding
// rather than decoded over: an empty field means "the default" throughout.
// Derive writes them in, and Validate gives the same answer before and
// after Derive, so the -check table can show either form.
type Config struct {
	// Board is "periph" (real hardware through periph.io) or "sim". An
	// empty board is "periph": a configuration file describes real pins.
	// Demo uses "sim".
	Board   string         `yaml:"board,omitempty"`
	Inputs  []InputConfig  `yaml:"inputs,omitempty"`
	Outputs []OutputConfig `yaml:"outputs,omitempty"`
	PWM     []PWMConfig    `yaml:"pwm,omitempty"`
	Sensors []SensorConfig `yaml:"sensors,omitempty"`
}

// Board kinds.
const (
	BoardPeriph = "periph"
	BoardSim    = "sim"
)

// InputConfig is one digital input.
type InputConfig struct {
	Name     string            `yaml:"name"`
	Pin      string            `yaml:"pin"`                // GPIO17, P1_11
	Pull     string            `yaml:"pull,omitempty"`     // up | down | none (default)
	Invert   bool              `yaml:"invert,omitempty"`   // true: a low pin reads as true (buttons to ground)
	Debounce pibridge.Duration `yaml:"debounce,omitempty"` // a change counts once the pin was quiet this long
	// Simulate, on the sim board only, presses the input briefly about this
	// often (with jitter), so the demo shows life without hardware.
	Simulate pibridge.Duration `yaml:"simulate,omitempty"`
}

// OutputConfig is one digital output.
type OutputConfig struct {
	Name    string `yaml:"name"`
	Pin     string `yaml:"pin"`
	Initial string `yaml:"initial,omitempty"` // on | off (default): the state New drives at once
	Safe    string `yaml:"safe,omitempty"`    // on | off (default): the state Halt and failsafe drive
	// MaxOn switches the output off after it has been on this long, whoever
	// switched it on. 0 means no limit.
	MaxOn  pibridge.Duration `yaml:"max_on,omitempty"`
	Invert bool              `yaml:"invert,omitempty"` // true: on drives the pin low (active-low relay boards)
	// Pulse is the default pulse length that panels and Home Assistant
	// offer; a pulse command always names its own length.
	Pulse pibridge.Duration `yaml:"pulse,omitempty"`
	// Interlock names a group of outputs of which at most one is on at a
	// time; switching one on first switches the others off and waits
	// InterlockWait after the last of them went off.
	Interlock     string            `yaml:"interlock,omitempty"`
	InterlockWait pibridge.Duration `yaml:"interlock_wait,omitempty"`
	// FailsafeAfter drives the safe state when nobody could reach the bridge
	// (no MQTT broker and no panel) for this long; see Board.SetOnline.
	FailsafeAfter pibridge.Duration `yaml:"failsafe_after,omitempty"`
}

// PWMConfig is one PWM output; duty cycles are 0..1.
type PWMConfig struct {
	Name string `yaml:"name"`
	Pin  string `yaml:"pin"`
	// Frequency of the PWM ("25kHz"); omitted, the pin driver picks its own.
	Frequency Frequency `yaml:"frequency,omitempty"`
	Initial   float64   `yaml:"initial,omitempty"`
	Safe      float64   `yaml:"safe,omitempty"`
}

// SensorConfig is one sensor; which fields apply depends on Type.
type SensorConfig struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"` // bme280 bmp280 ds18b20 ads1115 cpu_temp sim
	// I2CBus names the bus of bme280, bmp280 and ads1115 ("1", the header's
	// bus, by default).
	I2CBus string `yaml:"i2c_bus,omitempty"`
	// Address is the I²C address (0x76) or, for ds18b20, the 1-Wire device
	// id as the kernel names it ("28-0316a2791eff": family, serial).
	Address Address `yaml:"address,omitempty"`
	// OnewireBus picks the ds18b20's bus: "" the first 1-Wire bus periph.io
	// knows (on a Pi, the kernel's w1 master through netlink), falling back
	// to the kernel's w1_therm files when periph has none; a periph bus
	// name, alias or number ("1", "OneWire1", "netlink-w1-master 1"); or
	// "sysfs" for the w1_therm files only (parasite-powered sensors, which
	// need the strong pull-up that only the kernel's driver gives).
	OnewireBus string `yaml:"onewire_bus,omitempty"`
	// OnewirePin is the GPIO the 1-Wire bus is on (the w1-gpio overlay's
	// gpiopin, GPIO4 by default), or "none" for a bus off the header. The
	// bridge does not drive it; it is for the pin conflict check.
	OnewirePin string `yaml:"onewire_pin,omitempty"`
	// Channels are the ads1115 inputs to read (0..3; default [0]); each is
	// one signal, "<name>.a<channel>", in volts.
	Channels []int             `yaml:"channels,omitempty"`
	Interval pibridge.Duration `yaml:"interval,omitempty"` // default 5s
	Unit     string            `yaml:"unit,omitempty"`     // sim only
	// MinDelta and MaxInterval thin out readings: a value is emitted when it
	// moved by more than MinDelta since the last emitted one, or when
	// MaxInterval passed since then.
	MinDelta    float64           `yaml:"min_delta,omitempty"`
	MaxInterval pibridge.Duration `yaml:"max_interval,omitempty"`
	// ThermalZone (cpu_temp) is a zone name ("thermal_zone1") under
	// /sys/class/thermal or the absolute path of a temp file; default
	// thermal_zone0.
	ThermalZone string `yaml:"thermal_zone,omitempty"`
}

// Sensor types.
const (
	TypeBME280  = "bme280"
	TypeBMP280  = "bmp280"
	TypeDS18B20 = "ds18b20"
	TypeADS1115 = "ads1115"
	TypeCPUTemp = "cpu_temp"
	TypeSim     = "sim"
)

// Defaults used when a field is left out.
const (
	DefaultInterval = 5 * time.Second
	DefaultI2CBus   = "1"
	// MinInterval keeps a typo ("1us") from spinning a core.
	MinInterval = 10 * time.Millisecond
	// MinSimulate keeps simulated presses apart enough to be seen.
	MinSimulate = time.Second
	// MaxDebounce bounds a debounce: contacts settle within milliseconds,
	// and an input goroutine may sit in one debounce wait at shutdown.
	MaxDebounce = time.Second
)

const defaultThermalZone = "thermal_zone0"

// 1-Wire defaults.
const (
	// DefaultOnewirePin is where dtoverlay=w1-gpio puts the bus without a
	// gpiopin= parameter.
	DefaultOnewirePin = "GPIO4"
	// OnewireSysfs is the onewire_bus value that reads the kernel's
	// w1_therm files instead of going through periph.io.
	OnewireSysfs = "sysfs"
	onewireNoPin = "none"
)

// quantity is one value a sensor type measures.
type quantity struct {
	name, unit, class string
	digits            int // decimals kept; sensors are not more precise than this
}

var (
	qTemperature = quantity{"temperature", "°C", "temperature", 2}
	qHumidity    = quantity{"humidity", "%", "humidity", 1}
	qPressure    = quantity{"pressure", "hPa", "pressure", 2}
)

// sensorType describes what Validate allows per type and which signals the
// type yields.
type sensorType struct {
	i2c        bool
	addrLo     uint16 // allowed I²C addresses, inclusive
	addrHi     uint16
	onewire    bool
	quantities []quantity // fixed quantities; nil for ads1115 and sim
}

var sensorTypes = map[string]sensorType{
	TypeBME280:  {i2c: true, addrLo: 0x76, addrHi: 0x77, quantities: []quantity{qTemperature, qHumidity, qPressure}},
	TypeBMP280:  {i2c: true, addrLo: 0x76, addrHi: 0x77, quantities: []quantity{qTemperature, qPressure}},
	TypeADS1115: {i2c: true, addrLo: 0x48, addrHi: 0x4b},
	TypeDS18B20: {onewire: true, quantities: []quantity{qTemperature}},
	TypeCPUTemp: {quantities: []quantity{qTemperature}},
	TypeSim:     {},
}

const sensorTypeList = "bme280, bmp280, ds18b20, ads1115, cpu_temp or sim"

// Frequency is a PWM frequency written as "25kHz", "1kHz" or "500Hz" (a bare
// number is hertz).
type Frequency physic.Frequency

// Hz returns the frequency in hertz.
func (f Frequency) Hz() float64 { return float64(f) / float64(physic.Hertz) }

func (f Frequency) String() string { return physic.Frequency(f).String() }

// UnmarshalYAML reads "25kHz", "1kHz", "500Hz". Its errors say what is
// wrong with the value; the decoder adds where.
func (f *Frequency) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New(`want a frequency such as "25kHz" or "500Hz"`)
	}
	var p physic.Frequency
	if err := p.Set(strings.ReplaceAll(n.Value, " ", "")); err != nil {
		return fmt.Errorf("%q: not a frequency (want e.g. \"25kHz\", \"1kHz\", \"500Hz\")", pibridge.Clip(n.Value))
	}
	if p <= 0 {
		return fmt.Errorf("%q: a frequency must be above 0", n.Value)
	}
	*f = Frequency(p)
	return nil
}

func (f Frequency) MarshalYAML() (any, error) { return f.String(), nil }

// Address is a sensor address as written: an I²C address (YAML 0x76, 118 or
// "0x76") or a 1-Wire device id ("28-0316a2791eff"). Which one it must be
// depends on the sensor type, so it is kept as text and checked by Validate.
type Address string

// UnmarshalYAML takes any scalar's text: 0x76 is an int to YAML but we want
// the characters the user wrote, for messages and for 1-Wire ids.
func (a *Address) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New(`want an address such as 0x76 or "28-0316a2791eff"`)
	}
	*a = Address(n.Value)
	return nil
}

// I2C parses the address as a 7-bit I²C address.
func (a Address) I2C() (uint16, error) {
	v, err := strconv.ParseUint(strings.TrimSpace(string(a)), 0, 16)
	if err != nil || v > 0x7f {
		return 0, fmt.Errorf("%q: not an I²C address (want e.g. 0x76)", string(a))
	}
	return uint16(v), nil
}

// w1ID is the sysfs name of a 1-Wire device: family, dash, 48-bit serial.
// Checked strictly because it becomes part of a file path.
var w1ID = regexp.MustCompile(`^[0-9a-f]{2}-[0-9a-f]{12}$`)

// thermometerFamilies are the 1-Wire families that speak the DS18B20's
// protocol (scratchpad, Convert T), which periph's ds18b20 driver and the
// kernel's w1_therm both read.
var thermometerFamilies = map[byte]string{
	0x10: "DS18S20", 0x22: "DS1822", 0x28: "DS18B20", 0x3b: "DS1825", 0x42: "DS28EA00",
}

// OneWire parses a 1-Wire id ("28-0316a2791eff") into periph's 64-bit ROM
// address: the family code in the low byte, the 48-bit serial above it,
// least significant byte first as the kernel prints it, and the ROM's CRC
// in the top byte, computed here because the kernel's name leaves it out.
func (a Address) OneWire() (onewire.Address, error) {
	s := string(a)
	if !w1ID.MatchString(s) {
		return 0, fmt.Errorf("%q: not a 1-Wire id (want e.g. \"28-0316a2791eff\")", s)
	}
	family, _ := strconv.ParseUint(s[:2], 16, 8)
	serial, _ := strconv.ParseUint(s[3:], 16, 64)
	var rom [8]byte
	rom[0] = byte(family)
	for i := 0; i < 6; i++ {
		rom[1+i] = byte(serial >> (8 * i))
	}
	rom[7] = onewire.CalcCRC(rom[:7])
	return onewire.Address(binary.LittleEndian.Uint64(rom[:])), nil
}

// Derive writes the default of every field left empty, the one place
// they live: board periph, pull none, initial and safe off, sensor
// interval 5s, i2c_bus "1", the type's usual address (bme280/bmp280 0x76,
// ads1115 0x48), ads1115 channels [0], thermal_zone thermal_zone0,
// onewire_pin GPIO4. It is idempotent; Validate and Open apply it to
// their own copy, so a Config built in code needs no call.
func (c *Config) Derive() {
	if c.Board == "" {
		c.Board = BoardPeriph
	}
	for i := range c.Inputs {
		in := &c.Inputs[i]
		if in.Pull == "" {
			in.Pull = "none"
		}
	}
	for i := range c.Outputs {
		o := &c.Outputs[i]
		if o.Initial == "" {
			o.Initial = "off"
		}
		if o.Safe == "" {
			o.Safe = "off"
		}
	}
	for i := range c.Sensors {
		s := &c.Sensors[i]
		if s.Interval == 0 {
			s.Interval = pibridge.Duration(DefaultInterval)
		}
		st, ok := sensorTypes[s.Type]
		if !ok {
			continue
		}
		if st.i2c {
			if s.I2CBus == "" {
				s.I2CBus = DefaultI2CBus
			}
			if s.Address == "" {
				s.Address = Address(fmt.Sprintf("0x%02x", st.addrLo))
			}
		}
		if s.Type == TypeADS1115 && len(s.Channels) == 0 {
			s.Channels = []int{0}
		}
		if s.Type == TypeCPUTemp && s.ThermalZone == "" {
			s.ThermalZone = defaultThermalZone
		}
		if st.onewire && s.OnewirePin == "" {
			s.OnewirePin = DefaultOnewirePin
		}
	}
}

// clone copies c deeply enough that Derive on the copy leaves c alone.
func (c Config) clone() Config {
	c.Inputs = append([]InputConfig(nil), c.Inputs...)
	c.Outputs = append([]OutputConfig(nil), c.Outputs...)
	c.PWM = append([]PWMConfig(nil), c.PWM...)
	c.Sensors = append([]SensorConfig(nil), c.Sensors...)
	for i := range c.Sensors {
		c.Sensors[i].Channels = append([]int(nil), c.Sensors[i].Channels...)
	}
	return c
}

// withDefaults returns a derived copy.
func (c Config) withDefaults() Config {
	d := c.clone()
	d.Derive()
	return d
}

// Validate returns every problem of the configuration at once, each with
// its field path (`outputs[1].pin: "GPIO99": no such pin`), joined by
// pibridge.Problems. It does not change c; empty fields count as their
// defaults (see Derive).
func (c *Config) Validate() error {
	cfg := c.withDefaults()
	v := &validator{names: map[string]string{}, pins: map[int]pinUse{}}
	switch cfg.Board {
	case BoardPeriph, BoardSim:
	default:
		v.p.Addf("board", "%q: want periph or sim", cfg.Board)
	}
	// Buses claim their pins first, so a pin that an input or output also
	// names is reported there: the sensors' wiring is the fixed part.
	for i, s := range cfg.Sensors {
		v.bus(fmt.Sprintf("sensors[%d]", i), s)
	}
	for i, in := range cfg.Inputs {
		v.input(fmt.Sprintf("inputs[%d]", i), in)
	}
	v.outputs(cfg.Outputs)
	for i, w := range cfg.PWM {
		v.pwm(fmt.Sprintf("pwm[%d]", i), w)
	}
	for i, s := range cfg.Sensors {
		path := fmt.Sprintf("sensors[%d]", i)
		v.name(path, s.Name)
		validateSensor(&v.p, path, s)
	}
	return v.p.Err()
}

// validator is Validate's state: the problems so far and who took each
// name and pin, since names and pins are unique across the sections.
type validator struct {
	p     pibridge.Problems
	names map[string]string // signal or sensor name → path of its owner
	// pins maps a BCM number to its first user.
	pins map[int]pinUse
}

// pinUse is a pin's first user. A bus (I²C, 1-Wire) is shared by the
// sensors on it: bus names it, so that two sensors on one bus do not
// conflict.
type pinUse struct{ path, bus string }

func (v *validator) name(path, name string) {
	if err := pibridge.ValidSignalName(name); err != nil {
		v.p.Add(path+".name", err)
		return
	}
	if prev, dup := v.names[name]; dup {
		v.p.Addf(path+".name", "%q is already used by %s", name, prev)
		return
	}
	v.names[name] = path
}

// pin claims a pin for path alone. It returns the BCM number, or -1 after
// reporting why path cannot have the pin.
func (v *validator) pin(path, pin string) int {
	n, err := pinNumber(pin)
	if err != nil {
		v.p.Addf(path+".pin", "%s", err)
		return -1
	}
	if prev, dup := v.pins[n]; dup {
		if strings.EqualFold(strings.TrimSpace(pin), gpioName(n)) {
			v.p.Addf(path+".pin", "%q is already used by %s", pin, prev.path)
		} else {
			v.p.Addf(path+".pin", "%q is %s, already used by %s", pin, gpioName(n), prev.path)
		}
		return -1
	}
	v.pins[n] = pinUse{path: path}
	return n
}

// bus claims the pins of a sensor's bus, shared with the other sensors
// on the same bus.
func (v *validator) bus(path string, s SensorConfig) {
	st, ok := sensorTypes[s.Type]
	switch {
	case !ok:
	case st.i2c:
		n, known := i2cBusNumber(s.I2CBus)
		hdr, onHeader := i2cHeaderPins[n]
		if !known || !onHeader {
			return // an overlay's bus (i2c-3…6, i2c-gpio): its pins are not known here
		}
		bus := fmt.Sprintf("i2c bus %d", n)
		for _, g := range hdr {
			prev, used := v.pins[g]
			switch {
			case !used:
				v.pins[g] = pinUse{path: fmt.Sprintf("%s (%s)", bus, path), bus: bus}
			case prev.bus != bus:
				v.p.Addf(path+".i2c_bus", "%s is on GPIO%d and GPIO%d; %s is already used by %s", bus, hdr[0], hdr[1], gpioName(g), prev.path)
			}
		}
	case st.onewire:
		if strings.EqualFold(s.OnewirePin, onewireNoPin) {
			return
		}
		g, err := pinNumber(s.OnewirePin)
		if err != nil {
			v.p.Addf(path+".onewire_pin", "%s (or none for a bus that is not on a GPIO)", err)
			return
		}
		bus := "1-wire on " + gpioName(g)
		prev, used := v.pins[g]
		switch {
		case !used:
			v.pins[g] = pinUse{path: fmt.Sprintf("1-wire (%s)", path), bus: bus}
		case prev.bus != bus:
			v.p.Addf(path+".onewire_pin", "%s, the 1-Wire bus, is already used by %s", gpioName(g), prev.path)
		}
	}
}

func (v *validator) input(path string, in InputConfig) {
	v.name(path, in.Name)
	v.pin(path, in.Pin)
	switch in.Pull {
	case "up", "down", "none":
	default:
		v.p.Addf(path+".pull", "%q: want up, down or none", in.Pull)
	}
	if in.Debounce.D() > MaxDebounce {
		v.p.Addf(path+".debounce", "%s: at most %s", in.Debounce, MaxDebounce)
	}
	if in.Simulate != 0 && in.Simulate.D() < MinSimulate {
		v.p.Addf(path+".simulate", "%s: at least %s", in.Simulate, MinSimulate)
	}
}

// outputs checks each output, then that every interlock group has two
// members at least.
func (v *validator) outputs(outs []OutputConfig) {
	groups := map[string][]int{} // interlock group → output indexes
	var groupOrder []string      // for messages in file order
	for i, o := range outs {
		if g := v.output(fmt.Sprintf("outputs[%d]", i), o); g != "" {
			if groups[g] == nil {
				groupOrder = append(groupOrder, g)
			}
			groups[g] = append(groups[g], i)
		}
	}
	for _, name := range groupOrder {
		if members := groups[name]; len(members) == 1 {
			v.p.Addf(fmt.Sprintf("outputs[%d].interlock", members[0]), "%q: no other output is in this group", name)
		}
	}
}

// output checks one output and returns its valid interlock group, if any.
func (v *validator) output(path string, o OutputConfig) (group string) {
	v.name(path, o.Name)
	v.pin(path, o.Pin)
	initial, okInitial := parseOnOff(o.Initial)
	if !okInitial {
		v.p.Addf(path+".initial", "%q: want on or off", o.Initial)
	}
	safe, okSafe := parseOnOff(o.Safe)
	if !okSafe {
		v.p.Addf(path+".safe", "%q: want on or off", o.Safe)
	}
	if o.MaxOn != 0 && okSafe && safe {
		v.p.Addf(path+".max_on", "an output that is safe: on cannot have max_on")
	}
	if o.Pulse.D() > pibridge.MaxPulse {
		v.p.Addf(path+".pulse", "%s: at most %s", o.Pulse, pibridge.MaxPulse)
	} else if o.MaxOn != 0 && o.Pulse > o.MaxOn {
		v.p.Addf(path+".pulse", "%s is longer than max_on %s", o.Pulse, o.MaxOn)
	}
	if o.Interlock == "" {
		if o.InterlockWait != 0 {
			v.p.Addf(path+".interlock_wait", "needs interlock (the group this output belongs to)")
		}
		return ""
	}
	if err := pibridge.ValidName(o.Interlock, 32); err != nil {
		v.p.Add(path+".interlock", err)
		return ""
	}
	// The safe state of an interlocked pair (a motor's two directions)
	// is both off; on at start would skip the interlock dance.
	if okSafe && safe {
		v.p.Addf(path+".safe", "an interlocked output must be safe: off")
	}
	if okInitial && initial {
		v.p.Addf(path+".initial", "an interlocked output must start off")
	}
	return o.Interlock
}

func (v *validator) pwm(path string, w PWMConfig) {
	v.name(path, w.Name)
	if n := v.pin(path, w.Pin); n >= 0 && !hardwarePWM[n] {
		v.p.Addf(path+".pin", "%s has no hardware PWM; use GPIO12, GPIO13, GPIO18 or GPIO19", quotePin(w.Pin, n))
	}
	if !(w.Initial >= 0 && w.Initial <= 1) {
		v.p.Addf(path+".initial", "%v: must be from 0 to 1", w.Initial)
	}
	if !(w.Safe >= 0 && w.Safe <= 1) {
		v.p.Addf(path+".safe", "%v: must be from 0 to 1", w.Safe)
	}
	if w.Frequency < 0 {
		v.p.Addf(path+".frequency", "%s: must be above 0", w.Frequency)
	}
}

func validateSensor(p *pibridge.Problems, path string, s SensorConfig) {
	st, ok := sensorTypes[s.Type]
	if !ok {
		if s.Type == "" {
			p.Addf(path+".type", "missing (want %s)", sensorTypeList)
		} else {
			p.Addf(path+".type", "%q: unknown sensor type (want %s)", s.Type, sensorTypeList)
		}
		return
	}
	if s.Interval.D() < MinInterval {
		p.Addf(path+".interval", "%s: at least %s", s.Interval, MinInterval)
	}
	if s.MaxInterval != 0 && s.MaxInterval < s.Interval {
		p.Addf(path+".max_interval", "%s is shorter than interval %s", s.MaxInterval, s.Interval)
	}
	if !(s.MinDelta >= 0) || math.IsInf(s.MinDelta, 0) {
		p.Addf(path+".min_delta", "%v: must be 0 or more", s.MinDelta)
	}
	unused := func(field string, set bool) {
		if set {
			p.Addf(path+"."+field, "not used by a %s sensor", s.Type)
		}
	}
	unused("i2c_bus", !st.i2c && s.I2CBus != "")
	unused("onewire_bus", !st.onewire && s.OnewireBus != "")
	unused("onewire_pin", !st.onewire && s.OnewirePin != "")
	unused("address", !st.i2c && !st.onewire && s.Address != "")
	unused("channels", s.Type != TypeADS1115 && len(s.Channels) > 0)
	unused("thermal_zone", s.Type != TypeCPUTemp && s.ThermalZone != "")
	unused("unit", s.Type != TypeSim && s.Unit != "")

	switch {
	case st.i2c:
		if a, err := s.Address.I2C(); err != nil {
			p.Addf(path+".address", "%s", err)
		} else if a < st.addrLo || a > st.addrHi {
			p.Addf(path+".address", "%#x: a %s answers on %#x to %#x", a, s.Type, st.addrLo, st.addrHi)
		}
	case st.onewire:
		switch {
		case s.Address == "":
			p.Addf(path+".address", "missing (the 1-Wire id, e.g. \"28-0316a2791eff\")")
		case !w1ID.MatchString(string(s.Address)):
			p.Addf(path+".address", "%q: not a 1-Wire id (want e.g. \"28-0316a2791eff\")", string(s.Address))
		default:
			if fam, _ := strconv.ParseUint(string(s.Address[:2]), 16, 8); thermometerFamilies[byte(fam)] == "" {
				p.Addf(path+".address", "%q: family %02x is not a thermometer (a DS18B20's id starts with 28-)", string(s.Address), fam)
			}
		}
		if b := s.OnewireBus; len(b) > 64 || strings.ContainsAny(b, "/:") || strings.IndexFunc(b, unicode.IsControl) >= 0 {
			p.Addf(path+".onewire_bus", "%q: want empty, sysfs, or a periph.io 1-Wire bus name or number", b)
		}
	}
	if s.Type == TypeADS1115 {
		seen := [4]bool{}
		for j, ch := range s.Channels {
			switch {
			case ch < 0 || ch > 3:
				p.Addf(fmt.Sprintf("%s.channels[%d]", path, j), "%d: the ADS1115 has channels 0 to 3", ch)
			case seen[ch]:
				p.Addf(fmt.Sprintf("%s.channels[%d]", path, j), "%d is listed twice", ch)
			default:
				seen[ch] = true
			}
		}
	}
	if s.Type == TypeCPUTemp {
		if _, err := thermalPath(s.ThermalZone); err != nil {
			p.Addf(path+".thermal_zone", "%s", err)
		}
	}
	if s.Type == TypeSim && len(s.Unit) > 16 {
		p.Addf(path+".unit", "%q is longer than 16 characters", s.Unit)
	}
}

// thermalPath resolves a thermal_zone setting to the absolute path of its
// temp file (before the board's sysfs root is put in front).
func thermalPath(zone string) (string, error) {
	switch {
	case zone == "":
		zone = defaultThermalZone
	case strings.HasPrefix(zone, "/"):
		if c := path.Clean(zone); c != zone || !strings.HasPrefix(zone, "/sys/") {
			return "", fmt.Errorf("%q: want a zone name like thermal_zone0 or a clean path under /sys/", zone)
		}
		return zone, nil
	}
	if n, ok := smallNumber(strings.TrimPrefix(zone, "thermal_zone")); !ok || !strings.HasPrefix(zone, "thermal_zone") || strconv.Itoa(n) != zone[len("thermal_zone"):] {
		return "", fmt.Errorf("%q: want a zone name like thermal_zone0 or a path under /sys/", zone)
	}
	return "/sys/class/thermal/" + zone + "/temp", nil
}

// i2cHeaderPins are the SDA and SCL GPIOs of the I²C buses that every Pi
// has on its header at fixed pins: bus 1 (P1_3, P1_5) for sensors, and
// bus 0 (P1_27, P1_28) that HATs use for their ID EEPROM.
var i2cHeaderPins = map[int][2]int{0: {0, 1}, 1: {2, 3}}

// i2cBusNumber reads an i2c_bus setting: "1", "I2C1" or "/dev/i2c-1".
func i2cBusNumber(bus string) (int, bool) {
	s := strings.ToUpper(strings.TrimSpace(bus))
	for _, prefix := range []string{"/DEV/I2C-", "I2C"} {
		if strings.HasPrefix(s, prefix) {
			s = s[len(prefix):]
			break
		}
	}
	return smallNumber(s)
}

// hardwarePWM are the header GPIOs with a PWM function on every Pi model:
// GPIO12 and GPIO18 (PWM0), GPIO13 and GPIO19 (PWM1). Other GPIOs only
// have PWM on some models (GPIO14/15 on the Pi 5) or not at all.
var hardwarePWM = map[int]bool{12: true, 13: true, 18: true, 19: true}

// quotePin names a pin as the user wrote it, with its GPIO name when that
// differs: "GPIO17", or "P1_11" (GPIO17).
func quotePin(pin string, n int) string {
	if strings.EqualFold(strings.TrimSpace(pin), gpioName(n)) {
		return strconv.Quote(pin)
	}
	return fmt.Sprintf("%q (%s)", pin, gpioName(n))
}

// parseOnOff reads an output state. true/false are accepted too, because
// YAML users write them and the /set payloads accept them.
func parseOnOff(s string) (on, ok bool) {
	switch strings.ToLower(s) {
	case "on", "true":
		return true, true
	case "off", "false", "":
		return false, true
	}
	return false, false
}

func ms(n int64) pibridge.Duration { return pibridge.Duration(time.Duration(n) * time.Millisecond) }

// sensorQuantities lists the signals a sensor yields, in order.
func sensorQuantities(s SensorConfig) []quantity {
	switch s.Type {
	case TypeADS1115:
		qs := make([]quantity, len(s.Channels))
		for i, ch := range s.Channels {
			qs[i] = quantity{name: "a" + strconv.Itoa(ch), unit: "V", class: "voltage", digits: 4}
		}
		return qs
	case TypeSim:
		return []quantity{{unit: s.Unit, class: unitClass(s.Unit), digits: 2}}
	}
	return sensorTypes[s.Type].quantities
}

// unitClass guesses the Home Assistant device class of a sim sensor.
func unitClass(unit string) string {
	switch unit {
	case "°C", "°F", "K":
		return "temperature"
	case "hPa", "Pa", "kPa", "mbar":
		return "pressure"
	case "V", "mV":
		return "voltage"
	}
	return ""
}

// sensorSource says where a sensor's values come from, for the -check table
// and logs.
func sensorSource(s SensorConfig) string {
	switch s.Type {
	case TypeBME280, TypeBMP280, TypeADS1115:
		src := fmt.Sprintf("%s i2c %s %s", s.Type, s.I2CBus, s.Address)
		if n, ok := i2cBusNumber(s.I2CBus); ok {
			if hdr, ok := i2cHeaderPins[n]; ok {
				src += fmt.Sprintf(" on GPIO%d/GPIO%d", hdr[0], hdr[1])
			}
		}
		return src
	case TypeDS18B20:
		src := "ds18b20 1-wire "
		if s.OnewireBus != "" {
			src += s.OnewireBus + " "
		}
		src += string(s.Address)
		if n, err := NormalizePin(s.OnewirePin); err == nil {
			src += " on " + n
		}
		return src
	case TypeCPUTemp:
		p, _ := thermalPath(s.ThermalZone)
		return "cpu_temp " + p
	}
	return "sim"
}

// Signals returns the signals the configuration yields, in order: inputs,
// outputs, pwm, then each sensor's quantities. It needs no hardware, so
// the -check table can print it anywhere; a Board's Signals may differ
// only in Source, where a simulated sensor says so.
func (c Config) Signals() []pibridge.Signal {
	cfg := c.withDefaults()
	sim := cfg.Board == BoardSim
	pinSource := ""
	if sim {
		pinSource = "simulated"
	}
	var out []pibridge.Signal
	pin := func(s string) string {
		if n, err := NormalizePin(s); err == nil {
			return n
		}
		return s
	}
	for _, in := range cfg.Inputs {
		out = append(out, pibridge.Signal{Name: in.Name, Kind: pibridge.KindInput, Pin: pin(in.Pin), Source: pinSource})
	}
	for _, o := range cfg.Outputs {
		out = append(out, pibridge.Signal{Name: o.Name, Kind: pibridge.KindOutput, Pin: pin(o.Pin), Source: pinSource, Pulse: o.Pulse.D()})
	}
	for _, w := range cfg.PWM {
		out = append(out, pibridge.Signal{Name: w.Name, Kind: pibridge.KindPWM, Pin: pin(w.Pin), Source: pinSource})
	}
	for _, s := range cfg.Sensors {
		src := sensorSource(s)
		if sim && s.Type != TypeSim && s.Type != TypeCPUTemp {
			src += " (simulated)"
		}
		for _, q := range sensorQuantities(s) {
			name := s.Name
			if q.name != "" {
				name += "." + q.name
			}
			out = append(out, pibridge.Signal{Name: name, Kind: pibridge.KindSensor, Unit: q.unit, Source: src, DeviceClass: q.class})
		}
	}
	return out
}

// ShortestFailsafe returns the smallest failsafe_after of all outputs, or
// 0 when none has one: the caller keeps the board told of SetOnline at a
// pace that fits it.
func (c Config) ShortestFailsafe() time.Duration {
	var min time.Duration
	for _, o := range c.Outputs {
		if d := o.FailsafeAfter.D(); d > 0 && (min == 0 || d < min) {
			min = d
		}
	}
	return min
}

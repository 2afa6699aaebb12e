package gpio

import (
	"context"
	"errors"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"
	"periph.io/x/conn/v3/onewire"
	"periph.io/x/conn/v3/onewire/onewiretest"

	"pibridge"
)

// hardware returns Options for board periph that touch no real hardware:
// no host.Init, pins refused, I²C from a transcript, no 1-Wire bus unless
// the test sets OpenOneWire, /sys from a fixture.
func hardware(root string, bus *i2ctest.Playback, clock Clock) Options {
	return Options{
		SysRoot: root,
		Clock:   clock,
		OpenPin: func(string) (pgpio.PinIO, error) { return nil, errors.New("no pins in this test") },
		OpenI2C: func(string) (i2c.BusCloser, error) {
			if bus == nil {
				return nil, errors.New("no I²C bus in this test")
			}
			return bus, nil
		},
		OpenOneWire: func(string) (onewire.BusCloser, error) { return nil, errors.New("no 1-Wire bus in this test") },
	}
}

func TestGate(t *testing.T) {
	at := func(s int) time.Duration { return time.Duration(s) * time.Second }
	type step struct {
		t    int
		v    float64
		pass bool
	}
	tests := []struct {
		name        string
		minDelta    float64
		maxInterval time.Duration
		steps       []step
	}{
		{"no thinning", 0, 0, []step{{0, 1, true}, {1, 1, true}, {2, 1, true}}},
		{"min_delta", 0.5, 0, []step{{0, 20, true}, {1, 20.4, false}, {2, 20.5, false}, {3, 20.51, true}, {4, 20.2, false}, {5, 19.9, true}}},
		{"max_interval", 0, time.Minute, []step{{0, 1, true}, {30, 1, false}, {31, 1.1, true}, {90, 1.1, false}, {91, 1.1, true}}},
		{"both", 1, time.Minute, []step{{0, 5, true}, {10, 5.5, false}, {59, 5.9, false}, {60, 5.9, true}, {61, 7, true}}},
	}
	for _, tt := range tests {
		g := gate{minDelta: tt.minDelta, maxInterval: tt.maxInterval}
		for i, s := range tt.steps {
			if got := g.pass(s.v, at(s.t)); got != s.pass {
				t.Errorf("%s step %d (%v at %ds): pass = %v, want %v", tt.name, i, s.v, s.t, got, s.pass)
			}
		}
	}
}

func TestCPUTemp(t *testing.T) {
	root := t.TempDir()
	const zone = "sys/class/thermal/thermal_zone0/temp"
	writeFile(t, root, zone, "48312\n")
	clock := newFakeClock()
	cfg := Config{Board: BoardPeriph, Sensors: []SensorConfig{
		{Name: "cpu", Type: TypeCPUTemp, Interval: ms(5000), MinDelta: 0.5, MaxInterval: ms(60_000)},
	}}
	r := start(t, cfg, hardware(root, nil, clock))
	if s := r.Signals()[0]; s.Name != "cpu.temperature" || s.Unit != "°C" || s.Source != "cpu_temp /sys/class/thermal/thermal_zone0/temp" {
		t.Errorf("signal %+v", s)
	}
	reads := func() uint64 { return r.SensorStats()[0].Reads }
	eventually(t, "the first reading", func() bool { return reads() == 1 && clock.Pending() == 1 })
	// tick advances one interval and waits for that read to be done.
	tick := func(content string) {
		t.Helper()
		if content != "" {
			writeFile(t, root, zone, content)
		}
		n := reads()
		clock.Advance(5 * time.Second)
		eventually(t, "the next read", func() bool { return reads() == n+1 && clock.Pending() == 1 })
	}
	tick("48600\n") // +0.29: below min_delta
	tick("49000\n") // +0.69 from the last emitted: out
	for range 11 {
		tick("49100\n") // 55s of small moves
	}
	tick("") // 60s since the last emitted: out anyway
	var got []float64
	for _, v := range r.rec.of("cpu.temperature") {
		got = append(got, v.Float())
	}
	if want := []float64{48.31, 49, 49.1}; !reflect.DeepEqual(got, want) {
		t.Errorf("readings %v, want %v", got, want)
	}
}

// A broken sensor is retried with backoff and counted; the others go on.
func TestFailingSensorDoesNotStopOthers(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root, "sys/bus/w1/devices/28-0316a2791eff/w1_slave",
		"72 01 4b 46 7f ff 0e 10 57 : crc=57 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n")
	cfg := Config{Board: BoardPeriph, Sensors: []SensorConfig{
		{Name: "cpu", Type: TypeCPUTemp, ThermalZone: "thermal_zone7", Interval: ms(10)},
		{Name: "water", Type: TypeDS18B20, Address: "28-0316a2791eff", Interval: ms(10)},
		{Name: "air", Type: TypeBME280, Interval: ms(10)},
		{Name: "t1", Type: TypeSim, Unit: "°C", Interval: ms(10)},
	}}
	r := start(t, cfg, hardware(root, nil, nil))
	eventually(t, "failures and readings", func() bool {
		st := r.SensorStats()
		return st[0].Stale && st[1].Stale && st[2].Stale && len(r.rec.of("t1")) >= 10
	})
	st := r.SensorStats()
	// water has no periph 1-Wire bus here, so it falls back to the
	// kernel's w1_therm file, whose CRC line says NO.
	for i, want := range []string{"no such file", "CRC check failed", "no I²C bus"} {
		if !st[i].Failing || st[i].Reads != 0 || st[i].Errors < StaleAfterFailures || !strings.Contains(st[i].LastError, want) {
			t.Errorf("%s stats %+v, want failing with %q", st[i].Name, st[i], want)
		}
	}
	if st[3].Failing || st[3].Stale || st[3].Errors != 0 || st[3].Reads < 10 {
		t.Errorf("t1 stats %+v", st[3])
	}
	wantStale := []string{"cpu.temperature", "water.temperature", "air.temperature", "air.humidity", "air.pressure"}
	if got := r.StaleSignals(); !reflect.DeepEqual(got, wantStale) {
		t.Errorf("StaleSignals() = %v, want %v", got, wantStale)
	}
	for _, name := range []string{"cpu.temperature", "water.temperature", "air.temperature"} {
		if vs := r.rec.of(name); len(vs) != 0 {
			t.Errorf("%s emitted %v while failing", name, vs)
		}
	}
	for _, v := range r.rec.of("t1") {
		if v.Float() < 10 || v.Float() > 35 {
			t.Errorf("t1 = %v, outside the °C walk's bounds", v)
		}
	}
	// The backoff doubles: 10ms, 20ms, 40ms …, so far fewer attempts than t1's reads.
	if st[0].Errors*2 > st[3].Reads {
		t.Errorf("cpu attempted %d times while t1 read %d times: no backoff", st[0].Errors, st[3].Reads)
	}
}

// ds18b20ROM is the ROM of the sensor the kernel calls 28-0316a2791eff:
// family 0x28, the serial least significant byte first, then the CRC.
var ds18b20ROM = []byte{0x28, 0xff, 0x1e, 0x79, 0xa2, 0x16, 0x03, 0xb0}

// The real ds18b20 driver runs against periph's 1-Wire test bus: every
// transaction is Match ROM (0x55, the ROM) and a function command, as a
// DS18B20 on a Pi sees it; Close fails if the transcript is not used up.
// The conversion is waited on the board's clock: the scratchpad is read
// exactly 752ms after Convert T, not before.
func TestDS18B20(t *testing.T) {
	to := func(rom []byte, cmd byte) []byte { return append(append([]byte{0x55}, rom...), cmd) }
	// spad is a scratchpad: temperature LSB, MSB, TH, TL, config, 3
	// reserved, then the CRC over those eight bytes.
	spad := func(b ...byte) []byte { return append(b, onewire.CalcCRC(b)) }
	read := func(rom []byte, sp []byte) onewiretest.IO { return onewiretest.IO{W: to(rom, 0xbe), R: sp} }
	convert := func(rom []byte) onewiretest.IO {
		return onewiretest.IO{W: to(rom, 0x44), Pull: onewire.StrongPullup}
	}
	ds18s20ROM := []byte{0x10, 0xff, 0x1e, 0x79, 0xa2, 0x16, 0x03, 0x55}
	const twelveBits = 0x7f // config register: 12-bit resolution, as shipped
	tests := []struct {
		name, address, bus string
		ops                []onewiretest.IO
		want               []float64 // one per conversion
	}{
		{"DS18B20 on the default bus", "28-0316a2791eff", "", []onewiretest.IO{
			read(ds18b20ROM, spad(0x50, 0x05, 0x4b, 0x46, twelveBits, 0xff, 0x0c, 0x10)), // ds18b20.New: 85 °C, power-on
			convert(ds18b20ROM),
			read(ds18b20ROM, spad(0x72, 0x01, 0x4b, 0x46, twelveBits, 0xff, 0x0e, 0x10)), // 0x0172/16 = 23.125 °C
			convert(ds18b20ROM),
			read(ds18b20ROM, spad(0x5e, 0xff, 0x4b, 0x46, twelveBits, 0xff, 0x02, 0x10)), // -0x00a2/16 = -10.125 °C
		}, []float64{23.13, -10.13}},
		// A DS18S20 has no resolution to set, so New reads nothing; its
		// 9-bit value is refined with COUNT_REMAIN: 25 - 0.25 + (16-11)/16.
		{"DS18S20 on bus 1", "10-0316a2791eff", "1", []onewiretest.IO{
			convert(ds18s20ROM),
			read(ds18s20ROM, spad(0x32, 0x00, 0x4b, 0x46, 0xff, 0xff, 0x0b, 0x10)),
		}, []float64{25.06}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bus := &onewiretest.Playback{Ops: tt.ops, DontPanic: true}
			var mu sync.Mutex
			var opened []string
			clock := newFakeClock()
			o := hardware(t.TempDir(), nil, clock)
			o.OpenOneWire = func(name string) (onewire.BusCloser, error) {
				mu.Lock()
				defer mu.Unlock()
				opened = append(opened, name)
				return bus, nil
			}
			cfg := Config{Sensors: []SensorConfig{{Name: "water", Type: TypeDS18B20, Address: Address(tt.address), OnewireBus: tt.bus}}}
			r := start(t, cfg, o)
			done := func() int { bus.Lock(); defer bus.Unlock(); return bus.Count }
			var converts []int // how many ops have run once each Convert T is out
			for i, io := range tt.ops {
				if io.Pull {
					converts = append(converts, i+1)
				}
			}
			for i, want := range tt.want {
				eventually(t, "Convert T", func() bool { return done() == converts[i] && clock.Pending() == 1 })
				clock.Advance(ds18b20Conversion - time.Millisecond)
				if n := done(); n != converts[i] {
					t.Fatalf("conversion %d: scratchpad read %v after Convert T, before the conversion time", i, ds18b20Conversion-time.Millisecond)
				}
				clock.Advance(time.Millisecond)
				eventually(t, "the reading", func() bool { return len(r.rec.of("water.temperature")) == i+1 && clock.Pending() == 1 })
				if v, _ := r.rec.last("water.temperature"); v != pibridge.Number(want) {
					t.Errorf("conversion %d: water.temperature = %v, want %v", i, v, want)
				}
				if i+1 < len(tt.want) {
					clock.Advance(DefaultInterval - ds18b20Conversion) // the next interval
				}
			}
			st := r.SensorStats()[0]
			if st.Errors != 0 || st.Reads != uint64(len(tt.want)) {
				t.Errorf("stats %+v", st)
			}
			r.stop()
			if err := bus.Close(); err != nil {
				t.Errorf("transcript: %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if !reflect.DeepEqual(opened, []string{tt.bus}) {
				t.Errorf("opened 1-Wire buses %q, want [%q]", opened, tt.bus)
			}
		})
	}
}

// What the driver refuses is an error of the sensor, counted, with the
// driver's words.
func TestDS18B20Errors(t *testing.T) {
	to := func(cmd byte) []byte { return append(append([]byte{0x55}, ds18b20ROM...), cmd) }
	good := []byte{0x72, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x0e, 0x10, 0x57}
	badCRC := append(append([]byte(nil), good[:8]...), 0x58)
	powerOn := []byte{0x50, 0x05, 0x4b, 0x46, 0x7f, 0xff, 0x0c, 0x10, 0x1c}
	absent := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	tests := []struct {
		name    string
		ops     []onewiretest.IO
		convert bool
		err     string
	}{
		{"absent", []onewiretest.IO{{W: to(0xbe), R: absent}}, false, "28-0316a2791eff: ds18b20: device did not respond"},
		{"bad CRC", []onewiretest.IO{{W: to(0xbe), R: badCRC}}, false, "ds18b20: incorrect scratchpad CRC"},
		{"power-on value after Convert T", []onewiretest.IO{
			{W: to(0xbe), R: good},
			{W: to(0x44), Pull: onewire.StrongPullup},
			{W: to(0xbe), R: powerOn},
		}, true, "85 °C is the power-on value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bus := &onewiretest.Playback{Ops: tt.ops, DontPanic: true}
			clock := newFakeClock()
			o := hardware(t.TempDir(), nil, clock)
			o.OpenOneWire = func(string) (onewire.BusCloser, error) { return bus, nil }
			cfg := Config{Sensors: []SensorConfig{{Name: "water", Type: TypeDS18B20, Address: "28-0316a2791eff"}}}
			r := start(t, cfg, o)
			if tt.convert {
				eventually(t, "Convert T", func() bool { bus.Lock(); defer bus.Unlock(); return bus.Count == 2 && clock.Pending() == 1 })
				clock.Advance(ds18b20Conversion)
			}
			eventually(t, "the failure", func() bool { return r.SensorStats()[0].Errors == 1 })
			if st := r.SensorStats()[0]; !st.Failing || st.Stale || !strings.Contains(st.LastError, tt.err) {
				t.Errorf("stats %+v, want failing, not yet stale, with %q", st, tt.err)
			}
			if vs := r.rec.of("water.temperature"); len(vs) != 0 {
				t.Errorf("emitted %v", vs)
			}
			r.stop()
			if err := bus.Close(); err != nil {
				t.Errorf("transcript: %v", err)
			}
		})
	}
}

// onewire_bus: sysfs reads the kernel's w1_therm files; so does the
// default bus when periph.io has no 1-Wire bus, but a named bus does not
// fall back.
func TestDS18B20Sysfs(t *testing.T) {
	tests := []struct {
		name, bus, file, content string
		want                     float64
		err                      string
	}{
		{"temperature file", "sysfs", "temperature", "23125\n", 23.13, ""},
		{"negative", "sysfs", "temperature", "-1062\n", -1.06, ""},
		{"w1_slave", "sysfs", "w1_slave", "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n", 23.13, ""},
		{"power-on value", "sysfs", "temperature", "85000\n", 0, "power-on value"},
		{"garbage", "sysfs", "temperature", "x\n", 0, "not a number"},
		{"fallback of the default bus", "", "temperature", "21500\n", 21.5, ""},
		{"no fallback for a named bus", "1", "temperature", "21500\n", 0, `1-wire bus "1": no 1-Wire bus in this test`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeFile(t, root, "sys/bus/w1/devices/28-0316a2791eff/"+tt.file, tt.content)
			cfg := Config{Sensors: []SensorConfig{{Name: "water", Type: TypeDS18B20, Address: "28-0316a2791eff", OnewireBus: tt.bus}}}
			r := start(t, cfg, hardware(root, nil, newFakeClock()))
			eventually(t, "a read", func() bool { st := r.SensorStats()[0]; return st.Reads+st.Errors > 0 })
			st := r.SensorStats()[0]
			if tt.err != "" {
				if !strings.Contains(st.LastError, tt.err) {
					t.Errorf("error %q, want %q", st.LastError, tt.err)
				}
				return
			}
			if v, _ := r.rec.last("water.temperature"); v != pibridge.Number(tt.want) {
				t.Errorf("reading %v (stats %+v), want %v", v, st, tt.want)
			}
		})
	}
}

// A BME280 / BMP280 transcript (from periph's own bmxx80 tests) through the
// real driver. The driver computes 23.720 °C, 100942.6953125 Pa and
// 65.30560 %RH from it; the bridge emits them as °C, hPa and %RH rounded to
// the sensor's precision. Close fails if the transcript is not used up.
func TestBMx280(t *testing.T) {
	calibration := []byte{0x10, 0x6e, 0x6c, 0x66, 0x32, 0x0, 0x5d, 0x95, 0xb8, 0xd5, 0xd0, 0xb, 0x77, 0x1e, 0x9d, 0xff, 0xf9, 0xff, 0xac, 0x26, 0xa, 0xd8, 0xbd, 0x10, 0x0, 0x4b}
	measure := []i2ctest.IO{
		{Addr: 0x76, W: []byte{0xf4, 0x6d}},         // ctrl_meas: forced mode
		{Addr: 0x76, W: []byte{0xf3}, R: []byte{8}}, // status: measuring
		{Addr: 0x76, W: []byte{0xf3}, R: []byte{0}}, // status: done
	}
	bme280 := append([]i2ctest.IO{
		{Addr: 0x76, W: []byte{0xd0}, R: []byte{0x60}}, // chip id: BME280
		{Addr: 0x76, W: []byte{0x88}, R: calibration},
		{Addr: 0x76, W: []byte{0xe1}, R: []byte{0x6e, 0x1, 0x0, 0x13, 0x5, 0x0, 0x1e}}, // humidity calibration
		{Addr: 0x76, W: []byte{0xf4, 0x6c, 0xf2, 0x3, 0xf5, 0xa0, 0xf4, 0x6c}},         // oversampling ×4, filter off
	}, measure...)
	bme280 = append(bme280, i2ctest.IO{Addr: 0x76, W: []byte{0xf7}, R: []byte{0x4a, 0x52, 0xc0, 0x80, 0x96, 0xc0, 0x7a, 0x76}})
	bmp280Open := []i2ctest.IO{
		{Addr: 0x76, W: []byte{0xd0}, R: []byte{0x58}}, // chip id: BMP280
		{Addr: 0x76, W: []byte{0x88}, R: calibration},
		{Addr: 0x76, W: []byte{0xf4, 0x6c, 0xf5, 0xa0, 0xf4, 0x6c}},
	}
	bmp280 := append(append([]i2ctest.IO(nil), bmp280Open...), measure...)
	bmp280 = append(bmp280, i2ctest.IO{Addr: 0x76, W: []byte{0xf7}, R: []byte{0x4a, 0x52, 0xc0, 0x80, 0x96, 0xc0}})

	tests := []struct {
		name, typ string
		ops       []i2ctest.IO
		want      map[string]float64
		err       string
	}{
		{"bme280", TypeBME280, bme280, map[string]float64{"air.temperature": 23.72, "air.humidity": 65.3, "air.pressure": 1009.43}, ""},
		{"bmp280", TypeBMP280, bmp280, map[string]float64{"air.temperature": 23.72, "air.pressure": 1009.43}, ""},
		{"bme280 configured, bmp280 found", TypeBME280, bmp280Open, nil, "found a bmp280 at 0x76, not a bme280"},
		{"no such chip", TypeBMP280, []i2ctest.IO{{Addr: 0x76, W: []byte{0xd0}, R: []byte{0x00}}}, nil, "unexpected chip id 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bus := &i2ctest.Playback{Ops: tt.ops, DontPanic: true}
			cfg := Config{Sensors: []SensorConfig{{Name: "air", Type: tt.typ, Address: "0x76"}}}
			r := start(t, cfg, hardware(t.TempDir(), bus, newFakeClock()))
			eventually(t, "a read", func() bool { st := r.SensorStats()[0]; return st.Reads+st.Errors > 0 })
			st := r.SensorStats()[0]
			if tt.err != "" {
				if st.Errors != 1 || !strings.Contains(st.LastError, tt.err) {
					t.Errorf("stats %+v, want the error %q", st, tt.err)
				}
			} else if st.Errors != 0 {
				t.Fatalf("read failed: %s", st.LastError)
			}
			for name, want := range tt.want {
				if v, _ := r.rec.last(name); v != pibridge.Number(want) {
					t.Errorf("%s = %v, want %v", name, v, want)
				}
			}
			if n := len(r.Signals()); n != len(sensorTypes[tt.typ].quantities) {
				t.Errorf("%d signals", n)
			}
			r.stop()
			if err := bus.Close(); err != nil {
				t.Errorf("transcript: %v", err)
			}
		})
	}
}

// The real ads1x15 driver: each channel is one single-shot conversion,
// config register then conversion register, read as ±4.096 V full scale:
// V = raw × 4.096 / 32768.
func TestADS1115(t *testing.T) {
	bus := &i2ctest.Playback{DontPanic: true, Ops: []i2ctest.IO{
		// Config 0xc383: start, AIN0 to GND, ±4.096V, single shot; 128 SPS, comparator off.
		{Addr: 0x49, W: []byte{0x1, 0xc3, 0x83}},
		{Addr: 0x49, W: []byte{0x0}, R: []byte{0x40, 0x00}}, // 16384 → 2.048 V
		{Addr: 0x49, W: []byte{0x1, 0xd3, 0x83}},            // AIN1
		{Addr: 0x49, W: []byte{0x0}, R: []byte{0x12, 0x34}}, // 4660 → 0.5825 V
		{Addr: 0x49, W: []byte{0x1, 0xf3, 0x83}},            // AIN3
		{Addr: 0x49, W: []byte{0x0}, R: []byte{0xff, 0x00}}, // -256 → -0.032 V (a little below ground)
	}}
	cfg := Config{Sensors: []SensorConfig{{Name: "soil", Type: TypeADS1115, Address: "0x49", Channels: []int{0, 1, 3}}}}
	r := start(t, cfg, hardware(t.TempDir(), bus, newFakeClock()))
	eventually(t, "a read", func() bool { st := r.SensorStats()[0]; return st.Reads+st.Errors > 0 })
	if st := r.SensorStats()[0]; st.Errors != 0 {
		t.Fatalf("read failed: %s", st.LastError)
	}
	for name, want := range map[string]float64{"soil.a0": 2.048, "soil.a1": 0.5825, "soil.a3": -0.032} {
		if v, _ := r.rec.last(name); v != pibridge.Number(want) {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
	r.stop()
	if err := bus.Close(); err != nil {
		t.Errorf("transcript: %v", err)
	}
}

// Three failures in a row make a sensor stale; the next good read makes it
// fresh and is emitted even within min_delta of the last reading.
func TestStaleSensor(t *testing.T) {
	root := t.TempDir()
	const zone = "sys/class/thermal/thermal_zone0/temp"
	writeFile(t, root, zone, "48312\n")
	clock := newFakeClock()
	cfg := Config{Sensors: []SensorConfig{
		{Name: "cpu", Type: TypeCPUTemp, Interval: ms(1000), MinDelta: 0.5},
		{Name: "t1", Type: TypeSim, Unit: "°C", Interval: ms(60_000)},
	}}
	r := start(t, cfg, hardware(root, nil, clock))
	attempts := func() uint64 { st := r.SensorStats()[0]; return st.Reads + st.Errors }
	eventually(t, "the first readings", func() bool { return attempts() == 1 && clock.Pending() == 2 })
	writeFile(t, root, zone, "garbage\n")
	// Failures retry after 1s, 1s, 2s: the backoff doubles from the second.
	for i, wait := range []time.Duration{time.Second, time.Second, 2 * time.Second} {
		if r.Stale("cpu") {
			t.Fatalf("stale after %d failures", i)
		}
		n := attempts()
		clock.Advance(wait)
		eventually(t, "the next attempt", func() bool { return attempts() == n+1 && clock.Pending() == 2 })
	}
	st := r.SensorStats()[0]
	if !st.Stale || st.Errors != StaleAfterFailures || !reflect.DeepEqual(st.Signals, []string{"cpu.temperature"}) {
		t.Errorf("stats %+v, want stale after %d errors", st, StaleAfterFailures)
	}
	for name, want := range map[string]bool{"cpu": true, "cpu.temperature": true, "t1": false, "nope": false} {
		if got := r.Stale(name); got != want {
			t.Errorf("Stale(%s) = %v, want %v", name, got, want)
		}
	}
	if got := r.StaleSignals(); !reflect.DeepEqual(got, []string{"cpu.temperature"}) {
		t.Errorf("StaleSignals() = %v", got)
	}

	writeFile(t, root, zone, "48400\n") // +0.09: below min_delta, yet emitted
	n := attempts()
	clock.Advance(4 * time.Second)
	eventually(t, "the recovery", func() bool { return attempts() == n+1 && clock.Pending() == 2 })
	if r.Stale("cpu") || r.StaleSignals() != nil {
		t.Error("still stale after a good read")
	}
	var got []float64
	for _, v := range r.rec.of("cpu.temperature") {
		got = append(got, v.Float())
	}
	if want := []float64{48.31, 48.4}; !reflect.DeepEqual(got, want) {
		t.Errorf("readings %v, want %v", got, want)
	}
}

type panicDriver struct{}

func (panicDriver) read(context.Context, []float64) error { panic("driver bug") }
func (panicDriver) close() error                          { return nil }

func TestSensorPanicIsAnError(t *testing.T) {
	b := &Board{log: testLogger(t)}
	s := &sensor{b: b, name: "x", qs: []quantity{qTemperature}, vals: make([]float64, 1),
		open: func() (sensorDriver, error) { return panicDriver{}, nil }}
	if err := s.readOnce(ctx); err == nil || !strings.Contains(err.Error(), "driver bug") {
		t.Errorf("readOnce = %v", err)
	}
	if s.drv != nil {
		t.Error("a panicking driver is kept")
	}
}

// The sim walk stays in its bounds over a long run, moves smoothly, and
// costs no allocation per reading, like a file read.
func TestSensorReadsDoNotAllocate(t *testing.T) {
	c := SensorConfig{Name: "air", Type: TypeBME280, Interval: ms(1000)}
	qs := sensorQuantities(c)
	w := newWalk(1, 2, c, qs, time.Second)
	dst := make([]float64, len(qs))
	prev := []float64(nil)
	for i := range 100_000 {
		w.read(ctx, dst)
		for j, v := range dst {
			m := w.models[j]
			if v < m.lo || v > m.hi {
				t.Fatalf("step %d: %s = %v outside [%v, %v]", i, qs[j].name, v, m.lo, m.hi)
			}
			if prev != nil && math.Abs(v-prev[j]) > 6*m.sigma {
				t.Fatalf("step %d: %s jumped from %v to %v", i, qs[j].name, prev[j], v)
			}
		}
		prev = append(prev[:0], dst...)
	}
	if n := testing.AllocsPerRun(100, func() { w.read(ctx, dst) }); n != 0 {
		t.Errorf("walk read allocates %v times", n)
	}

	root := t.TempDir()
	writeFile(t, root, "temp", "48312\n")
	f, err := openMilliFile(root+"/temp", false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	if n := testing.AllocsPerRun(100, func() { f.read(ctx, dst) }); n != 0 {
		t.Errorf("file read allocates %v times", n)
	}
}

// TestHeartbeatAcrossClockStep: max_interval is measured on the monotonic
// clock. When NTP sets the wall clock (back by an hour, or forward by a
// day, as after a Pi's power cut), an unchanging sensor still sends its
// heartbeat exactly max_interval after the last one: not an hour late,
// not at once.
func TestHeartbeatAcrossClockStep(t *testing.T) {
	for _, tt := range []struct {
		name string
		step time.Duration
	}{
		{"set back an hour", -time.Hour},
		{"set forward a day", 24 * time.Hour},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			const zone = "sys/class/thermal/thermal_zone0/temp"
			writeFile(t, root, zone, "48312\n")
			clock := newFakeClock()
			cfg := Config{Board: BoardPeriph, Sensors: []SensorConfig{
				{Name: "cpu", Type: TypeCPUTemp, Interval: ms(5000), MinDelta: 0.5, MaxInterval: ms(60_000)},
			}}
			r := start(t, cfg, hardware(root, nil, clock))
			reads := func() uint64 { return r.SensorStats()[0].Reads }
			eventually(t, "the first reading", func() bool { return reads() == 1 && clock.Pending() == 1 })
			tick := func() {
				t.Helper()
				n := reads()
				clock.Advance(5 * time.Second)
				eventually(t, "the next read", func() bool { return reads() == n+1 && clock.Pending() == 1 })
			}
			tick()
			clock.Step(tt.step)
			for range 10 {
				tick() // 55 s after the first reading
			}
			if n := len(r.rec.of("cpu.temperature")); n != 1 {
				t.Fatalf("%d readings 55 s after the first, want the first alone", n)
			}
			tick() // 60 s
			got := r.rec.of("cpu.temperature")
			if len(got) != 2 {
				t.Fatalf("%d readings 60 s after the first, want the heartbeat too", len(got))
			}
			ts := r.rec.times("cpu.temperature")
			if want := ts[0].Add(60 * time.Second).Add(tt.step); !ts[1].Equal(want) {
				t.Errorf("the heartbeat's ts is %v, want the stepped wall clock %v", ts[1], want)
			}
		})
	}
}

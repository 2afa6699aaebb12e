package gpio

import (
	"context"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"

	"pibridge"
)

// hardware returns Options for board periph that touch no real hardware:
// no host.Init, pins refused, I²C from a transcript, /sys from a fixture.
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
	}
}

func TestGate(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
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
		return st[0].Errors >= 2 && st[1].Errors >= 2 && st[2].Errors >= 2 && len(r.rec.of("t1")) >= 10
	})
	st := r.SensorStats()
	for i, want := range []string{"no such file", "CRC check failed", "no I²C bus"} {
		if !st[i].Failing || st[i].Reads != 0 || !strings.Contains(st[i].LastError, want) {
			t.Errorf("%s stats %+v, want failing with %q", st[i].Name, st[i], want)
		}
	}
	if st[3].Failing || st[3].Errors != 0 || st[3].Reads < 10 {
		t.Errorf("t1 stats %+v", st[3])
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

func TestDS18B20(t *testing.T) {
	tests := []struct {
		name, file, content string
		want                float64
		err                 string
	}{
		{"temperature file", "temperature", "23125\n", 23.13, ""},
		{"negative", "temperature", "-1062\n", -1.06, ""},
		{"w1_slave", "w1_slave", "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n", 23.13, ""},
		{"power-on value", "temperature", "85000\n", 0, "power-on value"},
		{"garbage", "temperature", "x\n", 0, "not a number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeFile(t, root, "sys/bus/w1/devices/28-0316a2791eff/"+tt.file, tt.content)
			cfg := Config{Sensors: []SensorConfig{{Name: "water", Type: TypeDS18B20, Address: "28-0316a2791eff"}}}
			r := start(t, cfg, hardware(root, nil, newFakeClock()))
			eventually(t, "a read", func() bool { st := r.SensorStats()[0]; return st.Reads+st.Errors > 0 })
			st := r.SensorStats()[0]
			if tt.err != "" {
				if !strings.Contains(st.LastError, tt.err) {
					t.Errorf("error %q, want %q", st.LastError, tt.err)
				}
				return
			}
			if v, _ := r.rec.last("water.temperature"); v.Float() != tt.want {
				t.Errorf("reading %v (stats %+v), want %v", v, st, tt.want)
			}
		})
	}
}

// The real bmxx80 driver runs against a transcript of a BME280 (from
// periph's own tests); Close fails if the transcript is not used up.
func TestBME280(t *testing.T) {
	bus := &i2ctest.Playback{DontPanic: true, Ops: []i2ctest.IO{
		{Addr: 0x76, W: []byte{0xd0}, R: []byte{0x60}}, // chip id: BME280
		{Addr: 0x76, W: []byte{0x88}, R: []byte{0x10, 0x6e, 0x6c, 0x66, 0x32, 0x0, 0x5d, 0x95, 0xb8, 0xd5, 0xd0, 0xb, 0x77, 0x1e, 0x9d, 0xff, 0xf9, 0xff, 0xac, 0x26, 0xa, 0xd8, 0xbd, 0x10, 0x0, 0x4b}},
		{Addr: 0x76, W: []byte{0xe1}, R: []byte{0x6e, 0x1, 0x0, 0x13, 0x5, 0x0, 0x1e}},
		{Addr: 0x76, W: []byte{0xf4, 0x6c, 0xf2, 0x3, 0xf5, 0xa0, 0xf4, 0x6c}},
		{Addr: 0x76, W: []byte{0xf4, 0x6d}},         // forced mode
		{Addr: 0x76, W: []byte{0xf3}, R: []byte{8}}, // busy
		{Addr: 0x76, W: []byte{0xf3}, R: []byte{0}}, // idle
		{Addr: 0x76, W: []byte{0xf7}, R: []byte{0x4a, 0x52, 0xc0, 0x80, 0x96, 0xc0, 0x7a, 0x76}},
	}}
	cfg := Config{Sensors: []SensorConfig{{Name: "air", Type: TypeBME280, Address: "0x76"}}}
	r := start(t, cfg, hardware(t.TempDir(), bus, newFakeClock()))
	eventually(t, "a read", func() bool { st := r.SensorStats()[0]; return st.Reads+st.Errors > 0 })
	if st := r.SensorStats()[0]; st.Errors != 0 {
		t.Fatalf("read failed: %s", st.LastError)
	}
	for name, want := range map[string]float64{"air.temperature": 23.72, "air.humidity": 65.3, "air.pressure": 1009.43} {
		if v, _ := r.rec.last(name); v != pibridge.Number(want) {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
	r.stop() // closes the bus: fails the test if the transcript has I/O left
}

func TestADS1115(t *testing.T) {
	bus := &i2ctest.Playback{DontPanic: true, Ops: []i2ctest.IO{
		// Channel 0 single-ended, ±4.096V, 128 SPS, single shot.
		{Addr: 0x49, W: []byte{0x1, 0xc3, 0x83}},
		{Addr: 0x49, W: []byte{0x0}, R: []byte{0x40, 0x00}},
		// Channel 3.
		{Addr: 0x49, W: []byte{0x1, 0xf3, 0x83}},
		{Addr: 0x49, W: []byte{0x0}, R: []byte{0x10, 0x00}},
	}}
	cfg := Config{Sensors: []SensorConfig{{Name: "soil", Type: TypeADS1115, Address: "0x49", Channels: []int{0, 3}}}}
	r := start(t, cfg, hardware(t.TempDir(), bus, newFakeClock()))
	eventually(t, "a read", func() bool { st := r.SensorStats()[0]; return st.Reads+st.Errors > 0 })
	if st := r.SensorStats()[0]; st.Errors != 0 {
		t.Fatalf("read failed: %s", st.LastError)
	}
	for name, want := range map[string]float64{"soil.a0": 2.048, "soil.a3": 0.512} {
		if v, _ := r.rec.last(name); v != pibridge.Number(want) {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
	r.stop()
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

package gpio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"periph.io/x/conn/v3/onewire"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/ads1x15"
	"periph.io/x/devices/v3/bmxx80"
	"periph.io/x/devices/v3/ds18b20"
)

// milliFile reads a sysfs attribute holding thousandths (thermal zones'
// milli-°C, w1_therm's "temperature" file), or a w1_slave file. The file stays
// open and is read again at offset 0, which makes sysfs produce a fresh
// value: no allocation per reading.
type milliFile struct {
	path    string
	f       *os.File
	w1slave bool
	buf     [128]byte
}

func openMilliFile(path string, w1slave bool) (*milliFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	m := &milliFile{path: path, f: f, w1slave: w1slave}
	var probe [1]float64
	if err := m.read(context.Background(), probe[:]); err != nil {
		f.Close()
		return nil, err
	}
	return m, nil
}

func (m *milliFile) read(_ context.Context, dst []float64) error {
	n, err := m.f.ReadAt(m.buf[:], 0)
	if err != nil && err != io.EOF {
		return err
	}
	b := m.buf[:n]
	if m.w1slave {
		// "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 … t=23125\n"
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 || !bytes.HasSuffix(bytes.TrimSpace(b[:nl]), []byte("YES")) {
			return fmt.Errorf("%s: CRC check failed", m.path)
		}
		i := bytes.Index(b[nl:], []byte("t="))
		if i < 0 {
			return fmt.Errorf("%s: no t= in the reading", m.path)
		}
		b = b[nl+i+2:]
	}
	v, ok := parseMilli(b)
	if !ok {
		return fmt.Errorf("%s: %q is not a number", m.path, bytes.TrimSpace(b))
	}
	dst[0] = float64(v) / 1000
	return nil
}

func (m *milliFile) close() error { return m.f.Close() }

// parseMilli reads an optionally negative decimal integer up to the first
// non-digit, without allocating.
func parseMilli(b []byte) (int64, bool) {
	b = bytes.TrimSpace(b)
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	var v int64
	i := 0
	for ; i < len(b) && i < 12 && b[i] >= '0' && b[i] <= '9'; i++ {
		v = v*10 + int64(b[i]-'0')
	}
	if i == 0 {
		return 0, false
	}
	if neg {
		v = -v
	}
	return v, true
}

// ds18b20Conversion is how long a 12-bit conversion takes: the datasheet's
// 750ms, rounded up as periph's driver does (94ms << 3).
const ds18b20Conversion = 752 * time.Millisecond

// ds18b20Resolution is the factory setting, so ds18b20.New finds the
// sensor's EEPROM as it wants it and never writes it; a DS18S20 only has
// this one.
const ds18b20Resolution = 12

// ds18b20Dev reads a DS18B20 (or a DS18S20, DS1822, DS1825, DS28EA00)
// through periph's ds18b20 driver on a onewire.Bus.
type ds18b20Dev struct {
	dev   *ds18b20.Dev
	ow    onewire.Dev // the same bus and address, for Convert T
	clock Clock
}

// openDS18B20 opens the sensor on its 1-Wire bus. With onewire_bus
// "sysfs", or "" when periph.io knows no 1-Wire bus, it reads the kernel's
// w1_therm files instead: see SensorConfig.OnewireBus.
func (b *Board) openDS18B20(c SensorConfig) (sensorDriver, error) {
	dir := b.sysPath("/sys/bus/w1/devices/" + string(c.Address))
	if c.OnewireBus == OnewireSysfs {
		return openW1Therm(dir)
	}
	bus, err := b.onewireBus(c.OnewireBus)
	if err != nil {
		if c.OnewireBus != "" {
			return nil, err
		}
		d, err2 := openW1Therm(dir)
		if err2 != nil {
			return nil, fmt.Errorf("%w; nor from the kernel's w1_therm: %w", err, err2)
		}
		b.log.Info("ds18b20 read from the kernel's w1_therm files: periph.io has no 1-Wire bus", "address", c.Address, "reason", err)
		return d, nil
	}
	addr, _ := c.Address.OneWire() // valid: Validate passed
	dev, err := ds18b20.New(bus, addr, ds18b20Resolution)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Address, err)
	}
	return &ds18b20Dev{dev: dev, ow: onewire.Dev{Bus: bus, Addr: addr}, clock: b.clock}, nil
}

// powerOnValue is what a DS18B20's scratchpad holds until a conversion
// succeeds: 85 °C as an absolute temperature. periph's LastTemp means to
// refuse it but compares with 85*physic.Celsius, a difference of 85 K, so
// it never matches (devices v3.7.1); the check is made here.
const powerOnValue = 85*physic.Celsius + physic.ZeroCelsius

// read does what the driver's Sense does, Convert T addressed to this
// sensor with the strong pull-up, then the scratchpad through the driver
// (with its CRC check), but waits for the conversion on the board's clock,
// so that shutdown does not wait out a 752ms time.Sleep and tests do not
// sleep at all.
func (d *ds18b20Dev) read(ctx context.Context, dst []float64) error {
	if err := d.ow.TxPower([]byte{0x44}, nil); err != nil {
		return err
	}
	if err := sleep(ctx, d.clock, ds18b20Conversion); err != nil {
		return err
	}
	t, err := d.dev.LastTemp()
	if err != nil {
		return err
	}
	if t == powerOnValue {
		return errors.New("85 °C is the power-on value, not a conversion (check the wiring, the 4.7 kΩ pull-up and the sensor's VDD)")
	}
	dst[0] = t.Celsius()
	return nil
}

func (d *ds18b20Dev) close() error { return d.dev.Halt() }

// w1Therm reads a DS18B20 through the kernel's w1_therm driver in sysfs
// (dtoverlay=w1-gpio): the path for parasite-powered sensors, whose
// conversion needs the strong pull-up that periph's netlink bus cannot
// ask the kernel for. The conversion, up to 750ms, happens inside the read.
type w1Therm struct{ *milliFile }

func openW1Therm(dir string) (sensorDriver, error) {
	f, err := openMilliFile(dir+"/temperature", false)
	if errors.Is(err, fs.ErrNotExist) {
		// Kernels before 5.x only have w1_slave.
		f, err = openMilliFile(dir+"/w1_slave", true)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w (is dtoverlay=w1-gpio set, and the sensor wired?)", dir, errNoDevice)
	}
	if err != nil {
		return nil, err
	}
	return w1Therm{f}, nil
}

func (d w1Therm) read(ctx context.Context, dst []float64) error {
	if err := d.milliFile.read(ctx, dst); err != nil {
		return err
	}
	// 85 °C is what a DS18B20 holds after power-on before any conversion:
	// a brown-out on the data line, not a reading.
	if dst[0] == 85 {
		return fmt.Errorf("%s: 85 °C is the power-on value, not a conversion (check the wiring and pull-up)", d.path)
	}
	return nil
}

// bmx280 reads a BME280 (temperature, humidity, pressure) or a BMP280
// (temperature, pressure) through periph's bmxx80 driver.
type bmx280 struct {
	dev      *bmxx80.Dev
	humidity bool
}

func (b *Board) openBMx280(c SensorConfig) (sensorDriver, error) {
	bus, err := b.bus(c.I2CBus)
	if err != nil {
		return nil, err
	}
	addr, _ := c.Address.I2C()
	opts := bmxx80.DefaultOpts
	dev, err := bmxx80.NewI2C(bus, addr, &opts)
	if err != nil {
		return nil, err
	}
	// The chip id tells which it is; the driver names the device after it.
	found := strings.ToLower(strings.SplitN(dev.String(), "{", 2)[0])
	if c.Type == TypeBME280 && found != TypeBME280 {
		dev.Halt()
		return nil, fmt.Errorf("found a %s at %s, not a bme280 (which also measures humidity): set type: %s", found, c.Address, found)
	}
	return &bmx280{dev: dev, humidity: c.Type == TypeBME280}, nil
}

func (d *bmx280) read(_ context.Context, dst []float64) error {
	var e physic.Env
	if err := d.dev.Sense(&e); err != nil {
		return err
	}
	// Quantity order as in sensorTypes: temperature, [humidity,] pressure.
	dst[0] = e.Temperature.Celsius()
	p := float64(e.Pressure) / float64(100*physic.Pascal)
	if d.humidity {
		dst[1] = float64(e.Humidity) / float64(physic.PercentRH)
		dst[2] = p
	} else {
		dst[1] = p
	}
	return nil
}

func (d *bmx280) close() error { return d.dev.Halt() }

// ads1115 reads single-ended channels of an ADS1115 in volts, at gain 1
// (±4.096 V full scale, enough for a 3.3 V Pi) and 128 samples/s.
type ads1115 struct {
	dev  *ads1x15.Dev
	pins []ads1x15.PinADC
}

func (b *Board) openADS1115(c SensorConfig) (sensorDriver, error) {
	bus, err := b.bus(c.I2CBus)
	if err != nil {
		return nil, err
	}
	addr, _ := c.Address.I2C()
	dev, err := ads1x15.NewADS1115(bus, &ads1x15.Opts{I2cAddress: addr})
	if err != nil {
		return nil, err
	}
	a := &ads1115{dev: dev}
	for _, ch := range c.Channels {
		p, err := dev.PinForChannel(ads1x15.Channel0+ads1x15.Channel(ch), 4096*physic.MilliVolt, 128*physic.Hertz, ads1x15.BestQuality)
		if err != nil {
			a.close()
			return nil, fmt.Errorf("channel %d: %w", ch, err)
		}
		a.pins = append(a.pins, p)
	}
	return a, nil
}

func (a *ads1115) read(_ context.Context, dst []float64) error {
	for i, p := range a.pins {
		s, err := p.Read()
		if err != nil {
			return err
		}
		dst[i] = float64(s.V) / float64(physic.Volt)
	}
	return nil
}

func (a *ads1115) close() error {
	for _, p := range a.pins {
		p.Halt()
	}
	return a.dev.Halt()
}

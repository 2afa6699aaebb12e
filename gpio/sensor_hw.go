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

	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/ads1x15"
	"periph.io/x/devices/v3/bmxx80"
)

// milliFile reads a sysfs attribute holding thousandths (thermal zones'
// milli-°C, the w1 "temperature" file), or a w1_slave file. The file stays
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

// ds18b20 reads a DS18B20 through the kernel's w1 driver in sysfs
// (dtoverlay=w1-gpio), the usual set-up on a Pi; it needs no root, where
// periph's own 1-Wire path needs a bus master driver. The conversion takes
// up to 750ms, inside the read.
type ds18b20 struct{ *milliFile }

func openDS18B20(dir string) (sensorDriver, error) {
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
	return ds18b20{f}, nil
}

func (d ds18b20) read(ctx context.Context, dst []float64) error {
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

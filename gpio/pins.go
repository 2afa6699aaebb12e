package gpio

import (
	"fmt"
	"strconv"
	"strings"
)

// MaxGPIO is the highest BCM GPIO number on the Raspberry Pi 40-pin header.
// GPIO28 and up exist only on compute modules and are not accepted.
const MaxGPIO = 27

// Header pins that are not GPIOs, as negative entries of header40.
const (
	hdr3V3 = -1
	hdr5V  = -2
	hdrGND = -3
)

// header40 maps the physical pins of the Raspberry Pi 40-pin header (P1_1 to
// P1_40, every model since the B+) to BCM GPIO numbers. It is here, not
// taken from periph's rpi package, so that configurations validate on any
// machine: periph only registers the header on a Pi it has detected.
var header40 = [41]int8{
	0, // there is no pin 0
	hdr3V3, hdr5V,
	2, hdr5V,
	3, hdrGND,
	4, 14,
	hdrGND, 15,
	17, 18,
	27, hdrGND,
	22, 23,
	hdr3V3, 24,
	10, hdrGND,
	9, 25,
	11, 8,
	hdrGND, 7,
	0, 1, // ID_SD, ID_SC: the HAT EEPROM bus, usable as GPIOs
	5, hdrGND,
	6, 12,
	13, hdrGND,
	19, 16,
	26, 20,
	hdrGND, 21,
}

// NormalizePin resolves a pin name to periph's GPIO name: "GPIO17" and
// "P1_11" (physical header pin 11) both give "GPIO17". Case does not
// matter. The error text quotes the name as given, ready to follow a field
// path: `"GPIO99": no such pin`.
func NormalizePin(name string) (string, error) {
	n, err := pinNumber(name)
	if err != nil {
		return "", err
	}
	return gpioName(n), nil
}

func gpioName(n int) string { return "GPIO" + strconv.Itoa(n) }

// pinNumber returns the BCM number of a pin name.
func pinNumber(name string) (int, error) {
	s := strings.ToUpper(strings.TrimSpace(name))
	switch {
	case s == "":
		return 0, fmt.Errorf("missing (want e.g. GPIO17 or P1_11)")
	case strings.HasPrefix(s, "GPIO"):
		n, ok := smallNumber(s[len("GPIO"):])
		if !ok || n > MaxGPIO {
			return 0, fmt.Errorf("%q: no such pin", name)
		}
		return n, nil
	case strings.HasPrefix(s, "P1_"):
		n, ok := smallNumber(s[len("P1_"):])
		if !ok || n < 1 || n >= len(header40) {
			return 0, fmt.Errorf("%q: no such pin (the header has P1_1 to P1_40)", name)
		}
		switch g := header40[n]; g {
		case hdr3V3:
			return 0, fmt.Errorf("%q is 3.3V power, not a GPIO", name)
		case hdr5V:
			return 0, fmt.Errorf("%q is 5V power, not a GPIO", name)
		case hdrGND:
			return 0, fmt.Errorf("%q is ground, not a GPIO", name)
		default:
			return int(g), nil
		}
	}
	if _, ok := smallNumber(s); ok {
		// A bare number is the classic wiring mistake: BCM or physical?
		return 0, fmt.Errorf("%q: ambiguous; write GPIO%s for the BCM number or P1_%s for the header pin", name, s, s)
	}
	return 0, fmt.Errorf("%q: no such pin", name)
}

// smallNumber parses 1 to 3 decimal digits.
func smallNumber(s string) (int, bool) {
	if len(s) == 0 || len(s) > 3 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

// powerOnPullUp reports whether a GPIO is pulled up at power-on (GPIO0 to
// GPIO8 on the BCM283x/BCM2711; the others are pulled down): the level a
// released line falls back to when nothing else is wired to it.
func powerOnPullUp(n int) bool { return n <= 8 }

// ReleaseWarnings names the outputs whose safe state drives the pin to the
// level opposite its power-on pull, on board periph: the bridge holds that
// level while it runs, but once it exits or crashes the kernel may release
// the line and nothing drives it there (a pull resistor must).
func (c Config) ReleaseWarnings() []string {
	if c.Board == BoardSim {
		return nil
	}
	var w []string
	for i, o := range c.Outputs {
		n, err := pinNumber(o.Pin)
		if err != nil {
			continue
		}
		high := (o.Safe == "on") != o.Invert
		if high == powerOnPullUp(n) {
			continue
		}
		level, pull, resistor := "high", "down", "pull-up to 3.3V"
		if !high {
			level, pull, resistor = "low", "up", "pull-down to GND"
		}
		w = append(w, fmt.Sprintf("outputs[%d] %s: safe %s drives %s %s; after the bridge exits or crashes nothing holds it there and it may fall back to its pull (%s at power-on): wire a %s so it is safe undriven",
			i, o.Name, safeWord(o.Safe), gpioName(n), level, pull, resistor))
	}
	return w
}

func safeWord(s string) string {
	if s == "" {
		return "off"
	}
	return s
}

package kerneltest

import (
	"fmt"
	"strings"
	"testing"
)

// headerPins are the physical header pins that are GPIOs, in BCM order of
// GPIO0..GPIO27.
var headerPins = [28]int{27, 28, 3, 5, 7, 29, 31, 26, 24, 21, 19, 23, 32, 33, 8, 10, 36, 11, 12, 35, 38, 40, 15, 16, 18, 22, 37, 13}

// TestHeaderPinNames: every header pin, by its GPIOn and its P1_xx name,
// passes -check and opens at start on both chips: the Pi 5's, whose lines
// 0 and 1 are ID_SDA/ID_SCL, and the Pi 4's, which names lines 0–4, 7–11,
// 14 and 15 by function (SDA1, SPI_MOSI, TXD1…).
func TestHeaderPinNames(t *testing.T) {
	r := getRig(t)
	for _, chip := range []string{"rp1", "bcm2711"} {
		r.chip(t, chip)
		for _, naming := range []string{"GPIO", "P1_"} {
			var b strings.Builder
			b.WriteString("outputs:\n")
			for n := range 28 {
				pin := fmt.Sprintf("GPIO%d", n)
				if naming == "P1_" {
					pin = fmt.Sprintf("P1_%d", headerPins[n])
				}
				fmt.Fprintf(&b, "  - {name: o%d, pin: %s}\n", n, pin)
			}
			name := "pins-" + chip + "-" + strings.TrimSuffix(naming, "_")
			r.writeConfig(t, name, config("pins", b.String()))
			if out, err := r.shErr("bridge -check -config /etc/" + name + ".yaml 2>&1"); err != nil {
				t.Errorf("%s: -check: %v\n%s", name, err, out)
			}
			// -safe-state opens every output as start does and drives it.
			if out, err := r.shErr("bridge -safe-state -config /etc/" + name + ".yaml 2>&1"); err != nil {
				t.Errorf("%s: -check passed but the pins do not open: %v\n%s", name, err, out)
			}
		}
	}
}

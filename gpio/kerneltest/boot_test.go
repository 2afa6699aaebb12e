package kerneltest

import (
	"strings"
	"testing"
)

// TestBoot: the guest runs Debian's kernel with gpio-sim loaded, and both
// chips come up with the labels and line names of a Pi 5 and a Pi 4.
func TestBoot(t *testing.T) {
	r := getRig(t)
	t.Logf("guest ready %s after qemu started", r.bootTime)
	for _, tt := range []struct{ chip, label, line0, line4 string }{
		{"rp1", "pinctrl-rp1", "ID_SDA", "GPIO4"},
		{"bcm2711", "pinctrl-bcm2711", "ID_SDA", "GPIO_GCLK"},
	} {
		r.chip(t, tt.chip)
		chips := r.sh(t, "grep gpio-sim /sys/kernel/debug/gpio")
		if strings.Count(chips, "gpio-sim") != 1 || !strings.Contains(chips, ", "+tt.label+",") {
			t.Errorf("chip %s: want exactly one live gpio-sim chip labelled %s, the kernel has:\n%s", tt.chip, tt.label, chips)
		}
		lines := r.sh(t, "grep -A5 gpio-sim /sys/kernel/debug/gpio")
		for _, n := range []string{tt.line0, tt.line4} {
			if !strings.Contains(lines, "("+n+" ") {
				t.Errorf("chip %s: no line %s:\n%s", tt.chip, n, lines)
			}
		}
	}
}

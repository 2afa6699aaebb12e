package gpio

import (
	"testing"
	"unsafe"
)

// The line request must match struct gpio_v2_line_request byte for byte:
// the ioctl number carries its size, and the kernel reads fd at the end.
func TestLineRequestLayout(t *testing.T) {
	var r gpioV2LineRequest
	for _, tt := range []struct {
		what      string
		got, want uintptr
	}{
		{"sizeof(struct gpio_v2_line_request)", unsafe.Sizeof(r), 592},
		{"offsetof(config)", unsafe.Offsetof(r.flags), 288},
		{"offsetof(config.attrs)", unsafe.Offsetof(r.attrs), 320},
		{"offsetof(num_lines)", unsafe.Offsetof(r.numLines), 560},
		{"offsetof(fd)", unsafe.Offsetof(r.fd), 588},
		{"sizeof(struct gpio_v2_line_values)", unsafe.Sizeof(gpioV2LineValues{}), 16},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %d, want %d", tt.what, tt.got, tt.want)
		}
	}
}

package gpio

import (
	"strings"
	"testing"
)

// ReleaseWarnings names exactly the outputs whose safe pin level is not
// the one the line falls back to at power-on, and only on board periph.
func TestReleaseWarnings(t *testing.T) {
	for _, tt := range []struct {
		name  string
		board string
		out   OutputConfig
		want  string // "" for no warning
	}{
		{"safe off, pull-down line", BoardPeriph, OutputConfig{Name: "pump", Pin: "GPIO22"}, ""},
		{"active-low relay off drives high", BoardPeriph, OutputConfig{Name: "relay", Pin: "GPIO25", Invert: true}, "outputs[0] relay: safe off drives GPIO25 high"},
		{"safe on drives high", BoardPeriph, OutputConfig{Name: "lamp", Pin: "P1_11", Safe: "on"}, "outputs[0] lamp: safe on drives GPIO17 high"},
		{"safe off on a pull-up line", BoardPeriph, OutputConfig{Name: "led", Pin: "GPIO4", Safe: "off"}, "outputs[0] led: safe off drives GPIO4 low"},
		{"active-low relay on a pull-up line", BoardPeriph, OutputConfig{Name: "r", Pin: "GPIO5", Invert: true}, ""},
		{"sim board", BoardSim, OutputConfig{Name: "relay", Pin: "GPIO25", Invert: true}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := Config{Board: tt.board, Outputs: []OutputConfig{tt.out}}.ReleaseWarnings()
			switch {
			case tt.want == "" && len(w) != 0:
				t.Errorf("want no warning, got %q", w)
			case tt.want != "" && (len(w) != 1 || !strings.HasPrefix(w[0], tt.want)):
				t.Errorf("want a warning starting %q, got %q", tt.want, w)
			}
		})
	}
}

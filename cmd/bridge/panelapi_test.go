package main

import (
	"strings"
	"testing"
)

// validateSource is the loader of -check, with each problem at its line.
func TestValidateSource(t *testing.T) {
	getenv := func(string) string { return "" }
	for _, c := range []struct {
		name    string
		src     string
		valid   bool
		lines   []int  // of the problems, in order
		contain string // in the problems' text
		signals int
	}{
		{"the demo", string(demoYAML), true, nil, "", 9},
		{"two problems", "device: {id: x}\nboard: sim\noutputs:\n  - name: a\n    pin: GPIO99\n  - {name: b, pin: GPIO17, colour: red}\n", false, []int{5, 6}, "colour", 0},
		{"not YAML", "device: {id: x\nboard: sim\n", false, []int{1}, "expected", 0},
		{"a bad duration and a bad name", "device: {id: x}\nboard: sim\ninputs:\n  - name: Door\n    pin: GPIO17\n    debounce: soon\n", false, []int{4, 6}, "duration", 0},
		{"empty", "", false, []int{0}, "empty", 0},
		{"a key twice, at the repeat", "device: {id: x}\nboard: sim\nhttp:\n  listen: \"127.0.0.1:0\"\nboard: sim\n", false, []int{5}, "defined 2 times", 0},
		{"a wrong type deep in a list", "device: {id: x}\nboard: sim\nsensors:\n  - name: t\n    type: ads1115\n    channels:\n      - 0\n      - one\n", false, []int{8}, "want a whole number", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep := validateSource([]byte(c.src), getenv)
			var lines []int
			var text strings.Builder
			for _, p := range rep.Problems {
				lines = append(lines, p.Line)
				text.WriteString(p.Msg + "\n")
			}
			if rep.Valid != c.valid || len(lines) != len(c.lines) || !strings.Contains(text.String(), c.contain) {
				t.Fatalf("valid %v, problems at %v:\n%s", rep.Valid, lines, text.String())
			}
			for i := range lines {
				if lines[i] != c.lines[i] {
					t.Errorf("problems at lines %v, want %v:\n%s", lines, c.lines, text.String())
					break
				}
			}
			if len(rep.Signals) != c.signals {
				t.Errorf("%d signals in the table, want %d", len(rep.Signals), c.signals)
			}
		})
	}
}

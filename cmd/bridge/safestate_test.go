package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/conn/v3/physic"

	"pibridge/gpio"
)

// safeYAML has every kind of safe state: off and on, inverted pins,
// interlocked outputs, pwm duties; initial states that differ from the safe
// ones; and an input and a sensor that -safe-state must leave alone.
const safeYAML = `device: {id: safe}
board: sim
http: {listen: %q}
mqtt: {broker: embedded, embedded_listen: %q}
inputs:
  - {name: door, pin: GPIO17}
outputs:
  - {name: pump,   pin: GPIO22, initial: on,  safe: off, max_on: 10m}
  - {name: light,  pin: GPIO23, initial: off, safe: on,  invert: true}
  - {name: heater, pin: GPIO24, initial: on,  safe: off, invert: true}
  - {name: lamp,   pin: GPIO25, initial: on,  safe: ON}
  - {name: up,     pin: GPIO5,  interlock: blind, interlock_wait: 200ms}
  - {name: down,   pin: GPIO6,  interlock: blind, interlock_wait: 200ms}
pwm:
  - {name: fan,   pin: GPIO18, frequency: 25kHz, initial: 0.8, safe: 1}
  - {name: strip, pin: GPIO13, initial: 0.5, safe: 0}
  - {name: dim,   pin: GPIO12, initial: 0, safe: 0.25}
sensors:
  - {name: air, type: bme280, interval: 10ms}
`

// safeWant is each writable signal's safe level, invert undone, and
// whether its pin is inverted.
var safeWant = []struct {
	name   string
	on     bool
	duty   float64
	pwm    bool
	invert bool
}{
	{name: "pump"}, {name: "light", on: true, invert: true}, {name: "heater", invert: true},
	{name: "lamp", on: true}, {name: "up"}, {name: "down"},
	{name: "fan", pwm: true, duty: 1}, {name: "strip", pwm: true}, {name: "dim", pwm: true, duty: 0.25},
}

var safePins = map[string]string{
	"pump": "GPIO22", "light": "GPIO23", "heater": "GPIO24", "lamp": "GPIO25", "up": "GPIO5", "down": "GPIO6",
	"fan": "GPIO18", "strip": "GPIO13", "dim": "GPIO12",
}

func writeSafeConfig(t *testing.T, httpAddr, mqttAddr string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, fmt.Appendf(nil, safeYAML, httpAddr, mqttAddr), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func loadSafeConfig(t *testing.T) *Config {
	t.Helper()
	cfg, err := loadConfig(writeSafeConfig(t, "127.0.0.1:8080", "127.0.0.1:1883"), envOf(map[string]string{"PIBRIDGE_STATE_DIR": t.TempDir()}))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestSafeStateSimulatedBoard: on the simulated board every output and
// pwm is at its safe level after safeState.
func TestSafeStateSimulatedBoard(t *testing.T) {
	board, err := safeState(loadSafeConfig(t), gpio.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer board.Close()
	for _, w := range safeWant {
		v, ok := board.Level(w.name)
		switch {
		case !ok:
			t.Errorf("%s: not opened", w.name)
		case w.pwm && v.Float() != w.duty:
			t.Errorf("%s: duty %v, want its safe %v", w.name, v, w.duty)
		case !w.pwm && v.Bool() != w.on:
			t.Errorf("%s: %v, want its safe %v", w.name, v, w.on)
		}
	}
	var names []string
	for _, s := range board.Signals() {
		names = append(names, s.Name)
	}
	if got := strings.Join(names, " "); got != "pump heater up down light lamp fan strip dim" {
		t.Errorf("opened %q: want only outputs (safe off first) and pwm", got)
	}
}

// tracePin is a simulated pin that starts where a crashed bridge may have
// left it and records every level and duty driven onto it, in one order
// across all pins.
type tracePin struct {
	*gpiotest.Pin
	log *traceLog
}

type traceLog struct {
	mu     sync.Mutex
	events []string // "GPIO22 out High", "GPIO18 pwm 100%"
	opened []string
}

func (l *traceLog) add(s string) {
	l.mu.Lock()
	l.events = append(l.events, s)
	l.mu.Unlock()
}

func (p *tracePin) Out(l pgpio.Level) error {
	p.log.add(p.Name() + " out " + l.String())
	return p.Pin.Out(l)
}

func (p *tracePin) PWM(d pgpio.Duty, f physic.Frequency) error {
	p.log.add(fmt.Sprintf("%s pwm %d", p.Name(), d))
	return p.Pin.PWM(d, f)
}

// TestSafeStateFromLatchedPins: pins left energised by a killed bridge
// (every output at the level opposite to its safe one, pwm at half) are
// driven straight to their safe levels: no pin passes through its
// initial state, outputs that are safe off go first, and the input and
// the sensor are never opened.
func TestSafeStateFromLatchedPins(t *testing.T) {
	trace := &traceLog{}
	open := func(name string) (pgpio.PinIO, error) {
		trace.mu.Lock()
		trace.opened = append(trace.opened, name)
		trace.mu.Unlock()
		p := &tracePin{Pin: &gpiotest.Pin{N: name, L: pgpio.High, D: pgpio.DutyHalf}, log: trace}
		for _, w := range safeWant {
			if safePins[w.name] == name && !w.pwm {
				p.L = pgpio.Level(!(w.on != w.invert)) // the opposite of safe, on the wire
			}
		}
		return p, nil
	}
	board, err := safeState(loadSafeConfig(t), gpio.Options{Logger: slog.New(slog.DiscardHandler), OpenPin: open})
	if err != nil {
		t.Fatal(err)
	}
	defer board.Close()

	if got := strings.Join(trace.opened, " "); strings.Contains(got, "GPIO17") || len(trace.opened) != len(safeWant) {
		t.Errorf("opened pins %q: want the outputs and pwm only", got)
	}
	firstSafeOn := -1
	for i, e := range trace.events {
		if strings.HasPrefix(e, "GPIO23 ") || strings.HasPrefix(e, "GPIO25 ") {
			firstSafeOn = i
			break
		}
	}
	for _, w := range safeWant {
		pin := safePins[w.name]
		wantEvent := fmt.Sprintf("%s out %s", pin, pgpio.Level(w.on != w.invert))
		if w.pwm {
			wantEvent = fmt.Sprintf("%s pwm %d", pin, pgpio.Duty(w.duty*float64(pgpio.DutyMax)+0.5))
		}
		n := 0
		for i, e := range trace.events {
			if !strings.HasPrefix(e, pin+" ") {
				continue
			}
			n++
			if e != wantEvent {
				t.Errorf("%s: drove %q; the only level it may see is its safe one, %q", w.name, e, wantEvent)
			}
			if n == 1 && !w.pwm && !w.on && i > firstSafeOn {
				t.Errorf("%s (safe off) first driven after an output that is safe on", w.name)
			}
		}
		if n == 0 {
			t.Errorf("%s: never driven", w.name)
		}
	}
	if t.Failed() {
		t.Logf("trace:\n%s", strings.Join(trace.events, "\n"))
	}
}

// TestSafeStateCommand runs `bridge -safe-state` as systemd's ExecStopPost
// does. The panel's and the embedded broker's ports are taken by the test:
// a -safe-state that listened on either would fail.
func TestSafeStateCommand(t *testing.T) {
	busy := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln.Addr().String()
	}
	cfg := writeSafeConfig(t, busy(), busy())
	state := filepath.Join(t.TempDir(), "state")
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"-safe-state", "-config", cfg}, envOf(map[string]string{"PIBRIDGE_STATE_DIR": state}), &stdout, &stderr)
	if code := exitStatus(err, &stderr); code != 0 {
		t.Fatalf("-safe-state: exit %d\n%s", code, stderr.String())
	}
	for _, w := range safeWant {
		level := map[bool]string{true: "on", false: "off"}[w.on]
		if w.pwm {
			level = fmt.Sprint(w.duty)
		}
		if !regexp.MustCompile(`(?m)^` + w.name + ` +` + regexp.QuoteMeta(level) + `$`).Match(stdout.Bytes()) {
			t.Errorf("stdout has no line %q %s:\n%s", w.name, level, stdout.String())
		}
	}
	if strings.Contains(stdout.String(), "door") || strings.Contains(stdout.String(), "air") {
		t.Errorf("-safe-state lists inputs or sensors:\n%s", stdout.String())
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("-safe-state created the state directory (%v); it needs none", err)
	}

	// A broken config fails as at start: exit 2, one line per problem.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("board: sim\noutputs:\n  - {name: pump, pin: GPIO99}\n"), 0o600)
	stderr.Reset()
	err = run(t.Context(), []string{"-safe-state", "-config", bad}, envOf(map[string]string{"PIBRIDGE_STATE_DIR": state}), &stdout, &stderr)
	if code := exitStatus(err, &stderr); code != 2 || !strings.Contains(stderr.String(), `config: outputs[0].pin: "GPIO99": no such pin`) {
		t.Errorf("-safe-state on a bad config: exit %d, want 2\n%s", code, stderr.String())
	}
	// -check and -safe-state are two different jobs.
	stderr.Reset()
	err = run(t.Context(), []string{"-safe-state", "-check"}, envOf(map[string]string{"PIBRIDGE_STATE_DIR": state}), &stdout, &stderr)
	if code := exitStatus(err, &stderr); code != 2 {
		t.Errorf("-safe-state -check: exit %d, want 2", code)
	}
}

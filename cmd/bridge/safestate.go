package main

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"pibridge"
	"pibridge/gpio"
)

// driveSafe is `bridge -safe-state`: the unit's ExecStopPost. systemd runs
// it after every stop of the bridge, a crash or a watchdog kill included,
// because a killed process leaves memory-mapped outputs latched where it
// left them and only a new process can put them right. No broker, no HTTP,
// no state directory: the config, the pins, and out.
func driveSafe(cfg *Config, log *slog.Logger, stdout io.Writer) error {
	board, err := safeState(cfg, gpio.Options{Logger: log.With("part", "gpio")})
	if err != nil {
		return fmt.Errorf("safe state: %w", err)
	}
	defer board.Close()
	const row = "%-22s %s\n"
	for _, s := range board.Signals() {
		v, _ := board.Level(s.Name)
		fmt.Fprintf(stdout, row, s.Name, levelWord(v))
	}
	log.Info("every output and pwm is in its safe state", "outputs", len(cfg.GPIO.Outputs), "pwm", len(cfg.GPIO.PWM))
	return nil
}

// safeState opens only the configured outputs and pwm (no inputs, no
// sensors, so no bus is touched) and drives each to its safe state. It
// returns the board so that tests can read the levels back; the caller
// closes it.
//
// Each output is opened straight into its safe state, its initial state
// replaced by the safe one, so no pin passes through its initial state on
// the way; outputs that are safe off are opened first, as Halt orders
// them. (Interlocked outputs are always safe off: configuration checks it.)
func safeState(cfg *Config, o gpio.Options) (*gpio.Board, error) {
	hw := gpio.Config{Board: cfg.GPIO.Board, Outputs: slices.Clone(cfg.GPIO.Outputs), PWM: slices.Clone(cfg.GPIO.PWM)}
	hw.Derive()
	for i := range hw.Outputs {
		hw.Outputs[i].Initial = hw.Outputs[i].Safe
	}
	slices.SortStableFunc(hw.Outputs, func(a, b gpio.OutputConfig) int {
		return safeRank(a.Safe) - safeRank(b.Safe)
	})
	for i := range hw.PWM {
		hw.PWM[i].Initial = hw.PWM[i].Safe
	}
	board, err := gpio.Open(hw, o)
	if err != nil {
		return nil, err
	}
	// Open drove them already; Halt says so again through the one code
	// path that every other stop uses, and reports a pin that refused.
	if err := board.Halt(); err != nil {
		board.Close()
		return nil, err
	}
	return board, nil
}

// safeRank sorts safe off before safe on, reading the words as the
// config does (on/true, off/false, any case).
func safeRank(safe string) int {
	switch strings.ToLower(safe) {
	case "on", "true":
		return 1
	}
	return 0
}

// levelWord is how the table shows a level: on/off, or the duty.
func levelWord(v pibridge.Value) string {
	if v.IsBool() {
		if v.Bool() {
			return "on"
		}
		return "off"
	}
	return v.String()
}

package gpio

import (
	"context"
	"errors"
	"syscall"
	"testing"

	"pibridge"
)

// A board that replaces another through HandOver and Keep never writes
// the pins of unchanged outputs; changed ones start again from initial,
// removed ones go safe.
func TestHandOverKeepsUnchangedPins(t *testing.T) {
	old := Config{Board: BoardSim, Outputs: []OutputConfig{
		{Name: "pump", Pin: "GPIO17"},
		{Name: "fan", Pin: "GPIO22"},
		{Name: "lamp", Pin: "GPIO23", Initial: "on"},
	}, PWM: []PWMConfig{{Name: "dim", Pin: "GPIO18"}}}
	next := Config{Board: BoardSim, Outputs: []OutputConfig{
		{Name: "pump", Pin: "GPIO17"},
		{Name: "fan2", Pin: "GPIO22", Initial: "on"}, // renamed
	}, PWM: []PWMConfig{{Name: "dim", Pin: "GPIO18"}}}
	a, err := Open(old, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx, nopEmitter{}) }()
	eventually(t, "the board running", a.Running)
	if err := a.Set(ctx, "pump", pibridge.Bool(true)); err != nil {
		t.Fatal(err)
	}
	if err := a.Set(ctx, "dim", pibridge.Number(0.5)); err != nil {
		t.Fatal(err)
	}
	pumpW, _ := a.PinWrites("pump")
	dimW, _ := a.PinWrites("dim")
	if kept := a.HandOver(next); len(kept) != 2 {
		t.Fatalf("kept %v, want pump and dim", kept)
	}
	cancel()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if v, _ := a.Level("lamp"); v.Bool() {
		t.Error("removed lamp not driven to its safe state")
	}
	b, err := Open(next, Options{Keep: a})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, tt := range []struct {
		name   string
		writes int
		want   pibridge.Value
	}{{"pump", pumpW, pibridge.Bool(true)}, {"dim", dimW, pibridge.Number(0.5)}} {
		if w, _ := b.PinWrites(tt.name); w != tt.writes {
			t.Errorf("%s: pin written %d times, want %d (untouched)", tt.name, w, tt.writes)
		}
		if v, _ := b.Level(tt.name); v != tt.want {
			t.Errorf("%s: level %v, want %v", tt.name, v, tt.want)
		}
	}
	if v, _ := b.Level("fan2"); !v.Bool() {
		t.Error("renamed fan2 not opened at its initial on")
	}
}

// A pin listed in SimBusy fails to open as a held line does.
func TestSimBusyPinFails(t *testing.T) {
	_, err := Open(Config{Board: BoardSim, Outputs: []OutputConfig{{Name: "pump", Pin: "GPIO17"}}}, Options{SimBusy: []string{"GPIO17"}})
	if !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("err %v, want EBUSY", err)
	}
}

// When the next board fails to open, the pins it took over are left as
// they are, and a board with the old config takes them back untouched.
func TestHandOverSurvivesAFailedOpen(t *testing.T) {
	old := Config{Board: BoardSim, Outputs: []OutputConfig{{Name: "pump", Pin: "GPIO17", Initial: "on"}}}
	next := Config{Board: BoardSim, Outputs: []OutputConfig{{Name: "pump", Pin: "GPIO17", Initial: "on"}, {Name: "fan", Pin: "GPIO22"}}}
	a, err := Open(old, Options{})
	if err != nil {
		t.Fatal(err)
	}
	before, _ := a.PinWrites("pump")
	a.HandOver(next)
	a.Close()
	if _, err := Open(next, Options{Keep: a, SimBusy: []string{"GPIO22"}}); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("err %v, want EBUSY", err)
	}
	c, err := Open(old, Options{Keep: a})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if w, _ := c.PinWrites("pump"); w != before {
		t.Errorf("pump written %d times, want %d", w, before)
	}
	if v, _ := c.Level("pump"); !v.Bool() {
		t.Error("pump went off across a failed open")
	}
}

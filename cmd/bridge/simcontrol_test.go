package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"pibridge"
	"pibridge/gpio"
)

// PIBRIDGE_SIM_CONTROL opens the sim board's control socket for the life
// of the bridge: a datagram moves an input, which comes out as a reading;
// the socket is gone after the exit.
func TestSimControlSocket(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	yaml := fmt.Sprintf(`device: {id: simctl}
board: sim
http: {listen: %q}
mqtt: {broker: embedded, embedded_listen: %q}
inputs:
  - {name: door, pin: GPIO27, pull: up, invert: true}
outputs:
  - {name: led, pin: GPIO22}
`, freeAddr(t), freeAddr(t))
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sim.sock")
	var core *pibridge.Core
	var board *gpio.Board
	ready := make(chan struct{})
	started = func(b *gpio.Board, c *pibridge.Core) { board, core = b, c; close(ready) }
	t.Cleanup(func() { started = nil })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	logs := &syncBuffer{}
	go func() {
		done <- run(ctx, []string{"-config", cfg}, envOf(map[string]string{
			"PIBRIDGE_STATE_DIR":   filepath.Join(dir, "state"),
			"PIBRIDGE_SIM_CONTROL": sock,
		}), io.Discard, logs)
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("run ended before starting: %v\n%s", err, logs)
	case <-time.After(10 * time.Second):
		t.Fatalf("bridge did not start\n%s", logs)
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatalf("dial the control socket: %v\n%s", err, logs)
	}
	defer c.Close()
	door := func() (bool, uint64) { r, ok := core.Latest("door"); return ok && r.Value.Bool(), r.Seq }
	for _, want := range []bool{true, false, true} {
		_, seq := door()
		d := "door 0"
		if want {
			d = "door 1"
		}
		if _, err := c.Write([]byte(d)); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, d+" gave no reading", func() bool { v, s := door(); return s > seq && v == want })
	}
	if _, err := c.Write([]byte("led 1")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "led 1 not refused in the log", func() bool { return strings.Contains(logs.String(), "not an input") })
	if v, _ := board.Level("led"); v.Bool() {
		t.Error("a datagram moved the output led")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v\n%s", err, logs)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("bridge did not stop")
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("control socket left after exit (%v)", err)
	}
}

// On board periph the variable is refused at start, naming itself.
func TestSimControlRefusedOnPeriph(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	yaml := fmt.Sprintf("device: {id: hw}\nboard: periph\nhttp: {listen: %q}\nmqtt: {broker: embedded, embedded_listen: %q}\n", freeAddr(t), freeAddr(t))
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sim.sock")
	err := run(t.Context(), []string{"-config", cfg}, envOf(map[string]string{
		"PIBRIDGE_STATE_DIR":   filepath.Join(dir, "state"),
		"PIBRIDGE_SIM_CONTROL": sock,
	}), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "PIBRIDGE_SIM_CONTROL") || !strings.Contains(err.Error(), "board sim") {
		t.Fatalf("run: %v, want a refusal naming PIBRIDGE_SIM_CONTROL and board sim", err)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("control socket created on board periph (%v)", err)
	}
}

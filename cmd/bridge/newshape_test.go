package main

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"pibridge"
	"pibridge/gateway"
	"pibridge/internal/testkit"
	"pibridge/mqtt"
	"pibridge/ws"
)

// TestNewStartsNothing: every part built with its New (or Open) and
// never run — board, core, embedded broker, MQTT client with Homie and
// its disk outbox, panel server with HTTPS, metrics, gateway — starts no
// goroutine; Close without Run lets go of everything (the goroutine
// count is back, the ports are free again), and a reading emitted before
// the MQTT client ran is in its outbox once the client is closed.
func TestNewStartsNothing(t *testing.T) {
	// Once first: what the process starts once (the runtime's and the
	// libraries' own goroutines) is not the parts'.
	build(t)()
	_, before := goroutines()
	closeAll := build(t)
	// Stacks, not counts: a goroutine of the warm-up may still be on its
	// way out, and would hide a new one from a count.
	if _, now := goroutines(); newStacks(before, now) != "" {
		t.Errorf("the parts' New started goroutines:\n%s", newStacks(before, now))
	}
	closeAll()
	// Polled: a goroutine may be a moment behind the Close that ended it.
	deadline := time.Now().Add(2 * time.Second)
	for {
		_, now := goroutines()
		left := newStacks(before, now)
		if left == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines left after Close:\n%s", left)
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
}

// newStacks lists the stacks with more goroutines now than before, but
// the one that took the profile.
func newStacks(before, now map[string]int) string {
	var b strings.Builder
	for s, n := range now {
		if n > before[s] && !strings.Contains(s, "pprof.writeGoroutine") {
			fmt.Fprintf(&b, "%d more:\n%s\n", n-before[s], s)
		}
	}
	return b.String()
}

// build opens the demo's parts and a gateway, emits one reading, and
// returns the function that closes them all and checks what they let go.
func build(t *testing.T) (closeAll func()) {
	t.Helper()
	httpAddr, mqttAddr := twoFreeAddrs(t)
	dir := t.TempDir()
	env := map[string]string{
		"PIBRIDGE_HTTP_LISTEN":          httpAddr,
		"PIBRIDGE_MQTT_EMBEDDED_LISTEN": mqttAddr,
		"PIBRIDGE_STATE_DIR":            dir,
	}
	getenv := func(k string) string { return env[k] }
	cfg, err := loadConfig("", getenv)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MQTT.Homie.Enabled = true
	cfg.HTTP.TLS.CertFile, cfg.HTTP.TLS.KeyFile = testkit.NewCA(t).WriteServerFiles(t, dir, 1, "127.0.0.1")
	log := slog.New(slog.DiscardHandler)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	board, err := openBoard(cfg, nil, log, getenv)
	must(err)
	core, err := pibridge.New(pibridge.Options{Device: pibridge.Device{ID: cfg.Device.ID}, Signals: board.Signals(), StateDir: dir})
	must(err)
	broker, err := mqtt.OpenBroker(mqtt.BrokerConfig{Listen: cfg.MQTT.EmbeddedListen, Owner: cfg.MQTT.ClientID}, log)
	must(err)
	client, err := mqtt.New(mqtt.Options{Config: cfg.MQTT, Core: core, Logger: log, StateDir: dir, Stale: board.Stale, EmbeddedAddr: broker.Addr()})
	must(err)
	live, err := ws.New(ws.Options{Core: core, Config: cfg.HTTP, Logger: log, StateDir: dir, Passthrough: client, BridgeAllow: cfg.MQTT.BridgeAllow})
	must(err)
	ln, err := live.Listen(time.Second)
	must(err)
	met := newMetrics(core, board, client, live, func() bool { return true })
	gwAddr := testkit.FreeAddr(t)
	gwCfg := gateway.Defaults()
	gwCfg.Derive("pibridge")
	gwCfg.HTTP.Listen, gwCfg.HTTP.Token = gwAddr, "none"
	gwCfg.MQTT.Brokers = []string{"tcp://" + broker.Addr()}
	gw, err := gateway.New(gwCfg, gateway.Deps{Logger: log, StateDir: t.TempDir()})
	must(err)

	return func() {
		t.Helper()
		name := board.Signals()[0].Name
		core.Emit(name, pibridge.Number(1), time.Time{})
		r, _ := core.Latest(name)
		met.Close()
		must(gw.Close())
		must(ln.Close())
		must(client.Close())
		must(broker.Close())
		must(board.Close())
		must(core.Close())
		for _, addr := range []string{httpAddr, mqttAddr, gwAddr} {
			l, err := net.Listen("tcp", addr)
			if err != nil {
				t.Errorf("%s still taken after Close: %v", addr, err)
				continue
			}
			l.Close()
		}
		ob, err := mqtt.OpenDiskOutbox(dir, 10, nil)
		must(err)
		defer ob.Close()
		if got := ob.Newest(); got != r.Seq {
			t.Errorf("the outbox's newest seq is %d after Close, want %d: the reading emitted before Run", got, r.Seq)
		}
	}
}

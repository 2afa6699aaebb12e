package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// leakCycles is how many start/stop cycles TestNoGoroutineOutlivesRun
// runs (100 take ~1 s, ~9 s with -race); PIBRIDGE_LEAK_CYCLES overrides it.
func leakCycles(t *testing.T) int {
	n := 100
	if s := os.Getenv("PIBRIDGE_LEAK_CYCLES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("PIBRIDGE_LEAK_CYCLES=%q: want a positive count", s)
		}
		n = v
	}
	return n
}

// TestNoGoroutineOutlivesRun: every goroutine the bridge starts has ended
// when run returns. The demo (sim board, embedded broker, panel) starts
// and stops again and again, each time with MQTT connected, a WebSocket
// client that subscribes through the MQTT passthrough and leaves (its
// unsubscribe), and one that stays until the shutdown closes it; after
// each cycle the process's goroutine count is back to what it was before
// the first. Goroutines are counted, not named, as goleak does it.
func TestNoGoroutineOutlivesRun(t *testing.T) {
	if testing.Short() {
		t.Skip("100 start/stop cycles")
	}
	cycles := leakCycles(t)
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	stateDir := t.TempDir()
	// One cycle first: what the process starts once (the runtime's and
	// the libraries' own goroutines) is not the bridge's.
	leakCycle(t, hc, stateDir)
	baseline, before := goroutines()
	start := time.Now()
	for i := range cycles {
		leakCycle(t, hc, stateDir)
		awaitGoroutines(t, baseline, before, fmt.Sprintf("cycle %d", i+1))
	}
	t.Logf("%d cycles in %v (%v a cycle)", cycles, time.Since(start).Round(time.Millisecond), (time.Since(start) / time.Duration(cycles)).Round(time.Millisecond))
}

// leakCycle starts the demo through run, exercises it and stops it. A
// port taken meanwhile (the machine runs other tests) is tried again with
// others.
func leakCycle(t *testing.T, hc *http.Client, stateDir string) {
	t.Helper()
	for range 3 {
		if !leakCycleOn(t, hc, stateDir) {
			return
		}
	}
	t.Fatal("no free ports in three tries")
}

// twoFreeAddrs returns two different free loopback addresses: FreeAddr
// twice in a row can return the same port.
func twoFreeAddrs(t *testing.T) (string, string) {
	var addrs [2]string
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		addrs[i] = ln.Addr().String()
	}
	return addrs[0], addrs[1]
}

// leakCycleOn is one cycle; it reports whether a port was taken.
func leakCycleOn(t *testing.T, hc *http.Client, stateDir string) (portTaken bool) {
	t.Helper()
	httpAddr, mqttAddr := twoFreeAddrs(t)
	env := map[string]string{
		"PIBRIDGE_HTTP_LISTEN":          httpAddr,
		"PIBRIDGE_MQTT_EMBEDDED_LISTEN": mqttAddr,
		"PIBRIDGE_STATE_DIR":            stateDir,
	}
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return env[k] }, io.Discard, logs) }()
	stop := func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("run: %v\n%s", err, logs)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("run did not return within 10 s of its context ending\n%s", logs)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for !mqttConnected(hc, httpAddr) {
		select {
		case err := <-done:
			if err != nil && strings.Contains(err.Error(), "address already in use") {
				return true
			}
			t.Fatalf("run ended: %v\n%s", err, logs)
		default:
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("MQTT never connected\n%s", logs)
		}
		time.Sleep(2 * time.Millisecond) // polling /healthz with a deadline
	}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	// One client subscribes through the passthrough and goes; its
	// subscription's cancel unsubscribes at the broker.
	sub, _, err := d.Dial("ws://"+httpAddr+"/ws", nil)
	if err != nil {
		stop()
		t.Fatalf("dial /ws: %v", err)
	}
	sub.SetReadDeadline(time.Now().Add(5 * time.Second))
	sub.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","id":"s1","topics":["lab/#"]}`))
	for {
		var f struct {
			Type string `json:"type"`
			ID   string `json:"id"`
			OK   *bool  `json:"ok"`
		}
		if err := sub.ReadJSON(&f); err != nil {
			stop()
			t.Fatalf("waiting for the subscribe's ack: %v", err)
		}
		if f.ID == "s1" {
			if f.OK == nil || !*f.OK {
				stop()
				t.Fatalf("subscribe refused: %+v", f)
			}
			break
		}
	}
	sub.Close()
	// The other stays, reading, until the shutdown closes it.
	stay, _, err := d.Dial("ws://"+httpAddr+"/ws", nil)
	if err != nil {
		stop()
		t.Fatalf("dial /ws: %v", err)
	}
	defer stay.Close()
	read := make(chan struct{})
	go func() {
		defer close(read)
		for {
			if _, _, err := stay.ReadMessage(); err != nil {
				return
			}
		}
	}()
	stop()
	<-read
	return false
}

func mqttConnected(hc *http.Client, addr string) bool {
	resp, err := hc.Get("http://" + addr + "/healthz")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var h healthReport
	return json.NewDecoder(resp.Body).Decode(&h) == nil && h.MQTT == "connected"
}

// goroutines returns the count and the stacks of all goroutines.
func goroutines() (int, map[string]int) {
	var b bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&b, 1)
	stacks := make(map[string]int)
	// The first line is a header: "goroutine profile: total N".
	_, body, _ := bytes.Cut(b.Bytes(), []byte("\n"))
	for _, rec := range bytes.Split(body, []byte("\n\n")) {
		var n int
		if _, err := fmt.Sscanf(string(rec), "%d @", &n); err == nil {
			if i := bytes.IndexByte(rec, '\n'); i > 0 {
				stacks[string(rec[i+1:])] += n
			}
		}
	}
	return runtime.NumGoroutine(), stacks
}

// diffStacks lists the stacks that have more goroutines now than before.
func diffStacks(before, now map[string]int) string {
	var b bytes.Buffer
	for s, n := range now {
		if n > before[s] {
			fmt.Fprintf(&b, "%d more:\n%s\n", n-before[s], s)
		}
	}
	return b.String()
}

// TestNoGoroutineOutlivesAFailedStart: a start that fails (the panel's
// port is taken) returns while its context is still live, and nothing it
// started, the SIGHUP watcher included, is left behind.
func TestNoGoroutineOutlivesAFailedStart(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	env := map[string]string{
		"PIBRIDGE_HTTP_LISTEN":          busy.Addr().String(),
		"PIBRIDGE_MQTT_EMBEDDED_LISTEN": "127.0.0.1:0",
		"PIBRIDGE_STATE_DIR":            t.TempDir(),
	}
	start := func() {
		err := run(context.Background(), nil, func(k string) string { return env[k] }, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("run on a taken port: %v, want address already in use", err)
		}
	}
	start() // what the process starts once is not the bridge's
	baseline, before := goroutines()
	start()
	awaitGoroutines(t, baseline, before, "a failed start")
}

// awaitGoroutines fails unless the goroutine count is back to baseline
// soon after run returned: a goroutine may be a moment behind (the runtime
// has yet to schedule its last instructions); one that waits for anything
// is not.
func awaitGoroutines(t *testing.T, baseline int, before map[string]int, after string) {
	t.Helper()
	deadline := time.Now().Add(500 * time.Millisecond)
	for {
		n, now := goroutines()
		if n <= baseline {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d goroutines after run returned, %d before:\n%s", after, n, baseline, diffStacks(before, now))
		}
		time.Sleep(5 * time.Millisecond) // polling the count with a deadline
	}
}

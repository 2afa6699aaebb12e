package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/gorilla/websocket"

	"pibridge/internal/harness"
)

// --- idle ---------------------------------------------------------------

func idleScenario(ctx context.Context, d harness.DaemonSpec, o options) (harness.Table, error) {
	// The built-in demo: simulated board, embedded broker, panel.
	dm, err := d.Start(ctx, "idle", "")
	if err != nil {
		return harness.Table{}, err
	}
	defer dm.Stop()
	// Warm-up: let start-up work (first sensor reads, broker, HA
	// discovery) settle before the window opens.
	if err := harness.Sleep(ctx, 2*time.Second); err != nil {
		return harness.Table{}, err
	}
	c0, err := harness.CPUTime(dm.PID)
	if err != nil {
		return harness.Table{}, err
	}
	t0 := time.Now()
	if err := harness.Sleep(ctx, o.idle); err != nil {
		return harness.Table{}, err
	}
	c1, err := harness.CPUTime(dm.PID)
	if err != nil {
		return harness.Table{}, err
	}
	window := time.Since(t0)
	mem, err := harness.ReadMemory(dm.PID)
	if err != nil {
		return harness.Table{}, err
	}
	cpuPct := 100 * float64(c1-c0) / float64(window)
	t := harness.Table{Title: fmt.Sprintf("idle (built-in demo, embedded broker), GOMAXPROCS=%d", d.Procs)}
	t.Rows = append(t.Rows,
		harness.R("time to first listen (spawn → /healthz 200)", fmt.Sprintf("%.1f ms", float64(dm.Ready)/1e6), "≤ 50 ms", harness.Verdict(dm.Ready <= 50*time.Millisecond)),
		harness.R("RSS (smaps_rollup)", harness.MiB(mem.RSS), "≤ 12 MiB", harness.Verdict(mem.RSS <= 12<<20)),
		harness.R("private (Private_Clean+Private_Dirty)", harness.MiB(mem.Private), "", ""),
		harness.R("PSS", harness.MiB(mem.PSS), "", ""),
		harness.R(fmt.Sprintf("idle CPU over %s (utime+stime)", window.Round(time.Second)), fmt.Sprintf("%.3f %% of a core (%s)", cpuPct, c1-c0), "≤ 0.1 %", harness.Verdict(cpuPct <= 0.1)),
	)
	t.Notes = append(t.Notes, fmt.Sprintf("CPU resolution: one clock tick (%s) over the window, %.3f %% of a core", harness.ClockTick, 100*float64(harness.ClockTick)/float64(window)))
	for _, arch := range []string{"armv6", "armv7", "arm64"} {
		path := filepath.Join(filepath.Dir(d.Bin), "bridge-"+arch)
		fi, err := os.Stat(path)
		if err != nil {
			t.Notes = append(t.Notes, fmt.Sprintf("%s: not present (make cross)", path))
			continue
		}
		r := harness.Row{What: "stripped binary " + arch, Value: fmt.Sprintf("%d B (%.1f MiB)", fi.Size(), float64(fi.Size())/(1<<20))}
		if arch == "armv6" {
			r.Target, r.Verdict = "≤ 12 MiB", harness.Verdict(fi.Size() <= 12<<20)
		}
		t.Rows = append(t.Rows, r)
	}
	return t, nil
}

// --- WebSocket client ---------------------------------------------------

type frame struct {
	Type  string `json:"type"`
	ID    string `json:"id"`
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error"`
}

func dial(ctx context.Context, url string) (*websocket.Conn, error) {
	c, _, err := websocket.DefaultDialer.DialContext(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	var f frame
	if err := c.ReadJSON(&f); err != nil {
		c.Close()
		return nil, fmt.Errorf("reading hello: %w", err)
	}
	if f.Type != "hello" {
		c.Close()
		return nil, fmt.Errorf("first frame is %q, not hello", f.Type)
	}
	return c, nil
}

func tgt(ok bool, s string) string {
	if ok {
		return s
	}
	return ""
}

func ifv(ok bool, s string) string { return tgt(ok, s) }

// --- command round trip -------------------------------------------------

const roundTripConfig = `device: {id: bench, name: "pibridge bench"}
board: sim
http: {listen: "127.0.0.1:0"}
mqtt: {broker: embedded, embedded_listen: "127.0.0.1:0"}
outputs:
  - {name: led, pin: GPIO22, initial: "off", safe: "off"}
`

func roundTripScenario(ctx context.Context, d harness.DaemonSpec, o options) (harness.Table, error) {
	dm, err := d.Start(ctx, "roundtrip", roundTripConfig)
	if err != nil {
		return harness.Table{}, err
	}
	defer dm.Stop()
	c, err := dial(ctx, dm.WSURL)
	if err != nil {
		return harness.Table{}, err
	}
	defer c.Close()
	toAck := make([]time.Duration, 0, o.samples)
	toEcho := make([]time.Duration, 0, o.samples)
	msg := make([]byte, 0, 96)
	var f frame
	for i := range o.warmup + o.samples {
		if i%1024 == 0 && ctx.Err() != nil {
			return harness.Table{}, ctx.Err()
		}
		id := strconv.Itoa(i)
		msg = append(msg[:0], `{"type":"set","id":"`...)
		msg = append(msg, id...)
		msg = append(msg, `","name":"led","value":"toggle"}`...)
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		t0 := time.Now()
		if err := c.WriteMessage(websocket.TextMessage, msg); err != nil {
			return harness.Table{}, fmt.Errorf("write: %w", err)
		}
		var echo time.Duration
		for {
			_, b, err := c.ReadMessage()
			el := time.Since(t0) // monotonic
			if err != nil {
				return harness.Table{}, fmt.Errorf("read: %w", err)
			}
			f = frame{}
			if err := json.Unmarshal(b, &f); err != nil {
				return harness.Table{}, fmt.Errorf("frame %q: %w", b, err)
			}
			if f.Type == "reading" && f.Name == "led" && echo == 0 {
				echo = el
				continue
			}
			if f.Type == "ack" && f.ID == id {
				if !f.OK {
					return harness.Table{}, fmt.Errorf("set refused: %s", f.Error)
				}
				if echo == 0 {
					return harness.Table{}, fmt.Errorf("ack %s before the echoed reading", id)
				}
				if i >= o.warmup {
					toAck = append(toAck, el)
					toEcho = append(toEcho, echo)
				}
				break
			}
		}
	}
	slices.Sort(toAck)
	slices.Sort(toEcho)
	a, e := harness.Dist(toAck), harness.Dist(toEcho)
	t := harness.Table{Title: fmt.Sprintf("command round trip (WebSocket set led toggle → echoed reading → ack), 1 client, GOMAXPROCS=%d", d.Procs)}
	t.Rows = append(t.Rows,
		harness.R("samples (after "+strconv.Itoa(o.warmup)+" warm-up)", strconv.Itoa(len(a)), "≥ 100k", harness.Verdict(len(a) >= 100_000)),
		harness.R("p50 to echoed reading", harness.US(e.Q(0.50)), "≤ 50 µs", harness.Verdict(e.Q(0.50) <= 50*time.Microsecond)),
		harness.R("p99 to echoed reading", harness.US(e.Q(0.99)), "≤ 200 µs", harness.Verdict(e.Q(0.99) <= 200*time.Microsecond)),
		harness.R("p99.9 to echoed reading", harness.US(e.Q(0.999)), "", ""),
		harness.R("max to echoed reading", harness.US(e.Max()), "", ""),
		harness.R("p50 to ack", harness.US(a.Q(0.50)), "", ""),
		harness.R("p99 to ack", harness.US(a.Q(0.99)), "", ""),
		harness.R("p99.9 to ack", harness.US(a.Q(0.999)), "", ""),
		harness.R("max to ack", harness.US(a.Max()), "", ""),
	)
	t.Notes = append(t.Notes, "clock: client time.Now() monotonic, from before WriteMessage to the return of ReadMessage (ns resolution); one command in flight; includes JSON decoding of each frame in the client")
	return t, nil
}

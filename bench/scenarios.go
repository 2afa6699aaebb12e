package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
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
	TS    string `json:"ts"`
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

// --- event → frame ------------------------------------------------------

const eventConfig = `device: {id: bench, name: "pibridge bench"}
board: sim
http: {listen: "127.0.0.1:0"}
mqtt: {broker: embedded, embedded_listen: "127.0.0.1:0"}
outputs:
  - {name: led, pin: GPIO22, initial: "off", safe: "off"}
sensors:
  - {name: t1, type: sim, interval: %s}
`

func eventScenario(ctx context.Context, d harness.DaemonSpec, o options, clients int) (harness.Table, error) {
	dm, err := d.Start(ctx, "event", fmt.Sprintf(eventConfig, o.interval))
	if err != nil {
		return harness.Table{}, err
	}
	defer dm.Stop()
	conns := make([]*websocket.Conn, 0, clients)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range clients {
		c, err := dial(ctx, dm.WSURL)
		if err != nil {
			return harness.Table{}, err
		}
		conns = append(conns, c)
	}
	warmEnd := time.Now().Add(time.Second)
	end := warmEnd.Add(o.event)
	var (
		mu      sync.Mutex
		all     []time.Duration
		badTS   int
		readErr error
		wg      sync.WaitGroup
	)
	for _, c := range conns {
		wg.Go(func() {
			var mine []time.Duration
			var f frame
			for {
				_ = c.SetReadDeadline(end.Add(time.Second))
				_, b, err := c.ReadMessage()
				now := time.Now() // wall clock: compared with the daemon's ts
				if err != nil {
					if now.Before(end) {
						mu.Lock()
						readErr = err
						mu.Unlock()
					}
					break
				}
				if now.After(end) {
					break
				}
				if now.Before(warmEnd) || !bytes.Contains(b, []byte(`"type":"reading"`)) {
					continue
				}
				f = frame{}
				if json.Unmarshal(b, &f) != nil || len(f.Name) < 2 || f.Name[:2] != "t1" {
					continue
				}
				ts, err := time.Parse("2006-01-02T15:04:05.000Z07:00", f.TS)
				if err != nil {
					mu.Lock()
					badTS++
					mu.Unlock()
					continue
				}
				mine = append(mine, now.Sub(ts))
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if readErr != nil {
		return harness.Table{}, fmt.Errorf("client read: %w", readErr)
	}
	if len(all) == 0 {
		return harness.Table{}, fmt.Errorf("no t1 readings arrived; log: %s", harness.Tail(dm.LogPath))
	}
	slices.Sort(all)
	s := harness.Dist(all)
	t := harness.Table{Title: fmt.Sprintf("sensor event → WebSocket frame, %d client(s), sim sensor every %s, GOMAXPROCS=%d", clients, o.interval, d.Procs)}
	p99Target := 100 * time.Microsecond
	if clients > 1 {
		p99Target = time.Millisecond
	}
	// The reading's ts is truncated to the millisecond, so each figure is
	// between the true latency and the true latency + 1 ms. Only a figure
	// above target + 1 ms proves a miss; none can prove a met target.
	judge := func(v, target time.Duration) string {
		if v > target+time.Millisecond {
			return "missed"
		}
		return "not resolvable (ts is ms)"
	}
	t.Rows = append(t.Rows,
		harness.R("samples (readings × clients)", strconv.Itoa(len(s)), "≥ 100k", harness.Verdict(len(s) >= 100_000)),
		harness.R("p50", harness.US(s.Q(0.50)), tgt(clients == 1, "≤ 30 µs"), ifv(clients == 1, judge(s.Q(0.50), 30*time.Microsecond))),
		harness.R("p99", harness.US(s.Q(0.99)), "≤ "+harness.US(p99Target), judge(s.Q(0.99), p99Target)),
		harness.R("p99.9", harness.US(s.Q(0.999)), "", ""),
		harness.R("max", harness.US(s.Max()), "", ""),
	)
	t.Notes = append(t.Notes,
		"latency = client time.Now() (wall clock) at frame receipt − the reading's ts; ts has millisecond resolution (truncated), so each figure overstates the true latency by 0–1 ms: an upper bound, not a measurement at µs scale",
		"the sim sensor's ts is taken when the bridge reads it, not at an injected edge (no edge injection from outside the process yet)",
	)
	if len(s) < 100_000 {
		t.Notes = append(t.Notes, fmt.Sprintf("fewer than 100k samples: one sim sensor emits at most 1/%s (gpio.MinInterval is 10 ms), times %d client(s) over -event %s", o.interval, clients, o.event))
	}
	if badTS > 0 {
		t.Notes = append(t.Notes, fmt.Sprintf("%d readings with an unparsable ts skipped", badTS))
	}
	return t, nil
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

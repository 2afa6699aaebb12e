package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// row is one line of a result table: a figure, and the target
// beside it with a verdict.
type row struct {
	what, value, target, verdict string
}

type table struct {
	title string
	notes []string
	rows  []row
}

func (t table) print(w io.Writer) {
	fmt.Fprintf(w, "### %s\n\n", t.title)
	fmt.Fprintln(w, "| figure | value | target | verdict |")
	fmt.Fprintln(w, "| --- | ---: | --- | --- |")
	for _, r := range t.rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", r.what, r.value, r.target, r.verdict)
	}
	for _, n := range t.notes {
		fmt.Fprintf(w, "\n- %s", n)
	}
	fmt.Fprint(w, "\n\n")
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}

func mib(b int64) string { return fmt.Sprintf("%.2f MiB", float64(b)/(1<<20)) }

func us(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/1e3) }

// dist is a sorted sample of latencies.
type dist []time.Duration

func (d dist) q(p float64) time.Duration {
	// Nearest rank: the smallest sample with at least p of them at or below.
	i := int(float64(len(d))*p+0.999999) - 1
	return d[max(0, min(i, len(d)-1))]
}

// --- idle ---------------------------------------------------------------

func idleScenario(ctx context.Context, d daemonSpec, o options) (table, error) {
	// The built-in demo: simulated board, embedded broker, panel.
	dm, err := d.start(ctx, "idle", "")
	if err != nil {
		return table{}, err
	}
	defer dm.stop()
	// Warm-up: let start-up work (first sensor reads, broker, HA
	// discovery) settle before the window opens.
	if err := sleep(ctx, 2*time.Second); err != nil {
		return table{}, err
	}
	c0, err := cpuTime(dm.pid)
	if err != nil {
		return table{}, err
	}
	t0 := time.Now()
	if err := sleep(ctx, o.idle); err != nil {
		return table{}, err
	}
	c1, err := cpuTime(dm.pid)
	if err != nil {
		return table{}, err
	}
	window := time.Since(t0)
	mem, err := readMemory(dm.pid)
	if err != nil {
		return table{}, err
	}
	cpuPct := 100 * float64(c1-c0) / float64(window)
	t := table{title: fmt.Sprintf("idle (built-in demo, embedded broker), GOMAXPROCS=%d", d.procs)}
	t.rows = append(t.rows,
		row{"time to first listen (spawn → /healthz 200)", fmt.Sprintf("%.1f ms", float64(dm.ready)/1e6), "≤ 50 ms", verdict(dm.ready <= 50*time.Millisecond)},
		row{"RSS (smaps_rollup)", mib(mem.rss), "≤ 12 MiB", verdict(mem.rss <= 12<<20)},
		row{"private (Private_Clean+Private_Dirty)", mib(mem.private), "", ""},
		row{"PSS", mib(mem.pss), "", ""},
		row{fmt.Sprintf("idle CPU over %s (utime+stime)", window.Round(time.Second)), fmt.Sprintf("%.3f %% of a core (%s)", cpuPct, c1-c0), "≤ 0.1 %", verdict(cpuPct <= 0.1)},
	)
	t.notes = append(t.notes, fmt.Sprintf("CPU resolution: one clock tick (%s) over the window, %.3f %% of a core", clockTick, 100*float64(clockTick)/float64(window)))
	for _, arch := range []string{"armv6", "armv7", "arm64"} {
		path := filepath.Join(filepath.Dir(d.bin), "bridge-"+arch)
		fi, err := os.Stat(path)
		if err != nil {
			t.notes = append(t.notes, fmt.Sprintf("%s: not present (make cross)", path))
			continue
		}
		r := row{what: "stripped binary " + arch, value: fmt.Sprintf("%d B (%.1f MiB)", fi.Size(), float64(fi.Size())/(1<<20))}
		if arch == "armv6" {
			r.target, r.verdict = "≤ 12 MiB", verdict(fi.Size() <= 12<<20)
		}
		t.rows = append(t.rows, r)
	}
	return t, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
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

func eventScenario(ctx context.Context, d daemonSpec, o options, clients int) (table, error) {
	dm, err := d.start(ctx, "event", fmt.Sprintf(eventConfig, o.interval))
	if err != nil {
		return table{}, err
	}
	defer dm.stop()
	conns := make([]*websocket.Conn, 0, clients)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range clients {
		c, err := dial(ctx, dm.wsURL)
		if err != nil {
			return table{}, err
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
		return table{}, fmt.Errorf("client read: %w", readErr)
	}
	if len(all) == 0 {
		return table{}, fmt.Errorf("no t1 readings arrived; log: %s", tail(dm.logPath))
	}
	slices.Sort(all)
	s := dist(all)
	t := table{title: fmt.Sprintf("sensor event → WebSocket frame, %d client(s), sim sensor every %s, GOMAXPROCS=%d", clients, o.interval, d.procs)}
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
	t.rows = append(t.rows,
		row{"samples (readings × clients)", strconv.Itoa(len(s)), "≥ 100k", verdict(len(s) >= 100_000)},
		row{"p50", us(s.q(0.50)), tgt(clients == 1, "≤ 30 µs"), ifv(clients == 1, judge(s.q(0.50), 30*time.Microsecond))},
		row{"p99", us(s.q(0.99)), "≤ " + us(p99Target), judge(s.q(0.99), p99Target)},
		row{"p99.9", us(s.q(0.999)), "", ""},
		row{"max", us(s[len(s)-1]), "", ""},
	)
	t.notes = append(t.notes,
		"latency = client time.Now() (wall clock) at frame receipt − the reading's ts; ts has millisecond resolution (truncated), so each figure overstates the true latency by 0–1 ms: an upper bound, not a measurement at µs scale",
		"the sim sensor's ts is taken when the bridge reads it, not at an injected edge (no edge injection from outside the process yet)",
	)
	if len(s) < 100_000 {
		t.notes = append(t.notes, fmt.Sprintf("fewer than 100k samples: one sim sensor emits at most 1/%s (gpio.MinInterval is 10 ms), times %d client(s) over -event %s", o.interval, clients, o.event))
	}
	if badTS > 0 {
		t.notes = append(t.notes, fmt.Sprintf("%d readings with an unparsable ts skipped", badTS))
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

func roundTripScenario(ctx context.Context, d daemonSpec, o options) (table, error) {
	dm, err := d.start(ctx, "roundtrip", roundTripConfig)
	if err != nil {
		return table{}, err
	}
	defer dm.stop()
	c, err := dial(ctx, dm.wsURL)
	if err != nil {
		return table{}, err
	}
	defer c.Close()
	toAck := make([]time.Duration, 0, o.samples)
	toEcho := make([]time.Duration, 0, o.samples)
	msg := make([]byte, 0, 96)
	var f frame
	for i := range o.warmup + o.samples {
		if i%1024 == 0 && ctx.Err() != nil {
			return table{}, ctx.Err()
		}
		id := strconv.Itoa(i)
		msg = append(msg[:0], `{"type":"set","id":"`...)
		msg = append(msg, id...)
		msg = append(msg, `","name":"led","value":"toggle"}`...)
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		t0 := time.Now()
		if err := c.WriteMessage(websocket.TextMessage, msg); err != nil {
			return table{}, fmt.Errorf("write: %w", err)
		}
		var echo time.Duration
		for {
			_, b, err := c.ReadMessage()
			el := time.Since(t0) // monotonic
			if err != nil {
				return table{}, fmt.Errorf("read: %w", err)
			}
			f = frame{}
			if err := json.Unmarshal(b, &f); err != nil {
				return table{}, fmt.Errorf("frame %q: %w", b, err)
			}
			if f.Type == "reading" && f.Name == "led" && echo == 0 {
				echo = el
				continue
			}
			if f.Type == "ack" && f.ID == id {
				if !f.OK {
					return table{}, fmt.Errorf("set refused: %s", f.Error)
				}
				if echo == 0 {
					return table{}, fmt.Errorf("ack %s before the echoed reading", id)
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
	a, e := dist(toAck), dist(toEcho)
	t := table{title: fmt.Sprintf("command round trip (WebSocket set led toggle → echoed reading → ack), 1 client, GOMAXPROCS=%d", d.procs)}
	t.rows = append(t.rows,
		row{"samples (after " + strconv.Itoa(o.warmup) + " warm-up)", strconv.Itoa(len(a)), "≥ 100k", verdict(len(a) >= 100_000)},
		row{"p50 to echoed reading", us(e.q(0.50)), "≤ 50 µs", verdict(e.q(0.50) <= 50*time.Microsecond)},
		row{"p99 to echoed reading", us(e.q(0.99)), "≤ 200 µs", verdict(e.q(0.99) <= 200*time.Microsecond)},
		row{"p99.9 to echoed reading", us(e.q(0.999)), "", ""},
		row{"max to echoed reading", us(e[len(e)-1]), "", ""},
		row{"p50 to ack", us(a.q(0.50)), "", ""},
		row{"p99 to ack", us(a.q(0.99)), "", ""},
		row{"p99.9 to ack", us(a.q(0.999)), "", ""},
		row{"max to ack", us(a[len(a)-1]), "", ""},
	)
	t.notes = append(t.notes, "clock: client time.Now() monotonic, from before WriteMessage to the return of ReadMessage (ns resolution); one command in flight; includes JSON decoding of each frame in the client")
	return t, nil
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"pibridge/internal/harness"
)

const soakConfig = embeddedHead + `outputs:
  - {name: led, pin: GPIO22, initial: "off", safe: "off"}
sensors:
  - {name: t1, type: sim, interval: 100ms}
`

const (
	soakClients = 10
	soakWarmup  = 30 * time.Second
)

type sample struct {
	at         time.Duration
	rss        int64
	heap       float64 // go_memstats_heap_inuse_bytes
	goal       float64 // go_memstats_next_gc_bytes: the heap goal, 2× the live heap at the last GC (GOGC 100)
	goroutines float64
}

// soak is fault 6: 10 readings/s to 10 WebSocket clients for o.soak; one
// client in turn reconnects, toggles the led and asks for history every
// 5 s. RSS and the Go heap must not drift, and once the clients are gone
// the daemon's goroutines must be back to what they were before them.
func soak(ctx context.Context, s *suite) (harness.Table, error) {
	dm, err := s.spec.Start(ctx, "f6", soakConfig)
	if err != nil {
		return harness.Table{}, err
	}
	defer dm.Stop()
	if err := harness.Sleep(ctx, 2*time.Second); err != nil { // warm-up
		return harness.Table{}, err
	}
	take := func(at time.Duration) (sample, error) {
		m, err := harness.Scrape(ctx, dm.HTTPURL+"/metrics")
		if err != nil {
			return sample{}, err
		}
		if _, ok := m["go_goroutines"]; !ok {
			return sample{}, fmt.Errorf("/metrics has no go_goroutines")
		}
		mem, err := harness.ReadMemory(dm.PID)
		if err != nil {
			return sample{}, err
		}
		return sample{at: at, rss: mem.RSS, heap: m.Get("go_memstats_heap_inuse_bytes"), goal: m.Get("go_memstats_next_gc_bytes"), goroutines: m.Get("go_goroutines")}, nil
	}
	before, err := take(0)
	if err != nil {
		return harness.Table{}, err
	}

	var frames atomic.Int64
	count := func(f *frame, _ []byte, _ time.Time) {
		if f.Type == "reading" {
			frames.Add(1)
		}
	}
	clients := make([]*wsObserver, soakClients)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.close()
			}
		}
	}()
	for i := range clients {
		if clients[i], err = observe(ctx, dm.WSURL, count); err != nil {
			return harness.Table{}, err
		}
	}
	// The soak's clock starts after a warm-up with the clients on, so that
	// start-up allocations (buffers, pools, the outbox's file) are not
	// taken for drift.
	start := time.Now().Add(soakWarmup)
	end := start.Add(s.o.soak)
	every := max(s.o.soak/60, 5*time.Second) // about 60 samples
	var samples []sample
	var reconnects, acked int
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	nextSample := start
	for i := 0; time.Now().Before(end); i++ {
		if !time.Now().Before(nextSample) {
			sm, err := take(time.Since(start))
			if err != nil {
				return harness.Table{}, err
			}
			samples = append(samples, sm)
			nextSample = nextSample.Add(every)
		}
		select {
		case <-ctx.Done():
			return harness.Table{}, ctx.Err()
		case <-tick.C:
		}
		// One client in turn: away, back, a command and a history query.
		k := i % soakClients
		clients[k].close()
		clients[k] = nil
		c, err := dialWS(ctx, dm.WSURL)
		if err != nil {
			return harness.Table{}, fmt.Errorf("reconnect: %w", err)
		}
		reconnects++
		ok, err := soakCommands(c, i)
		c.Close()
		if err != nil {
			return harness.Table{}, err
		}
		if ok {
			acked++
		}
		if clients[k], err = observe(ctx, dm.WSURL, count); err != nil {
			return harness.Table{}, err
		}
	}
	last, err := take(time.Since(start))
	if err != nil {
		return harness.Table{}, err
	}
	samples = append(samples, last)
	during := last.goroutines
	for i, c := range clients {
		c.close()
		clients[i] = nil
	}
	var after sample
	gerr := poll(ctx, 15*time.Second, 100*time.Millisecond, "goroutines back to the baseline", func() (bool, error) {
		sm, err := take(time.Since(start))
		after = sm
		return err == nil && sm.goroutines <= before.goroutines, err
	})
	if ctx.Err() != nil {
		return harness.Table{}, ctx.Err()
	}

	// Drift: the lowest figure from a tenth to three tenths into the soak
	// against the lowest of the last three tenths. Minima over wide
	// windows, because RSS and the heap goal saw-tooth with each GC cycle
	// (the goal moves by 1–2 MiB between cycles at this heap size).
	lowest := func(from, to time.Duration, f func(sample) float64) float64 {
		v := -1.0
		for _, sm := range samples {
			if sm.at >= from && sm.at <= to && (v < 0 || f(sm) < v) {
				v = f(sm)
			}
		}
		return v
	}
	rssOf := func(sm sample) float64 { return float64(sm.rss) }
	goalOf := func(sm sample) float64 { return sm.goal }
	span := s.o.soak
	rssRef, rssEnd := lowest(span/10, span*3/10, rssOf), lowest(span*7/10, span+time.Hour, rssOf)
	goalRef, goalEnd := lowest(span/10, span*3/10, goalOf), lowest(span*7/10, span+time.Hour, goalOf)
	rssDrift, goalDrift := rssEnd-rssRef, goalEnd-goalRef
	slope := rssSlope(samples, span/10)
	var maxRSS int64
	for _, sm := range samples {
		maxRSS = max(maxRSS, sm.rss)
	}
	var series []string
	stride := max(1, len(samples)/15)
	for i := 0; i < len(samples); i += stride {
		series = append(series, fmt.Sprintf("%s %.1f/%.1f", samples[i].at.Round(time.Second), float64(samples[i].rss)/(1<<20), samples[i].goal/(1<<20)))
	}
	expected := int64(float64(soakClients) * 10 * (s.o.soak + soakWarmup).Seconds())

	t := harness.Table{Title: fmt.Sprintf("fault 6: soak, %s at 10 readings/s to %d WebSocket clients (one reconnecting, commanding and querying every 5 s)", s.o.soak, soakClients)}
	t.Rows = append(t.Rows,
		harness.R("readings delivered to the clients", fmt.Sprintf("%d (%.0f %% of 10/s × %d clients)", frames.Load(), 100*float64(frames.Load())/float64(expected), soakClients), "≥ 90 %", harness.Verdict(frames.Load()*10 >= expected*9)),
		harness.R("reconnects / commands acknowledged", fmt.Sprintf("%d / %d", reconnects, acked), "all acknowledged", harness.Verdict(acked == reconnects)),
		harness.R("RSS: before clients / end / max", fmt.Sprintf("%s / %s / %s", harness.MiB(before.rss), harness.MiB(last.rss), harness.MiB(maxRSS)), "", ""),
		harness.R("RSS drift (lowest in the last 3/10 − lowest from 1/10 to 3/10 in)", fmt.Sprintf("%+.2f MiB (least-squares slope %+.1f MiB/h)", rssDrift/(1<<20), slope), "≤ 2 MiB", harness.Verdict(rssRef > 0 && rssDrift <= 2<<20)),
		harness.R("Go heap goal drift (go_memstats_next_gc_bytes, 2× the live heap), same windows", fmt.Sprintf("%+.2f MiB", goalDrift/(1<<20)), "≤ 2 MiB (1 MiB of live heap)", harness.Verdict(goalRef > 0 && goalDrift <= 2<<20)),
		harness.R("goroutines: before clients / with clients / after they left", fmt.Sprintf("%.0f / %.0f / %.0f", before.goroutines, during, after.goroutines), "after ≤ before, within 15 s", harness.Verdict(gerr == nil)),
	)
	if s.o.soak < 10*time.Minute {
		t.Notes = append(t.Notes, "a soak under 10 min cannot tell the last of the warm-up from drift: RSS settles over the first minutes (see the series); judge drift on the default 30 min")
	}
	t.Notes = append(t.Notes,
		fmt.Sprintf("the clock starts after a %s warm-up with the clients on; %d samples, one every %s: RSS from /proc/pid/smaps_rollup, heap goal and goroutines from the daemon's /metrics (go_memstats_next_gc_bytes, go_goroutines)", soakWarmup, len(samples), every),
		"time RSS/heap goal in MiB: "+strings.Join(series, ", "),
	)
	return t, nil
}

// soakCommands toggles the led and asks for a minute of history on c,
// and reports whether both were answered well.
func soakCommands(c *websocket.Conn, i int) (bool, error) {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	for _, m := range []string{
		fmt.Sprintf(`{"type":"set","id":"s%d","name":"led","value":"toggle"}`, i),
		fmt.Sprintf(`{"type":"history","id":"h%d","name":"t1","since":"1m"}`, i),
	} {
		if err := c.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
			return false, fmt.Errorf("soak command: %w", err)
		}
	}
	got := 0
	ok := true
	for got < 2 {
		_, b, err := c.ReadMessage()
		if err != nil {
			return false, fmt.Errorf("soak: waiting for answers: %w", err)
		}
		var f frame
		if json.Unmarshal(b, &f) != nil {
			continue
		}
		switch {
		case f.Type == "ack" && f.ID == fmt.Sprintf("s%d", i):
			ok = ok && f.OK
			got++
		case f.Type == "history" && f.ID == fmt.Sprintf("h%d", i):
			got++
		case f.Type == "error" || f.Type == "ack":
			ok = false
			got++
		}
	}
	return ok, nil
}

// rssSlope is the least-squares slope of RSS over time from `from` on,
// in MiB per hour.
func rssSlope(ss []sample, from time.Duration) float64 {
	var n, sx, sy, sxx, sxy float64
	for _, s := range ss {
		if s.at < from {
			continue
		}
		x, y := s.at.Hours(), float64(s.rss)/(1<<20)
		n++
		sx += x
		sy += y
		sxx += x * x
		sxy += x * y
	}
	if n < 2 || n*sxx-sx*sx == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / (n*sxx - sx*sx)
}

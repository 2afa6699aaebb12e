package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"pibridge/internal/harness"
)

// Fault 7's stall: every write the core's disk writer makes (the outbox's
// log, the seq reservation) blocks for 2 s, then writes go through for
// 3 s, over and over (cmd/bridge diskstall.go; the variable is read only
// by the bridge, for this suite).
const (
	stallEnv     = "PIBRIDGE_FAULT_DISK_STALL=2s,3s"
	stallClients = 10
	stallWindow  = 8 * time.Second // two stalls in a stalling run
	// stallRounds of each kind, interleaved (healthy, stalling, healthy,
	// …), so that a slow drift in the machine's load touches both alike.
	stallRounds  = 3
	stallSensors = 4
	// stallCommandEvery: 750 commands a run, so that p99 is not one sample.
	stallCommandEvery = 20 * time.Millisecond
)

func stallConfig(broker string) string {
	var b strings.Builder
	b.WriteString(brokerHead(broker) + `outputs:
  - {name: led, pin: GPIO22, initial: "off", safe: "off"}
sensors:
`)
	for i := range stallSensors {
		fmt.Fprintf(&b, "  - {name: s%d, type: sim, interval: 10ms}\n", i)
	}
	return b.String()
}

// add pools another run's figures into r.
func (r *stallRun) add(o stallRun) {
	r.lat = append(r.lat, o.lat...)
	r.ack = append(r.ack, o.ack...)
	r.sent += o.sent
	r.answered += o.answered
	r.target += o.target
	r.holes += o.holes
	r.disorder += o.disorder
	r.mqttN += o.mqttN
	r.mqttMax = max(r.mqttMax, o.mqttMax)
	r.ahead += o.ahead
	r.overflow += o.overflow
}

// stallRun is what one bridge run (healthy or stalling) showed.
type stallRun struct {
	lat, ack               []time.Duration
	sent, answered         int
	target                 uint64 // the newest seq the WebSocket clients saw
	holes, disorder, mqttN int
	mqttMax                time.Duration // arrival at the subscriber − ts, worst
	ahead, overflow        float64
}

// diskStalled is fault 7: the same bridge with a healthy disk and
// with a disk that stalls 2 s out of every 5, while 10 WebSocket clients
// read 400 readings/s and a command goes every 20 ms, three runs of each,
// interleaved. The clients'
// reading latency and the commands must not notice the stalls; after
// them, every reading must be at an independent MQTT subscriber, in seq
// order, without a hole.
func diskStalled(ctx context.Context, s *suite) (harness.Table, error) {
	var healthy, stalled stallRun
	for round := range stallRounds {
		h, err := stallPhase(ctx, s, fmt.Sprintf("f7-healthy-%d", round), "")
		if err != nil {
			return harness.Table{}, fmt.Errorf("healthy run %d: %w", round, err)
		}
		healthy.add(h)
		st, err := stallPhase(ctx, s, fmt.Sprintf("f7-stalled-%d", round), stallEnv)
		if err != nil {
			return harness.Table{}, fmt.Errorf("stalling run %d: %w", round, err)
		}
		stalled.add(st)
	}
	hl, sl := dist(healthy.lat), dist(stalled.lat)
	ha, sa := dist(healthy.ack), dist(stalled.ack)
	arrow := func(a, b time.Duration) string { return ms(a) + " → " + ms(b) }
	within := func(a, b time.Duration) bool { return b <= a+a/10 }
	t := harness.Table{Title: fmt.Sprintf("fault 7: the state dir's writes stall 2 s of every 5 (%s), %d WebSocket clients, %d sim sensors every 10 ms, a command every 20 ms, mosquitto QoS 1; healthy runs → stalling runs, %d of each interleaved, %s each",
		strings.TrimPrefix(stallEnv, "PIBRIDGE_FAULT_DISK_STALL="), stallClients, stallSensors, stallRounds, stallWindow)}
	t.Rows = append(t.Rows,
		harness.R("WebSocket reading latency p50", arrow(hl.Q(0.5), sl.Q(0.5)), "", ""),
		harness.R("WebSocket reading latency p99", arrow(hl.Q(0.99), sl.Q(0.99)), "within 10 %", harness.Verdict(within(hl.Q(0.99), sl.Q(0.99)))),
		harness.R("WebSocket reading latency max", arrow(hl.Max(), sl.Max()), "", ""),
		harness.R("readings received, all clients", fmt.Sprintf("%d → %d", len(healthy.lat), len(stalled.lat)), "", ""),
		harness.R("commands answered", fmt.Sprintf("%d/%d → %d/%d", healthy.answered, healthy.sent, stalled.answered, stalled.sent), "all", harness.Verdict(healthy.answered == healthy.sent && stalled.answered == stalled.sent)),
		harness.R("command ack latency p99", arrow(ha.Q(0.99), sa.Q(0.99)), "within 10 % or 1 ms", harness.Verdict(within(ha.Q(0.99), sa.Q(0.99)) || sa.Q(0.99) <= ha.Q(0.99)+time.Millisecond)),
		harness.R("MQTT: delay at the subscriber, max (ts → arrival)", arrow(healthy.mqttMax, stalled.mqttMax), "≈ 2 s when stalling: the log holds MQTT, nothing else", ""),
		harness.R(fmt.Sprintf("MQTT: seq holes, of the %d readings the WebSocket saw", healthy.target+stalled.target), fmt.Sprintf("%d → %d", healthy.holes, stalled.holes), "0", harness.Verdict(stalled.holes == 0 && healthy.holes == 0)),
		harness.R("MQTT: readings out of seq order (first arrivals)", fmt.Sprintf("%d → %d", healthy.disorder, stalled.disorder), "0", harness.Verdict(stalled.disorder == 0 && healthy.disorder == 0)),
		harness.R("pibridge_disk_writer_ahead_total (shown before logged)", fmt.Sprintf("%.0f → %.0f", healthy.ahead, stalled.ahead), "> 0 when stalling: the stalls happened", harness.Verdict(stalled.ahead > 0)),
		harness.R("pibridge_disk_writer_overflow_total", fmt.Sprintf("%.0f → %.0f", healthy.overflow, stalled.overflow), "0", harness.Verdict(stalled.overflow == 0)),
	)
	t.Notes = append(t.Notes,
		"latency = a WebSocket client's clock at receipt − the reading's ts (ms); all 10 clients pooled; the load generator shares the machine",
		"the stall is injected in the bridge (PIBRIDGE_FAULT_DISK_STALL, read only when set): it blocks the core's disk writer before each write, as a write(2) to a stalling SD card would; the outbox's bbolt commits are not slowed (they are off every reading's path)",
		"after the window the subscriber waits until it has every seq the WebSocket clients saw",
	)
	return t, nil
}

// stallPhase runs one bridge on a mosquitto of its own (no retained
// readings of the other run).
func stallPhase(ctx context.Context, s *suite, name, env string) (stallRun, error) {
	var res stallRun
	m, w, stop, err := watchedMosquitto(ctx, s, name, harness.MosquittoOptions{}, true)
	if err != nil {
		return res, err
	}
	defer stop()
	broker := m.Addr
	spec := s.spec
	if env != "" {
		spec.Env = append(append([]string(nil), spec.Env...), env)
	}
	dm, err := spec.Start(ctx, name, stallConfig(broker))
	if err != nil {
		return res, err
	}
	defer dm.Stop()

	var lat latencies
	var seen seqTracker
	var ackMu sync.Mutex
	sentAt := map[string]time.Time{}
	var obs []*wsObserver
	defer func() {
		for _, o := range obs {
			o.close()
		}
	}()
	for i := range stallClients {
		o, err := observe(ctx, dm.WSURL, func(f *frame, _ []byte, at time.Time) {
			lat.add(f, at)
			seen.add(f, at)
			if i == 0 && f.Type == "ack" {
				ackMu.Lock()
				if t0, ok := sentAt[f.ID]; ok {
					res.ack = append(res.ack, at.Sub(t0))
					res.answered++
					delete(sentAt, f.ID)
				}
				ackMu.Unlock()
			}
		})
		if err != nil {
			return res, err
		}
		obs = append(obs, o)
	}
	if err := harness.Sleep(ctx, time.Second); err != nil { // warm-up
		return res, err
	}

	// Commands on the first client's connection, written only here.
	cmdCtx, stopCmds := context.WithCancel(ctx)
	var cmds sync.WaitGroup
	cmds.Go(func() {
		t := time.NewTicker(stallCommandEvery)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-cmdCtx.Done():
				return
			case <-t.C:
			}
			id := fmt.Sprintf("c%d", i)
			msg, _ := json.Marshal(map[string]any{"type": "set", "id": id, "name": "led", "value": i%2 == 0})
			ackMu.Lock()
			sentAt[id] = time.Now()
			res.sent++
			ackMu.Unlock()
			_ = obs[0].conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := obs[0].conn.WriteMessage(websocket.TextMessage, msg); err != nil {
				return
			}
		}
	})
	res.lat, err = lat.window(ctx, stallWindow)
	stopCmds()
	cmds.Wait()
	if err != nil {
		return res, err
	}
	// The last commands' acks.
	_ = poll(ctx, 5*time.Second, 10*time.Millisecond, "the last acks", func() (bool, error) {
		ackMu.Lock()
		defer ackMu.Unlock()
		return len(sentAt) == 0, nil
	})

	met, err := harness.Scrape(ctx, dm.HTTPURL+"/metrics")
	if err != nil {
		return res, err
	}
	res.ahead, res.overflow = met.Get("pibridge_disk_writer_ahead_total"), met.Get("pibridge_disk_writer_overflow_total")

	res.target = seen.newest()
	if err := w.waitFor(ctx, 15*time.Second, "every seq the WebSocket clients saw", func(w *watcher) bool { return w.contig >= res.target }); err != nil && ctx.Err() != nil {
		return res, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	res.holes = len(w.missingLocked(1, res.target))
	var last uint64
	for _, r := range w.readings {
		if r.Seq < last {
			res.disorder++
		}
		last = max(last, r.Seq)
		if ts := r.TS(); !ts.IsZero() {
			res.mqttMax = max(res.mqttMax, r.At.Sub(ts))
		}
	}
	res.mqttN = len(w.readings)
	return res, nil
}

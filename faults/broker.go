package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"pibridge/internal/harness"
)

// streamSensors is how many sim sensors at gpio.MinInterval (10 ms) make
// the stream of faults 1 and 2: 11 × 100/s, so that the measured rate
// stays above 1,000 readings/s despite timer slack.
const streamSensors = 11

// streamConfig is a bridge on an external broker with streamSensors sim
// sensors every 10 ms and nothing else.
func streamConfig(broker string) string {
	var b strings.Builder
	b.WriteString(brokerHead(broker) + `sensors:
`)
	for i := range streamSensors {
		fmt.Fprintf(&b, "  - {name: s%d, type: sim, interval: 10ms}\n", i)
	}
	return b.String()
}

// watchedMosquitto starts a mosquitto of its own in the scratch directory
// and a watcher of the bridge's readings on it; stop ends both.
func watchedMosquitto(ctx context.Context, s *suite, name string, o harness.MosquittoOptions, keep bool) (m *harness.Mosquitto, w *watcher, stop func(), err error) {
	dir := filepath.Join(s.scratch, name+"-mosquitto")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, nil, err
	}
	if m, err = harness.StartMosquitto(dir, o); err != nil {
		return nil, nil, nil, err
	}
	if w, err = newWatcher(ctx, m.Addr, base+"/+", keep); err != nil {
		m.Kill()
		return nil, nil, nil, err
	}
	return m, w, func() { w.close(); m.Kill() }, nil
}

// watchedBridge starts a bridge on cfg and a watcher of every topic of
// its embedded broker; stop ends both.
func watchedBridge(ctx context.Context, s *suite, name, cfg string) (dm *harness.Daemon, w *watcher, stop func(), err error) {
	if dm, err = s.spec.Start(ctx, name, cfg); err != nil {
		return nil, nil, nil, err
	}
	if w, err = newWatcher(ctx, dm.MQTTAddr, base+"/#", true); err != nil {
		dm.Stop()
		return nil, nil, nil, err
	}
	return dm, w, func() { w.close(); dm.Stop() }, nil
}

// brokerKilled is fault 1: mosquitto SIGKILLed and started again on the
// same port o.kills times while the bridge publishes > 1,000 readings/s.
//
// mosquitto's persistence is a snapshot (saved every second here), not a
// log: a SIGKILL loses what it acknowledged since the last save and had
// not yet passed on. It does pass a QoS 1 message on to a connected
// subscriber before it sends the PUBACK, so the kill waits until the
// watcher is online and has received a reading the bridge emitted after
// the watcher (re)connected: whatever mosquitto queued for the watcher
// while it was away went out before that one. A seq missing at the end
// is then the bridge's. (mqtt/integration_test.go TestBrokerKilled makes
// the same argument in-process.)
func brokerKilled(ctx context.Context, s *suite) (harness.Table, error) {
	m, w, stop, err := watchedMosquitto(ctx, s, "f1", harness.MosquittoOptions{Persist: true}, false)
	if err != nil {
		return harness.Table{}, err
	}
	defer stop()
	m.Stop() // saves the watcher's session: it outlives every kill from now on
	if err := m.Start(); err != nil {
		return harness.Table{}, err
	}
	if err := w.waitFor(ctx, 10*time.Second, "the watcher back", func(w *watcher) bool { return w.online }); err != nil {
		return harness.Table{}, err
	}

	dm, err := s.spec.Start(ctx, "f1", streamConfig(m.Addr))
	if err != nil {
		return harness.Table{}, err
	}
	defer dm.Stop()
	var ws seqTracker
	obs, err := observe(ctx, dm.WSURL, func(f *frame, _ []byte, at time.Time) { ws.add(f, at) })
	if err != nil {
		return harness.Table{}, err
	}
	defer obs.close()
	start := time.Now()

	// margin covers the WebSocket's lag behind the core (milliseconds) at
	// ~1,000 readings/s.
	const margin = 500
	var recoveries []time.Duration
	for round := range s.o.kills {
		// The watcher online, and holding a reading emitted after it came
		// online: everything mosquitto acknowledged so far is with it.
		w.mu.Lock()
		conns := w.connects
		w.mu.Unlock()
		after := ws.newest() + margin
		if err := w.waitFor(ctx, 30*time.Second, fmt.Sprintf("round %d: the watcher caught up past seq %d", round, after), func(w *watcher) bool {
			return w.online && w.connects == conns && w.maxSeq > after
		}); err != nil {
			return harness.Table{}, err
		}
		if err := harness.Sleep(ctx, time.Duration(rand.IntN(500))*time.Millisecond); err != nil { // a kill at any moment
			return harness.Table{}, err
		}
		m.Kill()
		if err := harness.Sleep(ctx, time.Duration(rand.IntN(500))*time.Millisecond); err != nil { // the outage
			return harness.Table{}, err
		}
		if err := m.Start(); err != nil {
			return harness.Table{}, err
		}
		up := time.Now()
		last := ws.newest()
		var rec time.Duration
		if err := w.waitFor(ctx, 30*time.Second, fmt.Sprintf("round %d: a reading emitted after the restart", round), func(w *watcher) bool {
			if w.maxSeq <= last {
				return false
			}
			// The first seq past last to arrive.
			for s := last + 1; s <= w.maxSeq; s++ {
				if t, ok := w.first[s]; ok {
					rec = t.Sub(up)
					return true
				}
			}
			return false
		}); err != nil {
			return harness.Table{}, err
		}
		recoveries = append(recoveries, rec)
	}
	end := ws.newest()
	elapsed := time.Since(start)
	// Everything emitted up to end must reach the watcher.
	_ = w.waitFor(ctx, 30*time.Second, "every reading", func(w *watcher) bool { return w.contig >= end })
	if ctx.Err() != nil {
		return harness.Table{}, ctx.Err()
	}
	met, _ := harness.Scrape(ctx, dm.HTTPURL+"/metrics")
	w.mu.Lock()
	miss := w.missingLocked(1, end)
	dupState, dupOther := w.dupState, w.dupOther
	w.mu.Unlock()
	rate := float64(end) / elapsed.Seconds()
	rd := dist(recoveries)

	t := harness.Table{Title: fmt.Sprintf("fault 1: mosquitto SIGKILLed and restarted %d×, %d sim sensors every 10 ms, QoS 1", s.o.kills, streamSensors)}
	t.Rows = append(t.Rows,
		harness.R("readings emitted (seq 1 → "+fmt.Sprint(end)+")", fmt.Sprintf("%d at %.0f/s", end, rate), "≥ 1,000/s", harness.Verdict(rate >= 1000)),
		harness.R("lost (seqs never at the subscriber)", fmt.Sprint(len(miss)), "0", harness.Verdict(len(miss) == 0)),
		harness.R("duplicated: state re-published on connect", fmt.Sprint(dupState), "counted (README: MQTT topics)", ""),
		harness.R("duplicated: other (QoS 1 redelivery)", fmt.Sprint(dupOther), "counted (at least once)", ""),
		harness.R("recovery p50 (broker accepting → first reading emitted after the restart at the subscriber)", ms(rd.Q(0.5)), "", ""),
		harness.R("recovery max", ms(rd.Max()), "≤ 2 s (reconnect pause 1 s ± 20 % + backlog)", harness.Verdict(rd.Max() <= 2*time.Second)),
		harness.R("outbox dropped (pibridge_mqtt_outbox_dropped_total)", fmt.Sprint(met.Get("pibridge_mqtt_outbox_dropped_total")), "0", harness.Verdict(met != nil && met.Get("pibridge_mqtt_outbox_dropped_total") == 0)),
	)
	if len(miss) > 0 {
		t.Notes = append(t.Notes, fmt.Sprintf("missing seqs (first 20): %v", miss[:min(20, len(miss))]))
	}
	var slow []string
	for i, r := range recoveries {
		if r > 2*time.Second {
			slow = append(slow, fmt.Sprintf("kill %d: %s", i+1, ms(r)))
		}
	}
	if len(slow) > 0 {
		t.Notes = append(t.Notes, fmt.Sprintf("slow recoveries (%s): mosquitto was back within 0.5 s: run with -keep and look in the bridge's log for a connection attempt after the loss that took the whole connect timeout (10 s)", strings.Join(slow, ", ")))
	}
	t.Notes = append(t.Notes,
		"independent subscriber: paho, persistent session (clean session off), QoS 1, reconnecting every 50 ms; mosquitto 2 with autosave every 1 s, max_queued_messages 0",
		"kill at a random moment (0–500 ms) after the subscriber holds everything acknowledged; outage 0–500 ms",
		"duplicates split by whether the copy repeats the newest reading of its topic (the per-connect state re-publish) or not",
		fmt.Sprintf("pibridge_mqtt_connects_total %v", met.Get("pibridge_mqtt_connects_total")),
	)
	return t, nil
}

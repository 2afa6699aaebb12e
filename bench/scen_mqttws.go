package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gorilla/websocket"

	"pibridge/internal/harness"
)

// Scenario 3, MQTT in → WebSocket out: publisher → mosquitto → subject →
// WebSocket client, and in the same run, from the same publishes,
// mosquitto → a plain MQTT subscriber: the baseline. The subject's added
// latency is its path's quantile minus the baseline's.

type latResult struct {
	name           string
	path, baseline harness.Dist
	sent           int
	closed         string // the subject closed the WebSocket client: how
}

func (r latResult) added(q float64) time.Duration { return r.path.Q(q) - r.baseline.Q(q) }

func mqttWSScenario(ctx context.Context, e peerEnv) (harness.Table, error) {
	var results []latResult
	for _, name := range subjectNames(e.o, false) {
		r, err := mqttWSRun(ctx, e, name)
		if err != nil {
			return harness.Table{}, fmt.Errorf("%s: %w", name, err)
		}
		results = append(results, r)
	}
	t := harness.Table{Title: fmt.Sprintf("MQTT in → WebSocket out (publisher → mosquitto → subject → 1 WebSocket client), %d messages at %d/s, GOMAXPROCS=%d", e.o.latSamples, e.o.latRate, e.d.Procs)}
	ours := results[0]
	for _, r := range results {
		lost := r.sent - len(r.path)
		t.Rows = append(t.Rows,
			harness.R(r.name+": samples through the subject (lost)", fmt.Sprintf("%d (%d)", len(r.path), lost), "≥ 100k", harness.Verdict(len(r.path) >= 100_000)),
			harness.R(r.name+": baseline p50 / p99 (mosquitto → MQTT subscriber, same publishes)", harness.US(r.baseline.Q(.5))+" / "+harness.US(r.baseline.Q(.99)), "", ""),
			harness.R(r.name+": path p50 / p99 / p99.9 / max", fmt.Sprintf("%s / %s / %s / %s", harness.US(r.path.Q(.5)), harness.US(r.path.Q(.99)), harness.US(r.path.Q(.999)), harness.US(r.path.Max())), "", ""),
		)
		target, verdict := "", ""
		if r.name == ours.name {
			target, verdict = "p99 ≤ 50 µs", harness.Verdict(r.added(.99) <= 50*time.Microsecond)
		}
		t.Rows = append(t.Rows, harness.R(r.name+": added p50 / p99 (path − baseline)", harness.US(r.added(.5))+" / "+harness.US(r.added(.99)), target, verdict))
		if r.closed != "" {
			t.Rows = append(t.Rows, harness.R(r.name+": closed by the subject", r.closed, "never", "missed"))
		}
		if lost > 0 {
			t.Notes = append(t.Notes, fmt.Sprintf("%s: %d of %d messages never reached the WebSocket client", r.name, lost, r.sent))
		}
	}
	for _, r := range results[1:] {
		ok := r.added(.99) >= 4*ours.added(.99)
		t.Rows = append(t.Rows, harness.R(fmt.Sprintf("added p99: %s ÷ pibridge", r.name), ratio(float64(r.added(.99)), float64(ours.added(.99))), "≥ 4×", harness.Verdict(ok)))
	}
	if len(results) == 1 {
		t.Notes = append(t.Notes, "Node-RED left out (-peers): the ≥ 4× tail comparison is not made")
	}
	t.Notes = append(t.Notes,
		"latency = receipt − send time carried in the payload, both from the load generator's monotonic clock (one process sends and receives)",
		"the publisher flushes each message on its own, QoS 0; mosquitto (the broker) runs on the load generator's core, the subject on the daemon's",
		fmt.Sprintf("the first %d messages are warm-up, not counted", latWarmup(e.o)),
	)
	return t, nil
}

func latWarmup(o peerOptions) int { return min(1000, o.latSamples/10) }

func mqttWSRun(ctx context.Context, e peerEnv, name string) (latResult, error) {
	s, err := e.start(ctx, name, "mqttws-"+name)
	if err != nil {
		return latResult{}, err
	}
	defer s.stop()
	r := latResult{name: s.name}
	path, err := s.dial(ctx, 0)
	if err != nil {
		return r, err
	}
	base, err := dialMQTT(ctx, s.pubAddr, "baseline", "lab/#")
	if err != nil {
		path.Close()
		return r, fmt.Errorf("baseline subscriber: %w", err)
	}
	warm := latWarmup(e.o)
	f := startFleet([]receiver{path, base}, true, int64(warm))
	defer f.stop()
	pub, err := dialPublisher(ctx, s.pubAddr, "publisher")
	if err != nil {
		return r, err
	}
	defer pub.Close()
	if err := f.waitReady(ctx, pub, 20*time.Second); err != nil {
		return r, err
	}
	n := warm + e.o.latSamples
	limit := time.Duration(float64(n)/float64(e.o.latRate)*float64(time.Second)) + 10*time.Second
	sent, err := pub.paced(ctx, "lab/lat", e.o.latRate, limit, n, nil, true)
	if err != nil {
		return r, fmt.Errorf("publishing: %w", err)
	}
	f.drain(ctx, 2*int64(sent), time.Second, 10*time.Second)
	f.stop()
	if err := f.errs[1]; err != nil {
		return r, fmt.Errorf("baseline subscriber: %w", err)
	}
	if err := f.errs[0]; err != nil {
		// A subject may close a client it judges slow (the bridge: 1008
		// once 256 messages are queued): that is a result, not a failure.
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			return r, fmt.Errorf("WebSocket client: %w", err)
		}
		r.closed = fmt.Sprintf("closed the WebSocket client after %d of %d messages: %v", f.counts[0].Load(), sent, ce)
	}
	r.sent = sent - warm
	r.path, r.baseline = f.latencies(0), f.latencies(1)
	if len(r.path) == 0 {
		return r, fmt.Errorf("no message reached the WebSocket client; log: %s", harness.Tail(s.logPath))
	}
	return r, nil
}

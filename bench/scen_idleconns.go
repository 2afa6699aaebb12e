package main

import (
	"context"
	"fmt"
	"time"

	"pibridge/internal/harness"
)

// Scenario 6, idle WebSocket connections: the subject's RSS grows by how
// much per open, idle connection? The bridge's clients read the hello and
// idle; Node-RED's connect to the websocket out path; MQTT-over-WebSocket
// clients of mosquitto and mochi send CONNECT, read CONNACK and idle.

type idleResult struct {
	name         string
	n            int
	before, open int64 // RSS
}

func (r idleResult) perConn() float64 { return float64(r.open-r.before) / float64(r.n) }

func idleConnsScenario(ctx context.Context, e peerEnv) (harness.Table, error) {
	e.maxClients = maxOf(e.o.idleConns) + 16
	names := subjectNames(e.o, true)
	t := harness.Table{Title: fmt.Sprintf("idle WebSocket connections: subject RSS growth ÷ connections, GOMAXPROCS=%d", e.d.Procs)}
	for _, n := range e.o.idleConns {
		var ours idleResult
		for _, name := range names {
			r, err := idleConnsRun(ctx, e, name, n)
			if err != nil {
				return t, fmt.Errorf("%s, %d connections: %w", name, n, err)
			}
			v := fmt.Sprintf("%s (RSS %s → %s)", kib(r.perConn()), harness.MiB(r.before), harness.MiB(r.open))
			target, verdict := "", ""
			if name == subjectBridge {
				ours = r
				target, verdict = "≤ 8 KiB", harness.Verdict(r.perConn() <= 8<<10)
			} else {
				v += "; it ÷ pibridge: " + ratio(r.perConn(), ours.perConn())
			}
			t.Rows = append(t.Rows, harness.R(fmt.Sprintf("N = %d: %s", n, r.name), v, target, verdict))
		}
	}
	t.Notes = append(t.Notes,
		"each subject is started afresh for each N; RSS (smaps_rollup) is read after a 1 s settle before connecting and 2 s after the last connection is open; up to 64 handshakes at once",
		idleHow(e.o.idleFilter),
		"RLIMIT_NOFILE is raised to the hard limit in the bench and inherited by every subject",
	)
	return t, nil
}

func idleConnsRun(ctx context.Context, e peerEnv, name string, n int) (idleResult, error) {
	s, err := e.start(ctx, name, fmt.Sprintf("idle%d-%s", n, name))
	if err != nil {
		return idleResult{}, err
	}
	defer s.stop()
	r := idleResult{name: s.name, n: n}
	// One connection first, closed again: first-use allocations (TLS-less
	// HTTP server, upgrader pools) are not per connection.
	c, err := s.dialIdle(ctx, -1)
	if err != nil {
		return r, err
	}
	c.Close()
	if err := harness.Sleep(ctx, time.Second); err != nil {
		return r, err
	}
	m, err := harness.ReadMemory(s.pid)
	if err != nil {
		return r, err
	}
	r.before = m.RSS
	conns, err := dialAll(ctx, n, s.dialIdle)
	if err != nil {
		return r, err
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if err := harness.Sleep(ctx, 2*time.Second); err != nil {
		return r, err
	}
	if m, err = harness.ReadMemory(s.pid); err != nil {
		return r, fmt.Errorf("%w (did it exit? log: %s)", err, harness.Tail(s.logPath))
	}
	r.open = m.RSS
	return r, nil
}

func idleHow(filter string) string {
	if filter == "" {
		return "the bridge's clients read the hello and then idle; Node-RED's connect to its websocket out path (/ws/lab); mosquitto's and mochi's send an MQTT CONNECT and read the CONNACK, without subscribing"
	}
	return fmt.Sprintf("subscribed (-idle-subscribe %q): the bridge's clients read the hello, subscribe and read the ack; mosquitto's and mochi's send CONNECT and SUBSCRIBE and read CONNACK and SUBACK; Node-RED's connect to its websocket out path (/ws/lab), which is its subscription; then all idle", filter)
}

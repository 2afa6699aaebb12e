package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"pibridge/internal/harness"
)

// Scenario 5, one slow consumer among 100: the bridge fans MQTT messages
// out to 100 WebSocket clients; first all read, then one stops reading.
// The other 99's p99 must not move by more than 10 %, and the bridge
// must close the slow one (1008) in bounded time and memory.

const (
	slowClients = 100
	slowPad     = 1024 // payload bytes beyond the seq and send time
)

type slowRun struct {
	p99, p50   time.Duration
	samples    int
	closed     int           // of the 99, connections that ended early
	rssEnd     int64         // at the end of the run
	rssPeak    int64         // sampled every 50 ms
	cpuPct     float64       // the bridge's, publishing and drain
	slowClosed time.Duration // publish start → the bridge counted the slow client closed; 0: never
	closeCode  int           // what the slow client read at last; -1: no close frame
	closeText  string
}

func slowScenario(ctx context.Context, e peerEnv) (harness.Table, error) {
	without, err := slowRunOnce(ctx, e, false)
	if err != nil {
		return harness.Table{}, fmt.Errorf("without the slow client: %w", err)
	}
	with, err := slowRunOnce(ctx, e, true)
	if err != nil {
		return harness.Table{}, fmt.Errorf("with the slow client: %w", err)
	}
	move := float64(with.p99)/float64(without.p99) - 1
	t := harness.Table{Title: fmt.Sprintf("one slow consumer among %d WebSocket clients (MQTT lab/# at %d msg/s, ~%d-byte payloads, %s per run), GOMAXPROCS=%d", slowClients, e.o.slowRate, slowPad+20, e.o.slowWindow, e.d.Procs)}
	t.Rows = append(t.Rows,
		harness.R("the other 99: p50 / p99 without the slow client", harness.US(without.p50)+" / "+harness.US(without.p99)+fmt.Sprintf(" (%d samples)", without.samples), "", ""),
		harness.R("the other 99: p50 / p99 with it", harness.US(with.p50)+" / "+harness.US(with.p99)+fmt.Sprintf(" (%d samples)", with.samples), "", ""),
		harness.R("p99 moved by", fmt.Sprintf("%+.1f %%", 100*move), "≤ 10 %", harness.Verdict(move <= 0.10)),
		harness.R("the other 99: connections lost (without / with)", fmt.Sprintf("%d / %d", without.closed, with.closed), "0", harness.Verdict(without.closed+with.closed == 0)),
		harness.R("bridge CPU without / with", fmt.Sprintf("%.0f %% / %.0f %% of a core", without.cpuPct, with.cpuPct), "", ""),
		harness.R("bridge RSS: end without / peak with / end with", fmt.Sprintf("%s / %s / %s", harness.MiB(without.rssEnd), harness.MiB(with.rssPeak), harness.MiB(with.rssEnd)), "", ""),
	)
	closedIn, verdict := "never (within the run)", "missed"
	if with.slowClosed > 0 {
		closedIn = fmt.Sprintf("%.2f s after publishing began", with.slowClosed.Seconds())
		verdict = harness.Verdict(with.slowClosed < e.o.slowWindow+time.Second)
	}
	t.Rows = append(t.Rows, harness.R("slow client closed by the bridge (pibridge_ws_slow_clients_closed_total)", closedIn, "while publishing lasts", verdict))
	code := "no close frame"
	if with.closeCode >= 0 {
		code = fmt.Sprintf("%d %q", with.closeCode, with.closeText)
	}
	// Informational: a client that never reads cannot be sent anything
	// once its socket is full, a close frame included; the bridge's own
	// count of slow closes above is what shows it acted.
	t.Rows = append(t.Rows, harness.R("close frame the slow client finally read", code, "1008 if it still fits in the full socket, else EOF", ""))
	t.Notes = append(t.Notes,
		"the slow client subscribes, then never reads; the bridge's socket send buffer (128 KiB, set per connection) fills, then its own queue (1 MiB or 4096 messages) overflows and the client is closed; with the socket full, the 1008 close frame usually cannot reach it, so it reads EOF (1006)",
		"latency = receipt − send time carried in the payload (the load generator's monotonic clock); the first second of each run is warm-up",
		"after the run the slow client reads what its socket holds, to see how the bridge closed it",
	)
	return t, nil
}

// slowRunOnce runs a fresh bridge and broker: a backlog left from the
// run before must not spill into this one.
func slowRunOnce(ctx context.Context, e peerEnv, withSlow bool) (slowRun, error) {
	r := slowRun{closeCode: -1}
	s, err := e.start(ctx, subjectBridge, "slow")
	if err != nil {
		return r, err
	}
	defer s.stop()
	var slow *wsReceiver
	if withSlow {
		if slow, err = dialBridgeWith(ctx, wsDialer(), s.wsURL, "lab/#"); err != nil {
			return r, fmt.Errorf("slow client: %w", err)
		}
		defer slow.Close()
	}
	n := slowClients
	if withSlow {
		n--
	}
	rs, err := dialAll(ctx, n, s.dial)
	if err != nil {
		return r, err
	}
	warm := int64(e.o.slowRate) // one second
	f := startFleet(rs, true, warm)
	defer f.stop()
	pub, err := dialPublisher(ctx, s.pubAddr, "publisher")
	if err != nil {
		return r, err
	}
	defer pub.Close()
	if err := f.waitReady(ctx, pub, 30*time.Second); err != nil {
		return r, err
	}
	before, err := slowClosedCount(s.httpURL)
	if err != nil {
		return r, err
	}

	// Watch the bridge's memory and its slow-client counter meanwhile.
	cpu, err := markCPU(s.pid)
	if err != nil {
		return r, err
	}
	t0 := time.Now()
	watchCtx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if m, err := harness.ReadMemory(s.pid); err == nil {
				r.rssPeak = max(r.rssPeak, m.RSS)
			}
			if withSlow && r.slowClosed == 0 {
				if n, err := slowClosedCount(s.httpURL); err == nil && n > before {
					r.slowClosed = time.Since(t0)
				}
			}
			select {
			case <-watchCtx.Done():
				return
			case <-tick.C:
			}
		}
	})
	pad := []byte(strings.Repeat("x", slowPad))
	sent, err := pub.paced(ctx, "lab/slow", e.o.slowRate, e.o.slowWindow+time.Second, 0, pad, false)
	if err == nil {
		f.drain(ctx, int64(sent*n), time.Second, 5*time.Second)
	}
	stopWatch()
	wg.Wait()
	if err != nil {
		return r, fmt.Errorf("publishing: %w", err)
	}
	if u, err := cpu.since(); err == nil {
		r.cpuPct = u.cpuPct
	}
	f.stop()
	r.closed = f.closedEarly()
	if m, err := harness.ReadMemory(s.pid); err == nil {
		r.rssEnd = m.RSS
	}
	all := make([]int, len(rs))
	for i := range all {
		all[i] = i
	}
	if !withSlow {
		all = all[1:] // the same 99 as with the slow client
	}
	d := f.latencies(all...)
	r.p50, r.p99, r.samples = d.Q(.5), d.Q(.99), len(d)
	if len(d) == 0 {
		return r, errors.New("no samples arrived")
	}
	if withSlow {
		r.closeCode, r.closeText = readToClose(slow, 10*time.Second)
	}
	return r, nil
}

// readToClose reads until the connection ends and returns the close code
// received, -1 when it ended without a close frame.
func readToClose(r *wsReceiver, limit time.Duration) (int, string) {
	_ = r.c.SetReadDeadline(time.Now().Add(limit))
	for {
		if _, _, err := r.c.NextReader(); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, ce.Text
			}
			return -1, err.Error()
		}
	}
}

// slowClosedCount reads pibridge_ws_slow_clients_closed_total.
func slowClosedCount(httpURL string) (int64, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(httpURL + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "pibridge_ws_slow_clients_closed_total "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int64(f), err
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("/metrics has no pibridge_ws_slow_clients_closed_total")
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"pibridge/internal/harness"
)

// Scenario 4 with readings as the source (the bridge only: the peers have
// no GPIO): edges injected on fanReadInputs simulated inputs through the
// sim control socket (PIBRIDGE_SIM_CONTROL), round robin, paced at the
// cell's rate, into N WebSocket clients that count the reading frames.
//
// Readings are state, not events: a client that falls behind gets the
// newest value of each signal (its mailbox coalesces per signal), and two
// datagrams for one input that arrive before its goroutine reads the pin
// merge into one edge (as on hardware). So the rows report the readings
// the core emitted (the span of seqs the clients saw), the share of those
// each client received on average, and the deliveries per second.

const fanReadInputs = 24 // GPIO4..GPIO27

func fanReadConfig(maxClients int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `device: {id: bench, name: "pibridge bench"}
board: sim
http: {listen: "127.0.0.1:0", max_clients: %d}
mqtt: {broker: embedded, embedded_listen: "127.0.0.1:0", homeassistant: {discovery: false}}
inputs:
`, maxClients)
	for i := range fanReadInputs {
		fmt.Fprintf(&b, "  - {name: in%d, pin: GPIO%d, pull: down, debounce: 0s}\n", i, 4+i)
	}
	return b.String()
}

type fanReadCell struct {
	rate, clients int
	skipped       bool
	err           string
	sent          int    // datagrams
	emitted       uint64 // readings the core emitted (seq span seen)
	received      int64
	closed        int
	window        time.Duration
	use           usage
}

// fanoutReadingRows runs the readings grid against the bridge and returns
// its rows for the fan-out table.
func fanoutReadingRows(ctx context.Context, e peerEnv) ([]harness.Row, error) {
	var rows []harness.Row
	for _, r := range e.o.fanRates {
		for _, n := range e.o.fanClients {
			c := fanReadCell{rate: r, clients: n}
			head := fmt.Sprintf("readings: %s × %d client(s): pibridge", rate(float64(r)), n)
			if e.o.fanMax > 0 && r*n > e.o.fanMax {
				rows = append(rows, harness.R(head, fmt.Sprintf("skipped: %s deliveries offered > -fanout-max %d", rate(float64(r*n)), e.o.fanMax), "", ""))
				continue
			}
			if err := fanReadCellRun(ctx, e, &c); err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				rows = append(rows, harness.R(head, "failed: "+err.Error(), "", "missed"))
				continue
			}
			share := 0.0
			if c.emitted > 0 {
				share = float64(c.received) / float64(c.emitted*uint64(c.clients))
			}
			v := fmt.Sprintf("%d datagrams → %d readings emitted; %.1f %% of them delivered per client, %s, CPU %.0f %%, RSS %s",
				c.sent, c.emitted, 100*share, rate(float64(c.received)/c.window.Seconds()), c.use.cpuPct, harness.MiB(c.use.rss))
			if c.closed > 0 {
				v += fmt.Sprintf(", %d closed", c.closed)
			}
			rows = append(rows, harness.R(head, v, "", ""))
		}
	}
	return rows, nil
}

func fanReadCellRun(ctx context.Context, e peerEnv, c *fanReadCell) error {
	tag := fmt.Sprintf("fanread-%d-%d", c.rate, c.clients)
	dm, sc, stop, err := simControlled(ctx, e.d, tag, tag, fanReadConfig(c.clients+16))
	if err != nil {
		return err
	}
	defer stop()
	conns := make([]*websocket.Conn, 0, c.clients)
	defer func() {
		for _, conn := range conns {
			closeNow(conn.NetConn())
		}
	}()
	for range c.clients {
		conn, err := dialBridgeIdle(ctx, dm.WSURL)
		if err != nil {
			return err
		}
		conns = append(conns, conn)
	}
	// Each client counts reading frames and the seqs it saw.
	var received atomic.Int64
	var mu sync.Mutex
	minSeq, maxSeq := ^uint64(0), uint64(0)
	var closed atomic.Int64
	var stopping atomic.Bool
	var wg sync.WaitGroup
	for _, conn := range conns {
		wg.Go(func() {
			lo, hi := ^uint64(0), uint64(0)
			defer func() {
				mu.Lock()
				minSeq, maxSeq = min(minSeq, lo), max(maxSeq, hi)
				mu.Unlock()
			}()
			var buf bytes.Buffer
			for {
				_, rd, err := conn.NextReader()
				if err != nil {
					if !stopping.Load() {
						closed.Add(1)
					}
					return
				}
				buf.Reset()
				if _, err := buf.ReadFrom(rd); err != nil {
					continue
				}
				b := buf.Bytes()
				if !bytes.HasPrefix(b, []byte(`{"type":"reading"`)) {
					continue
				}
				i := bytes.LastIndex(b, []byte(`"seq":`))
				if i < 0 {
					continue
				}
				seq, err := strconv.ParseUint(string(bytes.TrimSuffix(b[i+6:], []byte("}"))), 10, 64)
				if err != nil {
					continue
				}
				lo, hi = min(lo, seq), max(hi, seq)
				received.Add(1)
			}
		})
	}
	m, err := markCPU(dm.PID)
	if err != nil {
		return err
	}
	// Paced in 1 ms ticks: rate/1000 datagrams per tick, round robin,
	// each flipping its input.
	var msgs [fanReadInputs][2][]byte
	for i := range fanReadInputs {
		msgs[i][0] = datagram("in"+strconv.Itoa(i), false)
		msgs[i][1] = datagram("in"+strconv.Itoa(i), true)
	}
	var level [fanReadInputs]int
	t0 := time.Now()
	total := int(float64(c.rate) * e.o.fanWindow.Seconds())
	for c.sent < total {
		due := min(total, int(float64(c.rate)*time.Since(t0).Seconds())+1)
		for ; c.sent < due; c.sent++ {
			i := c.sent % fanReadInputs
			level[i] ^= 1
			if _, err := sc.c.Write(msgs[i][level[i]]); err != nil {
				return fmt.Errorf("sim control write: %w", err)
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(time.Millisecond) // pacing, not synchronisation
	}
	// Drain: until nothing arrived for 0.5 s, or 5 s.
	last, quietSince, limit := received.Load(), time.Now(), time.Now().Add(5*time.Second)
	for time.Now().Before(limit) && time.Since(quietSince) < 500*time.Millisecond {
		time.Sleep(50 * time.Millisecond) // polling a counter
		if n := received.Load(); n != last {
			last, quietSince = n, time.Now()
		}
	}
	// Charged up to the last arrival seen (50 ms granularity), not the
	// quiet half second that proved it was the last.
	c.window = quietSince.Sub(t0)
	if c.use, err = m.since(); err != nil {
		return err
	}
	stopping.Store(true)
	for _, conn := range conns {
		closeNow(conn.NetConn())
	}
	conns = nil
	wg.Wait()
	c.received, c.closed = received.Load(), int(closed.Load())
	if maxSeq >= minSeq && maxSeq > 0 {
		c.emitted = maxSeq - minSeq + 1
	}
	return nil
}

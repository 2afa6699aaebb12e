package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"pibridge/internal/harness"
)

// Scenario 4, fan-out sweep: one publisher at a paced rate into N
// subscribers of lab/#, through each subject: the bridge (MQTT in via
// bridge_allow → WebSocket), Node-RED (mqtt in → websocket out),
// mosquitto's and mochi's WebSocket listeners (MQTT over WebSocket).

type fanCell struct {
	rate, clients int
	skipped       bool
	err           string // the cell failed: why
	sent          int
	received      int64
	closed        int           // subscribers whose connection ended during the cell
	window        time.Duration // publish start → drain end
	use           usage
}

func (c fanCell) share() float64 {
	if c.sent == 0 {
		return 0
	}
	return float64(c.received) / float64(c.sent*c.clients)
}

func (c fanCell) perSec() float64 { return float64(c.received) / c.window.Seconds() }

// cpuPerFrame is the subject's CPU time over the cell ÷ the frames its
// subscribers received.
func (c fanCell) cpuPerFrame() string {
	if c.received == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f µs", c.cpuFrame()/1e3)
}

func (c fanCell) cpuFrame() float64 { return float64(c.use.cpu) / float64(max(c.received, 1)) }

// medianCells picks, for each cell, the round with the median CPU per
// frame (the lower middle one of an even count).
func medianCells(rounds [][]fanCell) []fanCell {
	out := slices.Clone(rounds[0])
	for i := range out {
		col := make([]fanCell, 0, len(rounds))
		for _, r := range rounds {
			col = append(col, r[i])
		}
		slices.SortFunc(col, func(a, b fanCell) int { return cmp.Compare(a.cpuFrame(), b.cpuFrame()) })
		out[i] = col[(len(col)-1)/2]
	}
	return out
}

// syscallsPerMessage is the subject's read and write system calls over
// the cell ÷ the messages published.
func (c fanCell) syscallsPerMessage() string {
	if c.sent == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f r + %.2f w", float64(c.use.syscr)/float64(c.sent), float64(c.use.syscw)/float64(c.sent))
}

func fanoutScenario(ctx context.Context, e peerEnv) ([]harness.Table, error) {
	names := subjectNames(e.o, true)
	runs := map[string][][]fanCell{}
	var order []string
	// Rounds take turns over the subjects, so that a machine whose load
	// drifts charges every subject alike; each cell reports its median
	// round by CPU per frame.
	for round := range e.o.fanRepeat {
		for _, name := range names {
			cs, sname, err := fanoutSubject(ctx, e, name)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			runs[sname] = append(runs[sname], cs)
			if round == 0 {
				order = append(order, sname)
			}
		}
	}
	cells := map[string][]fanCell{}
	for name, rs := range runs {
		cells[name] = medianCells(rs)
	}
	ours := order[0]
	t := harness.Table{Title: fmt.Sprintf("fan-out: MQTT publisher → subject → N WebSocket subscribers of lab/#, %s per cell, GOMAXPROCS=%d", e.o.fanWindow, e.d.Procs)}
	if e.o.fanEach {
		t.Notes = append(t.Notes, "the publisher wrote each message in its own write(2) (-fanout-flush-each): one TCP segment per message into the subject, or into the bridge's broker")
	}
	if e.o.fanRepeat > 1 {
		t.Notes = append(t.Notes, fmt.Sprintf("%d rounds, taking turns over the subjects; each row is the round with the median CPU per frame", e.o.fanRepeat))
	}
	for i := range cells[ours] {
		c := cells[ours][i]
		head := fmt.Sprintf("%s × %d client(s)", rate(float64(c.rate)), c.clients)
		if c.skipped {
			t.Rows = append(t.Rows, harness.R(head, fmt.Sprintf("skipped: %s deliveries offered > -fanout-max %d", rate(float64(c.rate*c.clients)), e.o.fanMax), "", ""))
			continue
		}
		for _, name := range order {
			p := cells[name][i]
			if p.err != "" {
				t.Rows = append(t.Rows, harness.R(head+": "+name, "failed: "+p.err, "", "missed"))
				continue
			}
			v := fmt.Sprintf("%.1f %% delivered, %s, CPU %.0f %%, RSS %s; CPU per frame %s; syscalls per message %s", 100*p.share(), rate(p.perSec()), p.use.cpuPct, harness.MiB(p.use.rss), p.cpuPerFrame(), p.syscallsPerMessage())
			if p.closed > 0 {
				v += fmt.Sprintf(", %d closed", p.closed)
			}
			if name != ours && c.err == "" {
				v += fmt.Sprintf(" — pibridge delivers %s, uses %s the CPU", ratio(c.perSec(), p.perSec()), ratio(c.use.cpuPct, p.use.cpuPct))
			}
			t.Rows = append(t.Rows, harness.R(head+": "+name, v, "", ""))
		}
		if c.err != "" || c.received == 0 {
			continue
		}
		// The bridge with its embedded broker is compared as the bridge is:
		// it is the bridge, with mosquitto-ws's broker hops.
		for _, us := range order {
			if us != ours && !strings.HasPrefix(us, "pibridge (its embedded") {
				continue
			}
			c := cells[us][i]
			if c.err != "" || c.received == 0 {
				continue
			}
			for _, name := range order[1:] {
				p := cells[name][i]
				if name == us || p.err != "" || p.received == 0 {
					continue
				}
				target, verdict := "", ""
				switch {
				case strings.HasPrefix(name, "mosquitto"):
					target, verdict = "≤ 1×", harness.Verdict(c.cpuFrame() <= p.cpuFrame())
				case strings.HasPrefix(name, "Node-RED"):
					target, verdict = "≤ 0.5×", harness.Verdict(c.cpuFrame() <= p.cpuFrame()/2)
				}
				t.Rows = append(t.Rows, harness.R(head+": CPU per frame, "+us+" ÷ "+name, ratio(c.cpuFrame(), p.cpuFrame()), target, verdict))
			}
		}
	}
	if ours == subjectBridge {
		rows, err := fanoutReadingRows(ctx, e)
		if err != nil {
			return nil, fmt.Errorf("readings: %w", err)
		}
		t.Rows = append(t.Rows, rows...)
		t.Notes = append(t.Notes, fmt.Sprintf("readings rows (pibridge only): the cell's rate in datagrams/s to the sim control socket, round robin over %d sim inputs (debounce 0), into N WebSocket clients; readings emitted = the span of seqs the clients saw (two datagrams for one input before its goroutine reads the pin merge into one edge, as on hardware); delivered = received ÷ (emitted × clients): a client that falls behind gets the newest value per signal (coalescing, by design), so below 100 %% is not loss of state; deliveries/s = received ÷ (publishing start → last arrival)", fanReadInputs))
	}
	// The targets: at 100 clients, ≥ 500k deliveries/s on one core and
	// ≥ 5× Node-RED. Each subject's figure is its best cell at 100 clients.
	best := func(name string) (float64, bool) {
		v, ok := 0.0, false
		for _, c := range cells[name] {
			if c.clients == 100 && !c.skipped && c.err == "" {
				v, ok = max(v, c.perSec()), true
			}
		}
		return v, ok
	}
	if b, ok := best(ours); ok {
		t.Rows = append(t.Rows, harness.R("pibridge: most deliveries/s at 100 clients (any cell)", rate(b), "≥ 500k/s on one core", harness.Verdict(b >= 500_000)))
		for _, name := range order[1:] {
			nb, _ := best(name)
			target, verdict := "", ""
			if name == nodeREDName(order) {
				target, verdict = "≥ 5×", harness.Verdict(nb > 0 && b >= 5*nb || nb == 0 && b > 0)
			}
			t.Rows = append(t.Rows, harness.R(fmt.Sprintf("%s: most deliveries/s at 100 clients; pibridge ÷ it", name), rate(nb)+"; "+ratio(b, nb), target, verdict))
		}
	} else {
		t.Rows = append(t.Rows, harness.R("pibridge: most deliveries/s at 100 clients", "no 100-client cell in -fanout-clients", "≥ 500k/s on one core", "not measured"))
	}
	t.Notes = append(t.Notes,
		"delivered = samples received ÷ (sent × clients) by the end of a drain (all arrived, none for 0.5 s, or 5 s); deliveries/s = samples received ÷ (publishing window + that drain): a subject that falls behind is charged the time it took",
		"CPU per frame: the subject's utime+stime over publishing and drain (10 ms ticks) ÷ frames received; syscalls per message: syscr and syscw of /proc/<pid>/io over the same span ÷ messages published (reads include the MQTT input, writes every frame out); the kernel counts read/readv/write/writev and the like there, not sendto/recvfrom, epoll or futex: mosquitto's frames go out with sendto and show as 0 w (strace -c -f -p <pid> counts every call)",
		"CPU % and RSS: the subject's process (utime+stime over publishing and drain; RSS at the end of the cell); for pibridge and Node-RED the feeding mosquitto runs on the load generator's core and is not counted",
		"mosquitto as the subject keeps its default max_queued_messages (1000 per client): beyond that it drops; the bridge closes a subscriber that falls behind (1008) — \"closed\" counts them",
		"the load generator (one publisher, every subscriber) shares its core with the feeding broker: cells beyond a few hundred thousand deliveries/s may measure the client, not the subject",
	)
	return []harness.Table{t}, nil
}

func nodeREDName(order []string) string {
	for _, n := range order {
		if len(n) > 8 && n[:8] == "Node-RED" {
			return n
		}
	}
	return ""
}

// fanoutSubject runs every cell of the grid against one subject, started
// afresh for each cell: a backlog the last cell left in the broker or the
// subject must not spill into the next, and each cell's RSS is its own.
// A cell that fails is reported in the table, not fatal to the rest.
func fanoutSubject(ctx context.Context, e peerEnv, name string) ([]fanCell, string, error) {
	// The bridge's default max_clients (256) is below the largest grid's 1,000.
	e.maxClients = maxOf(e.o.fanClients) + 16
	var out []fanCell
	sname := name
	for _, r := range e.o.fanRates {
		for _, n := range e.o.fanClients {
			c := fanCell{rate: r, clients: n}
			if e.o.fanMax > 0 && r*n > e.o.fanMax {
				c.skipped = true
				out = append(out, c)
				continue
			}
			s, err := e.start(ctx, name, fmt.Sprintf("fanout-%s-%d-%d", name, r, n))
			if err != nil {
				return nil, sname, err
			}
			sname = s.name
			err = fanoutCell(ctx, e, s, &c)
			s.stop()
			if ctx.Err() != nil {
				return nil, sname, ctx.Err()
			}
			if err != nil {
				c.err = err.Error()
			}
			out = append(out, c)
		}
	}
	return out, sname, nil
}

func maxOf(xs []int) int {
	m := 0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

func fanoutCell(ctx context.Context, e peerEnv, s *subject, c *fanCell) error {
	rs, err := dialAll(ctx, c.clients, s.dial)
	if err != nil {
		return err
	}
	f := startFleet(rs, false, 0)
	defer f.stop()
	pub, err := dialPublisher(ctx, s.pubAddr, "publisher")
	if err != nil {
		return err
	}
	defer pub.Close()
	if err := f.waitReady(ctx, pub, 30*time.Second); err != nil {
		return err
	}
	m, err := markCPU(s.pid)
	if err != nil {
		return err
	}
	t0 := time.Now()
	c.sent, err = pub.paced(ctx, "lab/fan", c.rate, e.o.fanWindow, 0, nil, e.o.fanEach)
	if err != nil {
		return fmt.Errorf("publishing: %w", err)
	}
	f.drain(ctx, int64(c.sent*c.clients), 500*time.Millisecond, 5*time.Second)
	c.window = time.Since(t0)
	if c.use, err = m.since(); err != nil {
		return err
	}
	c.received = f.total()
	f.stop()
	c.closed = f.closedEarly()
	return ctx.Err()
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"pibridge/internal/harness"
)

// --- scenario 7: readings through the disk outbox to MQTT at QoS 1 -------
//
// The bridge publishes to an external mosquitto at QoS 1 through its disk
// outbox (bbolt under state_dir); readings come from edges injected on
// outboxInputs simulated inputs through the sim control socket, round
// robin. A plain paho subscriber on mosquitto counts what arrives and
// checks the seqs; the figure is what arrives per second over -window.
//
// Two ways to inject (-inject). Windowed: at most outboxWindow
// datagrams sent and not yet arrived at the subscriber. As the window is
// smaller than the number of inputs, an input is flipped again only after
// its previous reading went all the way through, so no two edges can
// merge and every datagram is exactly one reading; the price is that the
// window over the end-to-end latency bounds the rate. Flood (the default):
// datagrams as fast as the socket takes them; the bridge's sim control
// goroutine then flips each input many times before the input's
// goroutine looks, most edges merge, and the readings emitted are what
// the scheduler lets through.

const (
	outboxInputs = 24 // GPIO4..GPIO27
	outboxWindow = 20 // < outboxInputs: no edge can merge
)

func outboxConfig(broker string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `device: {id: bench, name: "pibridge bench"}
board: sim
http: {listen: "127.0.0.1:0"}
mqtt: {broker: %q, qos: 1, topic_prefix: bench, queue_max: 1000000, homeassistant: {discovery: false}}
inputs:
`, "tcp://"+broker)
	for i := range outboxInputs {
		fmt.Fprintf(&b, "  - {name: in%d, pin: GPIO%d, pull: down, debounce: 0s}\n", i, 4+i)
	}
	return b.String()
}

// arrivals counts the readings the subscriber gets, in the order mosquitto
// delivers them (paho calls the handler in order).
type arrivals struct {
	n        atomic.Uint64
	progress chan struct{} // a token after each arrival, for the windowed generator
	mu       sync.Mutex
	last     uint64 // seq of the last reading
	gaps     uint64 // readings whose seq was not last+1: lost or reordered
	dups     uint64 // seq at or below last: a QoS 1 duplicate
	other    uint64 // payloads without a seq
}

func (a *arrivals) handle(_ paho.Client, m paho.Message) {
	if m.Retained() || !strings.HasPrefix(m.Topic(), "bench/bench/in") {
		return // states from before the subscription; status, meta
	}
	_, after, ok := bytes.Cut(m.Payload(), []byte(`"seq":`))
	seq, err := strconv.ParseUint(string(bytes.TrimSuffix(after, []byte("}"))), 10, 64)
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case !ok || err != nil:
		a.other++
		return
	case a.last == 0:
	case seq <= a.last:
		a.dups++
		return
	case seq != a.last+1:
		a.gaps++
	}
	a.last = seq
	a.n.Add(1)
	select {
	case a.progress <- struct{}{}:
	default:
	}
}

func (a *arrivals) seqs() (last, gaps, dups, other uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last, a.gaps, a.dups, a.other
}

func subscribe(ctx context.Context, addr, filter string, h paho.MessageHandler) (paho.Client, error) {
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).
		SetClientID(fmt.Sprintf("bench-sub-%d", time.Now().UnixNano())).
		SetConnectTimeout(5 * time.Second).SetAutoReconnect(false).
		SetOrderMatters(true) // in order, so that seq gaps mean something
	c := paho.NewClient(opts)
	if err := waitToken(ctx, c.Connect()); err != nil {
		return nil, fmt.Errorf("subscriber connect: %w", err)
	}
	if err := waitToken(ctx, c.Subscribe(filter, 1, h)); err != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("subscribe %s: %w", filter, err)
	}
	return c, nil
}

func waitToken(ctx context.Context, t paho.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-time.After(5 * time.Second):
		return fmt.Errorf("no answer within 5 s")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// scrape reads the unlabelled samples of /metrics.
func scrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			out[name] = f
		}
	}
	return out, sc.Err()
}

// diskWrites is write_bytes from /proc/<pid>/io: what the process sent
// to the storage layer (the outbox's bbolt commits).
func diskWrites(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes:"); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("no write_bytes in /proc/%d/io", pid)
}

// peakRSS is VmHWM from /proc/<pid>/status.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

func outboxScenario(ctx context.Context, d harness.DaemonSpec, o options) (harness.Table, error) {
	mdir, err := os.MkdirTemp(d.Scratch, "mosquitto-")
	if err != nil {
		return harness.Table{}, err
	}
	// Started from the pinned load generator, mosquitto inherits its cores.
	mosq, err := harness.StartMosquitto(mdir, harness.MosquittoOptions{})
	if err != nil {
		return harness.Table{}, err
	}
	defer mosq.Stop()
	got := arrivals{progress: make(chan struct{}, 1)}
	sub, err := subscribe(ctx, mosq.Addr, "bench/bench/+", got.handle)
	if err != nil {
		return harness.Table{}, err
	}
	defer sub.Disconnect(100)

	dm, sc, stopBridge, err := simControlled(ctx, d, "outbox", "outbox", outboxConfig(mosq.Addr))
	if err != nil {
		return harness.Table{}, err
	}
	defer stopBridge()

	// The initial readings (one per input) first, so that the window
	// counts from a quiet start.
	for deadline := time.Now().Add(10 * time.Second); got.n.Load() < outboxInputs; {
		if time.Now().After(deadline) {
			return harness.Table{}, fmt.Errorf("the initial readings did not arrive (%d of %d); log: %s", got.n.Load(), outboxInputs, harness.Tail(dm.LogPath))
		}
		if err := harness.Sleep(ctx, 5*time.Millisecond); err != nil { // polling, not synchronising
			return harness.Table{}, err
		}
	}

	// The generator: datagrams round robin over the inputs, each flipping
	// its input; windowed, or flooding as fast as the socket takes them
	// (a full socket buffer blocks the write: the bridge's sim control
	// goroutine paces it).
	var sent atomic.Uint64
	gctx, stopGen := context.WithCancel(ctx)
	genDone := make(chan error, 1)
	go func() {
		var msgs [outboxInputs][2][]byte
		for i := range outboxInputs {
			msgs[i][0] = datagram("in"+strconv.Itoa(i), false)
			msgs[i][1] = datagram("in"+strconv.Itoa(i), true)
		}
		var level [outboxInputs]int
		base := int64(got.n.Load())
		for n := 0; ; n++ {
			if o.inject == "windowed" {
				for int64(n)-(int64(got.n.Load())-base) >= outboxWindow {
					select {
					case <-got.progress:
					case <-gctx.Done():
						genDone <- nil
						return
					case <-time.After(5 * time.Second):
						genDone <- fmt.Errorf("datagram %d: the reading of datagram %d has not arrived within 5 s", n, int64(got.n.Load())-base)
						return
					}
				}
			}
			i := n % outboxInputs
			level[i] ^= 1
			if _, err := sc.c.Write(msgs[i][level[i]]); err != nil {
				genDone <- fmt.Errorf("sim control write: %w", err)
				return
			}
			sent.Add(1)
			if n%256 == 0 && gctx.Err() != nil {
				genDone <- nil
				return
			}
		}
	}()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		stopGen()
		return <-genDone
	}
	defer stop()

	if err := harness.Sleep(ctx, 2*time.Second); err != nil { // warm-up
		return harness.Table{}, err
	}
	m0, err := scrape(dm.HTTPURL)
	if err != nil {
		return harness.Table{}, err
	}
	a0, s0 := got.n.Load(), sent.Load()
	c0, err := harness.CPUTime(dm.PID)
	if err != nil {
		return harness.Table{}, err
	}
	mq0, err1 := harness.CPUTime(mosq.PID)
	me0, err2 := harness.CPUTime(os.Getpid())
	w0, err3 := diskWrites(dm.PID)
	_, sw0, err4 := harness.Syscalls(dm.PID)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return harness.Table{}, err
	}
	t0 := time.Now()
	if err := harness.Sleep(ctx, o.window); err != nil {
		return harness.Table{}, err
	}
	a1, s1 := got.n.Load(), sent.Load()
	window := time.Since(t0)
	c1, err := harness.CPUTime(dm.PID)
	if err != nil {
		return harness.Table{}, err
	}
	mq1, err1 := harness.CPUTime(mosq.PID)
	me1, err2 := harness.CPUTime(os.Getpid())
	w1, err3 := diskWrites(dm.PID)
	_, sw1, err4 := harness.Syscalls(dm.PID)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return harness.Table{}, err
	}
	m1, err := scrape(dm.HTTPURL)
	if err != nil {
		return harness.Table{}, err
	}
	mem, err := harness.ReadMemory(dm.PID)
	if err != nil {
		return harness.Table{}, err
	}
	if err := stop(); err != nil {
		return harness.Table{}, fmt.Errorf("generator: %w; log: %s", err, harness.Tail(dm.LogPath))
	}

	// Drain: everything emitted is to arrive, once, in seq order.
	drainStart := time.Now()
	var mEnd map[string]float64
	drained := false
	for time.Since(drainStart) < 60*time.Second {
		if mEnd, err = scrape(dm.HTTPURL); err != nil {
			return harness.Table{}, err
		}
		if mEnd["pibridge_mqtt_outbox_readings"] == 0 && got.n.Load() >= uint64(mEnd["pibridge_core_readings_emitted_total"])-outboxInputs {
			drained = true
			break
		}
		if err := harness.Sleep(ctx, 20*time.Millisecond); err != nil { // polling the daemon, not synchronising
			return harness.Table{}, err
		}
	}
	drain := time.Since(drainStart)
	hwm, err := peakRSS(dm.PID)
	if err != nil {
		return harness.Table{}, err
	}
	last, gaps, dups, other := got.seqs()

	rate := func(a, b float64) float64 { return (b - a) / window.Seconds() }
	arrived := float64(a1-a0) / window.Seconds()
	emitted := rate(m0["pibridge_core_readings_emitted_total"], m1["pibridge_core_readings_emitted_total"])
	published := rate(m0["pibridge_mqtt_published_total"], m1["pibridge_mqtt_published_total"])
	datagrams := float64(s1-s0) / window.Seconds()
	pct := func(d time.Duration) float64 { return 100 * float64(d) / float64(window) }
	cpuPct := pct(c1 - c0)
	pace := fmt.Sprintf("windowed (≤ %d in flight end to end)", outboxWindow)
	if o.inject == "flood" {
		pace = "flood (as fast as the socket takes them)"
	}

	t := harness.Table{Title: fmt.Sprintf("readings → disk outbox → mosquitto at QoS 1 → subscriber, %d sim inputs, injection %s, GOMAXPROCS=%d", outboxInputs, pace, d.Procs)}
	t.Rows = append(t.Rows,
		harness.R(fmt.Sprintf("readings/s arrived at the subscriber over %s", window.Round(time.Millisecond)), fmt.Sprintf("%.0f", arrived), "≥ 20k", harness.Verdict(arrived >= 20_000)),
		harness.R("readings/s emitted by the core (/metrics)", fmt.Sprintf("%.0f", emitted), "", ""),
		harness.R("readings/s published, acknowledged (/metrics)", fmt.Sprintf("%.0f", published), "", ""),
		harness.R("datagrams/s sent to the sim control socket", fmt.Sprintf("%.0f", datagrams), "", ""),
		harness.R("outbox depth at window start → end", fmt.Sprintf("%.0f → %.0f", m0["pibridge_mqtt_outbox_readings"], m1["pibridge_mqtt_outbox_readings"]), "", ""),
		harness.R("outbox dropped (total at window end)", fmt.Sprintf("%.0f", m1["pibridge_mqtt_outbox_dropped_total"]), "0", harness.Verdict(m1["pibridge_mqtt_outbox_dropped_total"] == 0)),
		harness.R("daemon disk writes (/proc/pid/io write_bytes)", fmt.Sprintf("%.2f MiB/s", float64(w1-w0)/(1<<20)/window.Seconds()), "", ""),
		harness.R("daemon write system calls per reading emitted (/proc/pid/io syscw: the outbox's log, MQTT, bbolt)",
			fmt.Sprintf("%.2f", float64(sw1-sw0)/max(m1["pibridge_core_readings_emitted_total"]-m0["pibridge_core_readings_emitted_total"], 1)), "", ""),
		harness.R("daemon CPU (utime+stime)", fmt.Sprintf("%.1f %% of a core", cpuPct), "", ""),
		harness.R("mosquitto CPU / load generator CPU (generator + subscriber)", fmt.Sprintf("%.1f %% / %.1f %% of a core", pct(mq1-mq0), pct(me1-me0)), "", ""),
		harness.R("daemon RSS at window end / peak (VmHWM)", harness.MiB(mem.RSS)+" / "+harness.MiB(hwm), "", ""),
		harness.R("drain after the generator stopped", drainVerdict(drained, drain), "", ""),
		harness.R("seq: gaps / duplicates / unparsable payloads (whole run)", fmt.Sprintf("%d / %d / %d (last seq %d)", gaps, dups, other, last), "0 gaps", harness.Verdict(gaps == 0)),
	)
	t.Notes = append(t.Notes,
		"readings/s = live (not retained) messages on bench/bench/+ counted by a paho subscriber (QoS 1, in order) on the same mosquitto, over the window after a 2 s warm-up",
		"mosquitto 2.0 on loopback, max_queued_messages and max_inflight_messages 0 (unlimited), started from the load generator and so on its core(s); the bridge keeps at most 20 QoS 1 publishes unacknowledged (mqtt.maxInFlight)",
		fmt.Sprintf("each datagram flips one of %d inputs (debounce 0), round robin; two datagrams for one input that arrive before its goroutine reads the pin merge into one edge, as on hardware (gpio's pushEdge keeps one pending edge), so emitted ≤ datagrams", outboxInputs),
	)
	if o.inject == "flood" {
		t.Notes = append(t.Notes,
			"flood: the generator writes as fast as the socket takes datagrams; the bridge spends much of its CPU reading datagrams whose edges then merge (datagrams ≫ emitted); a backlog in the outbox means publishing was the limit at that moment, a flat zero that production was",
			fmt.Sprintf("publishing keeps at most 20 QoS 1 publishes unacknowledged, so readings/s ≤ 20 ÷ the PUBACK round trip: %.0f/s published means %s per round trip if the window stayed full", published, time.Duration(20*float64(time.Second)/max(published, 1)).Round(time.Microsecond)),
		)
	} else {
		t.Notes = append(t.Notes, fmt.Sprintf("windowed: at most %d datagrams sent and not yet arrived at the subscriber (fewer than the %d inputs, so no edge merges: emitted = datagrams); readings/s ≈ %d ÷ the end-to-end latency (datagram → input → core → outbox → mosquitto → subscriber) unless the daemon's CPU saturates first", outboxWindow, outboxInputs, outboxWindow))
	}
	return t, nil
}

func drainVerdict(ok bool, d time.Duration) string {
	if ok {
		return fmt.Sprintf("all arrived in %s", d.Round(time.Millisecond))
	}
	return fmt.Sprintf("NOT drained after %s", d.Round(time.Second))
}

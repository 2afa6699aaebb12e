package mqtt

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	pibridge "pibridge"
	"pibridge/internal/testkit"
)

// Integration tests against a real mosquitto that is killed and started
// again, and against a bridge process that is killed: nothing the
// bridge accepted may go missing. They count every seq through an
// independent subscriber with a persistent session.

// seqWatcher counts the seqs of the readings it receives, through a
// persistent session (clean session off, fixed id) that paho reconnects
// every 50 ms, so that the broker keeps messages for it while it is away.
type seqWatcher struct {
	t      *testing.T
	client paho.Client
	mu     sync.Mutex
	counts map[uint64]int
	first  map[uint64]time.Time // when each seq first arrived
	online bool
	change chan struct{}
}

func watchSeqs(t *testing.T, addr, id, filter string) *seqWatcher {
	t.Helper()
	w := &seqWatcher{t: t, counts: map[uint64]int{}, first: map[uint64]time.Time{}, change: make(chan struct{}, 1)}
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetCleanSession(false).
		SetAutoReconnect(true).SetMaxReconnectInterval(50 * time.Millisecond).
		SetConnectTimeout(2 * time.Second).SetKeepAlive(30 * time.Second).
		// Messages of the restored session arrive before any Subscribe.
		SetDefaultPublishHandler(w.onMessage).
		SetOnConnectHandler(func(paho.Client) { w.setOnline(true) }).
		SetConnectionLostHandler(func(paho.Client, error) { w.setOnline(false) })
	w.client = paho.NewClient(opts)
	mustToken(t, w.client.Connect(), "seq watcher connect")
	mustToken(t, w.client.Subscribe(filter, 1, nil), "seq watcher subscribe")
	t.Cleanup(func() { w.client.Disconnect(100) })
	return w
}

func (w *seqWatcher) setOnline(up bool) {
	w.mu.Lock()
	w.online = up
	w.mu.Unlock()
	signal(w.change)
}

func (w *seqWatcher) onMessage(_ paho.Client, m paho.Message) {
	var r struct{ Seq uint64 }
	if err := json.Unmarshal(m.Payload(), &r); err != nil || r.Seq == 0 {
		return // status, meta: not readings
	}
	now := time.Now()
	w.mu.Lock()
	if w.counts[r.Seq] == 0 {
		w.first[r.Seq] = now
	}
	w.counts[r.Seq]++
	w.mu.Unlock()
	signal(w.change)
}

// waitFor waits until cond holds, evaluated under the watcher's lock.
func (w *seqWatcher) waitFor(what string, cond func(w *seqWatcher) bool) {
	w.t.Helper()
	timeout := time.NewTimer(waitLong)
	defer timeout.Stop()
	for {
		w.mu.Lock()
		ok := cond(w)
		w.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-w.change:
		case <-timeout.C:
			w.t.Fatalf("timed out waiting for %s; %s", what, w.summary())
		}
	}
}

// hasAll reports whether every seq in [from, to] has arrived. Locked.
func (w *seqWatcher) hasAll(from, to uint64) bool {
	for s := from; s <= to; s++ {
		if w.counts[s] == 0 {
			return false
		}
	}
	return true
}

// missing returns the seqs in [from, to] that never arrived.
func (w *seqWatcher) missing(from, to uint64) []uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []uint64
	for s := from; s <= to; s++ {
		if w.counts[s] == 0 {
			out = append(out, s)
		}
	}
	return out
}

// duplicates counts the extra copies received.
func (w *seqWatcher) duplicates() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, c := range w.counts {
		n += c - 1
	}
	return n
}

func (w *seqWatcher) summary() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	seqs := make([]uint64, 0, len(w.counts))
	for s := range w.counts {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	if len(seqs) == 0 {
		return fmt.Sprintf("nothing received, online=%v", w.online)
	}
	return fmt.Sprintf("%d seqs received (%d..%d), online=%v", len(seqs), seqs[0], seqs[len(seqs)-1], w.online)
}

// emitter emits readings of "cpu" at a steady rate until stopped.
type emitter struct {
	stop chan struct{}
	done chan struct{}
}

func startEmitter(core *pibridge.Core, every time.Duration) *emitter {
	e := &emitter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(e.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-e.stop:
				return
			case <-t.C:
				core.Emit("cpu", pibridge.Number(float64(i%1000)/10), time.Time{})
			}
		}
	}()
	return e
}

func (e *emitter) halt() {
	select {
	case <-e.stop:
	default:
		close(e.stop)
	}
	<-e.done
}

// pause lets time pass: the length of an outage, the moment of a kill.
// It never stands in for waiting on an event.
func pause(d time.Duration) {
	t := time.NewTimer(d)
	<-t.C
}

// startDiskClient runs a client with its outbox on disk in a new state_dir.
func startDiskClient(t *testing.T, core *pibridge.Core, broker string, edit func(*Config)) *Client {
	t.Helper()
	cfg := testConfig(core, broker)
	if edit != nil {
		edit(&cfg)
	}
	c, err := newClient(Options{Config: cfg, Core: core, Logger: testLogger(t), Version: "1.2.3", StateDir: t.TempDir()}, testTiming)
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)
	return c
}

// ackedUpTo returns the newest seq s such that every reading up to s has
// left the client's outbox, that is, the broker acknowledged it.
func ackedUpTo(c *Client) uint64 {
	if r, ok := c.outbox.Next(0); ok {
		return r.Seq - 1
	}
	return c.lastSeq.Load()
}

// TestBrokerKilled kills mosquitto with SIGKILL and starts it again on the
// same port 10 times while the bridge publishes 500 readings/s; an
// independent subscriber must see every seq.
//
// What mosquitto guarantees, and so what this test can demand: its
// persistence is a snapshot (autosave), not a log, so a SIGKILL loses
// whatever it acknowledged since the last save and had not yet passed
// on. It does pass a QoS 1 message on to connected subscribers before it
// sends the PUBACK (handle__publish: sub__messages_queue, then
// send__puback; db__message_insert writes to an online client at once,
// max_inflight_messages 0 lifts the limit of 20). So the test kills the
// broker only once the watcher is connected and holds every reading the
// broker has acknowledged so far; anything acknowledged after that check
// was written to the watcher's socket first. A reading missing at the end
// is then the bridge's fault. Persistence (saved every second) is there
// for the watcher's session, which must outlive the kills.
func TestBrokerKilled(t *testing.T) {
	m := runMosquitto(t, mosquittoOptions{persist: true})
	w := watchSeqs(t, m.addr, fmt.Sprintf("seqs-killed-%d", rand.Int()), base+"/cpu")
	m.stop() // saves the watcher's session
	m.start()
	w.waitFor("the watcher back", func(w *seqWatcher) bool { return w.online })

	core, _ := newCore(t)
	c := startDiskClient(t, core, "tcp://"+m.addr, nil)
	const every = 2 * time.Millisecond // 500 readings/s
	start := time.Now()
	e := startEmitter(core, every)
	defer e.halt()

	var recoveries []time.Duration
	for round := 0; round < 10; round++ {
		// Publishing for a while…
		from := core.Emitted()
		w.waitFor("readings flowing", func(w *seqWatcher) bool {
			return w.online && w.counts[from+uint64(50+rand.IntN(100))] > 0
		})
		// …then the watcher holds everything acknowledged: kill.
		acked := ackedUpTo(c)
		w.waitFor(fmt.Sprintf("round %d: everything up to %d acknowledged", round, acked), func(w *seqWatcher) bool {
			return w.online && w.hasAll(1, acked)
		})
		m.kill()
		pause(time.Duration(50+rand.IntN(250)) * time.Millisecond) // the outage
		m.start()
		up := time.Now()
		last := c.lastSeq.Load()
		w.waitFor("a reading emitted after the restart", func(w *seqWatcher) bool {
			for s := last + 1; s <= last+200; s++ {
				if w.counts[s] > 0 {
					recoveries = append(recoveries, w.first[s].Sub(up))
					return true
				}
			}
			return false
		})
	}
	e.halt()
	elapsed := time.Since(start)
	last := c.lastSeq.Load()
	w.waitFor("every reading", func(w *seqWatcher) bool { return w.hasAll(1, last) })
	if miss := w.missing(1, last); len(miss) > 0 {
		t.Fatalf("%d readings never arrived: %v", len(miss), miss)
	}
	rate := float64(last) / elapsed.Seconds()
	if rate < 200 {
		t.Errorf("published %.0f readings/s, want at least 200", rate)
	}
	if d := c.Stats().Dropped; d != 0 {
		t.Errorf("outbox dropped %d", d)
	}
	t.Logf("10 kills: %d readings at %.0f/s, 0 missing, %d duplicates; recovery (broker accepting → first new reading at the subscriber): %s",
		last, rate, w.duplicates(), recoveryStats(recoveries))
}

// TestBrokerDownAtStart starts the bridge while the broker is down, emits
// a thousand readings, then starts the broker: every reading arrives.
func TestBrokerDownAtStart(t *testing.T) {
	const outage = 1000 // readings emitted while the broker is down
	m := runMosquitto(t, mosquittoOptions{persist: true})
	w := watchSeqs(t, m.addr, fmt.Sprintf("seqs-down-%d", rand.Int()), base+"/cpu")
	m.stop() // saves the watcher's session: messages queue for it from the first

	core, _ := newCore(t)
	c := startDiskClient(t, core, "tcp://"+m.addr, nil)
	for i := range outage {
		core.Emit("cpu", pibridge.Number(float64(i)), time.Time{})
	}
	eventually(t, "the outage's readings queued", func() bool { return c.Queued() == outage })
	if c.Connected() {
		t.Fatal("connected with the broker down")
	}
	m.start()
	for i := range 100 {
		core.Emit("cpu", pibridge.Number(float64(i)), time.Time{})
	}
	last := core.Emitted()
	w.waitFor("every reading", func(w *seqWatcher) bool { return w.hasAll(1, last) })
	if miss := w.missing(1, last); len(miss) > 0 {
		t.Fatalf("%d readings never arrived: %v", len(miss), miss)
	}
	if d := c.Stats().Dropped; d != 0 {
		t.Errorf("outbox dropped %d", d)
	}
	t.Logf("broker down at start: %d readings queued, all %d arrived, %d duplicates", outage, last, w.duplicates())
}

// TestCommandsSurviveRestarts kills mosquitto (no persistence: it forgets
// every subscription) 10 times; after each restart a command must reach
// the output, which needs the bridge to subscribe again by itself.
func TestCommandsSurviveRestarts(t *testing.T) {
	m := runMosquitto(t, mosquittoOptions{})
	core, act := newCore(t)
	startDiskClient(t, core, "tcp://"+m.addr, nil)
	ok := 0
	for round := 0; round < 10; round++ {
		m.kill()
		m.start()
		w := watch(t, m.addr, base+"/ack", base+"/status")
		// A fresh broker has no retained status until the bridge says
		// online, which it does after the broker confirmed its subscriptions.
		waitOnline(w)
		id := fmt.Sprintf("round%d", round)
		w.publish(base+"/pump/set", fmt.Sprintf(`{"value":%t,"id":%q}`, round%2 == 0, id), false)
		if got := waitAck(w, id); got == `{"id":"`+id+`","name":"pump","ok":true}` {
			ok++
		} else {
			t.Errorf("round %d: ack %s", round, got)
		}
		w.client.Disconnect(50)
	}
	if calls := act.Calls(); len(calls) != 10 || ok != 10 {
		t.Errorf("%d/10 commands acknowledged, actuator calls %q", ok, calls)
	}
	t.Logf("commands after broker restarts: %d/10", ok)
}

// brokerFor returns the broker of the client's last connection attempt.
func brokerFor(c *Client) string {
	if b := c.broker.Load(); b != nil {
		return *b
	}
	return ""
}

// TestBrokerFallback lists a broker that is down first: the client uses
// the second; when the second goes and the first comes up, it moves over.
func TestBrokerFallback(t *testing.T) {
	second := runMosquitto(t, mosquittoOptions{})
	firstAddr := freeAddr(t) // nothing listens there yet
	core, _ := newCore(t)
	c := startDiskClient(t, core, "tcp://"+firstAddr, func(cfg *Config) {
		cfg.Broker = Brokers{"tcp://" + firstAddr, "tcp://" + second.addr}
	})
	w := watch(t, second.addr, base+"/#")
	waitOnline(w)
	if b := brokerFor(c); b != "tcp://"+second.addr {
		t.Errorf("connected to %q, want the second broker", b)
	}
	core.Emit("cpu", pibridge.Number(1), time.Time{})
	w.waitFor("a reading via the second broker", func(ms []msg) bool { return len(readingSeqs(t, ms)) > 0 })

	second.kill()
	first := runMosquittoAt(t, firstAddr)
	w1 := watch(t, first.addr, base+"/#")
	core.Emit("cpu", pibridge.Number(2), time.Time{})
	w1.waitFor("the reading via the first broker", func(ms []msg) bool {
		return slices.Contains(readingSeqs(t, ms), core.Emitted())
	})
	if b := brokerFor(c); b != "tcp://"+firstAddr {
		t.Errorf("connected to %q, want the first broker", b)
	}
}

// runMosquittoAt starts a plain mosquitto on a given address.
func runMosquittoAt(t *testing.T, addr string) *mosquittoBroker {
	t.Helper()
	return runMosquitto(t, mosquittoOptions{addr: addr})
}

// recoveryStats formats durations for logs.
func recoveryStats(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("min %s median %s max %s", s[0].Round(time.Millisecond), s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
}

// helperEnv selects helperBridge in TestMain.
const helperEnv = "PIBRIDGE_MQTT_HELPER"

// helperBridge is the bridge of TestBridgeKilled, in its own process: a
// core and a Client with its outbox on disk in HELPER_STATE_DIR, emitting
// one reading every HELPER_EVERY. After each it writes "E S" on stdout:
// E the seq it emitted, S the outbox's Synced (every reading up to S is
// on disk or acknowledged). It runs until killed.
func helperBridge() int {
	dir, broker := os.Getenv("HELPER_STATE_DIR"), os.Getenv("HELPER_BROKER")
	every, err := time.ParseDuration(os.Getenv("HELPER_EVERY"))
	if err != nil || dir == "" || broker == "" {
		fmt.Fprintln(os.Stderr, "helper: HELPER_STATE_DIR, HELPER_BROKER and HELPER_EVERY are needed")
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	core, err := pibridge.New(pibridge.Options{Device: pibridge.Device{ID: "dev1"}, Signals: testSignals, StateDir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	c, err := newClient(Options{Config: testConfig(core, broker), Core: core, Logger: log, StateDir: dir}, testTiming)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	go c.Run(context.Background()) // ends with the process
	ob := c.outbox.(*DiskOutbox)
	t := time.NewTicker(every)
	for i := 0; ; i++ {
		<-t.C
		core.Emit("cpu", pibridge.Number(float64(i)), time.Time{})
		r, _ := core.Latest("cpu")
		fmt.Fprintf(os.Stdout, "%d %d\n", r.Seq, ob.Synced()) // unbuffered: out before a kill
	}
}

// bridgeProc is a helperBridge process.
type bridgeProc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	first  uint64 // the first seq it emitted
	last   uint64 // the last
	synced uint64
	change chan struct{}
	done   chan struct{} // stdout closed
}

func startBridgeProc(t *testing.T, dir, broker string, every time.Duration) *bridgeProc {
	t.Helper()
	cmd, out, stderr := testkit.Child(t, "", helperEnv+"=bridge", "HELPER_STATE_DIR="+dir, "HELPER_BROKER="+broker, "HELPER_EVERY="+every.String())
	p := &bridgeProc{cmd: cmd, change: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var seq, synced uint64
			if _, err := fmt.Sscanf(sc.Text(), "%d %d", &seq, &synced); err != nil {
				continue
			}
			p.mu.Lock()
			if p.first == 0 {
				p.first = seq
			}
			p.last, p.synced = seq, synced
			p.mu.Unlock()
			signal(p.change)
		}
	}()
	t.Cleanup(func() {
		p.kill()
		if s := stderr.String(); s != "" {
			t.Logf("bridge process stderr:\n%s", s)
		}
	})
	return p
}

// kill ends the process with SIGKILL and returns what it had said last.
func (p *bridgeProc) kill() bridgeRun {
	p.cmd.Process.Kill()
	p.cmd.Wait()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return bridgeRun{p.first, p.last, p.synced}
}

// bridgeRun is what one helperBridge process emitted.
type bridgeRun struct{ first, last, synced uint64 }

func (p *bridgeProc) waitSynced(t *testing.T, what string, cond func(first, synced uint64) bool) {
	t.Helper()
	timeout := time.NewTimer(waitLong)
	defer timeout.Stop()
	for {
		p.mu.Lock()
		ok := p.first > 0 && cond(p.first, p.synced)
		p.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-p.change:
		case <-timeout.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestBridgeKilled kills the bridge process with SIGKILL twice, once
// while it publishes and once while the broker is out of reach, and
// starts it again on the same state_dir: every reading it reported as
// synced (on disk or acknowledged) before the kill is published. Readings
// after that, the last fsync window, may be lost; the test says how many.
func TestBridgeKilled(t *testing.T) {
	m := runMosquitto(t, mosquittoOptions{})
	w := watchSeqs(t, m.addr, fmt.Sprintf("seqs-bridge-%d", rand.Int()), base+"/cpu")
	px := newProxy(t, m.addr)
	px.start(t)
	dir := t.TempDir()
	const every = 2 * time.Millisecond
	var runs []bridgeRun

	// 1: killed while publishing.
	p := startBridgeProc(t, dir, "tcp://"+px.addr, every)
	p.waitSynced(t, "readings flowing", func(first, synced uint64) bool { return synced > first+300 })
	pause(rand.N(150 * time.Millisecond)) // a kill at any moment of the window
	runs = append(runs, p.kill())

	// 2: restarted; it publishes what run 1 left, then the broker goes
	// out of reach, readings go to disk, and it is killed.
	p = startBridgeProc(t, dir, "tcp://"+px.addr, every)
	w.waitFor("run 1's readings", func(w *seqWatcher) bool { return w.hasAll(runs[0].first, runs[0].synced) })
	p.waitSynced(t, "run 2 publishing", func(first, synced uint64) bool { return synced > first+100 })
	px.stop()
	var cut uint64
	p.waitSynced(t, "the outage under way", func(_, synced uint64) bool { cut = synced; return true })
	p.waitSynced(t, "readings on disk during the outage", func(_, synced uint64) bool { return synced > cut+500 })
	pause(rand.N(150 * time.Millisecond))
	runs = append(runs, p.kill())

	// 3: broker back, bridge restarted: it publishes the rest.
	px.start(t)
	p = startBridgeProc(t, dir, "tcp://"+px.addr, every)
	for i, r := range runs {
		w.waitFor(fmt.Sprintf("run %d's synced readings", i+1), func(w *seqWatcher) bool { return w.hasAll(r.first, r.synced) })
	}
	p.waitSynced(t, "run 3 publishing", func(first, synced uint64) bool { return synced > first })
	p.kill()
	var lost []int
	for i, r := range runs {
		if miss := w.missing(r.first, r.synced); len(miss) > 0 {
			t.Errorf("run %d: %d synced readings never arrived: %v", i+1, len(miss), miss)
		}
		// After the last synced seq: the fsync window, which may be lost.
		lost = append(lost, len(w.missing(r.synced+1, r.last)))
	}
	t.Logf("bridge killed twice (runs %+v): every synced reading arrived; of the readings after the last synced one, run 1 lost %d of %d, run 2 lost %d of %d (window %s at one reading per %s)",
		runs, lost[0], runs[0].last-runs[0].synced, lost[1], runs[1].last-runs[1].synced, CommitWindow, every)
	t.Logf("run 2 stored %d readings on disk during the outage; all were published after the restart", runs[1].synced-cut)
}

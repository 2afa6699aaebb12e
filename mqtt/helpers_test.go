package mqtt

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	pibridge "pibridge"
	"pibridge/internal/testkit"
	"pibridge/internal/testkit/fakeboard"
)

// testTiming shortens the retry intervals so outages heal in tests quickly.
var testTiming = timing{
	connectRetry:   100 * time.Millisecond,
	maxReconnect:   500 * time.Millisecond,
	keepAlive:      30 * time.Second,
	pingTimeout:    5 * time.Second,
	connectTimeout: 2 * time.Second,
	writeTimeout:   3 * time.Second,
	pahoWrite:      time.Second,
	stall:          10 * time.Second,
	retry:          100 * time.Millisecond,
	shutdown:       2 * time.Second,
	haDelayMin:     10 * time.Millisecond,
	haDelayMax:     30 * time.Millisecond,
	availEvery:     20 * time.Millisecond,
	clockCheck:     20 * time.Millisecond,
}

const waitLong = 15 * time.Second

// brokerKinds are the brokers every client test runs against.
var brokerKinds = []struct {
	name  string
	start func(t *testing.T) string // returns host:port
}{
	{"embedded", startEmbedded},
	{"mosquitto", func(t *testing.T) string { return startMosquitto(t) }},
}

func startEmbedded(t *testing.T) string {
	t.Helper()
	b, err := NewBroker("127.0.0.1:0", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b.Addr()
}

// startMosquitto runs a real mosquitto on a free loopback port with a
// generated configuration and returns its address once it accepts.
func startMosquitto(t testing.TB) string {
	t.Helper()
	return runMosquitto(t, mosquittoOptions{}).addr
}

// mosquittoOptions shape a test's mosquitto configuration.
type mosquittoOptions struct {
	// persist keeps sessions, subscriptions and queued messages in a
	// temporary directory, saved on a clean stop and after every change.
	persist bool
	// extra configuration lines, appended after the main listener (more
	// listeners, TLS, password_file).
	extra string
	// noAnonymous refuses clients without a user name.
	noAnonymous bool
	// addr is the address to listen on; empty: a free loopback port.
	addr string
}

// mosquittoBroker is the kit's mosquitto, bound to a test.
type mosquittoBroker struct {
	*testkit.Mosquitto
	t    testing.TB
	addr string
}

// runMosquitto starts a mosquitto and kills it when the test ends.
func runMosquitto(t testing.TB, o mosquittoOptions) *mosquittoBroker {
	t.Helper()
	m := testkit.RunMosquitto(t, testkit.MosquittoOptions{Persist: o.persist, NoAnonymous: o.noAnonymous, Addr: o.addr, Extra: o.extra})
	return &mosquittoBroker{Mosquitto: m, t: t, addr: m.Addr}
}

// start starts mosquitto again on its port and returns once it accepts.
func (m *mosquittoBroker) start() {
	m.t.Helper()
	if err := m.Start(); err != nil {
		m.t.Fatal(err)
	}
}

// kill ends mosquitto with SIGKILL: nothing is saved.
func (m *mosquittoBroker) kill() { m.Kill() }

// stop ends mosquitto with SIGTERM: it saves its persistence file first.
func (m *mosquittoBroker) stop() { m.Stop() }

var freeAddr = testkit.FreeAddr

type lockedBuffer = testkit.LockedBuffer

// testLogger writes to t.Log until the test ends; paho goroutines that
// outlive it must not call t.Log.
func testLogger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.close)
	level := slog.LevelInfo
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testWriter struct {
	mu     sync.Mutex
	t      testing.TB
	closed bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// proxy forwards TCP to a broker and can be switched off and on, which to
// the client looks like the broker going away and coming back, while a
// watcher connected straight to the broker keeps seeing everything.
type proxy struct {
	addr, target string
	mu           sync.Mutex
	ln           net.Listener
	conns        map[net.Conn]bool
	wg           sync.WaitGroup
}

func newProxy(t testing.TB, target string) *proxy {
	p := &proxy{addr: freeAddr(t), target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(p.stop)
	return p
}

func (p *proxy) start(t testing.TB) {
	t.Helper()
	var ln net.Listener
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		if ln, err = net.Listen("tcp", p.addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // the port may linger a moment
	}
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				down.Close()
				continue
			}
			p.mu.Lock()
			p.conns[down], p.conns[up] = true, true
			p.mu.Unlock()
			p.wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer p.wg.Done()
				io.Copy(dst, src)
				dst.Close()
				src.Close()
			}
			go pipe(up, down)
			go pipe(down, up)
		}
	}()
}

// stop closes the listener and every forwarded connection.
func (p *proxy) stop() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// Test signals: one of each kind, a two-quantity sensor and an output
// whose actuator always refuses.
var testSignals = []pibridge.Signal{
	{Name: "door", Kind: pibridge.KindInput},
	{Name: "pump", Kind: pibridge.KindOutput, Pulse: 30 * time.Second},
	{Name: "stuck", Kind: pibridge.KindOutput},
	{Name: "fan", Kind: pibridge.KindPWM},
	{Name: "air.temperature", Kind: pibridge.KindSensor, Unit: "°C", DeviceClass: "temperature"},
	{Name: "air.humidity", Kind: pibridge.KindSensor, Unit: "%", DeviceClass: "humidity"},
	{Name: "cpu", Kind: pibridge.KindSensor, Unit: "°C", DeviceClass: "temperature"},
}

// testEntities is how many Home Assistant entities testSignals make: one
// each, and a button for pump's default pulse.
var testEntities = len(testSignals) + 1

// awaitJournal waits until the readings emitted so far are in the
// client's outbox: the core hands them over on a goroutine of its own.
func awaitJournal(t testing.TB, core *pibridge.Core) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := core.AwaitJournal(ctx); err != nil {
		t.Fatalf("readings not handed to the outbox: %v", err)
	}
}

func newCore(t testing.TB) (*pibridge.Core, *fakeboard.Actuator) {
	t.Helper()
	core, err := pibridge.New(pibridge.Options{
		Device:   pibridge.Device{ID: "dev1", Name: "Test Pi"},
		Signals:  testSignals,
		StateDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { core.Close() })
	a := fakeboard.New(core)
	a.Refuse = refuseStuck
	return core, a
}

// refuseStuck makes the output "stuck" refuse every command: an interlock.
func refuseStuck(_ context.Context, name string) error {
	if name == "stuck" {
		return fmt.Errorf("%w: interlock with pump", pibridge.ErrConflict)
	}
	return nil
}

// startClient makes a client for the broker URLs and runs it until the
// returned stop is called (or the test ends).
func startClient(t *testing.T, core *pibridge.Core, broker string, edit func(*Config)) (*Client, func()) {
	t.Helper()
	c := newTestClient(t, core, broker, edit)
	return c, runClient(t, c)
}

// outboxEnv set to "disk" (t.Setenv) makes newTestClient keep the outbox
// on disk, so that the client tests run against both outboxes.
const outboxEnv = "PIBRIDGE_TEST_OUTBOX"

// testConfig is the section a file naming only broker decodes to, for
// core's device.
func testConfig(core *pibridge.Core, broker string) Config {
	c := Defaults()
	c.Broker = Brokers{broker}
	c.Derive(core.Device().ID)
	return c
}

func newTestClient(t testing.TB, core *pibridge.Core, broker string, edit func(*Config)) *Client {
	t.Helper()
	return newTestClientOpts(t, core, broker, edit, nil)
}

// newTestClientOpts is newTestClient that can also change the Options.
// The host file system is empty unless editOpts says otherwise, so that
// the device card does not depend on the machine the tests run on.
func newTestClientOpts(t testing.TB, core *pibridge.Core, broker string, edit func(*Config), editOpts func(*Options)) *Client {
	t.Helper()
	cfg := testConfig(core, broker)
	if edit != nil {
		edit(&cfg)
	}
	o := Options{Config: cfg, Core: core, Logger: testLogger(t), Version: "1.2.3", Host: fstest.MapFS{}}
	if os.Getenv(outboxEnv) == "disk" {
		o.StateDir = t.TempDir()
	}
	if editOpts != nil {
		editOpts(&o)
	}
	c, err := newClient(o, testTiming)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func runClient(t testing.TB, c *Client) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			start := time.Now()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
				// Run's own bound is 2 s; allow for paho's disconnect quiesce.
				if d := time.Since(start); d > 3*time.Second {
					t.Errorf("Run took %s to return after cancel", d)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("Run did not return within 5 s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// watcher is an independent MQTT client that records what it receives.
type watcher struct {
	t       *testing.T
	client  paho.Client
	id      string
	mu      sync.Mutex
	msgs    []msg
	signal  chan struct{}
	barrier chan string
}

type msg struct {
	Topic    string
	Payload  string
	Retained bool
}

var watcherN atomic.Int64

func watch(t *testing.T, addr string, filters ...string) *watcher {
	t.Helper()
	return watchWith(t, addr, nil, filters...)
}

// watchWith is watch with the client's options edited (credentials).
func watchWith(t *testing.T, addr string, edit func(*paho.ClientOptions), filters ...string) *watcher {
	t.Helper()
	w := &watcher{t: t, id: fmt.Sprintf("watcher-%d-%d", os.Getpid(), watcherN.Add(1)),
		signal: make(chan struct{}, 1), barrier: make(chan string, 16)}
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).
		SetClientID(w.id).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	if edit != nil {
		edit(opts)
	}
	w.client = paho.NewClient(opts)
	mustToken(t, w.client.Connect(), "watcher connect")
	t.Cleanup(func() { w.client.Disconnect(100) })
	subs := map[string]byte{"barrier/" + w.id: 1}
	for _, f := range filters {
		subs[f] = 1
	}
	mustToken(t, w.client.SubscribeMultiple(subs, w.onMessage), "watcher subscribe")
	// mochi sends retained messages after the SUBACK; wait for them to be
	// out, or one published meanwhile arrives both live and retained.
	w.sync()
	return w
}

// sync returns once the broker has finished with everything the watcher
// published before: brokers handle one client's packets in order, and
// mochi acknowledges a publish before it forwards it.
func (w *watcher) sync() {
	w.t.Helper()
	token := fmt.Sprint(time.Now().UnixNano())
	w.publish("barrier/"+w.id, token, false)
	timeout := time.After(waitLong)
	for {
		select {
		case got := <-w.barrier:
			if got == token {
				return
			}
		case <-timeout:
			w.t.Fatal("barrier message did not come back")
		}
	}
}

func (w *watcher) onMessage(_ paho.Client, m paho.Message) {
	if m.Topic() == "barrier/"+w.id {
		w.barrier <- string(m.Payload())
		return
	}
	w.mu.Lock()
	w.msgs = append(w.msgs, msg{m.Topic(), string(m.Payload()), m.Retained()})
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

func (w *watcher) all() []msg {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]msg(nil), w.msgs...)
}

// on returns the messages received on topic, in order.
func (w *watcher) on(topic string) []msg {
	var out []msg
	for _, m := range w.all() {
		if m.Topic == topic {
			out = append(out, m)
		}
	}
	return out
}

// waitFor waits until cond holds for the messages received so far.
func (w *watcher) waitFor(what string, cond func([]msg) bool) []msg {
	w.t.Helper()
	timeout := time.NewTimer(waitLong)
	defer timeout.Stop()
	for {
		ms := w.all()
		if cond(ms) {
			return ms
		}
		select {
		case <-w.signal:
		case <-timeout.C:
			w.t.Fatalf("timed out waiting for %s; received:\n%s", what, dump(ms))
		}
	}
}

func dump(ms []msg) string {
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "  %s %q retained=%v\n", m.Topic, m.Payload, m.Retained)
	}
	return b.String()
}

func (w *watcher) publish(topic, payload string, retained bool) {
	w.t.Helper()
	mustToken(w.t, w.client.Publish(topic, 1, retained, payload), "publish "+topic)
}

func mustToken(t *testing.T, tok paho.Token, what string) {
	t.Helper()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(waitLong):
		t.Fatalf("%s: no answer within %s", what, waitLong)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, waitLong, what, cond)
}

// running starts the outbox's Run, as the client does; Close ends it.
func running(o *DiskOutbox, err error) (*DiskOutbox, error) {
	if err == nil {
		go o.Run(context.Background())
	}
	return o, err
}

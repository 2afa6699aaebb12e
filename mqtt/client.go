package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	pibridge "pibridge"
)

// Options configure a Client.
type Options struct {
	Config  Config
	Core    *pibridge.Core
	Logger  *slog.Logger
	Version string // reported in P/D/meta and Home Assistant discovery
	// Outbox holds the readings until the broker has them; one given here
	// is the caller's to run and close. When nil, the client opens a
	// DiskOutbox in StateDir (mqtt-outbox.db), runs it in Run and closes
	// it when Run returns; without a StateDir either, the readings are
	// kept in memory only. Both hold at most queue_max readings.
	Outbox Outbox
	// StateDir is the bridge's state_dir.
	StateDir string
	// Stale reports whether a sensor signal's sensor keeps failing; its
	// availability topic then says offline. Nil: never stale.
	Stale func(signal string) bool
	// Host is the root file system, read for the board model and serial
	// number shown in Home Assistant; nil is the real one.
	Host fs.FS
	// PanelURL is the panel's address without credentials, the device's
	// link in Home Assistant unless homeassistant.configuration_url says
	// otherwise; asked when discovery is published. Nil or "": no link.
	PanelURL func() string
	// EmbeddedAddr is where the embedded broker really listens
	// (Broker.Addr), which differs from embedded_listen for port 0 or a
	// wildcard host; "" dials embedded_listen.
	EmbeddedAddr string
	// EmbeddedPassword is the bridge's password on an embedded broker that
	// asks for one (user EmbeddedBridgeUser), when mqtt.username does not
	// name the bridge's identity.
	EmbeddedPassword string
}

// maxInFlight bounds the publishes awaiting their PUBACK, as mosquitto's
// default max_inflight_messages does; paho alone would go up to 65535.
const maxInFlight = 20

// timing holds the client's durations, shortened by tests.
type timing struct {
	connectRetry   time.Duration // first pause between connection attempts
	maxReconnect   time.Duration // cap of the doubling pause
	keepAlive      time.Duration
	pingTimeout    time.Duration
	connectTimeout time.Duration
	writeTimeout   time.Duration // our bound for acks and session publishes
	pahoWrite      time.Duration // paho's write timeout: see defaultTiming
	stall          time.Duration // no PUBACK this long: resend from the first unconfirmed
	retry          time.Duration // pause after a failed publish before resending
	shutdown       time.Duration // Run's bound for offline and in-flight after ctx ends
	haDelayMin     time.Duration // pause before answering Home Assistant's birth message…
	haDelayMax     time.Duration // …random between the two
	availEvery     time.Duration // how often sensor availability is checked
	clockCheck     time.Duration // how often meta's clock state is compared with the kernel's
}

var defaultTiming = timing{
	connectRetry:   time.Second, // a restarted broker is usually back within a second
	maxReconnect:   10 * time.Second,
	keepAlive:      30 * time.Second,
	pingTimeout:    10 * time.Second,
	connectTimeout: 10 * time.Second,
	writeTimeout:   10 * time.Second,
	// paho's write timeout is also how long its Publish may wait to hand
	// a packet to the connection's writer, and when the connection dies
	// under a Publish, paho v1.5.1 can leave it waiting on a channel that
	// nobody reads any more (client.go: the select on c.obound) for all
	// of that time, holding pubMu; connectLoop waits for it (see there).
	// On a LAN the hand-off and the socket write take microseconds; a
	// second bounds the stall. The price: a PUBLISH write that cannot
	// get into the socket's send buffer for a second drops the
	// connection, which a session's burst of discovery configs can do
	// on a link slower than some 100 kbit/s.
	pahoWrite: time.Second,
	// A dead connection is noticed after keepalive plus ping timeout, and
	// the resend on reconnect completes the waiting tokens; the stall
	// bound is the backstop for a token that never completes (paho #613).
	stall:      90 * time.Second,
	retry:      time.Second,
	shutdown:   2 * time.Second,
	haDelayMin: time.Second,
	haDelayMax: 5 * time.Second,
	// A sensor goes stale after several failed reads with backoff: a
	// second's delay in saying so is nothing.
	availEvery: time.Second,
	clockCheck: 30 * time.Second,
}

// Client publishes the core's readings and takes commands over MQTT.
type Client struct {
	cfg    Config
	core   *pibridge.Core
	log    *slog.Logger
	device pibridge.Device
	topics *topics
	qos    byte
	tm     timing
	paho   paho.Client
	outbox Outbox

	haStatus   string     // Home Assistant's status topic, "" without discovery
	haEntities []haItem   // one per signal, built once
	haCurrent  []haConfig // the discovery configs in force; sessionLoop's
	host       hostInfo
	stale      func(string) bool
	panelURL   func() string
	avail      availability    // sessionLoop's
	homie      *homie          // nil unless homie.enabled
	wake       chan struct{}   // a reading was appended to the outbox
	lost       chan struct{}   // paho lost the connection
	sessions   chan struct{}   // a connection is ready: publish online, meta, discovery
	statesReq  chan struct{}   // publish the current state of every signal
	haOnline   chan struct{}   // Home Assistant restarted
	inbox      chan inbound    // messages from paho's handler to the command worker
	acks       chan pendingAck // answers to commands, for ackLoop to publish
	sweep      chan inbound    // discovery configs seen while collectRetained runs
	sweeping   atomic.Bool
	// sweepFilters are the retained topics read back on connecting (the
	// previous run's meta, and with discovery its Home Assistant configs).
	sweepFilters []string
	sweepLost    atomic.Bool // sweep was full: a config was not seen
	gate         *gate       // open while connected and paho's resend is done
	// pubMu keeps publishes out of a Connect in progress: paho resends
	// what is stored while it connects, and a publish racing with that
	// goes out twice (see connectLoop).
	pubMu   sync.RWMutex
	lastSeq atomic.Uint64          // the last seq appended to the outbox
	broker  atomic.Pointer[string] // the broker of the last connection attempt

	embeddedAddr     string // Options.EmbeddedAddr
	embeddedPassword string // Options.EmbeddedPassword

	running atomic.Bool
	journal *pibridge.JournalRunner // the outbox as the core's journal
	// Goroutines that outlive the call that started them (a browser's
	// unsubscribe) join bg, so that Run can wait for them; quit tells
	// them Run is ending, and once it has, spawn starts none.
	bgMu      sync.Mutex
	bg        sync.WaitGroup
	bgClosed  bool
	quit      chan struct{}
	dials     dials                      // paho's connections, for Run to end (dial.go)
	connect   atomic.Pointer[paho.Token] // the last connection attempt
	closeOnce sync.Once
	ownOutbox *DiskOutbox // opened by New from StateDir, closed by Close
	bridge    passthrough // browsers' subscriptions (passthrough.go)

	published       atomic.Uint64
	connects        atomic.Uint64
	commands        atomic.Uint64
	commandsDropped atomic.Uint64
	acksDropped     atomic.Uint64
}

// New checks the configuration, opens the outbox, prepares the paho
// client and attaches the outbox as the core's journal; it starts no
// goroutine and connects nowhere: Run does. The journal is attached here,
// not in Run, because the core's seq must resume after the outbox's last
// before the board's first reading, and the board's Run starts beside
// this one: readings emitted before Run wait in the core's bounded queue.
// Close (or Run's end) detaches it.
func New(o Options) (*Client, error) { return newClient(o, defaultTiming) }

func newClient(o Options, tm timing) (*Client, error) {
	if o.Core == nil {
		return nil, errors.New("mqtt: Options.Core is nil")
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	device := o.Core.Device()
	if o.Version != "" {
		device.Version = o.Version
	}
	cfg := o.Config
	if cfg.DeviceID != device.ID {
		return nil, fmt.Errorf("mqtt: Config.DeviceID %q is not the core's device %q (Config.Derive sets it)", cfg.DeviceID, device.ID)
	}
	if err := errors.Join(cfg.Validate(), cfg.CheckFiles()); err != nil {
		var p pibridge.Problems
		p.Add("mqtt", err)
		return nil, p.Err()
	}
	tp, err := newTopics(cfg.TopicPrefix, device.ID, o.Core.Signals())
	if err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	c := &Client{
		cfg:       cfg,
		core:      o.Core,
		log:       log,
		device:    device,
		topics:    tp,
		qos:       cfg.qos(),
		tm:        tm,
		outbox:    o.Outbox,
		wake:      make(chan struct{}, 1),
		lost:      make(chan struct{}, 1),
		quit:      make(chan struct{}),
		sessions:  make(chan struct{}, 1),
		statesReq: make(chan struct{}, 1),
		haOnline:  make(chan struct{}, 1),
		inbox:     make(chan inbound, inboxSize),
		acks:      make(chan pendingAck, acksSize),
		sweep:     make(chan inbound, 512),
		gate:      newGate(),
		stale:     o.Stale,
		panelURL:  o.PanelURL,

		embeddedAddr:     o.EmbeddedAddr,
		embeddedPassword: o.EmbeddedPassword,
	}
	if cfg.discovery() {
		c.haStatus = cfg.HomeAssistant.StatusTopic
		c.host = readHostInfo(o.Host)
		c.haEntities = c.haItems()
	}
	c.sweepFilters = c.readBackFilters()
	opts, err := c.pahoOptions()
	if err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	if cfg.Homie.Enabled {
		if c.homie, err = newHomie(c, o.StateDir); err != nil {
			return nil, fmt.Errorf("mqtt: %w", err)
		}
	}
	switch {
	case c.outbox != nil:
	case o.StateDir != "":
		ob, err := OpenDiskOutbox(o.StateDir, cfg.QueueMax, log)
		if err != nil {
			return nil, fmt.Errorf("mqtt: %w", err)
		}
		c.outbox, c.ownOutbox = ob, ob
	default:
		c.outbox = NewMemoryOutbox(cfg.QueueMax)
	}
	if w, ok := c.outbox.(interface{ setWake(func()) }); ok {
		w.setWake(func() { signal(c.wake) })
	}
	c.paho = paho.NewClient(opts)
	if c.qos == 0 {
		log.Warn("qos 0: readings published while the connection drops are lost without notice")
	}
	if c.journal, err = o.Core.AttachJournal(journal{c}); err != nil {
		if c.ownOutbox != nil {
			c.ownOutbox.Close()
		}
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	// Readings from before the journal was attached go out as states, not
	// through the outbox: delivered, as far as ackedUpTo is concerned.
	for _, r := range o.Core.State() {
		for last := c.lastSeq.Load(); r.Seq > last && !c.lastSeq.CompareAndSwap(last, r.Seq); last = c.lastSeq.Load() {
		}
	}
	return c, nil
}

// Close stops taking readings (the journal records what waits first) and
// closes the disk outbox New opened, after committing what waits. Run
// calls it when it returns; call it yourself only when Run is never
// called.
func (c *Client) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.journal.Detach()
		if c.ownOutbox != nil {
			err = c.ownOutbox.Close()
		}
	})
	return err
}

// pahoOptions sets up paho as NOTES.md advises; see the comments for the
// departures.
func (c *Client) pahoOptions() (*paho.ClientOptions, error) {
	o := paho.NewClientOptions()
	for _, u := range c.cfg.brokerURLs(c.embeddedAddr) {
		o.AddBroker(u) // in order: paho tries the next when one fails
	}
	o.SetClientID(c.cfg.ClientID).
		// A persistent session: the broker keeps the subscriptions and
		// paho keeps unacknowledged publishes to resend on the next
		// connection.
		SetCleanSession(false).
		SetProtocolVersion(4). // MQTT 3.1.1, no silent fallback to 3.1
		// The handler only copies into a channel, so ordered delivery costs
		// nothing and keeps "on" then "off" from arriving as "off" then "on".
		SetOrderMatters(true).
		// connectLoop reconnects, with its own backoff, so that it knows
		// when paho's resend of the previous connection's messages is
		// over; paho's automatic reconnect gives no such signal.
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(c.tm.keepAlive).
		SetPingTimeout(c.tm.pingTimeout).
		SetConnectTimeout(c.tm.connectTimeout).
		SetWriteTimeout(c.tm.pahoWrite). // short: see defaultTiming
		// No SetMaxResumePubInFlight: the window keeps paho's store at
		// about maxInFlight messages anyway, and in v1.5.1 the limiter's
		// goroutine reads c.stop unsynchronised (client.go:1040).
		// The ordered store resends in publish order; the default
		// MemoryStore walks a map and would scramble seq order.
		SetStore(paho.NewOrderedMemoryStore()).
		SetWill(c.topics.status, "offline", 1, true).
		SetDefaultPublishHandler(c.onMessage).
		SetConnectionLostHandler(c.onConnectionLost).
		SetConnectionNotificationHandler(c.onNotification).
		SetCustomOpenConnectionFn(c.openConn) // cancellable, reads through a buffer
	if c.cfg.Username != "" {
		o.SetUsername(c.cfg.Username)
	} else if c.embeddedPassword != "" {
		o.SetUsername(EmbeddedBridgeUser)
		o.SetPassword(c.embeddedPassword)
	}
	if c.cfg.PasswordFile != "" {
		b, err := os.ReadFile(c.cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("password_file: %w", err)
		}
		o.SetPassword(strings.TrimRight(string(b), "\r\n"))
	}
	if c.cfg.TLS.Set() {
		t, err := tlsConfig(c.cfg.TLS)
		if err != nil {
			return nil, err
		}
		o.SetTLSConfig(t)
	}
	return o, nil
}

func tlsConfig(t pibridge.ClientTLS) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file: %s: no PEM certificate found", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// journal makes the outbox the core's pibridge.Journal without exporting
// Record: the outbox's log is where seq resumes after a crash.
type journal struct{ c *Client }

// Record runs on the core's journal goroutine, never under its lock: the
// outbox's log write may wait for the disk here and nowhere else.
func (j journal) Record(batch []pibridge.Reading) {
	if len(batch) == 0 {
		return
	}
	j.c.outbox.Append(batch...)
	j.c.lastSeq.Store(batch[len(batch)-1].Seq)
	select {
	case j.c.wake <- struct{}{}:
	default:
	}
}

func (j journal) LastSeq() uint64 {
	if o, ok := j.c.outbox.(interface{ Newest() uint64 }); ok {
		return o.Newest()
	}
	return 0
}

// Connected reports whether the client has a live connection to a broker.
func (c *Client) Connected() bool { return c.paho.IsConnectionOpen() }

// Queued is the number of readings waiting to be published or acknowledged.
func (c *Client) Queued() int { return c.outbox.Len() }

// Stats returns the client's counters.
func (c *Client) Stats() pibridge.MQTTStats {
	s := pibridge.MQTTStats{
		Connected:       c.Connected(),
		Queued:          c.outbox.Len(),
		Dropped:         c.outbox.Dropped(),
		Published:       c.published.Load(),
		Connects:        c.connects.Load(),
		Commands:        c.commands.Load(),
		CommandsDropped: c.commandsDropped.Load(),
		AcksDropped:     c.acksDropped.Load(),
		OutboxFailing:   c.outboxFailing(),
	}
	if l, ok := c.outbox.(interface {
		LogStats() (failures, replayed uint64)
	}); ok {
		s.OutboxLogFailures, s.OutboxReplayed = l.LogStats()
	}
	return s
}

func (c *Client) outboxFailing() bool {
	f, ok := c.outbox.(interface{ Failing() bool })
	return ok && f.Failing()
}

// Run connects, retrying until a broker answers and reconnecting whenever
// the connection drops, and publishes until ctx ends. Then it finishes the
// readings in flight and publishes `offline`, together bounded by 2 s,
// disconnects and returns nil once every goroutine it started, and paho's
// for it, has ended. Run may be called once.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("mqtt: Run called twice")
	}
	// The journal and the outbox's writer outlive ctx: the publisher's
	// last flush waits for the journal (the safe state's readings), and
	// Close, once everything else has ended, stops both.
	jctx, stopJournal := context.WithCancel(context.WithoutCancel(ctx))
	journaled := make(chan struct{})
	go func() { defer close(journaled); c.journal.Run(jctx) }()
	written := make(chan struct{})
	go func() {
		defer close(written)
		if c.ownOutbox != nil {
			c.ownOutbox.Run(context.WithoutCancel(ctx))
		}
	}()
	defer func() {
		stopJournal()
		<-journaled // what waited is in the outbox
		if err := c.Close(); err != nil {
			c.log.Warn("closing the outbox", "err", err)
		}
		<-written
	}()
	c.log.Info("connecting", "broker", c.cfg.brokerSummary(c.embeddedAddr), "client_id", c.cfg.ClientID,
		"topics", c.topics.base+"/#", "queue_max", c.cfg.QueueMax)

	var wg sync.WaitGroup
	wg.Add(5)
	go func() { defer wg.Done(); c.connectLoop(ctx) }()
	go func() { defer wg.Done(); c.sessionLoop(ctx) }()
	go func() { defer wg.Done(); c.commandLoop(ctx) }()
	go func() { defer wg.Done(); c.ackLoop(ctx) }()
	go func() { defer wg.Done(); (&publisher{c: c}).run(ctx) }()
	if c.homie != nil {
		wg.Add(1)
		go func() { defer wg.Done(); c.homie.run(ctx) }()
	}
	stopped := make(chan struct{})
	go func() { wg.Wait(); close(stopped) }()

	<-ctx.Done()
	// The publisher finishes what is in flight within its share of the
	// budget. A paho call stuck on a dead socket can hold a goroutine up to
	// paho's write timeout: `offline` does not wait for it, Run does
	// (after the disconnect, which lets it go).
	deadline := time.Now().Add(c.tm.shutdown)
	budget := time.NewTimer(c.tm.shutdown * (2*flushShare + 1) / 8) // the publisher's share and a margin
	select {
	case <-stopped:
	case <-budget.C:
		c.log.Warn("stopping without waiting for a blocked publish")
	}
	budget.Stop()
	if c.gate.isOpen() && c.Connected() {
		// connectLoop has returned: a loss reported now is Run's to see,
		// and there is no point waiting for an answer after it.
		lostCtx, cancel := context.WithCancel(context.Background())
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			select {
			case <-c.lost:
				cancel()
			case <-lostCtx.Done():
			}
		}()
		tok := c.publish(c.topics.status, 1, true, "offline")
		if err := await(lostCtx, tok, time.Until(deadline)); err != nil {
			c.log.Warn("offline not confirmed by the broker", "err", err)
		}
		cancel()
		<-watched
	}
	c.gate.set(false)
	c.paho.Disconnect(250)
	// A connection attempt still waiting for a broker's answer ends when
	// its connection does; paho's goroutines with it.
	c.dials.stop()
	if tok := c.connect.Load(); tok != nil {
		if err := await(context.Background(), *tok, c.tm.connectTimeout); errors.Is(err, errNoAck) {
			c.log.Warn("a connection attempt did not end", "err", err)
		}
	}
	c.bgMu.Lock()
	c.bgClosed = true
	close(c.quit)
	c.bgMu.Unlock()
	c.bg.Wait()
	// Disconnected, paho lets a call stuck on the dead socket go within
	// its write timeout.
	straggle := time.NewTimer(c.tm.pahoWrite + time.Second)
	defer straggle.Stop()
	select {
	case <-stopped:
	case <-straggle.C:
		c.log.Warn("a goroutine still stuck in paho; waiting for it")
		<-stopped
	}
	c.log.Info("disconnected", "queued", c.outbox.Len())
	return nil
}

// spawn runs f on a goroutine that Run waits for before it returns; f
// must end soon after quit is closed. Once Run has ended it starts
// nothing and returns false.
func (c *Client) spawn(f func()) bool {
	c.bgMu.Lock()
	defer c.bgMu.Unlock()
	if c.bgClosed {
		return false
	}
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		f()
	}()
	return true
}

// publish is the only way to paho's Publish; see pubMu.
func (c *Client) publish(topic string, qos byte, retained bool, payload any) paho.Token {
	c.pubMu.RLock()
	defer c.pubMu.RUnlock()
	return c.paho.Publish(topic, qos, retained, payload)
}

// errNoAck is a token that did not complete in time.
var errNoAck = errors.New("no answer from the broker in time")

// await waits for a paho token, never longer than d or ctx (paho #613:
// Wait can hang forever).
func await(ctx context.Context, tok paho.Token, d time.Duration) error {
	if d <= 0 {
		d = time.Millisecond
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errNoAck
	}
}

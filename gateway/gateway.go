// Package gateway is the bridge without a board: it follows every device
// of a fleet through the broker and serves one panel for all of them,
// forwarding commands as MQTT /set and /pulse (README "Many boards").
package gateway

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"pibridge"
)

// Deps are what the gateway is given rather than configured with.
type Deps struct {
	Logger  *slog.Logger
	Version string
	// Panel serves the device panel's files ("/" is its index.html); the
	// gateway mounts it at /d/<id>/. Nil: no panel, the APIs only.
	Panel http.Handler
	// StateDir keeps a generated token (StateDir/token), as a bridge does.
	StateDir string
	// Hostname is this machine's name for the Host check; os.Hostname() when empty.
	Hostname string
	Now      func() time.Time
}

// Gateway follows a fleet and serves it. Create it with New, then Run.
type Gateway struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	now  func() time.Time

	prefix string // topic prefix with its trailing slash
	paho   paho.Client
	inbox  chan inMsg
	ln     net.Listener
	srv    *http.Server
	auth   *auth
	idBase string // this gateway's command id prefix
	nextID atomic.Uint64

	connected  atomic.Bool
	subscribed atomic.Bool   // the filters are in place on this connection
	onConnect  chan struct{} // a connection is up: subscribe

	mu      sync.RWMutex // guards devices
	devices map[string]*device

	pmu     sync.Mutex // guards pending
	pending map[string]pendingCommand

	fleet *fleetHub

	conns   sync.WaitGroup // every WebSocket connection's goroutines
	connMu  sync.Mutex
	open    map[*conn]struct{}
	closing bool
	nconns  atomic.Int64

	stats stats
}

// inMsg is one MQTT message handed from paho's router to the ingest loop.
type inMsg struct {
	topic    string
	payload  []byte
	retained bool
}

// inboxSize is the slack between paho and the ingest loop: at a fleet's
// thousands of readings a second, a few seconds of them.
const inboxSize = 1 << 15

// New checks the configuration, reads the token file (or generates the
// token), and opens the HTTP listener. It starts no goroutine.
func New(c Config, d Deps) (*Gateway, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	// HTTP is the http: section's, checked there; a Config built in code
	// must still have been started from Defaults.
	if c.HTTP.Listen == "" || c.HTTP.MaxClients < 1 {
		return nil, fmt.Errorf("gateway: http.listen %q, http.max_clients %d: start the Config from Defaults", c.HTTP.Listen, c.HTTP.MaxClients)
	}
	if len(c.MQTT.Brokers) == 0 {
		return nil, errors.New("gateway: no broker: list the fleet's broker nodes in mqtt.broker")
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Hostname == "" {
		d.Hostname, _ = os.Hostname()
	}
	g := &Gateway{
		cfg:       c,
		deps:      d,
		log:       d.Logger,
		now:       d.Now,
		prefix:    c.TopicPrefix + "/",
		inbox:     make(chan inMsg, inboxSize),
		onConnect: make(chan struct{}, 1),
		devices:   map[string]*device{},
		pending:   map[string]pendingCommand{},
		open:      map[*conn]struct{}{},
		idBase:    "gw-" + randomHex(4) + "-",
	}
	g.fleet = newFleetHub(g)
	a, err := newAuth(c.HTTP, d.StateDir, d.Hostname, d.Now)
	if err != nil {
		return nil, err
	}
	g.auth = a
	opts, err := g.pahoOptions()
	if err != nil {
		return nil, err
	}
	g.paho = paho.NewClient(opts)
	ln, err := net.Listen("tcp", c.HTTP.Listen)
	if err != nil {
		return nil, fmt.Errorf("http.listen %s: %w", c.HTTP.Listen, err)
	}
	if c.HTTP.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.HTTP.CertFile, c.HTTP.KeyFile)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("http.tls: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}})
	}
	g.ln = ln
	g.srv = &http.Server{
		Handler:           g.routes(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
	return g, nil
}

func (g *Gateway) pahoOptions() (*paho.ClientOptions, error) {
	o := paho.NewClientOptions()
	for _, b := range g.cfg.MQTT.Brokers {
		o.AddBroker(b) // in order: paho tries the next node when one fails
	}
	id := g.cfg.MQTT.ClientID
	if id == "" {
		host, _ := os.Hostname()
		id = "pibridge-gateway-" + sanitizeID(host) + "-" + randomHex(3)
	}
	o.SetClientID(id).
		// A clean session: on every connection the retained topics give
		// the whole fleet again, so the broker need keep nothing for us.
		SetCleanSession(true).
		SetProtocolVersion(4).
		// The handler only copies into a channel; order keeps a status
		// "online" then "offline" from arriving the other way round.
		SetOrderMatters(true).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(2 * time.Second).
		SetKeepAlive(15 * time.Second).
		SetPingTimeout(5 * time.Second).
		SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(5 * time.Second).
		SetDefaultPublishHandler(g.onMessage).
		SetOnConnectHandler(func(paho.Client) {
			g.subscribed.Store(false)
			g.connected.Store(true)
			g.stats.connects.Add(1)
			select {
			case g.onConnect <- struct{}{}:
			default:
			}
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			g.connected.Store(false)
			g.subscribed.Store(false)
			g.log.Warn("broker connection lost; reconnecting", "err", err)
			g.fleet.resync()
		})
	if g.cfg.MQTT.Username != "" {
		o.SetUsername(g.cfg.MQTT.Username)
	}
	if g.cfg.MQTT.PasswordFile != "" {
		b, err := os.ReadFile(g.cfg.MQTT.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt.password_file: %w", err)
		}
		o.SetPassword(strings.TrimRight(string(b), "\r\n"))
	}
	return o, nil
}

// Close closes the listener New opened, for a gateway whose Run is never
// called (Run closes it itself).
func (g *Gateway) Close() error {
	if err := g.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// Addr is where the HTTP server listens.
func (g *Gateway) Addr() net.Addr { return g.ln.Addr() }

// PanelURL is the fleet page's address, with a generated token in the
// fragment when there is one (it is printed once, never logged).
func (g *Gateway) PanelURL() string {
	scheme := "http"
	if g.cfg.HTTP.CertFile != "" {
		scheme = "https"
	}
	u := scheme + "://" + g.ln.Addr().String() + "/"
	if g.auth.generated != "" {
		u += "#token=" + g.auth.generated
	}
	return u
}

// Connected reports whether the broker connection is up and subscribed.
func (g *Gateway) Connected() bool { return g.connected.Load() && g.subscribed.Load() }

// Run connects to the broker, serves HTTP and follows the fleet until ctx
// ends; then it closes every browser with 1001 and returns once all its
// goroutines have ended.
func (g *Gateway) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	serveErr := make(chan error, 1)
	wg.Go(func() {
		if err := g.srv.Serve(g.ln); !errors.Is(err, http.ErrServerClosed) {
			serveErr <- err
			cancel()
		}
	})
	wg.Go(func() { g.ingest(ctx) })
	wg.Go(func() { g.fleet.run(ctx) })
	wg.Go(func() { g.subscriber(ctx) })
	g.log.Info("gateway following the fleet", "brokers", strings.Join(g.cfg.MQTT.Brokers, ","), "prefix", g.cfg.TopicPrefix, "listen", g.ln.Addr().String())
	g.paho.Connect() // with ConnectRetry, paho keeps trying in its own goroutine

	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer scancel()
	g.closeConns()
	if err := g.srv.Shutdown(sctx); err != nil {
		g.srv.Close()
	}
	g.paho.Disconnect(250)
	g.conns.Wait()
	wg.Wait()
	select {
	case err := <-serveErr:
		return fmt.Errorf("http: %w", err)
	default:
	}
	return nil
}

// subscriber subscribes after every connection: with a clean session the
// broker forgets our subscriptions when the connection drops. A refused
// or unanswered SUBSCRIBE is tried again while the connection lasts: a
// cluster electing new leaders after a node died may not answer at once.
//
// The filters are QoS 0. The retained topics give the whole fleet again on
// every connection, so a message lost with a connection costs nothing
// lasting; and QoS 1 would make some brokers (NATS) back each gateway's
// subscription with a persistent stream consumer, which stalls while the
// cluster elects leaders and adds a hop to every command's ack.
func (g *Gateway) subscriber(ctx context.Context) {
	p := g.cfg.TopicPrefix
	filters := map[string]byte{p + "/+/+": 0, p + "/+/+/+": 0}
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.onConnect:
		}
		for g.connected.Load() {
			tok := g.paho.SubscribeMultiple(filters, nil)
			t := time.NewTimer(5 * time.Second)
			var err error
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-tok.Done():
				err = tok.Error()
				if err == nil {
					if st, ok := tok.(*paho.SubscribeToken); ok {
						for f, code := range st.Result() {
							if code == 0x80 {
								err = fmt.Errorf("the broker refused %s", f)
							}
						}
					}
				}
			case <-t.C:
				err = errors.New("no answer within 5s")
			}
			t.Stop()
			if err == nil {
				g.subscribed.Store(true)
				g.log.Info("connected and subscribed", "filters", len(filters))
				g.fleet.resync()
				break
			}
			g.log.Warn("subscribing; trying again", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
		g.fleet.kick()
	}
}

// onMessage runs on paho's router: it copies the message into the inbox.
// The ingest loop never blocks on I/O, so a full inbox drains in
// moments; beyond a second the message is dropped and counted rather
// than stalling paho's keepalive.
func (g *Gateway) onMessage(_ paho.Client, m paho.Message) {
	msg := inMsg{topic: m.Topic(), payload: m.Payload(), retained: m.Retained()}
	select {
	case g.inbox <- msg:
		return
	default:
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case g.inbox <- msg:
	case <-t.C:
		g.stats.dropped.Add(1)
	}
}

func (g *Gateway) ingest(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-g.inbox:
			g.stats.messages.Add(1)
			g.handle(m)
		}
	}
}

// handle applies one message to the device table.
func (g *Gateway) handle(m inMsg) {
	rest, ok := strings.CutPrefix(m.topic, g.prefix)
	if !ok {
		return
	}
	id, tail, ok := strings.Cut(rest, "/")
	if !ok || pibridge.ValidName(id, 64) != nil {
		g.stats.junk.Add(1)
		return
	}
	now := g.now()
	switch tail {
	case "meta":
		g.handleMeta(id, m.payload, now)
		return
	case "ack":
		var a ackJSON
		if jsonUnmarshal(m.payload, &a) != nil || a.ID == "" {
			return
		}
		g.pmu.Lock()
		p, ok := g.pending[a.ID]
		if ok && p.device == id { // only the device commanded answers for it
			delete(g.pending, a.ID)
		}
		g.pmu.Unlock()
		if ok && p.device == id {
			p.ch <- a // capacity one, and removed from pending: never blocks
		}
		return
	}
	// Retained topics come in any order: a status or a reading may
	// precede the meta, so the record exists (unlisted) before it.
	d := g.lookupOrCreate(id)
	if d == nil {
		return
	}
	if tail == "status" {
		s := string(m.payload)
		if s != "online" && s != "offline" && s != "" { // "": the retained status was cleared
			g.stats.junk.Add(1)
			return
		}
		d.mu.Lock()
		changed := d.status != s
		d.status = s
		if s == "online" && !m.retained {
			d.lastSeen = now
		}
		d.mu.Unlock()
		if changed {
			g.fleet.changed(d, true)
		}
		return
	}
	name := strings.ReplaceAll(tail, "/", ".")
	if strings.Count(tail, "/") > 1 {
		return
	}
	d.mu.Lock()
	_, known := d.index[name]
	listed := d.listed
	d.mu.Unlock()
	if !known && (listed || validSignal(name) != nil || strings.HasSuffix(tail, "/set") || strings.HasSuffix(tail, "/pulse")) {
		return // a command, or a signal the meta does not list
	}
	r, ok := parseReading(name, m.payload)
	if !ok {
		g.stats.junk.Add(1)
		return
	}
	g.stats.readings.Add(1)
	var frame []byte
	d.mu.Lock()
	if old, had := d.state[name]; had && (r.Seq == old.Seq || m.retained && r.Seq < old.Seq) {
		d.mu.Unlock()
		return // a retained copy of one we have seen, delivered again after a reconnect
	}
	d.state[name] = r
	h := d.history[name]
	if h == nil {
		h = pibridge.NewHistory(int(g.cfg.History.D()/time.Second), time.Second)
		d.history[name] = h
	}
	h.Add(pibridge.Point{T: r.TS.UnixMilli(), V: r.Value.Float()})
	if !m.retained {
		d.lastSeen, d.lastRead = now, now
	} else if d.lastRead.IsZero() || r.TS.After(d.lastRead) {
		d.lastRead = r.TS // what the broker kept: as old as the reading
	}
	if len(d.clients) > 0 {
		frame = r.AppendTypedJSON(make([]byte, 0, 128))
		for c := range d.clients {
			c.push(frame)
		}
	}
	d.mu.Unlock()
	g.fleet.changed(d, false)
}

// handleMeta creates, updates or (empty payload) removes a device.
func (g *Gateway) handleMeta(id string, payload []byte, now time.Time) {
	if len(payload) == 0 {
		g.mu.Lock()
		d := g.devices[id]
		delete(g.devices, id)
		g.mu.Unlock()
		if d != nil {
			d.mu.Lock()
			d.listed = false
			for c := range d.clients {
				c.kill(1001, "device removed")
			}
			d.clients = nil
			d.mu.Unlock()
			g.fleet.removed(id)
		}
		return
	}
	info, signals, desc, why := parseMeta(id, payload)
	if why != "" {
		g.stats.junk.Add(1)
		g.log.Debug("meta ignored", "device", id, "why", why)
		return
	}
	d := g.lookupOrCreate(id)
	if d == nil {
		return
	}
	d.mu.Lock()
	same := d.listed && string(d.desc) == string(desc)
	d.listed = true
	d.info, d.signals, d.desc = info, signals, desc
	d.index = make(map[string]int, len(signals))
	for i, s := range signals {
		d.index[s.Name] = i
	}
	for name := range d.state {
		if _, ok := d.index[name]; !ok {
			delete(d.state, name)
			delete(d.history, name)
		}
	}
	if !same {
		// The browsers' hello describes the old signals: they reconnect
		// and get the new one (1012: service restart).
		for c := range d.clients {
			c.kill(1012, "device changed")
		}
		clear(d.clients)
	}
	d.lastSeen = now
	d.mu.Unlock()
	g.fleet.changed(d, true)
}

// lookupOrCreate returns the record of id, made unlisted when new; nil
// when the table is full (gateway.max_devices).
func (g *Gateway) lookupOrCreate(id string) *device {
	if d := g.lookup(id); d != nil {
		return d
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	d := g.devices[id]
	if d == nil {
		if len(g.devices) >= g.cfg.MaxDevices {
			g.stats.overflow.Add(1)
			return nil
		}
		d = &device{id: id, state: map[string]pibridge.Reading{}, history: map[string]*pibridge.History{}, clients: map[*conn]struct{}{}}
		g.devices[id] = d
	}
	return d
}

func (g *Gateway) lookup(id string) *device {
	g.mu.RLock()
	d := g.devices[id]
	g.mu.RUnlock()
	return d
}

// Devices returns every listed device, for /api/devices and tests.
func (g *Gateway) Devices() []DeviceInfo {
	g.mu.RLock()
	list := make([]*device, 0, len(g.devices))
	for _, d := range g.devices {
		list = append(list, d)
	}
	g.mu.RUnlock()
	out := make([]DeviceInfo, 0, len(list))
	for _, d := range list {
		d.mu.Lock()
		if d.listed {
			out = append(out, d.viewLocked())
		}
		d.mu.Unlock()
	}
	sortDevices(out)
	return out
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// sanitizeID keeps a host name usable in a client id.
func sanitizeID(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) > 32 {
		b = b[:32]
	}
	return string(b)
}

package mqtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"pibridge/internal/rawio"
)

// closeTimeout bounds Broker.Close, which waits for every client's
// connection to end.
const closeTimeout = 2 * time.Second

// sysTopicInterval is how often the embedded broker republishes $SYS, in
// seconds.
const sysTopicInterval = 60

// Broker is an MQTT broker inside the process (mochi-mqtt), for a bridge
// that has no broker of its own to talk to. Made by NewBroker it accepts
// every client, on loopback only; NewAuthBroker asks for credentials.
type Broker struct {
	srv       *mochi.Server
	tcp       *tcpListener
	log       *slog.Logger
	owner     string // see BrokerConfig.Owner
	closeOnce sync.Once
	closeErr  error
}

// BrokerConfig is the embedded broker as the wiring resolves it from the
// mqtt: section.
type BrokerConfig struct {
	// Listen is host:port; port 0 picks a free port (see Addr).
	Listen string
	// Auth, when set, asks every client for credentials; without it the
	// broker accepts anyone and must listen on loopback.
	Auth *BrokerAuth
	// Owner is the bridge's own client id, which Run waits for to be gone
	// before it closes; "" waits for nobody.
	Owner string
}

// OpenBroker binds the listener of c (so Addr is real) and starts
// nothing: Run serves.
func OpenBroker(c BrokerConfig, log *slog.Logger) (*Broker, error) {
	b, err := newBroker(c.Listen, log, c.Auth)
	if err != nil {
		return nil, err
	}
	b.owner = c.Owner
	return b, nil
}

// NewBroker binds a TCP listener on listen ("127.0.0.1:1883"; port 0 picks
// a free port, see Addr). Start serves it. log receives mochi's records,
// its chatter (Info) lowered to Debug. listen must be on loopback.
func NewBroker(listen string, log *slog.Logger) (*Broker, error) { return newBroker(listen, log, nil) }

func newBroker(listen string, log *slog.Logger, a *BrokerAuth) (*Broker, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	caps := mochi.NewDefaultServerCapabilities()
	// mochi's default (24 h) deletes every retained message a day after it
	// was published, whatever its own expiry: Home Assistant's discovery
	// configs and the state of a signal that has not changed would vanish.
	// 0 keeps them until replaced, as mosquitto does; a message expiry
	// interval that an MQTT 5 publisher sets itself still applies.
	caps.MaximumMessageExpiryInterval = 0
	srv := mochi.New(&mochi.Options{
		Capabilities: caps,
		Logger:       slog.New(quietHandler{log.Handler()}),
		// mochi's default republishes its ~20 retained $SYS topics every
		// second, each time after a stop-the-world runtime.ReadMemStats:
		// the biggest part of an idle bridge's CPU after the readings
		// themselves. Once a minute still shows a live uptime and client
		// count (mosquitto's sys_interval is 10 s). Its four other
		// housekeeping tickers (client, inflight and retained expiry, will
		// delay) tick every second and are not configurable in v2.7.9.
		SysTopicResendInterval: sysTopicInterval,
	})
	authz, err := authHook(listen, a, log)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	if err := srv.AddHook(authz, nil); err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	busy := &busyHook{busy: make(map[*mochi.Client]time.Time)}
	if err := srv.AddHook(busy, nil); err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	queued := &queueHook{srv: srv, queued: make(map[*mochi.Client]int), routes: make(map[string][]route)}
	if err := srv.AddHook(queued, nil); err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	// Last: its OnPublish must run only once no other hook can refuse the packet.
	if err := srv.AddHook(newRetainGuard(srv), nil); err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	tcp := &tcpListener{srv: srv, addr: listen, busy: busy, queued: queued}
	// AddListener binds now, so a busy port fails here and Addr is real.
	if err := srv.AddListener(tcp); err != nil {
		srv.Close()
		return nil, fmt.Errorf("embedded broker: listen on %s: %w", listen, err)
	}
	return &Broker{srv: srv, tcp: tcp, log: log}, nil
}

// Addr is the address the broker listens on, with the real port.
func (b *Broker) Addr() string { return b.tcp.Address() }

// Run serves clients until ctx ends, then waits (at most a second) for
// BrokerConfig.Owner to be gone and closes the broker; it returns once
// mochi's goroutines have ended. The owner has published `offline` and is
// disconnecting, and mochi handles a client's packets in order, so once
// it is gone that message is in the subscribers' queues, which Close lets
// drain.
func (b *Broker) Run(ctx context.Context) error {
	if err := b.Start(); err != nil {
		b.Close()
		return err
	}
	<-ctx.Done()
	if b.owner != "" {
		b.AwaitGone(b.owner, time.Second)
	}
	return b.Close()
}

// Start serves clients in the background and returns; Close stops them.
// Run is both, for a broker under an errgroup.
func (b *Broker) Start() error {
	if err := b.srv.Serve(); err != nil {
		return fmt.Errorf("embedded broker: %w", err)
	}
	return nil
}

// AwaitGone waits, at most within, until the client clientID has
// disconnected: mochi handles a client's packets in order, so by then the
// last things it published (the bridge's `offline`) have reached the
// subscribers' queues, which Close then lets drain. Call it before Close
// when that client is the bridge's own and is disconnecting.
func (b *Broker) AwaitGone(clientID string, within time.Duration) {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		cl, ok := b.srv.Clients.Get(clientID)
		if !ok || cl.Closed() {
			return
		}
		time.Sleep(time.Millisecond) // polling mochi's client table: it has no signal to wait on
	}
}

// Close stops the listener and disconnects every client, waiting at most
// 2.5 s for them to go. It is safe to call more than once.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		done := make(chan struct{})
		go func() {
			defer close(done)
			b.srv.Close()
		}()
		// The listener bounds its own wait (closeTimeout); what mochi does
		// after it (stopping its hooks) does not block, so Close waits for
		// it rather than leave a goroutine behind, and says so if it is late.
		t := time.NewTimer(closeTimeout + 500*time.Millisecond)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			b.closeErr = errors.New("embedded broker: not stopped after 2.5 s")
			b.log.Warn("embedded broker is slow to stop; waiting for it", "err", b.closeErr)
			<-done
		}
	})
	return b.closeErr
}

// tcpListener is mochi's TCP listener (listeners.TCP) with a different
// Close. mochi's own, via Server.closeListenerClients and
// Clients.GetByListener, takes the clients' read lock twice and deadlocks
// when a client connects or disconnects at that moment
// (mochi-mqtt/server#488, fixes pending in #489 and #507); and a
// connection accepted just before Close calls ClientsWg.Add while
// Server.Close is already in ClientsWg.Wait. This one refuses new
// connections, closes every accepted one and returns once all of them are
// done with mochi, so Server.Close finds nothing left to wait for.
type tcpListener struct {
	srv    *mochi.Server
	busy   *busyHook
	queued *queueHook
	addr   string
	ln     net.Listener
	log    *slog.Logger

	mu      sync.Mutex
	closing bool
	conns   map[net.Conn]bool // accepted and still with mochi
	idle    chan struct{}     // closed once closing and conns is empty
	once    sync.Once
}

// clientReadSlack is how late a client's keepalive deadline may pass:
// mochi asks for 1.5 × keepalive (seconds to minutes) after every packet,
// and moving the socket's deadline once a second instead of per packet is
// what the slack buys.
const clientReadSlack = time.Second

func (l *tcpListener) ID() string       { return "tcp" }
func (l *tcpListener) Protocol() string { return "tcp" }

func (l *tcpListener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

func (l *tcpListener) Init(log *slog.Logger) error {
	l.log = log
	l.conns = make(map[net.Conn]bool)
	l.idle = make(chan struct{})
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return err
	}
	l.ln = ln
	return nil
}

func (l *tcpListener) Serve(establish listeners.EstablishFn) {
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		if l.closing {
			l.mu.Unlock()
			conn.Close()
			continue
		}
		l.conns[conn] = true
		l.mu.Unlock()
		go func() {
			// mochi reads and writes through a net.Conn; raw calls spare
			// the runtime's monitor thread a wake-up per packet, and mochi
			// refreshing its keepalive deadline on every packet read a
			// timer update each (see clientReadSlack).
			c := conn
			if rc, err := rawio.NewConn(conn, defaultWriteWait, clientReadSlack); err == nil {
				c = rc
			}
			if err := establish(l.ID(), c); err != nil {
				l.log.Debug("client connection ended", "remote", conn.RemoteAddr().String(), "err", err)
			}
			l.mu.Lock()
			delete(l.conns, conn)
			if l.closing && len(l.conns) == 0 {
				close(l.idle)
			}
			l.mu.Unlock()
		}()
	}
}

// Close stops accepting, disconnects this listener's clients and waits
// (bounded) until mochi is done with each connection. It ignores mochi's
// CloseFn; see the type's comment.
func (l *tcpListener) Close(listeners.CloseFn) {
	l.once.Do(func() {
		if l.ln == nil {
			return
		}
		l.ln.Close()
		mine := l.srv.Clients.GetAll()
		for id, cl := range mine {
			if cl.Net.Listener != l.ID() || cl.Closed() {
				delete(mine, id)
			}
		}
		l.drain(mine)
		for _, cl := range mine {
			if !cl.Closed() {
				_ = l.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
			}
		}
		l.mu.Lock()
		l.closing = true
		for c := range l.conns {
			c.Close() // also those still before their CONNECT
		}
		if len(l.conns) == 0 {
			close(l.idle)
		}
		l.mu.Unlock()
		t := time.NewTimer(closeTimeout)
		defer t.Stop()
		select {
		case <-l.idle:
		case <-t.C:
			l.log.Warn("connections still open after 2 s")
		}
	})
}

// drain gives each client's writer a bounded chance to send what mochi has
// queued for it before the connections are cut: the bridge's own retained
// `offline`, published while it disconnects, sits in its subscribers'
// queues for a moment after mochi acknowledged it, and mochi's Stop
// closes the socket without flushing.
func (l *tcpListener) drain(clients map[string]*mochi.Client) {
	deadline := time.Now().Add(drainTimeout)
	// First the packets mochi is still handling: it acknowledges a QoS 1
	// publish before it passes it to the subscribers, so the bridge's
	// `offline` can have its PUBACK while no queue holds it yet.
	for !l.busy.idle() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling mochi's handlers: they have no signal to wait on
	}
	for _, cl := range clients {
		for l.queued.pending(cl) > 0 && !cl.Closed() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond) // polling mochi's queue: it has no signal to wait on
		}
	}
}

// queueHook counts, through mochi's public hooks, the publishes queued for
// each client and not yet written: +1 for each subscriber of a routed
// publish (mochi routes before OnPublished, to the clients Topics.Subscribers
// names) and for each retained message sent on subscribe; −1 when one is
// written (OnPacketSent) or dropped. The count errs only on the safe side
// of a bounded wait, except for shared subscriptions (mochi picks their
// client at random) and for $SYS topics, which mochi routes without a hook:
// neither is counted; nor is a subscriber whose subscription races the
// publish (mochi routes to it before OnSubscribed says so).
//
// Routing a topic a second time costs as much as mochi's own routing (a
// scan of the topic tree that builds maps), so the clients a topic routes
// to are kept per topic until anyone's subscriptions may have changed.
type queueHook struct {
	mochi.HookBase
	srv    *mochi.Server
	mu     sync.Mutex
	queued map[*mochi.Client]int
	routes map[string][]route // topic → its subscribers; emptied on any (un)subscribe or session change
	epoch  uint64             // counts the emptyings: routes found before one are not kept
}

// route is one client a topic's publishes are queued for.
type route struct {
	cl      *mochi.Client
	noLocal bool // not for the client's own publishes
}

// maxRoutes bounds the topics whose routes are kept; past it they are
// dropped and routed afresh.
const maxRoutes = 1024

func (h *queueHook) ID() string { return "pibridge-queued" }

func (h *queueHook) Provides(b byte) bool {
	switch b {
	case mochi.OnPublished, mochi.OnRetainPublished, mochi.OnPacketSent, mochi.OnPublishDropped, mochi.OnDisconnect,
		mochi.OnSubscribed, mochi.OnUnsubscribed, mochi.OnSessionEstablished:
		return true
	}
	return false
}

// OnPublished runs after mochi has queued pk for its subscribers.
func (h *queueHook) OnPublished(_ *mochi.Client, pk packets.Packet) {
	if pk.Ignore {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	routes, known := h.routes[pk.TopicName]
	if !known {
		// Routed outside the lock, which every written packet takes.
		epoch := h.epoch
		h.mu.Unlock()
		routes = h.route(pk.TopicName)
		h.mu.Lock()
		if h.epoch == epoch {
			if len(h.routes) >= maxRoutes {
				clear(h.routes)
			}
			h.routes[pk.TopicName] = routes
		}
	}
	for _, r := range routes {
		if (!r.noLocal || pk.Origin != r.cl.ID) && !r.cl.Closed() {
			h.queued[r.cl]++
		}
	}
}

// route lists the clients mochi queues a publish on topic for.
func (h *queueHook) route(topic string) []route {
	subs := h.srv.Topics.Subscribers(topic)
	routes := make([]route, 0, len(subs.Subscriptions))
	for id, sub := range subs.Subscriptions {
		if cl, ok := h.srv.Clients.Get(id); ok && !cl.Net.Inline {
			routes = append(routes, route{cl: cl, noLocal: sub.NoLocal})
		}
	}
	return routes
}

// forgetRoutes drops the kept routes: who subscribes to what may have
// changed.
func (h *queueHook) forgetRoutes() {
	h.mu.Lock()
	h.forgetRoutesLocked()
	h.mu.Unlock()
}

func (h *queueHook) forgetRoutesLocked() {
	clear(h.routes)
	h.epoch++
}

func (h *queueHook) OnSubscribed(*mochi.Client, packets.Packet, []byte) { h.forgetRoutes() }
func (h *queueHook) OnUnsubscribed(*mochi.Client, packets.Packet)       { h.forgetRoutes() }

// OnSessionEstablished: a new client, or one taking over a session and
// its subscriptions.
func (h *queueHook) OnSessionEstablished(*mochi.Client, packets.Packet) { h.forgetRoutes() }

func (h *queueHook) OnRetainPublished(cl *mochi.Client, _ packets.Packet) { h.add(cl, 1) }

func (h *queueHook) OnPacketSent(cl *mochi.Client, pk packets.Packet, _ []byte) {
	// A resend (Dup) was counted when it first went out.
	if pk.FixedHeader.Type == packets.Publish && !pk.FixedHeader.Dup && !strings.HasPrefix(pk.TopicName, "$SYS") {
		h.add(cl, -1)
	}
}

func (h *queueHook) OnPublishDropped(cl *mochi.Client, _ packets.Packet) { h.add(cl, -1) }

func (h *queueHook) OnDisconnect(cl *mochi.Client, _ error, _ bool) {
	h.mu.Lock()
	delete(h.queued, cl)
	h.forgetRoutesLocked() // a clean session's subscriptions go with it
	h.mu.Unlock()
}

func (h *queueHook) add(cl *mochi.Client, d int) {
	h.mu.Lock()
	h.queued[cl] += d
	h.mu.Unlock()
}

// pending is how many publishes queued for cl are not written yet; only
// meaningful once mochi is handling no packet (see drain).
func (h *queueHook) pending(cl *mochi.Client) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.queued[cl]
}

// busyHook knows which clients' packets mochi is handling right now: from
// reading a packet to having processed it (or the client being gone). A
// few of mochi's paths end a packet without OnPacketProcessed (some
// errors), so a mark older than busyStale no longer counts: mochi handles a
// packet in microseconds.
type busyHook struct {
	mochi.HookBase
	mu   sync.Mutex
	busy map[*mochi.Client]time.Time // when the packet being handled was read
}

const busyStale = 100 * time.Millisecond

func (h *busyHook) ID() string { return "pibridge-busy" }

func (h *busyHook) Provides(b byte) bool {
	switch b {
	case mochi.OnPacketRead, mochi.OnPacketProcessed, mochi.OnSessionEstablished, mochi.OnDisconnect:
		return true
	}
	return false
}

func (h *busyHook) OnPacketRead(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	h.mu.Lock()
	h.busy[cl] = time.Now()
	h.mu.Unlock()
	return pk, nil
}

func (h *busyHook) OnPacketProcessed(cl *mochi.Client, _ packets.Packet, _ error) { h.done(cl) }

// OnSessionEstablished ends the CONNECT read while the connection was set
// up: mochi handles it outside processPacket.
func (h *busyHook) OnSessionEstablished(cl *mochi.Client, _ packets.Packet) { h.done(cl) }

func (h *busyHook) OnDisconnect(cl *mochi.Client, _ error, _ bool) { h.done(cl) }

func (h *busyHook) done(cl *mochi.Client) {
	h.mu.Lock()
	delete(h.busy, cl)
	h.mu.Unlock()
}

func (h *busyHook) idle() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for cl, since := range h.busy {
		if time.Since(since) < busyStale {
			return false
		}
		delete(h.busy, cl)
	}
	return true
}

// drainTimeout bounds drain over all clients: a subscriber that stopped
// reading must not hold up a shutdown that systemd times.
const drainTimeout = time.Second

// quietHandler keeps mochi's routine records out of the bridge's log:
// Info (listener attached, server started) becomes Debug, and so does the
// empty-message Warn mochi logs whenever a client's connection ends, which
// for a broker is routine.
type quietHandler struct{ h slog.Handler }

func (q quietHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return q.h.Enabled(ctx, quieter(l, "-"))
}

func (q quietHandler) Handle(ctx context.Context, r slog.Record) error {
	r.Level = quieter(r.Level, r.Message)
	if r.Message == "" {
		r.Message = "client connection ended"
	}
	if !q.h.Enabled(ctx, r.Level) {
		return nil
	}
	return q.h.Handle(ctx, r)
}

func (q quietHandler) WithAttrs(as []slog.Attr) slog.Handler { return quietHandler{q.h.WithAttrs(as)} }
func (q quietHandler) WithGroup(g string) slog.Handler       { return quietHandler{q.h.WithGroup(g)} }

func quieter(l slog.Level, msg string) slog.Level {
	switch {
	case l >= slog.LevelError:
		return l
	case l >= slog.LevelWarn && msg != "":
		return l
	case l >= slog.LevelInfo:
		return slog.LevelDebug
	}
	return l
}

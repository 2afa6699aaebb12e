package ws

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"pibridge"
	"pibridge/httpx"
)

// Options configure a Server.
type Options struct {
	Core   *pibridge.Core
	Config Config // zero Listen and MaxClients take their defaults
	Logger *slog.Logger
	// Sessions, from the Server this one replaces, keeps the panel's
	// logins; pass it only when the tokens did not change.
	Sessions Sessions
	// Hostname is this machine's name for the Host check; os.Hostname()
	// when empty.
	Hostname string
	// StateDir keeps the generated token (StateDir/token, 0600) when
	// Config.Listen is beyond loopback and no token is configured; New
	// fails when it is needed and empty.
	StateDir string
	// Passthrough carries the browser's subscribe/unsubscribe/publish to
	// MQTT, for topic filters inside BridgeAllow (mqtt.bridge_allow). With
	// BridgeAllow empty those messages answer "not enabled"; BridgeAllow
	// without a Passthrough is an error.
	Passthrough Passthrough
	BridgeAllow []string
}

// Server is the browser-facing live API. It subscribes to the core once
// (in Run) and fans every reading out to all WebSocket clients; see hub
// and mailbox for how a slow client is kept from slowing the others.
type Server struct {
	core *pibridge.Core
	cfg  Config
	log  *slog.Logger
	hub  *hub
	// release gives memory back after a burst of connections.
	release *burstRelease
	// idle watches the sockets of parked readers (see idleConn); nil
	// until Run, and where it could not be made.
	idle *poller

	upgrader websocket.Upgrader
	gate     *gatekeeper // who may come in: Host, Origin, tokens, sessions, slow-down

	certs               *certSource // nil without http.tls
	helloHead, metaHead []byte      // hello and /api/state up to the signals

	pass       Passthrough
	allow      []string
	mqttFrames frameMemo // MQTT messages framed once for all their browsers

	nconns     atomic.Int64 // open or opening WebSocket connections
	slowClosed atomic.Uint64

	// Every upgraded connection, from the upgrade until its goroutine
	// ends, so that shutdown can close and wait for all of them.
	connMu     sync.Mutex
	conns      map[*websocket.Conn]bool // true while waiting for the auth frame
	connClosed bool
	connWG     sync.WaitGroup

	started atomic.Bool
	running chan struct{} // closed when Run has subscribed
	stopped chan struct{} // closed when Run is shutting down

	// Commands in flight, cancelled when Run's context ends.
	cmdMu      sync.Mutex
	cmdCancels map[*context.CancelFunc]struct{}
	cmdStopped bool

	tune tuning
}

// tuning holds the timings and bounds; tests shorten them.
type tuning struct {
	writeWait      time.Duration // for one frame to be written
	pongWait       time.Duration // silence after which a client is dead
	pingPeriod     time.Duration // 9/10 of pongWait
	closeWait      time.Duration // for our close frame to be written
	closeGrace     time.Duration // for the client's close reply
	commandTimeout time.Duration // for core.Execute
	shutdownGrace  time.Duration // for all clients to close at shutdown
	maxReplies     int           // queued replies per client
	maxReplyBytes  int
	sendBuffer     int           // SO_SNDBUF of each connection; 0: the kernel's autotuning
	idleAfter      time.Duration // silence after which a reader parks (see idleConn)
	authWait       time.Duration // for the auth frame of a connection without credentials
	maxPending     int           // connections not yet authenticated at once
	maxPendingAddr int           // of which from one address (clientAddr)

	sessionTTL     time.Duration // a login lasts this long
	maxSessions    int
	limiterSize    int           // addresses the limiter remembers
	freeFailures   int           // wrong tokens an address may send before it is slowed down
	failDelay      time.Duration // the first wait, doubled with each further failure…
	maxFailDelay   time.Duration // …up to this
	forgetFailures time.Duration // quiet time after which an address starts afresh

	now func() time.Time
	// beforeTake, when set, runs in a writer goroutine before each take
	// from its mailbox: tests hold writers with it to make clients slow.
	beforeTake func()
}

func defaultTuning() tuning {
	const pongWait = 60 * time.Second
	return tuning{
		writeWait:      10 * time.Second,
		pongWait:       pongWait,
		pingPeriod:     pongWait * 9 / 10,
		closeWait:      time.Second,
		closeGrace:     time.Second,
		commandTimeout: 10 * time.Second,
		shutdownGrace:  2 * time.Second,
		// The reply queue is bounded by bytes first; the count only bounds
		// the queue's slice (32 bytes an entry, 128 KiB at most). MQTT
		// messages are events, never coalesced: a message that does not fit
		// closes the client with 1008 rather than being dropped, so the
		// bound is the slack a client that keeps up on average has for a
		// burst, or for its writer waiting for the one core: 4096
		// ~100-byte messages are 80 ms at 50k msg/s, and 1 MiB caps the
		// memory a client that stops reading can hold before it is closed
		// (MQTT frames are shared by all the clients that queue them, so
		// clients behind on the same messages hold them once). A client
		// whose socket stays full is closed by writeWait as well.
		maxReplies:    4096,
		maxReplyBytes: 1 << 20,
		// The kernel's send buffer per connection. Left to autotuning it
		// grows to 4 MiB (tcp_wmem), so a client that stops reading
		// holds megabytes of kernel memory and is noticed only after
		// minutes of a slow stream; 128 KiB still carries a panel's
		// stream over any LAN (it is 1 s of 128 KiB/s at a 1 s RTT).
		sendBuffer:     128 << 10,
		idleAfter:      20 * time.Millisecond,
		authWait:       10 * time.Second,
		maxPending:     32,
		maxPendingAddr: 8,
		sessionTTL:     7 * 24 * time.Hour,
		maxSessions:    256,
		limiterSize:    1024,
		freeFailures:   3,
		failDelay:      time.Second,
		maxFailDelay:   5 * time.Minute,
		forgetFailures: 15 * time.Minute,
		now:            time.Now,
	}
}

const (
	// maxMessageSize is the largest client frame; gorilla closes with 1009
	// beyond it.
	maxMessageSize = 64 << 10
	// readBufferSize is small: clients send a few short commands, and this
	// buffer lives as long as the connection. Larger frames are read through
	// it in pieces.
	readBufferSize = 256 // gorilla wants 125 (a control frame) at least
	// writeBufferSize is gorilla's write buffer, which we never use (see
	// client): with writeBufferPool, a connection holds none.
	writeBufferSize = 4096
)

// writeBufferPool keeps gorilla from giving every connection a write
// buffer: gorilla writes only control frames, which need none.
var writeBufferPool = &sync.Pool{}

// New returns a Server for the core's signals. It reads token_file, and
// generates StateDir/token when it has to (see Options.StateDir).
func New(o Options) (*Server, error) {
	if o.Core == nil {
		return nil, errors.New("ws: Options.Core is nil")
	}
	if len(o.BridgeAllow) > 0 && o.Passthrough == nil {
		return nil, errors.New("ws: Options.BridgeAllow is set but Options.Passthrough is nil")
	}
	if err := validateAllow(o.BridgeAllow); err != nil {
		return nil, err
	}
	cfg := o.Config
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ws: config: %w", err)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Hostname == "" {
		o.Hostname, _ = os.Hostname() // without it, IP literals and localhost still work
	}
	s := &Server{
		core:    o.Core,
		cfg:     cfg,
		log:     o.Logger,
		hub:     newHub(o.Core.Signals()),
		release: newBurstRelease(),
		running: make(chan struct{}),
		stopped: make(chan struct{}),
		tune:    defaultTuning(),
		conns:   make(map[*websocket.Conn]bool),
		pass:    o.Passthrough,
		allow:   append([]string(nil), o.BridgeAllow...),
	}
	if cfg.TLS.Enabled() {
		certs, err := newCertSource(cfg.TLS, o.Logger, time.Now)
		if err != nil {
			return nil, err
		}
		s.certs = certs
	}
	gate, err := newGatekeeper(cfg, o.Hostname, o.StateDir, o.Logger, &s.tune)
	if err != nil {
		return nil, err
	}
	s.gate = gate
	if o.Sessions.st != nil {
		s.gate.sessions = o.Sessions.st
	}
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout:  10 * time.Second,
		ReadBufferSize:    readBufferSize,
		WriteBufferSize:   writeBufferSize,
		WriteBufferPool:   writeBufferPool,
		EnableCompression: false, // SetReadLimit counts compressed bytes
		CheckOrigin:       s.gate.originAllowed,
		Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
			httpx.WriteError(w, status, reason.Error())
		},
	}
	d := o.Core.Device()
	s.helloHead = pibridge.AppendDescription([]byte(pibridge.HelloPrefix), d, o.Core.Signals())
	// Fixed for the run: how its seqs join the previous run's.
	run := o.Core.RunInfo()
	s.helloHead = pibridge.AppendRunJSON(append(s.helloHead, ','), run)
	if s.bridgeOn() {
		// The panel's MQTT view subscribes to exactly these.
		s.helloHead = append(s.helloHead, `,"bridge_allow":[`...)
		for i, f := range s.allow {
			if i > 0 {
				s.helloHead = append(s.helloHead, ',')
			}
			s.helloHead = pibridge.AppendJSONString(s.helloHead, f)
		}
		s.helloHead = append(s.helloHead, ']')
	}
	s.metaHead = pibridge.AppendDescription([]byte(`{`), d, o.Core.Signals())
	s.metaHead = pibridge.AppendRunJSON(append(s.metaHead, ','), run)
	return s, nil
}

// Routes registers /ws and /api/* on mux with method patterns.
func (s *Server) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /ws", s.ServeWS)
	mux.HandleFunc("GET /api/state", s.ServeState)
	mux.HandleFunc("POST /api/signals/{name}", s.ServeSignal)
	mux.HandleFunc("GET /api/history", s.ServeHistory)
	mux.HandleFunc("POST /api/login", s.ServeLogin)
	mux.HandleFunc("POST /api/logout", s.ServeLogout)
}

// ServeLogin serves POST /api/login (see gatekeeper.serveLogin).
func (s *Server) ServeLogin(w http.ResponseWriter, r *http.Request) { s.gate.serveLogin(w, r) }

// ServeLogout serves POST /api/logout: it ends the session, closes the
// WebSockets opened with it (4401), and clears the cookie.
func (s *Server) ServeLogout(w http.ResponseWriter, r *http.Request) {
	if !s.gate.precheck(w, r) || !allowMethod(w, r, http.MethodPost) {
		return
	}
	if ck, err := r.Cookie(sessionCookie); err == nil {
		if key, ok := s.gate.sessions.remove(ck.Value); ok {
			for _, c := range s.hub.connected() {
				if c.session == key {
					c.mb.close(closeUnauthorized, "logged out")
				}
			}
		}
	}
	http.SetCookie(w, httpx.NewSessionCookie(r, "", -1))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// Clients returns the number of open WebSocket connections, counting those
// being opened or closed.
func (s *Server) Clients() int { return int(s.nconns.Load()) }

// SlowClosed returns how many clients were disconnected for being too
// slow: a reply queue overflowed, or a frame could not be written within
// the write deadline.
func (s *Server) SlowClosed() uint64 { return s.slowClosed.Load() }

// AuthFailures returns how many wrong tokens were presented (bearer,
// auth frame or login), for /metrics.
func (s *Server) AuthFailures() uint64 { return s.gate.failures.Load() }

// Run subscribes to the core and runs the fan-out until ctx ends. Then it
// closes every client with 1001 "going away" and returns once they are
// gone (forcing the stragglers after a grace period). Commands in flight
// are cancelled with ctx.
func (s *Server) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("ws: Run called twice")
	}
	snapshot, unsubscribe := s.core.Subscribe(s.hub)
	s.hub.start(snapshot)
	polled := make(chan struct{})
	if p, err := newPoller(s.tune.pongWait / 10); err == nil {
		s.idle = p
		go func() { defer close(polled); p.run() }()
	} else {
		s.log.Warn("idle websocket connections keep a goroutine each", "err", err)
		close(polled)
	}
	close(s.running)
	s.hub.run(ctx, s.tune.pingPeriod)
	s.cancelCommands()
	unsubscribe()
	s.shutdown()
	if s.idle != nil {
		s.idle.close()
	}
	<-polled
	return nil
}

func (s *Server) shutdown() {
	s.release.stop()
	clients := s.hub.close()
	for _, c := range clients {
		c.stay() // a parked reader runs again, to see the close
	}
	close(s.stopped)
	s.connMu.Lock()
	s.connClosed = true
	var pending []*websocket.Conn
	for conn, waiting := range s.conns {
		if waiting {
			pending = append(pending, conn)
		}
	}
	s.connMu.Unlock()
	for _, c := range clients {
		c.mb.close(websocket.CloseGoingAway, "going away")
	}
	// Wake connections waiting for their auth frame; each sees stopped
	// and closes itself with 1001.
	for _, conn := range pending {
		conn.NetConn().SetReadDeadline(time.Now())
	}
	done := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(done)
	}()
	t := time.NewTimer(s.tune.shutdownGrace)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	// Clients that neither took our close frame nor answered it in time.
	s.connMu.Lock()
	left := make([]*websocket.Conn, 0, len(s.conns))
	for conn := range s.conns {
		left = append(left, conn)
	}
	s.connMu.Unlock()
	for _, conn := range left {
		conn.Close()
	}
	<-done
}

// commandContext bounds a command by commandTimeout; Run's end cancels it
// too (cancelCommands).
func (s *Server) commandContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), s.tune.commandTimeout)
	s.cmdMu.Lock()
	defer s.cmdMu.Unlock()
	if s.cmdStopped {
		cancel()
		return ctx, cancel
	}
	if s.cmdCancels == nil {
		s.cmdCancels = make(map[*context.CancelFunc]struct{})
	}
	key := &cancel
	s.cmdCancels[key] = struct{}{}
	return ctx, func() {
		cancel()
		s.cmdMu.Lock()
		delete(s.cmdCancels, key)
		s.cmdMu.Unlock()
	}
}

// cancelCommands cancels the commands in flight and every later one.
func (s *Server) cancelCommands() {
	s.cmdMu.Lock()
	defer s.cmdMu.Unlock()
	s.cmdStopped = true
	for cancel := range s.cmdCancels {
		(*cancel)()
	}
	clear(s.cmdCancels)
}

// stopping reports whether Run is shutting down.
func (s *Server) stopping() bool {
	select {
	case <-s.stopped:
		return true
	default:
		return false
	}
}

// ServeWS serves GET /ws (README: WebSocket protocol): a hello first, then readings, and one
// reply per client message that carries an id. Without credentials (and
// with a token configured) the first frame must be an auth message. A
// request that arrives before Run has subscribed waits for it; after Run
// has ended it gets 503, as it does beyond max_clients.
func (s *Server) ServeWS(w http.ResponseWriter, r *http.Request) {
	acc, adm, ok := s.gate.guard(w, r, true)
	if !ok {
		return
	}
	select {
	case <-s.running:
	case <-s.stopped:
	case <-r.Context().Done():
		return
	}
	if s.stopping() {
		httpx.WriteError(w, http.StatusServiceUnavailable, "shutting down")
		return
	}
	if n := s.nconns.Add(1); n > int64(s.cfg.MaxClients) {
		s.nconns.Add(-1)
		w.Header().Set("Retry-After", "10")
		httpx.WriteError(w, http.StatusServiceUnavailable, fmt.Sprintf("too many clients (max_clients is %d)", s.cfg.MaxClients))
		return
	}
	addr := httpx.ClientAddr(r.RemoteAddr)
	if adm != admitted {
		// Connections that have proved nothing yet get a small share, so
		// that they cannot keep the others out; and one address gets a
		// share of that, so that it cannot keep other addresses out.
		if msg, ok := s.gate.takePending(addr); !ok {
			s.nconns.Add(-1)
			w.Header().Set("Retry-After", "10")
			httpx.WriteError(w, http.StatusServiceUnavailable, msg)
			return
		}
	}
	hj := &hijacker{ResponseWriter: w}
	conn, err := s.upgrader.Upgrade(hj, r, nil)
	if err == nil && !s.track(conn, adm == admitFrame) {
		conn.Close() // Run has ended meanwhile: like a failed upgrade
		err = errors.New("shutting down")
	}
	if err != nil {
		if adm != admitted {
			s.gate.releasePending(addr)
		}
		s.nconns.Add(-1)
		s.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return // Upgrade has replied
	}
	// The connection gets a fresh goroutine and this handler returns:
	// while it runs, net/http keeps its connection state alive (two 4 KiB
	// buffers, the request and response, a deep stack), 15 KiB per idle
	// client that the hijacked connection never uses again.
	go s.serveConn(conn, hj.ic, acc, adm, r.RemoteAddr)
}

// track registers an upgraded connection for shutdown; false once Run is
// shutting down.
func (s *Server) track(conn *websocket.Conn, waiting bool) bool {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.connClosed {
		return false
	}
	s.conns[conn] = waiting
	s.connWG.Add(1) // under connMu, before shutdown's Wait
	return true
}

// authenticated marks a connection as past its auth frame.
func (s *Server) authenticated(conn *websocket.Conn) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if _, ok := s.conns[conn]; ok {
		s.conns[conn] = false
	}
}

// serveConn owns an upgraded connection: it authenticates it when the
// request could not, joins the hub, and hands the connection to its reader.
func (s *Server) serveConn(conn *websocket.Conn, ic *idleConn, acc access, adm admission, remote string) {
	var c *client
	switch adm {
	case admitStale:
		s.reject(conn, closeUnauthorized, "session expired or unknown: log in again")
		s.gate.releasePending(httpx.ClientAddr(remote))
	case admitFrame:
		var authMsg message
		var ok bool
		acc, authMsg, ok = s.awaitAuth(conn, remote)
		s.gate.releasePending(httpx.ClientAddr(remote))
		if ok {
			s.authenticated(conn)
			c = s.join(conn, ic, acc, remote, authMsg.id)
		}
	default:
		c = s.join(conn, ic, acc, remote, "")
	}
	if c == nil {
		s.untrack(conn)
		return
	}
	// The reader starts on a fresh goroutine, and this one ends: the work
	// above has grown its stack past the 2 KiB the reader needs while it
	// waits, and an idle connection would keep that stack for its life.
	c.serve()
}

// untrack undoes track once a connection is closed.
func (s *Server) untrack(conn *websocket.Conn) {
	s.connMu.Lock()
	delete(s.conns, conn)
	s.connMu.Unlock()
	s.nconns.Add(-1)
	s.connWG.Done() // last: Run may return once every connection has come here
}

// join makes an authenticated connection a client of the hub with its
// hello queued; nil when the hub is closed (the connection is closed too).
func (s *Server) join(conn *websocket.Conn, ic *idleConn, acc access, remote, authID string) *client {
	c := newClient(s, conn, ic, acc, remote)
	state, ok := s.hub.join(c, nil)
	if !ok {
		s.reject(conn, websocket.CloseGoingAway, "going away")
		return nil
	}
	// The hello goes first; until it is queued no writer starts, so the
	// readings the hub queues meanwhile wait behind it.
	c.mb.setFirst(textFrame(s.appendHello(newFrame(len(s.helloHead)+80+len(state)*96), state, c.readOnly)), c.writeLoop)
	if authID != "" {
		// The hello answers the auth message; one that carries an id gets
		// its ack too, written right after the hello.
		c.ackErr(authID, nil)
	}
	s.release.joined()
	s.log.Debug("websocket client connected", "remote", remote, "clients", s.Clients())
	return c
}

// awaitAuth reads the first frame of a connection that came without
// credentials. It must be {"type":"auth","token":…} within authWait; any
// other outcome closes the connection (4401; 4429 while the address is
// slowed down; 1001 at shutdown) and returns ok=false.
func (s *Server) awaitAuth(conn *websocket.Conn, remote string) (acc access, m message, ok bool) {
	conn.SetReadLimit(maxAuthFrame)
	conn.SetReadDeadline(time.Now().Add(s.tune.authWait))
	if s.stopping() { // shutdown may have woken us before the line above
		s.reject(conn, websocket.CloseGoingAway, "going away")
		return acc, m, false
	}
	addr := httpx.ClientAddr(remote)
	mt, data, err := conn.ReadMessage()
	if err != nil {
		var ne net.Error
		switch {
		case s.stopping():
			s.reject(conn, websocket.CloseGoingAway, "going away")
		case errors.Is(err, websocket.ErrReadLimit):
			drainAndClose(conn.NetConn(), s.tune.closeGrace) // gorilla has sent 1009
		case errors.As(err, &ne) && ne.Timeout():
			// Holding a slot until the deadline is as good as a wrong
			// token: it counts toward the address's slow-down.
			s.gate.failed(addr)
			s.reject(conn, closeUnauthorized, fmt.Sprintf("authentication required: no auth message within %s", s.tune.authWait))
		default:
			conn.Close() // the client left or broke the protocol
		}
		return acc, m, false
	}
	if mt == websocket.TextMessage && !utf8.Valid(data) {
		s.gate.failed(addr)
		s.reject(conn, websocket.CloseInvalidFramePayloadData, "invalid UTF-8 in a text frame")
		return acc, m, false
	}
	m, derr := decodeMessage(mt, data)
	if derr != nil || m.typ != msgAuth {
		s.gate.failed(addr)
		s.reject(conn, closeUnauthorized, `authentication required: send {"type":"auth","token":"…"} first`)
		return acc, m, false
	}
	r, code, why := s.gate.frameToken(addr, m.token)
	if r == roleNone {
		s.reject(conn, code, why)
		return acc, m, false
	}
	return access{role: r}, m, true
}

// reject closes a connection that never became a client: a close frame,
// then a moment for the client's reply.
func (s *Server) reject(conn *websocket.Conn, code int, text string) {
	err := conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text),
		time.Now().Add(s.tune.closeWait))
	if err != nil {
		conn.Close()
		return
	}
	drainAndClose(conn.NetConn(), s.tune.closeGrace)
}

// drainAndClose closes a socket after our close frame without destroying
// it: closing with unread data sends a reset, which can overtake the close
// frame. So: half-close, read what still comes for up to grace, then close.
func drainAndClose(nc net.Conn, grace time.Duration) {
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	nc.SetReadDeadline(time.Now().Add(grace))
	io.Copy(io.Discard, io.LimitReader(nc, 4*maxMessageSize))
	nc.Close()
}

func (s *Server) appendHello(b []byte, state []pibridge.Reading, readOnly bool) []byte {
	b = pibridge.AppendHelloStart(b, readOnly)
	b = append(b, s.helloHead[len(pibridge.HelloPrefix):]...)
	b = pibridge.AppendClock(append(b, ','), s.core.ClockState())
	b = append(b, `,"state":`...)
	b = appendState(b, state)
	return append(b, '}')
}

// Protect guards every route of the bridge's HTTP server, not only /ws and
// /api/*: a Host the bridge does not answer to gets 421 (a page that
// rebinds its DNS name to a loopback-only bridge could otherwise read the
// panel, /healthz and /metrics); and with http.tls set, a plain HTTP
// request is sent to https — a redirect for GET and HEAD, which is what a
// browser typing the address without a scheme does, and 400 for the rest,
// so that a client posting tokens learns to stop rather than being sent on.
func (s *Server) Protect(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.gate.hostAllowed(r.Host) {
			httpx.WriteError(w, http.StatusMisdirectedRequest, "unknown host name: add it to http.allowed_hosts")
			return
		}
		if s.certs != nil && r.TLS == nil {
			w.Header().Set("Connection", "close")
			target := "https://" + r.Host + r.URL.RequestURI()
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				httpx.WriteError(w, http.StatusBadRequest, "this port speaks HTTPS: use "+target)
				return
			}
			http.Redirect(w, r, target, http.StatusPermanentRedirect)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refuse returns the error a command on name fails with before any value
// is looked at, in the core's words.
func (s *Server) refuse(name string) error {
	_, err := s.core.CheckWritable(name)
	return err
}

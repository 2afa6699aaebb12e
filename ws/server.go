package ws

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"pibridge"
)

// Options configure a Server.
type Options struct {
	Core   *pibridge.Core
	Config Config // zero Listen and MaxClients take their defaults
	Logger *slog.Logger
	// Hostname is this machine's name for the Host check; os.Hostname()
	// when empty.
	Hostname string
}

// Server is the browser-facing live API. It subscribes to the core once
// (in Run) and fans every reading out to all WebSocket clients; see hub
// and mailbox for how a slow client is kept from slowing the others.
type Server struct {
	core *pibridge.Core
	cfg  Config
	log  *slog.Logger
	hub  *hub

	upgrader websocket.Upgrader
	hosts    map[string]bool // allowed Host names besides IP literals; lower case
	origins  map[string]bool // allowed_origins, normalised

	auth                bool
	tokenSum, readSum   [sha256.Size]byte
	hasReadToken        bool
	helloHead, metaHead []byte // hello and /api/state up to the signals

	nconns     atomic.Int64 // open or opening WebSocket connections
	slowClosed atomic.Uint64

	started atomic.Bool
	running chan struct{} // closed when Run has subscribed
	stopped chan struct{} // closed when Run is shutting down
	ctx     context.Context

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
		maxReplies:     64,
		maxReplyBytes:  256 << 10,
	}
}

const (
	// maxMessageSize is the largest client frame; gorilla closes with 1009
	// beyond it.
	maxMessageSize = 64 << 10
	// readBufferSize is small: clients send a few short commands, and this
	// buffer lives as long as the connection. Larger frames are read through
	// it in pieces.
	readBufferSize = 512
	// writeBufferSize is the pooled buffer replies are framed in; readings
	// are prepared frames and need none.
	writeBufferSize = 4096
	protocolVersion = 1
)

// writeBufferPool is shared by every connection: a connection holds a
// write buffer only while it writes a reply, not while idle.
var writeBufferPool = &sync.Pool{}

// New returns a Server for the core's signals. It reads token_file.
func New(o Options) (*Server, error) {
	if o.Core == nil {
		return nil, errors.New("ws: Options.Core is nil")
	}
	cfg := o.Config
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.MaxClients == 0 {
		cfg.MaxClients = DefaultMaxClients
	}
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
		hosts:   map[string]bool{"localhost": true},
		origins: map[string]bool{},
		running: make(chan struct{}),
		stopped: make(chan struct{}),
		tune:    defaultTuning(),
	}
	if h := strings.TrimSuffix(strings.ToLower(o.Hostname), "."); h != "" {
		s.hosts[h] = true
		s.hosts[h+".local"] = true
	}
	for _, h := range cfg.AllowedHosts {
		s.hosts[strings.TrimSuffix(strings.ToLower(h), ".")] = true
	}
	for _, o := range cfg.AllowedOrigins {
		n, _ := normalOrigin(o) // Validate has accepted it
		s.origins[n] = true
	}
	if err := s.loadTokens(); err != nil {
		return nil, err
	}
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout:  10 * time.Second,
		ReadBufferSize:    readBufferSize,
		WriteBufferSize:   writeBufferSize,
		WriteBufferPool:   writeBufferPool,
		EnableCompression: false, // SetReadLimit counts compressed bytes
		CheckOrigin:       s.originAllowed,
		Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
			writeError(w, status, reason.Error())
		},
	}
	d := o.Core.Device()
	s.helloHead = pibridge.AppendDescription([]byte(`{"type":"hello","protocol":1,`), d, o.Core.Signals())
	s.metaHead = pibridge.AppendDescription([]byte(`{`), d, o.Core.Signals())
	return s, nil
}

func (s *Server) loadTokens() error {
	token := s.cfg.Token
	if s.cfg.TokenFile != "" {
		b, err := os.ReadFile(s.cfg.TokenFile)
		if err != nil {
			return fmt.Errorf("ws: http.token_file: %w", err)
		}
		token = strings.TrimSpace(string(b))
		switch {
		case token == "":
			return fmt.Errorf("ws: http.token_file: %s is empty", s.cfg.TokenFile)
		case validToken(token) != "":
			return fmt.Errorf("ws: http.token_file: %s: %s", s.cfg.TokenFile, validToken(token))
		case token == s.cfg.ReadToken:
			return errors.New("ws: http.read_token must differ from the token in token_file")
		}
	}
	if token == "" || token == TokenNone {
		return nil
	}
	s.auth = true
	s.tokenSum = sha256.Sum256([]byte(token))
	if s.cfg.ReadToken != "" {
		s.hasReadToken = true
		s.readSum = sha256.Sum256([]byte(s.cfg.ReadToken))
	}
	if len(token) < 16 {
		s.log.Warn("the http token is short; use at least 16 random characters")
	}
	return nil
}

// Routes registers /ws and /api/* on mux with method patterns.
func (s *Server) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /ws", s.ServeWS)
	mux.HandleFunc("GET /api/state", s.ServeState)
	mux.HandleFunc("POST /api/signals/{name}", s.ServeSignal)
	mux.HandleFunc("GET /api/history", s.ServeHistory)
}

// Clients returns the number of open WebSocket connections, counting those
// being opened or closed.
func (s *Server) Clients() int { return int(s.nconns.Load()) }

// SlowClosed returns how many clients were disconnected for being too
// slow: a reply queue overflowed, or a frame could not be written within
// the write deadline.
func (s *Server) SlowClosed() uint64 { return s.slowClosed.Load() }

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
	s.ctx = ctx
	close(s.running)
	s.hub.run(ctx, func(err error) { s.log.Error("reading not broadcast", "err", err) }) // cannot happen for text frames
	unsubscribe()
	s.shutdown()
	return nil
}

func (s *Server) shutdown() {
	clients := s.hub.close()
	close(s.stopped)
	for _, c := range clients {
		c.mb.close(websocket.CloseGoingAway, "going away")
	}
	done := make(chan struct{})
	go func() {
		s.hub.conns.Wait()
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
	for _, c := range s.hub.connected() {
		c.conn.Close()
	}
	<-done
}

// ServeWS serves GET /ws (SPEC §5): a hello first, then readings, and one
// reply per client message that carries an id. A request that arrives
// before Run has subscribed waits for it; after Run has ended it gets 503,
// as it does beyond max_clients.
func (s *Server) ServeWS(w http.ResponseWriter, r *http.Request) {
	role, ok := s.guard(w, r)
	if !ok {
		return
	}
	select {
	case <-s.running:
	case <-s.stopped:
	case <-r.Context().Done():
		return
	}
	select {
	case <-s.stopped:
		writeError(w, http.StatusServiceUnavailable, "shutting down")
		return
	default:
	}
	if n := s.nconns.Add(1); n > int64(s.cfg.MaxClients) {
		s.nconns.Add(-1)
		w.Header().Set("Retry-After", "10")
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("too many clients (max_clients is %d)", s.cfg.MaxClients))
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.nconns.Add(-1)
		s.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return // Upgrade has replied
	}
	c := newClient(s, conn, role, r.RemoteAddr)
	state, ok := s.hub.join(c, nil)
	if !ok {
		conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseGoingAway, "going away"),
			time.Now().Add(s.tune.closeWait))
		conn.Close()
		s.nconns.Add(-1)
		return
	}
	s.log.Debug("websocket client connected", "remote", c.remote, "clients", s.Clients())
	go c.writeLoop(s.appendHello(make([]byte, 0, len(s.helloHead)+32+len(state)*96), state))
	// The reader gets a fresh goroutine and this handler returns: while it
	// runs, net/http keeps its connection state alive (two 4 KiB buffers,
	// the request and response, a deep stack), 15 KiB per idle client that
	// the hijacked connection never uses again.
	go s.serveConn(c)
}

// serveConn reads until the connection ends, then cleans up.
func (s *Server) serveConn(c *client) {
	err := c.readLoop()
	c.finish(err)
	s.log.Debug("websocket client gone", "remote", c.remote, "reason", err)
	s.nconns.Add(-1)
	s.hub.conns.Done() // last: Run may return once every client has come here
}

func (s *Server) appendHello(b []byte, state []pibridge.Reading) []byte {
	b = append(b, s.helloHead...)
	b = append(b, `,"state":`...)
	b = appendState(b, state)
	return append(b, '}')
}

// role is what a request's token allows.
type role uint8

const (
	roleRead role = iota + 1
	roleControl
)

// guard runs the checks every /ws and /api/* request passes, in the order
// that leaks least: Host (DNS rebinding), Origin (cross-site requests),
// then the token. It replies and returns false when one fails.
func (s *Server) guard(w http.ResponseWriter, r *http.Request) (role, bool) {
	if !s.hostAllowed(r.Host) {
		writeError(w, http.StatusMisdirectedRequest, "unknown host name: add it to http.allowed_hosts")
		return 0, false
	}
	if !s.originAllowed(r) {
		writeError(w, http.StatusForbidden, "origin not allowed: add it to http.allowed_origins")
		return 0, false
	}
	role, ok := s.authorize(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="pibridge"`)
		writeError(w, http.StatusUnauthorized, "a token is required: Authorization: Bearer <token>")
		return 0, false
	}
	return role, true
}

// hostAllowed is the DNS-rebinding defence: a page from attacker.example
// that rebinds its name to our address still sends Host: attacker.example.
func (s *Server) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSuffix(host, "]"), "["), ".")
	if host == "" {
		return false
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	return s.hosts[strings.ToLower(host)]
}

// originAllowed accepts requests without Origin (non-browser clients), and
// browser requests from the page's own host or from allowed_origins.
// It is the Upgrader's CheckOrigin too, so it never accepts everything.
func (s *Server) originAllowed(r *http.Request) bool {
	v := r.Header["Origin"]
	if len(v) == 0 {
		return true
	}
	u, err := url.Parse(v[0])
	if err != nil || u.Host == "" { // includes "null" (sandboxed frames, file://)
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	return s.origins[strings.ToLower(u.Scheme+"://"+u.Host)]
}

// authorize checks the bearer token. Tokens are compared as SHA-256 sums
// in constant time, so neither content nor length leaks through timing.
func (s *Server) authorize(r *http.Request) (role, bool) {
	if !s.auth {
		return roleControl, true
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return 0, false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	control := subtle.ConstantTimeCompare(sum[:], s.tokenSum[:])
	read := subtle.ConstantTimeCompare(sum[:], s.readSum[:])
	switch {
	case control == 1:
		return roleControl, true
	case read == 1 && s.hasReadToken:
		return roleRead, true
	}
	return 0, false
}

// errReadOnly refuses commands from a client holding the read token.
var errReadOnly = errors.New("read-only access: commands need the control token")

// refuse returns the error a command on name fails with before any value
// is looked at, in the core's words.
func (s *Server) refuse(name string) error {
	_, err := s.core.CheckWritable(name)
	return err
}

// clip keeps echoed client input short.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

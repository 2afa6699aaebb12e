package ws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"pibridge"
	"pibridge/internal/testkit"
	"pibridge/internal/testkit/fakeboard"
)

var testSignals = []pibridge.Signal{
	{Name: "led", Kind: pibridge.KindOutput},
	{Name: "relay", Kind: pibridge.KindOutput, Pulse: 2 * time.Second},
	{Name: "stuck", Kind: pibridge.KindOutput},  // the actuator hangs until its context ends
	{Name: "locked", Kind: pibridge.KindOutput}, // the actuator refuses: interlock
	{Name: "fan", Kind: pibridge.KindPWM},
	{Name: "door", Kind: pibridge.KindInput},
	{Name: "air.temperature", Kind: pibridge.KindSensor, Unit: "°C"},
	{Name: "air.humidity", Kind: pibridge.KindSensor, Unit: "%"},
}

// refuseSome makes "stuck" wait for its context and "locked" refuse: the
// outputs of the timeout and conflict tests.
func refuseSome(ctx context.Context, name string) error {
	switch name {
	case "stuck":
		<-ctx.Done()
		return ctx.Err()
	case "locked":
		return fmt.Errorf("%w: interlocked with relay", pibridge.ErrConflict)
	}
	return nil
}

// setup changes the defaults of a harness.
type setup struct {
	config   func(*Config)
	options  func(*Options)
	tune     func(*tuning)
	listener func(net.Listener) net.Listener
}

type harness struct {
	t    testing.TB
	core *pibridge.Core
	act  *fakeboard.Actuator
	srv  *Server
	ts   *httptest.Server
	url  string // ws://127.0.0.1:port/ws

	stopOnce sync.Once
	cancel   context.CancelFunc
	runErr   chan error
}

func newHarness(t testing.TB, su setup) *harness {
	t.Helper()
	core, err := pibridge.New(pibridge.Options{
		Device:   pibridge.Device{ID: "test", Name: "Test \"bench\"", Version: "0.0.1"},
		Signals:  testSignals,
		StateDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { core.Close() })
	act := fakeboard.New(core)
	act.Refuse = refuseSome
	cfg := Defaults()
	if su.config != nil {
		su.config(&cfg)
	}
	opts := Options{Core: core, Config: cfg, Hostname: "testpi"}
	if su.options != nil {
		su.options(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.tune.commandTimeout = 200 * time.Millisecond
	if su.tune != nil {
		su.tune(&srv.tune)
	}
	mux := http.NewServeMux()
	srv.Routes(mux)
	ts := httptest.NewUnstartedServer(mux)
	if su.listener != nil {
		ts.Listener = su.listener(ts.Listener)
	}
	ts.Start()
	t.Cleanup(ts.Close)

	h := &harness{t: t, core: core, act: act, srv: srv, ts: ts, url: "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws", runErr: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.runErr <- srv.Run(ctx) }()
	t.Cleanup(h.stop)
	select {
	case <-srv.running:
	case err := <-h.runErr:
		t.Fatalf("Run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not start")
	}
	return h
}

// stop ends Run and waits for it.
func (h *harness) stop() {
	h.stopOnce.Do(func() {
		h.cancel()
		select {
		case err := <-h.runErr:
			if err != nil {
				h.t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			h.t.Error("Run did not return within 10s of its context ending")
		}
	})
}

// emit emits a value and returns the reading's seq.
func (h *harness) emit(name string, v pibridge.Value) uint64 {
	h.core.Emit(name, v, time.Time{})
	r, _ := h.core.Latest(name)
	return r.Seq
}

// emitSync emits a value and waits until the hub has broadcast it, so a
// client that joins afterwards has it in its hello.
func (h *harness) emitSync(name string, v pibridge.Value) uint64 {
	h.t.Helper()
	seq := h.emit(name, v)
	waitFor(h.t, "the hub", func() bool { return h.srv.hub.lastSeq.Load() >= seq })
	return seq
}

// waitFor polls cond until it holds or 10s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, what, cond)
}

// frame is any server message, decoded loosely.
type frame struct {
	Type     string                     `json:"type"`
	ID       *string                    `json:"id"`
	Name     string                     `json:"name"`
	OK       *bool                      `json:"ok"`
	Error    string                     `json:"error"`
	Value    any                        `json:"value"`
	Unit     string                     `json:"unit"`
	TS       string                     `json:"ts"`
	Seq      uint64                     `json:"seq"`
	Protocol int                        `json:"protocol"`
	Device   map[string]string          `json:"device"`
	Signals  []map[string]any           `json:"signals"`
	State    map[string]json.RawMessage `json:"state"`
	Points   [][2]float64               `json:"points"`
	Readonly *bool                      `json:"readonly"`
	Topic    string                     `json:"topic"`
	Payload  *string                    `json:"payload"`
	Retained *bool                      `json:"retained"`
	raw      string
}

func (f frame) id() string {
	if f.ID == nil {
		return ""
	}
	return *f.ID
}

func (f frame) String() string { return f.raw }

type wsClient struct {
	t     testing.TB
	conn  *websocket.Conn
	hello frame
}

type dialOpt struct {
	header http.Header
	dialer *websocket.Dialer
	query  string // appended to the URL after "?"
	// auth, when set, is sent as the first frame: {"type":"auth","token":auth}.
	auth string
}

// dial connects and reads the hello.
func (h *harness) dial(opt dialOpt) *wsClient {
	h.t.Helper()
	conn, resp, err := h.dialRaw(opt)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		h.t.Fatalf("dial: %v (HTTP %d)", err, status)
	}
	c := &wsClient{t: h.t, conn: conn}
	h.t.Cleanup(func() { conn.Close() })
	if opt.auth != "" {
		c.send(`{"type":"auth","token":` + jsonString(opt.auth) + `}`)
	}
	c.hello = c.next()
	if c.hello.Type != "hello" {
		h.t.Fatalf("first frame is %s, want a hello", c.hello)
	}
	return c
}

func (h *harness) dialRaw(opt dialOpt) (*websocket.Conn, *http.Response, error) {
	d := opt.dialer
	if d == nil {
		d = &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	}
	u := h.url
	if opt.query != "" {
		u += "?" + opt.query
	}
	conn, resp, err := d.Dial(u, opt.header)
	if resp != nil && resp.Body != nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return conn, resp, err
}

// dialStatus dials and returns the HTTP status of a refused handshake.
func (h *harness) dialStatus(header http.Header) int {
	h.t.Helper()
	conn, resp, err := h.dialRaw(dialOpt{header: header})
	if err == nil {
		conn.Close()
		return http.StatusSwitchingProtocols
	}
	if resp == nil {
		h.t.Fatalf("dial: %v", err)
	}
	return resp.StatusCode
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func bearer(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

func (c *wsClient) send(msg string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		c.t.Fatalf("send %s: %v", msg, err)
	}
}

// next reads one frame within 5s.
func (c *wsClient) next() frame {
	c.t.Helper()
	f, err := c.read(5 * time.Second)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

func (c *wsClient) read(timeout time.Duration) (frame, error) {
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	mt, data, err := c.conn.ReadMessage()
	if err != nil {
		return frame{}, err
	}
	if mt != websocket.TextMessage {
		return frame{}, fmt.Errorf("frame type %d, want text", mt)
	}
	var f frame
	if err := json.Unmarshal(data, &f); err != nil {
		return frame{}, fmt.Errorf("%q: %v", data, err)
	}
	f.raw = string(data)
	return f, nil
}

// nextReply reads until a frame that is not a reading.
func (c *wsClient) nextReply() frame {
	c.t.Helper()
	for {
		if f := c.next(); f.Type != "reading" {
			return f
		}
	}
}

const sentinel = `{"type":"history","id":"~sentinel","name":"led","since":"1s"}`

// exchange sends msg and then a sentinel request, and returns the replies
// (not readings) that came before the sentinel's: with replies in order,
// that is everything msg caused.
func (c *wsClient) exchange(msg string) []frame {
	c.t.Helper()
	c.send(msg)
	c.send(sentinel)
	var got []frame
	for {
		f := c.nextReply()
		if f.id() == "~sentinel" {
			if f.Type != "history" {
				c.t.Fatalf("sentinel answered with %s", f)
			}
			return got
		}
		got = append(got, f)
	}
}

// closeCode reads until the connection ends and returns the close code
// (-1 when it ended without a close frame).
func (c *wsClient) closeCode(timeout time.Duration) int {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_, err := c.read(time.Until(deadline))
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.t.Fatalf("connection still open after %s", timeout)
		}
		return -1
	}
}

// gate holds writer goroutines (tuning.beforeTake) while shut.
type gate struct {
	mu sync.Mutex
	ch chan struct{}
}

func (g *gate) shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ch == nil {
		g.ch = make(chan struct{})
	}
}

func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ch != nil {
		close(g.ch)
		g.ch = nil
	}
}

func (g *gate) wait() {
	g.mu.Lock()
	ch := g.ch
	g.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

// fakePass is a Passthrough without a broker: Subscribe records the filter
// and delivers the retained messages that match it at once, from the
// caller's goroutine, as a broker's retained messages come before the
// caller has heard back; send delivers to the matching subscriptions.
type fakePass struct {
	mu        sync.Mutex
	subs      map[int]fakeSub
	next      int
	retained  map[string]string // topic → payload
	published []string          // "topic payload retain"
	failSub   error
	failPub   error
}

type fakeSub struct {
	filter  string
	deliver func(topic string, payload []byte, retained bool)
}

func newFakePass() *fakePass {
	return &fakePass{subs: map[int]fakeSub{}, retained: map[string]string{}}
}

func (p *fakePass) Subscribe(filter string, deliver func(string, []byte, bool)) (func(), error) {
	p.mu.Lock()
	if p.failSub != nil {
		p.mu.Unlock()
		return nil, p.failSub
	}
	id := p.next
	p.next++
	p.subs[id] = fakeSub{filter, deliver}
	var retained [][2]string
	for t, pl := range p.retained {
		if pibridge.FilterCovers(filter, t) {
			retained = append(retained, [2]string{t, pl})
		}
	}
	p.mu.Unlock()
	for _, r := range retained {
		deliver(r[0], []byte(r[1]), true)
	}
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		delete(p.subs, id)
	}, nil
}

func (p *fakePass) Publish(ctx context.Context, topic string, payload []byte, retain bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failPub != nil {
		return p.failPub
	}
	p.published = append(p.published, fmt.Sprintf("%s %s %v", topic, payload, retain))
	return nil
}

// send delivers a message to every subscription whose filter matches.
func (p *fakePass) send(topic, payload string) {
	p.mu.Lock()
	var to []fakeSub
	for _, s := range p.subs {
		if pibridge.FilterCovers(s.filter, topic) {
			to = append(to, s)
		}
	}
	p.mu.Unlock()
	for _, s := range to {
		s.deliver(topic, []byte(payload), false)
	}
}

// filters returns the filters subscribed now, sorted.
func (p *fakePass) filters() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, s := range p.subs {
		out = append(out, s.filter)
	}
	sort.Strings(out)
	return out
}

func (p *fakePass) publishes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.published...)
}

// deliverAll is send without its allocations, for benchmarks: it delivers
// payload to every matching subscription as mqtt.Client does, one
// callback after the other with the same slice.
func (p *fakePass) deliverAll(topic string, payload []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.subs {
		if pibridge.FilterCovers(s.filter, topic) {
			s.deliver(topic, payload, false)
		}
	}
}

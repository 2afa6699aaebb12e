package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"pibridge"
	"pibridge/httpx"
)

const (
	maxMessageSize = 64 << 10
	writeWait      = 10 * time.Second
	pongWait       = 60 * time.Second
	pingPeriod     = pongWait * 9 / 10
	authWait       = 10 * time.Second
	sendQueue      = 1024 // frames a browser may be behind before it is closed with 1008
	maxInFlight    = 32   // commands one connection may have waiting for their acks
)

// conn is one browser WebSocket: exactly one writer goroutine, which owns
// every write; others queue frames with push and never block. A browser
// that falls sendQueue frames behind is closed with 1008 (policy
// violation) so that it never slows the others.
type conn struct {
	g      *Gateway
	ws     *websocket.Conn
	dev    *device // nil on /fleet/ws
	role   role
	send   chan []byte
	stop   chan struct{} // closed by kill
	once   sync.Once
	code   int
	reason string
	cmds   sync.WaitGroup
	slots  chan struct{} // commands in flight
	ctx    context.Context
	cancel context.CancelFunc
}

func (g *Gateway) upgrader() *websocket.Upgrader {
	return &websocket.Upgrader{
		HandshakeTimeout:  10 * time.Second,
		ReadBufferSize:    1024,
		WriteBufferSize:   4096,
		EnableCompression: false, // SetReadLimit would count compressed bytes
		CheckOrigin:       g.auth.originAllowed,
		Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
			writeError(w, status, reason.Error())
		},
	}
}

// serveWS upgrades, authenticates (bearer, cookie or first frame), and
// runs the connection until either side ends it. first builds the first
// frame and registers the connection for pushes; it runs once the
// connection is authenticated.
func (g *Gateway) serveWS(w http.ResponseWriter, r *http.Request, dev *device) {
	rl, adm, ok := g.auth.guard(w, r, true)
	if !ok {
		return
	}
	if n := g.nconns.Add(1); n > int64(g.cfg.HTTP.MaxClients) {
		g.nconns.Add(-1)
		w.Header().Set("Retry-After", "10")
		writeError(w, http.StatusServiceUnavailable, "too many clients (http.max_clients is "+itoa(g.cfg.HTTP.MaxClients)+")")
		return
	}
	ws, err := g.upgrader().Upgrade(w, r, nil)
	if err != nil {
		g.nconns.Add(-1)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &conn{g: g, ws: ws, dev: dev, role: rl, send: make(chan []byte, sendQueue), stop: make(chan struct{}),
		slots: make(chan struct{}, maxInFlight), ctx: ctx, cancel: cancel}
	if !g.track(c) {
		ws.Close()
		g.nconns.Add(-1)
		cancel()
		return
	}
	g.conns.Add(1)
	go func() {
		defer g.conns.Done()
		defer g.nconns.Add(-1)
		defer g.untrack(c)
		defer cancel()
		c.serve(adm)
	}()
}

func (g *Gateway) track(c *conn) bool {
	g.connMu.Lock()
	defer g.connMu.Unlock()
	if g.closing {
		return false
	}
	g.open[c] = struct{}{}
	return true
}

func (g *Gateway) untrack(c *conn) {
	g.connMu.Lock()
	delete(g.open, c)
	g.connMu.Unlock()
}

// closeConns tells every browser the gateway is going away.
func (g *Gateway) closeConns() {
	g.connMu.Lock()
	g.closing = true
	list := make([]*conn, 0, len(g.open))
	for c := range g.open {
		list = append(list, c)
	}
	g.connMu.Unlock()
	for _, c := range list {
		c.kill(websocket.CloseGoingAway, "going away")
		// Readers end now, those waiting for an auth frame included; each
		// writer still sends its close frame first.
		c.ws.NetConn().SetReadDeadline(time.Now())
	}
}

func (c *conn) serve(adm admission) {
	ws := c.ws
	ws.SetReadLimit(maxMessageSize)
	if adm == admitFrame && !c.awaitAuth() {
		return
	}
	writerDone := make(chan struct{})
	go func() { defer close(writerDone); c.writeLoop() }()
	if !c.join() {
		c.kill(websocket.CloseGoingAway, "no such device")
	}
	ws.SetReadDeadline(time.Now().Add(pongWait))
	ws.SetPongHandler(func(string) error { return ws.SetReadDeadline(time.Now().Add(pongWait)) })
	for {
		mt, data, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) && ce.Code == websocket.CloseMessageTooBig {
				c.kill(websocket.CloseMessageTooBig, "frame over 64 KiB")
			}
			break
		}
		ws.SetReadDeadline(time.Now().Add(pongWait))
		c.handle(mt, data)
	}
	c.leave()
	c.cancel() // commands in flight end now
	c.cmds.Wait()
	c.kill(websocket.CloseNormalClosure, "")
	<-writerDone
	ws.Close()
}

// awaitAuth reads the first frame of a connection without credentials: it
// must be {"type":"auth","token":…} within authWait, else close 4401.
func (c *conn) awaitAuth() bool {
	ws := c.ws
	ws.SetReadDeadline(time.Now().Add(authWait))
	mt, data, err := ws.ReadMessage()
	fail := func(msg string) bool {
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4401, msg), time.Now().Add(time.Second))
		ws.Close()
		return false
	}
	if err != nil {
		return fail("authentication required")
	}
	var m struct {
		Type, Token string
	}
	if mt != websocket.TextMessage || json.Unmarshal(data, &m) != nil || m.Type != "auth" {
		return fail("authentication required: send {\"type\":\"auth\",\"token\":…} first")
	}
	addr := httpx.ClientAddr(ws.RemoteAddr().String())
	if c.g.auth.wait(addr) > 0 {
		return fail("too many wrong tokens; try again later")
	}
	rl := c.g.auth.check(m.Token)
	if rl == roleNone {
		c.g.auth.fail(addr)
		return fail("wrong token")
	}
	c.g.auth.forgive(addr)
	c.role = rl
	return true
}

// join queues the first frame and registers for what follows, under the
// lock that orders them: nothing can slip in between.
func (c *conn) join() bool {
	if c.dev == nil {
		return c.g.fleet.join(c)
	}
	d := c.dev
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.listed {
		return false
	}
	c.push(d.helloLocked(c.role == roleRead))
	d.clients[c] = struct{}{}
	return true
}

func (c *conn) leave() {
	if c.dev == nil {
		c.g.fleet.leave(c)
		return
	}
	c.dev.mu.Lock()
	delete(c.dev.clients, c)
	c.dev.mu.Unlock()
}

// push queues a frame without blocking; a full queue condemns the client.
func (c *conn) push(frame []byte) {
	select {
	case c.send <- frame:
	default:
		c.g.stats.slowClosed.Add(1)
		c.kill(websocket.ClosePolicyViolation, "too slow: fell behind")
	}
}

// kill makes the writer send a close frame with code and end. Safe from
// any goroutine, once; later calls do nothing.
func (c *conn) kill(code int, reason string) {
	c.once.Do(func() {
		c.code, c.reason = code, reason
		close(c.stop)
	})
}

func (c *conn) writeLoop() {
	ws := c.ws
	ping := time.NewTicker(pingPeriod)
	defer ping.Stop()
	for {
		select {
		case f := <-c.send:
			ws.SetWriteDeadline(time.Now().Add(writeWait))
			if err := ws.WriteMessage(websocket.TextMessage, f); err != nil {
				c.kill(websocket.CloseAbnormalClosure, "")
				ws.Close() // the reader ends too
				return
			}
		case <-ping.C:
			if err := ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait)); err != nil {
				ws.Close()
				return
			}
		case <-c.stop:
			if c.code != websocket.CloseAbnormalClosure {
				ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(c.code, c.reason), time.Now().Add(time.Second))
			}
			// The reader sees the peer's close reply (or the deadline) and ends.
			ws.SetReadDeadline(time.Now().Add(time.Second))
			return
		}
	}
}

// message is a browser's frame; value stays raw to be read as a Value.
type message struct {
	Type  string          `json:"type"`
	ID    json.RawMessage `json:"id"`
	Name  string          `json:"name"`
	Value json.RawMessage `json:"value"`
	For   string          `json:"for"`
	Since string          `json:"since"`
	Token string          `json:"token"`
}

func (c *conn) handle(mt int, data []byte) {
	if mt != websocket.TextMessage {
		c.push(pibridge.AppendErrorMessage(nil, "", "want text frames holding JSON"))
		return
	}
	var m message
	if err := json.Unmarshal(data, &m); err != nil {
		c.push(pibridge.AppendErrorMessage(nil, "", "malformed JSON: "+pibridge.Clip(err.Error())))
		return
	}
	id := ""
	if len(m.ID) > 0 {
		s, ok := pibridge.UnquotePlain(m.ID)
		if !ok && json.Unmarshal(m.ID, &s) != nil {
			c.push(pibridge.AppendErrorMessage(nil, "", "id must be a string"))
			return
		}
		id = s
	}
	if c.dev == nil {
		c.push(pibridge.AppendErrorMessage(nil, id, "the fleet socket takes no messages"))
		return
	}
	switch m.Type {
	case "set", "pulse":
		c.startCommand(id, &m)
	case "history":
		c.history(id, m.Name, m.Since)
	case "subscribe", "unsubscribe", "publish":
		c.push(pibridge.AppendErrorMessage(nil, id, "not enabled: a gateway has no MQTT passthrough"))
	case "auth":
		if c.g.auth.enabled {
			c.push(pibridge.AppendErrorMessage(nil, id, "already authenticated"))
		} else {
			c.push(pibridge.AppendErrorMessage(nil, id, "authentication is not required here"))
		}
	default:
		c.push(pibridge.AppendErrorMessage(nil, id, "unknown type "+strconv.Quote(pibridge.Clip(m.Type))))
	}
}

// startCommand runs a command in its own goroutine: the device's answer
// takes a round trip through the broker, and the reader must go on.
func (c *conn) startCommand(id string, m *message) {
	name := m.Name
	if c.role != roleControl {
		c.push(ack(id, name, fmt.Errorf("%s: %w", pibridge.Clip(name), pibridge.ErrReadOnly)))
		return
	}
	op := pibridge.OpSet
	var v pibridge.Value
	var dur time.Duration
	var err error
	if m.Type == "pulse" {
		op = pibridge.OpPulse
		dur, err = pibridge.ParsePulse(m.For)
	} else {
		err = v.UnmarshalJSON(m.Value)
	}
	if err != nil {
		c.push(ack(id, name, fmt.Errorf("%s: %w", pibridge.Clip(name), err)))
		return
	}
	select {
	case c.slots <- struct{}{}:
	default:
		c.push(ack(id, name, fmt.Errorf("%s: too many commands in flight (%d)", pibridge.Clip(name), maxInFlight)))
		return
	}
	c.cmds.Add(1)
	go func() {
		defer c.cmds.Done()
		defer func() { <-c.slots }()
		err := c.g.command(c.ctx, c.dev, name, op, v, dur)
		if err == nil && id == "" {
			return // without an id, the echoed reading is the confirmation
		}
		c.push(ack(id, name, err))
	}()
}

func (c *conn) history(id, name, since string) {
	d, err := pibridge.ParseSince(since)
	if err != nil {
		c.push(pibridge.AppendErrorMessage(nil, id, "history: "+err.Error()))
		return
	}
	points, err := c.g.history(c.dev, name, d)
	if err != nil {
		c.push(pibridge.AppendErrorMessage(nil, id, err.Error()))
		return
	}
	c.push(pibridge.AppendHistoryMessage(make([]byte, 0, 64+len(points)*24), id, name, points))
}

// history returns a signal's points from the gateway's ring: what it has
// seen since it started following the device.
func (g *Gateway) history(d *device, name string, since time.Duration) ([]pibridge.Point, error) {
	from := g.now().Add(-since).UnixMilli()
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.index[name]; !ok {
		return nil, fmt.Errorf("%s: %w", pibridge.Clip(name), pibridge.ErrUnknownSignal)
	}
	h := d.history[name]
	if h == nil {
		return []pibridge.Point{}, nil
	}
	return h.Since(make([]pibridge.Point, 0, h.Len()), from), nil
}

// ack frames a command's answer; the name is clipped because the gateway
// echoes names it has not checked against the device's signals.
func ack(id, name string, err error) []byte {
	return pibridge.AppendAckMessage(nil, id, pibridge.Clip(name), err)
}

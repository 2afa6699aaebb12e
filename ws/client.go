package ws

import (
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// client is one WebSocket connection with two goroutines: the reader (it
// also runs commands) and exactly one writer, fed by the mailbox. Other
// goroutines only use Close, WriteControl and deadlines on the net.Conn,
// as gorilla allows.
type client struct {
	s        *Server
	conn     *websocket.Conn
	mb       *mailbox
	remote   string
	readOnly bool
	session  sessionKey        // the login session it came with; zero for a token
	subs     map[string]func() // MQTT filter → cancel; the reader's alone
	hubIndex int               // position in hub.clients; guarded by hub.mu

	closing    atomic.Bool // our close frame is out: wait for the reply, no longer
	slow       atomic.Bool // counted in SlowClosed
	readerDone chan struct{}
	writerDone chan struct{}
}

func newClient(s *Server, conn *websocket.Conn, acc access, remote string) *client {
	// gorilla caches a PreparedMessage's frame per (server, compress,
	// level); NewPreparedMessage prepares level 0 but a connection defaults
	// to level 1, so without this every reading would be framed a second
	// time (another 5.5 KB) on its first write. Compression is off: the
	// level matters only as that cache key.
	conn.SetCompressionLevel(0)
	return &client{
		s:          s,
		conn:       conn,
		mb:         newMailbox(len(s.hub.state), s.tune.maxReplies, s.tune.maxReplyBytes),
		remote:     remote,
		readOnly:   acc.role != roleControl,
		session:    acc.session,
		subs:       make(map[string]func()),
		hubIndex:   -1,
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
	}
}

// readLoop reads client messages until the connection fails or closes.
// Commands run here, one at a time, so replies keep the order of the
// requests and one client can have at most one command in flight.
func (c *client) readLoop() error {
	c.conn.SetReadLimit(maxMessageSize)
	c.extendReadDeadline()
	c.conn.SetPongHandler(func(string) error {
		c.extendReadDeadline()
		return nil
	})
	for {
		mt, data, err := c.conn.ReadMessage()
		if err != nil {
			return err
		}
		if c.closing.Load() || c.mb.closed() {
			continue // read on only to see the client's close reply
		}
		c.handle(mt, data)
		// A command may have taken a while; that was not the client's silence.
		c.extendReadDeadline()
	}
}

// extendReadDeadline gives the client another pongWait, unless we are
// closing: then it has closeGrace to answer, and a pong must not extend
// that. The second check closes the race with sendClose.
func (c *client) extendReadDeadline() {
	if c.closing.Load() {
		return
	}
	c.conn.SetReadDeadline(time.Now().Add(c.s.tune.pongWait))
	if c.closing.Load() {
		c.conn.SetReadDeadline(time.Now().Add(c.s.tune.closeGrace))
	}
}

// writeLoop is the connection's only writer: the hello, then whatever the
// mailbox holds, and a ping every pingPeriod.
func (c *client) writeLoop(hello []byte) {
	defer close(c.writerDone)
	t := &c.s.tune
	c.conn.SetWriteDeadline(time.Now().Add(t.writeWait))
	if err := c.conn.WriteMessage(websocket.TextMessage, hello); err != nil {
		c.writeFailed(err)
		return
	}
	hello = nil // let it go: the writer lives as long as the connection
	ping := time.NewTicker(t.pingPeriod)
	defer ping.Stop()
	var b batch
	for {
		select {
		case <-c.readerDone:
			return
		case <-ping.C:
			if err := c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(t.writeWait)); err != nil {
				c.writeFailed(err)
				return
			}
			continue
		case <-c.mb.wake:
		}
		if t.beforeTake != nil {
			t.beforeTake()
		}
		if code, text := c.mb.take(&b); code != 0 {
			c.sendClose(code, text)
			return
		}
		err := c.writeBatch(&b)
		b.reset()
		if err == errStop {
			continue // condemned: the wake is pending and take returns the code
		}
		if err != nil {
			c.writeFailed(err)
			return
		}
	}
}

// errStop ends a batch early: the mailbox was condemned or the reader left.
var errStop = errors.New("stop")

func (c *client) writeBatch(b *batch) error {
	for _, it := range b.readings {
		if err := c.write(0, nil, it.v); err != nil {
			return err
		}
	}
	for _, msg := range b.replies {
		if err := c.write(websocket.TextMessage, msg, nil); err != nil {
			return err
		}
	}
	return nil
}

// write writes one message, prepared or not, within writeWait.
func (c *client) write(mt int, msg []byte, pm *websocket.PreparedMessage) error {
	if c.mb.condemned.Load() {
		return errStop
	}
	select {
	case <-c.readerDone:
		return errStop
	default:
	}
	c.conn.SetWriteDeadline(time.Now().Add(c.s.tune.writeWait))
	if pm != nil {
		return c.conn.WritePreparedMessage(pm)
	}
	return c.conn.WriteMessage(mt, msg)
}

// writeFailed handles a failed write. A timeout means the client does not
// read fast enough: it is counted as slow. Either way the connection is
// unusable now, so it is closed, which also ends the reader; when the
// reader has already left, finish closes it instead.
func (c *client) writeFailed(err error) {
	select {
	case <-c.readerDone:
		return
	default:
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.s.countSlow(c, "write timed out")
	}
	c.conn.Close()
}

// sendClose sends our close frame and gives the client closeGrace to
// answer it; the reader sees the answer (or the deadline) and finishes.
func (c *client) sendClose(code int, text string) {
	c.closing.Store(true)
	err := c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text),
		time.Now().Add(c.s.tune.closeWait))
	if err != nil {
		// Most likely the socket is full: the client cannot even take a
		// close frame. Drop it.
		c.conn.Close()
		return
	}
	c.conn.SetReadDeadline(time.Now().Add(c.s.tune.closeGrace))
}

// finish runs in the reader goroutine once reading has ended.
func (c *client) finish(readErr error) {
	c.dropSubscriptions()
	close(c.readerDone)
	// Unblock a write stuck on a dead peer; the writer checks readerDone
	// before every further write.
	c.conn.NetConn().SetWriteDeadline(time.Now())
	<-c.writerDone
	c.s.hub.leave(c)
	c.mb.close(websocket.CloseNormalClosure, "") // release what is queued
	if !errors.Is(readErr, websocket.ErrReadLimit) {
		c.conn.Close()
		return
	}
	// gorilla has sent 1009 but the rest of the oversize frame is still
	// arriving.
	drainAndClose(c.conn.NetConn(), c.s.tune.closeGrace)
}

// condemnSlow closes c with 1008 for falling behind and counts it.
func (c *client) condemnSlow(reason string) {
	if c.mb.close(websocket.ClosePolicyViolation, "too slow: "+reason) {
		c.s.countSlow(c, reason)
	}
}

// countSlow counts c as too slow, once.
func (s *Server) countSlow(c *client, reason string) {
	if c.slow.CompareAndSwap(false, true) {
		s.slowClosed.Add(1)
		s.log.Warn("websocket client too slow, disconnecting", "remote", c.remote, "reason", reason)
	}
}

package ws

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"pibridge/internal/rawio"
)

// client is one WebSocket connection: a reader goroutine (it also runs
// commands) and, while its mailbox holds something, exactly one writer
// goroutine. The writer frames and writes to the net.Conn itself, so
// nothing else may write there: pongs and the reply to the client's close
// frame are queued for it (see readLoop); gorilla itself writes only the
// close frame of a protocol error (from the reader, as the connection ends).
// A close frame is one Write call of a whole frame and so is every write
// of ours: the socket never interleaves two Writes.
type client struct {
	s        *Server
	conn     *websocket.Conn
	nc       net.Conn        // conn's socket, which the writer writes to
	raw      syscall.RawConn // nc's, when it is plain TCP (see write); nil for TLS
	ic       *idleConn       // conn's socket as gorilla reads it; nil where the reader never parks
	mb       *mailbox
	remote   string
	readOnly bool
	session  sessionKey     // the login session it came with; zero for a token
	subs     []subscription // the MQTT filters it holds; the reader's alone
	hubIndex int            // position in hub.clients; guarded by hub.mu

	closing atomic.Bool // our close frame is out: wait for the reply, no longer
	slow    atomic.Bool // counted in SlowClosed
	gone    atomic.Bool // the reader has finished: nothing more is written

	// helloSent is the writers' (one at a time, ordered by the mailbox's
	// lock): tests hold writers (beforeTake) only after the hello.
	helloSent bool
	grewStack bool // the reader's: its last message went through paho (see read)
}

func newClient(s *Server, conn *websocket.Conn, ic *idleConn, acc access, remote string) *client {
	nc := conn.NetConn()
	if ic != nil {
		nc = ic.TCPConn
	}
	if tc, ok := nc.(*net.TCPConn); ok && s.tune.sendBuffer > 0 {
		_ = tc.SetWriteBuffer(s.tune.sendBuffer) // best effort: the default only costs memory
	}
	raw, _ := rawio.RawConn(nc) // the socket itself: conn's is the idleConn wrapper
	return &client{
		s:        s,
		conn:     conn,
		nc:       nc,
		raw:      raw,
		ic:       ic,
		mb:       newMailbox(len(s.hub.state), s.tune.maxReplies, s.tune.maxReplyBytes),
		remote:   remote,
		readOnly: acc.role != roleControl,
		session:  acc.session,
		hubIndex: -1,
	}
}

// serve readies the connection for reading and starts the reader
// goroutine, which reads until the connection ends, and cleans up. It
// runs on the goroutine that upgraded the connection.
func (c *client) serve() {
	c.conn.SetReadLimit(maxMessageSize)
	c.extendReadDeadline()
	c.conn.SetPongHandler(func(string) error {
		c.extendReadDeadline()
		return nil
	})
	// gorilla's own handler would write the pong from here, beside the
	// writer; the writer sends it instead, behind what is queued.
	c.conn.SetPingHandler(func(data string) error {
		c.reply(controlFrame(opPong, data), 0)
		return nil
	})
	// gorilla's own handler would write the close reply from here too,
	// mid-flush of the writer, and move its write deadline.
	c.conn.SetCloseHandler(c.closeReply)
	if c.ic != nil && c.s.idle != nil {
		c.ic.c = c // from now on the reader may park
	}
	go c.read()
}

// read is the reader goroutine's body. Where readers park (see idleConn)
// an idle connection has none, and a parking reader gives its stack back
// whole. Elsewhere (https, not Linux) an idle reader waits deep inside
// gorilla and net, and its stack stays at the initial 2 KiB only if the
// frames above are few and small (here read and readLoop, with NextReader
// called directly). A passthrough message (a subscribe through paho, say)
// grows the stack to 8 KiB, which the collector gives back only halving at
// each cycle: after one such a reader goes on in a fresh goroutine, whose
// stack starts at 2 KiB again. Where readers park that would cost every
// passthrough publish a goroutine and a stack growth (a fifth of the
// bridge's CPU at 1k publishes/s), so they read on in place.
func (c *client) read() {
	for {
		switch err := c.readLoop(); err {
		case nil:
		case errFreshStack:
			go c.read()
			return
		default:
			c.finish(err)
			return
		}
	}
}

// errFreshStack ends readLoop after a message that grew the reader's
// stack: read goes on in a new goroutine.
var errFreshStack = errors.New("continue on a fresh stack")

// readLoop reads and handles one client message, or fails when the
// connection fails or closes. Commands run here, one at a time, so replies
// keep the order of the requests and one client can have at most one
// command in flight.
func (c *client) readLoop() error {
	// ReadMessage is these two calls, and one frame deeper (see read).
	mt, r, err := c.conn.NextReader()
	if err != nil {
		return err
	}
	if err := c.consume(mt, r); err != nil {
		return err
	}
	if c.grewStack {
		c.grewStack = false
		return errFreshStack
	}
	return nil
}

// readBufs hold one client message each while it is handled: decoding
// copies what it keeps, so a connection holds no read buffer while it
// waits, and a message costs no allocation for its bytes.
var readBufs = sync.Pool{New: func() any { return new([]byte) }}

// consume reads the rest of one message and handles it.
func (c *client) consume(mt int, r io.Reader) error {
	bp := readBufs.Get().(*[]byte)
	data, err := readAll((*bp)[:0], r)
	if err != nil {
		return err
	}
	if mt == websocket.TextMessage && !utf8.Valid(data) {
		c.mb.close(websocket.CloseInvalidFramePayloadData, "invalid UTF-8 in a text frame") // RFC 6455 section 8.1
	} else if !c.closing.Load() && !c.mb.closed() { // else read on only to see the client's close reply
		c.handle(mt, data)
		// A command may have taken a while; that was not the client's silence.
		c.extendReadDeadline()
	}
	if cap(data) <= 4<<10 { // a rare big message's buffer is not kept
		*bp = data[:0]
		readBufs.Put(bp)
	}
	return nil
}

// readAll is io.ReadAll appending to b.
func readAll(b []byte, r io.Reader) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
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

// writeState is a writer's scratch space. It is pooled, so that a
// connection holds a write buffer only while it writes.
type writeState struct {
	b   batch
	buf []byte
	raw rawio.Writer
}

// writeChunk bounds one write: a batch beyond it goes out in several. A
// batch is usually a few readings and replies of ~150 bytes; bigger
// frames (history) are written as they are, not copied.
const writeChunk = 4 << 10

var writeStates = sync.Pool{New: func() any { return &writeState{buf: make([]byte, 0, writeChunk)} }}

// writeLoop writes what the mailbox holds, the hello first, until a take
// finds nothing; the next push starts another.
func (c *client) writeLoop() {
	defer c.mb.writers.Done()
	w := writeStates.Get().(*writeState)
	defer writeStates.Put(w)
	for {
		if hook := c.s.tune.beforeTake; hook != nil && c.helloSent {
			hook()
		}
		code, text, more := c.mb.take(&w.b)
		if code != 0 {
			c.sendClose(code, text)
			c.mb.retire()
			return
		}
		if !more {
			return
		}
		err := c.writeBatch(w)
		w.b.reset()
		c.helloSent = true
		if err == errStop {
			continue // condemned: take returns the code; or the reader has left
		}
		if err != nil {
			c.writeFailed(err)
			c.mb.retire()
			return
		}
	}
}

// errStop ends a batch early: the mailbox was condemned or the reader left.
var errStop = errors.New("stop")

// writeBatch writes the batch's frames back to back, as few writes as the
// chunk size allows: one syscall for the usual handful of frames.
func (c *client) writeBatch(w *writeState) error {
	frames := w.b.frames
	if len(frames) == 1 {
		return c.write(w, frames[0])
	}
	buf := w.buf[:0]
	for _, f := range frames {
		if len(buf) > 0 && len(buf)+len(f) > cap(buf) {
			if err := c.write(w, buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
		if len(f) > cap(buf) {
			if err := c.write(w, f); err != nil {
				return err
			}
			continue
		}
		buf = append(buf, f...)
	}
	if len(buf) == 0 {
		return nil
	}
	return c.write(w, buf)
}

// write writes whole frames within writeWait. On plain TCP it writes
// with raw write(2)s (see rawio): no wake-up of the runtime's monitor
// thread, and no write deadline unless the socket is full.
func (c *client) write(w *writeState, p []byte) error {
	if c.mb.condemned.Load() || c.gone.Load() {
		return errStop
	}
	if c.raw != nil {
		return w.raw.Write(c.raw, p, c.nc, c.s.tune.writeWait)
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.s.tune.writeWait))
	_, err := c.nc.Write(p)
	return err
}

// writeFailed handles a failed write. A timeout means the client does not
// read fast enough: it is counted as slow. Either way the connection is
// unusable now, so it is closed, which also ends the reader; when the
// reader has already left, finish closes it instead.
func (c *client) writeFailed(err error) {
	if c.gone.Load() {
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.s.countSlow(c, "write timed out")
	}
	c.stay()
	c.conn.Close()
}

// sendClose sends our close frame and gives the client closeGrace to
// answer it; the reader sees the answer (or the deadline) and finishes.
func (c *client) sendClose(code int, text string) {
	c.closing.Store(true)
	c.stay()
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

// closeReply answers the client's close frame through the writer, which
// drops what is queued and sends the reply as its last frame, and waits
// for it (bounded by the writer's deadlines) so that finish does not cut
// the reply off. Once our own close frame is out, the client's is the
// answer to it and needs none.
func (c *client) closeReply(code int, _ string) error {
	if c.closing.Load() {
		return nil
	}
	// The code is echoed as gorilla does; 1005 (no code) becomes an empty
	// close payload.
	c.mb.close(code, "")
	c.mb.writers.Wait()
	return nil
}

// finish runs in the reader goroutine once reading has ended.
func (c *client) finish(readErr error) {
	c.stay() // the drain below reads on this goroutine
	if c.ic != nil && c.s.idle != nil {
		c.s.idle.forget(c.ic)
	}
	c.dropSubscriptions()
	c.gone.Store(true)
	// Unblock a write stuck on a dead peer; the writer checks gone before
	// every further write.
	c.nc.SetWriteDeadline(time.Now())
	c.mb.stop()
	c.s.hub.leave(c)
	c.mb.close(websocket.CloseNormalClosure, "") // release what is queued
	defer c.forget(readErr)
	if !errors.Is(readErr, websocket.ErrReadLimit) {
		c.conn.Close()
		return
	}
	// gorilla has sent 1009 but the rest of the oversize frame is still
	// arriving.
	drainAndClose(c.conn.NetConn(), c.s.tune.closeGrace)
}

// forget logs the end of the client and lets the server forget it.
func (c *client) forget(readErr error) {
	c.s.log.Debug("websocket client gone", "remote", c.remote, "reason", readErr)
	c.s.untrack(c.conn)
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

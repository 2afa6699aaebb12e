package ws

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"pibridge/internal/rawio"
)

// An idle connection holds no goroutine. Its reader, at a message
// boundary, hands the socket to the server's poller (one epoll set for all
// idle connections) and ends: after idleAfter (20 ms) of silence following
// a data message, so that a client sending commands a few ms apart keeps
// its reader, and at once when it has read nothing else since it started
// (a new connection after its hello, a pong). The poller starts a fresh
// reader when the socket becomes readable or the read deadline has passed
// (swept every pongWait/10); a coming close starts one at once. A
// goroutine would hold 2 KiB of stack and half a KiB of runtime state for
// the connection's life, most of what an idle connection costs otherwise;
// and as the runtime never frees a goroutine's state, however briefly
// readers linger decides how many a burst of new connections leaves
// behind: 100 ms cost 0.6–0.9 KiB per connection of 1,000 (README:
// "WebSocket protocol").
//
// The reader waits inside gorilla (NextReader loops over control frames),
// so it ends from below: idleConn is the net.Conn gorilla reads through,
// and its Read ends the goroutine (runtime.Goexit) only where no state is
// lost: where the bytes handed up so far end at a message boundary, which
// idleConn knows by following the frame headers. gorilla then holds
// nothing of the stream: it asks for more only once its buffer has no
// whole frame left, and every frame handed up is whole.

// reader states
const (
	readerRunning int32 = iota
	readerParked
)

// idleConn is a client's TCP socket as gorilla reads it.
type idleConn struct {
	*net.TCPConn
	// raw reads the socket with raw read(2)s: an ordinary one wakes the
	// runtime's monitor thread when the process was idle (see rawio).
	raw *rawio.Reader
	fr  frameTracker // the frames handed up so far; the reader's alone

	c      *client // set once the reader may park; nil before
	state  atomic.Int32
	noPark atomic.Bool // a close is coming: the reader stays
	slot   int32       // in the poller; -1 until the first park
	armed  bool        // registered with the poller (then re-armed with MOD); the reader's

	mu        sync.Mutex
	deadline  time.Time // the read deadline gorilla and we asked for
	lingering bool      // the socket has a shorter one meanwhile
}

// SetReadDeadline records t and applies it, unless the reader is
// lingering: then it applies t when it stops.
func (w *idleConn) SetReadDeadline(t time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.deadline = t
	if w.lingering {
		return nil
	}
	return w.TCPConn.SetReadDeadline(t)
}

// SetDeadline is SetReadDeadline and SetWriteDeadline.
func (w *idleConn) SetDeadline(t time.Time) error {
	if err := w.SetReadDeadline(t); err != nil {
		return err
	}
	return w.TCPConn.SetWriteDeadline(t)
}

func (w *idleConn) Read(p []byte) (int, error) {
	if w.c != nil && w.fr.atBoundary() && !w.noPark.Load() {
		if !w.fr.woken && !w.fr.data {
			// Nothing but control frames since the reader started (a
			// pong, every pingPeriod on every connection at once), or
			// nothing yet on a new connection: no reason to wait.
			if w.park() {
				runtime.Goexit()
			}
		} else if n, err, ok := w.linger(p); ok {
			return n, err
		}
	}
	n, err := w.readSocket(p)
	w.fr.feed(p[:n])
	return n, err
}

func (w *idleConn) readSocket(p []byte) (int, error) {
	if w.raw != nil {
		return w.raw.Read(p)
	}
	return w.TCPConn.Read(p)
}

// WriteTo reads through Read: net.TCPConn's own would bypass the frame
// tracking.
func (w *idleConn) WriteTo(dst io.Writer) (int64, error) {
	return io.Copy(dst, struct{ io.Reader }{w})
}

// linger reads for up to tuning.idleAfter; if nothing came, the reader parks and
// its goroutine ends here. ok=false: read on as usual.
func (w *idleConn) linger(p []byte) (n int, err error, ok bool) {
	now := time.Now()
	until := now.Add(w.c.s.tune.idleAfter)
	w.mu.Lock()
	dl := w.deadline
	if !dl.IsZero() && !until.Before(dl) {
		w.mu.Unlock()
		return 0, nil, false // the real deadline comes first
	}
	w.lingering = true
	w.TCPConn.SetReadDeadline(until)
	w.mu.Unlock()

	n, err = w.readSocket(p)

	w.mu.Lock()
	w.lingering = false
	w.TCPConn.SetReadDeadline(w.deadline)
	w.mu.Unlock()
	if n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		w.fr.feed(p[:n])
		return n, err, true
	}
	if w.park() {
		runtime.Goexit() // the poller starts the next reader
	}
	return 0, nil, false
}

// parkHook, set by tests, runs between a reader's parked state and the
// arming of its socket, where a wake may start the next reader.
var parkHook func(*idleConn)

// park hands the socket to the poller; false if it may not (then the
// reader goes on reading).
func (w *idleConn) park() bool {
	p := w.c.s.idle
	op := p.prepare(w)
	slot := w.slot                      // from the parked state on, a woken reader may finish and give it back
	w.fr.woken, w.fr.data = true, false // the next reader reads before it parks
	w.state.Store(readerParked)         // before arming: the event may come at once
	if parkHook != nil {
		parkHook(w)
	}
	if err := p.arm(w, slot, op); err != nil {
		// A wake (a close, most likely) may have started the next reader
		// meanwhile: then this one ends, or two would read.
		return !w.state.CompareAndSwap(readerParked, readerRunning)
	}
	// A close that came meanwhile may have missed the parked state: the
	// reader then stays, unless the closer has already started another.
	if w.noPark.Load() && w.state.CompareAndSwap(readerParked, readerRunning) {
		return false
	}
	return true
}

// wake starts a reader for a parked connection.
func (w *idleConn) wake() {
	if w.state.CompareAndSwap(readerParked, readerRunning) {
		go w.c.read()
	}
}

// expired reports whether the read deadline has passed.
func (w *idleConn) expired(now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.deadline.IsZero() && !now.Before(w.deadline)
}

// stay keeps the reader running from now on and wakes a parked one: the
// connection is about to close or to wait for the client's close reply.
func (c *client) stay() {
	if c.ic == nil {
		return
	}
	c.ic.noPark.Store(true)
	c.ic.wake()
}

// frameTracker follows the WebSocket frames of a client's byte stream
// (RFC 6455 section 5.2) just enough to know where messages begin.
type frameTracker struct {
	skip     uint64 // payload bytes of the current frame still to come
	hdr      [14]byte
	n        uint8 // header bytes gathered
	fragment bool  // a data message continues in further frames
	woken    bool  // no frame yet since the reader was started by the poller
	data     bool  // a data frame came since the reader last parked
}

func (t *frameTracker) atBoundary() bool { return t.skip == 0 && t.n == 0 && !t.fragment }

func (t *frameTracker) feed(p []byte) {
	for len(p) > 0 {
		if t.skip > 0 {
			k := uint64(len(p))
			if k > t.skip {
				k = t.skip
			}
			p, t.skip = p[k:], t.skip-k
			continue
		}
		t.hdr[t.n] = p[0]
		t.n++
		p = p[1:]
		if t.n < 2 {
			continue
		}
		need, size := uint8(2), uint64(t.hdr[1]&0x7f)
		switch size {
		case 126:
			need += 2
		case 127:
			need += 8
		}
		if t.hdr[1]&0x80 != 0 {
			need += 4
		}
		if t.n < need {
			continue
		}
		switch size {
		case 126:
			size = uint64(t.hdr[2])<<8 | uint64(t.hdr[3])
		case 127:
			size = 0
			for _, b := range t.hdr[2:10] {
				size = size<<8 | uint64(b)
			}
		}
		fin, op := t.hdr[0]&0x80 != 0, t.hdr[0]&0x0f
		if op < 8 { // data or continuation; control frames sit between fragments
			t.fragment, t.data = !fin, true
		}
		t.skip, t.n, t.woken = size, 0, false
	}
}

// hijacker hands gorilla the connection wrapped for parking.
type hijacker struct {
	http.ResponseWriter
	ic *idleConn // the wrapped socket; nil for TLS, which is not parked
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nc, brw, err
	}
	if tc, ok := nc.(*net.TCPConn); ok && idlePolling {
		h.ic = &idleConn{TCPConn: tc, slot: -1}
		h.ic.raw, _ = rawio.NewReader(tc) // nil where raw calls are not built in
		nc = h.ic
	}
	return nc, brw, nil
}

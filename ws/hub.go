package ws

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"pibridge"
)

// hub is the server's single subscription to the core. Deliver frames
// each reading once and drops the frame into every client's mailbox, where
// a reading still waiting for the same signal is replaced: it never waits
// for a writer or for the network, so it may run under the core's lock as
// the core requires. It does that work in the emitting goroutine rather
// than handing the reading to a hub goroutine: a hand-off costs a context
// switch per reading, and on one core that goroutine would wait its turn
// behind whatever else the reading woke (the MQTT publisher and paho's
// goroutines: a command's echo was ~15 µs later for it).
type hub struct {
	index map[string]int // signal name → index; read-only

	// mu guards the state clients join with, the client list and the
	// scratch buffer; a join therefore sees exactly the readings broadcast
	// before it, and its mailbox gets every one after it.
	mu      sync.Mutex
	state   []pibridge.Reading // last broadcast per signal; zero TS when none yet
	last    uint64             // seq of the last broadcast
	clients []*client
	closed  bool
	buf     []byte // framing scratch

	lastSeq atomic.Uint64 // last seq broadcast, for tests and metrics
}

func newHub(signals []pibridge.Signal) *hub {
	h := &hub{
		index: make(map[string]int, len(signals)),
		state: make([]pibridge.Reading, len(signals)),
	}
	for i, s := range signals {
		h.index[s.Name] = i
	}
	return h
}

// Deliver implements pibridge.Subscriber: it broadcasts r. It never
// blocks: the locks it takes are only held to queue.
func (h *hub) Deliver(r pibridge.Reading) {
	i, ok := h.index[r.Name]
	if !ok {
		return // the core only emits configured signals
	}
	h.broadcast(i, r)
}

// start seeds the state from the core's snapshot. Readings delivered since
// the subscription are newer and stay.
func (h *hub) start(snapshot []pibridge.Reading) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range snapshot {
		if i, ok := h.index[r.Name]; ok && r.Seq > h.state[i].Seq {
			h.state[i] = r
			h.last = max(h.last, r.Seq)
		}
	}
	h.lastSeq.Store(h.last)
}

// run asks every client's writer for a ping every pingPeriod until ctx
// ends. One sweep for all clients instead of a timer per connection: an
// idle connection costs no timer and no goroutine, and a ping is two
// bytes, so even thousands of them at once are a few ms.
func (h *hub) run(ctx context.Context, pingPeriod time.Duration) {
	ping := time.NewTicker(pingPeriod)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ping.C:
			h.pingAll()
		}
	}
}

func (h *hub) pingAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.clients {
		c.mb.pushPing()
	}
}

// broadcast records r as the state clients join with and queues it, framed
// once, for every client. With no client connected nothing is framed: an
// idle bridge allocates nothing per reading here.
func (h *hub) broadcast(i int, r pibridge.Reading) {
	h.mu.Lock()
	h.state[i] = r
	h.last = max(h.last, r.Seq)
	if len(h.clients) > 0 {
		frame := frameReading(r, &h.buf)
		for _, c := range h.clients {
			c.mb.pushReading(i, frame, r.Seq)
		}
	}
	h.mu.Unlock()
	h.lastSeq.Store(r.Seq)
}

// frameReading frames a reading in one allocation of its exact size,
// shared by every client; buf is scratch.
func frameReading(r pibridge.Reading, buf *[]byte) []byte {
	if cap(*buf) < maxFrameHeader {
		*buf = make([]byte, 0, 256)
	}
	b := r.AppendTypedJSON((*buf)[:maxFrameHeader])
	*buf = b
	f := textFrame(b)
	return append(make([]byte, 0, len(f)), f...)
}

// join registers c and returns the state it starts from, appended to dst.
// It fails once the hub is closed.
func (h *hub) join(c *client, dst []pibridge.Reading) ([]pibridge.Reading, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return dst, false
	}
	for _, r := range h.state {
		if !r.TS.IsZero() {
			dst = append(dst, r)
		}
	}
	c.mb.seen = h.last // c is not yet shared: no need for its lock
	c.hubIndex = len(h.clients)
	h.clients = append(h.clients, c)
	return dst, true
}

func (h *hub) leave(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	i := c.hubIndex
	if i < 0 || i >= len(h.clients) || h.clients[i] != c {
		return
	}
	last := len(h.clients) - 1
	h.clients[i] = h.clients[last]
	h.clients[i].hubIndex = i
	h.clients[last] = nil
	h.clients = h.clients[:last]
	c.hubIndex = -1
}

// close stops joins and returns the clients connected now.
func (h *hub) close() []*client {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	return append([]*client(nil), h.clients...)
}

// connected returns the clients connected now.
func (h *hub) connected() []*client {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*client(nil), h.clients...)
}

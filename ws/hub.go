package ws

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"pibridge"
)

// hub is the server's single subscription to the core. The core calls
// Deliver with its lock held, so Deliver only queues the reading (newest
// per signal) and wakes the hub goroutine, which frames each reading once
// and drops the frame into every client's mailbox.
type hub struct {
	index map[string]int // signal name → index; read-only

	// Handed over by the core, not yet broadcast. Coalescing here too means
	// a burst the hub cannot follow costs memory per signal, not per reading.
	pmu     sync.Mutex
	pending latest[pibridge.Reading]
	wake    chan struct{}

	// mu guards the state clients join with and the client list; a join
	// therefore sees exactly the readings broadcast before it, and its
	// mailbox gets every one after it.
	mu      sync.Mutex
	state   []pibridge.Reading // last broadcast per signal; zero TS when none yet
	last    uint64             // seq of the last broadcast
	clients []*client
	closed  bool

	nclients atomic.Int32 // len(clients), readable without mu

	lastSeq atomic.Uint64 // last seq broadcast, for tests and metrics
}

func newHub(signals []pibridge.Signal) *hub {
	h := &hub{
		index:   make(map[string]int, len(signals)),
		pending: newLatest[pibridge.Reading](len(signals)),
		wake:    make(chan struct{}, 1),
		state:   make([]pibridge.Reading, len(signals)),
	}
	for i, s := range signals {
		h.index[s.Name] = i
	}
	return h
}

// Deliver implements pibridge.Subscriber. It never blocks: the lock it
// takes is only ever held to queue or to swap a few slice headers.
func (h *hub) Deliver(r pibridge.Reading) {
	i, ok := h.index[r.Name]
	if !ok {
		return // the core only emits configured signals
	}
	h.pmu.Lock()
	h.pending.put(i, r)
	h.pmu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// start seeds the state from the core's snapshot; the readings delivered
// after it continue it without a gap.
func (h *hub) start(snapshot []pibridge.Reading) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range snapshot {
		if i, ok := h.index[r.Name]; ok {
			h.state[i] = r
			h.last = max(h.last, r.Seq)
		}
	}
	h.lastSeq.Store(h.last)
}

// run broadcasts until ctx ends, and asks every client's writer for a
// ping every pingPeriod. One sweep for all clients instead of a timer per
// connection: an idle connection costs no timer and no goroutine, and a
// ping is two bytes, so even thousands of them at once are a few ms.
func (h *hub) run(ctx context.Context, pingPeriod time.Duration) {
	var f flusher
	ping := time.NewTicker(pingPeriod)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ping.C:
			h.pingAll()
			continue
		case <-h.wake:
		}
		f.flush(h)
	}
}

func (h *hub) pingAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.clients {
		c.mb.pushPing()
	}
}

// flusher is the hub goroutine's scratch space, reused for every batch.
type flusher struct {
	todo []keyed[pibridge.Reading]
	buf  []byte
}

// flush broadcasts what the core has handed over since the last flush.
func (f *flusher) flush(h *hub) {
	h.pmu.Lock()
	f.todo = h.pending.take(f.todo[:0])
	h.pmu.Unlock()
	for _, it := range f.todo {
		h.broadcast(int(it.key), it.v, &f.buf)
	}
	clear(f.todo) // drop the strings
}

// broadcast records r as the state clients join with and queues it, framed
// once, for every client. With no client connected nothing is framed: an
// idle bridge allocates nothing per reading here.
func (h *hub) broadcast(i int, r pibridge.Reading, buf *[]byte) {
	var frame []byte
	if h.nclients.Load() > 0 {
		frame = frameReading(r, buf)
	}
	h.mu.Lock()
	h.state[i] = r
	h.last = r.Seq
	if len(h.clients) > 0 && frame == nil { // one joined meanwhile
		frame = frameReading(r, buf)
	}
	for _, c := range h.clients {
		c.mb.pushReading(i, frame, r.Seq)
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
	h.nclients.Store(int32(len(h.clients)))
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
	h.nclients.Store(int32(len(h.clients)))
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

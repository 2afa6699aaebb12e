package ws

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// latest is a queue that keeps only the newest value per key (a signal
// index) and hands values out in the order their newest version arrived.
// Readings arrive in seq order, so what comes out is in seq order too,
// with the superseded readings left out.
//
// A replaced item is only marked dead; the slice is compacted when the
// dead outnumber the keys, so put is amortised O(1), allocation-free once
// warm, and the slice never holds more than twice the number of keys.
type latest[T any] struct {
	items []keyed[T]
	pos   []int32 // key → index in items, -1 when the key is not queued
	dead  int
}

type keyed[T any] struct {
	key  int32
	live bool
	v    T
}

func newLatest[T any](keys int) latest[T] {
	q := latest[T]{pos: make([]int32, keys)}
	for i := range q.pos {
		q.pos[i] = -1
	}
	return q
}

// put queues v for key and reports whether it superseded a queued value.
func (q *latest[T]) put(key int, v T) (coalesced bool) {
	if p := q.pos[key]; p >= 0 {
		q.items[p] = keyed[T]{} // drop the reference: superseded values are garbage now
		q.dead++
		coalesced = true
		if q.dead > len(q.pos) {
			q.compact()
		}
	}
	q.pos[key] = int32(len(q.items))
	q.items = append(q.items, keyed[T]{key: int32(key), live: true, v: v})
	return coalesced
}

func (q *latest[T]) compact() {
	j := 0
	for _, it := range q.items {
		if it.live {
			q.pos[it.key] = int32(j)
			q.items[j] = it
			j++
		}
	}
	clear(q.items[j:])
	q.items = q.items[:j]
	q.dead = 0
}

// len returns the number of queued values.
func (q *latest[T]) len() int { return len(q.items) - q.dead }

// drain empties the queue, keeping its capacity.
func (q *latest[T]) drain() {
	for _, it := range q.items {
		if it.live {
			q.pos[it.key] = -1
		}
	}
	clear(q.items)
	q.items = q.items[:0]
	q.dead = 0
}

// take appends the queued values to dst in order and empties the queue,
// keeping its capacity.
func (q *latest[T]) take(dst []keyed[T]) []keyed[T] {
	for _, it := range q.items {
		if it.live {
			dst = append(dst, it)
			q.pos[it.key] = -1
		}
	}
	clear(q.items)
	q.items = q.items[:0]
	q.dead = 0
	return dst
}

// mailbox is what one connection's writer consumes. Readings are coalesced
// per signal, so a client that falls behind gets the newest value of each
// signal instead of a stale backlog, in bounded memory. Replies (acks,
// history, errors, MQTT messages, pongs) are never coalesced and keep
// their order; their queue is bounded. The connection's reader, queueing
// replies to the client's own requests, waits for room (pushReplyWait): a
// client that sends a burst is slowed to the pace it reads at. Anything
// else (MQTT messages) never waits, and overflowing the queue condemns the
// client, as does a reader that waited in vain.
//
// The writer runs only while the mailbox holds something: the producer
// that finds it empty and no writer running starts one (writer), and
// the writer ends when a take finds nothing. An idle connection thus costs
// no writer goroutine and no write buffer. At most one writer runs at a
// time: running is only changed under mu.
//
// Producers (the hub, the connection's reader) only take the lock to queue
// and never wait for the writer: the lock is never held across network I/O.
type mailbox struct {
	condemned atomic.Bool // code != 0, readable without the lock

	mu       sync.Mutex
	first    []byte // the hello: written before anything else
	readings latest[[]byte]
	replies  []reply
	bytes    int    // queued reply bytes
	seen     uint64 // seq of the newest reading queued
	ping     bool   // a ping is due
	code     int    // close code once the connection is condemned, else 0
	text     string
	running  bool          // a writer is on it
	stopped  bool          // no writer may start any more
	room     chan struct{} // capacity 1: "replies were taken, or the mailbox closed"; made when the reader first waits

	// writer is the writer goroutine's body (a method value made once:
	// go writer() allocates nothing); nil until the hello is queued, and
	// in tests that take by hand.
	writer  func()
	writers sync.WaitGroup // the running writer

	maxReplies, maxBytes int
}

// reply is one non-coalescable frame. An ack is held back until the
// reading that confirms the command (seq after) is queued ahead of it, so
// that a client sees the echo first and the ack second.
type reply struct {
	msg   []byte
	after uint64
	// pend, when set, holds the frame instead of msg: the reply's place
	// is taken now, its frame comes later (resolve), and nothing queued
	// behind it is written before.
	pend *pending
}

// pending is a reply whose frame is not known yet (a publish waiting for
// the broker's PUBACK). Guarded by the mailbox's mu.
type pending struct {
	msg   []byte // nil once ready: nothing to write
	ready bool
}

func newMailbox(signals, maxReplies, maxBytes int) *mailbox {
	return &mailbox{
		readings:   newLatest[[]byte](signals),
		maxReplies: maxReplies,
		maxBytes:   maxBytes,
	}
}

// kickLocked claims the writer's role for a new goroutine when none runs;
// the caller starts it after unlocking when it returns true.
func (m *mailbox) kickLocked() bool {
	if m.running || m.stopped || m.writer == nil {
		return false
	}
	m.running = true
	m.writers.Add(1) // under mu: ordered before stop's Wait
	return true
}

func (m *mailbox) unlockAndKick() {
	kick := m.kickLocked()
	m.mu.Unlock()
	if kick {
		go m.writer()
	}
}

// setFirst queues the hello and lets writers start: before it, what is
// queued waits.
func (m *mailbox) setFirst(frame []byte, writer func()) {
	m.mu.Lock()
	m.first = frame
	m.writer = writer
	m.unlockAndKick()
}

// pushReading queues the framed reading of signal i, replacing an older
// one still waiting. frame is shared by every client: never written to.
func (m *mailbox) pushReading(i int, frame []byte, seq uint64) {
	m.mu.Lock()
	if m.code != 0 {
		m.mu.Unlock()
		return
	}
	m.readings.put(i, frame)
	m.seen = seq
	m.unlockAndKick()
}

// pushPing asks the writer for a ping.
func (m *mailbox) pushPing() {
	m.mu.Lock()
	if m.code != 0 {
		m.mu.Unlock()
		return
	}
	m.ping = true
	m.unlockAndKick()
}

// pushReply queues a reply frame. It returns false when the mailbox is
// closed, and condemns it (close code 1008) when the reply overflows the
// bound; overflowed reports that this call did the condemning. The first
// reply is always accepted, whatever its size.
func (m *mailbox) pushReply(msg []byte, after uint64) (ok, overflowed bool) {
	m.mu.Lock()
	switch {
	case m.code != 0:
		m.mu.Unlock()
		return false, false
	case !m.fitsLocked(msg):
		m.closeLocked(websocket.ClosePolicyViolation, "too slow: reply queue full")
		m.unlockAndKick()
		return false, true
	}
	m.appendLocked(msg, after)
	m.unlockAndKick()
	return true, false
}

// pushReplyWait is pushReply for the connection's reader: when the queue
// is full it waits for the writer to make room, up to wait, and condemns
// the mailbox only then.
func (m *mailbox) pushReplyWait(msg []byte, after uint64, wait time.Duration) (ok, overflowed bool) {
	return m.pushWait(reply{msg: msg, after: after}, wait)
}

// pushPendingWait is pushReplyWait for a reply whose frame resolve gives
// later; nothing queued after it is written before that.
func (m *mailbox) pushPendingWait(wait time.Duration) (p *pending, ok, overflowed bool) {
	p = new(pending)
	ok, overflowed = m.pushWait(reply{pend: p}, wait)
	return p, ok, overflowed
}

// resolve gives a pending reply its frame (nil: none to write) and lets
// the writer go on.
func (m *mailbox) resolve(p *pending, msg []byte) {
	m.mu.Lock()
	if m.code != 0 {
		m.mu.Unlock()
		return
	}
	p.msg, p.ready = msg, true
	m.bytes += len(msg)
	m.unlockAndKick()
}

func (m *mailbox) pushWait(r reply, wait time.Duration) (ok, overflowed bool) {
	msg := r.msg
	var timer *time.Timer
	for {
		m.mu.Lock()
		switch {
		case m.code != 0:
			m.mu.Unlock()
			return false, false
		case m.fitsLocked(msg):
			m.replies = append(m.replies, r)
			m.bytes += len(msg)
			m.unlockAndKick()
			if timer != nil {
				timer.Stop()
			}
			return true, false
		}
		if m.room == nil {
			m.room = make(chan struct{}, 1)
		}
		room := m.room
		m.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(wait)
		}
		select {
		case <-room:
		case <-timer.C:
			m.mu.Lock()
			if m.code != 0 {
				m.mu.Unlock()
				return false, false
			}
			m.closeLocked(websocket.ClosePolicyViolation, "too slow: reply queue full")
			m.unlockAndKick()
			return false, true
		}
	}
}

// fitsLocked reports whether msg may join the replies; the first one
// always may, whatever its size.
func (m *mailbox) fitsLocked(msg []byte) bool {
	return len(m.replies) == 0 || (len(m.replies) < m.maxReplies && m.bytes+len(msg) <= m.maxBytes)
}

func (m *mailbox) appendLocked(msg []byte, after uint64) {
	m.replies = append(m.replies, reply{msg: msg, after: after})
	m.bytes += len(msg)
}

func (m *mailbox) madeRoomLocked() {
	if m.room == nil {
		return // nobody has waited yet
	}
	select {
	case m.room <- struct{}{}:
	default:
	}
}

// close condemns the mailbox: the writer drops what is queued, sends a
// close frame with code and text, and ends. The first close wins; close
// reports whether it was this one.
func (m *mailbox) close(code int, text string) bool {
	m.mu.Lock()
	if m.code != 0 {
		m.mu.Unlock()
		return false
	}
	m.closeLocked(code, text)
	m.unlockAndKick()
	return true
}

func (m *mailbox) closeLocked(code int, text string) {
	m.code, m.text = code, text
	m.condemned.Store(true)
	m.readings.drain() // release the frames now
	clear(m.replies)
	m.replies, m.bytes, m.ping = nil, 0, false
	m.madeRoomLocked()
}

func (m *mailbox) closed() bool { return m.condemned.Load() }

// stop lets no further writer start and waits for the running one, which
// the caller has made to finish (see client.finish).
func (m *mailbox) stop() {
	m.mu.Lock()
	m.stopped = true
	m.mu.Unlock()
	m.writers.Wait()
}

// retire is stop for the writer itself, which must not wait for itself:
// after a close frame or a failed write nothing more may be written.
func (m *mailbox) retire() {
	m.mu.Lock()
	m.stopped = true
	m.running = false
	m.mu.Unlock()
}

// batch is what the writer takes in one go: frames in the order they are
// to be written; its slice is reused.
type batch struct {
	frames [][]byte
}

func (b *batch) reset() {
	clear(b.frames)
	b.frames = b.frames[:0]
}

// take moves everything the writer may send now into b: the hello, a due
// ping, all queued readings, then the replies up to the first ack whose
// echo has not been queued yet. It returns the close code when the mailbox
// is condemned (after the hello: that always goes first). When there is
// nothing to take, the writer's role ends with this call: more is false
// and the next producer starts a new writer.
func (m *mailbox) take(b *batch) (code int, text string, more bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		m.running = false
		return 0, "", false
	}
	if m.first != nil {
		b.frames = append(b.frames, m.first)
		m.first = nil
		return 0, "", true
	}
	if m.code != 0 {
		return m.code, m.text, false
	}
	if m.ping {
		b.frames = append(b.frames, pingFrame)
		m.ping = false
	}
	for _, it := range m.readings.items {
		if it.live {
			b.frames = append(b.frames, it.v)
		}
	}
	m.readings.drain()
	n := 0
	for _, r := range m.replies {
		if r.after > m.seen {
			break
		}
		msg := r.msg
		if r.pend != nil {
			if !r.pend.ready {
				break
			}
			msg = r.pend.msg
		}
		if msg != nil {
			b.frames = append(b.frames, msg)
		}
		m.bytes -= len(msg)
		n++
	}
	if n > 0 {
		rest := copy(m.replies, m.replies[n:])
		clear(m.replies[rest:])
		m.replies = m.replies[:rest]
		if rest == 0 && cap(m.replies) > 256 {
			// A burst grew it (up to maxReplies entries): an idle
			// connection does not keep that.
			m.replies = nil
		}
		m.madeRoomLocked()
	}
	if len(b.frames) == 0 {
		m.running = false
		return 0, "", false
	}
	return 0, "", true
}

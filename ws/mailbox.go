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

// mailbox is what one connection's writer goroutine consumes. Readings are
// coalesced per signal, so a client that falls behind gets the newest value
// of each signal instead of a stale backlog, in bounded memory. Replies
// (acks, history, errors, MQTT messages) are never coalesced and keep their
// order; their queue is bounded. The connection's reader, queueing replies
// to the client's own requests, waits for room (pushReplyWait): a client
// that sends a burst is slowed to the pace it reads at. Anything else
// (MQTT messages) never waits, and overflowing the queue condemns the
// client, as does a reader that waited in vain.
//
// Producers (the hub, the connection's reader) only take the lock to queue
// and never wait for the writer: the lock is never held across network I/O.
type mailbox struct {
	wake      chan struct{} // capacity 1: "there is something to take"
	room      chan struct{} // capacity 1: "replies were taken, or the mailbox closed"
	condemned atomic.Bool   // code != 0, readable without the lock

	mu       sync.Mutex
	readings latest[*websocket.PreparedMessage]
	replies  []reply
	bytes    int    // queued reply bytes
	seen     uint64 // seq of the newest reading queued
	code     int    // close code once the connection is condemned, else 0
	text     string

	maxReplies, maxBytes int
}

// reply is one non-coalescable message. An ack is held back until the
// reading that confirms the command (seq after) is queued ahead of it, so
// that a client sees the echo first and the ack second.
type reply struct {
	msg   []byte
	after uint64
}

func newMailbox(signals, maxReplies, maxBytes int) *mailbox {
	return &mailbox{
		wake:       make(chan struct{}, 1),
		room:       make(chan struct{}, 1),
		readings:   newLatest[*websocket.PreparedMessage](signals),
		maxReplies: maxReplies,
		maxBytes:   maxBytes,
	}
}

func (m *mailbox) signal() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// pushReading queues the encoded reading of signal i, replacing an older
// one still waiting.
func (m *mailbox) pushReading(i int, pm *websocket.PreparedMessage, seq uint64) {
	m.mu.Lock()
	if m.code == 0 {
		m.readings.put(i, pm)
		m.seen = seq
	}
	m.mu.Unlock()
	m.signal()
}

// pushReply queues a reply. It returns false when the mailbox is closed,
// and condemns it (close code 1008) when the reply overflows the bound;
// overflowed reports that this call did the condemning. The first reply
// is always accepted, whatever its size.
func (m *mailbox) pushReply(msg []byte, after uint64) (ok, overflowed bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.code != 0 {
		return false, false
	}
	if !m.fitsLocked(msg) {
		m.closeLocked(websocket.ClosePolicyViolation, "too slow: reply queue full")
		return false, true
	}
	m.appendLocked(msg, after)
	return true, false
}

// pushReplyWait is pushReply for the connection's reader: when the queue
// is full it waits for the writer to make room, up to wait, and condemns
// the mailbox only then.
func (m *mailbox) pushReplyWait(msg []byte, after uint64, wait time.Duration) (ok, overflowed bool) {
	var timer *time.Timer
	for {
		m.mu.Lock()
		switch {
		case m.code != 0:
			m.mu.Unlock()
			return false, false
		case m.fitsLocked(msg):
			m.appendLocked(msg, after)
			m.mu.Unlock()
			if timer != nil {
				timer.Stop()
			}
			return true, false
		}
		m.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(wait)
		}
		select {
		case <-m.room:
		case <-timer.C:
			m.mu.Lock()
			defer m.mu.Unlock()
			if m.code != 0 {
				return false, false
			}
			m.closeLocked(websocket.ClosePolicyViolation, "too slow: reply queue full")
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
	m.signal()
}

func (m *mailbox) madeRoom() {
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
	defer m.mu.Unlock()
	if m.code != 0 {
		return false
	}
	m.closeLocked(code, text)
	return true
}

func (m *mailbox) closeLocked(code int, text string) {
	m.code, m.text = code, text
	m.condemned.Store(true)
	m.readings.take(nil) // release the prepared messages now
	clear(m.replies)
	m.replies, m.bytes = nil, 0
	m.signal()
	m.madeRoom()
}

func (m *mailbox) closed() bool { return m.condemned.Load() }

// batch is what the writer takes in one go; its slices are reused.
type batch struct {
	readings []keyed[*websocket.PreparedMessage]
	replies  [][]byte
}

func (b *batch) reset() {
	clear(b.readings)
	b.readings = b.readings[:0]
	clear(b.replies)
	b.replies = b.replies[:0]
}

// take moves everything the writer may send now into b: all queued
// readings, then the replies up to the first ack whose echo has not been
// queued yet. It returns the close code when the mailbox is condemned.
func (m *mailbox) take(b *batch) (code int, text string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.code != 0 {
		return m.code, m.text
	}
	b.readings = m.readings.take(b.readings)
	n := 0
	for _, r := range m.replies {
		if r.after > m.seen {
			break
		}
		b.replies = append(b.replies, r.msg)
		m.bytes -= len(r.msg)
		n++
	}
	if n > 0 {
		rest := copy(m.replies, m.replies[n:])
		clear(m.replies[rest:])
		m.replies = m.replies[:rest]
		m.madeRoom()
	}
	return 0, ""
}

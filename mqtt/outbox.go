package mqtt

import (
	"sort"
	"sync"

	pibridge "pibridge"
)

// Outbox holds readings from the moment the core emits them until the
// broker has acknowledged them. Readings are held in seq order and found by
// seq, not by position, so a cursor stays valid while the oldest readings
// are dropped for room. The memory outbox is the first implementation; a
// disk one (readings survive a restart) fits the same methods.
type Outbox interface {
	// Append adds readings, in seq order, each with a seq above every
	// seq held: a batch goes to the disk in one write. It may wait for
	// the disk: the core's journal goroutine calls it. When the outbox is
	// full it drops the oldest reading and counts it. It keeps no
	// reference to rs.
	Append(rs ...pibridge.Reading)
	// Next returns the oldest reading with a seq above after. It may read
	// the disk and counts as the publisher's progress: only the publisher
	// calls it.
	Next(after uint64) (pibridge.Reading, bool)
	// Oldest is the seq of the oldest reading held, without reading or
	// changing anything; false when none is held.
	Oldest() (uint64, bool)
	// Commit removes every reading up to and including seq.
	Commit(seq uint64)
	// Len is the number of readings held.
	Len() int
	// Dropped counts the readings dropped for room since the start.
	Dropped() uint64
}

// memOutbox is an Outbox in memory: a ring that grows up to max readings
// as needed and shrinks again once drained.
type memOutbox struct {
	mu      sync.Mutex
	max     int
	ring    []pibridge.Reading // len(ring) is the current capacity
	head    int                // index of the oldest reading
	n       int
	dropped uint64
}

const minRing = 64

// NewMemoryOutbox returns an Outbox in memory that holds at most max readings.
func NewMemoryOutbox(max int) Outbox {
	if max < 1 {
		max = 1
	}
	return &memOutbox{max: max}
}

func (o *memOutbox) at(i int) *pibridge.Reading { return &o.ring[(o.head+i)%len(o.ring)] }

func (o *memOutbox) Append(rs ...pibridge.Reading) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, r := range rs {
		o.appendLocked(r)
	}
}

func (o *memOutbox) appendLocked(r pibridge.Reading) {
	if o.n == o.max {
		*o.at(0) = pibridge.Reading{}
		o.head = (o.head + 1) % len(o.ring)
		o.n--
		o.dropped++
	}
	if o.n == len(o.ring) {
		o.resize(min(max(2*len(o.ring), minRing), o.max))
	}
	*o.at(o.n) = r
	o.n++
}

// resize moves the readings, oldest first, into a ring of size c ≥ n.
func (o *memOutbox) resize(c int) {
	next := make([]pibridge.Reading, c)
	for i := 0; i < o.n; i++ {
		next[i] = *o.at(i)
	}
	o.ring, o.head = next, 0
}

func (o *memOutbox) Oldest() (uint64, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == 0 {
		return 0, false
	}
	return o.at(0).Seq, true
}

func (o *memOutbox) Next(after uint64) (pibridge.Reading, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	i := sort.Search(o.n, func(i int) bool { return o.at(i).Seq > after })
	if i == o.n {
		return pibridge.Reading{}, false
	}
	return *o.at(i), true
}

func (o *memOutbox) Commit(seq uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for o.n > 0 && o.at(0).Seq <= seq {
		*o.at(0) = pibridge.Reading{} // let the strings go
		o.head = (o.head + 1) % len(o.ring)
		o.n--
	}
	// Give back the memory of a long outage once it has drained.
	if len(o.ring) > 4*minRing && o.n < len(o.ring)/4 {
		o.resize(len(o.ring) / 2)
	}
}

func (o *memOutbox) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n
}

func (o *memOutbox) Dropped() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.dropped
}

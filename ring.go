package pibridge

// Ring is a first-in, first-out queue of readings: a ring buffer that
// grows by doubling as needed and, once drained, drops a buffer grown
// past ringKeep slots, so that a long stall's memory (some 90 bytes a
// reading) goes back. Push allocates only to grow; the rest never
// allocates. The zero value is an empty ring.
type Ring struct {
	buf     []Reading
	head, n int
}

const (
	ringMin  = 16   // the first buffer's slots
	ringKeep = 1024 // the most slots a drained ring keeps
)

// Len is the number of readings queued.
func (q *Ring) Len() int { return q.n }

// At returns the i-th reading from the front; i must be below Len.
func (q *Ring) At(i int) *Reading { return &q.buf[(q.head+i)%len(q.buf)] }

// Push adds r at the back.
func (q *Ring) Push(r Reading) {
	if q.n == len(q.buf) {
		next := make([]Reading, max(2*len(q.buf), ringMin))
		for i := 0; i < q.n; i++ {
			next[i] = *q.At(i)
		}
		q.buf, q.head = next, 0
	}
	*q.At(q.n) = r
	q.n++
}

// PopFront removes the front reading; the ring must not be empty.
func (q *Ring) PopFront() {
	*q.At(0) = Reading{} // let its strings go
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	if q.n == 0 && len(q.buf) > ringKeep {
		q.buf, q.head = nil, 0
	}
}

package mqtt

import (
	"sort"

	pibridge "pibridge"
)

// outboxQueue is the DiskOutbox's bookkeeping, without I/O: which readings
// are held, the newest in memory and older ones on disk only (kept as seq
// spans, a few bytes however long the outage), which of those in memory
// are written or being written, and what the disk may forget. DiskOutbox.mu
// guards it.
type outboxQueue struct {
	max    int // readings held at most (queue_max): beyond, the oldest is dropped
	memMax int // readings in memory at most

	mem      pibridge.Ring // the newest readings, seq order
	written  int           // mem[:written] are on disk as well
	inflight int           // mem[written:written+inflight] are being written
	disk     seqSpans      // readings held on disk only, all older than mem

	floor     uint64 // every key ≤ floor is to be deleted from disk
	diskFloor uint64 // the floor of the last committed transaction
	deletes   bool   // the disk holds keys ≤ floor
	newest    uint64 // the highest seq appended or loaded

	dropped    uint64 // every reading dropped
	memDropped uint64 // of those: unwritten readings dropped from a full memory buffer

	// workArrived is called when the writer has something new to do: a
	// reading to write where none waited, or keys to delete.
	workArrived func()
}

func (q *outboxQueue) len() int { return q.disk.n + q.mem.Len() }

// unwritten is how many readings in memory are not on disk.
func (q *outboxQueue) unwritten() int { return q.mem.Len() - q.written }

// idle reports whether a transaction would have nothing to store or delete.
func (q *outboxQueue) idle() bool { return q.mem.Len() == q.written+q.inflight && !q.deletes }

// synced returns a seq S such that every reading with seq ≤ S is on disk,
// acknowledged or dropped.
func (q *outboxQueue) synced() uint64 {
	if q.written < q.mem.Len() {
		return q.mem.At(q.written).Seq - 1
	}
	return q.newest
}

func (q *outboxQueue) firstHeld() uint64 {
	if q.disk.n > 0 {
		return q.disk.first()
	}
	if q.mem.Len() > 0 {
		return q.mem.At(0).Seq
	}
	return 0
}

// behind counts r as dropped when its seq is not above every seq held:
// held readings would be overtaken.
func (q *outboxQueue) behind(seq uint64) bool {
	if seq > q.newest {
		return false
	}
	q.dropped++
	return true
}

// push adds r, with a seq above every seq held. It returns how many
// readings now wait to be written, and whether an unwritten reading was
// dropped for room in memory (the disk fails or cannot keep up).
func (q *outboxQueue) push(r pibridge.Reading) (waiting int, droppedUnwritten bool) {
	q.newest = r.Seq
	if q.len() >= q.max {
		q.dropOldest()
	}
	if q.mem.Len() >= q.memMax {
		if q.written > 0 {
			// The oldest in memory is on disk too: keep only its seq.
			q.disk.push(q.mem.At(0).Seq)
			q.popFront()
		} else {
			q.popFront()
			q.dropped++
			q.memDropped++
			droppedUnwritten = true
		}
	}
	q.mem.Push(r)
	waiting = q.mem.Len() - q.written - q.inflight
	if waiting == 1 {
		q.work()
	}
	return waiting, droppedUnwritten
}

// adopt takes over the readings found on disk at open. It refuses them,
// counting them as dropped and to be deleted, when they can no longer go
// out in order: publishing has started, or they are not older than
// every reading held.
func (q *outboxQueue) adopt(found *seqSpans, publishing bool) (refused bool) {
	if found.n == 0 {
		return false
	}
	first := q.firstHeld()
	if publishing || (first != 0 && found.last() >= first) {
		q.dropped += uint64(found.n)
		if first == 0 || found.last() < first {
			q.floor = max(q.floor, found.last())
			q.noteDeletes()
		}
		return true
	}
	q.disk = *found
	q.newest = max(q.newest, found.last())
	for q.len() > q.max {
		q.dropOldest()
	}
	return false
}

// commit removes every reading up to and including seq, and reports
// whether that moved the floor.
func (q *outboxQueue) commit(seq uint64) bool {
	if seq <= q.floor {
		return false
	}
	q.floor = seq
	onDisk := q.disk.popTo(seq) > 0
	for q.mem.Len() > 0 && q.mem.At(0).Seq <= seq {
		onDisk = onDisk || q.written > 0
		q.popFront()
	}
	if onDisk {
		q.noteDeletes()
	}
	return true
}

// nextInMemory returns the oldest reading in memory above after.
func (q *outboxQueue) nextInMemory(after uint64) (pibridge.Reading, bool) {
	i := search(&q.mem, after)
	if i == q.mem.Len() {
		return pibridge.Reading{}, false
	}
	return *q.mem.At(i), true
}

// skip drops seq, held on disk only, as unreadable.
func (q *outboxQueue) skip(seq uint64) bool {
	if !q.disk.remove(seq) {
		return false
	}
	q.dropped++
	return true
}

// takeBatch hands the writer the oldest unwritten readings, at most n, and
// the floor to delete up to; more reports whether others still wait.
func (q *outboxQueue) takeBatch(n int) (batch []pibridge.Reading, floor uint64, more bool) {
	n = min(q.unwritten(), n)
	batch = make([]pibridge.Reading, n)
	for i := range batch {
		batch[i] = *q.mem.At(q.written + i)
	}
	q.inflight = n
	q.deletes = false
	return batch, q.floor, q.unwritten() > n
}

// batchFailed takes back a batch the disk refused.
func (q *outboxQueue) batchFailed(floor uint64) {
	q.inflight = 0
	q.deletes = q.deletes || floor > q.diskFloor
}

// batchDone records a committed batch: everything in memory up to its
// last seq is on disk now; what was acknowledged or dropped meanwhile is
// gone from memory already.
func (q *outboxQueue) batchDone(batch []pibridge.Reading, floor uint64) {
	q.inflight = 0
	q.diskFloor = floor
	if len(batch) > 0 {
		q.written = search(&q.mem, batch[len(batch)-1].Seq)
		if batch[0].Seq <= q.floor {
			q.noteDeletes() // acknowledged while being written
		}
	}
}

// dropOldest drops the oldest reading for room.
func (q *outboxQueue) dropOldest() {
	var seq uint64
	if q.disk.n > 0 {
		seq = q.disk.first()
		q.disk.popTo(seq)
		q.noteDeletes()
	} else {
		seq = q.mem.At(0).Seq
		if q.written > 0 {
			q.noteDeletes()
		}
		q.popFront()
	}
	// Everything older is gone already: the disk may forget up to here.
	q.floor = max(q.floor, seq)
	q.dropped++
}

// popFront removes mem[0], keeping written and inflight in step.
func (q *outboxQueue) popFront() {
	switch {
	case q.written > 0:
		q.written--
	case q.inflight > 0:
		q.inflight--
	}
	q.mem.PopFront()
}

func (q *outboxQueue) noteDeletes() {
	if !q.deletes {
		q.deletes = true
		q.work()
	}
}

func (q *outboxQueue) work() {
	if q.workArrived != nil {
		q.workArrived()
	}
}

// search returns the index in q of the first reading with a seq above
// after.
func search(q *pibridge.Ring, after uint64) int {
	return sort.Search(q.Len(), func(i int) bool { return q.At(i).Seq > after })
}

// seqSpans is a set of seqs kept as ascending runs: the readings of a long
// outage are one run, whatever their number.
type seqSpans struct {
	s []seqSpan
	n int
}

type seqSpan struct{ from, to uint64 } // inclusive

func (x *seqSpans) first() uint64 { return x.s[0].from }
func (x *seqSpans) last() uint64  { return x.s[len(x.s)-1].to }

// push adds seq, which is above every seq held.
func (x *seqSpans) push(seq uint64) {
	if k := len(x.s); k > 0 && x.s[k-1].to+1 == seq {
		x.s[k-1].to = seq
	} else {
		x.s = append(x.s, seqSpan{seq, seq})
	}
	x.n++
}

// popTo removes every seq ≤ seq and returns how many.
func (x *seqSpans) popTo(seq uint64) int {
	removed, i := 0, 0
	for ; i < len(x.s) && x.s[i].from <= seq; i++ {
		if x.s[i].to > seq {
			removed += int(seq - x.s[i].from + 1)
			x.s[i].from = seq + 1
			break
		}
		removed += int(x.s[i].to - x.s[i].from + 1)
	}
	x.s = x.s[i:]
	if len(x.s) == 0 {
		x.s = nil
	}
	x.n -= removed
	return removed
}

// next returns the lowest seq above after.
func (x *seqSpans) next(after uint64) (uint64, bool) {
	i := sort.Search(len(x.s), func(i int) bool { return x.s[i].to > after })
	if i == len(x.s) {
		return 0, false
	}
	return max(x.s[i].from, after+1), true
}

// remove takes one seq out, splitting its run.
func (x *seqSpans) remove(seq uint64) bool {
	i := sort.Search(len(x.s), func(i int) bool { return x.s[i].to >= seq })
	if i == len(x.s) || x.s[i].from > seq {
		return false
	}
	sp := x.s[i]
	switch {
	case sp.from == sp.to:
		x.s = append(x.s[:i], x.s[i+1:]...)
	case seq == sp.from:
		x.s[i].from++
	case seq == sp.to:
		x.s[i].to--
	default:
		x.s = append(x.s[:i+1], x.s[i:]...)
		x.s[i].to = seq - 1
		x.s[i+1].from = seq + 1
	}
	x.n--
	return true
}

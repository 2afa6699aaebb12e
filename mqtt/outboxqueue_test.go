package mqtt

import (
	"slices"
	"testing"

	pibridge "pibridge"
)

// queueSeqs lists the seqs the queue holds, disk-only ones first.
func queueSeqs(q *outboxQueue) []uint64 {
	var out []uint64
	for _, sp := range q.disk.s {
		for s := sp.from; s <= sp.to; s++ {
			out = append(out, s)
		}
	}
	for i := 0; i < q.mem.Len(); i++ {
		out = append(out, q.mem.At(i).Seq)
	}
	return out
}

// writeAll stands in for a successful transaction of everything waiting.
func writeAll(q *outboxQueue) {
	batch, floor, _ := q.takeBatch(1 << 20)
	q.batchDone(batch, floor)
}

func TestOutboxQueue(t *testing.T) {
	for _, tc := range []struct {
		name        string
		max, memMax int
		run         func(t *testing.T, q *outboxQueue)
		held        []uint64
		dropped     uint64
		memDropped  uint64
		synced      uint64
		deletes     bool
		work        int // workArrived calls
	}{
		{
			name: "queue_max drops the oldest and counts it", max: 3, memMax: 10,
			run:  func(t *testing.T, q *outboxQueue) { pushSeqs(q, 1, 5) },
			held: []uint64{3, 4, 5}, dropped: 2, synced: 2, work: 1,
		},
		{
			name: "a full memory keeps written readings as seqs on disk", max: 100, memMax: 3,
			run: func(t *testing.T, q *outboxQueue) {
				pushSeqs(q, 1, 3)
				writeAll(q)
				pushSeqs(q, 4, 5)
			},
			held: []uint64{1, 2, 3, 4, 5}, synced: 3, work: 2,
		},
		{
			name: "a full memory of unwritten readings drops the oldest", max: 100, memMax: 3,
			run: func(t *testing.T, q *outboxQueue) {
				if !pushSeqs(q, 1, 5) {
					t.Fatal("push did not report the unwritten readings it dropped")
				}
			},
			held: []uint64{3, 4, 5}, dropped: 2, memDropped: 2, synced: 2, work: 1,
		},
		{
			name: "commit of unwritten readings leaves nothing to delete", max: 100, memMax: 10,
			run: func(t *testing.T, q *outboxQueue) {
				pushSeqs(q, 1, 4)
				q.commit(2)
				q.commit(1) // behind the floor: nothing
			},
			held: []uint64{3, 4}, synced: 2, work: 1,
		},
		{
			name: "commit of written readings leaves deletes", max: 100, memMax: 10,
			run: func(t *testing.T, q *outboxQueue) {
				pushSeqs(q, 1, 4)
				writeAll(q)
				q.commit(2)
			},
			held: []uint64{3, 4}, synced: 4, deletes: true, work: 2,
		},
		{
			name: "a failed batch waits again", max: 100, memMax: 10,
			run: func(t *testing.T, q *outboxQueue) {
				pushSeqs(q, 1, 2)
				_, floor, _ := q.takeBatch(10)
				q.batchFailed(floor)
			},
			held: []uint64{1, 2}, synced: 0, work: 1,
		},
		{
			name: "a seq not above the newest is dropped", max: 100, memMax: 10,
			run: func(t *testing.T, q *outboxQueue) {
				pushSeqs(q, 5, 5)
				if !q.behind(5) || !q.behind(3) || q.behind(6) {
					t.Fatal("behind: 5 and 3 are not above the newest (5), 6 is")
				}
			},
			held: []uint64{5}, dropped: 2, synced: 4, work: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			work := 0
			q := &outboxQueue{max: tc.max, memMax: tc.memMax, workArrived: func() { work++ }}
			tc.run(t, q)
			if got := queueSeqs(q); !slices.Equal(got, tc.held) {
				t.Errorf("held %v, want %v", got, tc.held)
			}
			if q.len() != len(tc.held) {
				t.Errorf("len %d, want %d", q.len(), len(tc.held))
			}
			if q.dropped != tc.dropped || q.memDropped != tc.memDropped {
				t.Errorf("dropped %d (unwritten %d), want %d (%d)", q.dropped, q.memDropped, tc.dropped, tc.memDropped)
			}
			if got := q.synced(); got != tc.synced {
				t.Errorf("synced %d, want %d", got, tc.synced)
			}
			if q.deletes != tc.deletes {
				t.Errorf("deletes %v, want %v", q.deletes, tc.deletes)
			}
			if work != tc.work {
				t.Errorf("workArrived called %d times, want %d", work, tc.work)
			}
		})
	}
}

func pushSeqs(q *outboxQueue, from, to uint64) (droppedUnwritten bool) {
	for s := from; s <= to; s++ {
		_, d := q.push(pibridge.Reading{Seq: s})
		droppedUnwritten = droppedUnwritten || d
	}
	return droppedUnwritten
}

func TestOutboxQueueAdopt(t *testing.T) {
	var found seqSpans
	for s := uint64(1); s <= 5; s++ {
		found.push(s)
	}
	q := &outboxQueue{max: 3, memMax: 10}
	if q.adopt(&found, false) {
		t.Fatal("refused readings found before publishing")
	}
	if got := queueSeqs(q); !slices.Equal(got, []uint64{3, 4, 5}) || q.newest != 5 || q.dropped != 2 {
		t.Errorf("held %v newest %d dropped %d, want [3 4 5] 5 2 (queue_max applies)", got, q.newest, q.dropped)
	}

	late := &outboxQueue{max: 100, memMax: 10}
	pushSeqs(late, 10, 11)
	found2 := seqSpans{}
	found2.push(1)
	found2.push(2)
	if !late.adopt(&found2, true) {
		t.Fatal("took readings found after publishing started")
	}
	if late.dropped != 2 || late.floor != 2 || !late.deletes {
		t.Errorf("dropped %d floor %d deletes %v, want 2 2 true", late.dropped, late.floor, late.deletes)
	}
}

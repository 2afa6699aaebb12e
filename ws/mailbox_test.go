package ws

import (
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"pibridge"
)

// frames returns what a batch holds, as text.
func frames(b *batch) string { return fmt.Sprintf("%s", b.frames) }

func TestLatestKeepsNewestPerKeyInArrivalOrder(t *testing.T) {
	q := newLatest[int](3)
	for _, kv := range [][2]int{{0, 1}, {1, 2}, {0, 3}, {2, 4}, {1, 5}, {1, 6}} {
		q.put(kv[0], kv[1])
	}
	if q.len() != 3 {
		t.Fatalf("len %d, want 3", q.len())
	}
	got := fmt.Sprint(values(q.take(nil)))
	if want := "[3 4 6]"; got != want {
		t.Errorf("took %s, want %s", got, want)
	}
	if q.len() != 0 || len(q.take(nil)) != 0 {
		t.Error("take did not empty the queue")
	}
	// Hammering one key compacts instead of growing.
	for i := range 1000 {
		q.put(i%2, i)
	}
	if len(q.items) > 2*len(q.pos)+1 {
		t.Errorf("%d items for 3 keys", len(q.items))
	}
	if got := fmt.Sprint(values(q.take(nil))); got != "[998 999]" {
		t.Errorf("took %s", got)
	}
}

func values[T any](items []keyed[T]) []T {
	var out []T
	for _, it := range items {
		out = append(out, it.v)
	}
	return out
}

func TestMailboxHoldsAcksUntilTheirEcho(t *testing.T) {
	m := newMailbox(2, 8, 1<<20)
	m.seen = 10
	m.pushReply([]byte("error"), 0)
	m.pushReply([]byte("ack-12"), 12) // waits for seq 12
	m.pushReply([]byte("history"), 0) // and keeps its place behind it
	var b batch
	m.take(&b)
	if frames(&b) != "[error]" {
		t.Fatalf("first take: %s", frames(&b))
	}
	b.reset()
	m.pushReading(0, []byte("r11"), 11)
	m.take(&b)
	if frames(&b) != "[r11]" {
		t.Fatalf("after seq 11: %s", frames(&b))
	}
	b.reset()
	m.pushReading(1, []byte("r12"), 12)
	m.take(&b)
	if frames(&b) != "[r12 ack-12 history]" {
		t.Fatalf("after seq 12: %s", frames(&b))
	}
	if m.bytes != 0 || len(m.replies) != 0 {
		t.Errorf("%d bytes, %d replies left", m.bytes, len(m.replies))
	}
}

func TestMailboxBounds(t *testing.T) {
	m := newMailbox(1, 3, 100)
	for i := range 3 {
		if ok, over := m.pushReply([]byte("x"), 0); !ok || over {
			t.Fatalf("reply %d refused", i)
		}
	}
	if ok, over := m.pushReply([]byte("x"), 0); ok || !over {
		t.Fatal("the fourth reply did not overflow")
	}
	if code, _, _ := m.take(&batch{}); code != websocket.ClosePolicyViolation {
		t.Fatalf("close code %d, want 1008", code)
	}
	if ok, over := m.pushReply([]byte("x"), 0); ok || over {
		t.Error("a condemned mailbox takes replies")
	}
	if m.close(websocket.CloseGoingAway, "") {
		t.Error("a second close won")
	}

	// Bytes bound, but one big reply always fits an empty queue.
	m = newMailbox(1, 10, 100)
	if ok, _ := m.pushReply(make([]byte, 500), 0); !ok {
		t.Fatal("a big reply into an empty queue is refused")
	}
	if _, over := m.pushReply([]byte("x"), 0); !over {
		t.Fatal("the bytes bound did not hold")
	}
}

func TestMailboxPushesAreAllocationFree(t *testing.T) {
	m := newMailbox(4, 8, 1<<20)
	pm := []byte("r")
	var b batch
	seq := uint64(0)
	allocs := testing.AllocsPerRun(1000, func() {
		for i := range 4 {
			seq++
			m.pushReading(i, pm, seq)
			m.pushReading(i, pm, seq)
		}
		m.take(&b)
		b.reset()
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per round", allocs)
	}
}

// A client whose writer never runs (nothing takes from its mailbox) costs
// bounded memory however many readings come, and Deliver never waits for it.
func TestDeliverNeverBlocksAndStaysBounded(t *testing.T) {
	h := newHub(testSignals)
	c := &client{mb: newMailbox(len(testSignals), 8, 1<<20)}
	if _, ok := h.join(c, nil); !ok {
		t.Fatal("join failed")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 100_000 {
			h.Deliver(pibridge.Reading{Name: testSignals[i%len(testSignals)].Name, Seq: uint64(i + 1)})
		}
		h.Deliver(pibridge.Reading{Name: "unknown", Seq: 1}) // dropped
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Deliver blocked")
	}
	if n, max := len(c.mb.readings.items), 2*len(testSignals)+1; n > max {
		t.Errorf("%d readings queued for %d signals", n, len(testSignals))
	}
	if got := c.mb.readings.len(); got != len(testSignals) {
		t.Errorf("%d queued after coalescing, want one per signal", got)
	}
}

func TestMailboxReaderWaitsForRoom(t *testing.T) {
	m := newMailbox(1, 2, 1<<20)
	m.pushReply([]byte("a"), 0)
	m.pushReply([]byte("b"), 0)
	done := make(chan bool)
	go func() {
		ok, _ := m.pushReplyWait([]byte("c"), 0, time.Minute)
		done <- ok
	}()
	select {
	case <-done:
		t.Fatal("a full queue took a third reply")
	case <-time.After(50 * time.Millisecond): // it must still be waiting
	}
	var b batch
	m.take(&b) // the writer makes room
	if ok := <-done; !ok {
		t.Fatal("the waiting reply was refused")
	}
	if frames(&b) != "[a b]" || len(m.replies) != 1 {
		t.Fatalf("took %s, left %d", frames(&b), len(m.replies))
	}
	// Nobody takes: the wait ends with 1008.
	m.pushReply([]byte("d"), 0)
	if ok, over := m.pushReplyWait([]byte("e"), 0, 20*time.Millisecond); ok || !over {
		t.Fatalf("ok %v overflowed %v, want the overflow", ok, over)
	}
	if code, _, _ := m.take(&batch{}); code != websocket.ClosePolicyViolation {
		t.Fatalf("close code %d", code)
	}
	// A mailbox closed while a reader waits releases it.
	m = newMailbox(1, 1, 1<<20)
	m.pushReply([]byte("a"), 0)
	go func() {
		ok, over := m.pushReplyWait([]byte("b"), 0, time.Minute)
		done <- ok || over
	}()
	m.close(websocket.CloseGoingAway, "")
	if <-done {
		t.Fatal("a reply was queued into, or overflowed, a closed mailbox")
	}
}

// Readings delivered between the subscription and start are newer than
// the snapshot start seeds from: they stay.
func TestStartKeepsNewerReadings(t *testing.T) {
	h := newHub(testSignals)
	h.Deliver(pibridge.Reading{Name: "fan", Value: pibridge.Number(1), TS: time.Unix(2, 0), Seq: 5})
	h.start([]pibridge.Reading{
		{Name: "fan", Value: pibridge.Number(0), TS: time.Unix(1, 0), Seq: 3},
		{Name: "led", Value: pibridge.Bool(true), TS: time.Unix(1, 0), Seq: 4},
	})
	c := &client{mb: newMailbox(len(testSignals), 8, 1<<20)}
	state, _ := h.join(c, nil)
	got := map[string]uint64{}
	for _, r := range state {
		got[r.Name] = r.Seq
	}
	if got["fan"] != 5 || got["led"] != 4 || len(got) != 2 || c.mb.seen != 5 {
		t.Errorf("joined with %v, seen %d; want fan 5, led 4, seen 5", got, c.mb.seen)
	}
}

package mqtt

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pibridge "pibridge"
)

// TestStallingDiskStatesWait: while the core's disk writer stalls, readings
// are shown (WebSocket) but not yet in the outbox; the states re-published
// on a reconnect must leave them out, or MQTT would carry a seq ahead of
// the older ones (and one the log does not have). Once the disk answers,
// they arrive in seq order.
func TestStallingDiskStatesWait(t *testing.T) {
	addr := startMosquitto(t)
	var stall atomic.Bool
	release := make(chan struct{})
	var once sync.Once
	unstall := func() { once.Do(func() { close(release) }) }
	core, err := pibridge.New(pibridge.Options{Device: pibridge.Device{ID: "dev1"}, Signals: testSignals, StateDir: t.TempDir(),
		DiskGate: func() {
			if stall.Load() {
				<-release
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unstall(); core.Close() })
	w := watch(t, addr, base+"/#")
	px := newProxy(t, addr)
	px.start(t)
	c := newTestClient(t, core, "tcp://"+px.addr, nil)
	runClient(t, c)
	waitOnline(w)
	core.Emit("door", pibridge.Bool(true), time.Time{})
	w.waitFor("the first reading", func(ms []msg) bool { return slices.Contains(readingSeqs(t, ms), 1) })
	eventually(t, "the first reading acknowledged", func() bool { return c.Queued() == 0 })

	stall.Store(true)
	for i := range 3 {
		core.Emit("cpu", pibridge.Number(float64(i)), time.Time{})
	}
	eventually(t, "the readings shown without the disk", func() bool { ahead, _ := core.JournalStats(); return ahead == 3 })
	// A reconnect re-publishes the states.
	px.stop()
	px.start(t)
	w.waitFor("the door's state again", func([]msg) bool { return len(w.on(base+"/door")) >= 2 })
	unstall()
	cpu := func() []uint64 { return readingSeqs(t, w.on(base+"/cpu")) }
	w.waitFor("the stalled readings", func([]msg) bool {
		s := cpu()
		i := slices.Index(s, 3)
		return i >= 0 && slices.Contains(s[i:], 4)
	})
	if got := cpu(); !slices.Equal(got, []uint64{2, 3, 4}) {
		t.Errorf("cpu readings at the broker %v, want 2, 3, 4 in order: none ahead of the outbox", got)
	}
}

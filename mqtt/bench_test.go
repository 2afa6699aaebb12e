package mqtt

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	pibridge "pibridge"
)

// BenchmarkOutbox measures readings/s from Emit to the broker's PUBACK at
// QoS 1 against a real mosquitto on loopback, one op a reading:
//
//   - live: the broker is up and the core emits as fast as the outbox
//     takes it: whenever 2,000 readings wait, the producer waits (a flood
//     beyond the disk outbox's memory buffer of 4,096 unwritten readings
//     would be dropped, counted, by design).
//   - replay: b.N readings were stored on disk while the broker was out of
//     reach; the clock runs from the client's reconnect until the last
//     one is acknowledged.
//
// go test -run=^$ -bench=Outbox -benchtime=100000x ./mqtt
func BenchmarkOutbox(b *testing.B) {
	for _, bc := range []struct {
		name         string
		disk, replay bool
	}{
		{"live/memory", false, false},
		{"live/disk", true, false},
		{"replay/disk", true, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			addr := startMosquitto(b)
			px := newProxy(b, addr)
			core, _ := newCore(b)
			o := Options{Config: testConfig(core, "tcp://"+px.addr), Core: core, Logger: testLogger(b)}
			if bc.disk {
				o.StateDir = b.TempDir()
			}
			c, err := newClient(o, testTiming)
			if err != nil {
				b.Fatal(err)
			}
			if !bc.replay {
				px.start(b)
			}
			runClient(b, c)
			if bc.replay {
				ob := c.outbox.(*DiskOutbox)
				for i := 0; i < b.N; i++ {
					for c.lastSeq.Load()-ob.Synced() >= 2000 {
						time.Sleep(100 * time.Microsecond) // backpressure: polling the writer
					}
					core.Emit("cpu", pibridge.Number(float64(i%1000)/10), time.Time{})
				}
				eventually(b, "every reading on disk", func() bool { return ob.Synced() == uint64(b.N) })
				px.start(b)
				eventually(b, "connected", c.Connected)
				b.ResetTimer()
			} else {
				eventually(b, "connected", c.Connected)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					for c.Queued() >= 2000 {
						time.Sleep(100 * time.Microsecond) // backpressure: polling the outbox
					}
					core.Emit("cpu", pibridge.Number(float64(i%1000)/10), time.Time{})
				}
			}
			deadline := time.Now().Add(time.Minute)
			for st := c.Stats(); st.Published+st.Dropped < uint64(b.N); st = c.Stats() {
				if time.Now().After(deadline) {
					b.Fatalf("stuck: %+v", st)
				}
				time.Sleep(time.Millisecond) // polling for the end of a measurement
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "readings/s")
			if ob, ok := c.outbox.(*DiskOutbox); ok {
				b.ReportMetric(float64(ob.commits.Load()), "commits")
			}
			if d := c.Stats().Dropped; d != 0 {
				b.Errorf("dropped %d", d)
			}
		})
	}
}

// BenchmarkDiskCommit measures one bbolt transaction of the outbox, fsync
// included, on this machine's disk: a batch of new readings stored and the
// previous batch deleted, as the writer does during an outage.
//
// go test -run=^$ -bench=DiskCommit -benchtime=300x ./mqtt
func BenchmarkDiskCommit(b *testing.B) {
	for _, size := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			st, err := boltOpener(b.TempDir() + "/" + outboxFile)(func(uint64) {})
			if err != nil {
				b.Fatal(err)
			}
			defer st.close()
			batch := make([]pibridge.Reading, size)
			var seq uint64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				floor := seq
				for j := range batch {
					seq++
					batch[j] = pibridge.Reading{Name: "air.temperature", Value: pibridge.Number(21.5), Unit: "°C", TS: time.Now(), Seq: seq}
				}
				if err := st.apply(floor, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "readings/s")
		})
	}
}

// TestRecoveryDefaultTiming measures, with the production timing (an
// attempt at once, then pauses from 1 s doubling to 10 s, ±20%), the time from mosquitto accepting
// connections again after a SIGKILL to the first new reading at a
// subscriber, for outages of several lengths. It takes about a minute, so
// it runs only with PIBRIDGE_MQTT_BENCH=1:
//
// PIBRIDGE_MQTT_BENCH=1 go test -run=RecoveryDefaultTiming -v ./mqtt
func TestRecoveryDefaultTiming(t *testing.T) {
	if os.Getenv("PIBRIDGE_MQTT_BENCH") == "" {
		t.Skip("set PIBRIDGE_MQTT_BENCH=1 to measure")
	}
	m := runMosquitto(t, mosquittoOptions{persist: true})
	w := watchSeqs(t, m.addr, fmt.Sprintf("seqs-recovery-%d", rand.Int()), base+"/cpu")
	m.stop()
	m.start()
	core, _ := newCore(t)
	c, err := newClient(Options{Config: testConfig(core, "tcp://"+m.addr), Core: core, Logger: testLogger(t), StateDir: t.TempDir()}, defaultTiming)
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)
	e := startEmitter(core, 10*time.Millisecond)
	defer e.halt()
	for _, outage := range []time.Duration{0, time.Second, 3 * time.Second, 8 * time.Second, 20 * time.Second} {
		from := core.Emitted() + 20
		w.waitFor("readings flowing", func(w *seqWatcher) bool { return w.online && w.counts[from] > 0 })
		m.kill()
		pause(outage)
		m.start()
		up := time.Now()
		last := c.lastSeq.Load()
		var rec time.Duration
		timeout := waitLong
		deadline := time.Now().Add(timeout)
		for rec == 0 {
			w.mu.Lock()
			for s := last + 1; s <= last+100; s++ {
				if w.counts[s] > 0 {
					rec = w.first[s].Sub(up)
					break
				}
			}
			w.mu.Unlock()
			if time.Now().After(deadline) {
				t.Fatalf("outage %s: no new reading within %s", outage, timeout)
			}
			time.Sleep(5 * time.Millisecond) // polling with a deadline
		}
		t.Logf("broker down %s: first new reading at the subscriber %s after the broker accepted again", outage, rec.Round(time.Millisecond))
	}
	last := c.lastSeq.Load()
	e.halt()
	w.waitFor("every reading", func(w *seqWatcher) bool { return w.hasAll(1, last) })
}

// BenchmarkDiskAppend measures the core's journal path into the disk
// outbox with the broker up: readings appended in batches of the given
// size (the journal hands over up to 256 at a time; batch=1 is one
// reading a call) and acknowledged right away, so no transaction is
// needed. One op is one reading; writes/reading counts the process's
// write system calls (/proc/self/io syscw): one log write per batch.
//
// go test -run=^$ -bench=DiskAppend ./mqtt
func BenchmarkDiskAppend(b *testing.B) {
	for _, size := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			o, err := running(OpenDiskOutbox(b.TempDir(), 1<<16, nil))
			if err != nil {
				b.Fatal(err)
			}
			defer o.Close()
			batch := make([]pibridge.Reading, size)
			ts := time.Now()
			var seq uint64
			w0 := syscw(b)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += size {
				batch = batch[:min(size, b.N-i)]
				for j := range batch {
					seq++
					batch[j] = pibridge.Reading{Name: "air.temperature", Value: pibridge.Number(21.5), Unit: "°C", TS: ts, Seq: seq}
				}
				o.Append(batch...)
				o.Commit(seq)
			}
			b.StopTimer()
			b.ReportMetric(float64(syscw(b)-w0)/float64(b.N), "writes/reading")
		})
	}
}

// syscw is the process's count of write system calls so far.
func syscw(tb testing.TB) uint64 {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		tb.Skip("no /proc/self/io:", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "syscw: "); ok {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return n
		}
	}
	tb.Fatal("no syscw in /proc/self/io")
	return 0
}

package pibridge

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"pibridge/internal/testkit"
)

// memJournal stands for a journal on disk: records survive the core that
// wrote them ("the kernel has them"); block, when set, holds every Record
// until it is closed (a stalling disk).
type memJournal struct {
	mu    sync.Mutex
	recs  []uint64
	block chan struct{}
}

func (j *memJournal) LastSeq() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.recs) == 0 {
		return 0
	}
	return j.recs[len(j.recs)-1]
}

func (j *memJournal) Record(batch []Reading) {
	if j.block != nil {
		<-j.block
	}
	j.mu.Lock()
	for _, r := range batch {
		j.recs = append(j.recs, r.Seq)
	}
	j.mu.Unlock()
}

func (j *memJournal) seqs() []uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.recs)
}

// truncate keeps the records up to seq: the disk lost the tail.
func (j *memJournal) truncate(seq uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for len(j.recs) > 0 && j.recs[len(j.recs)-1] > seq {
		j.recs = j.recs[:len(j.recs)-1]
	}
}

func startJournaled(t *testing.T, dir, boot string, j *memJournal) *Core {
	t.Helper()
	c, err := New(Options{Device: Device{ID: "t"}, Signals: testSignals, StateDir: dir, BootID: boot})
	if err != nil {
		t.Fatal(err)
	}
	c.SetActuator(&fakeActuator{core: c})
	jr, err := c.AttachJournal(j)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Start(t, 5*time.Second, jr.Run)
	// Running before the first reading, so that none waits for Run.
	waitFor(t, "the journal running", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return jr.jr.started
	})
	return c
}

// crash abandons c as a SIGKILL would: the journal has what it recorded,
// the seq file stays as the run left it. Its goroutine is ended so that
// it records nothing more.
func crash(t *testing.T, c *Core) {
	t.Helper()
	if err := c.AwaitJournal(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	jr := c.jr
	c.mu.Unlock()
	c.detach(jr)
}

func emitN(c *Core, n int) {
	for i := 0; i < n; i++ {
		c.Emit("air.temperature", Number(float64(i)), time.Time{})
	}
}

// TestSeqAcrossRestarts: after a crash in the same boot seq continues at
// the journal's last seq + 1 (no hole); a clean stop says clean; a reboot
// after an unclean stop (power loss: the journal's tail may be gone)
// skips above the reservation and says so in RunInfo.
func TestSeqAcrossRestarts(t *testing.T) {
	tests := []struct {
		name    string
		stop    func(*testing.T, *Core, *memJournal) // how the first run ends
		boot    string                               // the second run's boot
		want    RunInfo
		wantGap bool
	}{
		{"SIGKILL", func(t *testing.T, c *Core, _ *memJournal) { crash(t, c) }, "boot-1",
			RunInfo{FirstSeq: 1001, PreviousLastSeq: 1000, Clean: false}, false},
		{"clean stop", func(t *testing.T, c *Core, _ *memJournal) {
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
		}, "boot-2", RunInfo{FirstSeq: 1001, PreviousLastSeq: 1000, Clean: true}, false},
		{"power loss, the log's tail lost", func(t *testing.T, c *Core, j *memJournal) {
			crash(t, c)
			j.truncate(990)
		}, "boot-2", RunInfo{FirstSeq: 1 + seqLease, PreviousLastSeq: 990, Clean: false}, true},
		{"power loss, past the first reservation", func(t *testing.T, c *Core, j *memJournal) {
			// Extending the reservation (an fsync) is asynchronous: at
			// most seqLease/2 readings may outrun it, far more than a Pi
			// emits during one fsync, but not more than this loop.
			for range 3 * seqLease / 1024 {
				emitN(c, 1024)
				waitFor(t, "the reservation extended", func() bool {
					c.mu.Lock()
					defer c.mu.Unlock()
					return c.limit > c.next
				})
			}
			crash(t, c)
			j.truncate(3000)
		}, "boot-2", RunInfo{PreviousLastSeq: 3000, Clean: false}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			j := &memJournal{}
			c := startJournaled(t, dir, "boot-1", j)
			if got := c.RunInfo(); got != (RunInfo{FirstSeq: 1, Clean: true}) {
				t.Errorf("first run: RunInfo %+v, want first_seq 1, clean", got)
			}
			emitN(c, 1000)
			tt.stop(t, c, j)
			last := j.LastSeq()

			c2 := startJournaled(t, dir, tt.boot, j)
			t.Cleanup(func() { c2.Close() })
			got := c2.RunInfo()
			if tt.want.FirstSeq == 0 {
				// Above every seq the first run handed out.
				if got.FirstSeq <= 1000+3*seqLease {
					t.Errorf("first_seq %d repeats seqs of the first run (up to %d)", got.FirstSeq, 1000+3*seqLease)
				}
				tt.want.FirstSeq = got.FirstSeq
			}
			if got != tt.want {
				t.Errorf("RunInfo %+v, want %+v", got, tt.want)
			}
			if gap := got.FirstSeq > got.PreviousLastSeq+1; gap != tt.wantGap {
				t.Errorf("skip announced = %v, want %v", gap, tt.wantGap)
			}
			emitN(c2, 1)
			if r, _ := c2.Latest("air.temperature"); r.Seq != got.FirstSeq {
				t.Errorf("first reading of the run has seq %d, RunInfo says %d", r.Seq, got.FirstSeq)
			}
			if err := c2.AwaitJournal(context.Background()); err != nil {
				t.Fatal(err)
			}
			if tt.wantGap {
				return
			}
			// No hole: the journal holds 1..last, then the new run's first.
			want := make([]uint64, 0, last+1)
			for s := uint64(1); s <= last+1; s++ {
				want = append(want, s)
			}
			if seqs := j.seqs(); !slices.Equal(seqs, want) {
				t.Errorf("journal holds %d seqs with a hole or a repeat (last %v)", len(seqs), seqs[max(0, len(seqs)-3):])
			}
		})
	}
}

func TestResumeSeq(t *testing.T) {
	running := seqFile{n: 5000, first: 904, boot: "b"}
	tests := []struct {
		name    string
		prev    seqFile
		found   bool
		last    uint64
		journal bool
		boot    string
		want    RunInfo
	}{
		{"first start", seqFile{}, false, 0, true, "b", RunInfo{FirstSeq: 1, Clean: true}},
		{"seq file lost, log kept", seqFile{}, false, 77, true, "b", RunInfo{FirstSeq: 78, PreviousLastSeq: 77}},
		{"clean", seqFile{clean: true, n: 1610, boot: "a"}, true, 1609, true, "b", RunInfo{FirstSeq: 1610, PreviousLastSeq: 1609, Clean: true}},
		{"version 1 file", seqFile{clean: true, n: 4097, v1: true}, true, 1609, true, "b", RunInfo{FirstSeq: 4097, PreviousLastSeq: 4096, Clean: true}},
		{"crash, same boot", running, true, 1609, true, "b", RunInfo{FirstSeq: 1610, PreviousLastSeq: 1609}},
		{"crash, nothing of the run in the journal", running, true, 903, true, "b", RunInfo{FirstSeq: 5000, PreviousLastSeq: 903}},
		{"crash, the journal lost older readings", running, true, 500, true, "b", RunInfo{FirstSeq: 5000, PreviousLastSeq: 903}},
		{"crash, no journal", running, true, 0, false, "b", RunInfo{FirstSeq: 5000, PreviousLastSeq: 903}},
		{"reboot", running, true, 1609, true, "c", RunInfo{FirstSeq: 5000, PreviousLastSeq: 1609}},
		{"boot unknown", running, true, 1609, true, "", RunInfo{FirstSeq: 5000, PreviousLastSeq: 1609}},
		{"beyond the reservation", running, true, 6000, true, "c", RunInfo{FirstSeq: 6001, PreviousLastSeq: 6000}},
	}
	for _, tt := range tests {
		if got := resumeSeq(tt.prev, tt.found, tt.last, tt.journal, tt.boot); got != tt.want {
			t.Errorf("%s: %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

// TestStalledJournalBlocksNothing: with a journal whose every write blocks
// (a stalling disk), Emit returns, subscribers get every reading in seq
// order, commands are answered and State reads; once the disk comes back
// the journal gets every reading in seq order.
func TestStalledJournalBlocksNothing(t *testing.T) {
	j := &memJournal{block: make(chan struct{})}
	c := startJournaled(t, t.TempDir(), "b", j)
	rec := &recorder{}
	_, cancel := c.Subscribe(rec)
	defer cancel()

	const n = 500
	done := make(chan struct{})
	go func() {
		defer close(done)
		emitN(c, n)
		for i := 0; i < 10; i++ {
			if _, err := c.Execute(context.Background(), Command{Name: "led", Op: OpSet, Value: Bool(i%2 == 0)}); err != nil {
				t.Errorf("command during the stall: %v", err)
			}
		}
		c.State()
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Emit, Execute or State blocked behind the stalled journal")
	}
	waitFor(t, "the subscriber's readings while the journal is stalled", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.seqs) == n+10
	})
	want := make([]uint64, n+10)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	rec.mu.Lock()
	inOrder := slices.Equal(rec.seqs, want)
	rec.mu.Unlock()
	if !inOrder {
		t.Error("subscriber's readings are not 1..n in order")
	}
	if ahead, _ := c.JournalStats(); ahead == 0 {
		t.Error("no reading counted as shown ahead of the journal")
	}

	close(j.block)
	ctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	if err := c.AwaitJournal(ctx); err != nil {
		t.Fatal(err)
	}
	if got := j.seqs(); !slices.Equal(got, want) {
		t.Errorf("journal got %d readings, want 1..%d in order", len(got), n+10)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestJournalOverflowCounted: a journal stalled for longer than its queue
// holds loses the newest readings from the journal only, counted.
func TestJournalOverflowCounted(t *testing.T) {
	j := &memJournal{block: make(chan struct{})}
	c := startJournaled(t, t.TempDir(), "b", j)
	emitN(c, maxPending+100)
	if _, over := c.JournalStats(); over < 99 || over > 100 {
		// One reading may be in the blocked Record, out of the queue.
		t.Errorf("overflow %d, want about 100", over)
	}
	close(j.block)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if seqs := j.seqs(); len(seqs) < maxPending || !slices.IsSorted(seqs) {
		t.Errorf("journal got %d readings (sorted %v), want the first %d in order", len(seqs), slices.IsSorted(seqs), maxPending)
	}
}

// TestHealthyJournalBeforeSubscribers: with a journal that answers, a
// subscriber never sees a reading the journal does not have yet.
func TestHealthyJournalBeforeSubscribers(t *testing.T) {
	j := &memJournal{}
	c := startJournaled(t, t.TempDir(), "b", j)
	defer c.Close()
	// A write of a healthy journal that a loaded machine deschedules past
	// 5 ms would count as a stall: this test is about the healthy path.
	c.mu.Lock()
	c.jr.stallAfter = time.Hour
	c.mu.Unlock()
	var bad []uint64
	var mu sync.Mutex
	sub := subscriberFunc(func(r Reading) {
		if j.LastSeq() < r.Seq {
			mu.Lock()
			bad = append(bad, r.Seq)
			mu.Unlock()
		}
	})
	_, cancel := c.Subscribe(sub)
	defer cancel()
	emitN(c, 2000)
	if err := c.AwaitJournal(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if ahead, _ := c.JournalStats(); len(bad) > 0 || ahead > 0 {
		t.Errorf("%d of 2000 readings seen before the journal had them (%d counted as ahead)", len(bad), ahead)
	}
}

// waitFor polls cond until it holds, for at most 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, 5*time.Second, what, cond)
}

type subscriberFunc func(Reading)

func (f subscriberFunc) Deliver(r Reading) { f(r) }

// TestJournalLifecycle: AttachJournal starts no goroutine; readings
// emitted before Run wait for it (and are shown after stallAfter all the
// same); Run records them in order and, once its ctx ends, what came
// since, and returns with no goroutine left; Detach without Run records
// on the caller's goroutine.
func TestJournalLifecycle(t *testing.T) {
	tests := []struct {
		name string
		run  bool
	}{{"run then cancel", true}, {"detach without run", false}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			c, err := New(Options{Device: Device{ID: "t"}, Signals: testSignals, StateDir: t.TempDir(), BootID: "b"})
			if err != nil {
				t.Fatal(err)
			}
			j := &memJournal{}
			jr, err := c.AttachJournal(j)
			if err != nil {
				t.Fatal(err)
			}
			if n := runtime.NumGoroutine(); n > before {
				t.Errorf("AttachJournal started %d goroutines", n-before)
			}
			rec := &recorder{}
			_, cancel := c.Subscribe(rec)
			defer cancel()
			emitN(c, 3)
			if got := j.seqs(); len(got) != 0 {
				t.Fatalf("journal recorded %v before Run", got)
			}
			waitFor(t, "the waiting readings shown after stallAfter", func() bool {
				rec.mu.Lock()
				defer rec.mu.Unlock()
				return len(rec.seqs) == 3
			})
			if tt.run {
				ctx, stop := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- jr.Run(ctx) }()
				waitFor(t, "the waiting readings recorded", func() bool { return len(j.seqs()) == 3 })
				emitN(c, 2)
				stop()
				select {
				case err := <-done:
					if err != nil {
						t.Fatal(err)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("Run did not return after its ctx ended")
				}
			} else {
				jr.Detach()
				emitN(c, 2) // straight to subscribers now
			}
			want := map[bool][]uint64{true: {1, 2, 3, 4, 5}, false: {1, 2, 3}}[tt.run]
			if got := j.seqs(); !slices.Equal(got, want) {
				t.Errorf("journal holds %v, want %v", got, want)
			}
			if err := jr.Run(context.Background()); err == nil && tt.run {
				t.Error("a second Run did not fail")
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			testkit.Eventually(t, 5*time.Second, "no goroutine left", func() bool { return runtime.NumGoroutine() <= before })
		})
	}
}

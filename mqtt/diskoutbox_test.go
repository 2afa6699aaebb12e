package mqtt

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	pibridge "pibridge"
)

func TestSeqSpans(t *testing.T) {
	var x seqSpans
	for _, s := range []uint64{3, 4, 5, 9, 10, 20} {
		x.push(s)
	}
	if want := []seqSpan{{3, 5}, {9, 10}, {20, 20}}; !reflect.DeepEqual(x.s, want) || x.n != 6 {
		t.Fatalf("spans %v n %d, want %v and 6", x.s, x.n, want)
	}
	for _, tt := range []struct {
		after uint64
		want  uint64
		ok    bool
	}{{0, 3, true}, {3, 4, true}, {5, 9, true}, {7, 9, true}, {10, 20, true}, {20, 0, false}} {
		if got, ok := x.next(tt.after); got != tt.want || ok != tt.ok {
			t.Errorf("next(%d) = %d, %v; want %d, %v", tt.after, got, ok, tt.want, tt.ok)
		}
	}
	if !x.remove(4) || x.remove(4) || x.remove(7) || !x.remove(20) {
		t.Fatal("remove")
	}
	if want := []seqSpan{{3, 3}, {5, 5}, {9, 10}}; !reflect.DeepEqual(x.s, want) || x.n != 4 {
		t.Fatalf("after remove: %v n %d, want %v and 4", x.s, x.n, want)
	}
	if n := x.popTo(9); n != 3 || x.n != 1 || x.first() != 10 {
		t.Fatalf("popTo(9) = %d, left %v n %d", n, x.s, x.n)
	}
	if n := x.popTo(100); n != 1 || x.n != 0 || x.s != nil {
		t.Fatalf("popTo(100) = %d, left %v", n, x.s)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	ts := time.Date(2025, 3, 1, 12, 30, 45, 123456789, time.UTC)
	for _, r := range []pibridge.Reading{
		{Name: "air.temperature", Value: pibridge.Number(21.43), Unit: "°C", TS: ts},
		{Name: "door", Value: pibridge.Bool(true), TS: ts},
		{Name: "pump", Value: pibridge.Bool(false), TS: ts},
		{Name: "x", Value: pibridge.Toggle(), TS: ts},
		{Name: "y", TS: ts},
		{Name: "fan", Value: pibridge.Number(-0.25), Unit: "", TS: ts.Add(-100 * 365 * 24 * time.Hour)},
	} {
		b := encodeRecord(nil, r)
		if len(b) > recordSize(r) {
			t.Errorf("%s: %d bytes, recordSize says %d", r.Name, len(b), recordSize(r))
		}
		got, ok := decodeRecord(b)
		if !ok || got.Name != r.Name || got.Unit != r.Unit || !got.TS.Equal(r.TS) || got.Value != r.Value {
			t.Errorf("round trip of %+v gave %+v, %v", r, got, ok)
		}
		for i := 0; i < len(b); i++ { // every truncation is refused, none panics
			if _, ok := decodeRecord(b[:i]); ok {
				t.Errorf("%s: truncated to %d bytes accepted", r.Name, i)
			}
		}
		if _, ok := decodeRecord(append(b, 0)); ok {
			t.Errorf("%s: trailing byte accepted", r.Name)
		}
	}
	if _, ok := decodeRecord([]byte{2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}); ok {
		t.Error("unknown version accepted")
	}
}

// fakeStore is an outboxStore in memory that fails while told to and
// records each transaction.
type fakeStore struct {
	mu      sync.Mutex
	recs    map[uint64]pibridge.Reading
	err     error // apply fails with it while set
	readErr error
	badSeq  uint64 // reading from this seq fails
	txs     []fakeTx
	applied chan struct{}
	entered chan struct{} // apply has begun (and waits at the gate, if set)
	gate    chan struct{} // when set, apply waits for a value on it
}

type fakeTx struct {
	floor uint64
	seqs  []uint64
}

func newFakeStore() *fakeStore {
	return &fakeStore{recs: map[uint64]pibridge.Reading{}, applied: make(chan struct{}, 1000), entered: make(chan struct{}, 1000)}
}

func (f *fakeStore) opener() storeOpener {
	return func(load func(uint64)) (outboxStore, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		keys := make([]uint64, 0, len(f.recs))
		for k := range f.recs {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			load(k)
		}
		return f, nil
	}
}

func (f *fakeStore) apply(floor uint64, batch []pibridge.Reading) error {
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	f.entered <- struct{}{}
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	tx := fakeTx{floor: floor}
	for k := range f.recs {
		if k <= floor {
			delete(f.recs, k)
		}
	}
	for _, r := range batch {
		if r.Seq > floor {
			f.recs[r.Seq] = r
			tx.seqs = append(tx.seqs, r.Seq)
		}
	}
	f.txs = append(f.txs, tx)
	f.applied <- struct{}{}
	return nil
}

func (f *fakeStore) read(from uint64, max int) ([]pibridge.Reading, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.readErr != nil {
		return nil, f.readErr
	}
	if f.badSeq != 0 && from == f.badSeq {
		return nil, errors.New("input/output error")
	}
	var keys []uint64
	for k := range f.recs {
		if k >= from {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var out []pibridge.Reading
	for _, k := range keys[:min(len(keys), max)] {
		out = append(out, f.recs[k])
	}
	return out, nil
}

func (f *fakeStore) close() error { return nil }

func (f *fakeStore) set(fn func(f *fakeStore)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeStore) stored() []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	keys := make([]uint64, 0, len(f.recs))
	for k := range f.recs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (f *fakeStore) transactions() []fakeTx {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.txs)
}

var testDiskParams = diskParams{
	window:   50 * time.Millisecond,
	batch:    100,
	maxBatch: 1000,
	memMax:   64,
	ahead:    8,
	retryMin: 10 * time.Millisecond,
	retryMax: 50 * time.Millisecond,
}

func openFake(t *testing.T, f *fakeStore, max int, p diskParams) *DiskOutbox {
	t.Helper()
	o, err := running(openDiskOutbox("fake", f.opener(), [2]string{}, max, testLogger(t), p))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

func testReading(seq uint64) pibridge.Reading {
	return pibridge.Reading{Name: "cpu", Value: pibridge.Number(float64(seq)), Unit: "°C",
		TS: time.Unix(1700000000, int64(seq)*1e6).UTC(), Seq: seq}
}

func appendSeqs(o Outbox, from, to uint64) {
	for s := from; s <= to; s++ {
		o.Append(testReading(s))
	}
}

// drain returns the seqs Next yields from the start, checking each
// reading's content.
func drain(t *testing.T, o Outbox) []uint64 {
	t.Helper()
	var seqs []uint64
	var after uint64
	for {
		r, ok := o.Next(after)
		if !ok {
			return seqs
		}
		if want := testReading(r.Seq); r != want {
			t.Fatalf("Next(%d) = %+v, want %+v", after, r, want)
		}
		seqs = append(seqs, r.Seq)
		after = r.Seq
	}
}

// TestDiskOutboxGroupCommit holds each transaction in the store (the
// fake's gate) while the test appends and acknowledges, so what each
// transaction holds is set by the test, not by the scheduler.
func TestDiskOutboxGroupCommit(t *testing.T) {
	f := newFakeStore()
	gate := make(chan struct{})
	f.gate = gate
	o := openFake(t, f, 100000, testDiskParams)

	// A burst below the batch size, while the disk is busy with seq 1:
	// one transaction, not before the window.
	appendSeqs(o, 1, 1)
	<-f.entered
	start := time.Now()
	appendSeqs(o, 2, 10)
	gate <- struct{}{}
	<-f.entered
	if d := time.Since(start); d < testDiskParams.window {
		t.Errorf("committed after %s, before the %s window", d, testDiskParams.window)
	}

	// Acknowledged before their transaction: never written, and what was
	// written is deleted with the next transaction.
	appendSeqs(o, 11, 20)
	o.Commit(20)
	gate <- struct{}{}
	<-f.entered
	gate <- struct{}{}
	for range 3 {
		<-f.applied
	}
	txs := f.transactions()
	if len(txs) != 3 || !slices.Equal(txs[0].seqs, seqRange(1, 1)) || !slices.Equal(txs[1].seqs, seqRange(2, 10)) {
		t.Fatalf("transactions %+v, want 1, then one with 2..10", txs)
	}
	if txs[2].floor != 20 || len(txs[2].seqs) != 0 {
		t.Fatalf("third transaction %+v, want only the deletes up to 20", txs[2])
	}
	if got := f.stored(); len(got) != 0 {
		t.Errorf("stored after commit: %v", got)
	}
	f.set(func(f *fakeStore) { f.gate = nil })

	// A batch's worth does not wait for the window. (Exactly one: what
	// follows a first transaction taken mid-burst would wait for the
	// window when it is less than a batch.)
	long := testDiskParams
	long.window, long.memMax = time.Hour, 1000
	f2 := newFakeStore()
	o2 := openFake(t, f2, 100000, long)
	appendSeqs(o2, 1, uint64(long.batch))
	eventually(t, "a batch synced without waiting for the window", func() bool { return o2.Synced() == uint64(long.batch) })
	if txs := f2.transactions(); len(txs) != 1 || !slices.Equal(txs[0].seqs, seqRange(1, uint64(long.batch))) {
		t.Errorf("transactions %+v, want one with the whole batch from seq 1", txs)
	}
}

// TestDiskOutboxAckedInWindowNoTransaction: readings the broker
// acknowledges inside the commit window cost no transaction at all, not
// even an empty one (bbolt would still write and fsync its meta page):
// the first transaction is the one that stores the reading acknowledged
// too late.
func TestDiskOutboxAckedInWindowNoTransaction(t *testing.T) {
	f := newFakeStore()
	p := testDiskParams
	p.window = 500 * time.Millisecond // the ack below comes well inside it
	o := openFake(t, f, 100, p)
	appendSeqs(o, 1, 3)
	o.Commit(3)
	o.mu.Lock()
	pending := !o.workSince.IsZero()
	o.mu.Unlock()
	if pending {
		t.Error("work still pending after every reading was acknowledged")
	}
	appendSeqs(o, 4, 4)
	<-f.applied
	if txs := f.transactions(); len(txs) != 1 || !slices.Equal(txs[0].seqs, []uint64{4}) {
		t.Fatalf("transactions %+v, want one storing only 4", txs)
	}
}

func TestDiskOutboxReadsBackFromDisk(t *testing.T) {
	f := newFakeStore()
	o := openFake(t, f, 100000, testDiskParams)
	// More than memMax, in steps the writer keeps up with: the oldest
	// stay only on disk and Next reads them back, 8 at a time.
	for s := uint64(1); s <= 300; s += 30 {
		appendSeqs(o, s, s+29)
		eventually(t, "synced", func() bool { return o.Synced() == s+29 })
	}
	if n := o.Len(); n != 300 {
		t.Fatalf("Len = %d, want 300", n)
	}
	if d := o.Dropped(); d != 0 {
		t.Fatalf("Dropped = %d", d)
	}
	if got := drain(t, o); !slices.Equal(got, seqRange(1, 300)) {
		t.Fatalf("Next walked %v", got)
	}
	// A cursor in the middle of the disk part.
	if r, ok := o.Next(123); !ok || r.Seq != 124 {
		t.Errorf("Next(123) = %d, %v", r.Seq, ok)
	}
	o.Commit(250)
	if got := drain(t, o); !slices.Equal(got, seqRange(251, 300)) {
		t.Fatalf("after Commit(250): %v", got)
	}
	eventually(t, "the deletes on disk", func() bool { s := f.stored(); return len(s) == 50 && s[0] == 251 })
}

// TestDiskOutboxRestart reopens the file: what was not acknowledged comes
// back, in order, with its content.
func TestDiskOutboxRestart(t *testing.T) {
	dir := t.TempDir()
	o, err := running(OpenDiskOutbox(dir, 1000, testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	appendSeqs(o, 1, 500)
	o.Commit(100)
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}

	o, err = running(OpenDiskOutbox(dir, 1000, testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	if n := o.Len(); n != 400 {
		t.Fatalf("Len after reopening = %d, want 400", n)
	}
	appendSeqs(o, 5000, 5009) // a restart skips seqs (the core leases them)
	want := append(seqRange(101, 500), seqRange(5000, 5009)...)
	if got := drain(t, o); !slices.Equal(got, want) {
		t.Fatalf("after reopening: %v", got)
	}
	o.Commit(450)
	o.Close()

	// queue_max lowered meanwhile: the oldest go, counted.
	o, err = running(OpenDiskOutbox(dir, 20, testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if n, d := o.Len(), o.Dropped(); n != 20 || d != 40 {
		t.Errorf("Len %d Dropped %d, want 20 and 40", n, d)
	}
	if got := drain(t, o); !slices.Equal(got, append(seqRange(491, 500), seqRange(5000, 5009)...)) {
		t.Errorf("kept %v", got)
	}
	// A seq that does not grow (state_dir/seq lost) is refused, counted.
	o.Append(testReading(7))
	if d := o.Dropped(); d != 41 {
		t.Errorf("Dropped = %d after a seq going back", d)
	}
}

func TestDiskOutboxInUse(t *testing.T) {
	dir := t.TempDir()
	o, err := running(OpenDiskOutbox(dir, 10, testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if _, err := OpenDiskOutbox(dir, 10, testLogger(t)); !errors.Is(err, errStoreInUse) {
		t.Errorf("second open: %v, want errStoreInUse", err)
	}
}

func TestDiskOutboxDamagedFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, outboxFile)
	if err := os.WriteFile(path, []byte("not a bbolt file, not at all, not even close to one page"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := running(OpenDiskOutbox(dir, 10, testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	appendSeqs(o, 1, 3)
	eventually(t, "written", func() bool { return o.Synced() == 3 && !o.Failing() })
	if m, _ := filepath.Glob(path + ".damaged-*"); len(m) != 1 {
		t.Errorf("damaged file not moved aside: %v", m)
	}
}

// TestDiskOutboxDiskFails: while the store fails, readings wait in
// memory (publishing goes on from there), the excess is dropped and
// counted, and everything resumes when the store works again.
func TestDiskOutboxDiskFails(t *testing.T) {
	f := newFakeStore()
	o := openFake(t, f, 100000, testDiskParams)
	enospc := fmt.Errorf("write outbox: %w", syscall.ENOSPC)
	f.set(func(f *fakeStore) { f.err = enospc })

	appendSeqs(o, 1, 40)
	eventually(t, "failing", o.Failing)
	if r, ok := o.Next(0); !ok || r.Seq != 1 {
		t.Fatalf("Next while failing: %d, %v", r.Seq, ok)
	}
	o.Commit(10) // the broker acknowledged some meanwhile
	appendSeqs(o, 41, 100)
	// memMax 64: 90 waiting, the 26 oldest unwritten dropped.
	if n, d := o.Len(), o.Dropped(); n != 64 || d != 26 {
		t.Fatalf("Len %d Dropped %d, want 64 and 26", n, d)
	}
	if s := o.Synced(); s != 36 {
		t.Errorf("Synced = %d while failing, want 36 (the first waiting, 37, minus one)", s)
	}
	f.set(func(f *fakeStore) { f.err = nil })
	eventually(t, "recovery", func() bool { return !o.Failing() && o.Synced() == 100 })
	if got := f.stored(); !slices.Equal(got, seqRange(37, 100)) {
		t.Errorf("stored %v, want 37..100", got)
	}
	if got := drain(t, o); !slices.Equal(got, seqRange(37, 100)) {
		t.Errorf("Next walked %v", got)
	}
}

// TestDiskOutboxUnreadable: a reading that is recorded but cannot be read
// back is skipped and counted; a read error holds publishing until the
// disk answers again.
func TestDiskOutboxUnreadable(t *testing.T) {
	f := newFakeStore()
	for s := uint64(1); s <= 5; s++ {
		f.recs[s] = testReading(s)
	}
	o := openFake(t, f, 100, testDiskParams)
	woken := make(chan struct{}, 1)
	o.setWake(func() { signal(woken) })
	f.set(func(f *fakeStore) { delete(f.recs, 2); f.readErr = errors.New("EIO") })
	if _, ok := o.Next(0); ok {
		t.Fatal("Next returned a reading while the disk does not answer")
	}
	f.set(func(f *fakeStore) { f.readErr = nil })
	appendSeqs(o, 6, 6) // the next commit wakes the publisher
	select {
	case <-woken:
	case <-time.After(waitLong):
		t.Fatal("publisher not woken after the disk answered again")
	}
	if got := drain(t, o); !slices.Equal(got, []uint64{1, 3, 4, 5, 6}) {
		t.Errorf("Next walked %v", got)
	}
	if d := o.Dropped(); d != 1 {
		t.Errorf("Dropped = %d, want the missing one", d)
	}
}

// TestDiskOutboxAckWhileWriting: readings acknowledged while their
// transaction runs are deleted by the next one.
func TestDiskOutboxAckWhileWriting(t *testing.T) {
	f := newFakeStore()
	gate := make(chan struct{})
	f.gate = gate
	o := openFake(t, f, 100, testDiskParams)
	appendSeqs(o, 1, 5)
	eventually(t, "the transaction to start", func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		return o.q.inflight == 5
	})
	<-f.entered // apply has taken the gate: clearing it below does not let this one through
	o.Commit(3)
	appendSeqs(o, 6, 7)
	f.set(func(f *fakeStore) { f.gate = nil })
	gate <- struct{}{}
	<-f.applied
	eventually(t, "the deletes and the rest", func() bool { return slices.Equal(f.stored(), []uint64{4, 5, 6, 7}) })
	if s := o.Synced(); s != 7 {
		t.Errorf("Synced = %d", s)
	}
}

// TestDiskOutboxFullDisk runs the real bbolt file on a 1 MiB tmpfs: it
// fills up, readings are counted as dropped beyond the memory buffer,
// nothing panics, and writing resumes once there is room; then the same
// with the file system remounted read-only.
func TestDiskOutboxFullDisk(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	filler := filepath.Join(dir, "filler")
	p := testDiskParams
	p.memMax = 500
	o, err := running(openDiskOutbox(filepath.Join(dir, outboxFile), boltOpener(filepath.Join(dir, outboxFile)), walPaths(filepath.Join(dir, outboxFile)), 1000000, testLogger(t), p))
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()

	// Leave a few pages free, then write until the disk is full.
	fill(t, filler, 64<<10)
	var seq uint64
	deadline := time.Now().Add(waitLong)
	for !o.Failing() {
		if time.Now().After(deadline) {
			t.Fatal("the disk never filled up")
		}
		seq++
		o.Append(testReading(seq))
		if seq%50 == 0 {
			eventually(t, "a commit", func() bool { return o.Synced() == seq || o.Failing() })
		}
	}
	firstFail := seq
	appendSeqs(o, seq+1, seq+1000)
	seq += 1000
	if d := o.Dropped(); d == 0 || d > 1000 {
		t.Fatalf("Dropped = %d with the disk full, want (0, 1000]", d)
	}
	if !o.Failing() {
		t.Fatal("not failing with the disk full")
	}
	dropped := o.Dropped()
	o.mu.Lock()
	walFails := o.wal.fails.Load()
	o.mu.Unlock()
	t.Logf("disk full after seq %d; %d dropped; %d log writes failed (those readings were kept in memory)", firstFail, dropped, walFails)

	// Room again: it catches up by itself.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	eventually(t, "recovery", func() bool { return !o.Failing() && o.Synced() == seq })
	held := drain(t, o)
	if uint64(len(held))+dropped != seq || held[len(held)-1] != seq {
		t.Errorf("held %d + dropped %d, want %d", len(held), dropped, seq)
	}

	// A file system that is read-only at start (an SD card mounted ro
	// after errors): the outbox starts in memory and takes over the file,
	// with the readings of the previous run, once it can. (A remount
	// read-only under an open file is refused here; on a Pi the kernel
	// forces it, and writes then fail like the full disk above.)
	o.Commit(seq - 10)
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "remount,ro", dir).CombinedOutput(); err != nil {
		t.Fatalf("remount ro: %v %s", err, out)
	}
	o, err = running(openDiskOutbox(filepath.Join(dir, outboxFile), boltOpener(filepath.Join(dir, outboxFile)), walPaths(filepath.Join(dir, outboxFile)), 1000000, testLogger(t), p))
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if !o.Failing() {
		t.Fatal("not failing on a read-only file system")
	}
	appendSeqs(o, seq+1, seq+5)
	if out, err := exec.Command("mount", "-o", "remount,rw", dir).CombinedOutput(); err != nil {
		t.Fatalf("remount rw: %v %s", err, out)
	}
	eventually(t, "recovery from read-only", func() bool { return !o.Failing() && o.Synced() == seq+5 })
	if got, want := drain(t, o), seqRange(seq-9, seq+5); !slices.Equal(got, want) {
		t.Errorf("after the file became writable: %v, want %v", got, want)
	}
}

// fill writes a file until the file system has about leave bytes left.
func fill(t *testing.T, path string, leave int64) {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(path), &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if n := free - leave; n > 0 {
		if err := os.WriteFile(path, make([]byte, n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDiskOutboxAppendNeverWaits: with the disk stuck in a transaction
// (an SD card that takes seconds for an fsync), Append, Next and Commit
// go on at memory speed: the core's lock is never held for the disk.
func TestDiskOutboxAppendNeverWaits(t *testing.T) {
	f := newFakeStore()
	gate := make(chan struct{})
	f.gate = gate
	p := testDiskParams
	p.memMax = 100000
	o := openFake(t, f, 1000000, p)
	appendSeqs(o, 1, 10)
	eventually(t, "the transaction to start", func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		return o.q.inflight == 10
	})
	start := time.Now()
	appendSeqs(o, 11, 50010)
	if r, ok := o.Next(25000); !ok || r.Seq != 25001 {
		t.Errorf("Next while the disk is stuck: %d, %v", r.Seq, ok)
	}
	o.Commit(30000)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("50,000 appends took %s with the disk stuck", d)
	}
	if n := o.Len(); n != 20010 {
		t.Errorf("Len = %d, want 20010", n)
	}
	f.set(func(f *fakeStore) { f.gate = nil })
	close(gate)
	eventually(t, "the disk catching up", func() bool { return o.Synced() == 50010 })
	if got := f.stored(); len(got) != 20010 || got[0] != 30001 {
		t.Errorf("stored %d readings from %v", len(got), got[:1])
	}
}

// TestDiskOutboxBadSpot: one reading that fails to be read every time (a
// bad spot on the card) is skipped after a few tries, counted, and the
// others go out.
func TestDiskOutboxBadSpot(t *testing.T) {
	f := newFakeStore()
	for s := uint64(1); s <= 4; s++ {
		f.recs[s] = testReading(s)
	}
	f.badSeq = 2
	p := testDiskParams
	p.ahead = 1
	o := openFake(t, f, 100, p)
	if r, ok := o.Next(0); !ok || r.Seq != 1 {
		t.Fatalf("Next(0) = %d, %v", r.Seq, ok)
	}
	for i := 1; i < maxReadFails; i++ {
		if r, ok := o.Next(1); ok {
			t.Fatalf("try %d: Next returned %d past an unreadable reading", i, r.Seq)
		}
	}
	if r, ok := o.Next(1); !ok || r.Seq != 3 {
		t.Fatalf("after %d failures: Next(1) = %d, %v; want 3", maxReadFails, r.Seq, ok)
	}
	if d := o.Dropped(); d != 1 {
		t.Errorf("Dropped = %d", d)
	}
}

// TestBoltStoreFault truncates the file under bbolt's memory map: reading
// it faults (SIGBUS), which must come back as an error, not end the process.
func TestBoltStoreFault(t *testing.T) {
	path := filepath.Join(t.TempDir(), outboxFile)
	st, err := boltOpener(path)(func(uint64) {})
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	batch := make([]pibridge.Reading, 2000)
	for i := range batch {
		batch[i] = testReading(uint64(i + 1))
	}
	if err := st.apply(0, batch); err != nil {
		t.Fatal(err)
	}
	// Keep the two meta pages, lose the data pages.
	if err := os.Truncate(path, 2*4096); err != nil {
		t.Fatal(err)
	}
	if _, err := st.read(1000, 10); err == nil {
		t.Fatal("reading a truncated file did not fail")
	} else {
		t.Logf("read: %v", err)
	}
}

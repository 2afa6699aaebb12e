package mqtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	pibridge "pibridge"
)

// DiskOutbox is an Outbox that keeps readings in a bbolt file under
// state_dir, so that they survive a broker outage, a restart and a crash.
//
// Append hands a batch of readings' records to the log (walLog: one
// write(2), no fsync, so a killed process loses nothing the kernel has)
// and to the queue in memory (outboxQueue), and returns. Run commits
// what waits in one bbolt transaction, which fsyncs, once the oldest
// waiting reading has waited CommitWindow or CommitBatch readings wait
// (group commit); acknowledged readings are deleted in the same
// transactions. A reading acknowledged before its commit costs no
// transaction, and its log record is recycled within a window or two. A
// power loss loses at most the last window; after a crash the log is
// replayed, and readings acknowledged in its last window or two go out
// again, as QoS 1's at least once allows.
//
// When the disk fails (full, read-only, gone) readings wait in memory, at
// most memMax; beyond that the oldest unwritten one is dropped and
// counted. The writer retries with backoff and catches up by itself;
// publishing reads from memory meanwhile. A reading that cannot be read
// back five times in a row (a bad spot on the card) is skipped and
// counted, not a crash.
type DiskOutbox struct {
	log    *slog.Logger
	path   string
	params diskParams
	open   storeOpener

	// walMu serialises the log and is held across its writes, which may
	// wait for the disk; mu is taken after it, never held across a write,
	// so Next, Commit, Len and the stats never wait for the disk.
	walMu sync.Mutex
	wal   *walLog // nil without a log; guarded by walMu

	// dbMu guards st against being replaced while a transaction uses it.
	dbMu sync.RWMutex
	st   outboxStore // nil until the file could be opened

	mu        sync.Mutex
	q         outboxQueue
	workSince time.Time // when the oldest uncommitted work arrived; zero: none
	wake      func()    // nudges the publisher when unreadable readings become readable
	failing   bool      // the last commit failed
	lastErr   error     // its error
	replayed  uint64    // readings replayed from the log at open

	// What Next reads and remembers of the disk.
	readAhead  []pibridge.Reading // readings read from disk ahead of Next
	publishing bool               // Next has returned a reading: late-found ones cannot be merged
	readStuck  bool               // Next could not read the disk; wake the publisher when it can
	badSeq     uint64             // the reading that failed to be read…
	badReads   int                // …so many times in a row

	// Each lasting problem is logged when it starts and when it ends.
	logged struct{ memDrop, order, wal latch }

	commits  atomic.Uint64
	commitNS atomic.Int64 // duration of the last commit

	kick      chan struct{} // work arrived
	full      chan struct{} // CommitBatch readings wait
	state     int           // outboxNew, outboxRunning, outboxClosed; guarded by mu
	stop      chan struct{} // closed by Close
	done      chan struct{} // closed when Run has ended
	closeOnce sync.Once
	closeErr  error
}

// diskParams are the outbox's sizes and durations, shrunk by tests.
type diskParams struct {
	window   time.Duration // CommitWindow
	batch    int           // CommitBatch
	maxBatch int           // readings per transaction at most
	memMax   int           // readings held in memory at most
	ahead    int           // readings read from disk at a time
	retryMin time.Duration
	retryMax time.Duration
}

// Group commit: a reading waits at most CommitWindow for its transaction
// to start, or less when CommitBatch readings are waiting.
const (
	CommitWindow = 100 * time.Millisecond
	CommitBatch  = 1000
)

var defaultDiskParams = diskParams{
	window:   CommitWindow,
	batch:    CommitBatch,
	maxBatch: 4096,
	// 4096 readings ≈ 330 KB: minutes of readings at a Pi's usual rates
	// while the disk cannot take them, and the window of the publisher.
	memMax:   4096,
	ahead:    256,
	retryMin: 100 * time.Millisecond,
	retryMax: 30 * time.Second,
}

// OpenDiskOutbox opens (or creates) dir/mqtt-outbox.db and loads the seqs
// of the readings it holds, which are published first; Run commits. It
// holds at most max readings. It fails only when another process holds the file: a disk
// that cannot be written (full, read-only, missing) is not an error, the
// outbox keeps readings in memory meanwhile and retries. Close it after use.
//
// The log next to it (mqtt-outbox.db.wal0 and .wal1) is replayed first:
// the readings of a process that was killed before their commit.
func OpenDiskOutbox(dir string, max int, log *slog.Logger) (*DiskOutbox, error) {
	path := filepath.Join(dir, outboxFile)
	return openDiskOutbox(path, boltOpener(path), walPaths(path), max, log, defaultDiskParams)
}

// openDiskOutbox opens the outbox on the store; with wal[0] == "" it
// keeps no log (tests of the store alone).
func openDiskOutbox(path string, open storeOpener, wal [2]string, limit int, log *slog.Logger, p diskParams) (*DiskOutbox, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o := &DiskOutbox{
		log:    log,
		path:   path,
		params: p,
		open:   open,
		q:      outboxQueue{max: max(limit, 1), memMax: p.memMax},
		kick:   make(chan struct{}, 1),
		full:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	o.q.workArrived = o.noteWorkLocked
	if err := o.openStore(); err != nil {
		if errors.Is(err, errStoreInUse) {
			return nil, fmt.Errorf("outbox %s: %w", path, err)
		}
		o.failing, o.lastErr = true, err
		log.Error("outbox on disk unavailable; readings are kept in memory until it works", "path", path, "err", err)
	} else if n := o.Len(); n > 0 {
		log.Info("outbox: readings from the previous run will be published first", "path", path, "readings", n,
			"first_seq", o.q.disk.first(), "last_seq", o.q.newest)
	}
	if wal[0] != "" {
		o.wal = &walLog{paths: wal}
		o.replayLog()
	}
	return o, nil
}

// openStore opens the file once it can, moving a damaged one aside.
func (o *DiskOutbox) openStore() error {
	o.dbMu.Lock()
	defer o.dbMu.Unlock()
	if o.st != nil {
		return nil
	}
	var found seqSpans
	st, err := o.open(found.push)
	if errors.Is(err, errCorrupt) {
		to, rerr := moveAside(o.path)
		if rerr != nil {
			return fmt.Errorf("%v; moving it aside: %w", err, rerr)
		}
		o.log.Error("outbox file damaged: moved aside, starting a new one; its readings are lost", "err", err, "moved_to", to)
		found = seqSpans{}
		st, err = o.open(found.push)
	}
	if err != nil {
		return err
	}
	o.st = st
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.q.adopt(&found, o.publishing) {
		// The file became readable only after publishing had started
		// (or holds seqs from the future): these readings can no longer
		// go out in order.
		o.log.Error("outbox: readings found on disk after publishing started are dropped",
			"readings", found.n, "first_seq", found.first(), "last_seq", found.last())
	}
	return nil
}

// setWake registers the function that nudges the publisher when readings
// that could not be read become readable again.
func (o *DiskOutbox) setWake(f func()) {
	o.mu.Lock()
	o.wake = f
	o.mu.Unlock()
}

// replayLog opens the log and replays it: readings above every seq held
// are taken into memory as waiting to be written, so that the writer
// commits them; the others are in the file already (or were
// acknowledged or dropped before the crash). Replaying twice is harmless.
func (o *DiskOutbox) replayLog() {
	o.walMu.Lock()
	defer o.walMu.Unlock()
	recs, err := o.wal.reopen()
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case err != nil && o.wal.open:
		o.log.Error("outbox: log damaged; its readable records are replayed", "path", o.wal.paths[0], "err", err)
	case err != nil:
		// Appends go on without it: memory and the group commit, as
		// before the log existed. The writer tries again after its next
		// successful commit (a file system read-only at start).
		if o.logged.wal.raise() {
			o.log.Error("outbox: cannot open the log; readings of the last window would be lost in a crash", "path", o.wal.paths[0], "err", err)
		}
	case o.logged.wal.lower():
		o.log.Info("outbox: log open again", "path", o.wal.paths[0])
	}
	var n uint64
	for _, r := range recs {
		if r.Seq > o.q.newest {
			o.pushLocked(r)
			n++
		}
	}
	o.replayed += n
	if n > 0 {
		o.log.Info("outbox: readings of the previous run replayed from the log (some may have been acknowledged already and go out twice)",
			"readings", n, "first_seq", recs[len(recs)-int(n)].Seq, "last_seq", o.q.newest)
	}
}

// Append writes rs (seq order) to the log in one write, adds them in
// memory, and returns; the writer stores them in the file. The log write
// may wait for the disk (the core calls Append from its journal
// goroutine, never under its lock), but holds only walMu meanwhile.
func (o *DiskOutbox) Append(rs ...pibridge.Reading) {
	o.walMu.Lock()
	defer o.walMu.Unlock()
	o.mu.Lock()
	for len(rs) > 0 && o.behindLocked(rs[0]) {
		rs = rs[1:] // in seq order: only a prefix can be behind
	}
	o.mu.Unlock()
	if len(rs) == 0 {
		return
	}
	w := o.wal
	var err error
	logged := w.usable()
	if logged {
		// Before pushLocked kicks the writer: the records are in the
		// active file when the writer next looks at the log.
		_, err = w.append(rs)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if logged {
		if err != nil {
			if o.logged.wal.raise() {
				o.log.Error("outbox: cannot write to the log; readings of the last window would be lost in a crash", "err", err)
			}
		} else if o.logged.wal.lower() {
			o.log.Info("outbox: writing to the log again", "failed_total", w.fails.Load())
		}
		if w.activeSize() >= walSwitchBytes {
			signal(o.kick)
		}
	}
	for _, r := range rs {
		if !o.behindLocked(r) { // the file, opened meanwhile, may hold later seqs
			o.pushLocked(r)
		}
	}
}

// behindLocked drops r when its seq is not above every seq held.
func (o *DiskOutbox) behindLocked(r pibridge.Reading) bool {
	if !o.q.behind(r.Seq) {
		return false
	}
	// Only when the seq counter went back (state_dir lost while the
	// outbox survived): held readings would be overtaken.
	if o.logged.order.raise() {
		o.log.Error("outbox: reading with a seq not above the outbox's newest dropped (was state_dir/seq reset?)",
			"seq", r.Seq, "newest", o.q.newest)
	}
	return true
}

// Newest is the highest seq held, appended or found at open: right after
// the open, the last reading the previous run handed to the log, which is
// where seq resumes after a crash.
func (o *DiskOutbox) Newest() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.q.newest
}

// pushLocked puts r, with a seq above every seq held, in the queue.
func (o *DiskOutbox) pushLocked(r pibridge.Reading) {
	waiting, droppedUnwritten := o.q.push(r)
	if droppedUnwritten && o.logged.memDrop.raise() {
		o.log.Error("outbox: memory buffer full of readings not on disk yet (the disk fails, or is slower than the readings come); dropping the oldest unwritten",
			"buffer", o.params.memMax, "disk_err", o.lastErr)
	}
	if waiting >= o.params.batch {
		signal(o.full)
	}
}

// Next returns the oldest reading with a seq above after. Readings that
// live only on disk are read ahead in blocks.
func (o *DiskOutbox) Next(after uint64) (pibridge.Reading, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for {
		seq, onDisk := o.q.disk.next(after)
		if !onDisk {
			r, ok := o.q.nextInMemory(after)
			o.publishing = o.publishing || ok
			return r, ok
		}
		if r, ok := o.readAheadFind(seq); ok {
			o.publishing = true
			return r, true
		}
		// Read without o.mu: Append must not wait for the disk.
		o.mu.Unlock()
		rs, err := o.readDisk(seq, o.params.ahead)
		o.mu.Lock()
		if err != nil && !errors.Is(err, errNotOpen) {
			if seq != o.badSeq {
				o.badSeq, o.badReads = seq, 0
			}
			if o.badReads++; o.badReads >= maxReadFails {
				// Not a passing failure but a bad spot on the card:
				// skip this reading rather than hold back all the others.
				o.badReads = 0
				if o.q.skip(seq) {
					o.log.Error("outbox: reading unreadable on disk; skipped", "seq", seq, "err", err)
				}
				continue
			}
		}
		if err != nil {
			// The file is not open (the disk failed at start) or the read
			// failed: nothing can go out before this reading, so nothing
			// goes out until it can be read; the next commit or reading
			// tries again.
			if !o.readStuck {
				o.readStuck = true
				o.log.Warn("outbox: cannot read queued readings from disk; publishing waits", "seq", seq, "err", err)
			}
			return pibridge.Reading{}, false
		}
		o.badReads = 0
		o.readAhead = rs
		if len(rs) == 0 || rs[0].Seq != seq {
			// Recorded as stored but not there or not readable.
			if o.q.skip(seq) {
				o.log.Error("outbox: reading missing or damaged on disk; skipped", "seq", seq)
			}
		}
	}
}

func (o *DiskOutbox) readAheadFind(seq uint64) (pibridge.Reading, bool) {
	i := sort.Search(len(o.readAhead), func(i int) bool { return o.readAhead[i].Seq >= seq })
	if i < len(o.readAhead) && o.readAhead[i].Seq == seq {
		return o.readAhead[i], true
	}
	return pibridge.Reading{}, false
}

var errNotOpen = errors.New("outbox file not open")

// maxReadFails is how many times in a row one reading may fail to be read
// before it is skipped as damaged.
const maxReadFails = 5

func (o *DiskOutbox) readDisk(from uint64, n int) ([]pibridge.Reading, error) {
	o.dbMu.RLock()
	defer o.dbMu.RUnlock()
	if o.st == nil {
		return nil, errNotOpen
	}
	return o.st.read(from, n)
}

// Commit removes every reading up to and including seq; the writer
// deletes them from disk with its next transaction.
func (o *DiskOutbox) Commit(seq uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.q.commit(seq) {
		return
	}
	if len(o.readAhead) > 0 && o.readAhead[len(o.readAhead)-1].Seq <= seq {
		o.readAhead = nil
	}
	if o.idleLocked() && !o.workSince.IsZero() {
		// Everything waiting was acknowledged inside the window: there
		// is nothing to commit, so the writer puts its timer away rather
		// than wake up for an empty transaction (with the broker up,
		// that is every reading: no wake-up, no fsync).
		o.workSince = time.Time{}
		signal(o.kick)
	}
}

// idleLocked reports whether a transaction now would have nothing to do:
// nothing to store or delete, and no failure waiting for a successful
// commit to be cleared (failing, readStuck).
func (o *DiskOutbox) idleLocked() bool {
	return o.q.idle() && !o.failing && !o.readStuck
}

// Len is the number of readings held, in memory and on disk.
func (o *DiskOutbox) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.q.len()
}

// Oldest is the seq of the oldest reading held, on disk or in memory.
func (o *DiskOutbox) Oldest() (uint64, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	seq := o.q.firstHeld()
	return seq, seq != 0
}

// Dropped counts the readings dropped since the start: the oldest for
// room (queue_max), unwritten ones while the disk failed, damaged ones.
func (o *DiskOutbox) Dropped() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.q.dropped
}

// Synced returns a seq S such that every reading appended with seq ≤ S is
// in the file (fsynced), acknowledged, or counted as dropped: what a
// power loss now would not lose. (A crash of the process loses nothing
// the log has.)
func (o *DiskOutbox) Synced() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.q.synced()
}

// LogStats returns the readings whose log write failed and those replayed
// from the log at open.
func (o *DiskOutbox) LogStats() (failures, replayed uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.wal != nil {
		failures = o.wal.fails.Load()
	}
	return failures, o.replayed
}

// Failing reports whether the last attempt to write to disk failed.
func (o *DiskOutbox) Failing() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.failing
}

// Close ends Run, commits what waits, once more, and closes the file.
// Readings appended afterwards are not stored.
func (o *DiskOutbox) Close() error {
	o.closeOnce.Do(func() {
		o.mu.Lock()
		running := o.state == outboxRunning
		o.state = outboxClosed
		o.mu.Unlock()
		close(o.stop)
		if running {
			<-o.done
		}
		o.final()
		o.dbMu.Lock()
		if o.st != nil {
			o.closeErr = o.st.close()
			o.st = nil
		}
		o.dbMu.Unlock()
		o.walMu.Lock()
		defer o.walMu.Unlock()
		o.mu.Lock()
		defer o.mu.Unlock()
		if n := o.q.unwritten(); n > 0 {
			if o.wal.usable() {
				o.log.Warn("outbox closed with readings not in the file; the log keeps them for the next start", "readings", n)
			} else {
				o.log.Error("outbox closed with readings not on disk; they are lost", "readings", n)
			}
		}
		if o.wal.usable() {
			o.wal.truncateSynced(o.q.synced())
			o.closeErr = errors.Join(o.closeErr, o.wal.close())
		}
	})
	return o.closeErr
}

func (o *DiskOutbox) noteWorkLocked() {
	if o.workSince.IsZero() {
		o.workSince = time.Now()
	}
	signal(o.kick)
}

// Run commits what waits, one transaction per window (group commit), and
// retries with backoff while the disk fails, until ctx ends or Close is
// called; Close commits what is left. Until Run, readings wait in memory
// and in the log. Run after Close returns at once.
func (o *DiskOutbox) Run(ctx context.Context) error {
	o.mu.Lock()
	state := o.state
	if state == outboxNew {
		o.state = outboxRunning
	}
	o.mu.Unlock()
	switch state {
	case outboxRunning:
		return errors.New("outbox: Run called twice")
	case outboxClosed:
		return nil
	}
	defer close(o.done)
	o.writer(ctx)
	return nil
}

// Run's states, guarded by mu.
const (
	outboxNew = iota
	outboxRunning
	outboxClosed
)

// writer is Run's loop.
func (o *DiskOutbox) writer(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	retry := backoff{min: o.params.retryMin, max: o.params.retryMax}
	for {
		o.tidyWAL()
		o.mu.Lock()
		since := o.workSince
		o.mu.Unlock()
		if since.IsZero() {
			select {
			case <-o.stop:
				return
			case <-ctx.Done():
				return
			case <-o.kick:
				continue
			}
		}
		if d := time.Until(since.Add(o.params.window)); d > 0 {
			t.Reset(d)
			select {
			case <-o.stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			case <-o.full:
				t.Stop()
			case <-o.kick:
				// Work arrived or was acknowledged away: look again.
				t.Stop()
				continue
			}
		}
		if err := o.commit(); err != nil {
			t.Reset(retry.next())
			select {
			case <-o.stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			continue
		}
		retry.reset()
	}
}

// final commits what waits before Close, as long as the disk takes it.
func (o *DiskOutbox) final() {
	for i := 0; i < 64; i++ {
		o.mu.Lock()
		work := !o.workSince.IsZero()
		o.mu.Unlock()
		if !work || o.commit() != nil {
			return
		}
	}
}

// commit runs one transaction: delete up to the floor, store the readings
// waiting (oldest first, at most maxBatch).
func (o *DiskOutbox) commit() error {
	if err := o.openStore(); err != nil {
		o.failed(err)
		return err
	}
	o.walMu.Lock() // the log may switch files below
	o.mu.Lock()
	if o.idleLocked() {
		// bbolt writes and fsyncs its meta page even for an empty
		// transaction.
		o.workSince = time.Time{}
		o.mu.Unlock()
		o.walMu.Unlock()
		return nil
	}
	batch, floor, more := o.q.takeBatch(o.params.maxBatch)
	if w := o.wal; w.usable() && w.activeSize() > 0 && w.canSwitch() {
		// This commit makes the log's records so far redundant (when
		// the batch holds all that waits): new ones go to the other
		// file, and tidyWAL truncates this one after the commit.
		w.switchFiles()
	}
	o.workSince = time.Time{}
	if more {
		o.workSince = time.Now() // the rest go in the next transaction
	}
	o.mu.Unlock()
	o.walMu.Unlock()

	start := time.Now()
	o.dbMu.RLock()
	err := o.st.apply(floor, batch)
	o.dbMu.RUnlock()
	o.commitNS.Store(int64(time.Since(start)))

	o.mu.Lock()
	if err != nil {
		o.q.batchFailed(floor)
		o.mu.Unlock()
		o.failed(err)
		return err
	}
	o.commits.Add(1)
	o.q.batchDone(batch, floor)
	recovered := o.failing
	o.failing, o.lastErr = false, nil
	stuck := o.readStuck
	o.readStuck = false
	wake := o.wake
	dropped := o.q.memDropped
	o.logged.memDrop.lower()
	o.mu.Unlock()
	if recovered {
		o.log.Info("outbox: writing to disk again", "path", o.path, "unwritten_dropped_total", dropped)
	}
	if stuck && wake != nil {
		wake()
	}
	o.walMu.Lock()
	reopen := o.wal != nil && !o.wal.open
	o.walMu.Unlock()
	if reopen {
		// The disk works again: so may the log. Readings replayed twice
		// are skipped (their seqs are held already).
		o.replayLog()
	}
	o.tidyWAL()
	return nil
}

// tidyWAL recycles the log (walLog.recycle). Only the writer goroutine
// calls it.
func (o *DiskOutbox) tidyWAL() {
	o.walMu.Lock()
	defer o.walMu.Unlock()
	if !o.wal.usable() {
		return
	}
	o.mu.Lock()
	synced := o.q.synced()
	o.mu.Unlock()
	if path, err := o.wal.recycle(synced, o.params.window); err != nil {
		o.log.Debug("outbox: cannot truncate the log", "path", path, "err", err)
	}
}

func (o *DiskOutbox) failed(err error) {
	o.mu.Lock()
	first := !o.failing
	o.failing, o.lastErr = true, err
	if o.workSince.IsZero() {
		o.workSince = time.Now()
	}
	waiting := o.q.unwritten()
	o.mu.Unlock()
	if first {
		o.log.Error("outbox: cannot write to disk; readings wait in memory, retrying", "path", o.path, "err", err, "waiting", waiting)
	} else {
		o.log.Debug("outbox: still cannot write to disk", "err", err, "waiting", waiting)
	}
}

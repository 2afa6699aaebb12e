package mqtt

import (
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
// Append puts the reading in memory and hands its record to the kernel
// with one write(2) to an append-only log (walLog, no fsync): a crash or
// SIGKILL of the process loses nothing the kernel has, and the next open
// replays the log. It never waits for an fsync; the write(2) itself may
// wait for a stalling disk, which holds up only the core's journal
// goroutine that calls Append (publishing reads memory meanwhile). A writer
// goroutine commits what waits in one transaction (group commit) once the
// oldest waiting reading has waited CommitWindow, or CommitBatch readings
// wait, whichever comes first; bbolt fsyncs on every commit. A reading the
// broker acknowledges before its commit never costs a transaction or an
// fsync, and its log record is truncated away within a window or two,
// usually before the kernel writes it back. Acknowledged readings are
// deleted in the next commit (the floor), in the same batches.
//
// The fsync window: a reading is on disk at most CommitWindow plus one
// commit after Append (BENCHMARKS.md has the commit times); a power loss
// at any moment loses at most the readings of that window. A killed
// process loses none: they are in the log. The price is duplicates: the
// log may still hold readings the broker had acknowledged (the last
// window or two), and they are published again after the restart, as
// QoS 1's at least once allows.
//
// When the disk fails (full, read-only, gone), a failing log write is
// counted (the reading is kept all the same) and readings wait in memory,
// at most memMax of them; beyond that the oldest unwritten one is dropped
// and counted. The writer retries with backoff (100 ms doubling to 30 s)
// and catches up by itself when the disk works again. Publishing goes on
// meanwhile: it reads from memory. A read error in bbolt's memory map
// (SIGBUS on a worn card) is an error, not a crash, and a reading that
// cannot be read five times in a row is skipped and counted, so one bad
// spot does not hold back the rest.
//
// Memory: the newest readings (memMax, about 80 bytes each) and, for the
// readings that live only on disk, their seqs as ranges, which stay a few
// bytes however long the outage.
type DiskOutbox struct {
	log  *slog.Logger
	path string
	max  int
	p    diskParams
	open storeOpener

	// walMu serialises the log and is held across its writes, which may
	// wait for the disk; mu is taken after it, never held across a write,
	// so Next, Commit, Len and the stats never wait for the disk.
	walMu sync.Mutex

	// dbMu guards st against being replaced while a transaction uses it.
	dbMu sync.RWMutex
	st   outboxStore // nil until the file could be opened

	mu        sync.Mutex
	mem       readingRing // the newest readings, seq order
	written   int         // mem[:written] are on disk as well
	inflight  int         // mem[written:written+inflight] are being written
	disk      seqSpans    // readings held on disk only, all older than mem
	floor     uint64      // every key ≤ floor is to be deleted from disk
	diskFloor uint64      // the floor of the last committed transaction
	deletes   bool        // the disk holds keys ≤ floor
	workSince time.Time   // when the oldest uncommitted work arrived; zero: none
	newest    uint64      // the highest seq appended or loaded
	ra        []pibridge.Reading
	handedOut bool // Next has returned a reading: late-found records cannot be merged
	readStuck bool // Next could not read the disk; wake the publisher when it can
	readFails int  // reads of readSeq that failed in a row
	readSeq   uint64
	wake      func()
	failing   bool
	lastErr   error

	dropped    uint64 // every reading dropped, for Dropped
	memDropped uint64 // of those: unwritten readings dropped from a full memory buffer
	logged     struct{ memDrop, order, wal bool }

	commits  atomic.Uint64
	commitNS atomic.Int64 // duration of the last commit

	// The log (the pointer guarded by mu, the walLog by walMu; nil without
	// one or when it cannot be opened).
	wal         *walLog
	walPaths    [2]string // the log's files; "" without one
	walSwitched time.Time // when the active log file was last switched in
	walBytes    uint64    // bytes written to the log
	walFails    uint64    // readings whose log write failed (kept in memory only)
	replayed    uint64    // readings replayed from the log at open

	kick      chan struct{} // work arrived
	full      chan struct{} // CommitBatch readings wait
	stop      chan struct{}
	done      chan struct{}
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
// of the readings it holds, which are published first. It holds at most
// max readings. It fails only when another process holds the file: a disk
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
		log:  log,
		path: path,
		max:  max(limit, 1),
		p:    p,
		open: open,
		kick: make(chan struct{}, 1),
		full: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	if err := o.openStore(); err != nil {
		if errors.Is(err, errStoreInUse) {
			return nil, fmt.Errorf("outbox %s: %w", path, err)
		}
		o.failing, o.lastErr = true, err
		log.Error("outbox on disk unavailable; readings are kept in memory until it works", "path", path, "err", err)
	} else if n := o.Len(); n > 0 {
		log.Info("outbox: readings from the previous run will be published first", "path", path, "readings", n,
			"first_seq", o.disk.first(), "last_seq", o.newest)
	}
	if o.walPaths = wal; wal[0] != "" {
		o.openWAL()
	}
	go o.writer()
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
	o.adopt(&found)
	return nil
}

// adopt takes over the readings found in the file.
func (o *DiskOutbox) adopt(found *seqSpans) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if found.n == 0 {
		return
	}
	first := o.firstHeldLocked()
	if o.handedOut || (first != 0 && found.last() >= first) {
		// The file became readable only after publishing had started
		// (or holds seqs from the future): these readings can no longer
		// go out in order. They are counted as dropped and deleted.
		o.log.Error("outbox: readings found on disk after publishing started are dropped",
			"readings", found.n, "first_seq", found.first(), "last_seq", found.last())
		o.dropped += uint64(found.n)
		if first == 0 || found.last() < first {
			o.floor = max(o.floor, found.last())
			o.noteDeletesLocked()
		}
		return
	}
	o.disk = *found
	o.newest = max(o.newest, found.last())
	for o.lenLocked() > o.max {
		o.dropOldestLocked()
	}
}

// setWake registers the function that nudges the publisher when readings
// that could not be read become readable again.
func (o *DiskOutbox) setWake(f func()) {
	o.mu.Lock()
	o.wake = f
	o.mu.Unlock()
}

// openWAL opens the log and replays it: readings above every seq held
// are taken into memory as waiting to be written, so that the writer
// commits them; the others are in the file already (or were
// acknowledged or dropped before the crash). Replaying twice is harmless.
func (o *DiskOutbox) openWAL() {
	o.walMu.Lock()
	defer o.walMu.Unlock()
	w, recs, err := openWAL(o.walPaths)
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case err != nil && w != nil:
		o.log.Error("outbox: log damaged; its readable records are replayed", "path", o.walPaths[0], "err", err)
	case err != nil:
		// Appends go on without it: memory and the group commit, as
		// before the log existed. The writer tries again after its next
		// successful commit (a file system read-only at start).
		if !o.logged.wal {
			o.logged.wal = true
			o.log.Error("outbox: cannot open the log; readings of the last window would be lost in a crash", "path", o.walPaths[0], "err", err)
		}
	case o.logged.wal:
		o.logged.wal = false
		o.log.Info("outbox: log open again", "path", o.walPaths[0])
	}
	o.wal, o.walSwitched = w, time.Now()
	var n uint64
	for _, r := range recs {
		if r.Seq > o.newest {
			o.appendLocked(r)
			n++
		}
	}
	o.replayed += n
	if n > 0 {
		o.log.Info("outbox: readings of the previous run replayed from the log (some may have been acknowledged already and go out twice)",
			"readings", n, "first_seq", recs[len(recs)-int(n)].Seq, "last_seq", o.newest)
	}
}

// Append writes r to the log, adds it in memory, and returns; the writer
// stores it in the file. The log write may wait for the disk (the core
// calls Append from its journal goroutine, never under its lock), but
// holds only walMu meanwhile.
func (o *DiskOutbox) Append(r pibridge.Reading) {
	o.walMu.Lock()
	defer o.walMu.Unlock()
	o.mu.Lock()
	if o.behindLocked(r) {
		o.mu.Unlock()
		return
	}
	w := o.wal
	o.mu.Unlock()
	var n int
	var err error
	if w != nil {
		// Before appendLocked kicks the writer: the record is in the
		// active file when the writer next looks at the log.
		n, err = w.append(r)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if w != nil {
		o.walBytes += uint64(n)
		if err != nil {
			o.walFails++
			if !o.logged.wal {
				o.logged.wal = true
				o.log.Error("outbox: cannot write to the log; readings of the last window would be lost in a crash", "err", err)
			}
		} else if o.logged.wal {
			o.logged.wal = false
			o.log.Info("outbox: writing to the log again", "failed_total", o.walFails)
		}
		if w.f[w.active].size >= walSwitchBytes {
			signal(o.kick)
		}
	}
	if o.behindLocked(r) {
		return // the file, opened meanwhile, held later seqs
	}
	o.appendLocked(r)
}

// behindLocked drops r when its seq is not above every seq held.
func (o *DiskOutbox) behindLocked(r pibridge.Reading) bool {
	if r.Seq > o.newest {
		return false
	}
	// Only when the seq counter went back (state_dir lost while the
	// outbox survived): held readings would be overtaken.
	o.dropped++
	if !o.logged.order {
		o.logged.order = true
		o.log.Error("outbox: reading with a seq not above the outbox's newest dropped (was state_dir/seq reset?)",
			"seq", r.Seq, "newest", o.newest)
	}
	return true
}

// Newest is the highest seq held, appended or found at open: right after
// the open, the last reading the previous run handed to the log, which is
// where seq resumes after a crash.
func (o *DiskOutbox) Newest() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.newest
}

// walSwitchBytes is the size at which the writer switches log files
// even between commits (about 1,000 readings).
const walSwitchBytes = 64 << 10

// appendLocked puts r, with a seq above every seq held, in memory.
func (o *DiskOutbox) appendLocked(r pibridge.Reading) {
	o.newest = r.Seq
	if o.lenLocked() >= o.max {
		o.dropOldestLocked()
	}
	if o.mem.n >= o.p.memMax {
		if o.written > 0 {
			// The oldest in memory is on disk too: keep only its seq.
			o.disk.push(o.mem.at(0).Seq)
			o.popFrontLocked()
		} else {
			// The disk cannot keep up or fails: the oldest unwritten
			// reading goes.
			o.popFrontLocked()
			o.dropped++
			o.memDropped++
			if !o.logged.memDrop {
				o.logged.memDrop = true
				o.log.Error("outbox: memory buffer full of readings not on disk yet (the disk fails, or is slower than the readings come); dropping the oldest unwritten",
					"buffer", o.p.memMax, "disk_err", o.lastErr)
			}
		}
	}
	o.mem.push(r)
	waiting := o.mem.n - o.written - o.inflight
	if waiting == 1 {
		o.noteWorkLocked()
	}
	if waiting >= o.p.batch {
		signal(o.full)
	}
}

// Next returns the oldest reading with a seq above after. Readings that
// live only on disk are read ahead in blocks.
func (o *DiskOutbox) Next(after uint64) (pibridge.Reading, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for {
		seq, onDisk := o.disk.next(after)
		if !onDisk {
			i := o.mem.search(after)
			if i == o.mem.n {
				return pibridge.Reading{}, false
			}
			o.handedOut = true
			return *o.mem.at(i), true
		}
		if r, ok := o.readAhead(seq); ok {
			o.handedOut = true
			return r, true
		}
		// Read without o.mu: Append must not wait for the disk.
		o.mu.Unlock()
		rs, err := o.readDisk(seq, o.p.ahead)
		o.mu.Lock()
		if err != nil && !errors.Is(err, errNotOpen) {
			if seq != o.readSeq {
				o.readSeq, o.readFails = seq, 0
			}
			if o.readFails++; o.readFails >= maxReadFails {
				// Not a passing failure but a bad spot on the card:
				// skip this reading rather than hold back all the others.
				o.readFails = 0
				if o.disk.remove(seq) {
					o.dropped++
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
		o.readFails = 0
		o.ra = rs
		if len(rs) == 0 || rs[0].Seq != seq {
			// Recorded as stored but not there or not readable.
			if o.disk.remove(seq) {
				o.dropped++
				o.log.Error("outbox: reading missing or damaged on disk; skipped", "seq", seq)
			}
		}
	}
}

func (o *DiskOutbox) readAhead(seq uint64) (pibridge.Reading, bool) {
	i := sort.Search(len(o.ra), func(i int) bool { return o.ra[i].Seq >= seq })
	if i < len(o.ra) && o.ra[i].Seq == seq {
		return o.ra[i], true
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
	if seq <= o.floor {
		return
	}
	o.floor = seq
	onDisk := o.disk.popTo(seq) > 0
	for o.mem.n > 0 && o.mem.at(0).Seq <= seq {
		onDisk = onDisk || o.written > 0
		o.popFrontLocked()
	}
	if len(o.ra) > 0 && o.ra[len(o.ra)-1].Seq <= seq {
		o.ra = nil
	}
	if onDisk {
		o.noteDeletesLocked()
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
// no reading waits to be written, no acknowledged reading waits to be
// deleted, and no failure waits for a successful commit to be cleared
// (failing, readStuck).
func (o *DiskOutbox) idleLocked() bool {
	return o.mem.n == o.written+o.inflight && !o.deletes && !o.failing && !o.readStuck
}

// Len is the number of readings held, in memory and on disk.
func (o *DiskOutbox) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.lenLocked()
}

// Dropped counts the readings dropped since the start: the oldest for
// room (queue_max), unwritten ones while the disk failed, damaged ones.
func (o *DiskOutbox) Dropped() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.dropped
}

// Synced returns a seq S such that every reading appended with seq ≤ S is
// in the file (fsynced), acknowledged, or counted as dropped: what a
// power loss now would not lose. (A crash of the process loses nothing
// the log has.)
func (o *DiskOutbox) Synced() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.syncedLocked()
}

func (o *DiskOutbox) syncedLocked() uint64 {
	if o.written < o.mem.n {
		return o.mem.at(o.written).Seq - 1
	}
	return o.newest
}

// LogStats returns the readings whose log write failed and those replayed
// from the log at open.
func (o *DiskOutbox) LogStats() (failures, replayed uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.walFails, o.replayed
}

// Failing reports whether the last attempt to write to disk failed.
func (o *DiskOutbox) Failing() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.failing
}

// Close commits what waits, once more, and closes the file. Readings
// appended afterwards are not stored.
func (o *DiskOutbox) Close() error {
	o.closeOnce.Do(func() {
		close(o.stop)
		<-o.done
		o.dbMu.Lock()
		if o.st != nil {
			o.closeErr = o.st.close()
			o.st = nil
		}
		o.dbMu.Unlock()
		o.walMu.Lock()
		defer o.walMu.Unlock()
		o.mu.Lock()
		if n := o.mem.n - o.written; n > 0 {
			if o.wal != nil {
				o.log.Warn("outbox closed with readings not in the file; the log keeps them for the next start", "readings", n)
			} else {
				o.log.Error("outbox closed with readings not on disk; they are lost", "readings", n)
			}
		}
		if w := o.wal; w != nil {
			// What the file has no longer needs the log: a clean stop
			// leaves nothing to publish twice.
			synced := o.syncedLocked()
			for i := range w.f {
				if f := &w.f[i]; f.size > 0 && synced >= f.last {
					f.truncate()
				}
			}
			o.closeErr = errors.Join(o.closeErr, w.close())
			o.wal = nil
		}
		o.mu.Unlock()
	})
	return o.closeErr
}

func (o *DiskOutbox) lenLocked() int { return o.disk.n + o.mem.n }

func (o *DiskOutbox) firstHeldLocked() uint64 {
	if o.disk.n > 0 {
		return o.disk.first()
	}
	if o.mem.n > 0 {
		return o.mem.at(0).Seq
	}
	return 0
}

// dropOldestLocked drops the oldest reading for room.
func (o *DiskOutbox) dropOldestLocked() {
	var seq uint64
	if o.disk.n > 0 {
		seq = o.disk.first()
		o.disk.popTo(seq)
		o.noteDeletesLocked()
	} else {
		seq = o.mem.at(0).Seq
		if o.written > 0 {
			o.noteDeletesLocked()
		}
		o.popFrontLocked()
	}
	// Everything older is gone already: the disk may forget up to here.
	o.floor = max(o.floor, seq)
	o.dropped++
}

// popFrontLocked removes mem[0], keeping written and inflight in step.
func (o *DiskOutbox) popFrontLocked() {
	switch {
	case o.written > 0:
		o.written--
	case o.inflight > 0:
		o.inflight--
	}
	o.mem.popFront()
}

func (o *DiskOutbox) noteDeletesLocked() {
	if !o.deletes {
		o.deletes = true
		o.noteWorkLocked()
	}
}

func (o *DiskOutbox) noteWorkLocked() {
	if o.workSince.IsZero() {
		o.workSince = time.Now()
	}
	signal(o.kick)
}

// writer commits what waits, one transaction per window, and retries with
// backoff while the disk fails. Close ends it.
func (o *DiskOutbox) writer() {
	defer close(o.done)
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	pause := o.p.retryMin
	for {
		o.tidyWAL()
		o.mu.Lock()
		since := o.workSince
		o.mu.Unlock()
		if since.IsZero() {
			select {
			case <-o.stop:
				o.final()
				return
			case <-o.kick:
				continue
			}
		}
		if d := time.Until(since.Add(o.p.window)); d > 0 {
			t.Reset(d)
			select {
			case <-o.stop:
				o.final()
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
			t.Reset(pause)
			select {
			case <-o.stop:
				o.final()
				return
			case <-t.C:
			}
			pause = min(2*pause, o.p.retryMax)
			continue
		}
		pause = o.p.retryMin
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
	n := min(o.mem.n-o.written, o.p.maxBatch)
	batch := make([]pibridge.Reading, n)
	for i := range batch {
		batch[i] = *o.mem.at(o.written + i)
	}
	o.inflight = n
	if w := o.wal; w != nil && w.f[w.active].size > 0 && w.canSwitch() {
		// This commit makes the log's records so far redundant (when
		// the batch holds all that waits): new ones go to the other
		// file, and tidyWAL truncates this one after the commit.
		w.switchFiles()
		o.walSwitched = time.Now()
	}
	floor := o.floor
	o.deletes = false
	o.workSince = time.Time{}
	if o.mem.n-o.written > n {
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
	o.inflight = 0
	if err != nil {
		o.deletes = o.deletes || floor > o.diskFloor
		o.mu.Unlock()
		o.failed(err)
		return err
	}
	o.commits.Add(1)
	o.diskFloor = floor
	if n > 0 {
		// Everything in memory up to the batch's last seq is on disk
		// now; what was committed or dropped meanwhile is gone from mem.
		o.written = o.mem.search(batch[n-1].Seq)
		if batch[0].Seq <= o.floor {
			o.noteDeletesLocked() // acknowledged while being written
		}
	}
	recovered := o.failing
	o.failing, o.lastErr = false, nil
	stuck := o.readStuck
	o.readStuck = false
	wake := o.wake
	dropped := o.memDropped
	o.logged.memDrop = false
	o.mu.Unlock()
	if recovered {
		o.log.Info("outbox: writing to disk again", "path", o.path, "unwritten_dropped_total", dropped)
	}
	if stuck && wake != nil {
		wake()
	}
	o.mu.Lock()
	reopen := o.wal == nil && o.walPaths[0] != ""
	o.mu.Unlock()
	if reopen {
		// The disk works again: so may the log. Readings replayed twice
		// are skipped (their seqs are held already).
		o.openWAL()
	}
	o.tidyWAL()
	return nil
}

// tidyWAL recycles the log. It truncates the inactive file once every
// reading in it is in the file, acknowledged or dropped (Synced ≥ its
// last seq): no Append writes to it, so it is done without the lock. It
// switches the files, when the other one is empty, once the active one
// is CommitWindow old or walSwitchBytes big: with the broker up there is
// no commit, and this bounds both the log and what a crash publishes
// twice to a window or two. Only the writer goroutine calls it.
func (o *DiskOutbox) tidyWAL() {
	o.walMu.Lock()
	defer o.walMu.Unlock()
	o.mu.Lock()
	defer o.mu.Unlock()
	w := o.wal
	if w == nil {
		return
	}
	// The newest record stays until a newer one is in the active file:
	// after a crash, seq resumes after it (Newest).
	act := &w.f[w.active]
	if in := w.inactive(); (in.size > 0 || in.bad) && o.syncedLocked() >= in.last && (act.size > 0 || in.bad) {
		o.mu.Unlock()
		err := in.truncate()
		o.mu.Lock()
		if err != nil {
			o.log.Debug("outbox: cannot truncate the log", "path", in.path, "err", err)
		} else {
			in.size, in.last, in.bad = 0, 0, false
		}
	}
	if (act.size > 0 || act.bad) && w.canSwitch() &&
		(act.size >= walSwitchBytes || act.bad || time.Since(o.walSwitched) >= o.p.window) {
		w.switchFiles()
		o.walSwitched = time.Now()
	}
}

func (o *DiskOutbox) failed(err error) {
	o.mu.Lock()
	first := !o.failing
	o.failing, o.lastErr = true, err
	if o.workSince.IsZero() {
		o.workSince = time.Now()
	}
	waiting := o.mem.n - o.written
	o.mu.Unlock()
	if first {
		o.log.Error("outbox: cannot write to disk; readings wait in memory, retrying", "path", o.path, "err", err, "waiting", waiting)
	} else {
		o.log.Debug("outbox: still cannot write to disk", "err", err, "waiting", waiting)
	}
}

// readingRing is a queue of readings in seq order that grows as needed.
type readingRing struct {
	buf  []pibridge.Reading
	head int
	n    int
}

func (q *readingRing) at(i int) *pibridge.Reading { return &q.buf[(q.head+i)%len(q.buf)] }

func (q *readingRing) push(r pibridge.Reading) {
	if q.n == len(q.buf) {
		next := make([]pibridge.Reading, max(2*len(q.buf), 64))
		for i := 0; i < q.n; i++ {
			next[i] = *q.at(i)
		}
		q.buf, q.head = next, 0
	}
	*q.at(q.n) = r
	q.n++
}

func (q *readingRing) popFront() {
	*q.at(0) = pibridge.Reading{}
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	if q.n == 0 && len(q.buf) > 256 {
		q.buf, q.head = nil, 0 // give back the memory of a burst
	}
}

// search returns the index of the first reading with a seq above after.
func (q *readingRing) search(after uint64) int {
	return sort.Search(q.n, func(i int) bool { return q.at(i).Seq > after })
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

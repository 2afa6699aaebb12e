package pibridge

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// stallAfter is how long a journal write may take before subscribers get
// the readings waiting for it anyway: a healthy disk takes the write(2)
// in microseconds, a stalling SD card takes seconds.
const stallAfter = 5 * time.Millisecond

// maxPending bounds the readings waiting for the journal (about 90 bytes
// each): at 100 readings/s, 40 s of a disk that takes nothing. Beyond it
// readings are shown but never journaled, and counted (Overflow).
const maxPending = 4096

// journalRun is the hand-off between Emit and the journal's goroutine;
// guarded by the core's mu.
type journalRun struct {
	j     Journal
	pend  Ring // emitted, not yet recorded; seq order
	shown int  // pend[:shown] were delivered ahead of the journal
	// writing is when the write under way began (nanoseconds since
	// epoch; 0: none), set before each batch's write (a batch is one
	// write), so that a slow write, not a busy CPU, counts as a stall.
	writing atomic.Int64
	epoch   time.Time
	// stallAfter is the package's, but for tests that must not see a busy
	// machine's descheduled write as a stall; set under the core's mu.
	stallAfter time.Duration
	started    bool // Run has started the goroutines
	stop       bool // detached: record what waits, then end
	// recorded is the seq of the last reading recorded; progress, made
	// by a waiter (AwaitJournal) only, is closed when it moves.
	recorded uint64
	progress chan struct{}
	timer    *time.Timer
	kick     chan struct{}
	done     chan struct{}
	// lease asks leaseLoop to extend the reservation; leaseDone is
	// closed when it has ended.
	lease, leaseDone chan struct{}
}

// JournalRunner is a journal attached to the core: Run records, Detach
// lets go of it.
type JournalRunner struct {
	c  *Core
	jr *journalRun
}

// AttachJournal makes j the core's journal, and starts nothing: readings
// wait for it in a bounded queue from now on, and its Run records them.
// Attach it before the first reading: seq resumes after j.LastSeq().
func (c *Core) AttachJournal(j Journal) (*JournalRunner, error) {
	last := j.LastSeq()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.jr != nil {
		return nil, errors.New("core: a journal is attached already")
	}
	if !c.resolved {
		c.resolveLocked(last, true)
	} else if last >= c.next {
		c.log.Error("journal attached after the first reading holds later seqs", "journal_last_seq", last, "next_seq", c.next)
	}
	jr := &journalRun{j: j, stallAfter: stallAfter, kick: make(chan struct{}, 1), done: make(chan struct{}), epoch: time.Now(),
		lease: make(chan struct{}, 1), leaseDone: make(chan struct{})}
	jr.timer = time.AfterFunc(time.Hour, func() { c.overdue(jr) })
	jr.timer.Stop()
	c.jr = jr
	return &JournalRunner{c: c, jr: jr}, nil
}

// Run records the readings as they come, in batches, and extends the seq
// reservation, until ctx ends; then it records what waits, detaches the
// journal and returns once its goroutines have ended. A Run after Detach
// (or Close) returns at once.
func (r *JournalRunner) Run(ctx context.Context) error {
	c, jr := r.c, r.jr
	c.mu.Lock()
	if jr.started {
		c.mu.Unlock()
		return errors.New("core: journal Run called twice")
	}
	jr.started = true
	stopped := jr.stop
	c.mu.Unlock()
	if stopped {
		return nil
	}
	go c.leaseLoop(jr)
	go c.journalLoop(jr)
	select {
	case <-ctx.Done():
		c.detach(jr)
	case <-jr.done: // detached meanwhile
	}
	<-jr.done
	<-jr.leaseDone
	return nil
}

// Detach records what waits and lets go of the journal: later readings go
// straight to subscribers. It waits for Run's goroutines, or records on
// the caller's when Run has not started. Close detaches too.
func (r *JournalRunner) Detach() { r.c.detach(r.jr) }

// AwaitJournal waits until the journal has every reading emitted before
// the call (or ctx ends): MQTT's last flush at shutdown, and tests.
func (c *Core) AwaitJournal(ctx context.Context) error {
	c.mu.Lock()
	target := c.next
	c.mu.Unlock()
	for {
		c.mu.Lock()
		jr := c.jr
		if jr == nil || jr.recorded+1 >= target || jr.pend.Len() == 0 {
			c.mu.Unlock()
			return nil
		}
		if jr.progress == nil {
			jr.progress = make(chan struct{})
		}
		ch := jr.progress
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Unrecorded returns the lowest seq still waiting for the journal; ok is
// false when none waits.
func (c *Core) Unrecorded() (seq uint64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if jr := c.jr; jr != nil && jr.pend.Len() > 0 {
		return jr.pend.At(0).Seq, true
	}
	return 0, false
}

// RunInfo says how this run's seqs join the previous run's.
func (c *Core) RunInfo() RunInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.resolved {
		c.resolveLocked(0, false)
	}
	return c.run
}

// JournalStats returns the readings delivered to subscribers before the
// journal had them (the disk stalled) and those the journal's queue had
// no room for (never journaled, so never published on MQTT).
func (c *Core) JournalStats() (ahead, overflow uint64) {
	return c.ahead.Load(), c.overflow.Load()
}

// resolveLocked decides where seq starts and reserves the first block.
func (c *Core) resolveLocked(last uint64, journal bool) {
	c.resolved = true
	c.run = resumeSeq(c.prev, c.prevFound, last, journal, c.boot)
	c.next = c.run.FirstSeq
	c.limit = c.next + seqLease
	if err := writeSeqFile(c.seqPath, c.leaseLocked()); err != nil {
		c.limit = c.next
		c.seqErrs++
		c.log.Warn("seq reservation not saved; seq stays unique in this run", "err", err)
	}
	args := []any{"first_seq", c.run.FirstSeq, "previous_last_seq", c.run.PreviousLastSeq, "clean", c.run.Clean}
	switch {
	case c.run.FirstSeq > c.run.PreviousLastSeq+1:
		c.log.Warn("seq skips above the previous run's reservation: it did not stop cleanly and its last seq is not known for sure (a power loss, or no record of its readings)", args...)
	case !c.run.Clean:
		c.log.Warn("seq continues after the previous run's last recorded reading; it did not stop cleanly", args...)
	default:
		c.log.Info("seq continues", args...)
	}
}

func (c *Core) leaseLocked() seqFile {
	return seqFile{n: c.limit, first: c.run.FirstSeq, boot: c.boot}
}

// handOffLocked queues r for the journal; subscribers get it once it is
// recorded, or right away when the journal is stuck in a write.
func (c *Core) handOffLocked(jr *journalRun, r Reading) {
	if jr.pend.Len() >= maxPending {
		c.overflow.Add(1)
		c.showLocked(jr)
		c.deliverLocked(r)
		return
	}
	jr.pend.Push(r)
	if !jr.started && jr.writing.Load() == 0 {
		// Nothing records before Run: the wait counts as a write under
		// way, so that the readings are shown after stallAfter all the same.
		jr.startWrite()
		jr.timer.Reset(jr.stallAfter)
	}
	if jr.stalled() {
		c.showLocked(jr)
	}
	signal(jr.kick)
}

// stalled reports whether the write under way has taken stallAfter.
func (jr *journalRun) stalled() bool {
	w := jr.writing.Load()
	return w != 0 && time.Since(jr.epoch)-time.Duration(w) >= jr.stallAfter
}

func (jr *journalRun) startWrite() { jr.writing.Store(int64(max(time.Since(jr.epoch), 1))) }

// showLocked delivers every queued reading not delivered yet.
func (c *Core) showLocked(jr *journalRun) {
	for ; jr.shown < jr.pend.Len(); jr.shown++ {
		c.deliverLocked(*jr.pend.At(jr.shown))
		c.ahead.Add(1)
	}
}

// overdue runs when a batch's writes have taken stallAfter (the journal's
// goroutine sets the timer for each batch, and stops it after): it
// delivers what waits if the write under way has taken that long, and
// looks again when it will have. While the journal's goroutine merely
// waits for the CPU, readings wait with it: showing them would not be
// faster, only less safe.
func (c *Core) overdue(jr *journalRun) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := jr.writing.Load()
	switch {
	case w == 0:
	case jr.stalled():
		c.showLocked(jr) // later ones go with Emit's own check
	default:
		jr.timer.Reset(jr.stallAfter - (time.Since(jr.epoch) - time.Duration(w)))
	}
}

// journalLoop records the queued readings in seq order, delivers them,
// and extends the seq reservation; it ends once detached and drained.
func (c *Core) journalLoop(jr *journalRun) {
	defer close(jr.done)
	batch := make([]Reading, 0, 64)
	for {
		c.mu.Lock()
		if c.next+seqLease/2 > c.limit {
			signal(jr.lease)
		}
		if jr.pend.Len() == 0 {
			stop := jr.stop
			c.mu.Unlock()
			if stop {
				return
			}
			<-jr.kick
			continue
		}
		batch = batch[:0]
		for i := 0; i < min(jr.pend.Len(), 256); i++ {
			batch = append(batch, *jr.pend.At(i))
		}
		c.mu.Unlock()
		jr.startWrite()
		jr.timer.Reset(jr.stallAfter)
		if c.gate != nil {
			c.gate()
		}
		jr.j.Record(batch)
		jr.writing.Store(0)
		c.mu.Lock()
		k := len(batch)
		for i := jr.shown; i < k; i++ {
			c.deliverLocked(*jr.pend.At(i))
		}
		jr.shown = max(jr.shown-k, 0)
		for range k {
			jr.pend.PopFront()
		}
		jr.recorded = batch[k-1].Seq
		if jr.progress != nil {
			close(jr.progress)
			jr.progress = nil
		}
		c.mu.Unlock()
		jr.timer.Stop() // after writing went 0: overdue then sets it no more
	}
}

// leaseLoop extends the seq reservation when the journal's goroutine asks
// for it: its fsync then holds up no record. It ends with that goroutine.
func (c *Core) leaseLoop(jr *journalRun) {
	defer close(jr.leaseDone)
	for {
		select {
		case <-jr.done:
			return
		case <-jr.lease:
		}
		c.mu.Lock()
		due := c.next+seqLease/2 > c.limit && time.Since(c.leaseFail) > time.Second
		lease := seqFile{n: c.next + seqLease, first: c.run.FirstSeq, boot: c.boot}
		c.mu.Unlock()
		if !due {
			continue
		}
		if c.gate != nil {
			c.gate()
		}
		err := writeSeqFile(c.seqPath, lease)
		c.mu.Lock()
		if err != nil {
			c.leaseFail = time.Now()
			c.seqErrs++
		} else {
			c.limit = max(c.limit, lease.n)
		}
		c.mu.Unlock()
		if err != nil {
			c.log.Warn("seq reservation not saved; retrying in 1 s", "err", err)
		}
	}
}

// detach delivers what waits (in order, ahead of the later readings that
// now go straight to subscribers), lets the journal's goroutine record it,
// and waits for the goroutines to end; before Run, it records it itself.
// Every caller returns once the journal has let go.
func (c *Core) detach(jr *journalRun) {
	c.mu.Lock()
	if c.jr != jr {
		c.mu.Unlock()
		<-jr.done // detached by another caller: wait as it does
		<-jr.leaseDone
		return
	}
	c.showLocked(jr)
	c.jr = nil
	jr.stop = true
	started := jr.started
	c.mu.Unlock()
	if started {
		signal(jr.kick)
	} else {
		close(jr.leaseDone)
		c.journalLoop(jr) // stop is set: it drains and returns
	}
	<-jr.done
	<-jr.leaseDone
	jr.timer.Stop()
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

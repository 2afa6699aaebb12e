package mqtt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"sync/atomic"
	"time"

	pibridge "pibridge"
)

// walLog makes DiskOutbox.Append durable against the death of the
// process (crash, SIGKILL, OOM kill) without an fsync: each reading is
// handed to the kernel with one write(2) to an append-only file, and the
// kernel keeps it whatever happens to the process. Power loss is bbolt's
// business: its group commit fsyncs at most CommitWindow later.
//
// Two files alternate so that recycling never races an Append: appends
// go to the active file; the writer switches the other one in (it is
// empty by then) and truncates the one switched out once every reading
// in it is in bbolt, acknowledged or dropped (Synced ≥ its last seq).
// Truncated early, an acknowledged reading's pages are usually thrown
// away before the kernel writes them back (30 s), so with the broker up
// the card sees little more than the inode's journal updates.
//
// Record: [0:4] length of the rest after the CRC, [4:8] CRC-32C of that
// rest, [8:16] seq, then encodeRecord's bytes; all big-endian. A torn or
// garbage tail (power loss, a short write on a full disk) fails the CRC
// or the length, and the file is read up to there only.
//
// The walLog is not safe for concurrent use: the DiskOutbox's walMu
// guards it, its atomic counters aside. The newest record is kept until a
// newer one is written (recycle), so that after a crash seq resumes after
// it even when every reading had been acknowledged.
type walLog struct {
	paths      [2]string
	f          [2]walFile
	active     int
	open       bool      // the files are open for appending
	switchedAt time.Time // when the active file was last switched in
	buf        []byte

	// Counted over every open, read without walMu by the stats.
	bytes atomic.Uint64 // bytes written
	fails atomic.Uint64 // appends that failed (those readings are in memory only)
}

type walFile struct {
	path string
	file *os.File
	size int64  // bytes of whole records
	last uint64 // highest seq in the file; 0 when empty
	bad  bool   // a failed write could not be cut off: no more appends until truncated
}

const (
	walHeader = 16
	// walMaxRecord bounds a record's length field: a reading is ~100
	// bytes, so anything far above is garbage.
	walMaxRecord = 64 << 10
)

var walCRC = crc32.MakeTable(crc32.Castagnoli)

// walPaths are the two files of the outbox at dbPath.
func walPaths(dbPath string) [2]string {
	return [2]string{dbPath + ".wal0", dbPath + ".wal1"}
}

// usable reports whether appends can go to the log; false without one.
func (w *walLog) usable() bool { return w != nil && w.open }

// reopen opens (or creates) both files, reads their valid records and
// cuts off any torn tail, so that new records follow whole ones. It
// returns the records in seq order, deduplicated. When a file cannot be
// opened for writing, the log stays closed and it returns an error, and the records
// all the same (a read-only disk still replays). A file that cannot be
// read to its end (a bad spot on the card) counts as torn there; one
// whose tail cannot be cut off takes no records until it is truncated:
// then the log works and the error is only to be logged.
func (w *walLog) reopen() ([]pibridge.Reading, error) {
	w.f, w.active, w.open, w.switchedAt = [2]walFile{}, 0, false, time.Now()
	paths := w.paths
	var recs []pibridge.Reading
	var errs []error
	fatal := false
	for i, p := range paths {
		w.f[i].path = p
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			// Read what there is even if it cannot be written.
			if rf, rerr := os.Open(p); rerr == nil {
				rs, _, _ := readWAL(rf)
				recs = append(recs, rs...)
				rf.Close()
			}
			errs = append(errs, err)
			fatal = true
			continue
		}
		wf := &w.f[i]
		wf.file = f
		rs, valid, err := readWAL(f)
		recs = append(recs, rs...)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: read up to byte %d: %w", p, valid, err))
		}
		wf.size = valid
		for _, r := range rs {
			wf.last = max(wf.last, r.Seq)
		}
		if st, err := f.Stat(); err != nil || st.Size() != valid {
			if err := f.Truncate(valid); err != nil {
				errs = append(errs, fmt.Errorf("%s: cutting off a torn tail: %w", p, err))
				wf.bad = true
			}
		}
	}
	slices.SortFunc(recs, func(a, b pibridge.Reading) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	recs = slices.CompactFunc(recs, func(a, b pibridge.Reading) bool { return a.Seq == b.Seq })
	if fatal {
		w.close()
		return recs, errors.Join(errs...)
	}
	// Append to the emptier good file, so that the other one, already
	// full of replayed readings, is the first to be recycled.
	if w.f[0].bad || (!w.f[1].bad && w.f[1].size < w.f[0].size) {
		w.active = 1
	}
	w.open = true
	return recs, errors.Join(errs...)
}

// readWAL returns the valid records from the start of r and the length
// of the valid prefix.
func readWAL(r io.Reader) ([]pibridge.Reading, int64, error) {
	// What was read before an error is used: the records up to a bad
	// spot are as good as any.
	data, err := io.ReadAll(r)
	var recs []pibridge.Reading
	var off int64
	for rest := data; ; {
		r, n, ok := decodeWALRecord(rest)
		if !ok {
			return recs, off, err
		}
		recs = append(recs, r)
		off += int64(n)
		rest = rest[n:]
	}
}

func decodeWALRecord(b []byte) (pibridge.Reading, int, bool) {
	if len(b) < walHeader {
		return pibridge.Reading{}, 0, false
	}
	n := binary.BigEndian.Uint32(b[0:4])
	if n < 8 || n > walMaxRecord || uint64(len(b)-8) < uint64(n) {
		return pibridge.Reading{}, 0, false
	}
	body := b[8 : 8+n]
	if crc32.Checksum(body, walCRC) != binary.BigEndian.Uint32(b[4:8]) {
		return pibridge.Reading{}, 0, false
	}
	r, ok := decodeRecord(body[8:])
	if !ok {
		return pibridge.Reading{}, 0, false
	}
	r.Seq = binary.BigEndian.Uint64(body[0:8])
	return r, 8 + int(n), true
}

// appendWALRecord encodes r as a WAL record at the end of b.
func appendWALRecord(b []byte, r pibridge.Reading) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)
	b = binary.BigEndian.AppendUint64(b, r.Seq)
	b = encodeRecord(b, r)
	body := b[start+8:]
	binary.BigEndian.PutUint32(b[start:], uint32(len(body)))
	binary.BigEndian.PutUint32(b[start+4:], crc32.Checksum(body, walCRC))
	return b
}

// append writes the records of rs (seq order) to the active file with
// one write(2), no fsync. On a failure (full disk, I/O error) it cuts the
// file back to its whole records, so that later records are not hidden
// behind a torn one; if that fails too, the file takes no more records
// until it is truncated. Every reading of a failed write counts as failed.
func (w *walLog) append(rs []pibridge.Reading) (int, error) {
	if len(rs) == 0 {
		return 0, nil
	}
	f := &w.f[w.active]
	if f.bad || f.file == nil {
		w.fails.Add(uint64(len(rs)))
		return 0, errWALBad
	}
	w.buf = w.buf[:0]
	for i := range rs {
		w.buf = appendWALRecord(w.buf, rs[i])
	}
	n, err := f.file.Write(w.buf)
	if cap(w.buf) > walKeepBuf {
		w.buf = nil // a long batch's buffer is not kept for the next one
	}
	if err != nil {
		if n > 0 {
			if terr := f.file.Truncate(f.size); terr != nil {
				f.bad = true
			}
		}
		w.fails.Add(uint64(len(rs)))
		return 0, err
	}
	f.size += int64(n)
	f.last = rs[len(rs)-1].Seq
	w.bytes.Add(uint64(n))
	return n, nil
}

// walKeepBuf is the encoding buffer kept between writes: a batch of 256
// readings of ordinary size fits.
const walKeepBuf = 64 << 10

var errWALBad = errors.New("outbox log: a failed write could not be cut off; waiting for the file to be recycled")

// inactive is the file appends do not go to.
func (w *walLog) inactive() *walFile { return &w.f[1-w.active] }

// canSwitch reports whether the active file may be switched out: the
// other one is empty and writable.
func (w *walLog) canSwitch() bool {
	in := w.inactive()
	return in.size == 0 && !in.bad && in.file != nil
}

func (w *walLog) switchFiles() {
	w.active = 1 - w.active
	w.switchedAt = time.Now()
}

// activeSize is the size of the file appends go to.
func (w *walLog) activeSize() int64 { return w.f[w.active].size }

// walSwitchBytes is the size at which the log switches files even between
// commits (about 1,000 readings).
const walSwitchBytes = 64 << 10

// recycle truncates the inactive file once every reading in it is synced
// (on disk, acknowledged or dropped): no append writes to it. It switches
// the files, when the other one is empty, once the active one is window
// old or walSwitchBytes big: with the broker up there is no commit, and
// this bounds both the log and what a crash publishes twice to a window
// or two. The newest record stays until a newer one is in the active
// file: after a crash, seq resumes after it. A failed truncate returns
// the file's path and the error, and is tried again next time.
func (w *walLog) recycle(synced uint64, window time.Duration) (string, error) {
	act := &w.f[w.active]
	var path string
	var err error
	if in := w.inactive(); (in.size > 0 || in.bad) && synced >= in.last && (act.size > 0 || in.bad) {
		if err = in.truncate(); err != nil {
			path = in.path
		} else {
			in.size, in.last, in.bad = 0, 0, false
		}
	}
	if (act.size > 0 || act.bad) && w.canSwitch() &&
		(act.size >= walSwitchBytes || act.bad || time.Since(w.switchedAt) >= window) {
		w.switchFiles()
	}
	return path, err
}

// truncateSynced empties the files whose readings are all synced, before
// a clean stop: nothing is left to publish twice.
func (w *walLog) truncateSynced(synced uint64) {
	for i := range w.f {
		if f := &w.f[i]; f.size > 0 && synced >= f.last {
			f.truncate()
		}
	}
}

// truncate empties f. Only for the inactive file, outside the lock.
func (f *walFile) truncate() error {
	if f.file == nil {
		return nil
	}
	return f.file.Truncate(0)
}

func (w *walLog) close() error {
	w.open = false
	var errs []error
	for i := range w.f {
		if w.f[i].file != nil {
			errs = append(errs, w.f[i].file.Close())
			w.f[i].file = nil
		}
	}
	return errors.Join(errs...)
}

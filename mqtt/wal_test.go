package mqtt

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	pibridge "pibridge"
	"pibridge/internal/testkit"
)

func TestWALRecordRoundTrip(t *testing.T) {
	var b []byte
	for s := uint64(1); s <= 3; s++ {
		b = appendWALRecord(b, testReading(s))
	}
	recs, valid, err := readWAL(bytes.NewReader(b))
	if err != nil || valid != int64(len(b)) || len(recs) != 3 {
		t.Fatalf("read %d records, %d of %d bytes valid, err %v", len(recs), valid, len(b), err)
	}
	for i, r := range recs {
		if want := testReading(uint64(i + 1)); r != want {
			t.Errorf("record %d = %+v, want %+v", i, r, want)
		}
	}
	one := appendWALRecord(nil, testReading(1))
	for i := 0; i < len(one); i++ { // every truncation is refused, none panics
		if _, _, ok := decodeWALRecord(one[:i]); ok {
			t.Errorf("truncated to %d bytes accepted", i)
		}
	}
	for i := 0; i < len(one); i++ { // every flipped byte is refused
		bad := slices.Clone(one)
		bad[i] ^= 0x10
		if r, _, ok := decodeWALRecord(bad); ok {
			t.Errorf("byte %d flipped accepted: %+v", i, r)
		}
	}
}

// writeWAL writes the files of the outbox at dir as a crashed run would
// have left them.
func writeWAL(t *testing.T, dir string, files [2][]byte) {
	t.Helper()
	for i, p := range walPaths(filepath.Join(dir, outboxFile)) {
		if err := os.WriteFile(p, files[i], 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func walRecords(seqs ...uint64) []byte {
	var b []byte
	for _, s := range seqs {
		b = appendWALRecord(b, testReading(s))
	}
	return b
}

// TestWALTornTail: whatever follows the last whole record (a record cut
// short, zeros from a power loss that extended the file, garbage, a flipped
// bit) is ignored and cut off, so that new records follow whole ones.
func TestWALTornTail(t *testing.T) {
	half := walRecords(99)
	half = half[:len(half)/2]
	flipped := walRecords(13, 14)
	flipped[20] ^= 1 // in 13's body: 13 and what follows in that file are lost
	hugeLen := []byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	for _, tt := range []struct {
		name  string
		files [2][]byte
		want  []uint64
	}{
		{"half a record", [2][]byte{append(walRecords(1, 2, 3), half...), walRecords(4, 5)}, seqRange(1, 5)},
		{"zeros", [2][]byte{append(walRecords(1, 2), make([]byte, 4096)...), nil}, seqRange(1, 2)},
		{"garbage", [2][]byte{walRecords(1, 2), append(walRecords(3), []byte("garbage, not a record at all")...)}, seqRange(1, 3)},
		{"huge length", [2][]byte{append(walRecords(1), hugeLen...), nil}, seqRange(1, 1)},
		{"flipped bit", [2][]byte{append(walRecords(10, 11, 12), flipped...), nil}, seqRange(10, 12)},
		{"empty", [2][]byte{nil, nil}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeWAL(t, dir, tt.files)
			o, err := running(OpenDiskOutbox(dir, 1000, testLogger(t)))
			if err != nil {
				t.Fatal(err)
			}
			if got := drain(t, o); !slices.Equal(got, tt.want) {
				t.Fatalf("replayed %v, want %v", got, tt.want)
			}
			for i, p := range walPaths(filepath.Join(dir, outboxFile)) {
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if _, valid, _ := readWAL(bytes.NewReader(b)); valid != int64(len(b)) {
					t.Errorf("file %d: %d bytes after its %d valid ones were not cut off", i, int64(len(b))-valid, valid)
				}
			}
			// New readings after the torn tail are found again after a
			// crash (the log files are copied while open, as a SIGKILL
			// would leave them, before Close commits and truncates).
			o.Append(testReading(1000))
			var saved [2][]byte
			for i, p := range walPaths(filepath.Join(dir, outboxFile)) {
				saved[i], _ = os.ReadFile(p)
			}
			if err := o.Close(); err != nil {
				t.Fatal(err)
			}
			found := false
			for _, b := range saved {
				recs, _, _ := readWAL(bytes.NewReader(b))
				found = found || slices.ContainsFunc(recs, func(r pibridge.Reading) bool { return r.Seq == 1000 })
			}
			if !found {
				t.Error("the reading appended after the torn tail is not readable in the log")
			}
		})
	}
}

// TestWALReplayIdempotent: records already in the file are overwritten,
// not doubled; replaying the same log twice (a crash before the log was
// recycled) gives the same outbox.
func TestWALReplayIdempotent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, outboxFile)
	st, err := boltOpener(path)(func(uint64) {})
	if err != nil {
		t.Fatal(err)
	}
	var batch []pibridge.Reading
	for s := uint64(1); s <= 5; s++ {
		batch = append(batch, testReading(s))
	}
	if err := st.apply(0, batch); err != nil {
		t.Fatal(err)
	}
	st.close()
	files := [2][]byte{walRecords(3, 4, 5, 6), walRecords(7, 8, 6)}
	for round := 0; round < 3; round++ {
		writeWAL(t, dir, files) // the same log again, as if never recycled
		o, err := running(OpenDiskOutbox(dir, 1000, testLogger(t)))
		if err != nil {
			t.Fatal(err)
		}
		if got := drain(t, o); !slices.Equal(got, seqRange(1, 8)) {
			t.Fatalf("round %d: %v, want 1..8 once each", round, got)
		}
		o.mu.Lock()
		replayed := o.replayed
		o.mu.Unlock()
		if want := map[int]uint64{0: 3}[round]; replayed != want {
			t.Errorf("round %d: replayed %d, want %d (those above the file's newest)", round, replayed, want)
		}
		if err := o.Close(); err != nil {
			t.Fatal(err)
		}
		for _, p := range walPaths(path) {
			if fi, err := os.Stat(p); err != nil || fi.Size() != 0 {
				t.Errorf("round %d: %s not empty after a clean Close: %v", round, p, err)
			}
		}
	}
}

// TestWALConcurrent runs Append, Next/Commit (the publisher) and the
// writer's commits and recycling at once, and checks the log's
// invariant while they run: every reading held in memory and not yet in
// the file is in a log file. The lock stops Append and the switches; a
// file being truncated meanwhile holds only readings at or below Synced,
// which the check leaves out.
func TestWALConcurrent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, outboxFile)
	p := testDiskParams
	p.window = 2 * time.Millisecond // many commits and switches
	p.memMax = 1 << 20
	o, err := running(openDiskOutbox(path, boltOpener(path), walPaths(path), 1<<20, testLogger(t), p))
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	const n = 20000
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(2)
	go func() { // the publisher: acknowledges what it finds, in steps
		defer wg.Done()
		var after uint64
		for after < n {
			r, ok := o.Next(after)
			if !ok {
				select {
				case <-done:
					return
				default:
					continue
				}
			}
			after = r.Seq
			if after%37 == 0 {
				o.Commit(after)
			}
		}
	}()
	checks := 0
	go func() { // the checker
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			o.mu.Lock()
			synced := o.q.synced()
			var want []uint64
			for i := 0; i < o.q.mem.Len(); i++ {
				if s := o.q.mem.At(i).Seq; s > synced {
					want = append(want, s)
				}
			}
			var logged []pibridge.Reading
			for _, wp := range walPaths(path) {
				b, _ := os.ReadFile(wp)
				rs, _, _ := readWAL(bytes.NewReader(b))
				logged = append(logged, rs...)
			}
			o.mu.Unlock()
			have := map[uint64]bool{}
			for _, r := range logged {
				have[r.Seq] = true
			}
			for _, s := range want {
				if !have[s] {
					t.Errorf("seq %d is neither in the file nor in the log (synced %d)", s, synced)
					return
				}
			}
			checks++
		}
	}()
	for s := uint64(1); s <= n; s++ {
		o.Append(testReading(s))
	}
	eventually(t, "the publisher at the end", func() bool { r, ok := o.Next(n - 1); return ok && r.Seq == n })
	close(done)
	wg.Wait()
	o.mu.Lock()
	fails, bytes := o.wal.fails.Load(), o.wal.bytes.Load()
	o.mu.Unlock()
	if fails != 0 {
		t.Errorf("%d log writes failed", fails)
	}
	t.Logf("%d invariant checks; %d log bytes for %d readings; %d commits", checks, bytes, n, o.commits.Load())
}

// walHelperEnv makes TestWALKilledHelper the child process of
// TestWALKilled.
const walHelperEnv = "PIBRIDGE_WAL_HELPER"

// TestWALKilledHelper is, in a child process, an outbox that appends
// readings as fast as it can and acknowledges some, printing "A seq" after
// each Append returned and "C seq" before each Commit (so that the parent
// never misses an acknowledgement), until it is killed.
func TestWALKilledHelper(t *testing.T) {
	dir := os.Getenv(walHelperEnv)
	if dir == "" {
		t.Skip("the child process of TestWALKilled")
	}
	from, _ := strconv.ParseUint(os.Getenv("WAL_HELPER_FROM"), 10, 64)
	o, err := running(OpenDiskOutbox(dir, 1<<20, nil))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out := os.Stdout // unbuffered: each line is out before the next Append
	for s := from; ; s++ {
		o.Append(testReading(s))
		fmt.Fprintf(out, "A %d\n", s)
		if s%50 == 0 {
			// The broker acknowledges with a lag of 20, as with
			// maxInFlight readings in flight.
			fmt.Fprintf(out, "C %d\n", s-20)
			o.Commit(s - 20)
		}
		if s%500 == 0 {
			// Let the writer commit and recycle the log between bursts,
			// so that kills land before, during and after commits. Not
			// a synchronisation: the test holds whatever the timing.
			time.Sleep(time.Millisecond)
		}
	}
}

// TestWALKilled SIGKILLs a process that appends readings, several times at
// random moments, on the same state_dir: after reopening, every reading it
// reported appended and not acknowledged is in the outbox, with its content.
func TestWALKilled(t *testing.T) {
	dir := t.TempDir()
	from := uint64(1)
	var dups uint64
	for round := 0; round < 5; round++ {
		cmd, stdout, stderr := testkit.Child(t, "TestWALKilledHelper", walHelperEnv+"="+dir, "WAL_HELPER_FROM="+strconv.FormatUint(from, 10))
		// Kill after a varying number of readings: 2,000 to 12,000.
		killAt := from + 2000 + uint64(round)*2500
		var appended, acked uint64
		killed := false
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var kind string
			var seq uint64
			if _, err := fmt.Sscanf(sc.Text(), "%s %d", &kind, &seq); err != nil {
				continue
			}
			if kind == "A" {
				appended = seq
			} else {
				acked = seq
			}
			if appended >= killAt && !killed {
				// Then read on to the end: every line the child wrote
				// before it died, so that appended and acked are exact.
				cmd.Process.Kill()
				killed = true
			}
		}
		cmd.Wait()
		if !killed {
			t.Fatalf("round %d: the child ended at seq %d before the kill: %s", round, appended, stderr.String())
		}

		o, err := running(OpenDiskOutbox(dir, 1<<20, testLogger(t)))
		if err != nil {
			t.Fatal(err)
		}
		got := drain(t, o) // checks each reading's content too
		have := map[uint64]bool{}
		for _, s := range got {
			have[s] = true
		}
		var missing []uint64
		for s := max(acked+1, from); s <= appended; s++ {
			if !have[s] {
				missing = append(missing, s)
			}
		}
		if len(missing) > 0 {
			t.Errorf("round %d: %d readings appended, not acknowledged, are missing after the kill: %v", round, len(missing), missing[:min(len(missing), 20)])
		}
		var twice int
		for _, s := range got {
			if s <= acked {
				twice++
			}
		}
		dups += uint64(twice)
		t.Logf("round %d: killed after seq %d (acked up to %d): %d held after reopening, %d of them acknowledged before (published twice)",
			round, appended, acked, len(got), twice)
		// The next run starts where the child may have got to, beyond
		// what it printed (as the core's seq lease skips ahead).
		from = appended + 10000
		o.Commit(appended + 9999) // all published: the next round checks its own
		if err := o.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("readings published twice over the kills: %d", dups)
}

// BenchmarkDiskOutboxAppend measures Append alone on the real bbolt file
// (the group commit runs behind it), with the broker acknowledging every
// 20 readings: "nolog" is the outbox without its log (before), "log"
// with it. log-B/reading is what the log's write(2)s hand the kernel.
//
// go test -run=^$ -bench=DiskOutboxAppend -benchtime=200000x ./mqtt
func BenchmarkDiskOutboxAppend(b *testing.B) {
	for _, withLog := range []bool{false, true} {
		name := map[bool]string{false: "nolog", true: "log"}[withLog]
		b.Run(name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), outboxFile)
			var wal [2]string
			if withLog {
				wal = walPaths(path)
			}
			o, err := running(openDiskOutbox(path, boltOpener(path), wal, 1<<20, nil, defaultDiskParams))
			if err != nil {
				b.Fatal(err)
			}
			defer o.Close()
			r := pibridge.Reading{Name: "air.temperature", Value: pibridge.Number(21.5), Unit: "°C", TS: time.Now()}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r.Seq = uint64(i + 1)
				o.Append(r)
				if i%20 == 19 {
					o.Commit(r.Seq)
				}
			}
			b.StopTimer()
			var logBytes uint64
			if o.wal != nil { // nil for nolog
				logBytes = o.wal.bytes.Load()
			}
			b.ReportMetric(float64(logBytes)/float64(b.N), "log-B/reading")
		})
	}
}

// TestWALDiskWrites measures what reaches the block device with the
// broker up (every 10 readings acknowledged at once, within 10 ms, so
// no commit runs), with the log and without: 1,000 readings/s for 45 s,
// longer than the kernel's 30 s dirty_expire, so that pages the log did
// not truncate in time are written back within the run. It needs a file
// system of its own on a block device whose /sys/block/DEV/stat it reads:
//
//	truncate -s 64M /tmp/img && mkfs.ext4 -q /tmp/img && mount -o loop /tmp/img /mnt
//	PIBRIDGE_WAL_DISKIO=/mnt PIBRIDGE_WAL_DEV=loop0 go test -run=WALDiskWrites -v ./mqtt
func TestWALDiskWrites(t *testing.T) {
	root, dev := os.Getenv("PIBRIDGE_WAL_DISKIO"), os.Getenv("PIBRIDGE_WAL_DEV")
	if root == "" || dev == "" {
		t.Skip("set PIBRIDGE_WAL_DISKIO and PIBRIDGE_WAL_DEV to measure")
	}
	sectors := func() uint64 {
		b, err := os.ReadFile("/sys/block/" + dev + "/stat")
		if err != nil {
			t.Fatal(err)
		}
		f := bytes.Fields(b)
		n, _ := strconv.ParseUint(string(f[6]), 10, 64) // sectors written
		return n
	}
	const run = 45 * time.Second
	for _, withLog := range []bool{false, true} {
		dir, err := os.MkdirTemp(root, "wal")
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, outboxFile)
		var wal [2]string
		if withLog {
			wal = walPaths(path)
		}
		o, err := running(openDiskOutbox(path, boltOpener(path), wal, 1<<20, testLogger(t), defaultDiskParams))
		if err != nil {
			t.Fatal(err)
		}
		exec.Command("sync").Run() // the file's creation is not what is measured
		before := sectors()
		tick := time.NewTicker(time.Millisecond)
		end := time.Now().Add(run)
		var seq uint64
		for time.Now().Before(end) {
			<-tick.C
			seq++
			o.Append(pibridge.Reading{Name: "air.temperature", Value: pibridge.Number(21.5), Unit: "°C", TS: time.Now(), Seq: seq})
			if seq%10 == 0 {
				o.Commit(seq) // the broker acknowledges within 10 ms
			}
		}
		tick.Stop()
		written := (sectors() - before) * 512
		o.mu.Lock()
		logBytes := o.wal.bytes.Load()
		o.mu.Unlock()
		t.Logf("log %v: %d readings in %s, %d bytes handed to the log, %d bytes written to %s (%.1f B/reading, %.0f B/s), %d commits",
			withLog, seq, run, logBytes, written, dev, float64(written)/float64(seq), float64(written)/run.Seconds(), o.commits.Load())
		o.Close()
	}
}

package mqtt

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	pibridge "pibridge"
	"pibridge/internal/testkit"
)

// seqHelperEnv makes TestSeqKilledHelper the child process of
// TestSeqResumesAfterKill.
const seqHelperEnv = "PIBRIDGE_SEQ_HELPER"

// printer prints "S seq" for every reading the core lets subscribers see,
// before the next one (Deliver runs under the core's lock).
type printer struct{}

func (printer) Deliver(r pibridge.Reading) { fmt.Fprintf(os.Stdout, "S %d\n", r.Seq) }

// TestSeqKilledHelper is, in a child process, a core with the MQTT
// client's disk outbox as its journal, emitting readings until it is
// killed. With SEQ_HELPER_IDLE it runs an embedded broker that
// acknowledges everything, stops after 3,000 readings (the last three
// slowly) and idles, so that the outbox's log is recycled, then prints
// "IDLE".
func TestSeqKilledHelper(t *testing.T) {
	dir := os.Getenv(seqHelperEnv)
	if dir == "" {
		t.Skip("the child process of TestSeqResumesAfterKill")
	}
	idle := os.Getenv("SEQ_HELPER_IDLE") != ""
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	core, err := pibridge.New(pibridge.Options{Device: pibridge.Device{ID: "dev1"}, Signals: testSignals, StateDir: dir})
	if err != nil {
		fail(err)
	}
	broker := "tcp://127.0.0.1:1" // nobody: readings stay in the outbox
	if idle {
		b, err := NewBroker("127.0.0.1:0", nil)
		if err != nil {
			fail(err)
		}
		if err := b.Start(); err != nil {
			fail(err)
		}
		broker = "tcp://" + b.Addr()
	}
	c, err := newClient(Options{Config: testConfig(core, broker), Core: core, StateDir: dir}, testTiming)
	if err != nil {
		fail(err)
	}
	core.Subscribe(printer{})
	// Run records the readings in the outbox (the core's journal); with
	// nobody at the broker's address they stay there.
	go c.Run(context.Background())
	for i := 0; !idle || i < 2997; i++ {
		core.Emit("cpu", pibridge.Number(float64(i%100)), time.Time{})
		if i%20 == 0 {
			// At most 20,000 readings/s, which the journal keeps up with
			// (faster, its queue overflows: readings shown, not logged).
			// Not a synchronisation: the test holds whatever the timing.
			time.Sleep(time.Millisecond)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	// Every reading in the outbox, then every one acknowledged.
	settled := func() {
		core.AwaitJournal(ctx)
		for c.Queued() > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // polling with a deadline
		}
	}
	settled()
	// Readings further apart than the commit window, each acknowledged:
	// the log switches files and truncates what was acknowledged. The
	// spacing is what is tested here, not a wait for something.
	for i := 0; i < 3; i++ {
		time.Sleep(2 * CommitWindow)
		core.Emit("cpu", pibridge.Number(float64(i)), time.Time{})
	}
	settled()
	// Recycled: the two log files hold no more than the last few readings
	// (the first 2,997 took some 15 KB).
	for recycled := time.Now().Add(10 * time.Second); walBytes(dir) > 1024; {
		if time.Now().After(recycled) {
			fail(fmt.Errorf("the outbox's log still holds %d bytes", walBytes(dir)))
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	fmt.Fprintln(os.Stdout, "IDLE", c.Queued())
	select {}
}

// walBytes is the size of the outbox's two log files in dir.
func walBytes(dir string) int64 {
	var n int64
	for _, p := range walPaths(filepath.Join(dir, outboxFile)) {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// TestSeqResumesAfterKill SIGKILLs a core whose journal is the disk outbox
// and reopens its state dir (the same boot): seq resumes right after the
// last reading the log has, which is at least the last one a subscriber
// saw, and RunInfo says the previous run did not stop cleanly. The
// outbox holds every seq up to there without a hole, and the next run
// starts right after it. A clean stop says clean. It also holds when
// every reading had been acknowledged and the log recycled before the
// kill.
func TestSeqResumesAfterKill(t *testing.T) {
	for _, idle := range []bool{false, true} {
		name := map[bool]string{false: "mid-stream, broker away", true: "idle, all acknowledged"}[idle]
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			var total uint64
			for round := 0; round < 3; round++ {
				first, seen := runKilled(t, dir, idle, total+2000+uint64(round)*1500)
				if first != total+1 {
					t.Errorf("round %d: the run started at seq %d, want %d", round, first, total+1)
				}

				core, err := pibridge.New(pibridge.Options{Device: pibridge.Device{ID: "dev1"}, Signals: testSignals, StateDir: dir, Logger: testLogger(t)})
				if err != nil {
					t.Fatal(err)
				}
				c, err := newClient(Options{Config: testConfig(core, "tcp://127.0.0.1:1"), Core: core, StateDir: dir, Logger: testLogger(t)}, testTiming)
				if err != nil {
					t.Fatal(err)
				}
				run := core.RunInfo()
				if run.Clean || run.FirstSeq != run.PreviousLastSeq+1 || run.PreviousLastSeq < seen {
					t.Errorf("round %d: after the kill (last seen %d) RunInfo %+v, want first_seq = previous_last_seq+1 > %d, clean false", round, seen, run, seen)
				}
				if idle && run.PreviousLastSeq != seen {
					t.Errorf("round %d: previous_last_seq %d, want %d: the last reading before the idle", round, run.PreviousLastSeq, seen)
				}
				if !idle {
					// Nothing was acknowledged: the outbox has every seq.
					var after uint64
					for {
						r, ok := c.outbox.Next(after)
						if !ok {
							break
						}
						if r.Seq != after+1 {
							t.Fatalf("round %d: the outbox has seq %d after %d: a hole", round, r.Seq, after)
						}
						after = r.Seq
					}
					if after != run.PreviousLastSeq {
						t.Errorf("round %d: the outbox ends at %d, previous_last_seq %d", round, after, run.PreviousLastSeq)
					}
				}
				total = run.PreviousLastSeq
				t.Logf("round %d: killed after seq %d was seen; resumes at %d", round, seen, run.FirstSeq)
				// A clean stop with no reading: the next run starts
				// right after the killed one's last.
				if err := c.Close(); err != nil {
					t.Fatal(err)
				}
				if err := core.Close(); err != nil {
					t.Fatal(err)
				}
				if round == 2 {
					again, err := pibridge.New(pibridge.Options{Signals: testSignals, StateDir: dir})
					if err != nil {
						t.Fatal(err)
					}
					if got, want := again.RunInfo(), (pibridge.RunInfo{FirstSeq: total + 1, PreviousLastSeq: total, Clean: true}); got != want {
						t.Errorf("after a clean stop RunInfo %+v, want %+v", got, want)
					}
					again.Close()
				}
			}
		})
	}
}

// runKilled runs TestSeqKilledHelper on dir and SIGKILLs it once it has
// shown killAt (mid-stream) or once it idles; it returns the first and the
// last seq a subscriber saw.
func runKilled(t *testing.T, dir string, idle bool, killAt uint64) (first, seen uint64) {
	t.Helper()
	env := []string{seqHelperEnv + "=" + dir}
	if idle {
		env = append(env, "SEQ_HELPER_IDLE=1")
	}
	cmd, stdout, stderr := testkit.Child(t, "TestSeqKilledHelper", env...)
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if len(line) > 2 && line[0] == 'S' {
			s, _ := strconv.ParseUint(line[2:], 10, 64)
			seen = max(seen, s)
			if first == 0 {
				first = s
			}
		}
		kill := (!idle && seen >= killAt) || (idle && strings.HasPrefix(line, "IDLE"))
		if kill && !killed {
			if idle && line != "IDLE 0" {
				t.Errorf("%s readings not acknowledged before the kill", line[5:])
			}
			cmd.Process.Kill()
			killed = true
		}
	}
	cmd.Wait()
	if !killed {
		t.Fatalf("the child ended at seq %d before the kill: %s", seen, stderr.String())
	}
	return first, seen
}

// TestSeqSkipAfterPowerLoss: a kill, then the log's tail cut off and a
// new boot, as a power loss leaves them: seq skips above the reservation,
// never repeating a seq a subscriber saw, and RunInfo announces the skip.
func TestSeqSkipAfterPowerLoss(t *testing.T) {
	dir := t.TempDir()
	_, seen := runKilled(t, dir, false, 3000)
	for _, p := range walPaths(filepath.Join(dir, outboxFile)) {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, max(st.Size()-2000, 0)); err != nil {
			t.Fatal(err)
		}
	}
	core, err := pibridge.New(pibridge.Options{Signals: testSignals, StateDir: dir, BootID: "after-the-power-loss", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer core.Close()
	c, err := newClient(Options{Config: testConfig(core, "tcp://127.0.0.1:1"), Core: core, StateDir: dir, Logger: testLogger(t)}, testTiming)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	run := core.RunInfo()
	if run.Clean || run.FirstSeq <= seen || run.FirstSeq <= run.PreviousLastSeq+1 {
		t.Errorf("after the power loss (last seen %d) RunInfo %+v, want a skip above %d announced (first_seq > previous_last_seq+1), clean false", seen, run, seen)
	}
	t.Logf("last seen %d; RunInfo %+v", seen, run)
}

package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"pibridge/internal/harness"
)

// commitWindow is the disk outbox's fsync window (mqtt.CommitWindow,
// 100 ms) plus a margin for the WebSocket's lag and the commit itself.
// The outbox also writes every reading to its append-only log before the
// core shows it (while the disk answers), which survives a SIGKILL
// without an fsync, so both rows
// must be 0; the split says which mechanism failed if one is not: the log
// (readings in the window) or the group commit (older ones).
const commitWindow = 150 * time.Millisecond

// bridgeKilled is fault 2: the bridge SIGKILLed o.crashes times while it
// publishes > 1,000 readings/s to mosquitto, and started again on the
// same state dir and ports.
//
// Lost: a seq a WebSocket client saw from a killed run (so the bridge
// had emitted and accepted it) that never reaches the broker, after every
// restart. Losses are split by how long before the kill the WebSocket saw
// the reading.
//
// Holes: an independent QoS 1 subscriber (persistent session; mosquitto
// queues without limit) records every seq from 1 on; a seq it never gets
// is a hole unless P/D/meta's `run` announced a skip over it. After a
// SIGKILL seq resumes at the last logged seq + 1, so there must be none,
// and no seq may come twice with different readings.
func bridgeKilled(ctx context.Context, s *suite) (harness.Table, error) {
	m, w, stop, err := watchedMosquitto(ctx, s, "f2", harness.MosquittoOptions{}, false)
	if err != nil {
		return harness.Table{}, err
	}
	defer stop()

	dm, err := s.spec.Start(ctx, "f2", streamConfig(m.Addr))
	if err != nil {
		return harness.Table{}, err
	}
	// dm changes with each restart; stop whichever runs at the end.
	defer func() { dm.Stop() }()

	type run struct {
		seen  map[uint64]time.Time // seq → when the WebSocket saw it
		kill  time.Time
		first uint64 // the run's first seq
	}
	var (
		runs           []run
		ready, toFirst []time.Duration
	)
	for round := 0; round <= s.o.crashes; round++ {
		ws := seqTracker{keep: true}
		obs, err := observe(ctx, dm.WSURL, func(f *frame, _ []byte, at time.Time) { ws.add(f, at) })
		if err != nil {
			return harness.Table{}, err
		}
		// Readings flowing from this run: 300 of its own at the broker.
		var first uint64
		if err := poll(ctx, 10*time.Second, time.Millisecond, "the first reading on the WebSocket", func() (bool, error) {
			ws.mu.Lock()
			defer ws.mu.Unlock()
			for s := range ws.seen {
				if first == 0 || s < first {
					first = s
				}
			}
			return first > 0, nil
		}); err != nil {
			obs.close()
			return harness.Table{}, err
		}
		if err := w.waitFor(ctx, 30*time.Second, fmt.Sprintf("run %d publishing", round), func(w *watcher) bool { return w.maxSeq > first+300 }); err != nil {
			obs.close()
			return harness.Table{}, err
		}
		if round == s.o.crashes {
			obs.close()
			break // the last run stays up to publish what the others left
		}
		if err := harness.Sleep(ctx, time.Duration(rand.IntN(500))*time.Millisecond); err != nil {
			obs.close()
			return harness.Table{}, err
		}
		kill := time.Now()
		dm.Kill()
		obs.close()
		ws.mu.Lock()
		runs = append(runs, run{seen: ws.seen, kill: kill, first: first})
		ws.mu.Unlock()
		prev := w.summaryMax()
		for seq := range runs[len(runs)-1].seen {
			prev = max(prev, seq)
		}
		spawn := time.Now()
		nd, err := dm.Restart(ctx)
		if err != nil {
			return harness.Table{}, fmt.Errorf("restart %d: %w", round+1, err)
		}
		dm = nd
		ready = append(ready, dm.Ready)
		// The restarted bridge's own first reading at the broker: a seq
		// beyond everything before the kill.
		if err := w.waitFor(ctx, 30*time.Second, fmt.Sprintf("restart %d: a new reading at the broker", round+1), func(w *watcher) bool {
			return w.maxSeq > prev
		}); err != nil {
			return harness.Table{}, err
		}
		w.mu.Lock()
		var at time.Time
		for s, t := range w.first {
			if s > prev && (at.IsZero() || t.Before(at)) {
				at = t
			}
		}
		w.mu.Unlock()
		toFirst = append(toFirst, at.Sub(spawn))
	}

	// Everything the killed runs accepted must arrive; the last run
	// publishes their outboxes first, so a short wait suffices.
	allThere := func(w *watcher) bool {
		for _, r := range runs {
			for s := range r.seen {
				if w.counts[s] == 0 {
					return false
				}
			}
		}
		return true
	}
	_ = w.waitFor(ctx, 10*time.Second, "every reading the killed runs emitted", allThere)
	if ctx.Err() != nil {
		return harness.Table{}, ctx.Err()
	}
	// Every seq up to the newest so far, then count what never came.
	target := w.summaryMax()
	_ = w.waitFor(ctx, 10*time.Second, "every seq up to the newest", func(w *watcher) bool { return w.contig >= target })
	if ctx.Err() != nil {
		return harness.Table{}, ctx.Err()
	}
	var seen, lostOld, lostWindow, killsLosing int
	worst, newest := time.Duration(-1<<62), time.Duration(1<<62)
	w.mu.Lock()
	for _, r := range runs {
		losing := false
		for s, at := range r.seen {
			seen++
			if w.counts[s] > 0 {
				continue
			}
			losing = true
			age := r.kill.Sub(at)
			worst, newest = max(worst, age), min(newest, age)
			if age > commitWindow {
				lostOld++
			} else {
				lostWindow++
			}
		}
		if losing {
			killsLosing++
		}
	}
	dupState, dupOther := w.dupState, w.dupOther
	var holes, announced, unclean int
	var holeList []uint64
	for _, r := range w.runs {
		if r.FirstSeq > r.PreviousLastSeq+1 {
			announced += int(r.FirstSeq - r.PreviousLastSeq - 1)
		}
		if !r.Clean {
			unclean++
		}
	}
	for _, seq := range w.missingLocked(1, target) {
		skipped := false
		for _, r := range w.runs {
			skipped = skipped || (seq > r.PreviousLastSeq && seq < r.FirstSeq)
		}
		if !skipped {
			holes++
			if len(holeList) < 10 {
				holeList = append(holeList, seq)
			}
		}
	}
	reused, nRuns := w.reused, len(w.runs)
	w.mu.Unlock()
	rd, fd := dist(ready), dist(toFirst)

	t := harness.Table{Title: fmt.Sprintf("fault 2: the bridge SIGKILLed %d× mid-stream and restarted on its state dir, %d sim sensors every 10 ms, mosquitto, QoS 1", s.o.crashes, streamSensors)}
	t.Rows = append(t.Rows,
		harness.R("readings of the killed runs seen on the WebSocket", fmt.Sprint(seen), "", ""),
		harness.R(fmt.Sprintf("lost: seen > %s before the kill, never at the broker", commitWindow), fmt.Sprint(lostOld), "0", harness.Verdict(lostOld == 0)),
		harness.R(fmt.Sprintf("lost: seen ≤ %s before the kill (only the outbox's log has them)", commitWindow), fmt.Sprint(lostWindow), "0 (accepted before a SIGKILL is published after the restart)", harness.Verdict(lostWindow == 0)),
		harness.R(fmt.Sprintf("seq holes at the independent subscriber, seqs 1..%d", target), fmt.Sprint(holes), "0", harness.Verdict(holes == 0)),
		harness.R("seqs skipped, announced in P/D/meta `run`", fmt.Sprint(announced), "0 (no power loss here)", harness.Verdict(announced == 0)),
		harness.R("seqs reused (one seq, two different readings)", fmt.Sprint(reused), "0", harness.Verdict(reused == 0)),
		harness.R("runs announced in P/D/meta, of them clean:false", fmt.Sprintf("%d, %d", nRuns, unclean), fmt.Sprintf("%d, %d", s.o.crashes+1, s.o.crashes), harness.Verdict(nRuns == s.o.crashes+1 && unclean == s.o.crashes)),
		harness.R("duplicated: state re-published on connect", fmt.Sprint(dupState), "counted", ""),
		harness.R("duplicated: other (resent from the outbox)", fmt.Sprint(dupOther), "counted (at least once)", ""),
		harness.R("restart: spawn → /healthz 200, p50", ms(rd.Q(0.5)), "", ""),
		harness.R("restart: spawn → /healthz 200, max", ms(rd.Max()), "≤ 1 s", harness.Verdict(rd.Max() <= time.Second)),
		harness.R("restart: spawn → first new reading at the broker, p50", ms(fd.Q(0.5)), "", ""),
		harness.R("restart: spawn → first new reading at the broker, max", ms(fd.Max()), "≤ 2 s", harness.Verdict(fd.Max() <= 2*time.Second)),
	)
	if holes > 0 {
		t.Notes = append(t.Notes, fmt.Sprintf("first holes: %v", holeList))
	}
	if lostOld+lostWindow > 0 {
		t.Notes = append(t.Notes, fmt.Sprintf("%d of %d kills lost readings; the lost readings were seen on the WebSocket %s to %s before the kill was sent (negative: after; SIGKILL takes effect a moment later): emitted in the last few ms, not yet acknowledged by the broker nor committed to bbolt (group commit every 100 ms), so the outbox's append-only log did not hold them", killsLosing, len(runs), ms(newest), ms(worst)))
	}
	t.Notes = append(t.Notes,
		"lost = seqs a WebSocket client saw from a killed run that no subscriber ever received",
		"holes = seqs from 1 to the newest that the MQTT subscriber (QoS 1, clean session off, subscribed before the first start) never received and no `run` announced as skipped",
		"kill at a random moment 0–500 ms after 300 readings of the run reached the broker; restarted at once with the same argv, env, state dir and ports",
		"first new reading = the first seq beyond everything seen before the kill; it comes after the resent backlog",
	)
	return t, nil
}

func (w *watcher) summaryMax() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.maxSeq
}

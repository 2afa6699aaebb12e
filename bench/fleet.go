package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"pibridge/internal/harness"
)

// fleet is a set of receivers, each read by its own goroutine, counting
// the sample messages it gets and, when asked, their latencies.
type fleet struct {
	rs       []receiver
	counts   []atomic.Int64
	ready    []atomic.Bool
	nready   atomic.Int64
	lat      [][]time.Duration // per receiver; only for seq ≥ minSeq when record
	errs     []error
	record   bool
	minSeq   int64
	stopping atomic.Bool
	wg       sync.WaitGroup
}

// startFleet reads every receiver until stop. With record, it keeps the
// latency (receipt − send, one monotonic clock) of each sample whose seq
// is at least minSeq.
func startFleet(rs []receiver, record bool, minSeq int64) *fleet {
	f := &fleet{
		rs: rs, counts: make([]atomic.Int64, len(rs)), ready: make([]atomic.Bool, len(rs)),
		lat: make([][]time.Duration, len(rs)), errs: make([]error, len(rs)), record: record, minSeq: minSeq,
	}
	for i, r := range rs {
		f.wg.Go(func() {
			for {
				p, err := r.next()
				if err != nil {
					if !f.stopping.Load() {
						f.errs[i] = err
					}
					return
				}
				now := sinceBase()
				seq, sent, ok := parsePayload(p)
				if !ok {
					if bytes.Equal(p, probe) && !f.ready[i].Swap(true) {
						f.nready.Add(1)
					}
					continue
				}
				f.counts[i].Add(1)
				if f.record && seq >= f.minSeq {
					f.lat[i] = append(f.lat[i], time.Duration(now-sent))
				}
			}
		})
	}
	return f
}

// waitReady publishes probes until every receiver has one: the path
// through the subject (its broker connection, its subscriptions) is up.
func (f *fleet) waitReady(ctx context.Context, pub *publisher, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for f.nready.Load() < int64(len(f.rs)) {
		if err := f.firstErr(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d subscribers got a probe within %s", f.nready.Load(), len(f.rs), limit)
		}
		if err := pub.send("lab/probe", probe); err != nil {
			return err
		}
		if err := pub.flush(); err != nil {
			return err
		}
		if err := harness.Sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	// Probes still in flight must not land in the measurement.
	return harness.Sleep(ctx, 200*time.Millisecond)
}

// total is the number of samples received by all.
func (f *fleet) total() int64 {
	var n int64
	for i := range f.counts {
		n += f.counts[i].Load()
	}
	return n
}

// drain waits until want samples have arrived or none has for quiet,
// at most limit.
func (f *fleet) drain(ctx context.Context, want int64, quiet, limit time.Duration) {
	end := time.Now().Add(limit)
	last, lastChange := f.total(), time.Now()
	for time.Now().Before(end) && ctx.Err() == nil {
		n := f.total()
		if n >= want {
			return
		}
		if n != last {
			last, lastChange = n, time.Now()
		} else if time.Since(lastChange) >= quiet {
			return
		}
		time.Sleep(10 * time.Millisecond) // polling counters
	}
}

// stop closes every receiver and waits for the readers.
func (f *fleet) stop() {
	f.stopping.Store(true)
	for _, r := range f.rs {
		r.Close()
	}
	f.wg.Wait()
}

// closedEarly counts receivers whose connection ended before stop.
func (f *fleet) closedEarly() int {
	n := 0
	for _, err := range f.errs {
		if err != nil {
			n++
		}
	}
	return n
}

func (f *fleet) firstErr() error {
	for _, err := range f.errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// latencies merges the recorded latencies of the receivers in idx, sorted.
func (f *fleet) latencies(idx ...int) harness.Dist {
	var all []time.Duration
	for _, i := range idx {
		all = append(all, f.lat[i]...)
	}
	slices.Sort(all)
	return harness.Dist(all)
}

// dialAll connects n subscribers with up to 64 handshakes at once
// (mosquitto answers each upgrade after ~0.2 s).
func dialAll[T any](ctx context.Context, n int, dial func(ctx context.Context, i int) (T, error)) ([]T, error) {
	out := make([]T, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for i := range n {
		if ctx.Err() != nil {
			errs[i] = ctx.Err()
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			out[i], errs[i] = dial(dctx, i)
		})
	}
	wg.Wait()
	var failed []error
	for i, err := range errs {
		if err != nil {
			failed = append(failed, fmt.Errorf("connection %d: %w", i, err))
		}
	}
	if len(failed) > 0 {
		for i, err := range errs {
			if err == nil {
				if c, ok := any(out[i]).(io.Closer); ok {
					c.Close()
				}
			}
		}
		return nil, fmt.Errorf("%d of %d connections failed, first: %w", len(failed), n, failed[0])
	}
	return out, nil
}

// usage is a subject's CPU time over a window and its RSS at the end.
type usage struct {
	cpuPct       float64
	cpu          time.Duration // utime+stime over the window
	rss          int64
	syscr, syscw int64 // read and write system calls over the window (/proc/<pid>/io)
}

type cpuMark struct {
	pid          int
	cpu          time.Duration
	syscr, syscw int64
	t            time.Time
}

func markCPU(pid int) (cpuMark, error) {
	c, err := harness.CPUTime(pid)
	if err != nil {
		return cpuMark{}, err
	}
	r, w, err := harness.Syscalls(pid)
	return cpuMark{pid, c, r, w, time.Now()}, err
}

func (m cpuMark) since() (usage, error) {
	c, err := harness.CPUTime(m.pid)
	if err != nil {
		return usage{}, err
	}
	r, w, err := harness.Syscalls(m.pid)
	if err != nil {
		return usage{}, err
	}
	mem, err := harness.ReadMemory(m.pid)
	if err != nil {
		return usage{}, err
	}
	return usage{cpuPct: 100 * float64(c-m.cpu) / float64(time.Since(m.t)), cpu: c - m.cpu, rss: mem.RSS,
		syscr: r - m.syscr, syscw: w - m.syscw}, nil
}

func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f×", a/b)
}

func kib(b float64) string { return fmt.Sprintf("%.2f KiB", b/1024) }

func rate(perSec float64) string {
	switch {
	case perSec >= 1e6:
		return fmt.Sprintf("%.2fM/s", perSec/1e6)
	case perSec >= 1e3:
		return fmt.Sprintf("%.1fk/s", perSec/1e3)
	}
	return fmt.Sprintf("%.0f/s", perSec)
}

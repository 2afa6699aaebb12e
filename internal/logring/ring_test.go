package logring

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// discard is enabled for every level, unlike slog.DiscardHandler.
type discard struct{ slog.Handler }

func (discard) Enabled(context.Context, slog.Level) bool { return true }
func (d discard) WithAttrs([]slog.Attr) slog.Handler     { return d }
func (d discard) WithGroup(string) slog.Handler          { return d }

var sink = discard{slog.DiscardHandler}

func newLogger(r *Ring, w *bytes.Buffer) *slog.Logger {
	return slog.New(r.Handler(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})))
}

func TestRecords(t *testing.T) {
	const secret = "s3cret-token-0123456789"
	for _, c := range []struct {
		name      string
		log       func(l *slog.Logger)
		part, msg string
		attrs     string
		level     string
	}{
		{"part from With", func(l *slog.Logger) { l.With("part", "mqtt").Info("connected", "broker", "tcp://x:1883") },
			"mqtt", "connected", "broker=tcp://x:1883", "INFO"},
		{"part on the record", func(l *slog.Logger) { l.Warn("slow", "part", "gpio", "pin", "GPIO17") },
			"gpio", "slow", "pin=GPIO17", "WARN"},
		{"no part", func(l *slog.Logger) { l.Error("boom", "err", "a b") }, DefaultPart, "boom", `err="a b"`, "ERROR"},
		{"groups", func(l *slog.Logger) {
			l.With("part", "ws").WithGroup("g").Debug("x", "k", 1, slog.Group("h", "z", true))
		},
			"ws", "x", "g.k=1 g.h.z=true", "DEBUG"},
		{"secret value in the message and an attribute", func(l *slog.Logger) { l.Info("token is "+secret, "value", "x"+secret) },
			DefaultPart, "token is [redacted]", "value=x[redacted]", "INFO"},
		{"secret-looking keys", func(l *slog.Logger) { l.Info("login", "token", "abc", "mqtt_password", "pw", "user", "u") },
			DefaultPart, "login", "token=[redacted] mqtt_password=[redacted] user=u", "INFO"},
		{"token in a URL", func(l *slog.Logger) { l.Info("panel", "url", "http://10.0.0.2:8080/#token=abcdef") },
			DefaultPart, "panel", "url=http://10.0.0.2:8080/#token=[redacted]", "INFO"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := New(0, 0)
			r.Redact(secret)
			var out bytes.Buffer
			c.log(newLogger(r, &out))
			got := r.Since(0, nil)
			if len(got) != 1 {
				t.Fatalf("%d records, want 1", len(got))
			}
			g := got[0]
			if g.Part != c.part || g.Msg != c.msg || g.Attrs != c.attrs || g.Level != c.level || g.Seq != 1 {
				t.Errorf("got %+v, want part %q msg %q attrs %q level %q", g, c.part, c.msg, c.attrs, c.level)
			}
			if out.Len() == 0 {
				t.Error("the wrapped handler got nothing")
			}
			if strings.Contains(out.String(), secret) || strings.Contains(out.String(), "abcdef") {
				t.Errorf("the wrapped handler got a secret: %s", out.String())
			}
		})
	}
}

func TestRedactCleansKeptRecords(t *testing.T) {
	r := New(0, 0)
	var out bytes.Buffer
	l := newLogger(r, &out)
	l.Info("generated", "file", "/x", "value", "late-secret-42")
	r.Redact("late-secret-42", "")
	if s := r.Since(0, nil)[0].Text(); strings.Contains(s, "late-secret-42") {
		t.Errorf("kept record still has the secret: %s", s)
	}
}

func TestBounds(t *testing.T) {
	for _, c := range []struct {
		name                string
		maxRecords, maxSize int
		msgLen, logged      int
		wantRecords         int
	}{
		{"records", 10, 1 << 20, 10, 25, 10},
		{"bytes", 1000, 10 * (recordOverhead + 100 + len("i=24") + len(DefaultPart)), 100, 25, 10},
		{"one huge record is clipped", 1000, 1 << 20, 100 << 10, 1, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := New(c.maxRecords, c.maxSize)
			l := slog.New(r.Handler(sink))
			for i := range c.logged {
				l.Info(strings.Repeat("x", c.msgLen-len(fmt.Sprint(i)))+fmt.Sprint(i), "i", i)
			}
			n, size := r.Len()
			if n != c.wantRecords || size > c.maxSize {
				t.Fatalf("%d records, %d bytes; want %d records, at most %d bytes", n, size, c.wantRecords, c.maxSize)
			}
			recs := r.Since(0, nil)
			if last := recs[len(recs)-1]; last.Seq != uint64(c.logged) || len(last.Msg) > maxField+len("…") {
				t.Errorf("last record seq %d, msg %d bytes", last.Seq, len(last.Msg))
			}
			if len(recs) < 2 {
				return
			}
			if got := r.Since(recs[len(recs)-2].Seq, nil); len(got) != 1 {
				t.Errorf("Since(second last) = %d records", len(got))
			}
		})
	}
}

// blockingHandler blocks in Handle until released: a stalled terminal.
type blockingHandler struct {
	slog.Handler
	entered chan struct{}
	release chan struct{}
}

func (h blockingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.entered <- struct{}{}
	<-h.release
	return nil
}

func TestNoLockAcrossIO(t *testing.T) {
	r := New(0, 0)
	slog.New(r.Handler(sink)).Info("before")
	h := blockingHandler{Handler: sink, entered: make(chan struct{}), release: make(chan struct{})}
	go slog.New(r.Handler(h)).Info("stuck")
	<-h.entered
	done := make(chan int)
	go func() { done <- len(r.Since(0, nil)) }()
	select {
	case n := <-done:
		if n != 1 {
			t.Errorf("%d records while the writer is stuck", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reading the ring waited for a stuck writer")
	}
	close(h.release)
}

func TestWatch(t *testing.T) {
	r := New(0, 0)
	l := slog.New(r.Handler(sink))
	ch, stop := r.Watch()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 100 {
				l.Info("m", "i", i, "j", j)
			}
		}()
	}
	seen := uint64(0)
	for seen < 400 {
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("no wake-up after seq %d", seen)
		}
		for _, rec := range r.Since(seen, nil) {
			if rec.Seq != seen+1 {
				t.Fatalf("seq %d after %d", rec.Seq, seen)
			}
			seen = rec.Seq
		}
	}
	wg.Wait()
	stop()
	stop()
	if w := r.watching.Load(); w != 0 {
		t.Errorf("%d watchers after stop", w)
	}
}

func BenchmarkHandleUnwatched(b *testing.B) {
	r := New(0, 0)
	l := slog.New(r.Handler(sink)).With("part", "mqtt")
	b.ReportAllocs()
	for b.Loop() {
		l.Info("published", "topic", "pibridge/demo/air/temperature", "seq", 42)
	}
}

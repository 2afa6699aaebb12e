// Package testkit holds the small helpers that the tests of several
// packages share, so each does not grow its own copy.
package testkit

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// FreeAddr returns a loopback address nobody listens on right now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// FreePort returns a loopback address nobody listens on right now.
func FreePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// LockedBuffer collects log output written from many goroutines.
type LockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Eventually polls cond until it holds, and fails t with what once within
// has passed: a wait on another goroutine's progress, not a sleep.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(2 * time.Millisecond) // polling with a deadline
	}
}

// Start runs part in the background, as a component's Run runs under the
// bridge, and returns stop: it cancels part's context and waits, at most
// within, for part to return, failing t on an error or a hang. stop is
// idempotent and also runs at cleanup.
func Start(t testing.TB, within time.Duration, part func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- part(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("run: %v", err)
				}
			case <-time.After(within):
				t.Errorf("did not return within %s of its context ending", within)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// Pattern is n bytes that do not repeat within 251, so that a reordered,
// repeated or torn run shows.
func Pattern(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i % 251)
	}
	return p
}

package mqtt

import (
	"bytes"
	"fmt"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	pibridge "pibridge"
)

// TestReconnectAfterKillIsPrompt kills mosquitto while the bridge
// publishes bursts of readings and starts it again at once, 20 times:
// the bridge must never stay disconnected longer than a retry pause and
// paho's write timeout allow.
//
// It guards against a stall the fault suite found: when the connection
// died under a publish, paho's Publish could stay in its select on
// c.obound, which nobody reads once the connection is gone, until paho's
// write timeout (paho v1.5.1 client.go), and connectLoop waits for it
// (pubMu) before it connects. With that timeout as long as
// testTiming.writeTimeout (3 s), as it was, this test failed in about
// half of its runs under -race.
func TestReconnectAfterKillIsPrompt(t *testing.T) {
	m := runMosquitto(t, mosquittoOptions{})
	core, _ := newCore(t)
	c := startDiskClient(t, core, "tcp://"+m.addr, nil)

	// Bursts, as sensors sampled on one tick make them: the publisher is
	// often inside paho's Publish when a write finds the broker gone.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	defer func() { close(stop); wg.Wait() }()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
				for range 11 {
					core.Emit("cpu", pibridge.Number(float64(i%1000)/10), time.Time{})
				}
			}
		}
	}()

	// mosquitto restarts in milliseconds; then a retry pause at most, and
	// paho's write timeout if a publish was stuck on the lost connection.
	bound := testTiming.pahoWrite + testTiming.maxReconnect + 500*time.Millisecond
	if bound >= testTiming.writeTimeout {
		t.Fatalf("bound %s must stay below the old stall, the write timeout %s", bound, testTiming.writeTimeout)
	}

	// The longest time the gate stayed closed, that is, from a lost
	// connection to the next one ready to publish, and the stacks of a
	// stall, taken while it lasts.
	var mu sync.Mutex
	var longest time.Duration
	var stacks string
	go func() {
		defer wg.Done()
		var closedAt time.Time
		for {
			select {
			case <-stop:
				return
			default:
			}
			open, now := c.gate.isOpen(), time.Now()
			switch {
			case !open && closedAt.IsZero():
				closedAt = now
			case !open && now.Sub(closedAt) > bound:
				mu.Lock()
				if stacks == "" {
					stacks = stuckGoroutines()
				}
				mu.Unlock()
			case open && !closedAt.IsZero():
				mu.Lock()
				longest = max(longest, now.Sub(closedAt))
				mu.Unlock()
				closedAt = time.Time{}
			}
			time.Sleep(time.Millisecond) // sampling the gate
		}
	}()
	check := func(when string) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if longest > bound {
			t.Fatalf("%s: disconnected for %s, want at most %s; during the stall:\n%s", when, longest, bound, stacks)
		}
	}
	for round := range 20 {
		from := c.published.Load()
		eventually(t, fmt.Sprintf("round %d: readings flowing", round), func() bool {
			return c.gate.isOpen() && c.published.Load() > from+200
		})
		check(fmt.Sprintf("before round %d", round))
		m.kill()
		m.start()
	}
	eventually(t, "connected after the last restart", c.gate.isOpen)
	check("after the last restart")
	mu.Lock()
	t.Logf("20 kills under load: disconnected for at most %s", longest.Round(time.Millisecond))
	mu.Unlock()
}

// stuckGoroutines returns the stacks of connectLoop and of the goroutines
// inside paho's Publish, for the message of a failed wait.
func stuckGoroutines() string {
	var b bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&b, 2)
	var out []string
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, "(*Client).connectLoop") || strings.Contains(g, "golang.(*client).Publish") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

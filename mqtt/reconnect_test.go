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
// publishes bursts of readings and starts it again at once, 20 times: the
// bridge reconnects every time and publishes on.
//
// When the connection dies under a publish, paho's Publish can stay in its
// select on c.obound (nobody reads it once the connection is gone) until
// paho's write timeout, and connectLoop waits for it (pubMu) before it
// connects: so paho's write timeout must stay short beside ours. How
// prompt the reconnect is, is measured by the fault suite, not asserted
// here.
func TestReconnectAfterKillIsPrompt(t *testing.T) {
	for _, tm := range []timing{defaultTiming, testTiming} {
		if tm.pahoWrite*2 > tm.writeTimeout {
			t.Fatalf("paho's write timeout %s is not short beside ours, %s", tm.pahoWrite, tm.writeTimeout)
		}
	}
	m := runMosquitto(t, mosquittoOptions{})
	core, _ := newCore(t)
	c := startDiskClient(t, core, "tcp://"+m.addr, nil)

	// Bursts, as sensors sampled on one tick make them: the publisher is
	// often inside paho's Publish when a write finds the broker gone.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
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

	for round := range 20 {
		from := c.published.Load()
		waitPublishing(t, c, fmt.Sprintf("round %d: readings flowing", round), from+200)
		m.kill()
		m.start()
	}
	waitPublishing(t, c, "readings flowing after the last restart", c.published.Load()+200)
}

// waitPublishing waits until c is connected and the broker has
// acknowledged more than n readings; on a timeout it shows the stacks of
// connectLoop and of paho's Publish.
func waitPublishing(t *testing.T, c *Client, what string, n uint64) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for !c.gate.isOpen() || c.published.Load() <= n {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; stacks:\n%s", what, stuckGoroutines())
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
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

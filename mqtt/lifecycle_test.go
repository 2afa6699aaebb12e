package mqtt

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pibridge"
)

// mute is a TCP proxy whose client-to-broker direction can be muted:
// what the client sends is then read and dropped, so the broker never
// answers it while the connection stays up.
type mute struct {
	ln       net.Listener
	target   string
	muted    atomic.Bool
	accepted atomic.Int32
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
}

func newMute(t *testing.T, target string) *mute {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &mute{ln: ln, target: target}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			m.accepted.Add(1)
			up, err := net.Dial("tcp", target)
			if err != nil {
				down.Close()
				continue
			}
			m.mu.Lock()
			m.conns = append(m.conns, down, up)
			m.mu.Unlock()
			m.wg.Add(2)
			go func() {
				defer m.wg.Done()
				defer up.Close()
				defer down.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := down.Read(buf)
					if n > 0 && !m.muted.Load() {
						if _, werr := up.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
			go func() {
				defer m.wg.Done()
				io.Copy(down, up)
				down.Close()
			}()
		}
	}()
	t.Cleanup(m.close)
	return m
}

func (m *mute) addr() string { return m.ln.Addr().String() }

func (m *mute) close() {
	m.ln.Close()
	m.mu.Lock()
	for _, c := range m.conns {
		c.Close()
	}
	m.mu.Unlock()
	m.wg.Wait()
}

// ownGoroutines counts the goroutines running code of this package or of
// paho, with their stacks: what a Client can have started.
func ownGoroutines() (int, string) {
	var b bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&b, 2)
	n := 0
	var out strings.Builder
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, "pibridge/mqtt.(*Client)") || strings.Contains(g, "paho.mqtt.golang") {
			// The test's own goroutines run Run and the proxy, not this.
			if strings.Contains(g, "lifecycle_test.go") {
				continue
			}
			n++
			fmt.Fprintf(&out, "%s\n\n", g)
		}
	}
	return n, out.String()
}

// TestRunReturnsAfterItsGoroutines: when Run returns, nothing it started
// (its loops, the watcher of the connection during `offline`, a browser's
// unsubscribe waiting for the broker's answer, paho's own, a connection
// attempt) still runs, even when the broker does not answer: it stopped
// answering after a browser subscribed, or it accepts connections and
// never answers CONNECT (paho alone would wait connect_timeout for it).
func TestRunReturnsAfterItsGoroutines(t *testing.T) {
	for _, tt := range []struct {
		name      string
		connected bool // the broker answers until the browser has subscribed
	}{
		{"the broker stops answering", true},
		{"the broker never answers CONNECT", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			core, _ := newCore(t)
			m := newMute(t, startEmbedded(t))
			m.muted.Store(!tt.connected)
			c := newTestClient(t, core, "tcp://"+m.addr(), func(c *Config) { c.BridgeAllow = []string{"lab/#"} })
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx) }()
			if tt.connected {
				eventually(t, "connected", c.Connected)
				cancelSub, err := c.Subscribe("lab/#", func(string, []byte, bool) {})
				if err != nil {
					t.Fatal(err)
				}
				m.muted.Store(true)
				cancelSub() // its unsubscribe now waits for an answer that never comes
			} else {
				eventually(t, "a connection attempt", func() bool { return m.accepted.Load() > 0 })
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return")
			}
			// paho's last goroutines may be a moment behind Run; Run is not
			// allowed to leave one that waits for seconds.
			deadline := time.Now().Add(300 * time.Millisecond)
			for {
				n, stacks := ownGoroutines()
				if n == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d goroutines of the client still run after Run returned:\n%s", n, stacks)
				}
				runtime.Gosched()
				time.Sleep(5 * time.Millisecond) // polling with a deadline
			}
		})
	}
}

// TestMetaFollowsClock: meta says whether the board's clock is
// synchronised, and is published again when that changes, as when NTP
// sets a Pi's clock minutes after boot.
func TestMetaFollowsClock(t *testing.T) {
	var synced atomic.Bool
	core, err := pibridge.New(pibridge.Options{
		Device: pibridge.Device{ID: "dev1", Name: "Test Pi"}, Signals: testSignals, StateDir: t.TempDir(),
		KernelClock: func() (bool, bool, time.Duration) { return synced.Load(), true, 0 },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { core.Close() })
	addr := startEmbedded(t)
	w := watch(t, addr, base+"/meta")
	startClient(t, core, "tcp://"+addr, nil)
	has := func(want string) func([]msg) bool {
		return func(ms []msg) bool {
			return len(ms) > 0 && strings.Contains(ms[len(ms)-1].Payload, want)
		}
	}
	w.waitFor("meta saying the clock is not synchronised", has(`"clock":{"synced":false}`))
	synced.Store(true)
	w.waitFor("meta again, saying it is", has(`"clock":{"synced":true}`))
}

package ws

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"pibridge"
)

// rawDial opens a WebSocket with as little client-side state as possible
// (a bare socket), reads the hello, and returns the socket.
func rawDial(t testing.TB, addr string) net.Conn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", addr)
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	if err != nil || !strings.Contains(status, " 101 ") {
		t.Fatalf("handshake: %q %v", status, err)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\r\n" {
			break
		}
	}
	var hdr [2]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		t.Fatal(err)
	}
	n := int64(hdr[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		io.ReadFull(br, l[:])
		n = int64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		io.ReadFull(br, l[:])
		n = int64(binary.BigEndian.Uint64(l[:]))
	}
	if _, err := io.CopyN(io.Discard, br, n); err != nil {
		t.Fatal(err)
	}
	if br.Buffered() > 0 {
		t.Fatal("more than the hello arrived")
	}
	c.SetDeadline(time.Time{})
	return c
}

// deepPass subscribes on a deep stack, as paho's Subscribe and the wait
// for the broker's answer do.
type deepPass struct{ *fakePass }

func (p deepPass) Subscribe(filter string, deliver func(string, []byte, bool)) (func(), error) {
	var cancel func()
	var err error
	burnStack(40, func() { cancel, err = p.fakePass.Subscribe(filter, deliver) })
	return cancel, err
}

// burnStack calls f under n frames of about 256 bytes each.
//
//go:noinline
func burnStack(n int, f func()) byte {
	var pad [256]byte
	if n == 0 {
		f()
		return pad[0]
	}
	pad[n%256] = byte(n)
	return burnStack(n-1, f) + pad[(n+1)%256]
}

// rawSubscribe sends a subscribe to filter on a raw connection and reads
// frames up to its ack.
func rawSubscribe(t testing.TB, c net.Conn, filter string) {
	t.Helper()
	msg := fmt.Sprintf(`{"type":"subscribe","id":"s","topics":[%q]}`, filter)
	// A client frame is masked; a zero key leaves the payload as it is.
	frame := append([]byte{0x81, 0x80 | byte(len(msg)), 0, 0, 0, 0}, msg...)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(frame); err != nil {
		t.Fatal(err)
	}
	for {
		_, b := serverFrame(t, c)
		if strings.Contains(b, `"type":"ack"`) {
			if !strings.Contains(b, `"ok":true`) {
				t.Fatalf("subscribe refused: %s", b)
			}
			return
		}
	}
}

func inUse() (heap, stack uint64) {
	var ms runtime.MemStats
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, ms.StackInuse
}

// TestIdleConnectionFootprint measures what an idle WebSocket client costs
// the server: heap and goroutine stacks, with a bare client socket (a few
// hundred bytes) counted in.
// A subscribed one (it has sent one subscribe and read the ack) costs
// the same bound: handling a command must not leave the idle connection
// with a reader.
func TestIdleConnectionFootprint(t *testing.T) {
	if raceEnabled || testing.Short() {
		t.Skip("memory is only meaningful without -race and -short")
	}
	// The collector shrinks a grown stack by half per cycle, and inUse
	// runs three; the bridge, idle, runs about one a minute. The test
	// runs itself again with shrinking off, so that a stack grown by a
	// command is seen as the idle bridge keeps it.
	if !strings.Contains(os.Getenv("GODEBUG"), "gcshrinkstackoff=1") {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestIdleConnectionFootprint$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "GODEBUG=gcshrinkstackoff=1")
		out, err := cmd.CombinedOutput()
		t.Logf("with GODEBUG=gcshrinkstackoff=1:\n%s", out)
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	for _, subscribed := range []bool{false, true} {
		t.Run(map[bool]string{false: "hello only", true: "subscribed"}[subscribed], func(t *testing.T) {
			idleFootprint(t, subscribed)
		})
	}
}

func idleFootprint(t *testing.T, subscribed bool) {
	pass := newFakePass()
	h := newHarness(t, setup{
		config: func(c *Config) { c.MaxClients = 1100 },
		tune:   func(t *tuning) { t.idleAfter = 20 * time.Millisecond },
		options: func(o *Options) {
			o.Passthrough = deepPass{pass}
			o.BridgeAllow = []string{"home/+/temp"}
		},
	})
	h.emitSync("air.temperature", pibridge.Number(21))
	addr := strings.TrimPrefix(h.ts.URL, "http://")
	dial := func() net.Conn {
		c := rawDial(t, addr)
		if subscribed {
			rawSubscribe(t, c, "home/+/temp")
		}
		return c
	}
	dial().Close() // warm up pools and code paths
	waitFor(t, "no clients", func() bool { return h.srv.Clients() == 0 })

	const n = 1000
	heap0, stack0 := inUse()
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = dial()
	}
	waitFor(t, "all clients", func() bool { return h.srv.Clients() == n })
	if idlePolling {
		waitFor(t, "every reader to park", func() bool { return parkedReaders(h) == n })
	}
	if subscribed && len(pass.filters()) != n {
		t.Fatalf("%d subscriptions at the broker side, want %d", len(pass.filters()), n)
	}
	heap1, stack1 := inUse()
	// WS_HEAP_PROFILE=FILE saves what the connections hold, for pprof.
	if f := os.Getenv("WS_HEAP_PROFILE"); f != "" {
		out, _ := os.Create(f)
		pprof.WriteHeapProfile(out)
		out.Close()
	}
	heap, stack := float64(int64(heap1-heap0))/n, float64(int64(stack1-stack0))/n
	per := heap + stack
	t.Logf("%.1f KiB per idle connection: %.1f KiB heap, %.1f KiB goroutine stacks", per/1024, heap/1024, stack/1024)
	// About 2.5 KiB of heap (the client's socket included) and, once the
	// reader has parked, no stack but the runtime's spare ones: a reader
	// kept for the connection's life (2 KiB, 4 KiB if grown) fails this.
	// Without epoll the reader stays, with its 2 KiB.
	bound := 3.6
	if !idlePolling {
		bound = 6.5
	}
	if per > bound*1024 {
		t.Errorf("an idle connection costs %.1f KiB, want at most %.1f KiB", per/1024, bound)
	}
	for _, c := range conns {
		c.Close()
	}
}

// TestBroadcastAllocations guards the per-reading cost: one frame for all
// clients (~150 bytes; gorilla's PreparedMessage was 5.8 KB in 9 pieces),
// nothing per client but, now and then, a goroutine for a writer that had
// gone idle.
func TestBroadcastAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are only meaningful without -race")
	}
	h := newHarness(t, setup{})
	addr := strings.TrimPrefix(h.ts.URL, "http://")
	const clients, readings = 5, 300
	var received, target atomic.Int64
	all := make(chan struct{}, 1)
	for range clients {
		conn := rawDial(t, addr)
		t.Cleanup(func() { conn.Close() })
		go countFrames(conn, func() {
			if received.Add(1) == target.Load() {
				all <- struct{}{}
			}
		})
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range readings {
		target.Store(int64(clients * (i + 1)))
		h.core.Emit("air.temperature", pibridge.Number(float64(i)), time.Time{})
		select {
		case <-all:
		case <-time.After(10 * time.Second):
			t.Fatalf("reading %d did not reach every client", i)
		}
	}
	runtime.ReadMemStats(&after)
	per := float64(after.Mallocs-before.Mallocs) / readings
	perBytes := float64(after.TotalAlloc-before.TotalAlloc) / readings
	t.Logf("%.1f allocations, %.0f bytes per reading broadcast to %d clients", per, perBytes, clients)
	if per > 8 || perBytes > 2<<10 {
		t.Errorf("%.1f allocations, %.0f bytes per broadcast: want about 4 and 500 bytes", per, perBytes)
	}
}

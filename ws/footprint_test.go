package ws

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
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
func TestIdleConnectionFootprint(t *testing.T) {
	if raceEnabled || testing.Short() {
		t.Skip("memory is only meaningful without -race and -short")
	}
	h := newHarness(t, setup{config: func(c *Config) { c.MaxClients = 1000 }})
	h.emitSync("air.temperature", pibridge.Number(21))
	addr := strings.TrimPrefix(h.ts.URL, "http://")
	rawDial(t, addr).Close() // warm up pools and code paths
	waitFor(t, "no clients", func() bool { return h.srv.Clients() == 0 })

	const n = 500
	heap0, stack0 := inUse()
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = rawDial(t, addr)
	}
	waitFor(t, "all clients", func() bool { return h.srv.Clients() == n })
	heap1, stack1 := inUse()
	// WS_HEAP_PROFILE=FILE saves what the connections hold, for pprof.
	if f := os.Getenv("WS_HEAP_PROFILE"); f != "" {
		out, _ := os.Create(f)
		pprof.WriteHeapProfile(out)
		out.Close()
	}
	heap, stack := float64(heap1-heap0)/n, float64(stack1-stack0)/n
	per := heap + stack
	t.Logf("%.1f KiB per idle connection: %.1f KiB heap, %.1f KiB goroutine stacks", per/1024, heap/1024, stack/1024)
	// About 3.3 KiB of heap (the client's socket included) and the
	// reader's 2 KiB stack; a reader whose stack has grown to 4 KiB (see
	// client.serve) fails this.
	if per > 6.5*1024 {
		t.Errorf("an idle connection costs %.1f KiB, want at most 6.5 KiB", per/1024)
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

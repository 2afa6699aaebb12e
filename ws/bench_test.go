package ws

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"pibridge"
)

var benchSizes = []int{1, 10, 100, 1000}

// BenchmarkBroadcast measures the hub alone: one reading handed over by the
// core, framed once and queued for N clients (mailboxes without sockets).
// allocs/op is the cost of one broadcast; it must not grow with N.
func BenchmarkBroadcast(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			h := newHarness(b, setup{config: func(c *Config) { c.MaxClients = n }})
			hub := newHub(h.core.Signals())
			hub.start(nil)
			for range n {
				c := &client{mb: newMailbox(len(testSignals), 64, 1<<20)}
				if _, ok := hub.join(c, nil); !ok {
					b.Fatal("join failed")
				}
			}
			names := []string{"air.temperature", "air.humidity", "fan"}
			ts := time.Now()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				hub.Deliver(pibridge.Reading{Name: names[i%3], Value: pibridge.Number(float64(i)), Unit: "°C", TS: ts, Seq: uint64(i + 1)})
			}
		})
	}
}

// BenchmarkFanout measures readings delivered over real loopback sockets
// to N gorilla clients. An op is one reading emitted by the core and
// received by every client (lock-step, so nothing is coalesced): ns/op is
// the time for a reading to reach all N, frames/s the deliveries per
// second. The clients are bare sockets that count frame headers, so
// allocs/op is the server's (and the core's) per broadcast.
func BenchmarkFanout(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) { benchFanout(b, n) })
	}
}

func benchFanout(b *testing.B, n int) {
	h := newHarness(b, setup{config: func(c *Config) { c.MaxClients = n }})
	var received, target atomic.Int64
	all := make(chan struct{}, 1)
	addr := strings.TrimPrefix(h.ts.URL, "http://")
	for range n {
		conn := rawDial(b, addr)
		b.Cleanup(func() { conn.Close() })
		go countFrames(conn, func() {
			if received.Add(1) == target.Load() {
				all <- struct{}{}
			}
		})
	}
	names := []string{"air.temperature", "air.humidity", "fan"}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		target.Store(int64(n) * int64(i+1))
		h.core.Emit(names[i%3], pibridge.Number(float64(i%100)/100), time.Time{})
		<-all // a lost frame hangs here until go test's -timeout reports it
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(received.Load())/elapsed.Seconds(), "frames/s")
	if s := h.srv.SlowClosed(); s != 0 {
		b.Errorf("%d clients closed as slow", s)
	}
}

// countFrames reads unmasked server frames from conn and calls frame for
// each one, until conn fails.
func countFrames(conn net.Conn, frame func()) {
	buf := make([]byte, 32<<10)
	var have int   // bytes in buf
	var skip int64 // payload bytes of the current frame still to come
	for {
		n, err := conn.Read(buf[have:])
		if err != nil {
			return
		}
		have += n
		p := 0
		for {
			if skip > 0 {
				d := min(skip, int64(have-p))
				skip -= d
				p += int(d)
				if skip > 0 {
					break
				}
				frame()
			}
			if have-p < 2 {
				break
			}
			hdr, size := 2, int64(buf[p+1]&0x7f)
			switch size {
			case 126:
				hdr = 4
			case 127:
				hdr = 10
			}
			if have-p < hdr {
				break
			}
			switch hdr {
			case 4:
				size = int64(binary.BigEndian.Uint16(buf[p+2:]))
			case 10:
				size = int64(binary.BigEndian.Uint64(buf[p+2:]))
			}
			p += hdr
			if size == 0 {
				frame()
				continue
			}
			skip = size
		}
		have = copy(buf, buf[p:have])
	}
}

// BenchmarkFanoutStream is the live stream: readings of six signals are
// emitted one after another, yielding the CPU every six, without waiting
// for any client, to 100 bare-socket clients that count what arrives. A
// client's mailbox keeps the newest reading per signal and its writer
// sends what has gathered in one write, so deliveries/s (frames received,
// all clients) is the figure; an op is one reading emitted. Run it with
// -cpu 1 for the one-core figure: the clients share that core.
func BenchmarkFanoutStream(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) { benchFanoutStream(b, n) })
	}
}

func benchFanoutStream(b *testing.B, n int) {
	h := newHarness(b, setup{config: func(c *Config) { c.MaxClients = n }})
	addr := strings.TrimPrefix(h.ts.URL, "http://")
	var received atomic.Int64
	var done sync.WaitGroup
	for range n {
		conn := rawDial(b, addr)
		b.Cleanup(func() { conn.Close() })
		done.Add(1)
		go func() {
			finished := false
			readFrames(conn, func(payload []byte) {
				received.Add(1)
				if !finished && bytes.Contains(payload, []byte(`"name":"door"`)) { // the marker that ends the stream
					finished = true
					done.Done()
				}
			})
		}()
	}
	names := []string{"air.temperature", "air.humidity", "fan", "led", "relay", "stuck"}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		h.core.Emit(names[i%len(names)], pibridge.Number(float64(i%100)/100), time.Time{})
		if i%len(names) == len(names)-1 {
			runtime.Gosched()
		}
	}
	h.emit("door", pibridge.Bool(true))
	done.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(received.Load())/elapsed.Seconds(), "deliveries/s")
	if s := h.srv.SlowClosed(); s != 0 {
		b.Errorf("%d clients closed as slow", s)
	}
}

// readFrames reads unmasked server frames from conn and calls frame with
// each payload (valid until frame returns), until conn fails.
func readFrames(conn net.Conn, frame func(payload []byte)) {
	buf := make([]byte, 64<<10)
	have := 0
	for {
		n, err := conn.Read(buf[have:])
		if err != nil {
			return
		}
		have += n
		p := 0
		for have-p >= 2 {
			hdr, size := 2, int(buf[p+1]&0x7f)
			switch size {
			case 126:
				hdr = 4
			case 127:
				hdr = 10
			}
			if have-p < hdr {
				break
			}
			switch hdr {
			case 4:
				size = int(binary.BigEndian.Uint16(buf[p+2:]))
			case 10:
				size = int(binary.BigEndian.Uint64(buf[p+2:]))
			}
			if have-p < hdr+size {
				break
			}
			frame(buf[p+hdr : p+hdr+size])
			p += hdr + size
		}
		have = copy(buf, buf[p:have])
	}
}

// BenchmarkEventLatency measures a reading's way from core.Emit to a frame
// read by each of N bare-socket clients over loopback, one reading at a
// time: p50 and p99 of (receipt − emit) over every delivery, on the
// monotonic clock. Run it with -cpu 1 for the one-core figure (the clients
// share that core, so at 100 clients the last one's figure includes the
// others' reads).
func BenchmarkEventLatency(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) { benchEventLatency(b, n) })
	}
}

func benchEventLatency(b *testing.B, n int) {
	h := newHarness(b, setup{config: func(c *Config) { c.MaxClients = n }})
	addr := strings.TrimPrefix(h.ts.URL, "http://")
	var emitted atomic.Int64 // monotonic ns since base of the reading in flight
	base := time.Now()
	lat := make([][]time.Duration, n)
	var mu sync.Mutex
	remaining := 0
	all := make(chan struct{}, 1)
	for k := range n {
		conn := rawDial(b, addr)
		b.Cleanup(func() { conn.Close() })
		lat[k] = make([]time.Duration, 0, b.N)
		go readFrames(conn, func([]byte) {
			d := time.Since(base) - time.Duration(emitted.Load())
			lat[k] = append(lat[k], d) // this client's goroutine alone
			mu.Lock()
			remaining--
			last := remaining == 0
			mu.Unlock()
			if last {
				all <- struct{}{}
			}
		})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		mu.Lock()
		remaining = n
		mu.Unlock()
		emitted.Store(int64(time.Since(base)))
		h.core.Emit("air.temperature", pibridge.Number(float64(i%100)), time.Time{})
		<-all
	}
	b.StopTimer()
	var every []time.Duration
	for _, l := range lat {
		every = append(every, l...)
	}
	slices.Sort(every)
	q := func(p float64) float64 { return float64(every[int(p*float64(len(every)-1))].Nanoseconds()) / 1e3 }
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
}

// BenchmarkCommand is one client's command round trip in process: a set
// over a real gorilla connection, until its echoed reading and its ack are
// read. allocs/op counts both sides (the client's reads included).
func BenchmarkCommand(b *testing.B) {
	h := newHarness(b, setup{})
	c := h.dial(dialOpt{})
	msg := []byte(`{"type":"set","id":"c","name":"led","value":"toggle"}`)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := c.conn.WriteMessage(websocket.TextMessage, msg); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < 2; got++ { // the echo, then the ack
			if _, _, err := c.conn.NextReader(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkPassthroughFanout measures MQTT passthrough: one message from
// the (fake) broker side delivered to N browsers subscribed to the same
// filter, over real loopback sockets, lock-step like BenchmarkFanout. The
// clients subscribe with gorilla, then are read as bare sockets that count
// frame headers, so allocs/op is the server's per message (divide by N for
// per message per client).
func BenchmarkPassthroughFanout(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) { benchPassthroughFanout(b, n) })
	}
}

func benchPassthroughFanout(b *testing.B, n int) {
	pass := newFakePass()
	h := bridgeHarness(b, pass, setup{config: func(c *Config) { c.MaxClients = n }})
	var received, target atomic.Int64
	all := make(chan struct{}, 1)
	for range n {
		c := h.dial(dialOpt{})
		if got := c.exchange(`{"type":"subscribe","id":"s","topics":["home/+/temp"]}`); len(got) != 1 || !*got[0].OK {
			b.Fatal(got)
		}
		// Nothing else is queued for it: gorilla's reader holds no
		// buffered bytes, and the socket can be read bare from here,
		// without the deadline exchange set.
		nc := c.conn.NetConn()
		nc.SetReadDeadline(time.Time{})
		go countFrames(nc, func() {
			if received.Add(1) == target.Load() {
				all <- struct{}{}
			}
		})
	}
	// Each message differs (a counter), as real ones do: equal messages
	// would share one frame and hide the cost of framing.
	payload := make([]byte, 0, 24)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		target.Store(int64(n) * int64(i+1))
		payload = strconv.AppendInt(append(payload[:0], "21."...), int64(i), 10)
		pass.deliverAll("home/kitchen/temp", payload)
		<-all // a lost frame hangs here until go test's -timeout reports it
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(received.Load())/elapsed.Seconds(), "frames/s")
	if s := h.srv.SlowClosed(); s != 0 {
		b.Errorf("%d clients closed as slow", s)
	}
}

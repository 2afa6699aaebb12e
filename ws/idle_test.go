package ws

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// clientFrame is a masked client frame (a zero key leaves the payload as
// it is).
func clientFrame(fin bool, op byte, payload string) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	f := []byte{b0}
	if n := len(payload); n < 126 {
		f = append(f, 0x80|byte(n))
	} else {
		f = append(f, 0x80|126, byte(n>>8), byte(n))
	}
	return append(append(f, 0, 0, 0, 0), payload...)
}

// serverFrame reads one unmasked frame.
func serverFrame(t testing.TB, c net.Conn) (op byte, payload string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatal(err)
	}
	n := int(hdr[1] & 0x7f)
	if n == 126 {
		var l [2]byte
		io.ReadFull(c, l[:])
		n = int(binary.BigEndian.Uint16(l[:]))
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	return hdr[0] & 0x0f, string(b)
}

// frameWith reads frames until one of opcode op contains want.
func frameWith(t *testing.T, c net.Conn, op byte, want string) string {
	t.Helper()
	for {
		got, p := serverFrame(t, c)
		if got == op && strings.Contains(p, want) {
			return p
		}
	}
}

func write(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

func parkedReaders(h *harness) int {
	<-h.srv.running
	if h.srv.idle == nil {
		return 0
	}
	return h.srv.idle.parked()
}

// TestParkedReader: a connection silent for idleAfter holds no reader
// goroutine, and everything a reader does still happens to it: commands
// are answered (split across frames and pauses too), pings ponged, its
// close frame answered, a dead one dropped after pongWait, and shutdown
// reaches it.
func TestParkedReader(t *testing.T) {
	if !idlePolling {
		t.Skip("readers park only where epoll is")
	}
	const idle = 30 * time.Millisecond
	history := `{"type":"history","id":"h1","name":"air.temperature","since":"1ms"}`
	tests := []struct {
		name string
		tune func(*tuning)
		run  func(t *testing.T, h *harness, c net.Conn)
	}{
		{"command", nil, func(t *testing.T, h *harness, c net.Conn) {
			write(t, c, clientFrame(true, 1, history))
			frameWith(t, c, 1, `"id":"h1"`)
		}},
		{"a frame split by a pause", nil, func(t *testing.T, h *harness, c net.Conn) {
			f := clientFrame(true, 1, history)
			write(t, c, f[:1])
			time.Sleep(5 * idle) // the reader must not park inside the frame
			if n := parkedReaders(h); n != 0 {
				t.Errorf("%d readers parked inside a frame", n)
			}
			write(t, c, f[1:9])
			time.Sleep(5 * idle)
			write(t, c, f[9:])
			frameWith(t, c, 1, `"id":"h1"`)
		}},
		{"a message in fragments, a ping between", nil, func(t *testing.T, h *harness, c net.Conn) {
			write(t, c, clientFrame(false, 1, history[:20]))
			time.Sleep(5 * idle)
			write(t, c, clientFrame(true, 9, "p0"))
			frameWith(t, c, 10, "p0")
			time.Sleep(5 * idle)
			if n := parkedReaders(h); n != 0 {
				t.Errorf("%d readers parked inside a message", n)
			}
			write(t, c, clientFrame(true, 0, history[20:]))
			frameWith(t, c, 1, `"id":"h1"`)
		}},
		{"ping", nil, func(t *testing.T, h *harness, c net.Conn) {
			write(t, c, clientFrame(true, 9, "p1"))
			frameWith(t, c, 10, "p1")
		}},
		{"a pong parks the reader again at once", func(tu *tuning) { tu.idleAfter = time.Hour }, func(t *testing.T, h *harness, c net.Conn) {
			parks := h.srv.idle.parks.Load()
			write(t, c, clientFrame(true, 10, "p2"))
			// Pongs come from every connection at once, every pingPeriod:
			// their readers must not wait idleAfter each.
			waitFor(t, "the reader to park again", func() bool {
				return h.srv.idle.parks.Load() > parks && parkedReaders(h) == 1
			})
		}},
		{"the client closes", nil, func(t *testing.T, h *harness, c net.Conn) {
			write(t, c, clientFrame(true, 8, "\x03\xe8bye"))
			if _, p := serverFrame(t, c); p[:2] != "\x03\xe8" {
				t.Errorf("close reply %q, want code 1000", p)
			}
			waitFor(t, "the client to be gone", func() bool { return h.srv.Clients() == 0 })
		}},
		{"a silent client is dropped", func(tu *tuning) {
			tu.pongWait, tu.pingPeriod = 400*time.Millisecond, time.Hour
		}, func(t *testing.T, h *harness, c net.Conn) {
			// Parked twice: the poller still sweeps, and only every pongWait/10.
			write(t, c, clientFrame(true, 1, history))
			frameWith(t, c, 1, `"id":"h1"`)
			waitFor(t, "the reader to park again", func() bool { return parkedReaders(h) == 1 })
			start, sweeps := time.Now(), h.srv.idle.sweeps.Load()
			waitFor(t, "the silent client to be dropped", func() bool { return h.srv.Clients() == 0 })
			if n, most := h.srv.idle.sweeps.Load()-sweeps, 2+int64(time.Since(start)/(40*time.Millisecond)); n > most {
				t.Errorf("%d sweeps in %s, want at most %d", n, time.Since(start), most)
			}
		}},
		{"shutdown", nil, func(t *testing.T, h *harness, c net.Conn) {
			go func() {
				frameWith(t, c, 8, "\x03\xe9") // 1001 going away
				write(t, c, clientFrame(true, 8, "\x03\xe9"))
			}()
			start := time.Now()
			h.stop()
			if d := time.Since(start); d > h.srv.tune.closeGrace {
				t.Errorf("shutdown took %s: the parked client's reply was not read", d)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, setup{tune: func(tu *tuning) {
				tu.idleAfter = idle
				tu.closeGrace = 5 * time.Second
				if tt.tune != nil {
					tt.tune(tu)
				}
			}})
			c := rawDial(t, strings.TrimPrefix(h.ts.URL, "http://"))
			defer c.Close()
			waitFor(t, "the reader to park", func() bool { return parkedReaders(h) == 1 })
			tt.run(t, h, c)
			if h.srv.Clients() == 1 {
				waitFor(t, "the reader to park again", func() bool { return parkedReaders(h) == 1 })
			}
		})
	}
}

// TestCloseRacingPark: a close that wakes a parking reader before its
// socket is armed starts the next reader, which sees the close and
// finishes; the parking reader, whose arming then fails, must end, not
// read on beside it and finish the client a second time.
func TestCloseRacingPark(t *testing.T) {
	if !idlePolling {
		t.Skip("readers park only where epoll is")
	}
	h := newHarness(t, setup{})
	var once sync.Once
	parkHook = func(w *idleConn) {
		once.Do(func() {
			c := w.c
			c.stay() // as writeFailed does: the next reader starts
			c.conn.Close()
			waitFor(t, "the woken reader to finish", func() bool { return c.gone.Load() })
		})
	}
	defer func() { parkHook = nil }()
	addr := strings.TrimPrefix(h.ts.URL, "http://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The close may come before the hello: the handshake alone.
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", addr)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("the server did not close the connection: %v", err)
	}
	waitFor(t, "the client to be gone", func() bool { return h.srv.Clients() == 0 })
	h.stop()
	if n := h.srv.nconns.Load(); n != 0 {
		t.Errorf("%d connections counted after shutdown, want 0", n)
	}
}

package ws

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"pibridge"
)

// wireFrame is one server frame as it was on the wire.
type wireFrame struct {
	op      byte
	payload []byte
}

// readWireFrame reads one unmasked server frame.
func readWireFrame(br *bufio.Reader) (wireFrame, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return wireFrame{}, err
	}
	n := uint64(hdr[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return wireFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return wireFrame{}, err
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	if hdr[1]&0x80 != 0 || n > 1<<20 {
		return wireFrame{}, fmt.Errorf("not a server frame: header % x, length %d", hdr, n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(br, p); err != nil {
		return wireFrame{}, err
	}
	return wireFrame{op: hdr[0] & 0x0f, payload: p}, nil
}

// masked frames a client message (payload under 126 bytes).
func masked(op byte, payload []byte) []byte {
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	f := []byte{finBit | op, 0x80 | byte(len(payload))}
	f = append(f, key[:]...)
	for i, b := range payload {
		f = append(f, b^key[i%4])
	}
	return f
}

func maskedText(s string) []byte { return masked(opText, []byte(s)) }

// maskedClose is a client's close frame with code 1000.
func maskedClose() []byte { return masked(opClose, []byte{0x03, 0xe8}) }

// result is what one client saw after its close frame.
type closeResult struct {
	after  []byte // opcodes of the frames after the first close frame
	closes int
	code   int
	err    error
}

// TestCloseReplyIsTheLastFrame: a client closes while its writer is busy
// with a stream of readings (and its socket is full, so a write is in
// progress). On the wire, the server's reply to the close is exactly one
// close frame, echoing the code, and nothing follows it: the reply goes
// through the connection's one writer, never beside it.
func TestCloseReplyIsTheLastFrame(t *testing.T) {
	const clients = 24
	h := newHarness(t, setup{
		config: func(c *Config) { c.MaxClients = clients },
		tune:   func(t *tuning) { smallSendBuffer(t); t.writeWait = 5 * time.Second },
	})
	addr := strings.TrimPrefix(h.ts.URL, "http://")

	stop := make(chan struct{})
	var emitters sync.WaitGroup
	emitters.Add(1)
	go func() {
		defer emitters.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			for _, name := range []string{"air.temperature", "air.humidity", "fan"} {
				h.core.Emit(name, pibridge.Number(float64(i%1000)/1000), time.Time{})
			}
		}
	}()
	defer func() { close(stop); emitters.Wait() }()

	results := make(chan closeResult, clients)
	// Rounds, because the moment the close arrives is up to the scheduler.
	for range 3 {
		closeRound(t, addr, clients, results)
	}
}

func closeRound(t *testing.T, addr string, clients int, results chan closeResult) {
	for range clients {
		go func() {
			var r closeResult
			defer func() { results <- r }()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				r.err = err
				return
			}
			defer c.Close()
			c.(*net.TCPConn).SetReadBuffer(4096)
			c.SetDeadline(time.Now().Add(20 * time.Second))
			fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", addr)
			br := bufio.NewReaderSize(c, 4096)
			status, err := br.ReadString('\n')
			if err != nil || !strings.Contains(status, " 101 ") {
				r.err = fmt.Errorf("handshake: %q %v", status, err)
				return
			}
			for line := ""; line != "\r\n"; {
				if line, err = br.ReadString('\n'); err != nil {
					r.err = err
					return
				}
			}
			// Read a while, then stop reading so that the server's writer
			// blocks in a write, and close while it is busy.
			for range 50 {
				if _, err := readWireFrame(br); err != nil {
					r.err = err
					return
				}
			}
			// Requests whose replies (errors) make the writer's next batch
			// several writes long, then the close right behind them.
			var burst []byte
			for i := range 300 {
				burst = append(burst, maskedText(fmt.Sprintf(`{"type":"nope","id":"r%d"}`, i))...)
			}
			if _, err := c.Write(append(burst, maskedClose()...)); err != nil {
				r.err = err
				return
			}
			// Not reading a moment longer keeps the writer blocked while the
			// server reads the close: it widens the window the test is
			// about; the result does not depend on it.
			time.Sleep(10 * time.Millisecond)
			for {
				f, err := readWireFrame(br)
				if err != nil {
					if err != io.EOF && r.closes == 0 {
						r.err = err
					}
					return
				}
				if r.closes > 0 {
					r.after = append(r.after, f.op)
				}
				if f.op == opClose {
					if r.closes == 0 && len(f.payload) >= 2 {
						r.code = int(binary.BigEndian.Uint16(f.payload))
					}
					r.closes++
				}
			}
		}()
	}
	for range clients {
		r := <-results
		switch {
		case r.err != nil:
			t.Error(r.err)
		case r.closes == 0:
			t.Error("no close frame came back")
		case len(r.after) > 0:
			t.Errorf("%d frames followed the close frame on the wire (opcodes %v)", len(r.after), r.after)
		case r.code != 1000:
			t.Errorf("close reply code %d, want the client's 1000 echoed", r.code)
		}
	}
}

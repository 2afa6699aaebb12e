package ws

import (
	"bytes"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"pibridge"
)

func TestSealHeaders(t *testing.T) {
	for _, tc := range []struct {
		n    int
		head []byte
	}{
		{0, []byte{0x81, 0}},
		{125, []byte{0x81, 125}},
		{126, []byte{0x81, 126, 0, 126}},
		{0xffff, []byte{0x81, 126, 0xff, 0xff}},
		{0x10000, []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	} {
		payload := bytes.Repeat([]byte{'x'}, tc.n)
		f := textFrame(append(newFrame(tc.n), payload...))
		if !bytes.Equal(f[:len(tc.head)], tc.head) || len(f) != len(tc.head)+tc.n {
			t.Errorf("%d bytes: header % x, length %d", tc.n, f[:min(len(f), 10)], len(f))
		}
		if !bytes.Equal(framePayload(f), payload) {
			t.Errorf("%d bytes: payload differs", tc.n)
		}
	}
	if p := controlFrame(opPong, "hi"); !bytes.Equal(p, []byte{0x8a, 2, 'h', 'i'}) {
		t.Errorf("pong % x", p)
	}
}

// writeCounter counts the Write calls on the sockets a listener accepts:
// the server's writes, as its clients never see their boundaries.
type writeCounter struct {
	net.Listener
	writes atomic.Int64
}

func (l *writeCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: c, n: &l.writes}, nil
}

type countedConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countedConn) Write(p []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(p)
}

// What a client's mailbox holds goes out in one write, and a real client
// still reads each frame, in order: the readings, then the replies.
func TestBatchIsOneWriteOfWholeFrames(t *testing.T) {
	var g gate
	var wc *writeCounter
	h := newHarness(t, setup{
		tune: func(t *tuning) { t.beforeTake = g.wait },
		listener: func(l net.Listener) net.Listener {
			wc = &writeCounter{Listener: l}
			return wc
		},
	})
	g.shut()
	c := h.dial(dialOpt{})
	seqs := []uint64{
		h.emit("air.temperature", pibridge.Number(20)),
		h.emit("air.humidity", pibridge.Number(50)),
		h.emit("fan", pibridge.Number(0.5)),
	}
	for i := range 3 {
		c.send(fmt.Sprintf(`{"type":"nope","id":"e%d"}`, i))
	}
	mb := h.srv.hub.connected()[0].mb
	waitFor(t, "three readings and three replies queued", func() bool {
		mb.mu.Lock()
		defer mb.mu.Unlock()
		return mb.readings.len() == 3 && len(mb.replies) == 3
	})
	before := wc.writes.Load()
	g.open()
	for _, seq := range seqs {
		if f := c.next(); f.Type != "reading" || f.Seq != seq {
			t.Fatalf("got %s, want the reading with seq %d", f, seq)
		}
	}
	for i := range 3 {
		if f := c.next(); f.Type != "error" || f.id() != fmt.Sprintf("e%d", i) {
			t.Fatalf("got %s, want error e%d", f, i)
		}
	}
	if n := wc.writes.Load() - before; n != 1 {
		t.Errorf("six frames took %d writes, want 1", n)
	}
}

// A client's ping is answered by the writer, in its turn among the
// replies, and the frames around it stay whole.
func TestPongComesFromTheWriter(t *testing.T) {
	h := newHarness(t, setup{})
	c := h.dial(dialOpt{})
	pongs := make(chan string, 1)
	c.conn.SetPongHandler(func(data string) error {
		pongs <- data
		return nil
	})
	if err := c.conn.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	c.send(`{"type":"nope","id":"after"}`)
	if f := c.nextReply(); f.id() != "after" {
		t.Fatalf("got %s", f)
	}
	select {
	case data := <-pongs:
		if data != "are you there" {
			t.Errorf("pong %q", data)
		}
	default:
		t.Fatal("no pong before the reply to the message sent after the ping")
	}
}

// Pings from the client while readings stream: pongs and readings come
// from one writer, so every frame arrives whole (gorilla fails on a torn
// one) and nothing is lost.
func TestPingsDuringAStream(t *testing.T) {
	h := newHarness(t, setup{})
	c := h.dial(dialOpt{})
	const pings, readings = 200, 500
	var pongs atomic.Int64
	c.conn.SetPongHandler(func(string) error {
		pongs.Add(1)
		return nil
	})
	sent := make(chan error, 1)
	go func() {
		for range pings {
			if err := c.conn.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(5*time.Second)); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	var last uint64
	for i := range readings {
		last = h.emit("air.temperature", pibridge.Number(float64(i)))
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	// The marker is sent after the last ping: its reply follows every pong.
	c.send(`{"type":"nope","id":"marker"}`)
	var got uint64
	for marker := false; !marker || got < last; {
		f := c.next()
		switch {
		case f.Type == "reading":
			if f.Seq <= got {
				t.Fatalf("seq %d after %d", f.Seq, got)
			}
			got = f.Seq
		case f.id() == "marker":
			marker = true
		}
	}
	if n := pongs.Load(); n != pings {
		t.Errorf("%d pongs for %d pings", n, pings)
	}
}

// A reading's frame is a valid header and the JSON a client reads.
func TestReadingFrame(t *testing.T) {
	var buf []byte
	r := pibridge.Reading{Name: "air.temperature", Value: pibridge.Number(21.5), Unit: "°C", TS: time.Unix(1764072000, 0), Seq: 7}
	f := frameReading(r, &buf)
	if f[0] != 0x81 || int(f[1]) != len(f)-2 {
		t.Fatalf("header % x for %d bytes", f[:2], len(f))
	}
	if want := r.AppendTypedJSON(nil); !bytes.Equal(f[2:], want) {
		t.Errorf("payload %s, want %s", f[2:], want)
	}
}

package ws

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"pibridge"
)

// A client that stops reading fills its socket: the writer's raw try
// comes back short, the rest of the frame goes through the Conn under the
// write deadline, and what is queued meanwhile follows. Once the client
// reads again it gets every message once, in order; and a message long
// after that still goes out (the deadline was cleared: a raw try that
// found it passed would close the client as too slow).
func TestStalledClientGetsEveryFrameInOrder(t *testing.T) {
	const writeWait = time.Second
	pass := newFakePass()
	h := bridgeHarness(t, pass, setup{tune: func(t *tuning) { smallSendBuffer(t); t.writeWait = writeWait }})
	c := h.dial(dialOpt{})
	if got := c.exchange(`{"type":"subscribe","id":"s","topics":["home/+/temp"]}`); len(got) != 1 || !*got[0].OK {
		t.Fatal(got)
	}
	cl := h.srv.hub.connected()[0]
	if cl.raw == nil {
		t.Fatal("a plain TCP connection without the raw write path")
	}
	// The client reads nothing while 1,000 messages of ~500 bytes, far
	// more than both sockets' buffers hold, are sent.
	const n = 1000
	pad := strings.Repeat("x", 500)
	for i := range n {
		pass.send("home/kitchen/temp", fmt.Sprintf("%d %s", i, pad))
	}
	waitFor(t, "messages to queue behind the blocked write", func() bool {
		cl.mb.mu.Lock()
		defer cl.mb.mu.Unlock()
		return len(cl.mb.replies) > 0
	})
	for i := range n {
		f, err := c.read(5 * time.Second)
		if err != nil {
			t.Fatalf("message %d: %v (SlowClosed %d)", i, err, h.srv.SlowClosed())
		}
		if want := fmt.Sprintf("%d %s", i, pad); f.Payload == nil || *f.Payload != want {
			t.Fatalf("message %d: %.40s…, want %.40s…", i, f, want)
		}
	}
	// The blocked write's deadline would have passed by now.
	time.Sleep(writeWait + writeWait/4)
	pass.send("home/kitchen/temp", "after")
	if f := c.nextMQTT(); f.Payload == nil || *f.Payload != "after" {
		t.Fatalf("got %s, want the message sent after the stall", f)
	}
	if n := h.srv.SlowClosed(); n != 0 {
		t.Fatalf("SlowClosed = %d, want 0", n)
	}
}

// TLS connections keep the writer's Conn path: a raw write would put
// plaintext on the wire.
func TestTLSClientWritesThroughTheConn(t *testing.T) {
	b := newTLSBridge(t, 5*time.Second)
	d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second, TLSClientConfig: &tls.Config{RootCAs: b.ca.Pool()}}
	conn, _, err := d.Dial("wss://"+b.addr+"/ws", http.Header{"Authorization": {"Bearer " + controlToken}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &wsClient{t: t, conn: conn}
	if f := c.next(); f.Type != "hello" {
		t.Fatalf("first frame %s, want hello", f)
	}
	cls := b.srv.hub.connected()
	if len(cls) != 1 || cls[0].raw != nil {
		t.Fatalf("the TLS connection has a raw write path (%d clients)", len(cls))
	}
	for i := range 3 {
		seq := b.emit("air.temperature", pibridge.Number(float64(i)))
		if f := c.next(); f.Seq != seq {
			t.Fatalf("reading %d: %s, want seq %d", i, f, seq)
		}
	}
}

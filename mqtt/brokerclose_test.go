package mqtt

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// TestBrokerCloseDeliversWhatItAcknowledged: what the embedded broker has
// acknowledged to a publisher reaches its subscribers even when the broker
// closes right after, as it does when the bridge stops (its retained
// `offline` is the last thing it publishes).
func TestBrokerCloseDeliversWhatItAcknowledged(t *testing.T) {
	b, err := NewBroker("127.0.0.1:0", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })

	// The subscriber holds its first message until the broker is
	// closing, so the rest wait in mochi's queue for it and in the
	// socket buffers: the broker closes with a backlog.
	var got atomic.Int64
	release := make(chan struct{})
	sub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("drain-sub").
		SetAutoReconnect(false).SetOrderMatters(true))
	if tok := sub.Connect(); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	defer sub.Disconnect(0)
	if tok := sub.Subscribe("drain/#", 0, func(paho.Client, paho.Message) {
		<-release
		got.Add(1)
	}); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	pub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("drain-pub").
		SetAutoReconnect(false))
	if tok := pub.Connect(); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	defer pub.Disconnect(0)
	const n = 100
	payload := bytes.Repeat([]byte("x"), 48<<10) // 4.7 MiB in all: more than loopback buffers hold
	toks := make([]paho.Token, n)
	for i := range toks {
		toks[i] = pub.Publish("drain/x", 1, false, payload)
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(waitLong) || tok.Error() != nil {
			t.Fatalf("publish %d not acknowledged: %v", i, tok.Error())
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	close(release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	// The broker is closed: nothing more can arrive once the subscriber
	// has read what was sent before the close.
	deadline := time.Now().Add(5 * time.Second)
	for got.Load() < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // polling a counter with a deadline
	}
	if g := got.Load(); g != n {
		t.Errorf("subscriber got %d of %d acknowledged messages", g, n)
	}
}

// TestBrokerCloseRightAfterPuback: mochi acknowledges a QoS 1 publish
// before it hands it to the subscribers, so a broker closed the moment the
// publisher has its PUBACK — as the bridge's is after its `offline` — must
// still let the message through. The subscriber is a bare socket that reads
// until the broker closes it (a client library may drop what arrives just
// before a connection loss); many rounds, because the window is short.
func TestBrokerCloseRightAfterPuback(t *testing.T) {
	const rounds = 30
	lost := 0
	for round := range rounds {
		b, err := NewBroker("127.0.0.1:0", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(); err != nil {
			t.Fatal(err)
		}
		sub := rawSubscriber(t, b.Addr(), fmt.Sprintf("sub-%d", round), "last/words")
		pub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).
			SetClientID(fmt.Sprintf("pub-%d", round)).SetAutoReconnect(false))
		if tok := pub.Connect(); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
			t.Fatalf("publisher connect: %v", tok.Error())
		}
		if tok := pub.Publish("last/words", 1, true, "offline"); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		pub.Disconnect(0)
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		_ = sub.SetReadDeadline(time.Now().Add(5 * time.Second))
		rest, _ := io.ReadAll(sub) // until the broker's close
		sub.Close()
		if !bytes.Contains(rest, []byte("last/wordsoffline")) {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d acknowledged messages never reached the subscriber", lost, rounds)
	}
}

// rawSubscriber connects with MQTT 3.1.1 and subscribes to filter at QoS 0
// over a plain socket, and returns it once the SUBACK is read: everything
// the broker sends after that is left in the socket for the test to read.
func rawSubscriber(t *testing.T, addr, id, filter string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	connect := append(append(str("MQTT"), 4, 0x02, 0, 60), str(id)...) // level 4, clean session, keepalive 60 s
	subscribe := append(append([]byte{0, 1}, str(filter)...), 0)       // packet id 1, QoS 0
	_ = c.SetDeadline(time.Now().Add(waitLong))
	for _, p := range []struct {
		header byte
		body   []byte
		answer int // CONNACK 4 bytes, SUBACK 5
	}{{0x10, connect, 4}, {0x82, subscribe, 5}} {
		if _, err := c.Write(append([]byte{p.header, byte(len(p.body))}, p.body...)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, p.answer)); err != nil {
			t.Fatalf("no answer to packet %#x: %v", p.header, err)
		}
	}
	_ = c.SetDeadline(time.Time{})
	return c
}

// TestBrokerIdleClientsAreNotBusy: a connected client that sends nothing
// is not "being handled", so Close does not wait on it (mochi reads the
// CONNECT outside the handler that ends a packet).
func TestBrokerIdleClientsAreNotBusy(t *testing.T) {
	b := startedBroker(t)
	sub := rawSubscriber(t, b.Addr(), "idle-raw", "some/topic")
	defer sub.Close()
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("idle-paho").
		SetAutoReconnect(false).SetCleanSession(false))
	if tok := c.Connect(); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(0)
	if tok := c.Subscribe("some/topic", 1, nil); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if tok := c.Publish("some/topic", 1, true, "x"); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	deadline := time.Now().Add(5 * time.Second)
	for !b.tcp.busy.idle() {
		if time.Now().After(deadline) {
			t.Fatal("a connected, silent client still counts as busy")
		}
		time.Sleep(time.Millisecond) // polling with a deadline
	}
}

// TestBrokerCountsQueuedPublishes: the count Close waits on, kept through
// mochi's public hooks, follows its queue: a subscriber that does not read
// has publishes pending (retained on subscribe and routed alike), and once
// it reads everything the count is back to zero, never below.
func TestBrokerCountsQueuedPublishes(t *testing.T) {
	b := startedBroker(t)
	pub := brokerClient(t, b, "count-pub")
	if tok := pub.Publish("count/retained", 1, true, "r"); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	sub := rawSubscriber(t, b.Addr(), "count-sub", "count/#")
	defer sub.Close()
	cl, ok := b.srv.Clients.Get("count-sub")
	if !ok {
		t.Fatal("the subscriber is not among mochi's clients")
	}
	const n = 200
	publishUnread(t, b, pub, n)
	if p := b.tcp.queued.pending(cl); p <= 0 || p > n+1 {
		t.Fatalf("pending = %d for a subscriber that reads nothing, want 1..%d", p, n+1)
	}
	go io.Copy(io.Discard, sub)
	deadline := time.Now().Add(waitLong)
	for b.tcp.queued.pending(cl) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("pending = %d after the subscriber read everything, want 0", b.tcp.queued.pending(cl))
		}
		time.Sleep(time.Millisecond) // polling with a deadline
	}
}

// publishUnread publishes n messages of 64 KiB to count/x (12.5 MiB for
// 200: more than loopback buffers hold, so a subscriber that does not read
// keeps a queue) and waits until mochi has handled them.
func publishUnread(t *testing.T, b *Broker, pub paho.Client, n int) {
	t.Helper()
	payload := bytes.Repeat([]byte("x"), 64<<10)
	for i := range n {
		if tok := pub.Publish("count/x", 1, false, payload); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	deadline := time.Now().Add(waitLong)
	for !b.tcp.busy.idle() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling with a deadline
	}
}

// TestBrokerCountsNewSubscribers: the subscribers a topic routes to are
// kept between publishes; a client that subscribes afterwards is counted
// for the next ones, and one that has gone is not, though its session and
// subscriptions stay.
func TestBrokerCountsNewSubscribers(t *testing.T) {
	b := startedBroker(t)
	pub := brokerClient(t, b, "routes-pub")
	first := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("routes-first").
		SetAutoReconnect(false).SetCleanSession(false))
	if tok := first.Connect(); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("first subscriber connect: %v", tok.Error())
	}
	if tok := first.Subscribe("count/#", 0, func(paho.Client, paho.Message) {}); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	// The second is connected before count/x is routed and subscribes
	// after; its handler never returns, so paho stops reading its socket.
	release := make(chan struct{})
	second := brokerClient(t, b, "routes-second")
	defer close(release)        // before the client's disconnect, which waits for its handler
	publishUnread(t, b, pub, 1) // the route of count/x is known now: the first subscriber alone
	if tok := second.Subscribe("count/x", 0, func(paho.Client, paho.Message) { <-release }); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	cl, ok := b.srv.Clients.Get("routes-second")
	if !ok {
		t.Fatal("the second subscriber is not among mochi's clients")
	}
	const n = 200
	publishUnread(t, b, pub, n)
	if p := b.tcp.queued.pending(cl); p <= 0 || p > n {
		t.Fatalf("pending = %d for a subscriber that came after the topic was routed, want 1..%d", p, n)
	}
	gone, _ := b.srv.Clients.Get("routes-first")
	first.Disconnect(0)
	deadline := time.Now().Add(waitLong)
	for !gone.Closed() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling with a deadline
	}
	if len(b.srv.Topics.Subscribers("count/x").Subscriptions) < 2 {
		t.Fatal("the first subscriber's session did not keep its subscription: the check below would prove nothing")
	}
	publishUnread(t, b, pub, 1)
	if p := b.tcp.queued.pending(gone); p != 0 {
		t.Fatalf("pending = %d for a subscriber that has gone, want 0", p)
	}
}

// TestBrokerDropsSilentClient: the embedded broker drops a client silent
// for one and a half keepalives [MQTT-3.1.2-24], counted from its last
// packet (here a ping), never sooner: the socket's deadline is moved
// coarsely, never early.
func TestBrokerDropsSilentClient(t *testing.T) {
	b := startedBroker(t)
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(waitLong))
	connect := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 2, 0, 6, 's', 'i', 'l', 'e', 'n', 't'} // keepalive 2 s
	if _, err := c.Write(append([]byte{0x10, byte(len(connect))}, connect...)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Fatalf("no CONNACK: %v", err)
	}
	var last time.Time // before the last ping: the broker reads it later
	for range 2 {      // each ping moves the deadline on
		time.Sleep(1200 * time.Millisecond) // within the keepalive: what is tested
		last = time.Now()
		if _, err := c.Write([]byte{0xc0, 0}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
			t.Fatalf("no PINGRESP: the broker dropped a client that pinged within its keepalive: %v", err)
		}
	}
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("the broker sent %d bytes to a silent client", n)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the broker kept a client silent for %v", waitLong)
	}
	if silent := time.Since(last); silent < 3*time.Second {
		t.Fatalf("the broker dropped the client after %v of silence, before 1.5 keepalives", silent)
	}
}

// startedBroker starts an open embedded broker on a free loopback port,
// closed when the test ends.
func startedBroker(t *testing.T) *Broker {
	t.Helper()
	b, err := NewBroker("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// brokerClient connects a paho client to b, disconnected when the test
// ends (after the test's own defers).
func brokerClient(t *testing.T, b *Broker, id string) paho.Client {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID(id).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("%s: connect: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

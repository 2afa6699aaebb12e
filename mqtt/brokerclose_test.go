package mqtt

import (
	"bytes"
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

package mqtt

import (
	"fmt"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Retained messages stored while another client subscribes over them: mochi
// v2.7.9 reads the retained index unlocked during a subscribe's scan, which
// the race detector reports without the retain guard (this test under -race).
// Every subscribe still gets the retained messages, and every publish lands.
func TestRetainedStoreBesideSubscribes(t *testing.T) {
	addr := startEmbedded(t)
	connect := func(id string) paho.Client {
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
			SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
		if tok := c.Connect(); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
			t.Fatalf("connect %s: %v", id, tok.Error())
		}
		t.Cleanup(func() { c.Disconnect(50) })
		return c
	}
	pub, sub := connect("retain-pub"), connect("retain-sub")
	const topics, rounds = 40, 60
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range topics * rounds {
			tok := pub.Publish(fmt.Sprintf("r/%d/v", i%topics), 1, true, fmt.Sprint(i))
			if !tok.WaitTimeout(waitLong) || tok.Error() != nil {
				t.Errorf("publish %d: %v", i, tok.Error())
				return
			}
		}
	}()
	for range rounds {
		tok := sub.Subscribe("r/#", 0, func(paho.Client, paho.Message) {})
		if !tok.WaitTimeout(waitLong) || tok.Error() != nil {
			t.Fatalf("subscribe: %v", tok.Error())
		}
		if tok := sub.Unsubscribe("r/#"); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
			t.Fatalf("unsubscribe: %v", tok.Error())
		}
	}
	wg.Wait()
	// Once the publisher is done, a new subscription sees every topic's last value.
	last := make(chan paho.Message, topics)
	if tok := sub.Subscribe("r/#", 1, func(_ paho.Client, m paho.Message) { last <- m }); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	seen := map[string]string{}
	deadline := time.After(waitLong)
	for len(seen) < topics {
		select {
		case m := <-last:
			seen[m.Topic()] = string(m.Payload())
		case <-deadline:
			t.Fatalf("%d of %d retained topics after the publisher finished", len(seen), topics)
		}
	}
	for i := range topics {
		if want := fmt.Sprint(topics*(rounds-1) + i); seen[fmt.Sprintf("r/%d/v", i)] != want {
			t.Errorf("r/%d/v retained %q, want the last value %s", i, seen[fmt.Sprintf("r/%d/v", i)], want)
		}
	}
}

// rejectHook refuses publishes to one topic, after the retain guard has
// seen them: the store, and so OnRetainMessage, never comes.
type rejectHook struct {
	mochi.HookBase
	topic string
}

func (h *rejectHook) ID() string           { return "reject" }
func (h *rejectHook) Provides(b byte) bool { return b == mochi.OnPublish }
func (h *rejectHook) OnPublish(_ *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.TopicName == h.topic {
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// A retained publish dropped by a hook after the guard releases the guard:
// the next retained publish and subscribe go through.
func TestRetainGuardReleasedWhenStoreSkipped(t *testing.T) {
	b, err := NewBroker("127.0.0.1:0", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.srv.AddHook(&rejectHook{topic: "r/refused"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("guard").
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
	if tok := c.Connect(); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	c.Publish("r/refused", 0, true, "x").WaitTimeout(waitLong) // QoS 0: nothing to acknowledge
	if tok := c.Publish("r/kept", 1, true, "y"); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("a retained publish after the refused one: %v (the guard was not released)", tok.Error())
	}
	got := make(chan string, 1)
	if tok := c.Subscribe("r/#", 0, func(_ paho.Client, m paho.Message) { got <- m.Topic() }); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	select {
	case topic := <-got:
		if topic != "r/kept" {
			t.Errorf("retained %s, want r/kept only", topic)
		}
	case <-time.After(waitLong):
		t.Fatal("no retained message after subscribing")
	}
}

package mqtt

import (
	"fmt"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
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

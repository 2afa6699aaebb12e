package mqtt

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

type bridgeInbox struct {
	mu   sync.Mutex
	msgs []msg
}

func (b *bridgeInbox) deliver(topic string, payload []byte, retained bool) {
	b.mu.Lock()
	b.msgs = append(b.msgs, msg{Topic: topic, Payload: string(payload), Retained: retained})
	b.mu.Unlock()
}

func (b *bridgeInbox) has(topic, payload string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.msgs {
		if m.Topic == topic && m.Payload == payload {
			return true
		}
	}
	return false
}

func TestPassthrough(t *testing.T) {
	for _, kind := range brokerKinds {
		t.Run(kind.name, func(t *testing.T) {
			addr := kind.start(t)
			core, act := newCore(t)
			w := watch(t, addr, "home/#", base+"/#")
			client, _ := startClient(t, core, "tcp://"+addr, nil)
			waitOnline(w)

			w.publish("home/kitchen/temp", "20.5", true)
			var first, second bridgeInbox
			cancelFirst, err := client.Subscribe("home/+/temp", first.deliver)
			if err != nil {
				t.Fatal(err)
			}
			// A newcomer sees the retained state at once.
			eventually(t, "the retained message for a new browser subscription", func() bool {
				return first.has("home/kitchen/temp", "20.5")
			})
			cancelSecond, err := client.Subscribe("home/kitchen/temp", second.deliver)
			if err != nil {
				t.Fatal(err)
			}
			w.publish("home/kitchen/temp", "21.0", false)
			eventually(t, "a live message reaching both browsers", func() bool {
				return first.has("home/kitchen/temp", "21.0") && second.has("home/kitchen/temp", "21.0")
			})

			// A browser filter over the command topics must not swallow commands.
			var wide bridgeInbox
			cancelWide, err := client.Subscribe(base+"/#", wide.deliver)
			if err != nil {
				t.Fatal(err)
			}
			w.publish(base+"/pump/set", `{"value":"on","id":"pt1"}`, false)
			waitAck(w, "pt1")
			if calls := act.Calls(); len(calls) != 1 || calls[0] != "set pump true" {
				t.Fatalf("actuator calls = %q: a browser subscription ate the command", calls)
			}
			eventually(t, "the browser seeing the command topic too", func() bool {
				return wide.has(base+"/pump/set", `{"value":"on","id":"pt1"}`)
			})
			cancelWide()
			w.publish(base+"/pump/set", `{"value":"off","id":"pt2"}`, false)
			waitAck(w, "pt2") // unsubscribing the wide filter left the command subscription alone

			if err := client.Publish(context.Background(), "home/lamp/set", []byte("on"), false); err != nil {
				t.Fatal(err)
			}
			w.waitFor("the browser's publish", func([]msg) bool { return len(w.on("home/lamp/set")) == 1 })
			if err := client.Publish(context.Background(), "home/+/set", []byte("on"), false); err == nil {
				t.Fatal("a publish to a wildcard topic was accepted")
			}
			for _, tc := range []struct {
				topic string
				ok    bool
			}{{"home/lamp/set", true}, {"home/+/set", false}} {
				done := make(chan error, 1)
				client.PublishAsync(tc.topic, []byte("off"), false, func(err error) { done <- err })
				select {
				case err := <-done:
					if (err == nil) != tc.ok {
						t.Fatalf("PublishAsync %s: %v", tc.topic, err)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("PublishAsync %s: no answer", tc.topic)
				}
			}
			w.waitFor("the browser's async publish", func([]msg) bool { return len(w.on("home/lamp/set")) == 2 })
			if _, err := client.Subscribe("home/#/x", first.deliver); err == nil {
				t.Fatal("a malformed filter was accepted")
			}

			cancelFirst()
			cancelFirst() // idempotent
			cancelSecond()
			w.publish("home/kitchen/temp", "22.0", false)
			w.sync()
			if first.has("home/kitchen/temp", "22.0") || second.has("home/kitchen/temp", "22.0") {
				t.Fatal("a cancelled subscription still delivers")
			}
		})
	}
}

func TestPassthroughPublishWithoutBroker(t *testing.T) {
	core, _ := newCore(t)
	client := newTestClient(t, core, "tcp://"+freeAddr(t), nil)
	if err := client.Publish(context.Background(), "home/x", []byte("1"), false); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("publish without a broker: %v, want ErrNotConnected", err)
	}
	var asyncErr error
	client.PublishAsync("home/x", []byte("1"), false, func(err error) { asyncErr = err }) // at once, on this goroutine
	if !errors.Is(asyncErr, ErrNotConnected) {
		t.Fatalf("async publish without a broker: %v, want ErrNotConnected", asyncErr)
	}
	// Subscribing without a broker is remembered for the next connection.
	cancel, err := client.Subscribe("home/#", func(string, []byte, bool) {})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
}

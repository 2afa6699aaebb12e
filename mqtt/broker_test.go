package mqtt

import (
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// expiryHook reports each retained message mochi's expiry sweep deletes.
type expiryHook struct {
	mochi.HookBase
	expired chan string
}

func (h *expiryHook) ID() string { return "expiry-test" }

func (h *expiryHook) Provides(b byte) bool { return b == mochi.OnRetainedExpired }

func (h *expiryHook) OnRetainedExpired(filter string) { h.expired <- filter }

// A retained message stays until it is replaced, however old, as with
// mosquitto: Home Assistant's discovery configs are published once. Only a
// message expiry its MQTT 5 publisher set ends it. Each message below is
// put in the broker as already old, so the test need not wait a day;
// the canaries, expired by their own interval, show when a sweep has run.
func TestBrokerKeepsRetainedMessages(t *testing.T) {
	b, err := NewBroker("127.0.0.1:0", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	hook := &expiryHook{expired: make(chan string, 8)}
	if err := b.srv.AddHook(hook, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })

	now := time.Now().Unix()
	retain := func(topic string, created, expiry int64, version byte) {
		b.srv.Topics.RetainMessage(packets.Packet{
			FixedHeader:     packets.FixedHeader{Type: packets.Publish, Retain: true},
			TopicName:       topic,
			Payload:         []byte("x"),
			Created:         created,
			Expiry:          expiry,
			ProtocolVersion: version,
		})
	}
	retain("homeassistant/switch/pi/relay/config", now-3*86400, 0, 4)
	retain("pibridge/pi/relay", now-2*86400, 0, 5)
	// The expiry sweep visits the retained messages in map order, so the
	// first canary's deletion says only that a sweep began; the second,
	// retained after it, that the first sweep has finished.
	for _, canary := range []string{"canary/1", "canary/2"} {
		retain(canary, now-10, now-5, 5)
		select {
		case got := <-hook.expired:
			if got != canary {
				t.Fatalf("retained %s expired", got)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s not expired by its own interval", canary)
		}
	}
	for _, topic := range []string{"homeassistant/switch/pi/relay/config", "pibridge/pi/relay"} {
		if ms := b.srv.Topics.Messages(topic); len(ms) != 1 {
			t.Errorf("retained %s: %d messages, want it kept", topic, len(ms))
		}
	}
}

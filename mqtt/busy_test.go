package mqtt

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"pibridge"
	"pibridge/internal/testkit/fakeboard"
)

// holdActuator holds pump's first Set until release is closed, so the
// command worker is stuck and the inbox fills.
type holdActuator struct {
	*fakeboard.Actuator
	entered chan struct{}
	release chan struct{}
}

func (a *holdActuator) Set(ctx context.Context, name string, v pibridge.Value) error {
	if name == "pump" {
		select {
		case a.entered <- struct{}{}:
		default:
		}
		select {
		case <-a.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return a.Actuator.Set(ctx, name, v)
}

func TestBusyCommandsAreAcked(t *testing.T) {
	for _, b := range brokerKinds {
		t.Run(b.name, func(t *testing.T) { testBusyCommandsAreAcked(t, b.start(t)) })
	}
}

// Commands past the full inbox are answered at once with a busy ack that
// carries their id, while the worker is still stuck; after it comes free,
// every command sent has exactly one ack.
func testBusyCommandsAreAcked(t *testing.T, addr string) {
	core, fake := newCore(t)
	act := &holdActuator{Actuator: fake, entered: make(chan struct{}, 1), release: make(chan struct{})}
	core.SetActuator(act)
	w := watch(t, addr, base+"/ack", base+"/status")
	c, _ := startClient(t, core, "tcp://"+addr, nil)
	waitOnline(w)
	defer func() {
		select {
		case <-act.release:
		default:
			close(act.release)
		}
	}()

	const n = 200
	id := func(i int) string { return fmt.Sprintf("f%d", i) }
	w.publish(base+"/pump/set", `{"value":"on","id":"f0"}`, false)
	<-act.entered
	for i := 1; i < n; i++ {
		topic, payload := base+"/pump/set", `{"value":"toggle","id":"`+id(i)+`"}`
		if i%3 == 0 {
			topic, payload = base+"/pump/pulse", `{"for":"1s","id":"`+id(i)+`"}`
		}
		w.publish(topic, payload, false)
	}
	busy := n - 1 - inboxSize
	w.waitFor(fmt.Sprintf("%d busy acks while the worker is stuck", busy), func([]msg) bool { return len(acks(w)) >= busy })
	for _, a := range acks(w) {
		if !strings.Contains(a, `"ok":false,"error":"pump: busy`) || !strings.Contains(a, `"id":"f`) {
			t.Errorf("ack while stuck = %s, want a busy refusal with its id", a)
		}
	}
	if got := c.Stats().CommandsDropped; got != uint64(busy) {
		t.Errorf("CommandsDropped = %d, want %d", got, busy)
	}

	close(act.release)
	w.waitFor(fmt.Sprintf("%d acks", n), func([]msg) bool { return len(acks(w)) >= n })
	seen := map[string]int{}
	for _, a := range acks(w) {
		i := strings.Index(a, `"id":"`)
		j := strings.Index(a[i+6:], `"`)
		seen[a[i+6:i+6+j]]++
	}
	for i := range n {
		if seen[id(i)] != 1 {
			t.Errorf("command %s acked %d times, want once", id(i), seen[id(i)])
		}
	}
	if got := c.Stats().AcksDropped; got != 0 {
		t.Errorf("AcksDropped = %d, want 0", got)
	}
}

// When the busy acks' own queue is full too, the refusal is counted and
// paho's handler goes on at once: it never blocks.
func TestBusyRefusalNeverBlocks(t *testing.T) {
	core, _ := newCore(t)
	c := newTestClient(t, core, "tcp://127.0.0.1:1", nil)
	for range inboxSize {
		c.inbox <- inbound{}
	}
	for range acksSize {
		c.acks <- pendingAck{}
	}
	done := make(chan struct{})
	go func() {
		c.onMessage(nil, testMessage{topic: base + "/pump/set", payload: []byte(`{"value":"on","id":"x"}`)})
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("onMessage blocked on a full refusal queue")
	}
	if s := c.Stats(); s.CommandsDropped != 1 || s.AcksDropped != 1 {
		t.Errorf("CommandsDropped, AcksDropped = %d, %d; want 1, 1", s.CommandsDropped, s.AcksDropped)
	}
}

// testMessage is a paho.Message as the handler sees one.
type testMessage struct {
	topic   string
	payload []byte
}

func (m testMessage) Duplicate() bool   { return false }
func (m testMessage) Qos() byte         { return 1 }
func (m testMessage) Retained() bool    { return false }
func (m testMessage) Topic() string     { return m.topic }
func (m testMessage) MessageID() uint16 { return 1 }
func (m testMessage) Payload() []byte   { return m.payload }
func (m testMessage) Ack()              {}

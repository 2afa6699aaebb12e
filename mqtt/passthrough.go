package mqtt

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	pibridge "pibridge"
)

// The passthrough lets browsers subscribe and publish to MQTT topics
// (mqtt.bridge_allow). ws decides what a browser may touch; this
// side shares one broker subscription per filter between all browsers and
// restores them on every connection.

// maxBridgePayload matches the WebSocket frame limit: a bigger message
// could not reach a browser anyway.
const maxBridgePayload = 60 << 10

type bridgeDeliver func(topic string, payload []byte, retained bool)

type passthrough struct {
	mu      sync.Mutex
	filters map[string]map[uint64]bridgeDeliver
	nextID  uint64
}

// ErrNotConnected is returned by Publish while no broker is connected: a
// browser's publish is answered now rather than queued for later.
var ErrNotConnected = errors.New("no MQTT broker connected")

// Subscribe delivers the messages matching filter until cancel is called.
// deliver runs on the goroutine reading the broker connection: it must not
// block, and payload is valid only during the call.
func (c *Client) Subscribe(filter string, deliver func(topic string, payload []byte, retained bool)) (cancel func(), err error) {
	if err := pibridge.CheckFilter(filter); err != nil {
		return nil, err
	}
	p := &c.bridge
	p.mu.Lock()
	if p.filters == nil {
		p.filters = map[string]map[uint64]bridgeDeliver{}
	}
	subs := p.filters[filter]
	if subs == nil {
		subs = map[uint64]bridgeDeliver{}
		p.filters[filter] = subs
	}
	p.nextID++
	id := p.nextID
	subs[id] = deliver
	p.mu.Unlock()

	// Subscribing again for each browser makes the broker send the
	// retained messages of the filter, which a newcomer needs to see the
	// current state. Without a connection the next session subscribes.
	if c.gate.isOpen() {
		ctx, stop := context.WithTimeout(context.Background(), c.tm.writeTimeout)
		defer stop()
		tok := c.paho.Subscribe(filter, 0, nil) // nil: onMessage routes it
		if err := await(ctx, tok, c.tm.writeTimeout); err != nil {
			c.dropBridge(filter, id)
			return nil, fmt.Errorf("subscribing to %s: %w", filter, err)
		}
		if st, ok := tok.(*paho.SubscribeToken); ok && st.Result()[filter] == 0x80 {
			c.dropBridge(filter, id)
			return nil, fmt.Errorf("the broker refused the subscription to %s", filter)
		}
	}
	var once sync.Once
	return func() { once.Do(func() { c.dropBridge(filter, id) }) }, nil
}

// dropBridge removes one browser's subscription and unsubscribes from the
// broker when it was the last one on the filter.
func (c *Client) dropBridge(filter string, id uint64) {
	p := &c.bridge
	p.mu.Lock()
	subs := p.filters[filter]
	delete(subs, id)
	last := len(subs) == 0
	if last {
		delete(p.filters, filter)
	}
	p.mu.Unlock()
	if !last || !c.gate.isOpen() || c.servesCommands(filter) {
		return
	}
	tok := c.paho.Unsubscribe(filter)
	// The caller is a browser going away; it does not wait for the
	// broker's answer, but a failure is still worth a line.
	c.spawn(func() {
		t := time.NewTimer(c.tm.writeTimeout)
		defer t.Stop()
		var err error
		select {
		case <-tok.Done():
			err = tok.Error()
		case <-t.C:
			err = errNoAck
		case <-c.quit:
			return // Run has ended: nobody is left to tell
		}
		if err != nil {
			c.log.Debug("unsubscribing a browser filter failed", "filter", filter, "err", err)
		}
	})
}

// servesCommands reports whether filter is one the bridge itself needs:
// unsubscribing it would cut the commands off.
func (c *Client) servesCommands(filter string) bool {
	switch filter {
	case c.topics.set, c.topics.pulse, c.topics.setQuantity, c.topics.pulseQuantity:
		return true
	}
	return c.haStatus != "" && filter == c.haStatus
}

// bridgeFilters returns the filters browsers hold, for a new session.
func (c *Client) bridgeFilters() []string {
	p := &c.bridge
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.filters))
	for f := range p.filters {
		out = append(out, f)
	}
	return out
}

// deliverBridge hands a message to every browser whose filter matches; it
// reports whether any did. It runs on the goroutine reading the broker's
// connection (paho's or bufConn's) and never blocks; deliver does not keep
// payload.
func (c *Client) deliverBridge(topic string, payload []byte, retained bool) bool {
	p := &c.bridge
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.filters) == 0 {
		return false
	}
	matched := false
	for filter, subs := range p.filters {
		if !pibridge.TopicMatches(filter, topic) {
			continue
		}
		matched = true
		if len(payload) > maxBridgePayload {
			c.log.Debug("message too big for a browser dropped", "topic", pibridge.Clip(topic), "bytes", len(payload))
			continue
		}
		for _, deliver := range subs {
			deliver(topic, payload, retained)
		}
	}
	return matched
}

// wants reports whether a QoS 0 message on topic is the browsers' alone,
// so that bufConn may read it off the connection itself and pass it to
// take: paho's dispatch (two goroutine hand-offs and several allocations
// per message) then carries only what the bridge itself serves. A topic
// always takes the same path (the filters are fixed at New, and every
// subscription is at QoS 0), so the order per topic holds.
func (c *Client) wants(topic string) bool {
	return !c.forTheBridge(topic) && !c.inSweep(topic)
}

// take is what onMessage does with a message wants let through.
func (c *Client) take(topic string, payload []byte, retained bool) {
	if !c.deliverBridge(topic, payload, retained) {
		c.log.Debug("message on a topic the bridge does not serve ignored", "topic", pibridge.Clip(topic))
	}
}

// Publish sends a browser's message. It does not queue: without a broker
// it fails at once, so the browser learns it did not go out.
func (c *Client) Publish(ctx context.Context, topic string, payload []byte, retain bool) error {
	if err := ValidateTopic(topic); err != nil {
		return err
	}
	if !c.gate.isOpen() {
		return ErrNotConnected
	}
	// paho keeps the slice until the broker acknowledges it.
	if err := await(ctx, c.publish(topic, 1, retain, append([]byte(nil), payload...)), c.tm.writeTimeout); err != nil {
		return fmt.Errorf("publishing to %s: %w", topic, err)
	}
	return nil
}

// PublishAsync is Publish without waiting: done gets the outcome, once,
// from another goroutine when the broker has answered (or at once when
// the topic is bad or no broker is connected). The browser's connection
// goes on reading while the PUBACK is on its way.
func (c *Client) PublishAsync(topic string, payload []byte, retain bool, done func(error)) {
	if err := ValidateTopic(topic); err != nil {
		done(err)
		return
	}
	if !c.gate.isOpen() {
		done(ErrNotConnected)
		return
	}
	// The waiter is started before the publish: where one core is all
	// there is, the goroutine readied last runs first, and that must be
	// paho's writer, so that the message is out before the waiter sets up.
	// Owned like the other waits on paho, so that Run outlives it.
	toks := make(chan paho.Token, 1)
	waiting := c.spawn(func() {
		tok := <-toks
		t := time.NewTimer(c.tm.writeTimeout)
		defer t.Stop()
		select {
		case <-tok.Done():
			if err := tok.Error(); err != nil {
				done(fmt.Errorf("publishing to %s: %w", topic, err))
				return
			}
			done(nil)
		case <-t.C:
			done(fmt.Errorf("publishing to %s: %w", topic, errNoAck))
		case <-c.quit:
			done(fmt.Errorf("publishing to %s: %w", topic, ErrNotConnected))
		}
	})
	if !waiting {
		done(ErrNotConnected)
		return
	}
	// paho keeps the slice until the broker acknowledges it.
	toks <- c.publish(topic, 1, retain, append([]byte(nil), payload...))
	// Let paho's writer put the message on the wire before the caller goes
	// on with its own bookkeeping (deadlines, the next read): on one core
	// it would otherwise wait for the caller to block.
	runtime.Gosched()
}

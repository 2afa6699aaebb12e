package ws

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"pibridge"
)

// Passthrough is the MQTT side of the browser's subscribe/publish.
type Passthrough interface {
	// Subscribe delivers messages matching filter until the returned cancel is called. deliver must not block, and must not keep payload past the call.
	Subscribe(filter string, deliver func(topic string, payload []byte, retained bool)) (cancel func(), err error)
	Publish(ctx context.Context, topic string, payload []byte, retain bool) error
}

// AsyncPublisher is a Passthrough that can publish without the caller
// waiting for the broker's answer: done runs once, with the outcome, on
// any goroutine. The reader then goes on to the client's next message
// while the broker answers, and the ack keeps its place among the
// replies.
type AsyncPublisher interface {
	PublishAsync(topic string, payload []byte, retain bool, done func(error))
}

const (
	// errBridgeOff answers the MQTT passthrough messages while
	// mqtt.bridge_allow is empty.
	errBridgeOff = "not enabled: mqtt.bridge_allow is empty"
	// maxSubscriptions bounds the filters one client holds: each costs a
	// subscription at the broker.
	maxSubscriptions = 32
)

// bridgeOn reports whether subscribe/unsubscribe/publish are enabled.
func (s *Server) bridgeOn() bool { return s.pass != nil && len(s.allow) > 0 }

// checkFilters refuses the first filter that is malformed or not inside
// mqtt.bridge_allow. The error names the filter, never the allow list.
func (s *Server) checkFilters(filters []string) error {
	for _, f := range filters {
		if err := pibridge.CheckFilter(f); err != nil {
			return fmt.Errorf("topic filter %w", err)
		}
		if !allowedBy(s.allow, f) {
			return fmt.Errorf("%q: not inside mqtt.bridge_allow", pibridge.Clip(f))
		}
	}
	return nil
}

// subscribe subscribes the client to each filter, all or none. MQTT
// messages on a filter the client already holds are not doubled: that
// filter is skipped. The ack comes before any message of the new
// subscriptions (a retained message arrives at once): the gate holds them
// until the ack is queued.
func (c *client) subscribe(m *message) {
	if err := c.s.checkFilters(m.topics); err != nil {
		c.ackErr(m.id, fmt.Errorf("subscribe %w", err))
		return
	}
	held := len(c.subs)
	fresh := 0
	for i, f := range m.topics {
		if c.subscribed(f) < 0 && !slices.Contains(m.topics[:i], f) {
			fresh++
		}
	}
	if held+fresh > maxSubscriptions {
		c.ackErr(m.id, fmt.Errorf("subscribe: at most %d subscriptions per connection", maxSubscriptions))
		return
	}
	g := &subGate{c: c}
	for _, f := range m.topics {
		if c.subscribed(f) >= 0 {
			continue
		}
		cancel, err := c.s.pass.Subscribe(f, g.deliver)
		if err != nil {
			for _, sub := range c.subs[held:] {
				sub.cancel()
			}
			clear(c.subs[held:])
			c.subs = c.subs[:held]
			g.drop()
			c.s.log.Debug("mqtt subscribe failed", "remote", c.remote, "filter", pibridge.Clip(f), "err", err)
			c.ackErr(m.id, fmt.Errorf("subscribe %q: %w", pibridge.Clip(f), err))
			return
		}
		c.subs = append(c.subs, subscription{f, cancel})
	}
	c.ackErr(m.id, nil)
	g.open()
}

// unsubscribe drops the client's subscriptions to the given filters;
// filters it does not hold are ignored, as MQTT does.
func (c *client) unsubscribe(m *message) {
	if err := c.s.checkFilters(m.topics); err != nil {
		c.ackErr(m.id, fmt.Errorf("unsubscribe %w", err))
		return
	}
	for _, f := range m.topics {
		if i := c.subscribed(f); i >= 0 {
			c.subs[i].cancel()
			c.subs = slices.Delete(c.subs, i, i+1)
		}
	}
	c.ackErr(m.id, nil)
}

// publish publishes to a topic inside mqtt.bridge_allow. It is a command:
// the read token may not.
func (c *client) publish(m *message) {
	switch {
	case c.readOnly:
		c.ackErr(m.id, fmt.Errorf("publish: %w", pibridge.ErrReadOnly))
		return
	case pibridge.CheckTopicName(m.topic) != nil:
		c.ackErr(m.id, fmt.Errorf("publish: topic %w", pibridge.CheckTopicName(m.topic)))
		return
	case !allowedBy(c.s.allow, m.topic):
		c.ackErr(m.id, fmt.Errorf("publish %q: not inside mqtt.bridge_allow", pibridge.Clip(m.topic)))
		return
	}
	if ap, ok := c.s.pass.(AsyncPublisher); ok {
		c.publishAsync(ap, m)
		return
	}
	ctx, cancel := c.s.commandContext()
	err := c.s.pass.Publish(ctx, m.topic, []byte(m.payload), m.retain)
	cancel()
	c.ackErr(m.id, c.publishErr(m.topic, err))
}

// publishAsync queues the ack's place, publishes, and fills the place in
// when the broker has answered. The reply queue's bound also bounds the
// publishes one client has in flight.
func (c *client) publishAsync(ap AsyncPublisher, m *message) {
	p, ok, overflowed := c.mb.pushPendingWait(c.s.tune.writeWait)
	if overflowed {
		c.s.countSlow(c, "replies not read")
	}
	if !ok {
		return
	}
	id, topic := m.id, m.topic
	ap.PublishAsync(topic, []byte(m.payload), m.retain, func(err error) {
		err = c.publishErr(topic, err)
		if err == nil && id == "" {
			c.mb.resolve(p, nil) // ackErr's rule: no ok ack without an id
			return
		}
		c.mb.resolve(p, c.ackFrame(id, "", err))
	})
}

func (c *client) publishErr(topic string, err error) error {
	if err == nil {
		return nil
	}
	c.s.log.Debug("mqtt publish failed", "remote", c.remote, "topic", pibridge.Clip(topic), "err", err)
	return fmt.Errorf("publish %q: %w", pibridge.Clip(topic), err)
}

// dropSubscriptions cancels every subscription; the reader calls it when
// the connection ends.
func (c *client) dropSubscriptions() {
	for _, sub := range c.subs {
		sub.cancel()
	}
	c.subs = nil
}

// subscription is one MQTT filter a client holds. A client holds a few
// (maxSubscriptions at most), so a slice, a fraction of a map's size.
type subscription struct {
	filter string
	cancel func()
}

// subscribed returns the index of filter in c.subs, or -1.
func (c *client) subscribed(filter string) int {
	for i, sub := range c.subs {
		if sub.filter == filter {
			return i
		}
	}
	return -1
}

// subGate passes MQTT messages of one subscribe request into the client's
// mailbox, holding those that arrive before the request's ack is queued.
// deliver never blocks: it takes two short locks and never waits for I/O.
type subGate struct {
	c *client

	mu        sync.Mutex
	opened    bool
	closed    bool
	held      [][]byte
	heldBytes int
}

func (g *subGate) deliver(topic string, payload []byte, retained bool) {
	msg := g.c.s.mqttFrames.frame(topic, payload, retained)
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.closed:
	case g.opened:
		g.c.push(msg)
	case len(g.held) < g.c.s.tune.maxReplies && g.heldBytes+len(msg) <= g.c.s.tune.maxReplyBytes:
		g.held = append(g.held, msg)
		g.heldBytes += len(msg)
	default:
		// More held than a reply queue may hold: the client would
		// overflow anyway.
		g.closed, g.held = true, nil
		g.c.condemnSlow("mqtt messages overflowed the reply queue")
	}
}

// open queues what was held, in order, and lets later messages through.
func (g *subGate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	for _, msg := range g.held {
		g.c.push(msg)
	}
	g.held, g.opened = nil, true
}

// drop discards what was held and whatever still comes.
func (g *subGate) drop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed, g.held = true, nil
}

// frameMemo frames an MQTT message once for all the browsers subscribed
// to it. The Passthrough (mqtt.Client) hands one broker message to every
// browser's callback in turn, on one goroutine, so the frame the next
// callback needs is the one just built: a one-entry memo turns N frames
// per message into one, and the same immutable frame is queued in every
// mailbox. The key is the content (topic, payload, retained), not the
// slice's address, so a hit is correct whatever the caller does with its
// buffers: equal content is an equal frame. Comparing costs a memcmp of
// the payload, next to the allocation and JSON escaping it saves.
//
// Subscribing stays per browser (one Passthrough.Subscribe per gate): each
// subscribe makes the broker send the filter's retained messages, which a
// newcomer needs, and cancelling stays the gate's own business.
type frameMemo struct {
	mu       sync.Mutex
	topic    string
	payload  []byte // a copy: the caller's slice is not ours to keep
	retained bool
	last     []byte // the frame of the above; nil when none
}

// maxMemoPayload bounds the payload the memo keeps a copy of, so that one
// big message does not pin a big buffer for the life of the server.
const maxMemoPayload = 16 << 10

func (m *frameMemo) frame(topic string, payload []byte, retained bool) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.last != nil && m.retained == retained && m.topic == topic && string(m.payload) == string(payload) {
		return m.last
	}
	f := textFrame(appendMQTT(newFrame(48+len(topic)+len(payload)), topic, payload, retained))
	if len(payload) > maxMemoPayload {
		m.last, m.topic, m.payload = nil, "", nil
		return f
	}
	m.topic, m.retained, m.last = topic, retained, f
	m.payload = append(m.payload[:0], payload...)
	return f
}

// appendMQTT appends {"type":"mqtt","topic":…,"payload":…,"retained":…}.
// A payload that is not UTF-8 has its invalid bytes replaced by U+FFFD:
// JSON text cannot carry them.
func appendMQTT(b []byte, topic string, payload []byte, retained bool) []byte {
	b = append(b, `{"type":"mqtt","topic":`...)
	b = pibridge.AppendJSONString(b, topic)
	b = append(b, `,"payload":`...)
	b = pibridge.AppendJSONString(b, string(payload))
	if retained {
		return append(b, `,"retained":true}`...)
	}
	return append(b, `,"retained":false}`...)
}

// allowedBy returns whether requested is covered by one of the allowed filters.
func allowedBy(allowed []string, requested string) bool {
	for _, a := range allowed {
		if pibridge.FilterCovers(a, requested) {
			return true
		}
	}
	return false
}

// validateAllow checks Options.BridgeAllow.
func validateAllow(allow []string) error {
	var bad []string
	for i, f := range allow {
		if err := pibridge.CheckFilter(f); err != nil {
			bad = append(bad, fmt.Sprintf("bridge_allow[%d]: %v", i, err))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("ws: %s", strings.Join(bad, "; "))
	}
	return nil
}

package mqtt

import (
	"context"

	paho "github.com/eclipse/paho.mqtt.golang"

	pibridge "pibridge"
)

// availability tracks what the bridge last published on each sensor's
// P/D/<signal>/available. Only sessionLoop touches it.
type availability struct {
	published map[string]bool // signal → online; absent: not published on this connection
}

// sensorAvailable reports whether a sensor's retained value is current: it
// has a reading from this run that the broker has acknowledged, and its
// sensor is not stale. Before its first reading, or while it keeps
// failing, a retained value from earlier is old news.
func (c *Client) sensorAvailable(name string, ackedUpTo uint64) bool {
	r, ok := c.core.Latest(name)
	if !ok || r.Seq > ackedUpTo {
		return false
	}
	return c.stale == nil || !c.stale(name)
}

// ackedUpTo is the newest seq up to which the broker has acknowledged
// every reading. It only looks: the publisher alone takes from the outbox.
func (c *Client) ackedUpTo() uint64 {
	if seq, ok := c.outbox.Oldest(); ok {
		return seq - 1
	}
	return c.lastSeq.Load()
}

// publishAvailability publishes each sensor's availability, retained:
// every one when all is set (a new connection: the broker may have lost
// them), else those that changed. A sensor turns available only once its
// fresh reading is acknowledged, so the reading is on the broker before
// Home Assistant is told to believe it.
func (c *Client) publishAvailability(ctx context.Context, all bool) {
	if !c.gate.isOpen() {
		return
	}
	if all || c.avail.published == nil {
		c.avail.published = make(map[string]bool, len(c.topics.available))
	}
	var toks []paho.Token
	var names []string
	acked := c.ackedUpTo() // once for every signal of this round
	for _, s := range c.core.Signals() {
		topic, ok := c.topics.available[s.Name]
		if !ok {
			continue
		}
		up := c.sensorAvailable(s.Name, acked)
		if was, known := c.avail.published[s.Name]; known && was == up {
			continue
		}
		payload := "offline"
		if up {
			payload = "online"
		}
		if !all {
			c.log.Info("sensor availability changed", "signal", s.Name, "available", up)
		}
		toks = append(toks, c.publish(topic, 1, true, payload))
		names = append(names, s.Name)
		c.avail.published[s.Name] = up
	}
	if len(toks) > 0 && !c.awaitAll(ctx, toks, "sensor availability") {
		for _, n := range names {
			delete(c.avail.published, n) // try again on the next tick
		}
	}
}

// availableTopic is where a sensor's availability goes: P/D/<signal>/available.
func availableTopic(base string, s pibridge.Signal) string {
	return base + "/" + s.Topic() + "/available"
}

package mqtt

import (
	"context"
	"encoding/json"
	"strings"

	paho "github.com/eclipse/paho.mqtt.golang"

	"pibridge"
)

// removedTopics returns the retained topics of signals the previous run
// published (its meta) that this run no longer has: their last state and,
// for a sensor, its availability. Left alone they would show a removed
// signal's last value as current to every new subscriber for ever. A topic
// this run still uses is never returned.
func (c *Client) removedTopics(oldMeta []byte) []string {
	var prev struct {
		Signals []struct {
			Name string `json:"name"`
			Kind string `json:"kind"`
		} `json:"signals"`
	}
	if len(oldMeta) == 0 || json.Unmarshal(oldMeta, &prev) != nil {
		return nil
	}
	inUse := map[string]bool{c.topics.status: true, c.topics.meta: true, c.topics.ack: true}
	for _, t := range c.topics.signal {
		inUse[t] = true
	}
	for _, t := range c.topics.available {
		inUse[t] = true
	}
	var out []string
	for _, s := range prev.Signals {
		state := c.topics.base + "/" + strings.ReplaceAll(s.Name, ".", "/")
		if _, live := c.topics.signal[s.Name]; live || s.Name == "" || pibridge.CheckTopicName(state) != nil {
			continue // still configured, or not a topic this bridge could have published
		}
		candidates := []string{state}
		if s.Kind == pibridge.KindSensor.String() {
			candidates = append(candidates, state+"/available")
		}
		for _, t := range candidates {
			if !inUse[t] {
				inUse[t] = true
				out = append(out, t)
			}
		}
	}
	return out
}

// clearRemoved empties the retained topics of signals removed since the
// previous run (see removedTopics).
func (c *Client) clearRemoved(ctx context.Context, oldMeta []byte) {
	topics := c.removedTopics(oldMeta)
	if len(topics) == 0 {
		return
	}
	c.log.Info("clearing the retained topics of signals no longer configured", "topics", topics)
	toks := make([]paho.Token, 0, len(topics))
	for _, t := range topics {
		toks = append(toks, c.publish(t, 1, true, []byte{}))
	}
	c.awaitAll(ctx, toks, "clearing removed signals")
}

package mqtt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	pibridge "pibridge"
)

const (
	// inboxSize bounds the commands waiting for the worker; a client
	// flooding /set gets its excess refused busy, and the bridge keeps
	// its memory.
	inboxSize = 64
	// acksSize bounds the acks waiting to be published. The command
	// worker waits for room; paho's handler, refusing busy, never does:
	// past it a busy ack is dropped and counted (acks_dropped).
	acksSize = 4096
	// ackBatch is how many acks are published before their tokens are
	// awaited: answers keep up with a flood of commands.
	ackBatch = 64
	// maxCommandPayload is far above any command form; longer payloads are
	// refused without being copied.
	maxCommandPayload = 1024
)

// inbound is a message copied out of paho's handler.
type inbound struct {
	topic    string
	payload  []byte
	retained bool
	tooLong  bool
}

// copyInbound copies m out of paho's buffers; a payload over
// maxCommandPayload is only marked, not kept.
func copyInbound(m paho.Message) inbound {
	in := inbound{topic: m.Topic(), retained: m.Retained()}
	if p := m.Payload(); len(p) > maxCommandPayload {
		in.tooLong = true
	} else {
		in.payload = bytes.Clone(p)
	}
	return in
}

// pendingAck is an answer to a command, waiting to be published.
type pendingAck struct {
	id, name string
	err      error
}

// onMessage is paho's handler for every message. It must neither block nor
// publish (paho #453): it copies the message into the inbox, or, when the
// inbox is full, hands a busy refusal to the ack worker.
func (c *Client) onMessage(_ paho.Client, m paho.Message) {
	bridged := c.deliverBridge(m.Topic(), m.Payload(), m.Retained())
	if c.sweeping.Load() && c.inSweep(m.Topic()) {
		c.toSweep(m)
		return
	}
	if bridged && !c.forTheBridge(m.Topic()) {
		return
	}
	in := copyInbound(m)
	select {
	case c.inbox <- in:
	default:
		c.refuseBusy(in)
	}
}

// refuseBusy answers a command the full inbox cannot take with a busy ack,
// without blocking: the ack is published by ackLoop. Messages that are
// not commands (Home Assistant's status) are dropped.
func (c *Client) refuseBusy(in inbound) {
	name, op, ok := c.topics.command(in.topic)
	if !ok || (len(in.payload) == 0 && !in.tooLong) {
		return // not a command, or the clearing of a retained one: no answer either way
	}
	cmd := pibridge.Command{Name: name, Op: op, Source: "mqtt"}
	if !in.tooLong {
		// Only the id is wanted; a payload that does not parse is refused busy all the same.
		if op == pibridge.OpPulse {
			_, cmd.ID, _ = pibridge.ParsePulsePayload(in.payload)
		} else {
			_, cmd.ID, _ = pibridge.ParseSetPayload(in.payload)
		}
	}
	err := fmt.Errorf("%s: %w", pibridge.Clip(name), pibridge.ErrBusy)
	c.core.Refused(cmd, err)
	n := c.commandsDropped.Add(1)
	select {
	case c.acks <- pendingAck{id: cmd.ID, name: pibridge.Clip(name), err: err}:
	default:
		c.acksDropped.Add(1)
	}
	// Log the first refusal and then every 100th, not a line per message of a flood.
	if n%100 == 1 {
		c.log.Warn("command queue full; command refused busy", "topic", pibridge.Clip(in.topic), "refused", n, "acks_dropped", c.acksDropped.Load())
	}
}

// ackLoop publishes the acks, a batch at a time, apart from the command
// worker: neither refusing busy nor carrying out the next command waits
// for an ack's PUBACK.
func (c *Client) ackLoop(ctx context.Context) {
	// Up to ackWindow batches are on their way at once: waiting for each
	// batch's PUBACKs before the next would bound the acks to one batch
	// per broker round trip, below what a flood of commands asks for.
	var window [ackWindow]ackFlight
	next := 0
	for {
		var first pendingAck
		select {
		case <-ctx.Done():
			return
		case first = <-c.acks:
		}
		f := &window[next]
		next = (next + 1) % ackWindow
		c.settle(ctx, f) // the oldest batch, before its slot is reused
		f.batch = append(f.batch[:0], first)
	fill:
		for len(f.batch) < ackBatch {
			select {
			case a := <-c.acks:
				f.batch = append(f.batch, a)
			default:
				break fill
			}
		}
		if !c.awaitConnected(ctx) { // between connections: wait (bounded) for the next one
			if ctx.Err() != nil {
				return
			}
			c.log.Warn("acks not published: not connected", "acks", len(f.batch), "first_id", f.batch[0].id)
			c.acksDropped.Add(uint64(len(f.batch)))
			f.batch = f.batch[:0]
			continue
		}
		for _, a := range f.batch {
			f.toks = append(f.toks, c.publish(c.topics.ack, c.qos, false, ackJSON(a.id, a.name, a.err)))
		}
	}
}

// ackWindow is how many batches of acks may await their PUBACKs at once.
const ackWindow = 4

// ackFlight is one batch of acks published and not yet confirmed.
type ackFlight struct {
	batch []pendingAck
	toks  []paho.Token
}

// settle waits for a published batch's PUBACKs, all within one write
// timeout: a broker that stopped answering holds the acks behind them
// for that long, not that long for each ack.
func (c *Client) settle(ctx context.Context, f *ackFlight) {
	deadline := time.Now().Add(c.tm.writeTimeout)
	failed := 0
	var firstErr error
	for _, tok := range f.toks {
		if err := await(ctx, tok, time.Until(deadline)); err != nil && ctx.Err() == nil {
			if failed == 0 {
				firstErr = err
			}
			failed++
		}
	}
	if failed > 0 {
		c.log.Warn("acks not confirmed by the broker", "acks", failed, "of", len(f.toks), "batch_first_id", f.batch[0].id, "err", firstErr)
	}
	f.toks = f.toks[:0]
}

// awaitConnected waits, at most the write timeout, for a connection to
// publish on; false when none came in time or ctx ended.
func (c *Client) awaitConnected(ctx context.Context) bool {
	t := time.NewTimer(c.tm.writeTimeout)
	defer t.Stop()
	select {
	case <-c.gate.open():
		return true
	case <-ctx.Done():
	case <-t.C:
	}
	return false
}

// forTheBridge reports whether topic is a command or Home Assistant's
// status, which the bridge itself acts on.
func (c *Client) forTheBridge(topic string) bool {
	if c.haStatus != "" && topic == c.haStatus {
		return true
	}
	_, _, ok := c.topics.command(topic)
	return ok
}

// commandLoop executes commands one at a time, in arrival order.
func (c *Client) commandLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case in := <-c.inbox:
			if ctx.Err() != nil {
				return // select picks at random: never act after the end
			}
			c.handle(ctx, in)
		}
	}
}

func (c *Client) handle(ctx context.Context, in inbound) {
	if c.haStatus != "" && in.topic == c.haStatus {
		// A retained birth message arrives on every subscribe; the connect
		// itself already published discovery.
		if !in.retained && string(bytes.TrimSpace(in.payload)) == "online" {
			signal(c.haOnline)
		}
		return
	}
	name, op, ok := c.topics.command(in.topic)
	if !ok {
		c.log.Debug("message on a topic the bridge does not serve ignored", "topic", pibridge.Clip(in.topic))
		return
	}
	c.commands.Add(1)
	if len(in.payload) == 0 && !in.tooLong {
		// What clearing a retained command looks like to a subscriber.
		c.log.Debug("empty command ignored", "topic", in.topic)
		return
	}
	cmd := pibridge.Command{Name: name, Op: op, Source: "mqtt"}
	var err error
	switch {
	case in.tooLong:
		err = fmt.Errorf("%w: payload over %d bytes", pibridge.ErrBadValue, maxCommandPayload)
	case op == pibridge.OpPulse:
		cmd.For, cmd.ID, err = pibridge.ParsePulsePayload(in.payload)
	default:
		cmd.Value, cmd.ID, err = pibridge.ParseSetPayload(in.payload)
	}
	if in.retained {
		// Delivered because it was retained, not because someone just sent
		// it: it may be hours old. A stale command must never move an output.
		c.log.Warn("retained command ignored; publish commands without the retain flag", "topic", in.topic)
		err := fmt.Errorf("%s: %w: publish commands without the retain flag", pibridge.Clip(name), pibridge.ErrRetained)
		c.core.Refused(cmd, err)
		c.ack(ctx, cmd.ID, name, err)
		return
	}
	if err != nil {
		if sig, known := c.core.Signal(name); !known || !sig.Kind.Writable() {
			// The core refuses these before any actuator is involved, and
			// its message ("no such signal", "not writable") says more
			// than the value's.
			_, err = c.core.Execute(ctx, cmd)
		} else {
			err = fmt.Errorf("%s: %w", name, err)
			c.core.Refused(cmd, err)
		}
		c.log.Info("command refused", "signal", pibridge.Clip(name), "id", cmd.ID, "err", err)
		c.ack(ctx, cmd.ID, name, err)
		return
	}
	if _, err = c.core.Execute(ctx, cmd); err != nil {
		c.log.Info("command failed", "signal", name, "id", cmd.ID, "err", err)
	} else {
		c.log.Debug("command done", "signal", name, "id", cmd.ID)
	}
	if err != nil || cmd.ID != "" {
		c.ack(ctx, cmd.ID, name, err)
	}
}

// ack queues the answer to a command for ackLoop, which publishes it on
// P/D/ack, not retained. It waits for room in the queue, not for the
// publish.
func (c *Client) ack(ctx context.Context, id, name string, err error) {
	if err == nil && id == "" {
		return
	}
	if err != nil && errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return // stopping: nobody is listening to this answer any more
	}
	select {
	case c.acks <- pendingAck{id: id, name: pibridge.Clip(name), err: err}:
	case <-ctx.Done():
	}
}

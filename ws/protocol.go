package ws

import (
	"fmt"

	"pibridge"
)

// handle answers one client message: exactly one reply when it carries an
// id, an ack for every failing command, an error for every malformed one.
func (c *client) handle(mt int, data []byte) {
	m, derr := decodeMessage(mt, data)
	if derr != nil {
		c.replyError(derr.id, derr.msg)
		return
	}
	switch m.typ {
	case msgSet:
		c.set(&m)
	case msgPulse:
		c.pulse(&m)
	case msgHistory:
		c.history(&m)
	case msgSubscribe, msgUnsubscribe, msgPublish:
		if !c.s.bridgeOn() {
			c.replyError(m.id, errBridgeOff)
			return
		}
		// Through paho: a reader that never parks goes on on a fresh stack
		// (see read); one that parks gives its whole stack back then.
		c.grewStack = c.ic == nil
		switch m.typ {
		case msgSubscribe:
			c.subscribe(&m)
		case msgUnsubscribe:
			c.unsubscribe(&m)
		default:
			c.publish(&m)
		}
	case msgAuth:
		if c.s.gate.on {
			c.replyError(m.id, "already authenticated")
		} else {
			c.replyError(m.id, "authentication is not required here")
		}
	}
}

func (c *client) set(m *message) {
	var v pibridge.Value
	if err := v.UnmarshalJSON(m.value); err != nil {
		c.refused(m, pibridge.OpSet, err)
		return
	}
	c.execute(pibridge.Command{ID: m.id, Name: m.name, Op: pibridge.OpSet, Value: v, Source: "ws"})
}

func (c *client) pulse(m *message) {
	d, err := pibridge.ParsePulse(m.dur)
	if err != nil {
		c.refused(m, pibridge.OpPulse, err)
		return
	}
	c.execute(pibridge.Command{ID: m.id, Name: m.name, Op: pibridge.OpPulse, For: d, Source: "ws"})
}

// refused answers a command whose value did not parse, and tells the core
// so that the command counters see it like any other refusal.
func (c *client) refused(m *message, op pibridge.Op, err error) {
	err = c.s.commandError(m.name, err)
	c.s.core.Refused(pibridge.Command{ID: m.id, Name: m.name, Op: op, Source: "ws"}, err)
	c.ack(m.id, m.name, err, 0)
}

// commandError words a value that did not parse: a command on a signal
// that does not exist or cannot be written fails for that reason first.
func (s *Server) commandError(name string, err error) error {
	if refused := s.refuse(name); refused != nil {
		return refused
	}
	return fmt.Errorf("%s: %w", name, err)
}

// execute runs a command with a timeout, so a stuck actuator cannot stall
// this connection's reader for long.
func (c *client) execute(cmd pibridge.Command) {
	if c.readOnly {
		c.ack(cmd.ID, cmd.Name, fmt.Errorf("%s: %w", pibridge.Clip(cmd.Name), pibridge.ErrReadOnly), 0)
		return
	}
	ctx, cancel := c.s.commandContext()
	r, err := c.s.core.Execute(ctx, cmd)
	cancel()
	if err != nil {
		c.s.log.Debug("command failed", "source", cmd.Source, "remote", c.remote, "signal", pibridge.Clip(cmd.Name), "err", err)
		c.ack(cmd.ID, cmd.Name, err, 0)
		return
	}
	if cmd.ID != "" { // without an id, the echoed reading is the confirmation
		c.ack(cmd.ID, cmd.Name, nil, r.Seq)
	}
}

func (c *client) history(m *message) {
	id, name := m.id, m.name
	d, err := pibridge.ParseSince(m.since)
	if err != nil {
		c.replyError(id, "history: "+err.Error())
		return
	}
	points, err := c.s.core.History(name, d)
	if err != nil {
		c.replyError(id, err.Error())
		return
	}
	b := newFrame(64 + len(id) + len(name) + len(points)*24)
	c.reply(textFrame(pibridge.AppendHistoryMessage(b, id, name, points)), 0)
}

// ack replies to a command. A successful ack waits in the mailbox until
// the reading with seq echo has been queued before it.
func (c *client) ack(id, name string, err error, echo uint64) {
	c.reply(c.ackFrame(id, name, err), echo)
}

// ackFrame frames an ack.
func (c *client) ackFrame(id, name string, err error) []byte {
	if _, known := c.s.core.Signal(name); !known {
		name = "" // an unknown name is not echoed back
	}
	return textFrame(pibridge.AppendAckMessage(newFrame(64+len(id)), id, name, err))
}

// ackErr acks a message that names no signal: an ok ack only when it
// carries an id, a failing one always.
func (c *client) ackErr(id string, err error) {
	if err == nil && id == "" {
		return
	}
	c.ack(id, "", err, 0)
}

func (c *client) replyError(id, msg string) {
	c.reply(textFrame(pibridge.AppendErrorMessage(newFrame(32+len(id)+len(msg)), id, msg)), 0)
}

// reply queues the answer (a frame) to one of the client's own messages. Only the
// connection's reader calls it: it waits for room in the reply queue, so
// a client sending faster than it reads is slowed down, and closed with
// 1008 when it does not read its replies for writeWait.
func (c *client) reply(msg []byte, echo uint64) {
	if _, overflowed := c.mb.pushReplyWait(msg, echo, c.s.tune.writeWait); overflowed {
		c.s.countSlow(c, "replies not read")
	}
}

// push queues a frame the client did not ask for (MQTT passthrough)
// without waiting: it is called from other goroutines, which must not
// block. Overflowing the reply queue closes the client with 1008.
func (c *client) push(msg []byte) {
	if _, overflowed := c.mb.pushReply(msg, 0); overflowed {
		c.s.countSlow(c, "reply queue full")
	}
}

// appendState appends {"<name>":{reading},…}.
func appendState(b []byte, state []pibridge.Reading) []byte {
	b = append(b, '{')
	for i, r := range state {
		if i > 0 {
			b = append(b, ',')
		}
		b = pibridge.AppendStateEntry(b, r.Name, r)
	}
	return append(b, '}')
}

package ws

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/gorilla/websocket"

	"pibridge"
)

const (
	defaultHistorySince = 10 * time.Minute
	// maxHistorySince bounds the window a client may ask for. The core's
	// ring keeps at least an hour; asking further back just returns what
	// is there.
	maxHistorySince = 24 * time.Hour
	// errBridgeOff answers the MQTT passthrough messages until
	// mqtt.bridge_allow exists.
	errBridgeOff = "not enabled: mqtt.bridge_allow is empty"
)

// envelope is a client message with every field left raw, so that a bad
// field never hides the id: whatever else is wrong, the reply can carry it.
type envelope struct {
	Type  json.RawMessage `json:"type"`
	ID    json.RawMessage `json:"id"`
	Name  json.RawMessage `json:"name"`
	Value json.RawMessage `json:"value"`
	For   json.RawMessage `json:"for"`
	Since json.RawMessage `json:"since"`
}

// handle answers one client message: exactly one reply when it carries an
// id, an ack for every failing command, an error for every malformed one.
func (c *client) handle(mt int, data []byte) {
	if mt != websocket.TextMessage {
		c.replyError("", "binary frames are not supported: send JSON text")
		return
	}
	var env envelope
	if t := bytes.TrimSpace(data); len(t) == 0 || t[0] != '{' {
		c.replyError("", "malformed JSON: a message is one JSON object")
		return
	}
	if err := json.Unmarshal(data, &env); err != nil {
		c.replyError("", "malformed JSON: "+err.Error())
		return
	}
	id, err := stringField(env.ID, "id")
	if err != nil {
		c.replyError("", err.Error())
		return
	}
	typ, err := stringField(env.Type, "type")
	switch {
	case err != nil:
		c.replyError(id, err.Error())
	case typ == "":
		c.replyError(id, "type is missing")
	case typ == "set":
		c.set(id, &env)
	case typ == "pulse":
		c.pulse(id, &env)
	case typ == "history":
		c.history(id, &env)
	case typ == "subscribe", typ == "unsubscribe", typ == "publish":
		c.replyError(id, errBridgeOff)
	default:
		c.replyError(id, fmt.Sprintf("unknown type %q", clip(typ)))
	}
}

func (c *client) set(id string, env *envelope) {
	name, ok := c.requireString(id, env.Name, "set", "name")
	if !ok {
		return
	}
	if isNull(env.Value) {
		c.replyError(id, "set: value is missing")
		return
	}
	var v pibridge.Value
	if err := v.UnmarshalJSON(env.Value); err != nil {
		c.ack(id, name, c.s.commandError(name, err), 0)
		return
	}
	c.execute(pibridge.Command{ID: id, Name: name, Op: pibridge.OpSet, Value: v, Source: "ws"})
}

func (c *client) pulse(id string, env *envelope) {
	name, ok := c.requireString(id, env.Name, "pulse", "name")
	if !ok {
		return
	}
	f, ok := c.requireString(id, env.For, "pulse", "for")
	if !ok {
		return
	}
	d, err := pibridge.ParsePulse(f)
	if err != nil {
		c.ack(id, name, c.s.commandError(name, err), 0)
		return
	}
	c.execute(pibridge.Command{ID: id, Name: name, Op: pibridge.OpPulse, For: d, Source: "ws"})
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
		c.ack(cmd.ID, cmd.Name, fmt.Errorf("%s: %w", clip(cmd.Name), errReadOnly), 0)
		return
	}
	ctx, cancel := context.WithTimeout(c.s.ctx, c.s.tune.commandTimeout)
	r, err := c.s.core.Execute(ctx, cmd)
	cancel()
	if err != nil {
		c.s.log.Debug("command failed", "source", cmd.Source, "remote", c.remote, "signal", clip(cmd.Name), "err", err)
		c.ack(cmd.ID, cmd.Name, err, 0)
		return
	}
	if cmd.ID != "" { // without an id, the echoed reading is the confirmation
		c.ack(cmd.ID, cmd.Name, nil, r.Seq)
	}
}

func (c *client) history(id string, env *envelope) {
	name, ok := c.requireString(id, env.Name, "history", "name")
	if !ok {
		return
	}
	since, err := stringField(env.Since, "since")
	if err != nil {
		c.replyError(id, "history: "+err.Error())
		return
	}
	d, err := parseSince(since)
	if err != nil {
		c.replyError(id, "history: "+err.Error())
		return
	}
	points, err := c.s.core.History(name, d)
	if err != nil {
		c.replyError(id, err.Error())
		return
	}
	b := make([]byte, 0, 64+len(id)+len(name)+len(points)*24)
	b = append(b, `{"type":"history"`...)
	if id != "" {
		b = append(b, `,"id":`...)
		b = pibridge.AppendJSONString(b, id)
	}
	b = append(b, `,"name":`...)
	b = pibridge.AppendJSONString(b, name)
	b = append(b, `,"points":`...)
	b = appendPoints(b, points)
	c.reply(append(b, '}'), 0)
}

// parseSince reads a history window: a duration, 10m when empty.
func parseSince(s string) (time.Duration, error) {
	if s == "" {
		return defaultHistorySince, nil
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, fmt.Errorf("since %q: want a duration such as \"10m\"", clip(s))
	case d <= 0 || d > maxHistorySince:
		return 0, fmt.Errorf("since %s: must be above 0 and at most %s", d, maxHistorySince)
	}
	return d, nil
}

// requireString reads a mandatory string field, replying with an error
// when it is missing or not a string.
func (c *client) requireString(id string, raw json.RawMessage, typ, field string) (string, bool) {
	s, err := stringField(raw, field)
	if err == nil && s == "" {
		err = fmt.Errorf("%s is missing", field)
	}
	if err != nil {
		c.replyError(id, typ+": "+err.Error())
		return "", false
	}
	return s, true
}

// stringField decodes an optional string field; absent and null are "".
func stringField(raw json.RawMessage, field string) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", fmt.Errorf("%s must be a string", field)
	}
	return s, nil
}

func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

// ack replies to a command. A successful ack waits in the mailbox until
// the reading with seq echo has been queued before it.
func (c *client) ack(id, name string, err error, echo uint64) {
	b := make([]byte, 0, 64+len(id))
	b = append(b, `{"type":"ack"`...)
	if id != "" {
		b = append(b, `,"id":`...)
		b = pibridge.AppendJSONString(b, id)
	}
	if _, known := c.s.core.Signal(name); known {
		b = append(b, `,"name":`...)
		b = pibridge.AppendJSONString(b, name)
	}
	if err == nil {
		b = append(b, `,"ok":true}`...)
	} else {
		b = append(b, `,"ok":false,"error":`...)
		b = pibridge.AppendJSONString(b, err.Error())
		b = append(b, '}')
	}
	c.reply(b, echo)
}

func (c *client) replyError(id, msg string) {
	c.reply(appendError(make([]byte, 0, 32+len(id)+len(msg)), id, msg), 0)
}

func (c *client) reply(msg []byte, echo uint64) {
	if _, overflowed := c.mb.pushReply(msg, echo); overflowed {
		c.s.countSlow(c, "reply queue full")
	}
}

func appendError(b []byte, id, msg string) []byte {
	b = append(b, `{"type":"error"`...)
	if id != "" {
		b = append(b, `,"id":`...)
		b = pibridge.AppendJSONString(b, id)
	}
	b = append(b, `,"error":`...)
	b = pibridge.AppendJSONString(b, msg)
	return append(b, '}')
}

// appendState appends {"<name>":{reading},…}.
func appendState(b []byte, state []pibridge.Reading) []byte {
	b = append(b, '{')
	for i, r := range state {
		if i > 0 {
			b = append(b, ',')
		}
		b = pibridge.AppendJSONString(b, r.Name)
		b = append(b, ':')
		b = r.AppendJSON(b)
	}
	return append(b, '}')
}

// appendPoints appends [[ms,v],…].
func appendPoints(b []byte, points []pibridge.Point) []byte {
	b = append(b, '[')
	for i, p := range points {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = strconv.AppendInt(b, p.T, 10)
		b = append(b, ',')
		b = pibridge.Number(p.V).AppendJSON(b)
		b = append(b, ']')
	}
	return append(b, ']')
}

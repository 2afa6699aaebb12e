package ws

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/gorilla/websocket"

	"pibridge"
)

// msgType is the type of a decoded client message.
type msgType uint8

const (
	msgSet msgType = iota + 1
	msgPulse
	msgHistory
	msgSubscribe
	msgUnsubscribe
	msgPublish
	msgAuth
)

var msgTypes = map[string]msgType{
	"set":         msgSet,
	"pulse":       msgPulse,
	"history":     msgHistory,
	"subscribe":   msgSubscribe,
	"unsubscribe": msgUnsubscribe,
	"publish":     msgPublish,
	"auth":        msgAuth,
}

// maxTopicsPerMessage bounds one subscribe or unsubscribe.
const maxTopicsPerMessage = 32

// message is a client message whose shape has been checked: the fields its
// type needs are there and have the right JSON types. Their meaning (does
// the signal exist, does the value fit it, is the topic allowed) is for
// the handlers, which answer those failures with an ack.
type message struct {
	typ     msgType
	id      string
	name    string          // set, pulse, history
	value   json.RawMessage // set: as sent, never null or empty
	dur     string          // pulse "for"
	since   string          // history; may be empty
	topics  []string        // subscribe, unsubscribe
	topic   string          // publish
	payload string          // publish; may be empty
	retain  bool            // publish
	token   string          // auth
}

// decodeError is a message that cannot be acted on. id is the message's id
// when it had a readable one, so that the error reply can carry it.
type decodeError struct {
	id  string
	msg string
}

func (e *decodeError) Error() string { return e.msg }

// envelope is a client message with every field left raw, so that a bad
// field never hides the id: whatever else is wrong, the reply can carry it.
// Unknown fields are ignored, so that clients may send more than this
// version reads.
type envelope struct {
	Type    json.RawMessage `json:"type"`
	ID      json.RawMessage `json:"id"`
	Name    json.RawMessage `json:"name"`
	Value   json.RawMessage `json:"value"`
	For     json.RawMessage `json:"for"`
	Since   json.RawMessage `json:"since"`
	Topics  json.RawMessage `json:"topics"`
	Topic   json.RawMessage `json:"topic"`
	Payload json.RawMessage `json:"payload"`
	Retain  json.RawMessage `json:"retain"`
	Token   json.RawMessage `json:"token"`
}

// decodeMessage reads one client frame. Every input has exactly one
// outcome: a message of a known type with the fields that type needs, or a
// decodeError. It never panics (FuzzDecodeMessage).
func decodeMessage(mt int, data []byte) (message, *decodeError) {
	if mt != websocket.TextMessage {
		return message{}, &decodeError{msg: "binary frames are not supported: send JSON text"}
	}
	if t := bytes.TrimSpace(data); len(t) == 0 || t[0] != '{' {
		return message{}, &decodeError{msg: "malformed JSON: a message is one JSON object"}
	}
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return message{}, &decodeError{msg: "malformed JSON: " + pibridge.Clip(err.Error())}
	}
	id, err := stringField(env.ID, "id")
	if err != nil {
		return message{}, &decodeError{msg: err.Error()}
	}
	fail := func(format string, args ...any) (message, *decodeError) {
		return message{}, &decodeError{id: id, msg: fmt.Sprintf(format, args...)}
	}
	typName, err := stringField(env.Type, "type")
	switch {
	case err != nil:
		return fail("%v", err)
	case typName == "":
		return fail("type is missing")
	}
	m := message{typ: msgTypes[typName], id: id}
	need := func(raw json.RawMessage, field string) (string, error) {
		s, err := stringField(raw, field)
		if err == nil && s == "" {
			err = fmt.Errorf("%s is missing", field)
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", typName, err)
		}
		return s, nil
	}
	switch m.typ {
	case msgSet:
		if m.name, err = need(env.Name, "name"); err != nil {
			return fail("%v", err)
		}
		if isNull(env.Value) {
			return fail("set: value is missing")
		}
		m.value = env.Value
	case msgPulse:
		if m.name, err = need(env.Name, "name"); err != nil {
			return fail("%v", err)
		}
		// No "for": the output's own pulse length, which the core knows.
		if m.dur, err = stringField(env.For, "for"); err != nil {
			return fail("pulse: %v", err)
		}
	case msgHistory:
		if m.name, err = need(env.Name, "name"); err != nil {
			return fail("%v", err)
		}
		if m.since, err = stringField(env.Since, "since"); err != nil {
			return fail("history: %v", err)
		}
	case msgSubscribe, msgUnsubscribe:
		if m.topics, err = topicList(env.Topics); err != nil {
			return fail("%s: %v", typName, err)
		}
	case msgPublish:
		if m.topic, err = need(env.Topic, "topic"); err != nil {
			return fail("%v", err)
		}
		if isNull(env.Payload) {
			return fail("publish: payload is missing (send \"\" for an empty one)")
		}
		if m.payload, err = stringField(env.Payload, "payload"); err != nil {
			return fail("publish: %v", err)
		}
		if m.retain, err = boolField(env.Retain, "retain"); err != nil {
			return fail("publish: %v", err)
		}
	case msgAuth:
		if m.token, err = need(env.Token, "token"); err != nil {
			return fail("%v", err)
		}
	default:
		return fail("unknown type %q", pibridge.Clip(typName))
	}
	return m, nil
}

// topicList decodes "topics": a non-empty list of strings.
func topicList(raw json.RawMessage) ([]string, error) {
	if isNull(raw) {
		return nil, fmt.Errorf("topics is missing")
	}
	var list []json.RawMessage
	if raw[0] != '[' || json.Unmarshal(raw, &list) != nil {
		return nil, fmt.Errorf("topics must be a list of strings")
	}
	switch {
	case len(list) == 0:
		return nil, fmt.Errorf("topics is empty")
	case len(list) > maxTopicsPerMessage:
		return nil, fmt.Errorf("at most %d topics per message", maxTopicsPerMessage)
	}
	topics := make([]string, len(list))
	for i, r := range list {
		s, err := stringField(r, "topics")
		if err != nil || isNull(r) {
			return nil, fmt.Errorf("topics must be a list of strings")
		}
		topics[i] = s
	}
	return topics, nil
}

// stringField decodes an optional string field; absent and null are "".
func stringField(raw json.RawMessage, field string) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	if raw[0] != '"' {
		return "", fmt.Errorf("%s must be a string", field)
	}
	if s, ok := pibridge.UnquotePlain(raw); ok { // the usual id, type and name
		return s, nil
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", fmt.Errorf("%s must be a string", field)
	}
	return s, nil
}

// boolField decodes an optional bool field; absent and null are false.
func boolField(raw json.RawMessage, field string) (bool, error) {
	switch string(raw) {
	case "", "null", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, fmt.Errorf("%s must be true or false", field)
}

func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

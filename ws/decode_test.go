package ws

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"pibridge"
)

func TestDecodeMessage(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want message
		err  string // the error, or "" when it decodes
		id   string // the error's id
	}{
		{in: `{"type":"set","id":"c1","name":"led","value":true}`, want: message{typ: msgSet, id: "c1", name: "led", value: json.RawMessage("true")}},
		{in: ` {"type":"pulse","name":"relay","for":"500ms","extra":[1]} `, want: message{typ: msgPulse, name: "relay", dur: "500ms"}},
		{in: `{"type":"history","id":"h","name":"t"}`, want: message{typ: msgHistory, id: "h", name: "t"}},
		{in: `{"type":"subscribe","topics":["a/+","b/#"]}`, want: message{typ: msgSubscribe, topics: []string{"a/+", "b/#"}}},
		{in: `{"type":"unsubscribe","topics":["a"]}`, want: message{typ: msgUnsubscribe, topics: []string{"a"}}},
		{in: `{"type":"publish","topic":"a/b","payload":"","retain":true}`, want: message{typ: msgPublish, topic: "a/b", retain: true}},
		{in: `{"type":"auth","token":"t0k"}`, want: message{typ: msgAuth, token: "t0k"}},
		{in: `{"id":"x","type":"set","id":"y","name":"led","value":1}`, want: message{typ: msgSet, id: "y", name: "led", value: json.RawMessage("1")}}, // the last key wins, as everywhere in encoding/json
		{in: `{"type":"set","id":"c","name":"led"}`, err: "set: value is missing", id: "c"},
		{in: `{"type":"set","id":"c","name":"led","value":null}`, err: "set: value is missing", id: "c"},
		{in: `{"type":"set","id":"c","value":1}`, err: "set: name is missing", id: "c"},
		{in: `{"type":"pulse","id":"c","name":"r","for":1}`, err: "pulse: for must be a string", id: "c"},
		{in: `{"type":"pulse","id":"c","name":"r"}`, want: message{typ: msgPulse, id: "c", name: "r"}}, // the output's own length
		{in: `{"type":"history","id":"c","name":"r","since":5}`, err: "history: since must be a string", id: "c"},
		{in: `{"type":"auth","id":"a"}`, err: "auth: token is missing", id: "a"},
		{in: `{"type":"nope","id":"n"}`, err: `unknown type "nope"`, id: "n"},
		{in: `{"type":"","id":"n"}`, err: "type is missing", id: "n"},
		{in: `{"type":["set"],"id":"n"}`, err: "type must be a string", id: "n"},
		{in: `{"type":"set","id":1}`, err: "id must be a string"},
		{in: `{"type":"set"`, err: "malformed JSON"},
		{in: `"set"`, err: "malformed JSON: a message is one JSON object"},
		{in: ``, err: "malformed JSON: a message is one JSON object"},
		{in: `{} {}`, err: "malformed JSON"},
	} {
		m, derr := decodeMessage(websocket.TextMessage, []byte(tc.in))
		if tc.err != "" {
			if derr == nil || !strings.HasPrefix(derr.msg, tc.err) || derr.id != tc.id {
				t.Errorf("%s: %+v %v, want error %q with id %q", tc.in, m, derr, tc.err, tc.id)
			}
			continue
		}
		if derr != nil {
			t.Errorf("%s: %v", tc.in, derr)
			continue
		}
		if got, want := describe(m), describe(tc.want); got != want {
			t.Errorf("%s:\n got %s\nwant %s", tc.in, got, want)
		}
	}
	if _, derr := decodeMessage(websocket.BinaryMessage, []byte(`{"type":"set"}`)); derr == nil || !strings.Contains(derr.msg, "binary") {
		t.Errorf("binary frame: %v", derr)
	}
}

func describe(m message) string {
	b, _ := json.Marshal(map[string]any{"typ": m.typ, "id": m.id, "name": m.name, "value": string(m.value), "dur": m.dur,
		"since": m.since, "topics": m.topics, "topic": m.topic, "payload": m.payload, "retain": m.retain, "token": m.token})
	return string(b)
}

// FuzzDecodeMessage: whatever a client sends, the decoder neither panics
// nor hesitates: exactly one outcome, a message of a known type with what
// that type needs, or an error whose reply is valid JSON and carries the
// message's own id.
func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"set","id":"c1","name":"led","value":true}`,
		`{"type":"set","id":"c1","name":"fan","value":"0.5"}`,
		`{"type":"pulse","id":"c2","name":"pump","for":"500ms"}`,
		`{"type":"history","id":"h1","name":"air.temperature","since":"10m"}`,
		`{"type":"subscribe","id":"s1","topics":["home/+/temp"]}`,
		`{"type":"unsubscribe","id":"s2","topics":["home/+/temp","x/#"]}`,
		`{"type":"publish","id":"p1","topic":"home/lamp/set","payload":"on","retain":false}`,
		`{"type":"auth","token":"T"}`,
		`{"type":"set","id":"\ud800","name":"\u0000"}`,
		`{"type":"set","id":"x","value":{"a":[1,{"b":null}]}}`,
		`{"id":"a","id":2}`,
		`[]`, `null`, `{`, "\xff\xfe", ``,
	} {
		f.Add(false, []byte(s))
	}
	f.Add(true, []byte(`{"type":"set"}`))
	f.Fuzz(func(t *testing.T, binary bool, data []byte) {
		mt := websocket.TextMessage
		if binary {
			mt = websocket.BinaryMessage
		}
		m, derr := decodeMessage(mt, data)
		if (derr == nil) == (m.typ == 0) {
			t.Fatalf("%q: message %+v and error %v: want exactly one", data, m, derr)
		}
		if derr != nil {
			if derr.msg == "" {
				t.Fatalf("%q: an error without a message", data)
			}
			reply := pibridge.AppendErrorMessage(nil, derr.id, derr.msg)
			if !json.Valid(reply) || !utf8.Valid(reply) {
				t.Fatalf("%q: the error reply %q is not valid JSON", data, reply)
			}
			if derr.id != "" {
				var env struct{ ID string }
				if json.Unmarshal(data, &env) != nil || env.ID != derr.id {
					t.Fatalf("%q: the error carries id %q, the message %q", data, derr.id, env.ID)
				}
			}
			return
		}
		ok := true
		switch m.typ {
		case msgSet:
			ok = m.name != "" && !isNull(m.value) && json.Valid(m.value)
		case msgPulse:
			ok = m.name != "" && m.dur != ""
		case msgHistory:
			ok = m.name != ""
		case msgSubscribe, msgUnsubscribe:
			ok = len(m.topics) > 0 && len(m.topics) <= maxTopicsPerMessage
		case msgPublish:
			ok = m.topic != ""
		case msgAuth:
			ok = m.token != ""
		default:
			ok = false
		}
		if !ok {
			t.Fatalf("%q: decoded into an incomplete message %s", data, describe(m))
		}
		if again, derr := decodeMessage(mt, data); derr != nil || describe(again) != describe(m) {
			t.Fatalf("%q: a second decoding differs", data)
		}
	})
}

package pibridge

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// The WebSocket protocol's messages and the REST bodies, encoded once so
// that a bridge and a gateway speak the same words (README: WebSocket
// protocol, HTTP API). Each appends to b and does not allocate when b has
// room.

// HelloPrefix starts every WebSocket hello; the protocol version is 1.
const HelloPrefix = `{"type":"hello","protocol":1,`

// AppendHelloStart appends HelloPrefix and, for a connection with the read
// token, "readonly":true, (the panel disables its controls on it); the
// description and state follow.
func AppendHelloStart(b []byte, readOnly bool) []byte {
	b = append(b, HelloPrefix...)
	if readOnly {
		b = append(b, `"readonly":true,`...)
	}
	return b
}

// ErrReadOnly refuses commands from a client holding the read token.
var ErrReadOnly = errors.New("read-only access: commands need the control token")

const (
	// DefaultHistorySince is the history window when a client names none.
	DefaultHistorySince = 10 * time.Minute
	// MaxHistorySince bounds the window a client may ask for; asking
	// further back than a ring reaches just returns what is there.
	MaxHistorySince = 24 * time.Hour
)

// ParseSince reads a history window ("since"): a duration, 10m when empty.
func ParseSince(s string) (time.Duration, error) {
	if s == "" {
		return DefaultHistorySince, nil
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, fmt.Errorf("since %q: want a duration such as \"10m\"", Clip(s))
	case d <= 0 || d > MaxHistorySince:
		return 0, fmt.Errorf("since %s: must be above 0 and at most %s", d, MaxHistorySince)
	}
	return d, nil
}

// AppendErrorMessage appends {"type":"error","id":…,"error":…}; the id
// only when there is one.
func AppendErrorMessage(b []byte, id, msg string) []byte {
	b = append(b, `{"type":"error"`...)
	b = appendID(b, id)
	b = append(b, `,"error":`...)
	b = AppendJSONString(b, msg)
	return append(b, '}')
}

// AppendAckMessage appends {"type":"ack","id":…,"name":…,"ok":…,"error":…}:
// the id and name only when not empty, the error only when err is not nil.
func AppendAckMessage(b []byte, id, name string, err error) []byte {
	b = append(b, `{"type":"ack"`...)
	b = appendID(b, id)
	if name != "" {
		b = append(b, `,"name":`...)
		b = AppendJSONString(b, name)
	}
	if err == nil {
		return append(b, `,"ok":true}`...)
	}
	b = append(b, `,"ok":false,"error":`...)
	b = AppendJSONString(b, err.Error())
	return append(b, '}')
}

// AppendHistoryMessage appends the WebSocket answer to a history request:
// {"type":"history","id":…,"name":…,"points":[[ms,v],…]}.
func AppendHistoryMessage(b []byte, id, name string, points []Point) []byte {
	b = append(b, `{"type":"history"`...)
	b = appendID(b, id)
	b = append(b, ',')
	return appendNamedPoints(b, name, points)
}

// AppendHistoryJSON appends the body of GET /api/history:
// {"name":…,"points":[[ms,v],…]}.
func AppendHistoryJSON(b []byte, name string, points []Point) []byte {
	b = append(b, '{')
	return appendNamedPoints(b, name, points)
}

func appendNamedPoints(b []byte, name string, points []Point) []byte {
	b = append(b, `"name":`...)
	b = AppendJSONString(b, name)
	b = append(b, `,"points":`...)
	b = AppendPoints(b, points)
	return append(b, '}')
}

// AppendPoints appends [[ms,v],…].
func AppendPoints(b []byte, points []Point) []byte {
	b = append(b, '[')
	for i, p := range points {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = strconv.AppendInt(b, p.T, 10)
		b = append(b, ',')
		b = Number(p.V).AppendJSON(b)
		b = append(b, ']')
	}
	return append(b, ']')
}

// AppendStateEntry appends "<name>":{reading}, one member of the state
// object of the hello and of GET /api/state.
func AppendStateEntry(b []byte, name string, r Reading) []byte {
	b = AppendJSONString(b, name)
	b = append(b, ':')
	return r.AppendJSON(b)
}

func appendID(b []byte, id string) []byte {
	if id == "" {
		return b
	}
	b = append(b, `,"id":`...)
	return AppendJSONString(b, id)
}

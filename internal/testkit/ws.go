package testkit

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Frame is any server message of the WebSocket protocol, decoded loosely.
type Frame struct {
	Type    string            `json:"type"`
	ID      string            `json:"id"`
	Name    string            `json:"name"`
	Value   json.RawMessage   `json:"value"`
	Unit    string            `json:"unit"`
	TS      string            `json:"ts"`
	Seq     uint64            `json:"seq"`
	OK      *bool             `json:"ok"`
	Error   string            `json:"error"`
	Topic   string            `json:"topic"`
	Payload string            `json:"payload"`
	Status  string            `json:"status"`
	Devices []json.RawMessage `json:"devices"`
}

// Frames reads a connection on its own goroutine and keeps every frame,
// so that a test can wait for one that matches without losing the others.
type Frames struct {
	Conn *websocket.Conn

	mu  sync.Mutex
	all []Frame
	err error // why reading stopped
}

// ReadFrames starts reading conn; it is closed when t ends.
func ReadFrames(t testing.TB, conn *websocket.Conn) *Frames {
	fr := &Frames{Conn: conn}
	t.Cleanup(func() { conn.Close() })
	go func() {
		for {
			var f Frame
			if err := conn.ReadJSON(&f); err != nil {
				fr.mu.Lock()
				fr.err = err
				fr.mu.Unlock()
				return
			}
			fr.mu.Lock()
			fr.all = append(fr.all, f)
			fr.mu.Unlock()
		}
	}()
	return fr
}

// Send writes one text message.
func (fr *Frames) Send(t testing.TB, msg string) {
	t.Helper()
	if err := fr.Conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("send %s: %v", msg, err)
	}
}

// Await returns the first frame that matches, waiting up to within.
func (fr *Frames) Await(t testing.TB, within time.Duration, what string, match func(Frame) bool) Frame {
	t.Helper()
	var found Frame
	Eventually(t, within, what, func() bool {
		fr.mu.Lock()
		defer fr.mu.Unlock()
		for _, f := range fr.all {
			if match(f) {
				found = f
				return true
			}
		}
		return false
	})
	return found
}

// Count counts the frames so far that match.
func (fr *Frames) Count(match func(Frame) bool) int {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	n := 0
	for _, f := range fr.all {
		if match(f) {
			n++
		}
	}
	return n
}

// Err is why reading stopped, nil while it goes on.
func (fr *Frames) Err() error {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	return fr.err
}

package ws

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"pibridge"
)

// With the core's command bound taken by commands that hang, a command at
// either door is refused busy at once: an ack with ok:false on the
// WebSocket, 503 with Retry-After over REST. Once the hanging commands
// end, commands go through again.
func TestBusyCoreRefusesAtEveryDoor(t *testing.T) {
	h := newHarness(t, setup{tune: func(tu *tuning) { tu.commandTimeout = 10 * time.Second }})
	hold, release := context.WithCancel(context.Background())
	defer release()
	var hung sync.WaitGroup
	for range pibridge.DefaultMaxCommands {
		hung.Go(func() {
			req, _ := http.NewRequestWithContext(hold, "POST", h.ts.URL+"/api/signals/stuck", strings.NewReader("on"))
			client := &http.Client{Timeout: 20 * time.Second}
			if resp, err := client.Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	waitFor(t, "every command slot held by stuck", func() bool {
		n := 0
		for _, m := range h.act.Calls() {
			if strings.HasPrefix(m, "set stuck ") {
				n++
			}
		}
		return n == pibridge.DefaultMaxCommands
	})

	c := h.dial(dialOpt{})
	for _, tc := range []struct{ msg, id string }{
		{`{"type":"set","id":"b1","name":"led","value":true}`, "b1"},
		{`{"type":"pulse","id":"b2","name":"led","for":"1s"}`, "b2"},
	} {
		start := time.Now()
		c.send(tc.msg)
		f := c.nextReply()
		if f.Type != "ack" || f.id() != tc.id || f.OK == nil || *f.OK || !strings.Contains(f.Error, "busy") {
			t.Errorf("%s: reply %s, want a refused ack with id %s saying busy", tc.msg, f, tc.id)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%s: answered after %s, want at once", tc.msg, took)
		}
	}
	req, _ := http.NewRequest("POST", h.ts.URL+"/api/signals/led", strings.NewReader(`{"value":true,"id":"b3"}`))
	resp := do(t, req)
	if resp.status != http.StatusServiceUnavailable || !strings.Contains(resp.body, `{"error":"led: busy`) || resp.header.Get("Retry-After") == "" {
		t.Errorf("REST while busy: %d %s (Retry-After %q), want 503 {\"error\":\"led: busy…\"} with Retry-After", resp.status, resp.body, resp.header.Get("Retry-After"))
	}
	for _, m := range h.act.Calls() {
		if strings.HasPrefix(m, "set led ") || strings.HasPrefix(m, "pulse led ") {
			t.Errorf("a busy command reached the actuator: %s", m)
		}
	}

	release() // the stuck requests go away, and their commands with them
	hung.Wait()
	waitFor(t, "a command through again", func() bool {
		req, _ := http.NewRequest("POST", h.ts.URL+"/api/signals/led", strings.NewReader("on"))
		return do(t, req).status == http.StatusOK
	})
}
